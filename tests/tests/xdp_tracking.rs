//! BPF_PROG_TEST_RUN: per-source counters and sketches after crafted sequences, and
//! the threshold crossing: exactly one event and a kernel auto-block.

use scan_guard_common::{
    config::KernelConfig,
    flags::{ACK, FIN, ProbeKind, SYN},
    state::{BlockOrigin, Trigger},
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, addr},
    packet::Pkt,
};

const TARGET: &str = "10.9.0.1";

#[test]
fn counters_and_sketches_follow_a_crafted_sequence() {
    let mut h = Harness::new(KernelConfig {
        policy: 0,
        ..KernelConfig::default()
    });
    h.set_listening(&[22, 80], &[53]);
    let src = "10.9.0.2";
    // Open ports, repeatedly: 2 distinct ports.
    for _ in 0..10 {
        for port in [22u16, 80] {
            assert_eq!(h.run(&Pkt::tcp(src, TARGET, port, SYN).build()), XDP_PASS);
        }
    }
    // Established traffic to a listener and replies to our ephemeral ports: not evidence.
    for port in [22u16, 40_000, 50_000] {
        assert_eq!(h.run(&Pkt::tcp(src, TARGET, port, ACK).build()), XDP_PASS);
        assert_eq!(
            h.run(&Pkt::tcp(src, TARGET, port, FIN | ACK).build()),
            XDP_PASS
        );
    }
    assert_eq!(h.run(&Pkt::udp(src, TARGET, 53).build()), XDP_PASS);
    assert_eq!(h.run(&Pkt::udp(src, TARGET, 45_000).build()), XDP_PASS);
    let st = h.maps.source(&addr(src)).expect("tracked");
    assert_eq!(st.probes[ProbeKind::Syn as usize], 20);
    assert_eq!(st.total_probes(), 20);
    assert_eq!(st.distinct_ports, 2);
    let cfg = KernelConfig::default();
    assert_eq!(
        st.score,
        cfg.port_weight(22, true, false) + cfg.port_weight(80, true, false)
    );
    assert_eq!(&st.port_samples[..2], &[22, 80]);
    assert_eq!((st.flags_or, st.flags_and), (SYN, SYN));

    // Stray ACK / FIN+ACK / UDP to closed low ports, and pings: evidence.
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 23, ACK).build()), XDP_PASS);
    assert_eq!(
        h.run(&Pkt::tcp(src, TARGET, 24, FIN | ACK).build()),
        XDP_PASS
    );
    assert_eq!(h.run(&Pkt::udp(src, TARGET, 161).build()), XDP_PASS);
    assert_eq!(h.run(&Pkt::icmp_echo(src, "10.9.0.3").build()), XDP_PASS);
    let st = h.maps.source(&addr(src)).expect("tracked");
    assert_eq!(st.probes[ProbeKind::Ack as usize], 1);
    assert_eq!(st.probes[ProbeKind::Maimon as usize], 1);
    assert_eq!(st.probes[ProbeKind::Udp as usize], 1);
    assert_eq!(st.probes[ProbeKind::IcmpEcho as usize], 1);
    assert_eq!(st.distinct_ports, 5);
    assert_eq!(st.distinct_addrs, 2);
    assert_eq!(st.flags_or, SYN | ACK | FIN);
    assert_eq!(st.flags_and, 0);
    assert_eq!(h.stats()[Stat::NewSources as usize], 1);
}

#[test]
fn crossing_the_threshold_gives_one_event_and_an_auto_block() {
    let cfg = KernelConfig::default();
    let mut h = Harness::new(cfg);
    let src = "10.9.1.2";
    let mut verdicts = Vec::new();
    for port in 1..=20u16 {
        verdicts.push(h.run(&Pkt::tcp(src, TARGET, port, SYN).build()));
    }
    // Closed privileged ports weigh 4: the 6th probe reaches 24 >= 21.
    assert_eq!(&verdicts[..5], &[XDP_PASS; 5]);
    assert!(verdicts[5..].iter().all(|v| *v == XDP_DROP), "{verdicts:?}");
    let events = h.drain_events();
    assert_eq!(events.len(), 1, "exactly one event");
    let ev = &events[0];
    assert_eq!(ev.src, addr(src));
    assert_eq!(ev.trigger, Trigger::Score as u8);
    assert_eq!(ev.blocked, 1);
    assert_eq!(ev.probes[ProbeKind::Syn as usize], 6);
    assert_eq!(ev.score, 24);
    assert_eq!(ev.ports(), &[1, 2, 3, 4, 5, 6]);
    let blocks = h.maps.blocks().expect("blocks");
    assert_eq!(blocks.len(), 1);
    let (a, plen, entry) = blocks[0];
    assert_eq!((a, plen), (addr(src), 128));
    assert_eq!(entry.origin, BlockOrigin::Kernel as u8);
    assert_eq!(entry.expires_ns - entry.created_ns, cfg.block_ttl_ns);
    // Probe 7 is counted on the entry, 8..=20 in the verdict cache (which adds
    // them to the entry per batch of 64).
    assert_eq!(entry.hits, 1, "probe 7 hit the entry");
    let stats = h.stats();
    assert_eq!(stats[Stat::VerdictCacheHits as usize], 13, "probes 8..=20");
    assert_eq!(stats[Stat::Events as usize], 1);
    assert_eq!(stats[Stat::AutoBlocks as usize], 1);
    assert_eq!(stats[Stat::DroppedBlocked as usize], 15);
}

#[test]
fn without_auto_block_the_event_still_fires_but_nothing_is_dropped() {
    let mut h = Harness::new(KernelConfig {
        policy: 0,
        ..KernelConfig::default()
    });
    for port in 1..=200u16 {
        assert_eq!(
            h.run(&Pkt::tcp("2001:db8::99", "2001:db8::1", port, SYN).build()),
            XDP_PASS
        );
    }
    let events = h.drain_events();
    assert_eq!(events.len(), 1, "one event per source per window");
    assert_eq!(events[0].blocked, 0);
    assert!(h.maps.blocks().expect("blocks").is_empty());
}

#[test]
fn legitimate_clients_never_cross() {
    let mut h = Harness::new(KernelConfig::default());
    h.set_listening(&[80, 443, 8443], &[]);
    for i in 0..3000u32 {
        let port = [80u16, 443, 8443][(i % 3) as usize];
        assert_eq!(
            h.run(&Pkt::tcp("10.9.2.2", TARGET, port, SYN).build()),
            XDP_PASS
        );
        assert_eq!(
            h.run(&Pkt::tcp("10.9.2.2", TARGET, port, ACK).build()),
            XDP_PASS
        );
    }
    // A typo: the same closed port a few times.
    for _ in 0..5 {
        assert_eq!(
            h.run(&Pkt::tcp("10.9.2.3", TARGET, 8080, SYN).build()),
            XDP_PASS
        );
    }
    assert!(h.drain_events().is_empty());
    assert!(h.maps.blocks().expect("blocks").is_empty());
}

#[test]
fn a_ping_sweep_across_our_addresses_is_reported() {
    let mut h = Harness::new(KernelConfig::default());
    let mut dropped_from = None;
    for last in 1..=40u8 {
        let v = h.run(&Pkt::icmp_echo("10.9.3.2", &format!("10.9.4.{last}")).build());
        if v == XDP_DROP && dropped_from.is_none() {
            dropped_from = Some(last);
        }
    }
    let events = h.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].trigger, Trigger::Sweep as u8);
    let n = dropped_from.expect("the sweeping source was blocked");
    assert!(n <= 16, "blocked after {n} addresses");
}
