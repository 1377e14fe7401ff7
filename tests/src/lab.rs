//! Network-namespace lab: two namespaces (attacker and target) joined by a veth
//! pair, a private bpffs for the controller's pins, and RAII teardown of all of it.
//!
//! Every packet stays between the two namespaces: the addresses live only there
//! and neither namespace has a default route (checked at setup). Every external
//! command runs under `timeout`. `Drop` stops the processes the lab started (by
//! pid, through the handles it keeps), deletes the namespaces, unmounts the bpffs
//! and removes the lab directory, also when the test panicked.

use std::{
    cell::Cell,
    fs::{self, OpenOptions},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use scan_guard::kernel::maps::KernelMaps;
use scan_guard_common::stats::StatBlock;
use serde_json::Value;

use crate::scenario::pcap;

/// Default bound of a one-shot command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the controller may take to attach and pin its link.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of every long-running process the lab spawns (a safety net: the tests
/// stop them long before).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Namespace create/delete through `ip netns` is serialised within the process
/// (`ip` sets up /run/netns on first use; parallel first uses can race).
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One end of the lab's link.
#[derive(Clone, Debug)]
pub struct Side {
    /// Network namespace name.
    pub ns: String,
    /// The veth end inside `ns`.
    pub iface: String,
    pub mac: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// A process started by the lab. The lab keeps the `Child` itself (so it can
/// never signal a recycled pid); this handle names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    idx: usize,
    pub pid: u32,
}

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
fn scan_guard_via(wrapper: &[&str], args: &[&str]) -> Output {
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

/// A command the lab runs in the background (e.g. a scan), with its output file.
#[derive(Debug)]
pub struct Background {
    pub proc: Proc,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Its command line (for messages).
    pub what: String,
}

/// A tcpdump writing a pcap file in the lab directory.
#[derive(Debug)]
pub struct Capture {
    pub proc: Proc,
    pub file: PathBuf,
    pub log: PathBuf,
}

/// One TCP segment read back from a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSeen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
}

pub struct Lab {
    /// What the test called it (shows up in panic messages).
    pub tag: String,
    /// Unique per lab in this machine at this time: pid + counter, in hex.
    pub id: String,
    pub att: Side,
    pub tgt: Side,
    /// The second client ([`LabOptions::second_client`]): `sg-<id>-cli`, 10.200.1.3.
    pub cli: Option<Side>,
    /// The switch namespace holding the bridge when there is a second client.
    pub switch_ns: Option<String>,
    /// `/run/sg-test-<id>`: logs, captures, events.
    pub dir: PathBuf,
    /// `<dir>/bpffs`, a bpffs mounted for this lab only.
    pub bpffs: PathBuf,
    procs: Mutex<Vec<Child>>,
    namespaces: Vec<String>,
    mounted: bool,
    files: AtomicU32,
    /// Pin directories controllers were started with (their runtime files under
    /// /run/scan-guard are removed on drop, also after a SIGKILL).
    pin_dirs: Mutex<Vec<PathBuf>>,
    /// Bound (seconds) of every process spawned from now on; [`SPAWN_TIMEOUT`]
    /// unless [`Lab::set_spawn_limit`] changed it.
    spawn_limit_s: AtomicU64,
}

/// What [`Lab::with_options`] builds besides the two namespaces of [`Lab::new`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LabOptions {
    /// A second client namespace `sg-<id>-cli` (10.200.1.3/24, fd00:200::3/64, MAC
    /// ...:03). The attacker, the client and the target then each hang off a bridge
    /// in a switch namespace of its own (`sg-<id>-sw`, no addresses): a bridge inside
    /// the target namespace would answer for the target's addresses itself, and
    /// packets would bypass the protected interface and its XDP program.
    pub second_client: bool,
}

/// nmap arguments of a quick `scan` (`-sS`, `-sT`, ...) of the privileged ports 1-200
/// (mostly closed), given up after `host_timeout`; the target goes after them.
/// Quick timing, bounded retries and timeouts: most probes are dropped once the
/// kernel blocks.
/// nmap arguments for a quick TCP SYN host sweep probing `ports` (e.g. "80" or
/// "22,80,443"). Never -Pn with -sn (nmap would send nothing), and no ARP
/// discovery (the lab's hosts would answer it instead).
pub fn quick_sweep_args(ports: &str) -> Vec<String> {
    [
        "-sn",
        "-n",
        &format!("-PS{ports}"),
        "--disable-arp-ping",
        "-T4",
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "200ms",
        "--host-timeout",
        "20s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn quick_scan_args<'a>(scan: &'a str, host_timeout: &'a str) -> Vec<&'a str> {
    vec![
        scan,
        "-n",
        "-Pn",
        "-T4",
        "-p",
        "1-200",
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "200ms",
        "--host-timeout",
        host_timeout,
    ]
}

/// A daemon a test helper spawned through the lab (a CrowdSec Local API, an
/// rsyslogd), stopped when the guard is dropped, also while the test unwinds:
/// SIGTERM, a bounded wait, then SIGKILL to its process group.
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
        if self.lab.try_status(p).is_some() {
            return;
        }
        // The lab's own unreaped `timeout`, which passes SIGTERM on to the daemon.
        signal(p.pid, libc::SIGTERM);
        if self.lab.wait_for(p, Duration::from_secs(5)).is_none() {
            self.lab.kill(p);
        }
    }
}

/// Runs `program args` under `timeout` (SIGTERM at `limit`, SIGKILL 2 s later).
pub fn run_bounded(limit: Duration, program: &str, args: &[&str]) -> Output {
    let secs = limit.as_secs().max(1).to_string();
    Command::new("timeout")
        .args(["-k", "2", &secs, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running timeout {secs} {program} {args:?}: {e}"))
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

fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(124), _) => "timed out (exit 124 from timeout)".into(),
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// Gives a side's veth end its IPv4 /24 and IPv6 /64 (no DAD) and brings it up.
pub(crate) fn address_side(s: &Side) {
    ip_ok(&[
        "-n",
        &s.ns,
        "addr",
        "add",
        &format!("{}/24", s.v4),
        "dev",
        &s.iface,
    ]);
    ip_ok(&[
        "-n",
        &s.ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", s.v6),
        "dev",
        &s.iface,
        "nodad",
    ]);
    ip_ok(&["-n", &s.ns, "link", "set", &s.iface, "up"]);
}

/// `ip ARGS` in the test's own namespace, bounded; panics with context on failure.
pub(crate) fn ip_ok(args: &[&str]) -> String {
    let out = run_bounded(Duration::from_secs(10), "ip", args);
    if !out.status.success() {
        panic!("ip {}: {}", args.join(" "), describe(&out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the network namespaces that currently exist.
pub fn netns_list() -> Vec<String> {
    let out = run_bounded(Duration::from_secs(10), "ip", &["netns", "list"]);
    assert!(out.status.success(), "ip netns list: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
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

fn unique_id() -> String {
    let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
    assert!(n < 256, "more than 256 labs in one test process");
    // pid is at most 2^22 (6 hex digits) + 2 digits: interface names stay <= 15 chars.
    format!("{:x}{n:02x}", std::process::id())
}

impl Lab {
    /// Creates the namespaces `sg-<id>-att` and `sg-<id>-tgt`, the veth pair
    /// `sg<id>a` / `sg<id>t` with fixed MACs, 10.200.1.1/24 + fd00:200::1/64 on the
    /// attacker and .2 / ::2 on the target, all links up, and a private bpffs.
    pub fn new(tag: &str) -> Self {
        Self::with_options(tag, LabOptions::default())
    }

    /// Like [`new`](Self::new), with the extras `opts` asks for (see [`LabOptions`]).
    pub fn with_options(tag: &str, opts: LabOptions) -> Self {
        let id = unique_id();
        let dir = PathBuf::from(format!("/run/sg-test-{id}"));
        let mut lab = Lab {
            tag: tag.to_owned(),
            att: Side {
                ns: format!("sg-{id}-att"),
                iface: format!("sg{id}a"),
                mac: "02:53:47:00:00:01",
                v4: Ipv4Addr::new(10, 200, 1, 1),
                v6: "fd00:200::1".parse().expect("v6"),
            },
            tgt: Side {
                ns: format!("sg-{id}-tgt"),
                iface: format!("sg{id}t"),
                mac: "02:53:47:00:00:02",
                v4: Ipv4Addr::new(10, 200, 1, 2),
                v6: "fd00:200::2".parse().expect("v6"),
            },
            cli: opts.second_client.then(|| Side {
                ns: format!("sg-{id}-cli"),
                iface: format!("sg{id}c"),
                mac: "02:53:47:00:00:03",
                v4: Ipv4Addr::new(10, 200, 1, 3),
                v6: "fd00:200::3".parse().expect("v6"),
            }),
            switch_ns: opts.second_client.then(|| format!("sg-{id}-sw")),
            bpffs: dir.join("bpffs"),
            dir,
            id,
            procs: Mutex::new(Vec::new()),
            namespaces: Vec::new(),
            mounted: false,
            files: AtomicU32::new(0),
            pin_dirs: Mutex::new(Vec::new()),
            spawn_limit_s: AtomicU64::new(SPAWN_TIMEOUT.as_secs()),
        };
        // From here on a panic unwinds through `lab`'s Drop, which undoes what was done.
        lab.setup();
        lab
    }

    /// A lab with the second client ([`LabOptions::second_client`]) and the HTTP
    /// server of [`start_http_server`](Self::start_http_server) listening on `port`:
    /// the scene of the tests that check who is still served.
    pub fn with_client_and_http_server(tag: &str, port: u16) -> Self {
        let lab = Self::with_options(
            tag,
            LabOptions {
                second_client: true,
            },
        );
        lab.start_http_server(port);
        lab
    }

    /// The second client; panics unless the lab was built with one.
    pub fn client(&self) -> &Side {
        self.cli.as_ref().unwrap_or_else(|| {
            panic!(
                "[lab {}] has no second client: build it with LabOptions {{ second_client: true, .. }}",
                self.tag
            )
        })
    }

    /// The endpoint sides: attacker, target and (if any) the second client.
    fn endpoints(&self) -> Vec<Side> {
        let mut v = vec![self.att.clone(), self.tgt.clone()];
        v.extend(self.cli.clone());
        v
    }

    /// Every namespace this lab creates.
    fn namespace_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.endpoints().into_iter().map(|s| s.ns).collect();
        v.extend(self.switch_ns.clone());
        v
    }

    fn setup(&mut self) {
        assert!(self.endpoints().iter().all(|s| s.iface.len() <= 15));
        // A lab directory or namespaces with our names can only be left over from a
        // killed run of a process with the same pid: clear them.
        remove_stale_netns(&self.namespace_names());
        remove_stale_dir(&self.dir, &self.bpffs);
        fs::create_dir_all(&self.bpffs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.bpffs.display()));
        let who = format!("[lab {}]", self.tag);
        mount_bpffs(&self.bpffs, &who);
        self.mounted = true;
        assert!(
            scan_guard::kernel::bpffs::is_bpffs(&self.bpffs).unwrap_or(false),
            "{} is not a bpffs after mounting",
            self.bpffs.display()
        );

        for ns in self.namespace_names() {
            add_netns(&ns);
            self.namespaces.push(ns);
        }
        let (a, t) = (&self.att, &self.tgt);
        if let Some(sw) = &self.switch_ns {
            self.build_switch(sw);
        } else {
            add_veth_pair(&a.ns, &a.iface, a.mac, &t.ns, &t.iface, t.mac);
        }
        for s in &self.endpoints() {
            ip_ok(&["-n", &s.ns, "link", "set", "lo", "up"]);
            address_side(s);
        }
        for ns in self.namespace_names() {
            assert_no_default_route(&ns, &who);
        }
    }

    /// The bridge `sg<id>br` in the switch namespace and one veth per endpoint, each
    /// created inside its endpoint namespace with the peer (`sg<id>p<letter>`)
    /// straight in the switch namespace, enslaved to the bridge.
    fn build_switch(&self, sw: &str) {
        // The switch only forwards frames: no addresses, no IPv6 chatter of its own.
        let out = run_bounded(
            Duration::from_secs(10),
            "ip",
            &[
                "netns",
                "exec",
                sw,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        if !out.status.success() {
            panic!("[lab {}] sysctl in {sw}: {}", self.tag, describe(&out));
        }
        let br = format!("sg{}br", self.id);
        ip_ok(&[
            "-n",
            sw,
            "link",
            "add",
            "name",
            &br,
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        ip_ok(&["-n", sw, "link", "set", &br, "up"]);
        for s in self.endpoints() {
            let letter = s.iface.chars().last().expect("iface name");
            let port = format!("sg{}p{letter}", self.id);
            ip_ok(&[
                "-n", &s.ns, "link", "add", &s.iface, "address", s.mac, "type", "veth", "peer",
                "name", &port, "netns", sw,
            ]);
            ip_ok(&["-n", sw, "link", "set", &port, "master", &br]);
            ip_ok(&["-n", sw, "link", "set", &port, "up"]);
        }
    }

    /// A host behind the target, which routes for it: namespace `sg-<id>-far`,
    /// joined to the target by the veth pair `sg<id>f` (far side, 10.201.1.2/24) /
    /// `sg<id>r` (target side, 10.201.1.1/24). The target forwards between its
    /// links; the attacker and the far host reach each other through it by a route
    /// to the other's /24 only. No default route anywhere (checked). Torn down
    /// with the lab.
    pub fn add_far_host_behind_target(&mut self) -> Side {
        let far = Side {
            ns: format!("sg-{}-far", self.id),
            iface: format!("sg{}f", self.id),
            mac: "02:53:47:00:00:0f",
            v4: Ipv4Addr::new(10, 201, 1, 2),
            v6: "fd00:201::2".parse().expect("v6"),
        };
        let router_if = format!("sg{}r", self.id);
        remove_stale_netns(std::slice::from_ref(&far.ns));
        add_netns(&far.ns);
        self.namespaces.push(far.ns.clone());
        add_veth_pair(
            &far.ns,
            &far.iface,
            far.mac,
            &self.tgt.ns,
            &router_if,
            "02:53:47:00:00:0e",
        );
        ip_ok(&["-n", &far.ns, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &far.ns, "link", "set", &far.iface, "up"]);
        ip_ok(&[
            "-n",
            &far.ns,
            "addr",
            "add",
            "10.201.1.2/24",
            "dev",
            &far.iface,
        ]);
        ip_ok(&["-n", &self.tgt.ns, "link", "set", &router_if, "up"]);
        ip_ok(&[
            "-n",
            &self.tgt.ns,
            "addr",
            "add",
            "10.201.1.1/24",
            "dev",
            &router_if,
        ]);
        self.sysctl(&self.tgt.ns, "net.ipv4.ip_forward=1");
        ip_ok(&[
            "-n",
            &self.att.ns,
            "route",
            "add",
            "10.201.1.0/24",
            "via",
            "10.200.1.2",
        ]);
        ip_ok(&[
            "-n",
            &far.ns,
            "route",
            "add",
            "10.200.1.0/24",
            "via",
            "10.201.1.1",
        ]);
        let who = format!("[lab {}]", self.tag);
        for ns in [&far.ns, &self.att.ns, &self.tgt.ns] {
            assert_no_default_route(ns, &who);
        }
        far
    }

    /// A fresh file name in the lab directory (`<stem>-<n>.<ext>`).
    pub fn file(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::SeqCst);
        self.dir.join(format!("{stem}-{n}.{ext}"))
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

    /// Starts `args` inside `ns` under `timeout` (bounded by [`SPAWN_TIMEOUT`], or
    /// what [`set_spawn_limit`](Self::set_spawn_limit) set),
    /// stdout and stderr appended to `log`. The lab keeps the child and stops it
    /// on drop if the test has not.
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
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let child = spawn_bounded(limit, args, env, log)
            .unwrap_or_else(|e| panic!("[lab {}] spawning {args:?}: {e}", self.tag));
        let proc = Proc {
            idx: procs.len(),
            pid: child.id(),
        };
        procs.push(child);
        proc
    }

    /// Exit status if `p` has finished (reaps it).
    pub fn try_status(&self, p: Proc) -> Option<ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs[p.idx]
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for pid {}: {e}", p.pid))
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
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to `p` and waits up to `limit` for it to exit; panics (after
    /// killing it) if it does not.
    pub fn terminate(&self, p: Proc, limit: Duration) -> ExitStatus {
        if let Some(s) = self.try_status(p) {
            return s;
        }
        signal(p.pid, libc::SIGTERM);
        match self.wait_for(p, limit) {
            Some(s) => s,
            None => {
                self.kill_group(p);
                panic!(
                    "[lab {}] pid {} did not exit within {limit:?} of SIGTERM",
                    self.tag, p.pid
                );
            }
        }
    }

    /// [`kill_group`] of `p`.
    fn kill_group(&self, p: Proc) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        kill_group(&mut procs[p.idx]);
    }

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
        let mut args: Vec<&str> = vec![
            path_str(&bin),
            "run",
            "--iface",
            &self.tgt.iface,
            "--xdp-mode",
            opts.mode.as_str(),
            "--pin-dir",
            path_str(&pin_dir),
            "--events",
            path_str(&events),
            "--state-file",
            path_str(&state_file),
        ];
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

    /// SIGKILL to `p` and its whole process group (the controller under its
    /// `timeout`: nothing gets to clean up), then reaps it.
    pub fn kill(&self, p: Proc) -> ExitStatus {
        if let Some(s) = self.try_status(p) {
            return s;
        }
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let child = &mut procs[p.idx];
        // SAFETY: plain syscall on our own unreaped child's group.
        unsafe {
            libc::killpg(p.pid as libc::pid_t, libc::SIGKILL);
        }
        child
            .wait()
            .unwrap_or_else(|e| panic!("[lab {}] reaping pid {}: {e}", self.tag, p.pid))
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

    /// Writes `contents` to a fresh file in the lab directory and returns its path.
    pub fn write_file(&self, stem: &str, ext: &str, contents: &str) -> PathBuf {
        let p = self.file(stem, ext);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// `sysctl -w SETTING` inside `ns`.
    pub fn sysctl(&self, ns: &str, setting: &str) {
        self.exec_ok(ns, &["sysctl", "-qw", setting]);
    }

    /// Adds 10.200.1.`n`/24 for every `n` in `hosts` to the target's veth (so a host
    /// sweep from the attacker finds many addresses behind the protected interface)
    /// and returns them.
    pub fn add_target_v4(&self, hosts: std::ops::RangeInclusive<u8>) -> Vec<Ipv4Addr> {
        self.add_v4(&self.tgt, hosts)
    }

    /// Starts `python3 -m http.server PORT` (dual-stack) in the target namespace
    /// serving a one-line page, and waits until it listens.
    pub fn start_http_server(&self, port: u16) -> Proc {
        let www = self.dir.join(format!("www-{port}"));
        fs::create_dir_all(&www).unwrap_or_else(|e| panic!("creating {}: {e}", www.display()));
        fs::write(www.join("index.html"), "scan-guard lab\n").expect("index.html");
        let log = self.file("http-server", "log");
        let p = self.spawn_in(
            &self.tgt.ns,
            &[
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "::",
                "--directory",
                path_str(&www),
            ],
            &log,
        );
        self.wait_listening(&self.tgt.ns, port, Duration::from_secs(10));
        p
    }

    /// One HTTP GET from `ns` to `ip:port` with curl (connect timeout 2 s, total
    /// 3 s): `Ok(())` on status 200, else what happened.
    pub fn http_get(&self, ns: &str, ip: IpAddr, port: u16) -> Result<(), String> {
        self.http_get_from(ns, None, ip, port)
    }

    /// [`http_get`](Self::http_get) from source address `src` of `ns`.
    pub fn http_get_from(
        &self,
        ns: &str,
        src: Option<&str>,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), String> {
        let url = match ip {
            IpAddr::V4(a) => format!("http://{a}:{port}/"),
            IpAddr::V6(a) => format!("http://[{a}]:{port}/"),
        };
        let mut args = vec!["curl", "-sS", "-g"];
        if let Some(src) = src {
            args.extend(["--interface", src]);
        }
        args.extend([
            "--connect-timeout",
            "2",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        let out = self.exec_in_for(ns, Duration::from_secs(8), &args);
        let code = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && code.trim() == "200" {
            Ok(())
        } else {
            let from = src.map_or_else(|| ns.to_string(), |s| format!("{s} in {ns}"));
            Err(format!("GET {url} from {from}: {}", describe(&out)))
        }
    }

    /// Runs `nmap ARGS` in the attacker namespace, bounded by `limit` (give nmap its
    /// own `--host-timeout` below it); panics unless nmap exits 0. Returns stdout.
    pub fn nmap(&self, args: &[&str], limit: Duration) -> String {
        let mut full = vec!["nmap"];
        full.extend_from_slice(args);
        let out = self.exec_in_for(&self.att.ns, limit, &full);
        if !out.status.success() {
            panic!(
                "[lab {}] {} (in {}): {}",
                self.tag,
                full.join(" "),
                self.att.ns,
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
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

    /// Panics unless `ns` gets the page of the HTTP server on `ip:port`.
    pub fn assert_served(&self, c: &Controller, ns: &str, ip: IpAddr, port: u16, who: &str) {
        if let Err(e) = self.http_get(ns, ip, port) {
            panic!(
                "[lab {}] {who} is not served: {e}\n--- list ---\n{:?}\n--- events ---\n{}--- controller log ---\n{}",
                self.tag,
                c.list(),
                read_lossy(&c.events),
                read_lossy(&c.log)
            );
        }
    }

    /// Panics if `ns` gets the page of the HTTP server on `ip:port`.
    pub fn assert_cut_off(&self, c: &Controller, ns: &str, ip: IpAddr, port: u16, who: &str) {
        assert!(
            self.http_get(ns, ip, port).is_err(),
            "[lab {}] {who} is still served\n--- list ---\n{:?}\n--- events ---\n{}",
            self.tag,
            c.list(),
            read_lossy(&c.events)
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

    /// The closing line of a test: its lab's tag and how long it took.
    pub fn report_passed(&self, t0: Instant) {
        eprintln!(
            "[{}] passed in {:.1} s",
            self.tag,
            t0.elapsed().as_secs_f64()
        );
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

    /// A fast SYN scan of 200 low ports from the attacker, in the background.
    pub fn fast_syn_scan(&self) -> Background {
        self.fast_syn_scan_of(IpAddr::V4(self.tgt.v4))
    }

    /// [`fast_syn_scan`](Self::fast_syn_scan) of `target` (IPv4 or IPv6).
    pub fn fast_syn_scan_of(&self, target: IpAddr) -> Background {
        let target = target.to_string();
        let mut args = quick_scan_args("-sS", "30s");
        if target.contains(':') {
            args.push("-6");
        }
        args.push(&target);
        self.spawn_nmap(&args)
    }

    /// Waits for the `blocked` event of `src` while `scan` runs (and at most
    /// `grace` after it ended), then ends the scan: the rest of it would only wait
    /// for dropped probes. Returns the event.
    pub fn wait_blocked_during(
        &self,
        c: &Controller,
        scan: &Background,
        grace: Duration,
        src: &str,
    ) -> Value {
        let ev = self.wait_event_during(c, scan, grace, &format!("blocked for {src}"), |e| {
            is_event(e, "blocked", src)
        });
        self.finish(scan);
        ev
    }

    /// Starts `nmap ARGS` in the attacker namespace in the background (bounded by
    /// [`SPAWN_TIMEOUT`]; give it a `--host-timeout` too).
    pub fn spawn_nmap(&self, args: &[&str]) -> Background {
        let mut full = vec!["nmap"];
        full.extend_from_slice(args);
        let log = self.file("nmap", "log");
        let proc = self.spawn_in(&self.att.ns, &full, &log);
        Background {
            proc,
            log,
            what: full.join(" "),
        }
    }

    /// Ends a background command: if it already finished it must have exited 0 (else
    /// this panics with its output); if it still runs it gets SIGTERM (bounded).
    /// Returns its output.
    pub fn finish(&self, b: &Background) -> String {
        match self.try_status(b.proc) {
            Some(s) if !s.success() => panic!(
                "[lab {}] {} failed: {}\n{}",
                self.tag,
                b.what,
                describe_status(s),
                read_lossy(&b.log)
            ),
            Some(_) => {}
            None => {
                self.terminate(b.proc, Duration::from_secs(5));
            }
        }
        read_lossy(&b.log)
    }

    /// Waits for the first event of `c` matching `pred` while `b` runs, and at most
    /// `grace` after it ended on its own; panics (with the events, the controller's
    /// log and `b`'s output) if none comes, or if `b` failed.
    pub fn wait_event_during(
        &self,
        c: &Controller,
        b: &Background,
        grace: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut ended: Option<Instant> = None;
        loop {
            if let Some(e) = c.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            self.assert_running(c, &format!("while waiting for a {what} event"));
            match (ended, self.try_status(b.proc)) {
                (None, Some(s)) => {
                    if !s.success() {
                        panic!(
                            "[lab {}] {} failed before any {what} event: {}\n{}",
                            self.tag,
                            b.what,
                            describe_status(s),
                            read_lossy(&b.log)
                        );
                    }
                    ended = Some(Instant::now());
                }
                (Some(t), _) if t.elapsed() >= grace => panic!(
                    "[lab {}] no {what} event within {grace:?} after {} ended\n--- its output ---\n{}--- events ---\n{}--- controller log ---\n{}",
                    self.tag,
                    b.what,
                    read_lossy(&b.log),
                    read_lossy(&c.events),
                    read_lossy(&c.log)
                ),
                _ => {}
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

    /// `scan-guard ARGS` inside `ns`, bounded by [`CMD_TIMEOUT`], with
    /// `SCAN_GUARD_PIN_DIR` and `SCAN_GUARD_LOG` removed from its environment.
    pub fn scan_guard_in(&self, ns: &str, args: &[&str]) -> Output {
        scan_guard_via(&["ip", "netns", "exec", ns], args)
    }

    /// Ids of the XDP programs `ip -d link show` reports on `side`'s veth (one
    /// `prog/xdp id N` per attached program).
    pub fn xdp_prog_ids(&self, side: &Side) -> Vec<u32> {
        let text = self.link_show(side);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(3)
            .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
            .filter_map(|w| w[2].parse().ok())
            .collect()
    }

    /// `ip -d link show dev <iface>` inside `side`'s namespace.
    pub fn link_show(&self, side: &Side) -> String {
        ip_ok(&["-n", &side.ns, "-d", "link", "show", "dev", &side.iface])
    }

    /// Starts tcpdump on `side`'s veth writing TCP segments to a pcap file, and
    /// waits (bounded) until it is capturing.
    pub fn start_capture(&self, side: &Side) -> Capture {
        self.start_tcpdump(&side.ns, &side.iface, &[], "tcp")
    }

    /// Stops the capture and returns the TCP segments it saw.
    pub fn stop_capture(&self, cap: &Capture) -> Vec<TcpSeen> {
        // Packets still in flight to the interface get a moment to be captured.
        let (bytes, _) = self.stop_capture_raw(cap, Duration::from_millis(200));
        parse_pcap(&bytes).unwrap_or_else(|e| {
            panic!(
                "[lab {}] capture {} is not a readable pcap: {e}",
                self.tag,
                cap.file.display()
            )
        })
    }

    /// Polls `ss` until a TCP listener on `port` exists in `ns` (bounded).
    pub fn wait_listening(&self, ns: &str, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.listens(ns, port) {
            assert!(
                Instant::now() < deadline,
                "[lab {}] nothing listens on TCP port {port} in {ns} after {limit:?}",
                self.tag
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when a TCP listener on `port` exists in `ns` (`ss`).
    pub fn listens(&self, ns: &str, port: u16) -> bool {
        let filter = format!("sport = :{port}");
        let out = self.exec_in(ns, &["ss", "-Hltn", &filter]);
        out.status.success() && !out.stdout.is_empty()
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

    /// Starts tcpdump on `iface` in `ns` writing the packets `filter` passes to a
    /// pcap file in the lab directory, with `opts` added, and waits (bounded) until
    /// it is capturing.
    fn start_tcpdump(&self, ns: &str, iface: &str, opts: &[&str], filter: &str) -> Capture {
        let file = self.file("capture", "pcap");
        let log = self.file("tcpdump", "log");
        // -Z root: the lab directory is root's; tcpdump would otherwise drop to its
        // own user and silently write nothing. -U: every packet hits the file.
        let mut argv = vec![
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "-Z",
            "root",
            "-w",
            path_str(&file),
        ];
        argv.extend_from_slice(opts);
        argv.push(filter);
        let proc = self.spawn_in(ns, &argv, &log);
        self.wait_started(
            proc,
            "tcpdump",
            "start capturing",
            &[&log],
            Duration::from_secs(10),
            || read_lossy(&log).contains("listening on"),
        );
        Capture { proc, file, log }
    }
}

/// Extras for scenarios with many sources and real services (the demo, the scan
/// matrix, the false-positive suite).
impl Lab {
    /// Bound of every process spawned from now on (the controller and long loads of
    /// a scenario that runs for minutes); the default is [`SPAWN_TIMEOUT`].
    pub fn set_spawn_limit(&self, limit: Duration) {
        self.spawn_limit_s
            .store(limit.as_secs().max(1), Ordering::SeqCst);
    }

    /// Every namespace this lab created (all removed on drop).
    pub fn namespaces(&self) -> Vec<String> {
        self.namespace_names()
    }

    /// Adds 10.200.1.`n`/24 for every `n` in `hosts` to `side`'s veth (more source
    /// addresses for that side, e.g. a fresh one per attack) and returns them.
    pub fn add_v4(&self, side: &Side, hosts: std::ops::RangeInclusive<u8>) -> Vec<Ipv4Addr> {
        let mut added = Vec::new();
        for n in hosts {
            let a = Ipv4Addr::new(10, 200, 1, n);
            assert!(
                self.endpoints().iter().all(|s| s.v4 != a),
                "[lab {}] {a} belongs to an endpoint",
                self.tag
            );
            ip_ok(&[
                "-n",
                &side.ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &side.iface,
            ]);
            added.push(a);
        }
        added
    }

    /// Adds fd00:200::`n` (n written in hex)/64 for every `n` in `hosts` to `side`'s
    /// veth (no duplicate address detection: usable at once) and returns them.
    pub fn add_v6(&self, side: &Side, hosts: std::ops::RangeInclusive<u16>) -> Vec<Ipv6Addr> {
        let mut added = Vec::new();
        for n in hosts {
            let a = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, n);
            assert!(
                self.endpoints().iter().all(|s| s.v6 != a),
                "[lab {}] {a} belongs to an endpoint",
                self.tag
            );
            ip_ok(&[
                "-n",
                &side.ns,
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                &side.iface,
                "nodad",
            ]);
            added.push(a);
        }
        added
    }

    /// Starts nginx (nginx-light) in the target namespace with a minimal config of
    /// its own in the lab directory: every port in `ports` on IPv4 and IPv6, a
    /// 200 "scan-guard lab" answer to every request, no access log, logs and temp
    /// files in the lab directory; waits until every port listens. It runs in the
    /// foreground under the lab's `timeout`, so the lab stops it on drop.
    pub fn start_nginx(&self, ports: &[u16]) -> Proc {
        let root = self.file("nginx", "d");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let r = path_str(&root);
        let listen: String = ports
            .iter()
            .map(|p| format!("    listen {p} backlog=4096;\n    listen [::]:{p} backlog=4096;\n"))
            .collect();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
             \x20 client_body_temp_path {r}/body;\n  proxy_temp_path {r}/proxy;\n\
             \x20 fastcgi_temp_path {r}/fastcgi;\n  uwsgi_temp_path {r}/uwsgi;\n\
             \x20 scgi_temp_path {r}/scgi;\n\
             \x20 server {{\n{listen}    location / {{ default_type text/plain; return 200 \"scan-guard lab\\n\"; }}\n  }}\n}}\n"
        );
        let conf_file = root.join("nginx.conf");
        fs::write(&conf_file, conf)
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf_file.display()));
        let log = self.file("nginx", "log");
        let error_log = root.join("error.log");
        let p = self.spawn_in(
            &self.tgt.ns,
            &[
                "nginx",
                "-e",
                path_str(&error_log),
                "-p",
                r,
                "-c",
                path_str(&conf_file),
            ],
            &log,
        );
        for &port in ports {
            self.wait_started(
                p,
                "nginx",
                &format!("listen on {port}"),
                &[&log, &error_log],
                Duration::from_secs(10),
                || self.listens(&self.tgt.ns, port),
            );
        }
        p
    }

    /// Sends `sig` to `p` (the lab's `timeout` in front of the command: it passes
    /// SIGINT and SIGTERM on to the command) unless it has already finished.
    pub fn signal(&self, p: Proc, sig: libc::c_int) {
        if self.try_status(p).is_none() {
            signal(p.pid, sig);
        }
    }

    /// Starts tcpdump on `iface` in `ns` with the capture filter `filter`, the
    /// first 160 bytes of each packet, at most `max_packets` packets, written to a
    /// pcap file in the lab directory; waits (bounded) until it is capturing.
    /// Read it with [`stop_capture_raw`](Self::stop_capture_raw).
    pub fn start_capture_where(
        &self,
        ns: &str,
        iface: &str,
        filter: &str,
        max_packets: u32,
    ) -> Capture {
        let count = max_packets.to_string();
        // --immediate-mode: every packet hits the file at once (else the kernel
        // holds them for up to a second, and a SIGTERM loses them); -B: a 16 MiB
        // kernel buffer so floods are not lost before the file.
        self.start_tcpdump(
            ns,
            iface,
            &["--immediate-mode", "-s", "160", "-B", "16384", "-c", &count],
            filter,
        )
    }

    /// Stops a capture (after `settle` for packets still in flight) and returns the
    /// pcap file's bytes and what tcpdump said (its drop counts).
    pub fn stop_capture_raw(&self, cap: &Capture, settle: Duration) -> (Vec<u8>, String) {
        thread::sleep(settle);
        let status = self.terminate(cap.proc, Duration::from_secs(5));
        assert!(
            status.code() != Some(124),
            "[lab {}] tcpdump ran into its timeout: {}",
            self.tag,
            read_lossy(&cap.log)
        );
        let bytes = fs::read(&cap.file).unwrap_or_else(|e| {
            panic!(
                "[lab {}] reading capture {}: {e}\n--- tcpdump log ---\n{}",
                self.tag,
                cap.file.display(),
                read_lossy(&cap.log)
            )
        });
        (bytes, read_lossy(&cap.log))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first: a controller still running detaches on SIGTERM.
        let who = format!("[lab {}]", self.tag);
        let mut procs = std::mem::take(self.procs.get_mut().unwrap_or_else(|p| p.into_inner()));
        stop_children(&mut procs, &who);
        for ns in self.namespaces.drain(..) {
            delete_netns(&ns, Duration::from_secs(10), &who);
        }
        for pin_dir in self
            .pin_dirs
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            // Left behind by a controller that was killed; only ours (per pin dir).
            scan_guard::kernel::instance::remove(&pin_dir);
        }
        if self.mounted {
            unmount(&self.bpffs);
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("[lab {}] removing {}: {e}", self.tag, self.dir.display()),
        }
    }
}

// Namespaces, links, the bpffs and processes of a lab, shared with the benchmarks'
// own lab (`bench::netns`). `who` starts their messages.

/// Creates the network namespace `ns`.
pub(crate) fn add_netns(ns: &str) {
    let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    ip_ok(&["netns", "add", ns]);
}

/// Deletes `ns`, and with it its interfaces, addresses and netfilter state,
/// bounded by `limit`; on failure says so on stderr (this runs in teardown, never
/// panics).
pub(crate) fn delete_netns(ns: &str, limit: Duration, who: &str) {
    let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = run_bounded(limit, "ip", &["netns", "del", ns]);
    if !out.status.success() {
        eprintln!("{who} deleting namespace {ns}: {}", describe(&out));
    }
}

/// Deletes those of `names` that exist: only a killed earlier run of a process
/// with the same pid leaves namespaces with our names behind.
pub(crate) fn remove_stale_netns(names: &[String]) {
    let existing = netns_list();
    for ns in names.iter().filter(|ns| existing.contains(ns)) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        ip_ok(&["netns", "del", ns]);
    }
}

/// Removes a lab directory (and the bpffs mounted in it) left over like the
/// namespaces of [`remove_stale_netns`].
pub(crate) fn remove_stale_dir(dir: &Path, bpffs: &Path) {
    if dir.exists() {
        unmount(bpffs);
        let _ = fs::remove_dir_all(dir);
    }
}

/// Mounts a bpffs of its own on `path`.
pub(crate) fn mount_bpffs(path: &Path, who: &str) {
    let out = run_bounded(
        Duration::from_secs(10),
        "mount",
        &["-t", "bpf", "bpf", path_str(path)],
    );
    if !out.status.success() {
        panic!(
            "{who} mounting a bpffs on {}: {}",
            path.display(),
            describe(&out)
        );
    }
}

/// The veth pair `a_iface` / `b_iface` with the given MACs, created inside `a_ns`
/// with the peer straight in `b_ns`: the host's own namespace never sees either
/// end.
pub(crate) fn add_veth_pair(
    a_ns: &str,
    a_iface: &str,
    a_mac: &str,
    b_ns: &str,
    b_iface: &str,
    b_mac: &str,
) {
    ip_ok(&[
        "-n", a_ns, "link", "add", a_iface, "address", a_mac, "type", "veth", "peer", "name",
        b_iface, "address", b_mac, "netns", b_ns,
    ]);
}

/// Panics if `ns` has an IPv4 or IPv6 default route: packets must have nowhere to
/// go but the lab's own links.
pub(crate) fn assert_no_default_route(ns: &str, who: &str) {
    for family in ["-4", "-6"] {
        let routes = ip_ok(&["-n", ns, family, "route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "{who} namespace {ns} has a default route ({family}): {routes}",
        );
    }
}

/// Starts `argv` under `timeout` (bounded by `limit`), stdout and stderr appended
/// to `log`. timeout makes itself a process-group leader and forwards SIGTERM to
/// the whole group; -k: SIGKILL 3 s after a SIGTERM that did not end it.
pub(crate) fn spawn_bounded(
    limit: Duration,
    argv: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> std::io::Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let err = out.try_clone().expect("dup log fd");
    let secs = limit.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    // Run where the log is (the lab's directory), not in the checkout: some tools
    // leave files in their working directory (masscan's paused.conf when stopped).
    if let Some(dir) = log.parent().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    cmd.args(["-k", "3", &secs])
        .args(argv)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
}

/// SIGKILL to the process group of `child` unless it has been reaped (its pid,
/// hence the group id, cannot have been reused), then reaps it.
pub(crate) fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain syscalls on our own unreaped child's group.
        unsafe {
            libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Teardown of spawned children: SIGTERM to each one still running, up to 5 s in
/// all for them to exit, then [`kill_group`] of any left (said on stderr).
pub(crate) fn stop_children(children: &mut [Child], who: &str) {
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
                "{who} pid {} ignored SIGTERM: killing its group",
                child.id()
            );
            kill_group(child);
        }
    }
}

/// Detaches the mount on `path` (never blocks on a busy one, never panics).
pub(crate) fn unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: NUL-terminated path; MNT_DETACH never blocks on busy mounts.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: only called for unreaped children of this process.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Parent pid of `pid` from /proc (None if it is gone).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", p.display()))
}

/// A file's contents as text, or a note that it could not be read.
pub fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", p.display()),
    }
}

/// Reads the TCP segments (over IPv4 or IPv6, optionally VLAN-tagged) out of a
/// classic pcap file with Ethernet link type. Other frames are skipped.
pub fn parse_pcap(b: &[u8]) -> Result<Vec<TcpSeen>, String> {
    let frames = pcap::frames(b)?;
    // tcpdump was stopped cleanly: a record cut short means a broken file.
    if let Some(off) = frames.cut_at {
        return Err(format!("record at {off} runs past the end"));
    }
    Ok(frames
        .frames
        .iter()
        .filter_map(|&(_, f)| tcp_of_frame(f))
        .collect())
}

/// A TCP segment with its header up to the flags, not in a later fragment, over
/// IPv4 or IPv6 without extension headers.
fn tcp_of_frame(f: &[u8]) -> Option<TcpSeen> {
    let (ethertype, ip) = pcap::ethernet_payload(f)?;
    let (src, dst, l4) = match ethertype {
        0x0800 => {
            let h = ip.get(..20)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            if h[9] != 6 || frag_off != 0 {
                return None;
            }
            let s: [u8; 4] = h[12..16].try_into().ok()?;
            let d: [u8; 4] = h[16..20].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), ihl)
        }
        0x86dd => {
            let h = ip.get(..40)?;
            if h[6] != 6 {
                return None;
            }
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), 40)
        }
        _ => return None,
    };
    let t = ip.get(l4..l4 + 14)?;
    Some(TcpSeen {
        src,
        dst,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        flags: t[13],
    })
}
