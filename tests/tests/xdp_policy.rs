//! BPF_PROG_TEST_RUN: the kernel-side policy switches: never-block set, auto-block
//! rate cap, stealth mode, and the first-contact records for the slow-scan test.

use scan_guard_common::{
    config::{KernelConfig, POLICY_AUTO_BLOCK, POLICY_STEALTH},
    event::Suppression,
    flags::{ACK, ProbeKind, SYN},
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, addr},
    packet::Pkt,
};

const TARGET: &str = "10.8.0.1";

fn scan(h: &mut Harness, src: &str, ports: std::ops::RangeInclusive<u16>) -> Vec<u32> {
    ports
        .map(|p| h.run(&Pkt::tcp(src, TARGET, p, SYN).build()))
        .collect()
}

#[test]
fn never_block_sources_are_reported_not_blocked() {
    let mut h = Harness::new(KernelConfig::default());
    h.protect("10.8.0.254", 32);
    h.protect("2001:db8:ffff::", 48);
    for src in ["10.8.0.254", "2001:db8:ffff::1"] {
        let dst = if src.contains(':') {
            "2001:db8::1"
        } else {
            TARGET
        };
        for p in 1..=30u16 {
            assert_eq!(
                h.run(&Pkt::tcp(src, dst, p, SYN).build()),
                XDP_PASS,
                "{src} port {p}"
            );
        }
    }
    let events = h.drain_events();
    assert_eq!(events.len(), 2);
    for ev in &events {
        assert_eq!(ev.blocked, 0);
        assert_eq!(ev.suppressed, Suppression::Protected as u8);
    }
    assert!(h.maps.blocks().expect("blocks").is_empty());
    assert_eq!(h.stats()[Stat::AutoBlockSuppressed as usize], 2);
    // An ordinary scanner next to them is still blocked.
    assert!(scan(&mut h, "10.8.0.9", 1..=10).contains(&XDP_DROP));
}

#[test]
fn kernel_blocks_at_most_the_rate_cap_per_second() {
    let mut h = Harness::new(KernelConfig {
        max_auto_blocks_per_sec: 3,
        ..KernelConfig::default()
    });
    for i in 1..=10u8 {
        scan(&mut h, &format!("10.8.1.{i}"), 1..=8);
    }
    let events = h.drain_events();
    assert_eq!(events.len(), 10, "every crossing is reported");
    let blocked = events.iter().filter(|e| e.blocked == 1).count();
    let capped = events
        .iter()
        .filter(|e| e.suppressed == Suppression::RateLimited as u8)
        .count();
    // All ten scans run well within one second.
    assert_eq!(blocked, 3);
    assert_eq!(capped, 7);
    assert_eq!(h.maps.blocks().expect("blocks").len(), 3);
}

#[test]
fn stealth_drops_syns_to_closed_ports_only() {
    let cfg = KernelConfig {
        policy: POLICY_STEALTH,
        ..KernelConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.set_listening(&[22, 443], &[]);
    let src = "10.8.2.2";
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 22, SYN).build()), XDP_PASS);
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 443, SYN).build()), XDP_PASS);
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 23, SYN).build()), XDP_DROP);
    // Replies to the host's own connections (SYN+ACK, ACK to ephemeral ports) pass.
    assert_eq!(
        h.run(&Pkt::tcp(src, TARGET, 40_001, SYN | ACK).build()),
        XDP_PASS
    );
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 40_001, ACK).build()), XDP_PASS);
    assert_eq!(h.run(&Pkt::udp(src, TARGET, 53).build()), XDP_PASS);
    assert_eq!(h.stats()[Stat::DroppedStealth as usize], 1);
    // Off by default.
    let mut plain = Harness::new(KernelConfig {
        policy: POLICY_AUTO_BLOCK,
        ..KernelConfig::default()
    });
    assert_eq!(plain.run(&Pkt::tcp(src, TARGET, 23, SYN).build()), XDP_PASS);
}

#[test]
fn first_contacts_are_recorded_once_per_port_per_window() {
    let mut h = Harness::new(KernelConfig {
        policy: 0,
        ..KernelConfig::default()
    });
    h.set_listening(&[80], &[]);
    let src = "10.8.3.2";
    for _ in 0..5 {
        assert_eq!(h.run(&Pkt::tcp(src, TARGET, 80, SYN).build()), XDP_PASS);
        assert_eq!(h.run(&Pkt::tcp(src, TARGET, 81, SYN).build()), XDP_PASS);
    }
    let contacts = h.drain_contacts();
    assert_eq!(contacts.len(), 2);
    assert_eq!((contacts[0].port, contacts[0].listening), (80, 1));
    assert_eq!((contacts[1].port, contacts[1].listening), (81, 0));
    assert!(
        contacts
            .iter()
            .all(|c| c.src == addr(src) && c.kind == ProbeKind::Syn as u8)
    );
    assert_eq!(h.stats()[Stat::Contacts as usize], 2);
}

#[test]
fn connect_style_syns_are_counted() {
    let mut h = Harness::new(KernelConfig {
        policy: 0,
        ..KernelConfig::default()
    });
    let src = "10.8.4.2";
    let mut frame = Pkt::tcp(src, TARGET, 1, SYN).payload(20).build();
    // Data offset 10 words: 20 option bytes, as a connect() from Linux sends.
    let tcp = 14 + 20;
    frame[tcp + 12] = 10 << 4;
    assert_eq!(h.run(&frame), XDP_PASS);
    assert_eq!(h.run(&Pkt::tcp(src, TARGET, 2, SYN).build()), XDP_PASS);
    let st = h.maps.source(&addr(src)).expect("tracked");
    assert_eq!(st.os_syns, 1);
    assert_eq!(st.probes[ProbeKind::Syn as usize], 2);
}
