//! scan-guard's lab: what the integration tests (crate `scan-guard-tests`), the demo
//! (`scan-guard-demo`, `cargo xtask demo`) and the benchmarks (`scan-guard-bench`,
//! `cargo xtask bench`) stand on.
//!
//! - [`lab`]: network namespaces, veth pairs, a private bpffs and the processes
//!   started in them, each an RAII guard, and [`lab::Lab`], the scene built from
//!   them with the real controller;
//! - [`packet`] and [`harness`]: frames built by hand, run through the XDP program
//!   with BPF_PROG_TEST_RUN;
//! - [`pcap`]: reading tcpdump's captures back;
//! - [`scenario`]: scripted attacks and legitimate load on the lab (the demo, the
//!   scan matrix, the false-positive suite);
//! - [`bench`]: the benchmarks.
//!
//! Helpers panic with context instead of returning errors: a failing step in a
//! test is a test failure, and the message should say which step.

pub mod bench;
pub mod harness;
pub mod lab;
pub mod packet;
pub mod pcap;
pub mod scenario;

/// True when this process runs with the privileges the lab needs (root).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}
