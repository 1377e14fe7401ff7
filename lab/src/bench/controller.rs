//! The real controller (`scan-guard run`) in the lab's target namespace, with its
//! pins on the lab's bpffs and its files in the lab directory.

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use scan_guard::kernel::maps::KernelMaps;

use super::netns::BenchLab;
use crate::lab::Proc;

pub struct Controller {
    pub spawned: Proc,
    /// Pid of scan-guard itself (the child of `timeout`).
    pub pid: u32,
    pub pin_dir: PathBuf,
    pub events: PathBuf,
    pub log: PathBuf,
}

impl Controller {
    /// Starts `bin run` on the target veth (native XDP) and waits (bounded) until
    /// its link is pinned.
    pub fn start(lab: &BenchLab, bin: &Path, limit: Duration) -> Self {
        let pin_dir = lab.bpffs.join("inst");
        let events = lab.file("events.jsonl");
        let log = lab.file("controller.log");
        let state = lab.file("state.json");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let spawned = lab.spawn(
            &lab.t.ns,
            limit,
            &[
                &s(bin),
                "run",
                "--iface",
                &lab.t.iface,
                "--xdp-mode",
                "native",
                "--pin-dir",
                &s(&pin_dir),
                "--events",
                &s(&events),
                "--state-file",
                &s(&state),
            ],
            &[("SCAN_GUARD_LOG", "info")],
            &log,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !scan_guard::kernel::loader::is_attached(&pin_dir) {
            if let Some(st) = lab.try_wait(spawned) {
                panic!(
                    "the controller exited before attaching ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not attach within 15 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let pid = lab
            .command_pid(spawned)
            .unwrap_or_else(|| panic!("no process under timeout pid {}", spawned.pid));
        Self {
            spawned,
            pid,
            pin_dir,
            events,
            log,
        }
    }

    pub fn maps(&self) -> KernelMaps {
        KernelMaps::open_pinned(&self.pin_dir)
            .unwrap_or_else(|e| panic!("opening the controller's pinned maps: {e:#}"))
    }

    /// SIGTERM and a bounded wait for it to detach and exit.
    pub fn stop(self, lab: &BenchLab) {
        if lab.stop(self.spawned, Duration::from_secs(10)).is_none() {
            eprintln!("bench: the controller had to be killed");
        }
        // Its link pin goes with a clean exit; make sure before the next start.
        let _ = scan_guard::kernel::loader::detach(&self.pin_dir);
    }
}
