//! [`DaemonGuard`]: a daemon a test helper started in the lab (a CrowdSec Local
//! API, an rsyslogd), stopped when the guard goes, before the rest of the lab.

use std::{cell::Cell, path::Path, time::Duration};

use super::{process::Proc, topology::Lab};

/// A daemon a test helper spawned through the lab, stopped when the guard is
/// dropped, also while the test unwinds: SIGTERM, a bounded wait, then SIGKILL to
/// its process group.
pub struct DaemonGuard<'a> {
    lab: &'a Lab,
    proc: Cell<Option<Proc>>,
}

impl<'a> DaemonGuard<'a> {
    /// A guard holding no process yet.
    pub fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            proc: Cell::new(None),
        }
    }

    /// Guards `p` from now on and waits (bounded by `limit`) until `ready`; panics
    /// with its output `log` if it exits first or is not ready in time. `what`
    /// names the daemon, `until` what ready means (for messages).
    pub fn start(
        &self,
        p: Proc,
        what: &str,
        until: &str,
        log: &Path,
        limit: Duration,
        ready: impl Fn() -> bool,
    ) {
        self.proc.set(Some(p));
        self.lab.wait_started(p, what, until, &[log], limit, ready);
    }

    /// The guarded process, taken out of the guard (to stop it with checks).
    pub fn take(&self) -> Option<Proc> {
        self.proc.take()
    }
}

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        // Never panics (this may run while unwinding).
        let Some(p) = self.proc.take() else {
            return;
        };
        // The lab's own unreaped `timeout`, which passes SIGTERM on to the daemon.
        self.lab.signal(p, libc::SIGTERM);
        if self.lab.wait_for(p, Duration::from_secs(5)).is_none() {
            self.lab.kill(p);
        }
    }
}
