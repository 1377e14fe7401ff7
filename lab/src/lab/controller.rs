//! The real controller (`scan-guard run`) as the tests see it: how to start it
//! ([`ControllerOptions`]), the handle of a running one ([`Controller`]: its
//! pins, maps, CLI and events) and the binary itself. Starting, stopping and
//! watching it in the lab: `controller_lifecycle.rs`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use scan_guard::kernel::maps::KernelMaps;
use scan_guard_common::stats::StatBlock;
use serde_json::Value;

use super::{
    cmd::{CMD_TIMEOUT, describe, path_str, read_lossy},
    process::Proc,
};

/// How long the controller may take to attach and pin its link.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// XDP attach mode passed to `scan-guard run --xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Skb,
}

impl XdpMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }

    /// The word `ip link show` prints for a program attached in this mode.
    pub const fn ip_link_word(self) -> &'static str {
        match self {
            Self::Native => "xdp",
            Self::Skb => "xdpgeneric",
        }
    }
}

/// The real controller (`scan-guard run`) running in the target namespace.
#[derive(Debug)]
pub struct Controller {
    pub proc: Proc,
    pub mode: XdpMode,
    /// `--pin-dir` (on the lab's bpffs).
    pub pin_dir: PathBuf,
    /// `--events` file.
    pub events: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// `--state-file` (in the lab directory unless the options named another).
    pub state_file: PathBuf,
    /// What it was started with, every path filled in: start the same instance again
    /// with [`Lab::start_controller_with`]`(&c.opts)`.
    pub opts: ControllerOptions,
}

/// How [`Lab::start_controller_with`] runs `scan-guard run`.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub mode: XdpMode,
    /// `--config FILE` (see [`Lab::write_file`]).
    pub config: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--keep-attached`.
    pub keep_attached: bool,
    /// `--pin-dir`; `None`: `<bpffs>/inst`.
    pub pin_dir: Option<PathBuf>,
    /// `--events`; `None`: a fresh file in the lab directory.
    pub events: Option<PathBuf>,
    /// `--state-file`; `None`: a fresh file in the lab directory.
    pub state_file: Option<PathBuf>,
    /// Appended to the command line as given.
    pub extra_args: Vec<String>,
    /// `SCAN_GUARD_LOG`.
    pub log_level: &'static str,
    /// No `--iface`: the interfaces come from the config file's `ifaces`.
    pub ifaces_from_config: bool,
}

impl ControllerOptions {
    pub fn new(mode: XdpMode) -> Self {
        Self {
            mode,
            config: None,
            dry_run: false,
            keep_attached: false,
            pin_dir: None,
            events: None,
            state_file: None,
            extra_args: Vec::new(),
            log_level: "info",
            ifaces_from_config: false,
        }
    }

    pub fn config(mut self, path: &Path) -> Self {
        self.config = Some(path.to_path_buf());
        self
    }

    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    pub fn keep_attached(mut self) -> Self {
        self.keep_attached = true;
        self
    }

    pub fn state_file(mut self, path: &Path) -> Self {
        self.state_file = Some(path.to_path_buf());
        self
    }

    pub fn ifaces_from_config(mut self) -> Self {
        self.ifaces_from_config = true;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_owned());
        self
    }
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self::new(XdpMode::Native)
    }
}

impl Controller {
    /// The pinned link of the (first) interface the instance is attached to.
    pub fn link_pin(&self) -> PathBuf {
        let names = scan_guard::kernel::loader::pinned_links(&self.pin_dir);
        let first = names.first().map_or("(none)", String::as_str);
        scan_guard::kernel::loader::link_pin(&self.pin_dir, first)
    }

    /// The maps of the running instance, opened from its pins by this process.
    pub fn maps(&self) -> KernelMaps {
        KernelMaps::open_pinned(&self.pin_dir).unwrap_or_else(|e| {
            panic!(
                "opening the pinned maps in {}: {e:#}",
                self.pin_dir.display()
            )
        })
    }

    /// Kernel counters summed over CPUs (index with `scan_guard_common::stats::Stat`).
    pub fn stats(&self) -> StatBlock {
        self.maps()
            .stats_total()
            .unwrap_or_else(|e| panic!("reading STATS from {}: {e:#}", self.pin_dir.display()))
    }

    /// `scan-guard ARGS --pin-dir <pin_dir>`, run by the test process (the pins are
    /// on the lab's bpffs, reachable from any namespace), bounded.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full = args.to_vec();
        full.extend(["--pin-dir", path_str(&self.pin_dir)]);
        scan_guard_cli(&full)
    }

    /// Like [`cli`](Self::cli) but panics unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            panic!(
                "scan-guard {} --pin-dir {}: {}\n--- controller log ---\n{}",
                args.join(" "),
                self.pin_dir.display(),
                describe(&out),
                read_lossy(&self.log)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`cli`](Self::cli) but panics unless it exits with `code` and its
    /// stderr says `says`.
    pub fn cli_fails(&self, args: &[&str], code: i32, says: &str) {
        let out = self.cli(args);
        if out.status.code() != Some(code) || !String::from_utf8_lossy(&out.stderr).contains(says) {
            panic!(
                "scan-guard {}: want exit {code} saying {says:?}, got {}",
                args.join(" "),
                describe(&out)
            );
        }
    }

    /// `scan-guard ARGS --json` parsed.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.push("--json");
        let text = self.cli_ok(&full);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "scan-guard {}: stdout is not JSON ({e}): {text}",
                full.join(" ")
            )
        })
    }

    /// `scan-guard list --json`: the blocked sources.
    pub fn list(&self) -> Vec<Value> {
        match self.cli_json(&["list"]) {
            Value::Array(rows) => rows,
            other => panic!("scan-guard list --json is not an array: {other}"),
        }
    }

    /// The row of `list --json` for `addr` (as `list` prints it), if any.
    pub fn listed(&self, addr: &str) -> Option<Value> {
        self.list().into_iter().find(|r| r["addr"] == addr)
    }

    /// `scan-guard stats --json`.
    pub fn stats_json(&self) -> Value {
        self.cli_json(&["stats"])
    }

    /// The events written so far, one JSON value per complete line; panics on a line
    /// that is not JSON (the events file holds nothing else).
    pub fn events(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.events).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "events file {}: line is not JSON ({e}): {l}",
                        self.events.display()
                    )
                })
            })
            .collect()
    }

    /// The events matching `pred`.
    pub fn events_where(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events().into_iter().filter(|e| pred(e)).collect()
    }

    /// Waits (bounded by `limit`) for the first event matching `pred`; panics with
    /// the events so far and the controller's log if none comes.
    pub fn wait_event(&self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {what} event within {limit:?}\n--- events ({}) ---\n{}--- controller log ---\n{}",
                    self.events.display(),
                    read_lossy(&self.events),
                    read_lossy(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An event's `event` field.
pub fn event_name(e: &Value) -> &str {
    e["event"].as_str().unwrap_or("")
}

/// True for an event named `name` about source `src`.
pub fn is_event(e: &Value, name: &str, src: &str) -> bool {
    event_name(e) == name && e["src"] == src
}

/// `scan-guard ARGS` in the test's own namespace, bounded by [`CMD_TIMEOUT`], with
/// `SCAN_GUARD_PIN_DIR` and `SCAN_GUARD_LOG` removed from its environment so what
/// it prints is what a user sees by default.
pub fn scan_guard_cli(args: &[&str]) -> Output {
    scan_guard_via(&[], args)
}

/// `scan-guard ARGS` started through `wrapper` (e.g. `ip netns exec NS`; nothing:
/// directly) as [`scan_guard_cli`] runs it.
pub(super) fn scan_guard_via(wrapper: &[&str], args: &[&str]) -> Output {
    let bin = controller_bin();
    let secs = CMD_TIMEOUT.as_secs().to_string();
    Command::new("timeout")
        .args(["-k", "2", &secs])
        .args(wrapper)
        .arg(&bin)
        .args(args)
        .env_remove("SCAN_GUARD_PIN_DIR")
        .env_remove("SCAN_GUARD_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {wrapper:?} {} {args:?}: {e}", bin.display()))
}

/// The controller binary next to the test executable:
/// `target/<profile>/deps/<test>-<hash>` -> `target/<profile>/scan-guard`.
pub fn controller_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    // A binary of this crate (the demo) lives next to scan-guard itself, in
    // target/<profile>/.
    if let Some(dir) = exe.parent().filter(|d| !d.ends_with("deps")) {
        let bin = dir.join("scan-guard");
        if bin.is_file() {
            return bin;
        }
    }
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!(
            "test executable {} is not in target/<profile>/deps",
            exe.display()
        )
    });
    let bin = profile_dir.join("scan-guard");
    if !bin.is_file() {
        panic!(
            "controller binary {} not found: build it first: cargo build -p scan-guard (cargo xtask test does this)",
            bin.display()
        );
    }
    bin
}
