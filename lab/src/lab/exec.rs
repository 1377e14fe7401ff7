//! Commands in the lab: one-shot ones inside a namespace, processes started in
//! the background (stopped by the lab's [`Processes`](super::process::Processes)
//! guard if the test does not), and files in the lab directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{ExitStatus, Output},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use super::{
    cmd::{CMD_TIMEOUT, describe, describe_status, read_lossy, run_bounded},
    process::Proc,
    topology::Lab,
};

impl Lab {
    /// A fresh file name in the lab directory (`<stem>-<n>.<ext>`).
    pub fn file(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::SeqCst);
        self.dir.join(format!("{stem}-{n}.{ext}"))
    }

    /// Writes `contents` to a fresh file in the lab directory and returns its path.
    pub fn write_file(&self, stem: &str, ext: &str, contents: &str) -> PathBuf {
        let p = self.file(stem, ext);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// Runs `args` inside `ns` (`ip netns exec`), bounded by [`CMD_TIMEOUT`].
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Output {
        self.exec_in_for(ns, CMD_TIMEOUT, args)
    }

    /// Runs `args` inside `ns`, bounded by `limit`.
    pub fn exec_in_for(&self, ns: &str, limit: Duration, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run_bounded(limit, "ip", &full)
    }

    /// Like [`exec_in`](Self::exec_in) but panics unless the command succeeds;
    /// returns its stdout.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec_in(ns, args);
        if !out.status.success() {
            panic!(
                "[lab {}] in {ns}: {}: {}",
                self.tag,
                args.join(" "),
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sysctl -w SETTING` inside `ns`.
    pub fn sysctl(&self, ns: &str, setting: &str) {
        self.exec_ok(ns, &["sysctl", "-qw", setting]);
    }

    /// Starts `args` inside `ns` under `timeout` (bounded by
    /// [`SPAWN_TIMEOUT`](super::SPAWN_TIMEOUT), or what
    /// [`set_spawn_limit`](Self::set_spawn_limit) set), stdout and stderr appended
    /// to `log`. The lab keeps the child and stops it on drop if the test has not.
    pub fn spawn_in(&self, ns: &str, args: &[&str], log: &Path) -> Proc {
        self.spawn_in_env(ns, args, &[], log)
    }

    pub fn spawn_in_env(&self, ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        self.spawn_argv(&argv, env, log)
    }

    /// Like [`spawn_in`](Self::spawn_in) but in the test's own namespaces, for a
    /// program that joins a lab namespace itself (`systemd-nspawn
    /// --network-namespace-path`: `ip netns exec` would hide the cgroup mounts).
    pub fn spawn_outside(&self, args: &[&str], log: &Path) -> Proc {
        self.spawn_argv(args, &[], log)
    }

    fn spawn_argv(&self, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let limit = Duration::from_secs(self.spawn_limit_s.load(Ordering::SeqCst));
        self.procs
            .spawn(limit, args, env, log)
            .unwrap_or_else(|e| panic!("[lab {}] spawning {args:?}: {e}", self.tag))
    }

    /// Bound of every process spawned from now on (the controller and long loads of
    /// a scenario that runs for minutes); the default is
    /// [`SPAWN_TIMEOUT`](super::SPAWN_TIMEOUT).
    pub fn set_spawn_limit(&self, limit: Duration) {
        self.spawn_limit_s
            .store(limit.as_secs().max(1), Ordering::SeqCst);
    }

    /// Exit status if `p` has finished (reaps it).
    pub fn try_status(&self, p: Proc) -> Option<ExitStatus> {
        self.procs.try_status(p)
    }

    /// Waits up to `limit` for `p` to finish.
    pub fn wait_for(&self, p: Proc, limit: Duration) -> Option<ExitStatus> {
        self.procs.wait_for(p, limit)
    }

    /// Sends `sig` to `p` (the lab's `timeout` in front of the command: it passes
    /// SIGINT and SIGTERM on to the command) unless it has already finished.
    pub fn signal(&self, p: Proc, sig: libc::c_int) {
        self.procs.signal(p, sig);
    }

    /// Sends SIGTERM to `p` and waits up to `limit` for it to exit; panics (after
    /// killing it) if it does not.
    pub fn terminate(&self, p: Proc, limit: Duration) -> ExitStatus {
        if let Some(s) = self.try_status(p) {
            return s;
        }
        self.signal(p, libc::SIGTERM);
        match self.wait_for(p, limit) {
            Some(s) => s,
            None => {
                self.kill(p);
                panic!(
                    "[lab {}] pid {} did not exit within {limit:?} of SIGTERM",
                    self.tag, p.pid
                );
            }
        }
    }

    /// SIGKILL to `p` and its whole process group (the controller under its
    /// `timeout`: nothing gets to clean up), then reaps it.
    pub fn kill(&self, p: Proc) -> ExitStatus {
        self.procs.kill(p)
    }

    /// Waits (bounded by `limit`) until `ready`; panics with what `p` wrote to
    /// `logs` if it exits first or is not ready in time. `what` names the process,
    /// `until` what ready means (for messages).
    pub fn wait_started(
        &self,
        p: Proc,
        what: &str,
        until: &str,
        logs: &[&Path],
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        let output = || logs.iter().map(|l| read_lossy(l)).collect::<String>();
        let deadline = Instant::now() + limit;
        while !ready() {
            if let Some(s) = self.try_status(p) {
                panic!(
                    "[lab {}] {what} exited before it could {until} ({})\n--- its output ---\n{}",
                    self.tag,
                    describe_status(s),
                    output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "[lab {}] {what} did not {until} within {limit:?}\n--- its output ---\n{}",
                self.tag,
                output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
