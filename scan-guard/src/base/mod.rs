//! What every part uses: address prefixes, clocks, error classes, settings
//! value types and the process's capabilities.

pub mod cidr;
pub mod clock;
pub mod error;
pub mod privileges;
pub mod settings;
