//! `cargo xtask demo`: the scripted story in the network-namespace lab.
//!
//! As root: install the lab's Debian packages if missing, bootstrap the eBPF
//! toolchain, build scan-guard and the demo driver (`scan-guard-demo` of the lab
//! crate, lab/src/bin/) in release mode, then run the driver and exit with its
//! status. The driver builds the lab, plays the story and tears the lab down, also on
//! Ctrl-C: the terminal's SIGINT reaches it directly (same process group), so
//! xtask only ignores SIGINT while it waits, and passes a SIGTERM sent to xtask
//! on to the driver.

use std::{
    process::ExitStatus,
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{Context as _, Result};

use crate::{
    apt,
    build::{self, Profile},
    privilege, process, setup,
    workspace::Workspace,
};

const CARGO_FIX: &str = "install Rust with rustup (https://rustup.rs)";

/// The driver's pid while it runs (for the SIGTERM handler).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our unreaped child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

pub fn run(ws: &Workspace) -> Result<()> {
    privilege::require_root(
        "cargo xtask demo",
        "the demo creates network namespaces, attaches an XDP program and runs raw-socket scanners",
    )?;
    apt::ensure(ws, apt::LAB_PACKAGES, "the demo lab")?;
    setup::ensure(ws)?;
    eprintln!("building scan-guard and the demo driver (release)");
    let exe = build::scan_guard(ws, Profile::Release)?;
    process::run(
        ws.cargo().args([
            "build",
            "--release",
            "--package",
            "scan-guard-lab",
            "--bin",
            "scan-guard-demo",
        ]),
        CARGO_FIX,
        "fix the build errors above",
    )?;
    let driver = exe.with_file_name("scan-guard-demo");
    let mut cmd = ws.command(&driver);
    let mut child = cmd
        .spawn()
        .map_err(|e| process::spawn_error(&cmd, e, "it was built just now"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: installing dispositions: SIG_IGN, and a handler that only calls kill.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(
            libc::SIGTERM,
            forward as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", ws.display(&driver)))?;
    std::process::exit(exit_code(status));
}

/// The driver's exit code (128 + signal if a signal ended it).
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
