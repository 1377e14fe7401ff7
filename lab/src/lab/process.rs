//! The processes a lab starts, as a guard: each runs under `timeout` in a process
//! group of its own with its output in a log file; drop stops those still running.
//!
//! The `Child` handles stay here, so a pid is never signalled after it was reaped
//! (and maybe reused); tests name a process by its [`Proc`] handle.

use std::{
    fs::{self, OpenOptions},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

/// Bound of every long-running process the lab spawns (a safety net: the tests
/// stop them long before).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// A process started through [`Processes::spawn`]: its pid is that of its
/// `timeout`, which is also its process group id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    idx: usize,
    pub pid: u32,
}

/// Every process a lab started; drop stops those still running.
#[derive(Debug)]
pub struct Processes {
    children: Mutex<Vec<Child>>,
    /// How messages start (`[lab <tag>]`, `bench:`).
    who: String,
}

impl Processes {
    pub fn new(who: &str) -> Self {
        Self {
            children: Mutex::new(Vec::new()),
            who: who.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `argv` under `timeout` (bounded by `limit`), stdout and stderr
    /// appended to `log`, in the directory of `log`: some tools leave files in
    /// their working directory (masscan's paused.conf when stopped). timeout makes
    /// itself a process-group leader and forwards SIGTERM to the whole group; -k:
    /// SIGKILL 3 s after a SIGTERM that did not end it.
    pub fn spawn(
        &self,
        limit: Duration,
        argv: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> std::io::Result<Proc> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let secs = limit.as_secs().max(1).to_string();
        let mut cmd = Command::new("timeout");
        if let Some(dir) = log.parent().filter(|d| d.is_dir()) {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(["-k", "3", &secs])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()?;
        let mut children = self.lock();
        let proc = Proc {
            idx: children.len(),
            pid: child.id(),
        };
        children.push(child);
        Ok(proc)
    }

    /// Exit status if `p` has finished (reaps it).
    pub fn try_status(&self, p: Proc) -> Option<ExitStatus> {
        self.lock()[p.idx].try_wait().unwrap_or_else(|e| {
            panic!("{} waiting for pid {}: {e}", self.who, p.pid);
        })
    }

    /// Waits up to `limit` for `p` to finish.
    pub fn wait_for(&self, p: Proc, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status(p) {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to `p` (its `timeout`, which passes SIGINT and SIGTERM on to
    /// the command) unless it has finished.
    pub fn signal(&self, p: Proc, sig: libc::c_int) {
        if self.try_status(p).is_none() {
            signal(p.pid, sig);
        }
    }

    /// SIGKILL to `p`'s whole process group (nothing in it gets to clean up) unless
    /// it has finished; then reaps it.
    pub fn kill(&self, p: Proc) -> ExitStatus {
        if let Some(s) = self.try_status(p) {
            return s;
        }
        let mut children = self.lock();
        let child = &mut children[p.idx];
        // SAFETY: plain syscall on our own unreaped child's group.
        unsafe {
            libc::killpg(p.pid as libc::pid_t, libc::SIGKILL);
        }
        child
            .wait()
            .unwrap_or_else(|e| panic!("{} reaping pid {}: {e}", self.who, p.pid))
    }

    /// Teardown: SIGTERM to each process still running, up to 5 s in all for
    /// them to exit, then SIGKILL to the group of any left (said on stderr).
    /// Never panics.
    pub fn stop_all(&self) {
        let mut children = std::mem::take(&mut *self.lock());
        for child in children.iter_mut() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in children.iter_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!(
                    "{} pid {} ignored SIGTERM: killing its group",
                    self.who,
                    child.id()
                );
                kill_group(child);
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// SIGKILL to the process group of `child` unless it has been reaped (its pid,
/// hence the group id, cannot have been reused), then reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain syscalls on our own unreaped child's group.
        unsafe {
            libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: only called for unreaped children of this process.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Parent pid of `pid` from /proc (None if it is gone).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
