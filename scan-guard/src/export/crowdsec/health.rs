//! What the CrowdSec tasks learn about the Local API, for metrics. A task writes
//! with relaxed atomics (it never waits on the controller) and the controller
//! reads a [`Snapshot`] once per tick.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

// 0 (the default): no answer yet.
const UP: u8 = 1;
const DOWN: u8 = 2;

/// One role's view of the Local API.
#[derive(Debug, Default)]
pub struct RoleHealth {
    /// 0 until the first answer, then [`UP`] or [`DOWN`] after each request.
    state: AtomicU8,
    failures: AtomicU64,
}

impl RoleHealth {
    pub fn succeeded(&self) {
        self.state.store(UP, Relaxed);
    }

    pub fn failed(&self) {
        self.state.store(DOWN, Relaxed);
        self.failures.fetch_add(1, Relaxed);
    }

    fn is_up(&self) -> bool {
        self.state.load(Relaxed) == UP
    }

    fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }
}

/// Shared by the tasks of one [`super::Link`] (a reload starts a fresh one).
#[derive(Debug, Default)]
pub struct Health {
    pub bouncer: RoleHealth,
    pub agent: RoleHealth,
    /// Alerts the Local API took.
    pub alerts_pushed: AtomicU64,
    /// Alerts given up on in the agent task (backlog full, or refused).
    pub alerts_dropped: AtomicU64,
}

impl Health {
    pub fn pushed(&self, n: usize) {
        self.alerts_pushed.fetch_add(n as u64, Relaxed);
    }

    pub fn dropped(&self, n: u64) {
        self.alerts_dropped.fetch_add(n, Relaxed);
    }
}

/// A reading for the metrics; counters count from the link's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub bouncer_on: bool,
    pub agent_on: bool,
    pub bouncer_up: bool,
    pub agent_up: bool,
    pub bouncer_failures: u64,
    pub agent_failures: u64,
    pub alerts_pushed: u64,
    pub alerts_dropped: u64,
}

impl Health {
    /// `queue_dropped`: alerts the controller could not even queue.
    pub fn snapshot(&self, bouncer_on: bool, agent_on: bool, queue_dropped: u64) -> Snapshot {
        Snapshot {
            bouncer_on,
            agent_on,
            bouncer_up: bouncer_on && self.bouncer.is_up(),
            agent_up: agent_on && self.agent.is_up(),
            bouncer_failures: self.bouncer.failures(),
            agent_failures: self.agent.failures(),
            alerts_pushed: self.alerts_pushed.load(Relaxed),
            alerts_dropped: self.alerts_dropped.load(Relaxed) + queue_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_follows_the_last_request_and_failures_add_up() {
        let h = Health::default();
        assert!(!h.snapshot(true, true, 0).bouncer_up, "unknown is not up");
        h.bouncer.succeeded();
        h.agent.failed();
        h.agent.failed();
        h.pushed(3);
        h.dropped(1);
        let s = h.snapshot(true, true, 2);
        assert!(s.bouncer_up && !s.agent_up);
        assert_eq!((s.bouncer_failures, s.agent_failures), (0, 2));
        assert_eq!((s.alerts_pushed, s.alerts_dropped), (3, 3));
        h.bouncer.failed();
        assert!(!h.snapshot(true, true, 0).bouncer_up);
        // A role that is off is never up.
        h.agent.succeeded();
        assert!(!h.snapshot(true, false, 0).agent_up);
    }
}
