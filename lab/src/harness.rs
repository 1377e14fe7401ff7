//! The real XDP program loaded into the real kernel (not attached anywhere) and
//! driven with BPF_PROG_TEST_RUN.

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use scan_guard::{kernel::loader, kernel::maps::KernelMaps};
use scan_guard_common::{
    addr::{Addr, from_v4},
    config::KernelConfig,
    event::{Contact, ScanEvent},
    map_names,
    state::{BlockEntry, BlockOrigin, KIND_NONE},
    stats::StatBlock,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub struct Harness {
    pub ebpf: Ebpf,
    pub maps: KernelMaps,
    pub events: RingBuf<MapData>,
    pub contacts: RingBuf<MapData>,
    /// The calling thread's own network namespace while the harness lives (see
    /// [`SocketIsolation`]); dropped last.
    _isolation: SocketIsolation,
}

/// The shared 16-byte form of an address given as text.
pub fn addr(s: &str) -> Addr {
    match crate::packet::ip(s) {
        std::net::IpAddr::V4(v4) => from_v4(v4.octets()),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

impl Harness {
    /// Loads a private copy of the program (no pins) with `cfg`.
    pub fn new(cfg: KernelConfig) -> Self {
        Self::with_blocklist_size(cfg, None)
    }

    /// [`new`](Self::new) with the blocklist (and block records) sized to
    /// `max_blocks` entries when given, as `scan-guard run` sizes them from
    /// `blocking.max_blocks`; the program's default size otherwise.
    pub fn with_blocklist_size(cfg: KernelConfig, max_blocks: Option<u32>) -> Self {
        let isolation = SocketIsolation::enter();
        let mut ebpf = loader::load_with(None, max_blocks)
            .unwrap_or_else(|e| panic!("loading the XDP program: {e:#}"));
        let mut maps = KernelMaps::take(&mut ebpf).expect("typed maps");
        maps.write_config(&cfg).expect("write config");
        let events = ebpf.take_map(map_names::EVENTS).expect("EVENTS map");
        let events = RingBuf::try_from(events).expect("ring buffer");
        let contacts = ebpf.take_map(map_names::CONTACTS).expect("CONTACTS map");
        let contacts = RingBuf::try_from(contacts).expect("ring buffer");
        Self {
            ebpf,
            maps,
            events,
            contacts,
            _isolation: isolation,
        }
    }

    /// Runs one frame through the program and returns its XDP verdict.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.try_run(frame, 1)
            .unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()))
            .0
    }

    /// Runs a frame `repeat` times; returns the verdict and mean ns per run.
    pub fn try_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, u64), aya::programs::ProgramError> {
        let prog = loader::program(&mut self.ebpf).expect("program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let r = prog.test_run(opts)?;
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }

    pub fn stats(&self) -> StatBlock {
        self.maps.stats_total().expect("stats")
    }

    /// Makes `addrs` the host's own addresses and scores only traffic to them
    /// (`POLICY_LOCAL_ONLY`), as `scan-guard run` does.
    pub fn set_local(&mut self, addrs: &[&str]) {
        let set: Vec<Addr> = addrs.iter().map(|a| addr(a)).collect();
        self.maps.write_local(&set).expect("write local addresses");
        let mut cfg = self.maps.read_config().expect("read config");
        cfg.policy |= scan_guard_common::config::POLICY_LOCAL_ONLY;
        self.maps.write_config(&cfg).expect("write config");
    }

    pub fn set_listening(&mut self, tcp: &[u16], udp: &[u16]) {
        let l = scan_guard::kernel::listeners::Listening {
            tcp: tcp.iter().copied().collect(),
            udp: udp.iter().copied().collect(),
        };
        self.maps
            .write_listening(&l.bitmap())
            .expect("write listening");
    }

    /// Inserts a block for `addr/prefix_len` (prefix in the address's own family).
    pub fn block(&mut self, text: &str, prefix_len: u32, expires_ns: u64) {
        let a = addr(text);
        let plen = family_prefix(text, prefix_len);
        let e = BlockEntry {
            expires_ns,
            created_ns: scan_guard::base::clock::monotonic_ns(),
            hits: 0,
            prefix_len: plen,
            origin: BlockOrigin::Manual as u8,
            kind: KIND_NONE,
            _pad: [0; 2],
        };
        self.maps
            .insert_block(&scan_guard_common::addr::mask(&a, plen), plen, &e)
            .expect("insert block");
    }

    pub fn allow(&mut self, text: &str, prefix_len: u32) {
        let plen = family_prefix(text, prefix_len);
        let a = scan_guard_common::addr::mask(&addr(text), plen);
        self.maps.insert_allow(&a, plen).expect("insert allow");
    }

    /// Every first-contact record currently in the ring buffer.
    pub fn drain_contacts(&mut self) -> Vec<Contact> {
        let mut out = Vec::new();
        while let Some(item) = self.contacts.next() {
            out.push(Contact::from_bytes(&item).expect("full contact record"));
        }
        out
    }

    /// Adds `text/prefix_len` to the never-block set.
    pub fn protect(&mut self, text: &str, prefix_len: u32) {
        let plen = family_prefix(text, prefix_len);
        let a = scan_guard_common::addr::mask(&addr(text), plen);
        let mut keys: Vec<(Addr, u32)> = self.maps.protected();
        keys.push((a, plen));
        self.maps.write_protected(&keys).expect("write protected");
    }

    /// Every event currently in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<ScanEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.push(ScanEvent::from_bytes(&item).expect("full event record"));
        }
        out
    }
}

/// The calling thread in a network namespace of its own, for as long as the value
/// lives; dropping it returns the thread to the namespace it was in. The
/// program's socket lookups see the namespace of the thread that runs
/// BPF_PROG_TEST_RUN, so without this the host's own sockets (an sshd on port
/// 22, a resolver) would change verdicts; with it, a test opens exactly the
/// sockets it means to, and code that runs on the thread afterwards (a lab that
/// creates veth pairs, the benchmarks) is back where it started.
pub struct SocketIsolation {
    previous: std::fs::File,
}

impl SocketIsolation {
    pub fn enter() -> Self {
        let previous = std::fs::File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("opening this thread's network namespace: {e}"));
        // SAFETY: unshare(2) with CLONE_NEWNET affects only the calling thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        Self { previous }
    }
}

impl Drop for SocketIsolation {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a valid namespace descriptor; affects the calling thread only.
        if unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "returning to the thread's network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Converts an IPv4 prefix length to the mapped form; IPv6 lengths pass through.
pub fn family_prefix(text: &str, prefix_len: u32) -> u32 {
    if text.contains(':') {
        prefix_len
    } else {
        prefix_len + 96
    }
}
