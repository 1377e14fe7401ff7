//! BPF_PROG_TEST_RUN: allowlist, blocklist (exact, prefix, expiry enforced by the
//! kernel itself) and per-entry hit counts.

use scan_guard::base::clock::monotonic_ns;
use scan_guard_common::{
    addr::mask,
    config::KernelConfig,
    flags::{ACK, FIN, PSH, SYN, URG},
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, addr, family_prefix},
    packet::Pkt,
};

const XMAS: u8 = FIN | PSH | URG;

fn hits(h: &Harness, text: &str, prefix: u32) -> Option<u64> {
    let plen = family_prefix(text, prefix);
    let want = mask(&addr(text), plen);
    h.maps
        .blocks()
        .expect("blocks")
        .into_iter()
        .find(|(a, p, _)| *p == plen && *a == want)
        .map(|(_, _, e)| e.hits)
}

#[test]
fn allowlisted_sources_bypass_flag_checks_and_tracking() {
    let mut h = Harness::new(KernelConfig::default());
    h.allow("192.0.2.0", 24);
    h.allow("2001:db8:1::", 64);
    for src in ["192.0.2.77", "2001:db8:1::77"] {
        let dst = if src.contains(':') {
            "2001:db8::1"
        } else {
            "192.0.2.1"
        };
        for port in 1..=50u16 {
            assert_eq!(
                h.run(&Pkt::tcp(src, dst, port, XMAS).build()),
                XDP_PASS,
                "{src}"
            );
        }
        assert!(h.maps.source(&addr(src)).is_none(), "{src} is not tracked");
    }
    assert_eq!(h.stats()[Stat::Allowlisted as usize], 100);
    // Neighbours outside the prefixes are treated normally.
    assert_eq!(
        h.run(&Pkt::tcp("192.0.3.1", "192.0.2.1", 80, XMAS).build()),
        XDP_DROP
    );
    assert_eq!(
        h.run(&Pkt::tcp("2001:db8:2::1", "2001:db8::1", 80, XMAS).build()),
        XDP_DROP
    );
}

#[test]
fn allowlist_wins_over_blocklist() {
    let mut h = Harness::new(KernelConfig::default());
    h.block("198.51.100.0", 24, 0);
    h.allow("198.51.100.5", 32);
    assert_eq!(
        h.run(&Pkt::tcp("198.51.100.5", "198.51.100.1", 80, SYN).build()),
        XDP_PASS
    );
    assert_eq!(
        h.run(&Pkt::tcp("198.51.100.6", "198.51.100.1", 80, SYN).build()),
        XDP_DROP
    );
}

#[test]
fn exact_and_prefix_blocks_drop_and_count_hits() {
    let mut h = Harness::new(KernelConfig::default());
    h.block("203.0.113.9", 32, 0);
    h.block("10.20.0.0", 16, 0);
    h.block("2001:db8:bad::", 48, 0);
    // The first drop is counted on the entry, the next ones in the per-CPU
    // verdict cache, which adds each batch of 64 to the entry: 65 packets,
    // 65 hits.
    for _ in 0..65 {
        assert_eq!(
            h.run(&Pkt::tcp("203.0.113.9", "203.0.113.1", 443, SYN).build()),
            XDP_DROP
        );
        assert_eq!(
            h.run(&Pkt::udp("10.20.99.1", "10.20.0.1", 53).build()),
            XDP_DROP
        );
        assert_eq!(
            h.run(&Pkt::icmp_echo("2001:db8:bad:1::5", "2001:db8::1").build()),
            XDP_DROP
        );
    }
    assert_eq!(
        h.run(&Pkt::tcp("203.0.113.10", "203.0.113.1", 443, SYN).build()),
        XDP_PASS
    );
    assert_eq!(
        h.run(&Pkt::tcp("10.21.0.1", "10.20.0.1", 443, SYN).build()),
        XDP_PASS
    );
    assert_eq!(hits(&h, "203.0.113.9", 32), Some(65));
    assert_eq!(hits(&h, "10.20.0.0", 16), Some(65));
    assert_eq!(hits(&h, "2001:db8:bad::", 48), Some(65));
    let stats = h.stats();
    assert_eq!(stats[Stat::DroppedBlocked as usize], 3 * 65);
    assert_eq!(stats[Stat::VerdictCacheHits as usize], 3 * 63);
}

#[test]
fn expired_blocks_lapse_in_the_kernel() {
    let mut h = Harness::new(KernelConfig::default());
    let past = monotonic_ns() - 1;
    h.block("192.0.2.50", 32, past);
    h.block("2001:db8::50", 128, past);
    let future = monotonic_ns() + 3_600_000_000_000;
    h.block("192.0.2.51", 32, future);
    assert_eq!(
        h.run(&Pkt::tcp("192.0.2.50", "192.0.2.1", 22, SYN).build()),
        XDP_PASS
    );
    assert_eq!(
        h.run(&Pkt::tcp("2001:db8::50", "2001:db8::1", 22, SYN).build()),
        XDP_PASS
    );
    assert_eq!(
        h.run(&Pkt::tcp("192.0.2.51", "192.0.2.1", 22, SYN).build()),
        XDP_DROP
    );
    assert_eq!(h.stats()[Stat::BlocksExpired as usize], 2);
    assert_eq!(
        hits(&h, "192.0.2.50", 32),
        None,
        "the kernel removed the expired entry"
    );
    assert_eq!(hits(&h, "2001:db8::50", 128), None);
}

#[test]
fn expired_exact_entry_does_not_hide_a_live_prefix() {
    let mut h = Harness::new(KernelConfig::default());
    h.block("10.30.0.0", 24, 0);
    h.block("10.30.0.7", 32, monotonic_ns() - 1);
    assert_eq!(
        h.run(&Pkt::tcp("10.30.0.7", "10.30.0.1", 80, SYN).build()),
        XDP_DROP
    );
    assert_eq!(hits(&h, "10.30.0.0", 24), Some(1));
    assert_eq!(hits(&h, "10.30.0.7", 32), None);
}

/// Where each block lives follows the prefix lengths in force: hosts, source
/// prefixes (/64) and aggregates (/24) in the hash maps, other prefixes in the
/// trie, each found only through its /16's presence bit. A changed source
/// prefix moves the blocks it concerns, and lifting a trie prefix clears its
/// bits without hiding any other block.
#[test]
fn every_kind_of_block_is_enforced_wherever_it_lives() {
    let cfg = KernelConfig {
        v6_source_prefix: 64,
        v4_aggregate_prefix: 24,
        v6_aggregate_prefix: 48,
        ..KernelConfig::default()
    };
    let mut h = Harness::new(cfg);
    let blocks: [(&str, u32, &str, &str); 6] = [
        ("203.0.113.9", 32, "203.0.113.9", "203.0.113.10"),
        ("198.51.100.0", 24, "198.51.100.200", "198.51.101.1"),
        ("10.32.0.0", 12, "10.40.1.1", "10.48.0.1"),
        ("2001:db8:1:2::", 64, "2001:db8:1:2::99", "2001:db8:1:3::1"),
        ("2001:db8:7::", 48, "2001:db8:7:ffff::1", "2001:db8:8::1"),
        ("2001:db8:9:1::5", 128, "2001:db8:9:1::5", "2001:db8:9:1::6"),
    ];
    for (net, len, _, _) in blocks {
        h.block(net, len, 0);
    }
    let verdicts = |h: &mut Harness| -> Vec<String> {
        let mut wrong = Vec::new();
        for (net, len, inside, outside) in blocks {
            for (src, want) in [(inside, XDP_DROP), (outside, XDP_PASS)] {
                let dst = if src.contains(':') {
                    "2001:db8::1"
                } else {
                    "192.0.2.1"
                };
                let got = h.run(&Pkt::tcp(src, dst, 443, ACK).build());
                if got != want {
                    wrong.push(format!("{src} (block {net}/{len}): {got}, want {want}"));
                }
            }
        }
        wrong
    };
    assert_eq!(verdicts(&mut h), Vec::<String>::new(), "as written");
    // IPv6 sources scored per /56 from now on: the /64 block leaves the hash map
    // for the trie, and is still enforced.
    h.maps
        .write_config(&KernelConfig {
            v6_source_prefix: 56,
            ..cfg
        })
        .expect("write config");
    assert_eq!(verdicts(&mut h), Vec::<String>::new(), "after the move");
    // Lifting the /12 leaves every other block in force and frees its sources.
    assert!(
        h.maps
            .remove_block(&mask(&addr("10.32.0.0"), 108), 108)
            .expect("remove")
    );
    assert_eq!(
        h.run(&Pkt::tcp("10.40.1.1", "192.0.2.1", 443, ACK).build()),
        XDP_PASS
    );
    let rest: Vec<String> = verdicts(&mut h)
        .into_iter()
        .filter(|w| !w.starts_with("10.40.1.1"))
        .collect();
    assert_eq!(rest, Vec::<String>::new(), "after lifting the /12");
    assert_eq!(h.maps.blocks().expect("blocks").len(), 5);
}

/// The per-CPU verdict cache never outlives a change: a blocked source is
/// dropped from the cache, passes from the very next packet once the
/// controller lifts its block, and is dropped again once blocked again (by
/// the controller, then by the kernel's own auto-block).
#[test]
fn cached_verdicts_follow_every_block_change_at_once() {
    let mut h = Harness::new(KernelConfig::default());
    h.set_listening(&[443], &[]);
    h.block("10.30.0.10", 32, 0);
    let ack = |src: &str| Pkt::tcp(src, "10.30.0.1", 443, ACK).build();
    for _ in 0..5 {
        assert_eq!(h.run(&ack("10.30.0.10")), XDP_DROP);
    }
    assert_eq!(
        h.stats()[Stat::VerdictCacheHits as usize],
        4,
        "the first drop fills the cache, four more hit it"
    );
    // Lifted by the controller.
    let key = addr("10.30.0.10");
    assert_eq!(h.maps.remove_block(&key, 128).ok(), Some(true));
    assert_eq!(h.run(&ack("10.30.0.10")), XDP_PASS);
    assert_eq!(h.run(&ack("10.30.0.10")), XDP_PASS);
    // Blocked again by the controller.
    h.block("10.30.0.10", 32, 0);
    assert_eq!(h.run(&ack("10.30.0.10")), XDP_DROP);
    // Lifted again, then blocked by the kernel itself after a scan.
    assert_eq!(h.maps.remove_block(&key, 128).ok(), Some(true));
    assert_eq!(h.run(&ack("10.30.0.10")), XDP_PASS);
    let mut port = 1u16;
    while h.stats()[Stat::AutoBlocks as usize] == 0 {
        assert!(port < 200, "no auto-block after {port} probes");
        h.run(&Pkt::tcp("10.30.0.10", "10.30.0.1", port, SYN).build());
        port += 1;
    }
    assert_eq!(h.run(&ack("10.30.0.10")), XDP_DROP);
    // A block replaced in place with an earlier expiry lapses with it, not
    // with the cached one.
    h.block("10.30.0.20", 32, 0);
    assert_eq!(h.run(&ack("10.30.0.20")), XDP_DROP);
    h.block("10.30.0.20", 32, 1);
    assert_eq!(h.run(&ack("10.30.0.20")), XDP_PASS);
}

/// A cached "clear" never outlives a block, whichever CPU makes it: a client
/// whose /16 holds a block is judged clear on one CPU, scans from the other
/// until the kernel blocks it there, and its very next packet on the first
/// CPU is dropped. The same for a block the controller writes, and an
/// allowlist entry over a cached drop lets the next packet pass.
#[test]
fn cached_clear_verdicts_end_with_a_block_from_any_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (home, away) = (0, cpus.min(2) - 1);
    let pin = |cpu: usize| {
        scan_guard_lab::bench::sys::pin_thread_to_cpu(cpu)
            .unwrap_or_else(|e| panic!("pinning to CPU {cpu}: {e}"))
    };
    let mut h = Harness::new(KernelConfig::default());
    h.set_listening(&[443], &[]);
    // A neighbour's block marks the clients' /16.
    h.block("10.40.0.99", 32, 0);
    let ack = |src: &str| Pkt::tcp(src, "10.40.0.1", 443, ACK).build();

    pin(home);
    for _ in 0..3 {
        assert_eq!(h.run(&ack("10.40.0.10")), XDP_PASS);
    }
    let hits = h.stats()[Stat::VerdictCacheHits as usize];
    assert!(hits >= 2, "the clear verdict is cached ({hits} hits)");

    pin(away);
    let mut port = 1u16;
    while h.stats()[Stat::AutoBlocks as usize] == 0 {
        assert!(port < 200, "no auto-block after {port} probes");
        h.run(&Pkt::tcp("10.40.0.10", "10.40.0.1", port, SYN).build());
        port += 1;
    }
    pin(home);
    assert_eq!(
        h.run(&ack("10.40.0.10")),
        XDP_DROP,
        "a kernel auto-block on CPU {away} ends the clear verdict cached on CPU {home}"
    );

    // The controller's block of a client cached as clear.
    assert_eq!(h.run(&ack("10.40.0.11")), XDP_PASS);
    assert_eq!(h.run(&ack("10.40.0.11")), XDP_PASS);
    let before = h.maps.generation();
    h.block("10.40.0.11", 32, 0);
    assert!(
        h.maps.generation() > before,
        "a new block moves the generation"
    );
    assert_eq!(h.run(&ack("10.40.0.11")), XDP_DROP);

    // An allowlist entry over a cached drop.
    for _ in 0..3 {
        assert_eq!(h.run(&ack("10.40.0.11")), XDP_DROP);
    }
    h.allow("10.40.0.11", 32);
    assert_eq!(h.run(&ack("10.40.0.11")), XDP_PASS);
}
