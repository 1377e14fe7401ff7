//! The controller's life in the lab: started on the target's veth and waited for
//! until attached, stopped, killed, reloaded, watched (its log, its events), and
//! refused a config it must not run with.

use std::{
    fs,
    path::Path,
    process::{ExitStatus, Output},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    cmd::{describe, describe_status, path_str, read_lossy},
    controller::{
        ATTACH_TIMEOUT, Controller, ControllerOptions, XdpMode, controller_bin, scan_guard_via,
    },
    process::parent_pid,
    topology::Lab,
};

impl Lab {
    /// Starts the real controller attached to the target's veth in `mode`, its pins
    /// under `<bpffs>/inst`, its state file in the lab directory, and waits
    /// (bounded) until it has attached.
    pub fn start_controller(&self, mode: XdpMode) -> Controller {
        self.start_controller_with(&ControllerOptions::new(mode))
    }

    /// Starts `scan-guard run` in the target namespace on the target's veth as
    /// `opts` says and waits (bounded by [`ATTACH_TIMEOUT`]) until it is attached:
    /// its link is pinned and it has written its runtime file (which it does after
    /// attaching or re-adopting, right before it starts reading events). With the
    /// pin directory of an instance left attached, this is a restart that re-adopts.
    pub fn start_controller_with(&self, opts: &ControllerOptions) -> Controller {
        let bin = controller_bin();
        let mut opts = opts.clone();
        let pin_dir = opts
            .pin_dir
            .get_or_insert_with(|| self.bpffs.join("inst"))
            .clone();
        let events = opts
            .events
            .get_or_insert_with(|| self.file("events", "jsonl"))
            .clone();
        let state_file = opts
            .state_file
            .get_or_insert_with(|| self.file("state", "json"))
            .clone();
        let log = self.file("controller", "log");
        let mut args: Vec<&str> = vec![path_str(&bin), "run"];
        if !opts.ifaces_from_config {
            args.extend(["--iface", &self.tgt.iface]);
        }
        args.extend([
            "--xdp-mode",
            opts.mode.as_str(),
            "--pin-dir",
            path_str(&pin_dir),
            "--events",
            path_str(&events),
            "--state-file",
            path_str(&state_file),
        ]);
        if let Some(cfg) = &opts.config {
            args.extend(["--config", path_str(cfg)]);
        }
        if opts.dry_run {
            args.push("--dry-run");
        }
        if opts.keep_attached {
            args.push("--keep-attached");
        }
        args.extend(opts.extra_args.iter().map(String::as_str));
        {
            let mut dirs = self.pin_dirs.lock().unwrap_or_else(|p| p.into_inner());
            if !dirs.contains(&pin_dir) {
                dirs.push(pin_dir.clone());
            }
        }
        let mode = opts.mode;
        let proc = self.spawn_in_env(
            &self.tgt.ns,
            &args,
            &[("SCAN_GUARD_LOG", opts.log_level)],
            &log,
        );
        let c = Controller {
            proc,
            mode,
            pin_dir,
            events,
            log,
            state_file,
            opts,
        };
        self.wait_started(
            proc,
            &format!("controller ({} mode)", mode.as_str()),
            &format!("attach (link pin {}, runtime file)", c.link_pin().display()),
            &[&c.log],
            ATTACH_TIMEOUT,
            || c.link_pin().exists() && self.controller_ready(&c),
        );
        c
    }

    /// True once this very controller process (a child of our `timeout`, as `ip
    /// netns exec` execs in place) has written its runtime file, or (if it could
    /// not write one) has logged that it attached or re-adopted.
    fn controller_ready(&self, c: &Controller) -> bool {
        if let Some(info) = scan_guard::kernel::instance::read(&c.pin_dir) {
            if parent_pid(info.pid) == Some(c.proc.pid) {
                return true;
            }
        }
        let log = read_lossy(&c.log);
        log.contains("writing runtime info")
            && (log.contains("re-adopted") || log.contains("attached iface="))
    }

    /// The controller's pid (`scan-guard` itself, child of the lab's `timeout`), if
    /// it is running.
    pub fn controller_pid(&self, c: &Controller) -> Option<u32> {
        scan_guard::kernel::instance::read(&c.pin_dir)
            .map(|i| i.pid)
            .filter(|&pid| parent_pid(pid) == Some(c.proc.pid))
    }

    /// `kill -9` of the controller: it leaves its program attached and its pins.
    pub fn kill_controller(&self, c: &Controller) -> ExitStatus {
        let pid = self.controller_pid(c);
        let status = self.kill(c.proc);
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists() || parent_pid(pid) != Some(c.proc.pid),
                "[lab {}] controller pid {pid} survived SIGKILL",
                self.tag
            );
        }
        status
    }

    /// SIGTERM to the controller and a bounded wait for it to detach and exit.
    pub fn stop_controller(&self, c: &Controller) -> ExitStatus {
        self.terminate(c.proc, Duration::from_secs(10))
    }

    /// Stops the controller (as [`stop_controller`](Self::stop_controller)) and
    /// panics, with its log, unless it exited 0.
    pub fn stop_controller_ok(&self, c: &Controller) {
        let status = self.stop_controller(c);
        assert!(
            status.success(),
            "[lab {}] controller exit: {}\n{}",
            self.tag,
            describe_status(status),
            read_lossy(&c.log)
        );
    }

    /// Rewrites the controller's config file `cfg` with `text` and sends it SIGHUP.
    pub fn reload_controller(&self, c: &Controller, cfg: &Path, text: &str) {
        fs::write(cfg, text).unwrap_or_else(|e| panic!("rewriting {}: {e}", cfg.display()));
        let pid = self
            .controller_pid(c)
            .unwrap_or_else(|| panic!("[lab {}] no controller pid", self.tag));
        // SAFETY: plain syscall on the lab's own controller process.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0, "[lab {}] SIGHUP to the controller", self.tag);
    }

    /// Panics (with its log) if the controller has exited.
    pub fn assert_running(&self, c: &Controller, when: &str) {
        if let Some(s) = self.try_status(c.proc) {
            panic!(
                "[lab {}] the controller exited ({}) {when}\n--- events ---\n{}--- controller log ---\n{}",
                self.tag,
                describe_status(s),
                read_lossy(&c.events),
                read_lossy(&c.log)
            );
        }
    }

    /// Waits (bounded by `limit`) for a line of the controller's log holding
    /// `needle` and returns it; fails at once if the controller exits.
    pub fn wait_log(&self, c: &Controller, needle: &str, limit: Duration) -> String {
        self.wait_log_nth(c, needle, 1, limit)
    }

    /// Like [`wait_log`](Self::wait_log), for the `n`th such line (1-based).
    pub fn wait_log_nth(&self, c: &Controller, needle: &str, n: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = read_lossy(&c.log);
            if let Some(line) = log.lines().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.to_string();
            }
            self.assert_running(
                c,
                &format!("while waiting for log line #{n} with {needle:?}"),
            );
            assert!(
                Instant::now() < deadline,
                "[lab {}] no log line #{n} with {needle:?} within {limit:?}\n{log}",
                self.tag
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Controller::wait_event`] that also fails at once, saying so, if the
    /// controller exits while we wait.
    pub fn wait_event(
        &self,
        c: &Controller,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = c.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            self.assert_running(c, &format!("while waiting for a {what} event"));
            if Instant::now() >= deadline {
                return c.wait_event(Duration::ZERO, what, pred);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `scan-guard run` on the target with the config file `cfg`, which it must
    /// refuse: exit 2 (a usage error) before anything is attached. Returns stderr.
    pub fn run_refused(&self, cfg: &Path) -> String {
        let pin_dir = self.bpffs.join("never");
        let out = self.scan_guard_in(
            &self.tgt.ns,
            &[
                "run",
                "--iface",
                &self.tgt.iface,
                "--config",
                path_str(cfg),
                "--pin-dir",
                path_str(&pin_dir),
                "--events",
                path_str(&self.file("events", "jsonl")),
                "--state-file",
                path_str(&self.file("state", "json")),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "[lab {}] {}",
            self.tag,
            describe(&out)
        );
        assert!(
            !scan_guard::kernel::loader::is_attached(&pin_dir),
            "[lab {}] attached although the config could not be used",
            self.tag
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `scan-guard ARGS` inside `ns`, bounded by [`CMD_TIMEOUT`](super::CMD_TIMEOUT), with
    /// `SCAN_GUARD_PIN_DIR` and `SCAN_GUARD_LOG` removed from its environment.
    pub fn scan_guard_in(&self, ns: &str, args: &[&str]) -> Output {
        scan_guard_via(&["ip", "netns", "exec", ns], args)
    }
}
