//! Decisions: the one door every block goes through (policy, never-block set,
//! caps, escalation), and the state file that carries them across restarts.

pub mod enforcer;
pub mod neverblock;
pub mod policy;
pub mod state_file;
