//! `cargo xtask test [-- CARGO_TEST_ARGS]`: the whole suite on the real kernel.
//!
//! Builds and tests every crate of the workspace but scan-guard-ebpf, which only
//! builds for the BPF target (through scan-guard's build.rs): the default members
//! (unit tests) and the integration tests (`scan-guard-tests`, not a default
//! member so that a plain `cargo test` needs no root). Arguments that pick packages
//! themselves (`-p`, `--workspace`) are passed on as given. A full run (no
//! arguments) checks formatting and clippy (`-D warnings`) first.

use anyhow::Result;

use crate::{apt, privilege, process, setup, workspace::Workspace};

const CARGO_FIX: &str = "install Rust with rustup (https://rustup.rs)";

/// Every crate that builds for the host: the default members and the
/// integration tests.
const EVERY_HOST_CRATE: [&str; 3] = ["--workspace", "--exclude", "scan-guard-ebpf"];

pub fn run(ws: &Workspace, args: &[String]) -> Result<()> {
    privilege::require_root(
        "cargo xtask test",
        "the tests load XDP programs, create network namespaces and run raw-socket scanners",
    )?;
    setup::ensure(ws)?;
    apt::ensure(ws, apt::LAB_PACKAGES, "the test lab")?;

    // Style first (a full run only): formatting and every clippy warning fail
    // the suite, as in CI.
    if args.is_empty() {
        eprintln!("style: cargo fmt --check, cargo clippy -D warnings");
        process::run(
            ws.cargo().args(["fmt", "--all", "--check"]),
            "rustup component add rustfmt",
            "run `cargo fmt --all`",
        )?;
        process::run(
            ws.cargo().arg("clippy").args(EVERY_HOST_CRATE).args([
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "rustup component add clippy",
            "fix the clippy findings above",
        )?;
    }

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
    let mut cmd = ws.cargo();
    cmd.arg("test");
    if !picks_packages(args) {
        cmd.args(EVERY_HOST_CRATE);
    }
    process::run(cmd.args(args), CARGO_FIX, "see the failures above")?;

    // A full run also checks the package's contents (install_service.rs ran it).
    if args.is_empty() {
        eprintln!("packaging: checking the Debian package");
        crate::package::verify(ws)?;
    }
    Ok(())
}

/// True when `args` (cargo's own, before any `--`) choose the packages themselves:
/// `-p NAME`, `-pNAME`, `--package NAME`, `--package=NAME`, `--workspace`.
fn picks_packages(args: &[String]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| {
        a.starts_with("-p") || a.starts_with("--package") || a == "--workspace" || a == "--all"
    })
}

#[cfg(test)]
mod tests {
    use super::picks_packages;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn package_choices_are_seen_before_the_test_binary_args_only() {
        assert!(picks_packages(&args(&["-p", "scan-guard-common"])));
        assert!(picks_packages(&args(&["--package=scan-guard"])));
        assert!(picks_packages(&args(&["--workspace"])));
        assert!(!picks_packages(&args(&["--test", "veth_attach"])));
        assert!(!picks_packages(&args(&["--release", "--", "-p"])));
    }
}
