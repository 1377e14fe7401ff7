//! A scan spoofed from a million sources, against the real XDP program through
//! BPF_PROG_TEST_RUN (no interface, no packet leaves the test): one SYN to a closed
//! privileged port from each of 1,000,000 distinct addresses, each enough to cross
//! the (lowered) score threshold, interleaved with a legitimate client and with
//! scans spoofed from the never-block set the controller computes (gateways from
//! the route tables, resolvers from resolv.conf, the host's own address: parsed
//! here by the controller's own functions from lab-made texts) and from an
//! allowlisted prefix.
//!
//! - Rate cap: with `max_auto_blocks_per_sec` = 1000 the kernel never blocks faster
//!   than its per-second budget: replaying its sliding one-second window over the
//!   crossings' own timestamps predicts exactly which crossing was blocked and which
//!   was `suppressed` (`block_rate_cap`), and the blocklist holds exactly the blocked
//!   ones.
//! - Size cap: with the blocklist sized to 1000 entries (as `blocking.max_blocks`
//!   sizes it) and no rate cap, exactly the first 1000 crossings are blocked, every
//!   later one is `suppressed` (`blocklist_full`) and counted as
//!   `auto_block_failed`; the blocklist never holds more than 1000 entries.
//! - In both: protected sources are reported (`never_block`) and never blocked,
//!   allowlisted ones are neither reported nor blocked, and every frame of the
//!   legitimate client passes.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use scan_guard::{base::cidr::Cidr, enforce::neverblock};
use scan_guard_common::{
    addr::{Addr, from_v4},
    config::{KernelConfig, POLICY_AUTO_BLOCK},
    event::Suppression,
    stats::Stat,
};
use scan_guard_tests::{
    hardening::{ACK, SYN, harness_with_max_blocks, max_in_window, tcp_frame},
    harness::{Harness, XDP_PASS},
    is_root,
};

const SOURCES: u32 = 1_000_000;
/// Drain the event ring this often (it holds ~1900 events; at most one per frame).
const DRAIN_EVERY: u32 = 1000;

fn cfg(rate: u32) -> KernelConfig {
    KernelConfig {
        // One closed privileged port (2 + 2) crosses; an open one (2) does not.
        score_threshold: 4,
        sweep_threshold: 0,
        max_auto_blocks_per_sec: rate,
        policy: POLICY_AUTO_BLOCK,
        ..KernelConfig::DEFAULT
    }
}

/// The never-block set as the controller computes it, from lab-made system files
/// parsed by the controller's own functions, plus the host address.
fn protected_sources() -> Vec<IpAddr> {
    let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    let route6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
    let resolv = "nameserver 10.0.0.53\nnameserver 2001:db8:53::53\n";
    let mut v = neverblock::gateways_v4(route);
    v.extend(neverblock::gateways_v6(route6));
    v.extend(neverblock::resolvers(resolv));
    v.push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))); // the host itself
    assert_eq!(v.len(), 5, "parsed never-block sources: {v:?}");
    v
}

const ALLOWED: &str = "198.51.100.7";
const LEGIT: &str = "203.0.113.50";

struct Run {
    /// (ts_ns, blocked, suppressed) of every crossing from a spoofed source, in ring order.
    crossings: Vec<(u64, bool, u8)>,
    protected_events: Vec<(Addr, bool, u8)>,
    other_events: Vec<(Addr, bool, u8)>,
    legit_dropped: u32,
    protected_dropped: u32,
    allowed_dropped: u32,
    secs: f64,
}

fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => from_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn setup(h: &mut Harness) {
    h.set_listening(&[80], &[]);
    let mut never: Vec<Cidr> = protected_sources().into_iter().map(Cidr::host).collect();
    never.extend(neverblock::automatic());
    never.sort();
    never.dedup();
    let keys: Vec<(Addr, u32)> = never.iter().map(|c| (c.addr, c.prefix_len)).collect();
    h.maps.write_protected(&keys).expect("write protected");
    h.allow("198.51.100.0", 24);
}

/// The flood: one SYN to port 23 from each of SOURCES addresses in 10.0.0.0/8 above
/// 10.16.0.0 (clear of the protected ones), with the others interleaved.
fn flood(h: &mut Harness) -> Run {
    let protected = protected_sources();
    let protected_addrs: Vec<Addr> = protected.iter().map(|a| addr_of(*a)).collect();
    let host: IpAddr = "10.0.0.2".parse().expect("addr");
    let host6: IpAddr = "2001:db8:53::2".parse().expect("addr");
    let mut frame = tcp_frame("10.16.0.0".parse().expect("addr"), host, 23, SYN);
    let legit_syn = tcp_frame(LEGIT.parse().expect("addr"), host, 80, SYN);
    let legit_ack = tcp_frame(LEGIT.parse().expect("addr"), host, 80, ACK);
    let mut run = Run {
        crossings: Vec::new(),
        protected_events: Vec::new(),
        other_events: Vec::new(),
        legit_dropped: 0,
        protected_dropped: 0,
        allowed_dropped: 0,
        secs: 0.0,
    };
    let drain = |h: &mut Harness, run: &mut Run| {
        for e in h.drain_events() {
            let rec = (e.src, e.blocked != 0, e.suppressed);
            if protected_addrs.contains(&e.src) {
                run.protected_events.push(rec);
            } else if e.src[..12] == from_v4([0; 4])[..12] && e.src[12] == 10 {
                run.crossings.push((e.ts_ns, e.blocked != 0, e.suppressed));
            } else {
                run.other_events.push(rec);
            }
        }
    };
    let base = u32::from(Ipv4Addr::new(10, 16, 0, 0));
    let t0 = Instant::now();
    for i in 0..SOURCES {
        frame[26..30].copy_from_slice(&(base + i).to_be_bytes());
        h.run(&frame);
        if i % DRAIN_EVERY == 0 {
            drain(h, &mut run);
        }
        if i % 997 == 0 {
            for f in [&legit_syn, &legit_ack] {
                if h.run(f) != XDP_PASS {
                    run.legit_dropped += 1;
                }
            }
        }
        if i % 100_000 == 0 {
            for src in &protected {
                let dst = if src.is_ipv4() { host } else { host6 };
                for port in 1..=8u16 {
                    if h.run(&tcp_frame(*src, dst, port, SYN)) != XDP_PASS {
                        run.protected_dropped += 1;
                    }
                }
            }
            for port in 1..=8u16 {
                let f = tcp_frame(ALLOWED.parse().expect("addr"), host, port, SYN);
                if h.run(&f) != XDP_PASS {
                    run.allowed_dropped += 1;
                }
            }
            drain(h, &mut run);
        }
    }
    drain(h, &mut run);
    run.secs = t0.elapsed().as_secs_f64();
    run
}

/// Checks shared by both caps.
fn common_checks(what: &str, h: &Harness, run: &Run) {
    let s = h.stats();
    assert_eq!(
        s[Stat::EventsLost as usize],
        0,
        "{what}: events lost, the replay below would be blind"
    );
    assert_eq!(
        run.crossings.len(),
        SOURCES as usize,
        "{what}: every spoofed source crosses once"
    );
    assert_eq!(run.legit_dropped, 0, "{what}: legitimate frames dropped");
    assert_eq!(
        run.protected_dropped, 0,
        "{what}: frames from protected sources dropped"
    );
    assert_eq!(
        run.allowed_dropped, 0,
        "{what}: frames from the allowlisted source dropped"
    );
    assert!(
        !run.protected_events.is_empty()
            && run
                .protected_events
                .iter()
                .all(|(_, b, sup)| !b && *sup == Suppression::Protected as u8),
        "{what}: protected sources must be reported as never_block and never blocked: {:?}",
        run.protected_events
    );
    assert!(
        run.other_events.is_empty(),
        "{what}: events about the legitimate or allowlisted source: {:?}",
        run.other_events
    );
    let blocks = h.maps.blocks().expect("blocklist");
    let blocked = run.crossings.iter().filter(|c| c.1).count();
    assert_eq!(
        blocks.len(),
        blocked,
        "{what}: blocklist entries vs blocked crossings"
    );
    for (a, _, _) in &blocks {
        let ip = std::net::Ipv6Addr::from(*a);
        let v4 = ip.to_ipv4_mapped().expect("IPv4 sources only");
        assert!(
            v4.octets()[0] == 10 && v4 >= Ipv4Addr::new(10, 16, 0, 0),
            "{what}: blocked a source outside the spoofed range: {v4}"
        );
    }
    assert!(
        s[Stat::Allowlisted as usize] >= 8,
        "{what}: allowlisted frames not counted"
    );
}

#[test]
fn kernel_rate_cap_holds_against_a_million_spoofed_sources() {
    assert!(is_root(), "BPF_PROG_TEST_RUN needs root");
    const RATE: u32 = 1000;
    let mut h = Harness::new(cfg(RATE));
    setup(&mut h);
    let run = flood(&mut h);
    common_checks("rate cap", &h, &run);

    // Replay the kernel's limiter: a crossing is blocked when fewer than RATE
    // blocks started in the second before it (a sliding second, not a fixed one).
    let mut recent: std::collections::VecDeque<u64> = Default::default();
    let mut mismatches = Vec::new();
    for (n, &(ts, blocked, sup)) in run.crossings.iter().enumerate() {
        while recent
            .front()
            .is_some_and(|&t| ts.saturating_sub(t) >= 1_000_000_000)
        {
            recent.pop_front();
        }
        let want_blocked = recent.len() < RATE as usize;
        if want_blocked {
            recent.push_back(ts);
        }
        let want_sup = if want_blocked {
            0
        } else {
            Suppression::RateLimited as u8
        };
        if (blocked, sup) != (want_blocked, want_sup) && mismatches.len() < 10 {
            mismatches.push(format!(
                "crossing {n} at {ts}: blocked {blocked} suppressed {sup}, want {want_blocked} {want_sup}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "rate cap replay:\n{}",
        mismatches.join("\n")
    );
    let times: Vec<u64> = h
        .maps
        .blocks()
        .expect("blocklist")
        .iter()
        .map(|(_, _, e)| e.created_ns)
        .collect();
    let span_s = (run.crossings.last().expect("crossings").0 - run.crossings[0].0) as f64 / 1e9;
    let windows = span_s.ceil() as usize + 1;
    assert!(
        times.len() <= RATE as usize * windows,
        "{} blocks in {span_s:.1} s at {RATE}/s",
        times.len()
    );
    // Wherever a second falls, it holds at most RATE block starts.
    let burst = max_in_window(&times, 1_000_000_000);
    assert!(burst <= RATE as usize, "{burst} blocks within one second");
    let s = h.stats();
    eprintln!(
        "rate cap: {SOURCES} spoofed sources in {:.1} s: {} blocked, {} suppressed (block_rate_cap), max {burst} within a sliding second, {} protected crossings suppressed; auto_block_suppressed {}",
        run.secs,
        times.len(),
        run.crossings
            .iter()
            .filter(|c| c.2 == Suppression::RateLimited as u8)
            .count(),
        run.protected_events.len(),
        s[Stat::AutoBlockSuppressed as usize]
    );
}

#[test]
fn kernel_blocklist_cap_holds_against_a_million_spoofed_sources() {
    assert!(is_root(), "BPF_PROG_TEST_RUN needs root");
    const MAX_BLOCKS: u32 = 1000;
    let mut h = harness_with_max_blocks(cfg(0), MAX_BLOCKS);
    setup(&mut h);
    let run = flood(&mut h);
    common_checks("blocklist cap", &h, &run);

    let blocked: Vec<usize> = run
        .crossings
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        blocked,
        (0..MAX_BLOCKS as usize).collect::<Vec<_>>(),
        "exactly the first {MAX_BLOCKS} crossings are blocked"
    );
    let full = run
        .crossings
        .iter()
        .filter(|c| !c.1 && c.2 == Suppression::BlocklistFull as u8)
        .count();
    assert_eq!(
        full,
        (SOURCES - MAX_BLOCKS) as usize,
        "every later crossing is suppressed as blocklist_full"
    );
    let s = h.stats();
    assert_eq!(
        s[Stat::AutoBlockFailed as usize],
        u64::from(SOURCES - MAX_BLOCKS),
        "auto_block_failed"
    );
    assert_eq!(
        s[Stat::AutoBlocks as usize],
        u64::from(MAX_BLOCKS),
        "auto_blocks"
    );
    assert_eq!(
        h.maps.blocks().expect("blocklist").len(),
        MAX_BLOCKS as usize
    );
    eprintln!(
        "blocklist cap: {SOURCES} spoofed sources in {:.1} s: {MAX_BLOCKS} blocked, {full} suppressed (blocklist_full), {} protected crossings suppressed",
        run.secs,
        run.protected_events.len()
    );
}
