//! Running tools: failures name the exact command and say what to do.

use std::{
    io,
    process::{Command, Output},
};

use anyhow::{Result, anyhow, bail};

/// `cmd` rendered as a shell-like line for messages.
pub fn describe(cmd: &Command) -> String {
    let program = cmd.get_program().to_string_lossy();
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Explains a spawn failure; `fix` says how to get the missing program.
pub fn spawn_error(cmd: &Command, err: io::Error, fix: &str) -> anyhow::Error {
    if err.kind() == io::ErrorKind::NotFound {
        let program = cmd.get_program().to_string_lossy();
        anyhow!("`{program}` is not installed or not on PATH: {fix}")
    } else {
        anyhow!("could not start `{}`: {err}", describe(cmd))
    }
}

/// Runs `cmd` with inherited stdio; fails with `hint` unless it succeeds.
pub fn run(cmd: &mut Command, fix: &str, hint: &str) -> Result<()> {
    let status = cmd.status().map_err(|e| spawn_error(cmd, e, fix))?;
    if !status.success() {
        bail!("`{}` failed ({status}): {hint}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` capturing its output; only a failure to start is an error.
pub fn output(cmd: &mut Command, fix: &str) -> Result<Output> {
    cmd.output().map_err(|e| spawn_error(cmd, e, fix))
}

/// Runs `cmd` quietly; on failure shows what it printed and fails with `hint`.
pub fn run_quiet(cmd: &mut Command, fix: &str, hint: &str) -> Result<()> {
    let out = output(cmd, fix)?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("`{}` failed ({}): {hint}", describe(cmd), out.status);
    }
    Ok(())
}
