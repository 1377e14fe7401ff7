//! `cargo xtask bench`: per-packet cost, flood drop rate, legitimate throughput,
//! scale and blocklist operations, each next to baselines measured in the same
//! run, written to `results.json`; [`report`] turns that into BENCHMARKS.md and
//! PNG charts.
//!
//! Every packet stays inside network namespaces the benchmark creates ([`netns`]):
//! veth pairs, addresses assigned there, no default route. Each part runs on its
//! own; a part that fails is recorded as failed and the others still run.

pub mod blocklist_ops;
pub mod controller;
pub mod cost;
pub mod flood;
pub mod goals;
pub mod machine;
pub mod netns;
pub mod per_packet;
pub mod report;
pub mod results;
pub mod run;
pub mod scale;
pub mod sizes;
pub mod sys;
pub mod throughput;
pub mod xdp_filter;

pub use goals::goals;
pub use run::{Options, PARTS, all_ok, run};
pub use sizes::Sizes;
