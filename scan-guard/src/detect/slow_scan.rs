//! Slow scans: a Threshold Random Walk over each source's first contacts.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::Entry},
    time::Duration,
};

use scan_guard_common::{addr::Addr, event::Contact, flags::PROBE_KINDS, vocab::ScanKind};

use serde::{Deserialize, Serialize};

use crate::{base::settings::Dur, detect::classify::classify};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowScan {
    pub enabled: bool,
    /// P(first contact succeeds) for a benign source (theta0).
    pub benign_success: f64,
    /// P(first contact succeeds) for a scanner (theta1).
    pub scanner_success: f64,
    /// Likelihood ratio at which a source is a scanner (eta1).
    pub threshold: f64,
    /// How long a source's history is kept after its last contact.
    pub memory: Dur,
    /// The walk's evidence halves every `half_life` ("0s": never fades).
    pub half_life: Dur,
    /// Sources remembered at once (least recently seen forgotten first).
    pub max_sources: usize,
}

impl Default for SlowScan {
    fn default() -> Self {
        Self {
            enabled: true,
            benign_success: 0.8,
            scanner_success: 0.2,
            threshold: 99.0,
            memory: Dur(Duration::from_secs(30 * 60)),
            half_life: Dur(Duration::from_secs(30 * 60)),
            max_sources: 100_000,
        }
    }
}

/// A slow scan found by the sequential test.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowScanFinding {
    pub src: Addr,
    /// Prefix length of `src` (128: one address; a /64 for IPv6 by default).
    pub src_prefix: u32,
    pub kind: ScanKind,
    pub likelihood_ratio: f64,
    pub failures: u32,
    pub successes: u32,
    pub ports: Vec<u16>,
}

/// Most first contacts remembered per source (bounded memory).
const CONTACTS_PER_SOURCE: usize = 256;

/// Ports a finding names at most.
const FINDING_PORTS: usize = 8;

#[derive(Debug)]
struct Walk {
    /// ln of the likelihood ratio, as of `updated_ns`.
    log_ratio: f64,
    updated_ns: u64,
    seen: Seen,
    failures: u32,
    successes: u32,
    kinds: [u32; PROBE_KINDS],
    os_syns: u16,
    /// The first distinct ports, in order (`n_ports` of them): kept inline,
    /// so a source seen once (the spoofed sources of a flood) costs no
    /// allocation.
    ports: [u16; FINDING_PORTS],
    n_ports: u8,
    last_ns: u64,
    flagged: bool,
}

/// The distinct (destination, port) contacts of a source: the first one
/// inline, the rest in a set allocated only when a second one comes.
#[derive(Debug, Default)]
struct Seen {
    first: Option<(Addr, u16)>,
    rest: HashSet<(Addr, u16)>,
}

impl Seen {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// True when `k` is new.
    fn insert(&mut self, k: (Addr, u16)) -> bool {
        match self.first {
            None => {
                self.first = Some(k);
                true
            }
            Some(f) if f == k => false,
            Some(_) => self.rest.insert(k),
        }
    }
}

/// Threshold Random Walk (Jung, Paxson, Berger, Balakrishnan 2004): each first
/// contact to a closed port multiplies the likelihood ratio by
/// (1-θ1)/(1-θ0), each contact with a listening service by θ1/θ0; above η1 the
/// source is a scanner.
///
/// Two departures from the textbook walk keep busy legitimate sources out of it:
/// - the walk forgets: its log-ratio halves every `slow_scan.half_life`, so closed
///   contacts spread over hours (a LAN desktop's NetBIOS and SMB attempts, the
///   odd typo of one client behind a NAT address) never add up, while a scan at
///   one probe every few minutes still crosses within a handful of probes;
/// - successes count per contact the kernel reports (one per open port per
///   window), not once per distinct port: a NAT address whose clients keep using
///   the host's services keeps earning them.
pub struct Trw {
    cfg: SlowScan,
    walks: HashMap<Addr, Walk>,
    /// Sources in the order they were last known to be used: (source, its
    /// `last_ns` when queued). Touching a walk does not move it; eviction pops
    /// the front and re-queues it if it was used since, so evicting the least
    /// recently used walk costs O(1) amortised, not a scan of every walk.
    order: VecDeque<(Addr, u64)>,
}

impl Trw {
    pub fn new(cfg: SlowScan) -> Self {
        Self {
            cfg,
            walks: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn set_config(&mut self, cfg: SlowScan) {
        self.cfg = cfg;
    }

    /// The floor the ratio never drops below (η0 = (1-β)/(1-α) with α=0.01,
    /// β=0.99): a long-benign source that turns to scanning is still caught quickly.
    const FLOOR: f64 = 0.01 / 0.99;

    pub fn sources(&self) -> usize {
        self.walks.len()
    }

    /// Feeds one first contact; returns a finding the first time the source's ratio
    /// crosses the threshold.
    pub fn observe(&mut self, c: &Contact) -> Option<SlowScanFinding> {
        if !self.cfg.enabled {
            return None;
        }
        // One hash of the source per contact; two only when the table is full
        // and a new source must first evict the least recently used one.
        if self.walks.len() >= self.cfg.max_sources && !self.walks.contains_key(&c.src) {
            self.evict_oldest();
        }
        let w = match self.walks.entry(c.src) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.order.push_back((c.src, c.ts_ns));
                v.insert(Walk {
                    log_ratio: 0.0,
                    updated_ns: c.ts_ns,
                    seen: Seen::default(),
                    failures: 0,
                    successes: 0,
                    kinds: [0; PROBE_KINDS],
                    os_syns: 0,
                    ports: [0; FINDING_PORTS],
                    n_ports: 0,
                    last_ns: c.ts_ns,
                    flagged: false,
                })
            }
        };
        w.last_ns = w.last_ns.max(c.ts_ns);
        let success = c.listening != 0;
        // A closed port contacted again is no new evidence; an open one is.
        if !success && (w.seen.len() >= CONTACTS_PER_SOURCE || !w.seen.insert((c.dst, c.port))) {
            return None;
        }
        let half_life = self.cfg.half_life.0.as_nanos() as f64;
        if half_life > 0.0 && c.ts_ns > w.updated_ns {
            let elapsed = (c.ts_ns - w.updated_ns) as f64;
            w.log_ratio *= 0.5f64.powf(elapsed / half_life);
        }
        w.updated_ns = w.updated_ns.max(c.ts_ns);
        if let Some(k) = w.kinds.get_mut(c.kind as usize) {
            *k += 1;
        }
        if c.os_stack != 0 {
            w.os_syns = w.os_syns.saturating_add(1);
        }
        let n = usize::from(w.n_ports);
        if n < FINDING_PORTS && !w.ports[..n].contains(&c.port) {
            w.ports[n] = c.port;
            w.n_ports += 1;
        }
        let (t0, t1) = (self.cfg.benign_success, self.cfg.scanner_success);
        if success {
            w.successes += 1;
            w.log_ratio = (w.log_ratio + (t1 / t0).ln()).max(Self::FLOOR.ln());
        } else {
            w.failures += 1;
            w.log_ratio += ((1.0 - t1) / (1.0 - t0)).ln();
        }
        if w.flagged || w.log_ratio <= self.cfg.threshold.ln() {
            return None;
        }
        w.flagged = true;
        let kind = classify(&w.kinds, None, w.os_syns);
        Some(SlowScanFinding {
            src: c.src,
            src_prefix: c.src_prefix_len(),
            kind,
            likelihood_ratio: w.log_ratio.exp(),
            failures: w.failures,
            successes: w.successes,
            ports: w.ports[..usize::from(w.n_ports)].to_vec(),
        })
    }

    /// Forgets sources idle for longer than the configured memory.
    pub fn expire(&mut self, now_ns: u64) {
        let keep = self.cfg.memory.0.as_nanos() as u64;
        self.walks
            .retain(|_, w| now_ns.saturating_sub(w.last_ns) <= keep);
        self.compact_order();
    }

    /// Forgets a source (after it was blocked, its history has served).
    pub fn forget(&mut self, src: &Addr) {
        self.walks.remove(src);
    }

    fn evict_oldest(&mut self) {
        // Each queued source is re-queued at most once per call (with its
        // current `last_ns`, which then matches), so this ends.
        let mut budget = 2 * self.order.len() + 1;
        while let Some((src, queued_ns)) = self.order.pop_front() {
            budget = budget.saturating_sub(1);
            match self.walks.get(&src) {
                // Forgotten or expired meanwhile: a stale entry.
                None => {}
                Some(w) if w.last_ns <= queued_ns || budget == 0 => {
                    self.walks.remove(&src);
                    return;
                }
                Some(w) => self.order.push_back((src, w.last_ns)),
            }
        }
    }

    /// Drops queue entries of walks that are gone, once they outnumber the
    /// walks (expiry and `forget` leave them behind).
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.walks.len() + 1024 {
            let walks = &self.walks;
            self.order.retain(|(src, _)| walks.contains_key(src));
        }
    }
}

#[cfg(test)]
mod tests {
    use scan_guard_common::addr::from_v4;
    use scan_guard_common::flags::ProbeKind;

    use super::*;

    fn contact(src: u8, port: u16, listening: bool) -> Contact {
        Contact {
            ts_ns: u64::from(port) * 60_000_000_000,
            src: from_v4([10, 0, 0, src]),
            dst: from_v4([10, 0, 0, 1]),
            port,
            kind: ProbeKind::Syn as u8,
            listening: listening as u8,
            os_stack: 0,
            src_prefix: 128,
            _pad: [0; 2],
        }
    }

    #[test]
    fn four_failures_flag_a_slow_scanner() {
        let mut t = Trw::new(SlowScan::default());
        assert!(t.observe(&contact(2, 1, false)).is_none());
        assert!(t.observe(&contact(2, 2, false)).is_none());
        assert!(t.observe(&contact(2, 3, false)).is_none());
        let f = t
            .observe(&contact(2, 4, false))
            .expect("flagged on the 4th failure");
        assert_eq!(f.failures, 4);
        assert!(f.likelihood_ratio > 99.0);
        assert_eq!(f.ports, vec![1, 2, 3, 4]);
        assert_eq!(f.kind, ScanKind::Syn);
        assert!(t.observe(&contact(2, 5, false)).is_none(), "reported once");
    }

    #[test]
    fn slow_connect_scans_are_named_connect() {
        let mut t = Trw::new(SlowScan::default());
        let mut last = None;
        for p in 1..=4 {
            let mut c = contact(4, p, false);
            c.os_stack = 1;
            last = t.observe(&c);
        }
        assert_eq!(last.expect("flagged").kind, ScanKind::Connect);
    }

    #[test]
    fn repeated_contacts_count_once_and_successes_pull_back() {
        let mut t = Trw::new(SlowScan::default());
        for _ in 0..50 {
            assert!(
                t.observe(&contact(3, 9999, false)).is_none(),
                "a typo repeated"
            );
        }
        for p in [22, 80, 443] {
            assert!(t.observe(&contact(3, p, true)).is_none());
        }
        // 1 failure, 3 successes: far below the threshold; a few more failures are
        // not enough either.
        assert!(t.observe(&contact(3, 8080, false)).is_none());
        assert!(t.observe(&contact(3, 8081, false)).is_none());
    }

    fn at(src: [u8; 4], port: u16, listening: bool, ts_s: u64) -> Contact {
        Contact {
            ts_ns: ts_s * 1_000_000_000,
            src: from_v4(src),
            ..contact(0, port, listening)
        }
    }

    #[test]
    fn closed_contacts_spread_over_a_day_never_flag_a_lan_desktop() {
        // 24 h of a desktop's unicast chatter to a server without those services
        // (its broadcast and multicast never reach the walk: the kernel scores only
        // the host's own unicast addresses): NetBIOS, SMB, LLMNR, Dropbox LAN sync,
        // WS-Discovery, SSDP, mDNS replies. Seven closed ports, the first contact
        // of each three hours apart, every one retried every 20 minutes after (so
        // the walk is never idle long enough to be forgotten).
        let mut t = Trw::new(SlowScan::default());
        let desktop = [192, 168, 1, 20];
        let ports = [445u16, 139, 137, 5355, 17500, 3702, 1900];
        for slot in 0..24 * 3u64 {
            for (k, port) in ports.iter().enumerate() {
                if slot < 9 * k as u64 {
                    continue;
                }
                let ts = slot * 1200 + k as u64 * 60;
                assert!(
                    t.observe(&at(desktop, *port, false, ts)).is_none(),
                    "at {ts} s, port {port}"
                );
            }
        }
    }

    #[test]
    fn a_nat_address_with_fifty_clients_and_hourly_typos_is_never_flagged() {
        // 50 clients behind one address use ports 80 and 443 all day (the kernel
        // reports one contact per open port per 30 s window) and each mistypes a
        // port once an hour, one of twenty closed ports.
        let mut t = Trw::new(SlowScan::default());
        let nat = [203, 0, 113, 9];
        for s in (0..24 * 3600u64).step_by(30) {
            for port in [80u16, 443] {
                assert!(t.observe(&at(nat, port, true, s)).is_none());
            }
            // 50 typos an hour: one every 72 s.
            if s % 72 < 30 {
                let typo = 8000 + ((s / 72) % 20) as u16;
                assert!(
                    t.observe(&at(nat, typo, false, s + 1)).is_none(),
                    "at {s} s"
                );
            }
        }
    }

    #[test]
    fn slow_scans_are_still_caught_within_ten_probes() {
        // nmap -T1 (a probe every 15 s) and --scan-delay 5s, and one probe a minute.
        for (i, gap_s) in [15u64, 5, 60].iter().enumerate() {
            let mut t = Trw::new(SlowScan::default());
            let src = [198, 51, 100, i as u8];
            let flagged_at = (1..=10u16).position(|n| {
                t.observe(&at(src, n, false, u64::from(n) * gap_s))
                    .is_some()
            });
            assert!(
                flagged_at.is_some_and(|p| p < 10),
                "a probe every {gap_s} s: flagged at {flagged_at:?}"
            );
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Trw::new(SlowScan {
            max_sources: 10,
            ..SlowScan::default()
        });
        for s in 0..100u8 {
            t.observe(&contact(s, 1, false));
        }
        assert!(t.sources() <= 10);
        t.expire(u64::MAX);
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn the_least_recently_used_walk_is_evicted_and_the_queue_stays_bounded() {
        let mut t = Trw::new(SlowScan {
            max_sources: 3,
            ..SlowScan::default()
        });
        let at = |src: u8, port: u16, ts: u64| Contact {
            ts_ns: ts,
            ..contact(src, port, false)
        };
        t.observe(&at(1, 1, 10));
        t.observe(&at(2, 1, 20));
        t.observe(&at(3, 1, 30));
        // Source 1 is the oldest walk but used again: source 2 goes instead.
        t.observe(&at(1, 2, 40));
        t.observe(&at(4, 1, 50));
        assert_eq!(t.sources(), 3);
        assert!(t.walks.contains_key(&from_v4([10, 0, 0, 1])));
        assert!(!t.walks.contains_key(&from_v4([10, 0, 0, 2])));
        // A flood of new sources at the bound stays bounded, the queue included.
        let mut t = Trw::new(SlowScan {
            max_sources: 50_000,
            ..SlowScan::default()
        });
        for i in 0..200_000u32 {
            let mut c = contact(0, 1, false);
            c.src = from_v4(i.to_be_bytes());
            c.ts_ns = u64::from(i);
            t.observe(&c);
        }
        assert_eq!(t.sources(), 50_000);
        assert!(t.order.len() <= 2 * 50_000 + 1024);
    }
}
