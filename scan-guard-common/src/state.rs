//! Per-source tracking state (value of the `SOURCES` LRU map), blocklist entries,
//! and the update rule both the kernel and the reference model apply to a probe.

use crate::{
    addr::Addr,
    config::KernelConfig,
    flags::{PROBE_KINDS, ProbeKind},
    sketch::{
        PORT_SKETCH_WORDS, addr_bucket_of, addr_hash, pair_bucket_of, port_bucket, set_addr_bit,
        set_port_bit,
    },
};

/// Distinct destination ports remembered per source window (for events).
pub const PORT_SAMPLES: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceState {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub window_start_ns: u64,
    pub port_sketch: [u64; PORT_SKETCH_WORDS],
    pub addr_sketch: u64,
    /// (destination address, port) pairs of weighty probes (closed ports, invalid
    /// flags): a sweep with several ports per address is told by these.
    pub pair_sketch: u64,
    /// Probes by `ProbeKind` in the current window.
    pub probes: [u32; PROBE_KINDS],
    /// Weighted score of new destination ports in the current window.
    pub score: u32,
    /// Estimated distinct destination ports in the current window.
    pub distinct_ports: u16,
    /// Estimated distinct destination addresses in the current window.
    pub distinct_addrs: u16,
    /// The first few distinct ports of the window.
    pub port_samples: [u16; PORT_SAMPLES],
    /// OR and AND of the TCP flag bytes seen in the window.
    pub flags_or: u8,
    pub flags_and: u8,
    /// 1 once an event went out in this window (at most one per source per window).
    pub reported: u8,
    pub sample_count: u8,
    /// SYNs carrying a full OS-stack option set (a `connect()` rather than a raw probe).
    pub os_syns: u16,
    /// Tiny first fragments dropped in the window: later fragments of this source
    /// are dropped too, so none reaches the host's reassembly queue.
    pub tiny_frags: u8,
    pub _pad: [u8; 1],
    /// Estimated distinct pairs in `pair_sketch`.
    pub distinct_pairs: u16,
    /// 1 once host discovery (ICMP timestamp or address mask) was reported in
    /// this window; separate from `reported`, so a scan after it still is.
    pub discovery_reported: u8,
    pub _pad2: [u8; 9],
}

const _: () = assert!(core::mem::size_of::<SourceState>() == 168);

/// One piece of evidence against a source.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// `ProbeKind` as a plain byte: the kernel side must bounds-check the index,
    /// and an enum would let the compiler drop that check (the verifier then refuses
    /// the program).
    pub kind: u8,
    pub dst: Addr,
    /// Destination port, when the protocol has ports.
    pub port: Option<u16>,
    /// Weight if the port is new in this window (see `KernelConfig::port_weight`).
    pub weight: u32,
    /// TCP flag byte, when TCP.
    pub tcp_flags: Option<u8>,
    /// The port has a listener (a first contact there is a "success" for TRW).
    pub listening: bool,
    /// A SYN with the option set of an OS stack (see `SourceState::os_syns`).
    pub os_stack: bool,
}

/// What one probe did to its source's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Set when the probe made the source cross a threshold (first time in the window).
    pub trigger: Option<Trigger>,
    /// The destination port was new for this source in the window.
    pub new_port: bool,
}

/// Why a source was reported.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The weighted distinct-port score reached `score_threshold`.
    Score = 1,
    /// Distinct destination addresses reached `sweep_threshold`.
    Sweep = 2,
    /// Host discovery by ICMP timestamp or address-mask requests: reported, never
    /// blocked on its own.
    Discovery = 3,
}

impl Trigger {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Score),
            2 => Some(Self::Sweep),
            3 => Some(Self::Discovery),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Score => "port_score",
            Self::Sweep => "address_sweep",
            Self::Discovery => "icmp_discovery",
        }
    }
}

impl SourceState {
    /// A fresh state for a source first seen at `now`.
    #[inline(always)]
    pub const fn new(now: u64) -> Self {
        Self {
            first_seen_ns: now,
            last_seen_ns: now,
            window_start_ns: now,
            port_sketch: [0; PORT_SKETCH_WORDS],
            addr_sketch: 0,
            pair_sketch: 0,
            probes: [0; PROBE_KINDS],
            score: 0,
            distinct_ports: 0,
            distinct_addrs: 0,
            port_samples: [0; PORT_SAMPLES],
            flags_or: 0,
            flags_and: 0xff,
            reported: 0,
            sample_count: 0,
            os_syns: 0,
            tiny_frags: 0,
            _pad: [0; 1],
            distinct_pairs: 0,
            discovery_reported: 0,
            _pad2: [0; 9],
        }
    }

    #[inline(always)]
    fn start_window(&mut self, now: u64) {
        self.window_start_ns = now;
        self.port_sketch = [0; PORT_SKETCH_WORDS];
        self.addr_sketch = 0;
        self.pair_sketch = 0;
        self.distinct_pairs = 0;
        self.discovery_reported = 0;
        self.probes = [0; PROBE_KINDS];
        self.score = 0;
        self.distinct_ports = 0;
        self.distinct_addrs = 0;
        self.flags_or = 0;
        self.flags_and = 0xff;
        self.reported = 0;
        self.sample_count = 0;
        self.os_syns = 0;
        self.tiny_frags = 0;
    }

    /// `sweep_threshold` addresses, or as many closed (address, port) pairs over
    /// two addresses or more: a sweep that tries several ports per address
    /// (`nmap -sn -PS22,80,443`) is caught within as many probes as one that tries
    /// one.
    #[inline(always)]
    fn is_sweep(&self, threshold: u32) -> bool {
        let addrs = self.distinct_addrs as u32;
        addrs >= threshold || (addrs >= 2 && self.distinct_pairs as u32 >= threshold)
    }

    /// Total probes in the current window.
    pub fn total_probes(&self) -> u32 {
        self.probes.iter().fold(0u32, |a, p| a.saturating_add(*p))
    }

    /// Applies one probe at time `now`.
    #[inline(always)]
    pub fn record(&mut self, now: u64, probe: &Probe, cfg: &KernelConfig) -> Outcome {
        if now.saturating_sub(self.window_start_ns) >= cfg.window_ns {
            self.start_window(now);
        }
        self.last_seen_ns = now;
        if let Some(c) = self.probes.get_mut(probe.kind as usize) {
            *c = c.saturating_add(1);
        }
        if let Some(f) = probe.tcp_flags {
            self.flags_or |= f;
            self.flags_and &= f;
        }
        if probe.os_stack {
            self.os_syns = self.os_syns.saturating_add(1);
        }
        if probe.kind == ProbeKind::Fragment as u8 {
            self.tiny_frags = self.tiny_frags.saturating_add(1);
        }
        let mut out = Outcome::default();
        if let Some(port) = probe.port {
            if set_port_bit(&mut self.port_sketch, port_bucket(port, cfg.sketch_key)) {
                out.new_port = true;
                self.distinct_ports = self.distinct_ports.saturating_add(1);
                self.score = self.score.saturating_add(probe.weight);
                let slot = self.sample_count as usize;
                if let Some(s) = self.port_samples.get_mut(slot) {
                    *s = port;
                    self.sample_count += 1;
                }
            }
        }
        // One hash of the destination serves both address sketches.
        let dst_hash = addr_hash(&probe.dst);
        if set_addr_bit(&mut self.addr_sketch, addr_bucket_of(dst_hash)) {
            self.distinct_addrs = self.distinct_addrs.saturating_add(1);
        }
        if let (Some(port), true) = (probe.port, probe.weight > 0) {
            if set_addr_bit(&mut self.pair_sketch, pair_bucket_of(dst_hash, port)) {
                self.distinct_pairs = self.distinct_pairs.saturating_add(1);
            }
        }
        if self.reported != 0 {
            return out;
        }
        if probe.kind == ProbeKind::IcmpDiscovery as u8 && self.discovery_reported == 0 {
            self.discovery_reported = 1;
            out.trigger = Some(Trigger::Discovery);
        }
        let trigger = if cfg.score_threshold != 0 && self.score >= cfg.score_threshold {
            Trigger::Score
        } else if cfg.sweep_threshold != 0 && self.is_sweep(cfg.sweep_threshold) {
            Trigger::Sweep
        } else {
            return out;
        };
        // A scan crossing on this very probe outranks the discovery report.
        self.reported = 1;
        out.trigger = Some(trigger);
        out
    }
}

/// Who put a block in place.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOrigin {
    /// The XDP program itself, on a threshold crossing.
    Kernel = 0,
    /// The controller's detector.
    Detector = 1,
    /// An operator (`scan-guard block`).
    Manual = 2,
    /// A CrowdSec Local API decision (bouncer mode).
    Crowdsec = 3,
}

impl BlockOrigin {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Kernel),
            1 => Some(Self::Detector),
            2 => Some(Self::Manual),
            3 => Some(Self::Crowdsec),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Kernel, Self::Detector, Self::Manual, Self::Crowdsec]
            .into_iter()
            .find(|o| o.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Detector => "detector",
            Self::Manual => "manual",
            Self::Crowdsec => "crowdsec",
        }
    }
}

/// Marker for "no probe kind" in `BlockEntry::kind`.
pub const KIND_NONE: u8 = 0xff;

/// Value of the `BLOCKLIST` LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC_COARSE` ns after which the kernel ignores (and removes) the entry;
    /// 0 = never expires.
    pub expires_ns: u64,
    pub created_ns: u64,
    /// Packets dropped by this entry.
    pub hits: u64,
    /// The entry's own prefix length (the kernel needs it to delete the entry it matched).
    pub prefix_len: u32,
    /// `BlockOrigin`.
    pub origin: u8,
    /// `vocab::ScanKind` code of the scan that caused it (the kernel writes
    /// its probe kinds, the same codes), or `KIND_NONE`.
    pub kind: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<BlockEntry>() == 32);

impl BlockEntry {
    #[inline(always)]
    pub const fn is_expired(&self, now: u64) -> bool {
        self.expires_ns != 0 && now >= self.expires_ns
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SourceState {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for BlockEntry {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{addr::from_v4, flags::ProbeKind};

    fn syn(port: u16, cfg: &KernelConfig, listening: bool) -> Probe {
        Probe {
            kind: ProbeKind::Syn as u8,
            dst: from_v4([10, 0, 0, 1]),
            port: Some(port),
            weight: cfg.port_weight(port, listening, false),
            tcp_flags: Some(crate::flags::SYN),
            listening,
            os_stack: false,
        }
    }

    #[test]
    fn closed_port_scan_triggers_once() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut triggers = 0;
        let mut crossed_at = None;
        for (i, port) in (1..=100u16).enumerate() {
            if let Some(t) = s.record(i as u64, &syn(port, &cfg, false), &cfg).trigger {
                assert_eq!(t, Trigger::Score);
                triggers += 1;
                crossed_at.get_or_insert(i + 1);
            }
        }
        assert_eq!(triggers, 1);
        assert_eq!(
            crossed_at,
            Some(6),
            "six closed privileged ports at weight 4"
        );
        assert_eq!(s.probes[ProbeKind::Syn as usize], 100);
        assert_eq!(s.sample_count as usize, PORT_SAMPLES);
        assert_eq!(&s.port_samples[..3], &[1, 2, 3]);
        assert!(s.distinct_ports > 90);
    }

    #[test]
    fn many_connections_to_few_open_ports_never_trigger() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        for i in 0..100_000u64 {
            let port = [80u16, 443, 8443][(i % 3) as usize];
            assert_eq!(s.record(i, &syn(port, &cfg, true), &cfg).trigger, None);
        }
        assert_eq!(s.distinct_ports, 3);
    }

    #[test]
    fn window_rollover_resets_score_and_allows_new_report() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut reports = 0;
        for port in 1..=10u16 {
            reports += s.record(1, &syn(port, &cfg, false), &cfg).trigger.is_some() as u32;
        }
        assert_eq!(reports, 1);
        let later = 1 + cfg.window_ns;
        assert_eq!(s.record(later, &syn(11, &cfg, false), &cfg).trigger, None);
        assert_eq!(s.score, 4);
        assert_eq!(s.window_start_ns, later);
        assert_eq!(s.first_seen_ns, 0);
        for port in 12..=20u16 {
            reports += s
                .record(later, &syn(port, &cfg, false), &cfg)
                .trigger
                .is_some() as u32;
        }
        assert_eq!(reports, 2);
    }

    #[test]
    fn sweep_of_addresses_triggers() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut trig = None;
        for last in 1..=64u8 {
            let p = Probe {
                kind: ProbeKind::IcmpEcho as u8,
                dst: from_v4([10, 0, 0, last]),
                port: None,
                weight: 0,
                tcp_flags: None,
                listening: false,
                os_stack: false,
            };
            if let Some(t) = s.record(0, &p, &cfg).trigger {
                trig = Some((t, last));
                break;
            }
        }
        let (t, n) = trig.expect("sweep detected");
        assert_eq!(t, Trigger::Sweep);
        assert!(
            n as u32 >= cfg.sweep_threshold && n <= 16,
            "after {n} addresses"
        );
    }

    #[test]
    fn a_sweep_with_several_ports_per_address_triggers_within_twelve_probes() {
        // nmap -sn -PS22,80,443: three closed ports per address.
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut n = 0;
        let trig = (1..=32u8)
            .flat_map(|last| [22u16, 80, 443].map(|port| (last, port)))
            .find_map(|(last, port)| {
                n += 1;
                s.record(
                    0,
                    &syn_to(from_v4([10, 0, 0, last]), port, &cfg, false),
                    &cfg,
                )
                .trigger
            });
        assert!(
            trig.is_some() && n <= 12,
            "trigger {trig:?} after {n} probes"
        );
        // The same contacts with open ports: never.
        let mut s = SourceState::new(0);
        for last in 1..=32u8 {
            for port in [22u16, 80, 443] {
                let t = s.record(
                    0,
                    &syn_to(from_v4([10, 0, 0, last]), port, &cfg, true),
                    &cfg,
                );
                assert!(t.trigger.is_none() || last as u32 >= cfg.sweep_threshold);
            }
        }
    }

    fn syn_to(dst: Addr, port: u16, cfg: &KernelConfig, listening: bool) -> Probe {
        Probe {
            kind: ProbeKind::Syn as u8,
            dst,
            port: Some(port),
            weight: cfg.port_weight(port, listening, false),
            tcp_flags: Some(crate::flags::SYN),
            listening,
            os_stack: false,
        }
    }

    #[test]
    fn new_ports_are_reported_once_per_window() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        assert!(s.record(0, &syn(80, &cfg, true), &cfg).new_port);
        assert!(!s.record(1, &syn(80, &cfg, true), &cfg).new_port);
        assert!(
            s.record(cfg.window_ns + 1, &syn(80, &cfg, true), &cfg)
                .new_port
        );
    }

    #[test]
    fn os_stack_syns_are_counted() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut p = syn(80, &cfg, true);
        p.os_stack = true;
        s.record(0, &p, &cfg);
        s.record(0, &syn(81, &cfg, true), &cfg);
        assert_eq!(s.os_syns, 1);
    }

    #[test]
    fn flag_masks_accumulate() {
        let cfg = KernelConfig::default();
        let mut s = SourceState::new(0);
        let mut p = syn(1, &cfg, false);
        s.record(0, &p, &cfg);
        p.tcp_flags = Some(crate::flags::SYN | crate::flags::ECE);
        s.record(0, &p, &cfg);
        assert_eq!(s.flags_or, crate::flags::SYN | crate::flags::ECE);
        assert_eq!(s.flags_and, crate::flags::SYN);
    }

    #[test]
    fn zero_threshold_disables_trigger() {
        let cfg = KernelConfig {
            score_threshold: 0,
            sweep_threshold: 0,
            ..KernelConfig::default()
        };
        let mut s = SourceState::new(0);
        for port in 1..=1000u16 {
            assert_eq!(s.record(0, &syn(port, &cfg, false), &cfg).trigger, None);
        }
    }

    #[test]
    fn block_expiry() {
        let b = BlockEntry {
            expires_ns: 100,
            created_ns: 0,
            hits: 0,
            prefix_len: 128,
            origin: 0,
            kind: KIND_NONE,
            _pad: [0; 2],
        };
        assert!(!b.is_expired(99));
        assert!(b.is_expired(100));
        let forever = BlockEntry { expires_ns: 0, ..b };
        assert!(!forever.is_expired(u64::MAX));
    }
}
