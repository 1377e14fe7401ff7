//! Shared helpers for scan-guard's real-kernel integration tests: a frame builder,
//! a harness around BPF_PROG_TEST_RUN, and the network-namespace lab.
//!
//! Helpers panic with context instead of returning errors: a failing step in a
//! test is a test failure, and the message should say which step.

pub mod bench;
pub mod cost;
pub mod crowdsec;
pub mod hardening;
pub mod harness;
pub mod lab;
pub mod links;
pub mod machine;
pub mod model;
pub mod packet;
pub mod prometheus;
pub mod scenario;
pub mod scrape;

/// True when the tests run with the privileges they need (root).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}
