//! Network-namespace lab: two namespaces (attacker and target) joined by a veth
//! pair, a private bpffs for the controller's pins, and RAII teardown of all of it.
//!
//! Every packet stays between the two namespaces: the addresses live only there
//! and neither namespace has a default route (checked at setup). Every external
//! command runs under `timeout`. `Drop` stops the processes the lab started (by
//! pid, through the handles it keeps), deletes the namespaces, unmounts the bpffs
//! and removes the lab directory, also when the test panicked.

use std::{
    fs::{self, OpenOptions},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use scan_guard::kernel_maps::KernelMaps;
use scan_guard_common::stats::StatBlock;

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
}

impl Controller {
    pub fn link_pin(&self) -> PathBuf {
        self.pin_dir.join(scan_guard::loader::LINK_PIN)
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
    /// `/run/sg-test-<id>`: logs, captures, events.
    pub dir: PathBuf,
    /// `<dir>/bpffs`, a bpffs mounted for this lab only.
    pub bpffs: PathBuf,
    procs: Mutex<Vec<Child>>,
    namespaces: Vec<String>,
    mounted: bool,
    files: AtomicU32,
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

/// `ip ARGS` in the test's own namespace, bounded; panics with context on failure.
fn ip_ok(args: &[&str]) -> String {
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
            bpffs: dir.join("bpffs"),
            dir,
            id,
            procs: Mutex::new(Vec::new()),
            namespaces: Vec::new(),
            mounted: false,
            files: AtomicU32::new(0),
        };
        // From here on a panic unwinds through `lab`'s Drop, which undoes what was done.
        lab.setup();
        lab
    }

    fn setup(&mut self) {
        assert!(self.att.iface.len() <= 15 && self.tgt.iface.len() <= 15);
        // A lab directory or namespaces with our names can only be left over from a
        // killed run of a process with the same pid: clear them.
        self.remove_stale();
        fs::create_dir_all(&self.bpffs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.bpffs.display()));
        self.mount_bpffs();

        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            for ns in [self.att.ns.clone(), self.tgt.ns.clone()] {
                ip_ok(&["netns", "add", &ns]);
                self.namespaces.push(ns);
            }
        }
        let (a, t) = (self.att.clone(), self.tgt.clone());
        // Created inside the attacker namespace with the peer straight in the target
        // one: the host's own namespace never sees either end.
        ip_ok(&[
            "-n", &a.ns, "link", "add", &a.iface, "address", a.mac, "type", "veth", "peer", "name",
            &t.iface, "address", t.mac, "netns", &t.ns,
        ]);
        for s in [&a, &t] {
            ip_ok(&["-n", &s.ns, "link", "set", "lo", "up"]);
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
        for s in [&a, &t] {
            for family in ["-4", "-6"] {
                let routes = ip_ok(&["-n", &s.ns, family, "route", "show", "default"]);
                assert!(
                    routes.trim().is_empty(),
                    "[lab {}] namespace {} has a default route ({family}): {routes}",
                    self.tag,
                    s.ns
                );
            }
        }
    }

    fn remove_stale(&self) {
        let existing = netns_list();
        for ns in [&self.att.ns, &self.tgt.ns] {
            if existing.contains(ns) {
                let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                ip_ok(&["netns", "del", ns]);
            }
        }
        if self.dir.exists() {
            unmount(&self.bpffs);
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn mount_bpffs(&mut self) {
        let out = run_bounded(
            Duration::from_secs(10),
            "mount",
            &["-t", "bpf", "bpf", path_str(&self.bpffs)],
        );
        if !out.status.success() {
            panic!(
                "[lab {}] mounting a bpffs on {}: {}",
                self.tag,
                self.bpffs.display(),
                describe(&out)
            );
        }
        self.mounted = true;
        assert!(
            scan_guard::bpffs::is_bpffs(&self.bpffs).unwrap_or(false),
            "{} is not a bpffs after mounting",
            self.bpffs.display()
        );
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

    /// Starts `args` inside `ns` under `timeout` (bounded by [`SPAWN_TIMEOUT`]),
    /// stdout and stderr appended to `log`. The lab keeps the child and stops it
    /// on drop if the test has not.
    pub fn spawn_in(&self, ns: &str, args: &[&str], log: &Path) -> Proc {
        self.spawn_in_env(ns, args, &[], log)
    }

    pub fn spawn_in_env(&self, ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let secs = SPAWN_TIMEOUT.as_secs().to_string();
        // timeout makes itself a process-group leader and forwards SIGTERM to the
        // whole group; -k: SIGKILL 3 s after a SIGTERM that did not end it.
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "3", &secs, "ip", "netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("[lab {}] spawning {args:?} in {ns}: {e}", self.tag));
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

    /// SIGKILL to the process group of a child that has not been reaped yet (its
    /// pid, hence the group id, cannot have been reused), then reap it.
    fn kill_group(&self, p: Proc) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let child = &mut procs[p.idx];
        if let Ok(None) = child.try_wait() {
            // SAFETY: plain syscalls on our own unreaped child's group.
            unsafe {
                libc::killpg(p.pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the real controller attached to the target's veth in `mode`, its pins
    /// under `<bpffs>/inst`, and waits (bounded) until its link is pinned.
    pub fn start_controller(&self, mode: XdpMode) -> Controller {
        let bin = controller_bin();
        let pin_dir = self.bpffs.join("inst");
        let events = self.file("events", "jsonl");
        let log = self.file("controller", "log");
        let proc = self.spawn_in_env(
            &self.tgt.ns,
            &[
                path_str(&bin),
                "run",
                "--iface",
                &self.tgt.iface,
                "--xdp-mode",
                mode.as_str(),
                "--pin-dir",
                path_str(&pin_dir),
                "--events",
                path_str(&events),
            ],
            &[("SCAN_GUARD_LOG", "info")],
            &log,
        );
        let c = Controller {
            proc,
            mode,
            pin_dir,
            events,
            log,
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while !c.link_pin().exists() {
            if let Some(s) = self.try_status(proc) {
                panic!(
                    "[lab {}] controller ({} mode) exited before attaching: {}\n--- log ---\n{}",
                    self.tag,
                    mode.as_str(),
                    describe_status(s),
                    read_lossy(&c.log)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "[lab {}] controller ({} mode) did not pin {} within {ATTACH_TIMEOUT:?}\n--- log ---\n{}",
                    self.tag,
                    mode.as_str(),
                    c.link_pin().display(),
                    read_lossy(&c.log)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// SIGTERM to the controller and a bounded wait for it to detach and exit.
    pub fn stop_controller(&self, c: &Controller) -> ExitStatus {
        self.terminate(c.proc, Duration::from_secs(10))
    }

    /// `ip -d link show dev <iface>` inside `side`'s namespace.
    pub fn link_show(&self, side: &Side) -> String {
        ip_ok(&["-n", &side.ns, "-d", "link", "show", "dev", &side.iface])
    }

    /// Starts tcpdump on `side`'s veth writing TCP segments to a pcap file, and
    /// waits (bounded) until it is capturing.
    pub fn start_capture(&self, side: &Side) -> Capture {
        let file = self.file("capture", "pcap");
        let log = self.file("tcpdump", "log");
        // -Z root: the lab directory is root's; tcpdump would otherwise drop to its
        // own user and silently write nothing. -U: every packet hits the file.
        let proc = self.spawn_in(
            &side.ns,
            &[
                "tcpdump",
                "-i",
                &side.iface,
                "-n",
                "-U",
                "-Z",
                "root",
                "-w",
                path_str(&file),
                "tcp",
            ],
            &log,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !read_lossy(&log).contains("listening on") {
            if let Some(s) = self.try_status(proc) {
                panic!(
                    "[lab {}] tcpdump exited before capturing: {}\n{}",
                    self.tag,
                    describe_status(s),
                    read_lossy(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "[lab {}] tcpdump did not start capturing within 10 s: {}",
                self.tag,
                read_lossy(&log)
            );
            thread::sleep(Duration::from_millis(20));
        }
        Capture { proc, file, log }
    }

    /// Stops the capture and returns the TCP segments it saw.
    pub fn stop_capture(&self, cap: &Capture) -> Vec<TcpSeen> {
        // Packets still in flight to the interface get a moment to be captured.
        thread::sleep(Duration::from_millis(200));
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
        let filter = format!("sport = :{port}");
        loop {
            let out = self.exec_in(ns, &["ss", "-Hltn", &filter]);
            if out.status.success() && !out.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "[lab {}] nothing listens on TCP port {port} in {ns} after {limit:?}",
                self.tag
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first: a controller still running detaches on SIGTERM.
        let mut procs = std::mem::take(self.procs.get_mut().unwrap_or_else(|p| p.into_inner()));
        for child in procs.iter_mut() {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in procs.iter_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!(
                    "[lab {}] pid {} ignored SIGTERM: killing its group",
                    self.tag,
                    child.id()
                );
                // SAFETY: our unreaped child; its pid is its group id (timeout).
                unsafe {
                    libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            for ns in self.namespaces.drain(..) {
                let out = run_bounded(Duration::from_secs(10), "ip", &["netns", "del", &ns]);
                if !out.status.success() {
                    eprintln!(
                        "[lab {}] deleting namespace {ns}: {}",
                        self.tag,
                        describe(&out)
                    );
                }
            }
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

fn unmount(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path_str(path)) else {
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
    if b.len() < 24 {
        return Err(format!("{} bytes: no pcap header", b.len()));
    }
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => return Err(format!("unknown magic {m:#010x} (pcapng?)")),
    };
    let u32_at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(20) & 0x0fff_ffff;
    if link != 1 {
        return Err(format!("link type {link}, want 1 (Ethernet)"));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        let end = start + incl;
        if end > b.len() {
            return Err(format!("record at {off} runs past the end"));
        }
        if let Some(seg) = tcp_of_frame(&b[start..end]) {
            out.push(seg);
        }
        off = end;
    }
    Ok(out)
}

fn tcp_of_frame(f: &[u8]) -> Option<TcpSeen> {
    let be16 = |o: usize| f.get(o..o + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    let mut off = 12;
    let mut ethertype = be16(off)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = be16(off)?;
    }
    let l3 = off + 2;
    let (src, dst, l4) = match ethertype {
        0x0800 => {
            let h = f.get(l3..l3 + 20)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let frag_off = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            if h[9] != 6 || frag_off != 0 {
                return None;
            }
            let s: [u8; 4] = h[12..16].try_into().ok()?;
            let d: [u8; 4] = h[16..20].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), l3 + ihl)
        }
        0x86dd => {
            let h = f.get(l3..l3 + 40)?;
            if h[6] != 6 {
                return None;
            }
            let s: [u8; 16] = h[8..24].try_into().ok()?;
            let d: [u8; 16] = h[24..40].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), l3 + 40)
        }
        _ => return None,
    };
    let t = f.get(l4..l4 + 14)?;
    Some(TcpSeen {
        src,
        dst,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        flags: t[13],
    })
}
