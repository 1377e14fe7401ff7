//! BPF_PROG_TEST_RUN: malformed and unusual frames. Trouble parsing means pass and
//! count (fail open); headers we do parse must be parsed right.

use scan_guard_common::{
    config::KernelConfig,
    flags::{FIN, PSH, ProbeKind, SYN, URG},
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, addr},
    packet::{
        ETH_P_8021Q, EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, EXT_ROUTING, Frag, L4, Pkt,
        arp_frame,
    },
};

const XMAS: u8 = FIN | PSH | URG;

fn quiet() -> KernelConfig {
    KernelConfig {
        score_threshold: 0,
        sweep_threshold: 0,
        policy: 0,
        ..KernelConfig::default()
    }
}

/// Runs a frame cut to `len` bytes; `None` when the kernel refuses to run frames
/// that short (below an Ethernet header).
fn run_truncated(h: &mut Harness, frame: &[u8], len: usize) -> Option<u32> {
    match h.try_run(&frame[..len], 1) {
        Ok((v, _)) => Some(v),
        Err(e) => {
            assert!(len < 14, "kernel refused a {len}-byte frame: {e}");
            None
        }
    }
}

#[test]
fn every_truncation_of_a_valid_frame_passes() {
    let mut h = Harness::new(quiet());
    let frames = [
        Pkt::tcp("10.1.0.2", "10.1.0.1", 22, SYN)
            .vlans(&[ETH_P_8021Q])
            .ipv4_options(8)
            .build(),
        Pkt::tcp("2001:db8::2", "2001:db8::1", 22, SYN)
            .ipv6_ext(&[EXT_HOP_BY_HOP, EXT_DEST_OPTS])
            .build(),
        Pkt::udp("10.1.0.2", "10.1.0.1", 53).build(),
        Pkt::icmp_echo("2001:db8::2", "2001:db8::1").build(),
    ];
    for frame in &frames {
        for len in 0..=frame.len() {
            if let Some(v) = run_truncated(&mut h, frame, len) {
                assert_eq!(v, XDP_PASS, "truncated to {len} of {}", frame.len());
            }
        }
    }
    assert!(
        h.stats()[Stat::ParseFailed as usize] > 0,
        "short frames are counted"
    );
}

#[test]
fn truncated_invalid_frame_drops_only_once_the_flags_are_there() {
    let mut h = Harness::new(quiet());
    let frame = Pkt::tcp("10.1.0.3", "10.1.0.1", 80, XMAS)
        .vlans(&[ETH_P_8021Q, ETH_P_8021Q])
        .build();
    let flags_end = 14 + 8 + 20 + 14; // eth + 2 tags + ipv4 + tcp through the flags byte
    for len in 0..=frame.len() {
        if let Some(v) = run_truncated(&mut h, &frame, len) {
            let want = if len >= flags_end { XDP_DROP } else { XDP_PASS };
            assert_eq!(v, want, "truncated to {len}");
        }
    }
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let mut h = Harness::new(quiet());
    for opt in (0..=40).step_by(4) {
        let port = 1000 + opt as u16;
        assert_eq!(
            h.run(
                &Pkt::tcp("10.2.0.2", "10.2.0.1", port, XMAS)
                    .ipv4_options(opt)
                    .build()
            ),
            XDP_DROP,
            "IHL with {opt} option bytes"
        );
        let src = format!("10.2.1.{opt}");
        assert_eq!(
            h.run(
                &Pkt::tcp(&src, "10.2.0.1", port, SYN)
                    .ipv4_options(opt)
                    .build()
            ),
            XDP_PASS
        );
        let st = h.maps.source(&addr(&src)).expect("tracked");
        assert_eq!(
            st.port_samples[0], port,
            "port read past {opt} option bytes"
        );
    }
    // IHL below 5 is malformed.
    let mut bad = Pkt::tcp("10.2.0.4", "10.2.0.1", 80, XMAS).build();
    bad[14] = 0x44;
    assert_eq!(h.run(&bad), XDP_PASS);
}

#[test]
fn ipv6_extension_header_chains_are_walked() {
    let mut h = Harness::new(quiet());
    let chains: [&[u8]; 6] = [
        &[],
        &[EXT_HOP_BY_HOP],
        &[EXT_ROUTING],
        &[EXT_HOP_BY_HOP, EXT_DEST_OPTS],
        &[EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_DEST_OPTS],
        &[
            EXT_HOP_BY_HOP,
            EXT_DEST_OPTS,
            EXT_ROUTING,
            EXT_DEST_OPTS,
            EXT_DEST_OPTS,
            EXT_DEST_OPTS,
        ],
    ];
    for (i, chain) in chains.iter().enumerate() {
        let port = 2000 + i as u16;
        let xmas = Pkt::tcp("2001:db8::20", "2001:db8::1", port, XMAS)
            .ipv6_ext(chain)
            .build();
        assert_eq!(h.run(&xmas), XDP_DROP, "chain {chain:?}");
        let syn = Pkt::tcp("2001:db8::21", "2001:db8::1", port, SYN)
            .ipv6_ext(chain)
            .build();
        assert_eq!(h.run(&syn), XDP_PASS);
        let st = h.maps.source(&addr("2001:db8::21")).expect("tracked");
        assert_eq!(st.port_samples[i], port, "port read behind chain {chain:?}");
    }
    // One header more than the walk allows: fail open and count.
    let before = h.stats()[Stat::ParseFailed as usize];
    let long = Pkt::tcp("2001:db8::22", "2001:db8::1", 80, XMAS)
        .ipv6_ext(&[EXT_DEST_OPTS; 7])
        .build();
    assert_eq!(h.run(&long), XDP_PASS);
    assert_eq!(h.stats()[Stat::ParseFailed as usize], before + 1);
}

#[test]
fn fragments_only_the_first_carries_ports() {
    let mut h = Harness::new(quiet());
    for (src, dst) in [("10.3.0.2", "10.3.0.1"), ("2001:db8::30", "2001:db8::1")] {
        let first = Pkt::tcp(src, dst, 80, XMAS).frag(Frag::First).build();
        assert_eq!(
            h.run(&first),
            XDP_DROP,
            "first fragment from {src} is inspected"
        );
        let before = h.stats()[Stat::Fragments as usize];
        let later = Pkt::tcp(src, dst, 80, XMAS).frag(Frag::Later).build();
        assert_eq!(h.run(&later), XDP_PASS, "later fragment from {src} passes");
        assert_eq!(h.stats()[Stat::Fragments as usize], before + 1);
        // ... unless its source is blocked.
        h.block(src, if src.contains(':') { 128 } else { 32 }, 0);
        assert_eq!(h.run(&later), XDP_DROP, "later fragment from blocked {src}");
    }
}

#[test]
fn non_ip_and_unknown_transports_pass() {
    let mut h = Harness::new(quiet());
    assert_eq!(h.run(&arp_frame()), XDP_PASS);
    assert_eq!(h.stats()[Stat::NotIp as usize], 1);
    assert_eq!(
        h.run(&Pkt::new("10.4.0.2", "10.4.0.1", L4::Other(47)).build()),
        XDP_PASS
    );
    // Three VLAN tags are beyond the parser: pass and count.
    let before = h.stats()[Stat::ParseFailed as usize];
    let triple = Pkt::tcp("10.4.0.2", "10.4.0.1", 80, XMAS)
        .vlans(&[ETH_P_8021Q; 3])
        .build();
    assert_eq!(h.run(&triple), XDP_PASS);
    assert_eq!(h.stats()[Stat::ParseFailed as usize], before + 1);
}

#[test]
fn ipv4_mapped_ipv6_source_is_the_ipv4_source() {
    let mut h = Harness::new(quiet());
    h.block("10.5.0.9", 32, 0);
    let mapped = Pkt::tcp("::ffff:10.5.0.9", "2001:db8::1", 80, SYN).build();
    assert_eq!(h.run(&mapped), XDP_DROP);
    let other = Pkt::tcp("::ffff:10.5.0.10", "2001:db8::1", 80, SYN).build();
    assert_eq!(h.run(&other), XDP_PASS);
    let st = h
        .maps
        .source(&addr("10.5.0.10"))
        .expect("tracked under its IPv4 key");
    assert_eq!(st.probes[ProbeKind::Syn as usize], 1);
}
