//! Differential fuzzing: random and mutated frames through the real program
//! (BPF_PROG_TEST_RUN) and through the reference model; verdicts, counters,
//! events and the resulting blocklist must agree.
//!
//! `SCAN_GUARD_FUZZ_FRAMES` sets the number of frames (default 1,000,000);
//! `SCAN_GUARD_FUZZ_SEED` the seed (printed on failure to replay it).

use std::collections::HashSet;

use scan_guard::base::clock::monotonic_ns;
use scan_guard_common::{
    addr::{Addr, mask},
    config::{KernelConfig, POLICY_AUTO_BLOCK, POLICY_LOCAL_ONLY, POLICY_STEALTH},
    flags::InvalidClass,
    state::{BlockEntry, BlockOrigin, KIND_NONE},
    stats::{NAMED, STAT_COUNT, Stat},
};
use scan_guard_tests::{
    harness::{Harness, addr, family_prefix},
    model::Model,
    packet::{ETH_P_8021AD, ETH_P_8021Q, Frag, L4, Pkt},
};

/// xorshift64*: small, deterministic, good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const PORTS: [u16; 16] = [
    0, 1, 21, 22, 23, 25, 53, 80, 123, 161, 443, 1023, 1024, 8080, 32767, 40000,
];
const EXT: [u8; 5] = [0, 43, 44, 60, 59];

fn source_pool() -> Vec<String> {
    // Enough sources that crossings (and so events and auto-blocks) keep happening
    // through the whole run instead of every source ending up blocked early.
    let mut v: Vec<String> = (0..2048)
        .map(|i| format!("10.77.{}.{}", i / 256, i % 256))
        .collect();
    v.extend((0..512).map(|i| format!("2001:db8:77:{}::{}", i % 4, i + 1)));
    v.extend((1..=16).map(|i| format!("::ffff:10.77.9.{i}")));
    v.push("192.0.2.5".into()); // allowlisted
    v.push("198.51.100.9".into()); // protected
    v.push("203.0.113.7".into()); // blocked (exact)
    v.push("203.0.114.7".into()); // blocked (prefix)
    v.push("203.0.115.7".into()); // expired block
    v
}

fn random_frame(rng: &mut Rng, pool: &[String]) -> Vec<u8> {
    let src = rng.pick(pool).clone();
    let v6 = src.contains(':') && !src.starts_with("::ffff:");
    let dst = if v6 || src.starts_with("::ffff:") {
        format!("2001:db8::{}", 1 + rng.below(12))
    } else {
        format!("10.78.0.{}", 1 + rng.below(12))
    };
    let port = if rng.chance(70) {
        *rng.pick(&PORTS)
    } else {
        rng.below(65536) as u16
    };
    let l4 = match rng.below(10) {
        0..=5 => L4::Tcp {
            sport: 40000,
            dport: port,
            flags: rng.next() as u8,
        },
        6 | 7 => L4::Udp {
            sport: 40000,
            dport: port,
        },
        8 => L4::IcmpEcho,
        _ => L4::Other(*rng.pick(&[1u8, 58, 47, 132, 6, 17])),
    };
    let mut p = Pkt::new(&src, &dst, l4);
    if rng.chance(20) {
        let n = rng.below(4) as usize;
        p.vlans = (0..n)
            .map(|_| *rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]))
            .collect();
    }
    if !v6 && rng.chance(15) {
        p.ipv4_options = rng.below(41) as usize;
    }
    if v6 && rng.chance(30) {
        let n = rng.below(8) as usize;
        p.ipv6_ext = (0..n).map(|_| *rng.pick(&EXT)).collect();
    }
    if rng.chance(8) {
        p.frag = *rng.pick(&[Frag::First, Frag::Later]);
    }
    p.payload = rng.below(64) as usize;
    let mut f = p.build();
    if rng.chance(10) {
        let n = 14 + rng.below(f.len() as u64 - 13) as usize;
        f.truncate(n);
    }
    if rng.chance(10) {
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(f.len() as u64) as usize;
            f[i] = rng.next() as u8;
        }
    }
    if rng.chance(5) {
        // Make a TCP header look like a connect() SYN (data offset 10).
        if let Some(b) = f.get_mut(14 + 20 + 12) {
            *b = 0xa0;
        }
    }
    f
}

fn block_entry(expires_ns: u64, prefix_len: u32) -> BlockEntry {
    BlockEntry {
        expires_ns,
        created_ns: 0,
        hits: 0,
        prefix_len,
        origin: BlockOrigin::Manual as u8,
        kind: KIND_NONE,
        _pad: [0; 2],
    }
}

fn setup(cfg: KernelConfig) -> (Harness, Model) {
    let mut h = Harness::new(cfg);
    let mut m = Model::new(cfg);
    let tcp = [22u16, 80, 443];
    let udp = [53u16, 123];
    h.set_listening(&tcp, &udp);
    m.tcp_listening = tcp.to_vec();
    m.udp_listening = udp.to_vec();
    // Half the destinations are the host's own: under POLICY_LOCAL_ONLY the rest
    // (another host's, as a router forwards them) must never count.
    let local: Vec<Addr> = (1..=6)
        .flat_map(|i| {
            [
                addr(&format!("10.78.0.{i}")),
                addr(&format!("2001:db8::{i}")),
            ]
        })
        .collect();
    h.maps.write_local(&local).expect("write local addresses");
    m.local = local.into_iter().collect();
    // Sources are scored per /64 in one configuration: one of the pool's four
    // IPv6 /64s holds an address judged alone and stays per address.
    let alone = vec![mask(&addr("2001:db8:77:3::"), 64)];
    h.maps
        .write_no_aggregate(&alone)
        .expect("write no-aggregate");
    m.no_aggregate = alone.into_iter().collect();
    h.allow("192.0.2.0", 24);
    m.allow.push((mask(&addr("192.0.2.0"), 120), 120));
    h.protect("198.51.100.0", 24);
    m.protected.push((mask(&addr("198.51.100.0"), 120), 120));
    let far = monotonic_ns() + 3_600_000_000_000;
    for (text, plen, expires) in [
        ("203.0.113.7", 32, far),
        ("203.0.114.0", 24, 0),
        ("203.0.115.7", 32, 1),
    ] {
        let plen = family_prefix(text, plen);
        let a: Addr = mask(&addr(text), plen);
        h.maps
            .insert_block(&a, plen, &block_entry(expires, plen))
            .expect("insert block");
        m.blocks.insert((a, plen), block_entry(expires, plen));
    }
    (h, m)
}

fn stat_name(i: usize) -> String {
    NAMED.iter().find(|(s, _)| *s as usize == i).map_or_else(
        || {
            let class = InvalidClass::ALL
                .iter()
                .find(|c| Stat::dropped_invalid(**c) == i || Stat::counted_invalid(**c) == i);
            format!("invalid class slot {i} ({class:?})")
        },
        |(_, n)| (*n).to_string(),
    )
}

fn run_differential(cfg: KernelConfig, frames: u64, seed: u64) {
    let (mut h, mut m) = setup(cfg);
    let pool = source_pool();
    let mut rng = Rng(seed | 1);
    let mut expected = [0u64; STAT_COUNT];
    let mut events = 0usize;
    let mut kernel_events = 0usize;
    let mut last_frame = Vec::new();
    for n in 0..frames {
        // Keep both ring buffers drained, as the controller does, so nothing is lost.
        if n % 512 == 0 {
            kernel_events += h.drain_events().len();
            h.drain_contacts();
        }
        let f = random_frame(&mut rng, &pool);
        let got = h.run(&f);
        let want = m.step(&f, monotonic_ns());
        assert_eq!(
            got, want.verdict,
            "seed {seed}, frame {n}: verdict differs for {f:02x?}"
        );
        for (e, d) in expected.iter_mut().zip(want.stats.iter()) {
            *e += d;
        }
        events += usize::from(want.event.is_some());
        if n % 50_000 == 0 || n + 1 == frames {
            let got = h.stats();
            for i in 0..STAT_COUNT {
                // Which drops the per-CPU verdict cache decides depends on slot
                // collisions, not on the rules: compared as a sum below.
                if i == Stat::VerdictCacheHits as usize || i == Stat::VerdictCacheMisses as usize {
                    continue;
                }
                assert_eq!(
                    got[i],
                    expected[i],
                    "seed {seed}, after frame {n}: counter {} differs",
                    stat_name(i)
                );
            }
        }
        last_frame = f;
    }
    kernel_events += h.drain_events().len();
    assert_eq!(
        kernel_events, events,
        "seed {seed}: event count (last frame {last_frame:02x?})"
    );
    // Repeat offenders are dropped by the verdict cache, not by a map lookup
    // each (the verdicts themselves were compared frame by frame above).
    if expected[Stat::DroppedBlocked as usize] > 10_000 {
        assert!(
            h.stats()[Stat::VerdictCacheHits as usize] > 0,
            "seed {seed}: {} blocked drops, none decided by the verdict cache",
            expected[Stat::DroppedBlocked as usize]
        );
    }
    let kernel_blocks: HashSet<(Addr, u32)> = h
        .maps
        .blocks()
        .expect("blocks")
        .into_iter()
        .map(|(a, l, _)| (a, l))
        .collect();
    let model_blocks: HashSet<(Addr, u32)> = m.blocks.keys().copied().collect();
    assert_eq!(
        kernel_blocks, model_blocks,
        "seed {seed}: blocklists differ"
    );
    for (a, st) in &m.sources {
        let k = h.maps.source(a).expect("source tracked in the kernel too");
        assert_eq!(
            (k.probes, k.score, k.distinct_ports, k.distinct_addrs),
            (st.probes, st.score, st.distinct_ports, st.distinct_addrs),
            "seed {seed}: source state"
        );
    }
    eprintln!(
        "differential: {frames} frames, seed {seed}, {events} events, {} blocks, {} sources: identical",
        model_blocks.len(),
        m.sources.len()
    );
}

fn frames() -> u64 {
    std::env::var("SCAN_GUARD_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn seed(default: u64) -> u64 {
    std::env::var("SCAN_GUARD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz_cfg(policy: u32, drop_mask: u32) -> KernelConfig {
    KernelConfig {
        // One long window and no rate cap: both depend on wall time, which the model
        // and the kernel would observe a few microseconds apart.
        window_ns: 3_600_000_000_000,
        max_auto_blocks_per_sec: 0,
        sketch_key: 0x9d2c_5680,
        policy,
        invalid_drop_mask: drop_mask,
        ..KernelConfig::default()
    }
}

#[test]
fn kernel_matches_model_with_default_policy() {
    let n = frames() * 3 / 4;
    run_differential(fuzz_cfg(POLICY_AUTO_BLOCK, 0x3f), n, seed(0x5ca9_6a4d));
}

#[test]
fn kernel_matches_model_with_stealth_and_count_only_classes() {
    let n = frames() / 8;
    run_differential(
        fuzz_cfg(
            POLICY_AUTO_BLOCK | POLICY_STEALTH | POLICY_LOCAL_ONLY,
            0b010101,
        ),
        n,
        seed(0xdecafbad),
    );
}

#[test]
fn kernel_matches_model_scoring_only_the_hosts_own_addresses() {
    let n = frames() / 8;
    run_differential(
        fuzz_cfg(POLICY_AUTO_BLOCK | POLICY_LOCAL_ONLY, 0x3f),
        n,
        seed(0x10ca_1d57),
    );
}

#[test]
fn kernel_matches_model_scoring_ipv6_per_64_and_ipv4_per_24() {
    let n = frames() / 8;
    let cfg = KernelConfig {
        v6_source_prefix: 64,
        v4_source_prefix: 24,
        ..fuzz_cfg(POLICY_AUTO_BLOCK | POLICY_LOCAL_ONLY, 0x3f)
    };
    run_differential(cfg, n, seed(0x64_2464));
}

#[test]
fn kernel_matches_model_in_dry_run() {
    // No auto-block: every source keeps being tracked, scored and reported.
    let n = frames() / 8;
    run_differential(fuzz_cfg(0, 0x3f), n, seed(0x0ddba11));
}
