//! Scripted scenarios on the network-namespace lab: the demo (`cargo xtask demo`),
//! the scan matrix and the false-positive suite. One job per module:
//! - [`stage`]: the lab with nginx, sweep targets, attacker source pools and the
//!   controller;
//! - [`attacks`]: the scanners and their options (the demo's story, the matrix);
//! - [`measure`]: one attack, captured at both ends, turned into an [`measure::Outcome`];
//! - [`legit`]: wrk and the legitimate client patterns;
//! - [`table`]: the result table and JSON under target/bench/;
//! - [`interrupt`]: Ctrl-C / SIGTERM as a flag the story checks.

pub mod attacks;
pub mod interrupt;
pub mod legit;
pub mod measure;
pub mod stage;
pub mod table;

/// The capture reader the scenarios use, also under its old path.
pub use crate::pcap;
