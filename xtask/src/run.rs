//! `cargo xtask run -- ARGS`: set up, build scan-guard, then become it.

use std::os::unix::process::CommandExt as _;

use anyhow::{Result, anyhow};

use crate::{
    build::{self, Profile},
    setup,
    workspace::Workspace,
};

pub fn run(ws: &Workspace, profile: Profile, args: &[String]) -> Result<()> {
    setup::ensure(ws)?;
    let exe = build::scan_guard(ws, profile)?;
    // exec: scan-guard keeps our pid, so signals (Ctrl-C, SIGTERM) reach it
    // directly and its exit status is the one the caller sees.
    let err = std::process::Command::new(&exe).args(args).exec();
    Err(anyhow!("could not run {}: {err}", exe.display()))
}
