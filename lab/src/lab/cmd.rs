//! One-shot commands, each under `timeout`, and their output as text for panic
//! messages.

use std::{
    fs,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Command, ExitStatus, Output, Stdio},
    time::Duration,
};

/// Default bound of a one-shot command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args` under `timeout` (SIGTERM at `limit`, SIGKILL 2 s later).
pub fn run_bounded(limit: Duration, program: &str, args: &[&str]) -> Output {
    run_bounded_env(limit, program, args, &[])
}

/// [`run_bounded`] with `env` added to the command's environment.
pub fn run_bounded_env(
    limit: Duration,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let secs = limit.as_secs().max(1).to_string();
    Command::new("timeout")
        .args(["-k", "2", &secs, program])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running timeout {secs} {program} {args:?}: {e}"))
}

/// `ip ARGS` in the test's own namespace, bounded; panics with context on failure.
pub fn ip_ok(args: &[&str]) -> String {
    let out = run_bounded(Duration::from_secs(10), "ip", args);
    if !out.status.success() {
        panic!("ip {}: {}", args.join(" "), describe(&out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Text of a finished command for panic messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        describe_status(out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How a process ended, in words (`timeout`'s exit 124 said as such).
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(124), _) => "timed out (exit 124 from timeout)".into(),
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// A file's contents as text, or a note that it could not be read.
pub fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", p.display()),
    }
}

/// `p` as a command-line argument (the lab's paths are all UTF-8).
pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", p.display()))
}
