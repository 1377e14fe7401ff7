//! Operator commands that work on a running (or orphaned) instance from
//! another process.

pub mod control;
