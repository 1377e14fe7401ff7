//! Helpers of scan-guard's real-kernel integration tests (tests/*.rs, root only,
//! run by `cargo xtask test`): CrowdSec, Prometheus, the spoofing and fault
//! helpers, more links for the multi-interface tests, the reference model of the
//! XDP program.
//!
//! The lab, the packet harness and the scenarios live in the `scan-guard-lab`
//! crate (shared with the demo and the benchmarks); they are re-exported here
//! under the paths the tests use (`scan_guard_tests::lab::Lab`, ...).
//!
//! Helpers panic with context instead of returning errors: a failing step in a
//! test is a test failure, and the message should say which step.

pub mod crowdsec;
pub mod hardening;
pub mod links;
pub mod machine;
pub mod model;
pub mod prometheus;
pub mod scrape;

pub use scan_guard_lab::{harness, is_root, lab, packet, pcap, scenario};
