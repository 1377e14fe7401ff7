//! Everything that talks to the kernel's side of scan-guard: which interfaces
//! the program is on, and its attachments to them.

pub mod attachments;
pub mod ifaces;
