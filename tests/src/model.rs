//! A userspace reference model of the XDP program: the documented behaviour,
//! written independently of the kernel code (plain slices, no verifier tricks), so
//! differential tests can hold the real program to it frame by frame: verdict,
//! counters, per-source state, events and blocks.
//!
//! Shared on purpose: the pure rules in `scan-guard-common` (flag classes, probe
//! roles, weights, `SourceState::record`) are the specification both sides run.

use std::collections::{HashMap, HashSet};

use scan_guard_common::{
    addr::{Addr, from_v4, mask},
    config::KernelConfig,
    event::Suppression,
    flags::{ProbeKind, TcpRole, tcp_role},
    state::{BlockEntry, BlockOrigin, Probe, SourceState, Trigger},
    stats::{STAT_COUNT, Stat, StatBlock},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// What the model expects one frame to do.
#[derive(Debug)]
pub struct Step {
    pub verdict: u32,
    pub stats: StatBlock,
    /// (source, blocked, suppression) for a threshold crossing.
    pub event: Option<(Addr, bool, u8)>,
}

impl Default for Step {
    fn default() -> Self {
        Self {
            verdict: XDP_PASS,
            stats: [0; STAT_COUNT],
            event: None,
        }
    }
}

#[derive(Default)]
pub struct Model {
    pub cfg: KernelConfig,
    pub allow: Vec<(Addr, u32)>,
    pub protected: Vec<(Addr, u32)>,
    /// Blocklist: (address, prefix) -> entry.
    pub blocks: HashMap<(Addr, u32), BlockEntry>,
    pub tcp_listening: Vec<u16>,
    pub udp_listening: Vec<u16>,
    /// The host's own addresses (evidence only to these under `POLICY_LOCAL_ONLY`).
    pub local: HashSet<Addr>,
    /// Source prefixes scored per address (`NO_AGGREGATE`).
    pub no_aggregate: HashSet<Addr>,
    pub sources: HashMap<Addr, SourceState>,
    /// Cache of the distinct blocklist prefix lengths, longest first.
    lens: (usize, Vec<u32>),
}

struct L3 {
    src: Addr,
    dst: Addr,
    proto: u8,
    l4: usize,
    later_fragment: bool,
    first_fragment: bool,
    /// False when parsing failed after the addresses were read: the lists still
    /// apply, then the frame passes as a parse failure.
    complete: bool,
}

enum Parsed {
    Ip(L3),
    NotIp,
    Bad,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

fn need(f: &[u8], at: usize, n: usize) -> bool {
    at + n <= f.len()
}

fn parse(f: &[u8]) -> Parsed {
    if !need(f, 0, 14) {
        return Parsed::Bad;
    }
    let Some(mut ethertype) = be16(f, 12) else {
        return Parsed::Bad;
    };
    let mut off = 14;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        if !need(f, off, 4) {
            return Parsed::Bad;
        }
        ethertype = be16(f, off + 2).unwrap_or(0);
        off += 4;
    }
    match ethertype {
        0x0800 => ipv4(f, off),
        0x86dd => ipv6(f, off),
        0x8100 | 0x88a8 => Parsed::Bad,
        _ => Parsed::NotIp,
    }
}

fn ipv4(f: &[u8], off: usize) -> Parsed {
    if !need(f, off, 20) {
        return Parsed::Bad;
    }
    let ihl = (f[off] & 0x0f) as usize * 4;
    let frag = be16(f, off + 6).unwrap_or(0);
    Parsed::Ip(L3 {
        src: from_v4([f[off + 12], f[off + 13], f[off + 14], f[off + 15]]),
        dst: from_v4([f[off + 16], f[off + 17], f[off + 18], f[off + 19]]),
        proto: f[off + 9],
        l4: off + ihl,
        later_fragment: frag & 0x1fff != 0,
        first_fragment: frag & 0x3fff == 0x2000,
        complete: f[off] >> 4 == 4 && ihl >= 20,
    })
}

fn ipv6(f: &[u8], off: usize) -> Parsed {
    if !need(f, off, 40) {
        return Parsed::Bad;
    }
    let mut l3 = L3 {
        src: f[off + 8..off + 24].try_into().unwrap_or_default(),
        dst: f[off + 24..off + 40].try_into().unwrap_or_default(),
        proto: f[off + 6],
        l4: off + 40,
        later_fragment: false,
        first_fragment: false,
        complete: false,
    };
    if f[off] >> 4 != 6 {
        return Parsed::Ip(l3);
    }
    let is_ext = |n: u8| matches!(n, 0 | 43 | 44 | 60);
    for _ in 0..6 {
        if !is_ext(l3.proto) {
            l3.complete = true;
            return Parsed::Ip(l3);
        }
        if !need(f, l3.l4, 8) {
            return Parsed::Ip(l3);
        }
        let len = if l3.proto == 44 {
            let frag = be16(f, l3.l4 + 2).unwrap_or(0);
            l3.later_fragment = frag >> 3 != 0;
            l3.first_fragment = frag == 1;
            8
        } else {
            (f[l3.l4 + 1] as usize + 1) * 8
        };
        l3.proto = f[l3.l4];
        l3.l4 += len;
        if l3.l4 > 1024 {
            return Parsed::Ip(l3);
        }
        if l3.later_fragment {
            l3.complete = true;
            return Parsed::Ip(l3);
        }
    }
    l3.complete = !is_ext(l3.proto);
    Parsed::Ip(l3)
}

fn covers(prefixes: &[(Addr, u32)], a: &Addr) -> bool {
    prefixes.iter().any(|(p, l)| mask(a, *l) == *p)
}

impl Model {
    pub fn new(cfg: KernelConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    fn longest_block(&mut self, a: &Addr) -> Option<(Addr, u32)> {
        // Longest prefix first; a handful of distinct lengths, each a hash lookup.
        // The length list is rebuilt only when the blocklist changed size.
        if self.lens.0 != self.blocks.len() {
            let set: std::collections::BTreeSet<u32> =
                self.blocks.keys().map(|(_, l)| *l).collect();
            self.lens = (self.blocks.len(), set.into_iter().rev().collect());
        }
        self.lens
            .1
            .iter()
            .map(|l| (mask(a, *l), *l))
            .find(|k| self.blocks.contains_key(k))
    }

    /// The blocklist check, with kernel-side expiry of the longest match.
    fn blocked(&mut self, src: &Addr, now: u64, st: &mut StatBlock) -> bool {
        let Some(k) = self.longest_block(src) else {
            return false;
        };
        let e = self.blocks[&k];
        if !e.is_expired(now) {
            if let Some(e) = self.blocks.get_mut(&k) {
                e.hits += 1;
            }
            return true;
        }
        self.blocks.remove(&k);
        st[Stat::BlocksExpired as usize] += 1;
        match self.longest_block(src) {
            Some(k2) if !self.blocks[&k2].is_expired(now) => {
                if let Some(e) = self.blocks.get_mut(&k2) {
                    e.hits += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// The key a source's evidence is kept under, and its prefix length.
    pub fn source_key(&self, src: &Addr) -> (Addr, u32) {
        let plen = self.cfg.source_prefix(src);
        if plen >= 128 {
            return (*src, 128);
        }
        let masked = mask(src, plen);
        if self.no_aggregate.contains(&masked) {
            (*src, 128)
        } else {
            (masked, plen)
        }
    }

    fn record(
        &mut self,
        l3: &L3,
        probe: &Probe,
        now: u64,
        st: &mut StatBlock,
        step: &mut Step,
    ) -> u32 {
        st[Stat::Probes as usize] += 1;
        let (key, plen) = self.source_key(&l3.src);
        if let std::collections::hash_map::Entry::Vacant(v) = self.sources.entry(key) {
            // Admission: a client's SYN (OS option set, listening port) from an
            // untracked source allocates nothing. The model has no new-source
            // budget (`new_source_budget` 0).
            if probe.listening && probe.os_stack {
                st[Stat::AdmittedUntracked as usize] += 1;
                return XDP_PASS;
            }
            v.insert(SourceState::new(now));
            st[Stat::NewSources as usize] += 1;
        }
        let cfg = self.cfg;
        let Some(state) = self.sources.get_mut(&key) else {
            return XDP_PASS;
        };
        let out = state.record(now, probe, &cfg);
        if out.new_port && probe.port.is_some() {
            st[Stat::Contacts as usize] += 1;
        }
        let Some(trigger) = out.trigger else {
            return XDP_PASS;
        };
        let (blocked, suppressed) = if !cfg.auto_block() || trigger == Trigger::Discovery {
            (false, 0)
        } else if covers(&self.protected, &l3.src) {
            st[Stat::AutoBlockSuppressed as usize] += 1;
            (false, Suppression::Protected as u8)
        } else {
            let entry = BlockEntry {
                expires_ns: if cfg.block_ttl_ns == 0 {
                    0
                } else {
                    now + cfg.block_ttl_ns
                },
                created_ns: now,
                hits: 0,
                prefix_len: plen,
                origin: BlockOrigin::Kernel as u8,
                kind: probe.kind,
                _pad: [0; 2],
            };
            self.blocks.insert((key, plen), entry);
            st[Stat::AutoBlocks as usize] += 1;
            (true, 0)
        };
        st[Stat::Events as usize] += 1;
        step.event = Some((key, blocked, suppressed));
        if blocked {
            st[Stat::DroppedBlocked as usize] += 1;
            XDP_DROP
        } else {
            XDP_PASS
        }
    }

    /// Runs one frame at time `now` (rate cap assumed off: `max_auto_blocks_per_sec` 0).
    pub fn step(&mut self, f: &[u8], now: u64) -> Step {
        let mut step = Step::default();
        let mut st = [0u64; STAT_COUNT];
        st[Stat::Packets as usize] += 1;
        let verdict = self.inspect(f, now, &mut st, &mut step);
        if verdict == XDP_PASS {
            st[Stat::Passed as usize] += 1;
        }
        step.verdict = verdict;
        step.stats = st;
        step
    }

    fn inspect(&mut self, f: &[u8], now: u64, st: &mut StatBlock, step: &mut Step) -> u32 {
        let l3 = match parse(f) {
            Parsed::Ip(l3) => l3,
            Parsed::NotIp => {
                st[Stat::NotIp as usize] += 1;
                return XDP_PASS;
            }
            Parsed::Bad => {
                st[Stat::ParseFailed as usize] += 1;
                return XDP_PASS;
            }
        };
        if covers(&self.allow, &l3.src) {
            st[Stat::Allowlisted as usize] += 1;
            return XDP_PASS;
        }
        if self.blocked(&l3.src, now, st) {
            st[Stat::DroppedBlocked as usize] += 1;
            return XDP_DROP;
        }
        if !l3.complete {
            st[Stat::ParseFailed as usize] += 1;
            return XDP_PASS;
        }
        let cfg = self.cfg;
        if l3.later_fragment {
            let (key, _) = self.source_key(&l3.src);
            let dropped_first = self.sources.get(&key).is_some_and(|s| {
                s.tiny_frags != 0 && now.saturating_sub(s.window_start_ns) < cfg.window_ns
            });
            if dropped_first {
                st[Stat::DroppedFragment as usize] += 1;
                return XDP_DROP;
            }
            st[Stat::Fragments as usize] += 1;
            return XDP_PASS;
        }
        // Is the destination one of ours (or is every destination evidence)?
        let local = !cfg.local_only() || self.local.contains(&l3.dst);
        let evidence_dst = |st: &mut StatBlock| {
            if !local {
                st[Stat::NotLocal as usize] += 1;
            }
            local
        };
        let probe =
            |kind: ProbeKind, port: Option<u16>, weight, flags, listening, os_stack| Probe {
                kind: kind as u8,
                dst: l3.dst,
                port,
                weight,
                tcp_flags: flags,
                listening,
                os_stack,
            };
        match l3.proto {
            6 => {
                if !need(f, l3.l4, 14) {
                    if !l3.first_fragment {
                        st[Stat::ParseFailed as usize] += 1;
                        return XDP_PASS;
                    }
                    // A tiny first fragment (RFC 1858): dropped and scored.
                    st[Stat::DroppedTinyFragment as usize] += 1;
                    if !evidence_dst(st) {
                        return XDP_DROP;
                    }
                    let port = be16(f, l3.l4 + 2)
                        .filter(|_| need(f, l3.l4, 4))
                        .unwrap_or(0);
                    let p = probe(
                        ProbeKind::Fragment,
                        Some(port),
                        cfg.port_weight(port, false, true),
                        None,
                        false,
                        false,
                    );
                    self.record(&l3, &p, now, st, step);
                    return XDP_DROP;
                }
                let port = be16(f, l3.l4 + 2).unwrap_or(0);
                let flags = f[l3.l4 + 13];
                let os_stack = f[l3.l4 + 12] >> 4 >= 8;
                let listening = self.tcp_listening.contains(&port);
                match tcp_role(flags) {
                    TcpRole::Invalid(class, kind) => {
                        let tracked = if evidence_dst(st) {
                            let p = probe(
                                kind,
                                Some(port),
                                cfg.port_weight(port, listening, true),
                                Some(flags),
                                listening,
                                false,
                            );
                            self.record(&l3, &p, now, st, step)
                        } else {
                            XDP_PASS
                        };
                        if cfg.drops(class) {
                            st[Stat::dropped_invalid(class)] += 1;
                            XDP_DROP
                        } else {
                            st[Stat::counted_invalid(class)] += 1;
                            tracked
                        }
                    }
                    TcpRole::Syn => {
                        if !evidence_dst(st) {
                            return XDP_PASS;
                        }
                        let p = probe(
                            ProbeKind::Syn,
                            Some(port),
                            cfg.port_weight(port, listening, false),
                            Some(flags),
                            listening,
                            os_stack,
                        );
                        let tracked = self.record(&l3, &p, now, st, step);
                        if tracked == XDP_PASS && cfg.stealth() && !listening {
                            st[Stat::DroppedStealth as usize] += 1;
                            XDP_DROP
                        } else {
                            tracked
                        }
                    }
                    TcpRole::Stray(kind) => {
                        if u32::from(port) >= cfg.ephemeral_port_min
                            || listening
                            || !evidence_dst(st)
                        {
                            XDP_PASS
                        } else {
                            let p = probe(
                                kind,
                                Some(port),
                                cfg.port_weight(port, false, false),
                                Some(flags),
                                false,
                                false,
                            );
                            self.record(&l3, &p, now, st, step)
                        }
                    }
                    TcpRole::Ignore => XDP_PASS,
                }
            }
            17 => {
                if !need(f, l3.l4, 4) {
                    st[Stat::ParseFailed as usize] += 1;
                    return XDP_PASS;
                }
                let port = be16(f, l3.l4 + 2).unwrap_or(0);
                if u32::from(port) >= cfg.ephemeral_port_min
                    || self.udp_listening.contains(&port)
                    || !evidence_dst(st)
                {
                    return XDP_PASS;
                }
                let p = probe(
                    ProbeKind::Udp,
                    Some(port),
                    cfg.port_weight(port, false, false),
                    None,
                    false,
                    false,
                );
                self.record(&l3, &p, now, st, step)
            }
            1 | 58 => {
                if !need(f, l3.l4, 2) {
                    st[Stat::ParseFailed as usize] += 1;
                    return XDP_PASS;
                }
                let echo = if l3.proto == 1 { 8 } else { 128 };
                let kind = match f[l3.l4] {
                    t if t == echo => ProbeKind::IcmpEcho,
                    13 | 17 if l3.proto == 1 => ProbeKind::IcmpDiscovery,
                    _ => return XDP_PASS,
                };
                if !evidence_dst(st) {
                    return XDP_PASS;
                }
                let p = probe(kind, None, 0, None, false, false);
                self.record(&l3, &p, now, st, step)
            }
            132 => {
                if !need(f, l3.l4, 16) {
                    st[Stat::ParseFailed as usize] += 1;
                    return XDP_PASS;
                }
                if !matches!(f[l3.l4 + 12], 1 | 10) || !evidence_dst(st) {
                    return XDP_PASS;
                }
                let port = be16(f, l3.l4 + 2).unwrap_or(0);
                let p = probe(
                    ProbeKind::Sctp,
                    Some(port),
                    cfg.port_weight(port, false, false),
                    None,
                    false,
                    false,
                );
                self.record(&l3, &p, now, st, step)
            }
            other => {
                if !evidence_dst(st) {
                    return XDP_PASS;
                }
                let port = u16::from(other);
                let p = probe(
                    ProbeKind::Protocol,
                    Some(port),
                    cfg.port_weight(port, false, false),
                    None,
                    false,
                    false,
                );
                self.record(&l3, &p, now, st, step)
            }
        }
    }
}
