//! Per-packet cost of the XDP program's paths, measured with BPF_PROG_TEST_RUN
//! next to an empty XDP_PASS program loaded in the same run (the floor).
//!
//! Method: every case runs `repeat` times per call (the kernel reports the mean, in
//! whole nanoseconds); all cases of a group are measured round-robin for `rounds`
//! rounds, so slow drift of the machine spreads over all of them, and the median
//! per case is reported with its min and max. The new-source path cannot repeat
//! (the second run would see a tracked source): it is measured one run per distinct
//! source, interleaved with single runs of a tracked source's SYN, and the
//! difference is added to the tracked SYN's repeat-mode cost (see
//! [`NewSourceCost`]).

use std::{collections::HashSet, time::Instant};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use scan_guard::{kernel::loader, kernel::maps::KernelMaps};
use scan_guard_common::{
    addr::{from_v4, mask},
    config::KernelConfig,
    state::{BlockEntry, BlockOrigin, KIND_NONE},
    stats::{Stat, StatBlock},
};

use crate::{
    harness::{Harness, XDP_DROP},
    packet::{ETH_P_8021Q, EXT_HOP_BY_HOP, Pkt},
};

/// One measured path.
#[derive(Debug, Clone)]
pub struct PathCost {
    pub name: String,
    /// "scan-guard" or "baseline".
    pub group: &'static str,
    /// Median over rounds of the kernel's mean ns per run.
    pub ns_per_packet: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
    pub verdict: u32,
    /// Blocklist entries in the program that ran, when that matters.
    pub entries: Option<u32>,
}

/// A program and a frame to measure.
pub struct Case<'a> {
    pub name: String,
    pub group: &'static str,
    pub entries: Option<u32>,
    pub prog: &'a Xdp,
    pub frame: Vec<u8>,
}

/// "1 entry", "10k entries", "1M entries", "123 entries".
pub fn entries_label(n: u32) -> String {
    match n {
        1 => "1 entry".into(),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M entries", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k entries", n / 1_000),
        n => format!("{n} entries"),
    }
}

/// Name of the empty XDP_PASS program's row.
pub const EMPTY_PASS: &str = "empty_xdp_pass";

/// The empty XDP_PASS program (`baseline_pass`), loaded.
pub fn baseline() -> Ebpf {
    let mut ebpf =
        Ebpf::load(scan_guard::BASELINE_PASS_OBJECT).expect("loading the baseline object");
    let prog: &mut Xdp = ebpf
        .program_mut("baseline_pass")
        .expect("baseline program")
        .try_into()
        .expect("XDP program");
    prog.load().expect("loading the baseline program");
    ebpf
}

/// The bench-programs object with every program loaded; `REF_BLOCKED` holds
/// the benchmark's exact-blocked source.
pub fn bench_programs() -> Ebpf {
    let mut ebpf =
        Ebpf::load(scan_guard::BENCH_PROGRAMS_OBJECT).expect("loading the bench-programs object");
    for name in [REF_SOURCE_DROP, REF_LOOKUP_DROP, RANDOM_SOURCE_DRIVER] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name}"))
            .try_into()
            .expect("XDP program");
        prog.load()
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    }
    let mut blocked: aya::maps::HashMap<_, u32, u8> = ebpf
        .map_mut("REF_BLOCKED")
        .expect("REF_BLOCKED map")
        .try_into()
        .expect("REF_BLOCKED is a hash map");
    blocked
        .insert(u32::from_ne_bytes(BLOCKED_EXACT.0), 1, 0)
        .expect("filling REF_BLOCKED");
    ebpf
}

/// Program names in the bench-programs object.
pub const REF_SOURCE_DROP: &str = "ref_source_drop";
pub const REF_LOOKUP_DROP: &str = "ref_source_lookup_drop";
pub const RANDOM_SOURCE_DRIVER: &str = "random_source_driver";

/// A loaded XDP program of `ebpf` by name.
pub fn xdp_prog<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("program {name}"))
        .try_into()
        .expect("XDP program")
}

/// A random-source driver (its own copy of the bench-programs object) whose
/// tail call goes to `target`: every run of it is a packet from a new source.
pub fn random_source_driver(target: &Xdp) -> Ebpf {
    let mut ebpf = bench_programs();
    let fd = target.fd().expect("target program fd");
    let mut slots: aya::maps::ProgramArray<_> = ebpf
        .map_mut("TARGET")
        .expect("TARGET map")
        .try_into()
        .expect("TARGET is a program array");
    slots.set(0, fd, 0).expect("setting the driver's target");
    ebpf
}

/// The loaded XDP program of a baseline object.
pub fn baseline_prog(ebpf: &Ebpf) -> &Xdp {
    ebpf.program("baseline_pass")
        .expect("baseline program")
        .try_into()
        .expect("XDP program")
}

/// The loaded scan-guard program of an object.
pub fn scan_guard_prog(ebpf: &Ebpf) -> &Xdp {
    ebpf.program(scan_guard_common::PROGRAM_NAME)
        .expect("scan-guard program")
        .try_into()
        .expect("XDP program")
}

/// Runs `frame` through `prog` `repeat` times: (verdict, mean ns per run).
pub fn repeat_cost(prog: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64) {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN ({} bytes): {e}", frame.len()));
    (r.return_value, r.duration.as_nanos() as f64)
}

/// Median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Measures `cases` round-robin, `rounds` rounds of `repeat` runs each.
/// Returns the raw samples per case (same order as `cases`) and the verdicts.
pub fn sample_cases(cases: &[Case<'_>], repeat: u32, rounds: u32) -> Vec<(Vec<f64>, u32)> {
    let mut out: Vec<(Vec<f64>, u32)> = cases.iter().map(|_| (Vec::new(), 0)).collect();
    // One untimed warm-up run each (first-touch of maps, instruction cache).
    for c in cases {
        repeat_cost(c.prog, &c.frame, repeat.min(1000));
    }
    for _ in 0..rounds.max(1) {
        for (c, o) in cases.iter().zip(out.iter_mut()) {
            let (v, ns) = repeat_cost(c.prog, &c.frame, repeat);
            o.0.push(ns);
            o.1 = v;
        }
    }
    out
}

/// Turns samples into rows.
pub fn summarise(case: &Case<'_>, samples: &[f64], verdict: u32) -> PathCost {
    PathCost {
        name: case.name.clone(),
        group: case.group,
        ns_per_packet: median(samples),
        min: samples.iter().copied().fold(f64::INFINITY, f64::min),
        max: samples.iter().copied().fold(0.0, f64::max),
        samples: samples.len(),
        verdict,
        entries: case.entries,
    }
}

/// A scan-guard instance (private maps, not attached) whose blocklist holds exactly
/// `entries` entries, one of which covers the benchmark's blocked source.
pub struct BlockInstance {
    pub ebpf: Ebpf,
    pub maps: KernelMaps,
    pub entries: u32,
    /// Seconds spent inserting the entries (one syscall each).
    pub insert_secs: f64,
    /// Kernel memory of the filled BLOCKLIST (memlock in this process's fdinfo).
    pub blocklist_bytes: Option<u64>,
}

/// Small deterministic generator (splitmix64) for reproducible filler addresses.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` distinct IPv4 blocklist keys as (octets, IPv4 prefix length) outside
/// 10.0.0.0/8 (where the benchmark's own sources live): 95 % host entries, 5 % /24.
pub fn filler_v4(n: usize, seed: u64) -> Vec<([u8; 4], u32)> {
    let mut rng = Rng(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let mut a = (r as u32).to_be_bytes();
        if a[0] == 10 || a[0] == 0 || a[0] >= 224 {
            continue;
        }
        let plen = if (r >> 32).is_multiple_of(20) { 24 } else { 32 };
        if plen == 24 {
            a[3] = 0;
        }
        if seen.insert((u32::from_be_bytes(a), plen)) {
            out.push((a, plen));
        }
    }
    out
}

/// `n` distinct IPv6 blocklist keys as (16-byte form, prefix length) in
/// 2000::/4 outside 2001:db8::/32 (where the benchmark's own sources live):
/// 95 % hosts, 5 % /64s (the default source prefix).
pub fn filler_v6(n: usize, seed: u64) -> Vec<(scan_guard_common::addr::Addr, u32)> {
    let mut rng = Rng(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (hi, lo) = (rng.next_u64(), rng.next_u64());
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&hi.to_be_bytes());
        a[8..].copy_from_slice(&lo.to_be_bytes());
        a[0] = 0x20 | (a[0] & 0x0f);
        if a[..4] == [0x20, 0x01, 0x0d, 0xb8] {
            continue;
        }
        let plen = if (lo >> 40).is_multiple_of(20) {
            64
        } else {
            128
        };
        let a = mask(&a, plen);
        if seen.insert((a, plen)) {
            out.push((a, plen));
        }
    }
    out
}

/// A block entry as the controller writes it: expiring (an hour from now).
pub fn block_entry(prefix_len: u32) -> BlockEntry {
    let now = scan_guard::base::clock::monotonic_ns();
    BlockEntry {
        expires_ns: now + 3_600_000_000_000,
        created_ns: now,
        hits: 0,
        prefix_len,
        origin: BlockOrigin::Manual as u8,
        kind: KIND_NONE,
        _pad: [0; 2],
    }
}

impl BlockInstance {
    /// Loads scan-guard with the blocklist sized to `entries`, blocks `target`
    /// (IPv4 octets / IPv4 prefix length) and fills the rest with other entries.
    pub fn new(entries: u32, target: ([u8; 4], u32), seed: u64) -> Self {
        let entries = entries.max(1);
        let (oct, plen) = target;
        let key_len = plen + 96;
        // A neighbour of the established-flow client (10.50.0.3): its /16 is
        // marked, so that row pays the lookups a client near blocked sources pays
        // (the fillers stay outside 10/8).
        let neighbour = (entries > 1).then(|| (from_v4(ESTABLISHED_NEIGHBOUR), 128));
        let fillers = (entries - 1).saturating_sub(u32::from(neighbour.is_some()));
        let rest = filler_v4(fillers as usize, seed)
            .into_iter()
            .map(|(a, p)| (mask(&from_v4(a), p + 96), p + 96));
        Self::build(
            entries,
            (mask(&from_v4(oct), key_len), key_len),
            neighbour.into_iter().chain(rest),
        )
    }

    /// [`new`](Self::new) for an IPv6 `target` (address, prefix length): the
    /// other entries are IPv6 hosts and /64s.
    pub fn new_v6(entries: u32, target: (&str, u32), seed: u64) -> Self {
        let entries = entries.max(1);
        let (text, plen) = target;
        // The fillers come masked to their prefix already.
        let rest = filler_v6((entries - 1) as usize, seed).into_iter();
        Self::build(
            entries,
            (mask(&crate::harness::addr(text), plen), plen),
            rest,
        )
    }

    /// Loads scan-guard with the blocklist sized to `entries`, blocks `target`
    /// (16-byte form, prefix length) and then every block of `rest`.
    fn build(
        entries: u32,
        target: (scan_guard_common::addr::Addr, u32),
        rest: impl Iterator<Item = (scan_guard_common::addr::Addr, u32)>,
    ) -> Self {
        let mut ebpf = loader::load_with(None, Some(entries)).unwrap_or_else(|e| {
            panic!("loading scan-guard with {entries} blocklist entries: {e:#}")
        });
        let mut maps = KernelMaps::take(&mut ebpf).expect("typed maps");
        // The blocklist laid out as the controller lays it out: its aggregate
        // prefix lengths (the fillers' /24s) are hashed, the /16 target and
        // other lengths go to the trie.
        let product = scan_guard::config::Config::default().kernel_config(32_768, 0);
        maps.write_config(&KernelConfig {
            v4_aggregate_prefix: product.v4_aggregate_prefix,
            v6_aggregate_prefix: product.v6_aggregate_prefix,
            ..KernelConfig::default()
        })
        .expect("write config");
        let listening = scan_guard::kernel::listeners::Listening {
            tcp: [80u16, 443].into_iter().collect(),
            udp: [53u16].into_iter().collect(),
        };
        maps.write_listening(&listening.bitmap())
            .expect("write listening");
        let started = Instant::now();
        let (addr, key_len) = target;
        maps.insert_block(&addr, key_len, &block_entry(key_len))
            .expect("insert the target block");
        for (a, l) in rest {
            maps.insert_block(&a, l, &block_entry(l))
                .unwrap_or_else(|e| panic!("inserting filler block: {e:#}"));
        }
        let insert_secs = started.elapsed().as_secs_f64();
        // Every part of the blocklist: both hash maps and the LPM trie.
        let blocklist_bytes = {
            let ids = maps.blocklist_map_ids();
            let mine = super::sys::maps_of_pid(std::process::id());
            let found: Vec<u64> = mine
                .iter()
                .filter(|m| ids.contains(&Some(m.map_id)))
                .map(|m| m.memlock)
                .collect();
            (found.len() == 3).then(|| found.iter().sum())
        };
        Self {
            ebpf,
            maps,
            entries,
            insert_secs,
            blocklist_bytes,
        }
    }

    pub fn prog(&self) -> &Xdp {
        scan_guard_prog(&self.ebpf)
    }

    pub fn prog_mut(&mut self) -> &mut Xdp {
        loader::program(&mut self.ebpf).expect("scan-guard program")
    }
}

/// The single-run measurement of the new-source path.
#[derive(Debug, Clone)]
pub struct NewSourceCost {
    pub sources: u32,
    /// Mean ns of one run with a never-seen source (timer overhead included).
    pub single_run_new: f64,
    /// Mean ns of one run of a SYN from an already tracked source, measured the
    /// same way, interleaved (same code path apart from what is new).
    pub single_run_tracked: f64,
    /// Mean ns of one run of the empty program, measured the same way.
    pub single_run_empty: f64,
    pub verdict: u32,
}

impl NewSourceCost {
    /// The estimate comparable with the repeat-mode rows: the tracked-source SYN's
    /// repeat-mode cost plus what a new source adds over it when both run one at a
    /// time (single runs carry timer and cold-cache overhead that cancels out in the
    /// difference).
    pub fn corrected(&self, tracked_repeat: f64) -> f64 {
        tracked_repeat + (self.single_run_new - self.single_run_tracked)
    }
}

/// One run per distinct source (`sources` of them) for scan-guard and, interleaved,
/// one run of a tracked source's SYN and one of the empty program.
pub fn new_source_cost(sg: &Xdp, empty: &Xdp, sources: u32) -> NewSourceCost {
    let sources = sources.max(10);
    let (mut new_total, mut tracked_total, mut floor_total) = (0.0, 0.0, 0.0);
    let mut verdict = 0;
    let mut frame = Pkt::tcp("10.100.0.0", "10.50.0.1", 80, 0x02).build();
    let tracked = Pkt::tcp("10.50.0.4", "10.50.0.1", 80, 0x02).build();
    repeat_cost(sg, &tracked, 1);
    // IPv4 source address bytes: Ethernet 14 + 12.
    for i in 0..sources {
        let src = [10, 100 + ((i >> 16) % 100) as u8, (i >> 8) as u8, i as u8];
        frame[26..30].copy_from_slice(&src);
        let (v, ns) = repeat_cost(sg, &frame, 1);
        verdict = v;
        new_total += ns;
        tracked_total += repeat_cost(sg, &tracked, 1).1;
        floor_total += repeat_cost(empty, &frame, 1).1;
    }
    let n = f64::from(sources);
    NewSourceCost {
        sources,
        single_run_new: new_total / n,
        single_run_tracked: tracked_total / n,
        single_run_empty: floor_total / n,
        verdict,
    }
}

/// The paths of the main scan-guard instance (empty blocklist, ports 80/443 TCP and
/// 53 UDP listening): name and frame.
pub fn main_paths() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "established_ack",
            Pkt::tcp("10.50.0.3", "10.50.0.1", 80, 0x10).build(),
        ),
        (
            "syn_tracked_source",
            Pkt::tcp("10.50.0.4", "10.50.0.1", 80, 0x02).build(),
        ),
        (
            "invalid_flags_xmas",
            Pkt::tcp("10.50.0.5", "10.50.0.1", 80, 0x29).build(),
        ),
        (
            "udp_closed_port",
            Pkt::udp("10.50.0.6", "10.50.0.1", 161).build(),
        ),
        (
            "udp_listening_port",
            Pkt::udp("10.50.0.8", "10.50.0.1", 53).build(),
        ),
        (
            "ipv6_ext_header_syn",
            Pkt::tcp("2001:db8::6", "2001:db8::1", 80, 0x02)
                .ipv6_ext(&[EXT_HOP_BY_HOP])
                .build(),
        ),
        (
            "vlan_syn",
            Pkt::tcp("10.50.0.7", "10.50.0.1", 80, 0x02)
                .vlans(&[ETH_P_8021Q])
                .build(),
        ),
    ]
}

/// The source blocked by an exact (/32) entry, and one inside the blocked prefix.
pub const BLOCKED_EXACT: ([u8; 4], u32) = ([10, 60, 0, 9], 32);
pub const BLOCKED_PREFIX: ([u8; 4], u32) = ([10, 61, 0, 0], 16);
pub const BLOCKED_EXACT_SRC: &str = "10.60.0.9";
/// A blocked host in the /16 of the established-flow client (`10.50.0.3`).
pub const ESTABLISHED_NEIGHBOUR: [u8; 4] = [10, 50, 0, 250];
pub const BLOCKED_PREFIX_SRC: &str = "10.61.3.4";

/// The IPv6 source blocked by an exact (/128) entry, and a /40 in the LPM
/// trie (neither the source nor the aggregate prefix length) with a source
/// inside it.
pub const BLOCKED_EXACT_V6: (&str, u32) = ("2001:db8:60::9", 128);
pub const BLOCKED_PREFIX_V6: (&str, u32) = ("2001:db8:6100::", 40);
pub const BLOCKED_PREFIX_V6_SRC: &str = "2001:db8:6100:0:3::4";

/// A SYN from the IPv6 `src` to the benchmark's protected IPv6 address.
pub fn syn6_from(src: &str) -> Vec<u8> {
    Pkt::tcp(src, "2001:db8::1", 80, 0x02).build()
}

/// A SYN from `src` to the benchmark's protected address.
pub fn syn_from(src: &str) -> Vec<u8> {
    Pkt::tcp(src, "10.50.0.1", 80, 0x02).build()
}

/// Everything `measure_all` reports.
#[derive(Debug, Clone)]
pub struct CostReport {
    pub rows: Vec<PathCost>,
    pub new_source: NewSourceCost,
    /// (entries, seconds to insert them, BLOCKLIST memory) per instance built.
    pub inserts: Vec<(u32, f64, Option<u64>)>,
    /// Auto-blocks the main instance made during measuring (should be 0: a path
    /// turning into the blocked path halfway would spoil its row).
    pub auto_blocks: u64,
    /// Named kernel counters read after measuring (verdict cache hits and
    /// misses, what the random-source flood did).
    pub counters: Vec<(String, u64)>,
    /// Instructions the kernel's verifier processed to load scan-guard (its
    /// limit is 1,000,000: the room every new path has to fit in).
    pub verified_insns: Option<u32>,
}

/// Instructions the kernel's verifier processed to load the scan-guard
/// program of `ebpf`.
pub fn verified_instructions(ebpf: &Ebpf) -> Option<u32> {
    scan_guard_prog(ebpf)
        .info()
        .ok()?
        .verified_instruction_count()
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct CostPlan {
    pub repeat: u32,
    pub rounds: u32,
    pub new_sources: u32,
    pub block_sizes: Vec<u32>,
}

/// Measures every path: the main instance's paths with `extra` (other programs,
/// e.g. xdp-filter) and the empty program round-robin; then, per blocklist size,
/// the blocked paths (exact and prefix, one instance each holding exactly that
/// many entries), an established ACK through the same list and whatever
/// `extra_for_size(entries)` returns (e.g. another filter with a list of that
/// size), with the empty program again; finally the new-source path.
pub fn measure_all<'a>(
    plan: &CostPlan,
    extra: &[Case<'a>],
    extra_for_size: &mut dyn FnMut(u32) -> Vec<Case<'a>>,
) -> CostReport {
    let base = baseline();
    let empty = baseline_prog(&base);
    let mut h = Harness::new(KernelConfig::default());
    h.set_listening(&[80, 443], &[53]);
    let paths = main_paths();
    let sg = scan_guard_prog(&h.ebpf);
    let refs = bench_programs();

    let mut empty_samples = Vec::new();
    let mut rows = Vec::new();
    let empty_case = |frame: Vec<u8>| Case {
        name: EMPTY_PASS.into(),
        group: "baseline",
        entries: None,
        prog: empty,
        frame,
    };
    {
        let mut cases = vec![empty_case(syn_from("10.50.0.2"))];
        for (name, frame) in &paths {
            cases.push(Case {
                name: (*name).into(),
                group: "scan-guard",
                entries: Some(0),
                prog: sg,
                frame: frame.clone(),
            });
        }
        for (name, prog) in [
            (REFERENCE_SOURCE_DROP, REF_SOURCE_DROP),
            (REFERENCE_LOOKUP_DROP, REF_LOOKUP_DROP),
        ] {
            cases.push(Case {
                name: name.into(),
                group: "reference",
                entries: Some(1),
                prog: xdp_prog(&refs, prog),
                frame: syn_from(BLOCKED_EXACT_SRC),
            });
        }
        cases.extend(extra.iter().map(|c| Case {
            name: c.name.clone(),
            group: c.group,
            entries: c.entries,
            prog: c.prog,
            frame: c.frame.clone(),
        }));
        let samples = sample_cases(&cases, plan.repeat, plan.rounds);
        empty_samples.extend_from_slice(&samples[0].0);
        for (c, (s, v)) in cases.iter().zip(&samples).skip(1) {
            rows.push(summarise(c, s, *v));
        }
    }
    let auto_blocks = h.stats()[scan_guard_common::stats::Stat::AutoBlocks as usize];

    let mut inserts = Vec::new();
    let mut counters = Vec::new();
    for (i, &n) in plan.block_sizes.iter().enumerate() {
        let exact = BlockInstance::new(n, BLOCKED_EXACT, 1 + i as u64);
        let prefix = BlockInstance::new(n, BLOCKED_PREFIX, 101 + i as u64);
        let exact6 = BlockInstance::new_v6(n, BLOCKED_EXACT_V6, 201 + i as u64);
        let prefix6 = BlockInstance::new_v6(n, BLOCKED_PREFIX_V6, 301 + i as u64);
        for b in [&exact, &prefix] {
            inserts.push((b.entries, b.insert_secs, b.blocklist_bytes));
        }
        let mut cases = vec![
            empty_case(syn_from("10.50.0.2")),
            Case {
                name: format!("blocked_exact ({})", entries_label(n)),
                group: "scan-guard",
                entries: Some(n),
                prog: exact.prog(),
                frame: syn_from(BLOCKED_EXACT_SRC),
            },
            Case {
                name: format!("blocked_prefix ({})", entries_label(n)),
                group: "scan-guard",
                entries: Some(n),
                prog: prefix.prog(),
                frame: syn_from(BLOCKED_PREFIX_SRC),
            },
            Case {
                name: format!("established_ack ({})", entries_label(n)),
                group: "scan-guard",
                entries: Some(n),
                prog: exact.prog(),
                frame: Pkt::tcp("10.50.0.3", "10.50.0.1", 80, 0x10).build(),
            },
            Case {
                name: format!("blocked_exact_v6 ({})", entries_label(n)),
                group: "scan-guard",
                entries: Some(n),
                prog: exact6.prog(),
                frame: syn6_from(BLOCKED_EXACT_V6.0),
            },
            Case {
                name: format!("blocked_prefix_v6 ({})", entries_label(n)),
                group: "scan-guard",
                entries: Some(n),
                prog: prefix6.prog(),
                frame: syn6_from(BLOCKED_PREFIX_V6_SRC),
            },
        ];
        cases.extend(extra_for_size(n));
        let samples = sample_cases(&cases, plan.repeat, plan.rounds);
        empty_samples.extend_from_slice(&samples[0].0);
        for (c, (s, v)) in cases.iter().zip(&samples).skip(1) {
            rows.push(summarise(c, s, *v));
        }
        for (b, what) in [
            (&exact, "blocked_exact"),
            (&prefix, "blocked_prefix"),
            (&exact6, "blocked_exact_v6"),
            (&prefix6, "blocked_prefix_v6"),
        ] {
            if let Ok(st) = b.maps.stats_total() {
                counters.push((
                    format!("{what} ({}): verdict cache hits", entries_label(n)),
                    st[Stat::VerdictCacheHits as usize],
                ));
                counters.push((
                    format!("{what} ({}): verdict cache misses", entries_label(n)),
                    st[Stat::VerdictCacheMisses as usize],
                ));
            }
        }
    }

    let (random_rows, flood_stats) = random_source_rows(sg, empty, plan, &mut empty_samples);
    rows.extend(random_rows);
    // The verdict cache's counters of the main instance's blocked rows, and
    // what the budgeted instance did with the random-source flood.
    for (stat, name) in [
        (
            Stat::AdmittedUntracked,
            "random-source flood: admitted untracked (listening port)",
        ),
        (
            Stat::OverBudget,
            "random-source flood: over the new-source budget",
        ),
        (Stat::NewSources, "random-source flood: states allocated"),
        (
            Stat::Contacts,
            "random-source flood: first contacts reported",
        ),
        (
            Stat::ContactsLost,
            "random-source flood: first contacts lost (ring full)",
        ),
    ] {
        counters.push((name.to_string(), flood_stats[stat as usize]));
    }
    let new_source = new_source_cost(sg, empty, plan.new_sources);
    let empty_row = summarise(&empty_case(Vec::new()), &empty_samples, 2);
    rows.insert(0, empty_row);
    CostReport {
        rows,
        new_source,
        inserts,
        auto_blocks,
        counters,
        verified_insns: verified_instructions(&h.ebpf),
    }
}

/// Row names of the reference programs and the random-source stage.
pub const REFERENCE_SOURCE_DROP: &str = "reference: read source + drop";
pub const REFERENCE_LOOKUP_DROP: &str = "reference: read source + one hash lookup + drop";
pub const DRIVER_EMPTY: &str = "random-source driver -> empty program";
pub const NEW_SOURCE_LISTENING: &str = "syn_new_source_listening_port";
pub const NEW_SOURCE_CLOSED: &str = "first_probe_new_source_closed_port";
pub const NEW_SOURCE_CLOSED_TRACKED: &str =
    "first_probe_new_source_closed_port (within budget: state allocated)";

/// Every run a new source (the random-source driver tail-calling the program
/// under test): an OS-stack SYN to a listening port and a SYN to a closed
/// port, round-robin with the driver tail-calling the empty program and the
/// empty program itself. A scan-guard row is the driver run minus the
/// driver's own cost (driver -> empty, minus empty), so it is comparable with
/// the repeat-mode rows; the driver's row is its raw cost.
fn random_source_rows(
    sg: &Xdp,
    empty: &Xdp,
    plan: &CostPlan,
    empty_samples: &mut Vec<f64>,
) -> (Vec<PathCost>, StatBlock) {
    // The shipped new-source budget: a flood of first probes runs past it
    // within a few packets per window, as it does on a host under flood.
    let product = scan_guard::config::Config::default().kernel_config(32_768, 0);
    let mut budgeted = Harness::new(KernelConfig {
        new_source_budget: product.new_source_budget,
        ..KernelConfig::default()
    });
    budgeted.set_listening(&[80, 443], &[53]);
    let to_empty = random_source_driver(empty);
    let to_sg = random_source_driver(sg);
    let to_budgeted = random_source_driver(scan_guard_prog(&budgeted.ebpf));
    let listening = Pkt::tcp("10.128.0.1", "10.50.0.1", 80, 0x02)
        .os_options()
        .build();
    let closed = Pkt::tcp("10.128.0.1", "10.50.0.1", 81, 0x02).build();
    let case = |name: &str, group, prog, frame: &Vec<u8>| Case {
        name: name.into(),
        group,
        entries: (group == "scan-guard").then_some(0),
        prog,
        frame: frame.clone(),
    };
    let cases = vec![
        case(EMPTY_PASS, "baseline", empty, &listening),
        case(
            DRIVER_EMPTY,
            "driver",
            xdp_prog(&to_empty, RANDOM_SOURCE_DRIVER),
            &listening,
        ),
        case(
            NEW_SOURCE_LISTENING,
            "scan-guard",
            xdp_prog(&to_budgeted, RANDOM_SOURCE_DRIVER),
            &listening,
        ),
        case(
            NEW_SOURCE_CLOSED,
            "scan-guard",
            xdp_prog(&to_budgeted, RANDOM_SOURCE_DRIVER),
            &closed,
        ),
        case(
            NEW_SOURCE_CLOSED_TRACKED,
            "scan-guard",
            xdp_prog(&to_sg, RANDOM_SOURCE_DRIVER),
            &closed,
        ),
    ];
    let samples = sample_cases(&cases, plan.repeat, plan.rounds);
    empty_samples.extend_from_slice(&samples[0].0);
    let empty_median = median(&samples[0].0);
    let driver_cost = median(&samples[1].0) - empty_median;
    let mut rows = vec![summarise(&cases[1], &samples[1].0, samples[1].1)];
    for (c, (s, v)) in cases.iter().zip(&samples).skip(2) {
        let net: Vec<f64> = s.iter().map(|x| x - driver_cost).collect();
        rows.push(summarise(c, &net, *v));
    }
    (rows, budgeted.stats())
}

/// The simple form used by `per-packet-cost`: every path with `repeat` runs, three
/// rounds, blocklists of 1 and 10 000 entries.
pub fn measure(repeat: u32) -> Vec<PathCost> {
    let plan = CostPlan {
        repeat,
        rounds: 3,
        new_sources: (repeat / 100).max(100),
        block_sizes: vec![1, 10_000],
    };
    measure_all(&plan, &[], &mut |_| Vec::new()).rows
}

/// True for a drop verdict.
pub fn is_drop(verdict: u32) -> bool {
    verdict == XDP_DROP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_counts_read_naturally() {
        assert_eq!(entries_label(1), "1 entry");
        assert_eq!(entries_label(100), "100 entries");
        assert_eq!(entries_label(10_000), "10k entries");
        assert_eq!(entries_label(1_000_000), "1M entries");
    }

    #[test]
    fn fillers_are_distinct_and_stay_out_of_the_benchmark_ranges() {
        let f = filler_v4(5_000, 3);
        let distinct: HashSet<_> = f.iter().collect();
        assert_eq!(distinct.len(), 5_000);
        assert!(f.iter().all(|(a, _)| a[0] != 10 && a[0] != 0 && a[0] < 224));
        assert!(f.iter().all(|(a, p)| *p == 32 || (*p == 24 && a[3] == 0)));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
