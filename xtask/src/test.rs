//! `cargo xtask test [-- CARGO_TEST_ARGS]`: the whole suite on the real kernel.
//!
//! Builds and tests the workspace's default members: every crate except
//! scan-guard-ebpf, which only builds for the BPF target (through scan-guard's
//! build.rs). `--workspace` would try to build it for the host and fail.

use anyhow::Result;

use crate::{apt, privilege, process, setup, workspace::Workspace};

const CARGO_FIX: &str = "install Rust with rustup (https://rustup.rs)";

pub fn run(ws: &Workspace, args: &[String]) -> Result<()> {
    privilege::require_root(
        "cargo xtask test",
        "the tests load XDP programs, create network namespaces and run raw-socket scanners",
    )?;
    setup::ensure(ws)?;
    apt::ensure(ws, apt::LAB_PACKAGES, "the test lab")?;

    // The lab tests exec target/debug/scan-guard: build every binary first.
    eprintln!("building the binaries");
    process::run(
        ws.cargo().args(["build", "--bins"]),
        CARGO_FIX,
        "fix the build errors above",
    )?;

    // The install test (tests/tests/install_service.rs) installs the package.
    eprintln!("packaging: building the Debian package");
    crate::package::build(ws)?;

    eprintln!("running the tests");
    process::run(
        ws.cargo().arg("test").args(args),
        CARGO_FIX,
        "see the failures above",
    )?;

    // A full run also checks the package's contents (install_service.rs ran it).
    if args.is_empty() {
        eprintln!("packaging: checking the Debian package");
        crate::package::verify(ws)?;
    }
    Ok(())
}
