//! Helpers for the hardening tests (faults, spoofing, least privilege), on top of
//! the lab in [`crate::lab`] and the harness in [`crate::harness`]:
//! - [`Injector`]: a raw (AF_PACKET) socket in one of the lab's namespaces that
//!   writes hand-made frames onto its veth, so a test can spoof any source inside
//!   the lab's own address space at millions of frames per second;
//! - [`SpoofRange`]: in-lab source addresses for spoofed traffic, with a blackhole
//!   route in the target namespace so no reply to them goes anywhere;
//! - [`BpffsMount`], [`NetnsEtc`]: RAII for an extra bpffs mount and for
//!   `/etc/netns/<ns>/` files (what `ip netns exec` shows as `/etc/...`);
//! - [`delete_veth`], [`create_veth`]: the lab's veth pair gone, then back with the
//!   same names;
//! - [`harness_with_max_blocks`]: the BPF_PROG_TEST_RUN harness with a blocklist of
//!   a chosen size, as `scan-guard run` sizes it from `blocking.max_blocks`;
//! - checks: capability sets in /proc, file modes, sliding-window counts.
//!
//! Every frame stays between the lab's namespaces; every command is bounded.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use scan_guard_common::config::KernelConfig;

use crate::{
    harness::Harness,
    lab::{
        Controller, Lab, Side, add_veth_pair, address_side, describe, ip_ok, read_lossy,
        run_bounded,
    },
    packet::Pkt,
};

/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP ACK.
pub const ACK: u8 = 0x10;

/// A raw packet socket bound to one interface inside a network namespace: frames
/// written to it leave through that interface (and arrive on its veth peer, where
/// the XDP program sees them first). It receives nothing (protocol 0).
pub struct Injector {
    fd: OwnedFd,
    /// Frames the kernel refused even after retries (queue full).
    pub refused: u64,
    pub sent: u64,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    templates: std::collections::HashMap<(IpAddr, u16, u8), Vec<u8>>,
}

fn mac(text: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap_or_else(|e| panic!("MAC {text}: {e}")))
        .collect();
    assert_eq!(parts.len(), 6, "MAC {text}");
    m.copy_from_slice(&parts);
    m
}

impl Injector {
    /// A socket on `from.iface` in `from.ns` whose frames are addressed (Ethernet) to
    /// `to`'s MAC.
    pub fn new(from: &Side, to: &Side) -> Self {
        let ns_file = PathBuf::from(format!("/run/netns/{}", from.ns));
        let iface = from.iface.clone();
        // setns changes only the calling thread's namespace: do it in a thread of its
        // own. The socket stays in that namespace after the thread ends.
        let fd = thread::spawn(move || -> Result<OwnedFd, String> {
            let ns = fs::File::open(&ns_file)
                .map_err(|e| format!("opening {}: {e}", ns_file.display()))?;
            // SAFETY: a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            let c = std::ffi::CString::new(iface.clone()).map_err(|e| e.to_string())?;
            // SAFETY: NUL-terminated name.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if idx == 0 {
                return Err(format!("no interface {iface} in the namespace"));
            }
            // SAFETY: plain socket(2); protocol 0: send only, receive nothing.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(format!(
                    "socket(AF_PACKET): {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: zeroed sockaddr_ll is valid; fields filled below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = idx as i32;
            // SAFETY: sll is a properly sized sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(format!(
                    "bind to {iface}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(fd)
        })
        .join()
        .expect("injector thread panicked")
        .unwrap_or_else(|e| panic!("packet socket on {} in {}: {e}", from.iface, from.ns));
        Self {
            fd,
            refused: 0,
            sent: 0,
            dst_mac: mac(to.mac),
            src_mac: mac(from.mac),
            templates: std::collections::HashMap::new(),
        }
    }

    /// Sends one frame (its Ethernet addresses are replaced by the injector's),
    /// retrying briefly while the interface's queue is full.
    pub fn send(&mut self, frame: &[u8]) {
        let mut f = frame.to_vec();
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        for attempt in 0..200 {
            // SAFETY: a valid buffer and our bound socket.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if n == f.len() as isize {
                self.sent += 1;
                return;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => {
                    thread::sleep(Duration::from_micros(20 * (attempt + 1)));
                }
                _ => panic!("sending a {}-byte frame: {err}", f.len()),
            }
        }
        self.refused += 1;
    }

    /// A TCP segment from `src` to `dst:dport` with `flags`.
    pub fn tcp(&mut self, src: IpAddr, dst: IpAddr, dport: u16, flags: u8) {
        // IPv4: one template per (destination, port, flags), the source patched in.
        if let (IpAddr::V4(s4), IpAddr::V4(_)) = (src, dst) {
            let key = (dst, dport, flags);
            let t = self
                .templates
                .entry(key)
                .or_insert_with(|| tcp_frame(IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst, dport, flags));
            let mut f = t.clone();
            f[26..30].copy_from_slice(&s4.octets());
            fix_ipv4_checksum(&mut f);
            self.send(&f);
            return;
        }
        let f = tcp_frame(src, dst, dport, flags);
        self.send(&f);
    }

    /// A SYN scan of `ports` from `src` to `dst`.
    pub fn syn_scan(&mut self, src: IpAddr, dst: IpAddr, ports: &[u16]) {
        for &p in ports {
            self.tcp(src, dst, p, SYN);
        }
    }
}

/// A TCP frame with a valid IPv4 header checksum (a bridge with netfilter hooks
/// drops IPv4 frames whose header checksum is wrong before they reach the target).
/// The TCP checksum stays zero: XDP does not look at it, and the target's stack
/// drops the segment after XDP has seen it, so nothing answers a spoofed source.
pub fn tcp_frame(src: IpAddr, dst: IpAddr, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = Pkt::tcp(&src.to_string(), &dst.to_string(), dport, flags).build();
    fix_ipv4_checksum(&mut f);
    f
}

/// Recomputes the IPv4 header checksum of an untagged Ethernet frame (no-op for
/// anything else).
pub fn fix_ipv4_checksum(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[24] = 0;
    f[25] = 0;
    let mut sum: u32 = f[14..14 + ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Closed privileged ports a spoofed scan probes (with the default weights 6 of
/// them cross the default score threshold of 21).
pub const SCAN_PORTS: [u16; 8] = [1, 3, 7, 9, 13, 17, 19, 23];

/// A block of IPv4 source addresses inside the lab's 10.200.0.0/16 but outside the
/// link subnet 10.200.1.0/24, for spoofed traffic. [`SpoofRange::install`] adds a
/// blackhole route for it in the target namespace, so even a reply the target's
/// stack might send to one of them is discarded there.
#[derive(Clone, Copy, Debug)]
pub struct SpoofRange {
    /// First address; the range is `base .. base + len`.
    pub base: Ipv4Addr,
    pub len: u32,
}

impl SpoofRange {
    /// 10.200.128.0/17: 32768 addresses.
    pub const WIDE: SpoofRange = SpoofRange {
        base: Ipv4Addr::new(10, 200, 128, 0),
        len: 32_768,
    };
    /// 10.200.64.0/18: 16384 addresses.
    pub const MID: SpoofRange = SpoofRange {
        base: Ipv4Addr::new(10, 200, 64, 0),
        len: 16_384,
    };

    /// The `i`th address (panics past the end).
    pub fn addr(&self, i: u32) -> IpAddr {
        assert!(i < self.len, "spoofed address {i} past the range {self:?}");
        IpAddr::V4(Ipv4Addr::from(u32::from(self.base) + i))
    }

    pub fn prefix(&self) -> String {
        let bits = 32 - self.len.trailing_zeros();
        format!("{}/{bits}", self.base)
    }

    /// Blackhole route for the range in the target namespace.
    pub fn install(&self, lab: &Lab) {
        let out = run_bounded(
            Duration::from_secs(10),
            "ip",
            &[
                "-n",
                &lab.tgt.ns,
                "route",
                "add",
                "blackhole",
                &self.prefix(),
            ],
        );
        assert!(
            out.status.success(),
            "[lab {}] blackhole route for {}: {}",
            lab.tag,
            self.prefix(),
            describe(&out)
        );
    }
}

/// A bpffs mounted for one test (optionally read-only), unmounted and removed on
/// drop. Declare it after the lab so it is dropped first.
pub struct BpffsMount {
    pub path: PathBuf,
}

impl BpffsMount {
    /// Mounts a bpffs on `path` (created). With `prepare`, the directories in it are
    /// created while it is writable; `read_only` then remounts it read-only.
    pub fn new(path: &Path, prepare: &[&str], read_only: bool) -> Self {
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let p = path.to_str().expect("UTF-8 path");
        let out = run_bounded(Duration::from_secs(10), "mount", &["-t", "bpf", "bpf", p]);
        assert!(out.status.success(), "mount -t bpf {p}: {}", describe(&out));
        let m = Self {
            path: path.to_path_buf(),
        };
        for d in prepare {
            let dir = path.join(d);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        if read_only {
            let out = run_bounded(
                Duration::from_secs(10),
                "mount",
                &["-o", "remount,ro", "-t", "bpf", "bpf", p],
            );
            assert!(out.status.success(), "remount ro {p}: {}", describe(&out));
        }
        m
    }

    /// Names of the entries in `dir` (relative to the mount).
    pub fn entries(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path.join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.path.to_string_lossy().as_bytes()) {
            // SAFETY: NUL-terminated path; MNT_DETACH never blocks.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// Files under `/etc/netns/<ns>/`, which `ip netns exec <ns>` bind-mounts over
/// `/etc/...` for the commands it runs (e.g. a lab-only `resolv.conf`). Removed on
/// drop.
pub struct NetnsEtc {
    dir: PathBuf,
}

impl NetnsEtc {
    pub fn new(ns: &str, files: &[(&str, &str)]) -> Self {
        let dir = PathBuf::from(format!("/etc/netns/{ns}"));
        assert!(
            !dir.exists(),
            "{} exists already: not ours to replace",
            dir.display()
        );
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let me = Self { dir };
        for (name, body) in files {
            let p = me.dir.join(name);
            fs::write(&p, body).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        }
        me
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // /etc/netns itself only if we left it empty.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Deletes the lab's veth pair (deleting one end deletes both) and waits until the
/// target's end is gone. Only for labs without a second client (no switch).
pub fn delete_veth(lab: &Lab) {
    assert!(lab.switch_ns.is_none(), "delete_veth: lab has a switch");
    let (a, t) = (&lab.att, &lab.tgt);
    ip_ok(&["-n", &a.ns, "link", "del", &a.iface]);
    wait_until(
        Duration::from_secs(5),
        "the target's veth to disappear",
        || {
            !run_bounded(
                Duration::from_secs(5),
                "ip",
                &["-n", &t.ns, "link", "show", "dev", &t.iface],
            )
            .status
            .success()
        },
    );
}

/// Creates the lab's veth pair again after [`delete_veth`], with the same names,
/// MACs and addresses as [`Lab::new`] gives it, links up.
pub fn create_veth(lab: &Lab) {
    let (a, t) = (&lab.att, &lab.tgt);
    add_veth_pair(&a.ns, &a.iface, a.mac, &t.ns, &t.iface, t.mac);
    for s in [a, t] {
        address_side(s);
    }
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "no {what} within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the controller's log contains `needle`; panics with the
/// log if it does not.
pub fn wait_log(c: &Controller, limit: Duration, needle: &str) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = read_lossy(&c.log);
        if log.contains(needle) {
            return log;
        }
        if Instant::now() >= deadline {
            panic!("no {needle:?} in the controller log within {limit:?}\n--- log ---\n{log}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The capability sets of a process from /proc/PID/status: (CapInh, CapPrm,
/// CapEff, CapBnd, CapAmb, NoNewPrivs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcCaps {
    pub inh: u64,
    pub prm: u64,
    pub eff: u64,
    pub bnd: u64,
    pub amb: u64,
    pub no_new_privs: bool,
    pub uid: u32,
}

pub fn proc_caps(pid: u32) -> ProcCaps {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let field = |name: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{text}"))
    };
    let hex = |name: &str| {
        u64::from_str_radix(field(name), 16)
            .unwrap_or_else(|e| panic!("{name} in /proc/{pid}/status: {e}"))
    };
    ProcCaps {
        inh: hex("CapInh:"),
        prm: hex("CapPrm:"),
        eff: hex("CapEff:"),
        bnd: hex("CapBnd:"),
        amb: hex("CapAmb:"),
        no_new_privs: field("NoNewPrivs:") == "1",
        uid: field("Uid:")
            .split_whitespace()
            .nth(1)
            .and_then(|u| u.parse().ok())
            .expect("effective uid"),
    }
}

/// (mode & 0o7777, owner uid) of a path, without following a final symlink.
pub fn mode_owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid())
}

/// The largest number of instants (ns, any order) inside any half-open window of
/// `window_ns`.
pub fn max_in_window(times: &[u64], window_ns: u64) -> usize {
    let mut t = times.to_vec();
    t.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..t.len() {
        while t[hi] - t[lo] >= window_ns {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// The BPF_PROG_TEST_RUN harness with its blocklist (and block records) sized to
/// `max_blocks`, as `scan-guard run` sizes them from `blocking.max_blocks` when it
/// creates an instance.
pub fn harness_with_max_blocks(cfg: KernelConfig, max_blocks: u32) -> Harness {
    Harness::with_blocklist_size(cfg, Some(max_blocks))
}

/// Lines of `ss -Hlnp` (every listening socket of every kind, with its process) in
/// `ns`.
pub fn listening_sockets(lab: &Lab, ns: &str) -> String {
    let out = lab.exec_in(ns, &["ss", "-Hlnp", "-A", "all"]);
    assert!(out.status.success(), "ss in {ns}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (addr, origin, expires) of each `list --json` row, sorted.
pub fn block_rows(c: &Controller) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = c
        .list()
        .iter()
        .map(|r| {
            (
                r["addr"].as_str().unwrap_or("").to_owned(),
                r["origin"].as_str().unwrap_or("").to_owned(),
                r["expires"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Events of `c` named `name` about `src`.
pub fn count_events(c: &Controller, name: &str, src: &str) -> usize {
    c.events_where(|e| crate::lab::is_event(e, name, src)).len()
}

/// One kernel counter from `stats --json`.
pub fn stat(c: &Controller, name: &str) -> u64 {
    let s = c.stats_json();
    s[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in stats: {s}"))
}

/// True when `ns` gets the lab page from the target's IPv4 address on `port`.
pub fn served(lab: &Lab, ns: &str, port: u16) -> bool {
    lab.http_get(ns, IpAddr::V4(lab.tgt.v4), port).is_ok()
}

/// The non-empty lines of a command's standard error.
pub fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
