//! BPF_PROG_TEST_RUN: every TCP flag byte, over IPv4 and IPv6, with 0, 1 and 2
//! VLAN tags, gets the verdict the reference classifier predicts.

use scan_guard_common::{
    config::KernelConfig,
    flags::{INVALID_CLASSES, InvalidClass, reference_classify},
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS},
    packet::{ETH_P_8021AD, ETH_P_8021Q, Pkt},
};

/// Flag handling only: no tracking decisions (thresholds off, no auto-block), so
/// every verdict is the flag policy's alone.
fn flags_only(drop_mask: u32) -> KernelConfig {
    KernelConfig {
        score_threshold: 0,
        sweep_threshold: 0,
        policy: 0,
        invalid_drop_mask: drop_mask,
        ..KernelConfig::default()
    }
}

const VLAN_STACKS: [&[u16]; 3] = [&[], &[ETH_P_8021Q], &[ETH_P_8021AD, ETH_P_8021Q]];
const FAMILIES: [(&str, &str); 2] = [("192.0.2.10", "192.0.2.1"), ("2001:db8::10", "2001:db8::1")];

#[test]
fn all_256_flag_bytes_match_the_reference_classifier() {
    let mut h = Harness::new(flags_only((1 << INVALID_CLASSES) - 1));
    let mut expected_drops = [0u64; INVALID_CLASSES];
    let mut runs = 0u64;
    for (src, dst) in FAMILIES {
        for vlans in VLAN_STACKS {
            for flags in 0..=255u8 {
                let frame = Pkt::tcp(src, dst, 80, flags).vlans(vlans).build();
                let want = match reference_classify(flags) {
                    Some(class) => {
                        expected_drops[class as usize] += 1;
                        XDP_DROP
                    }
                    None => XDP_PASS,
                };
                let got = h.run(&frame);
                assert_eq!(
                    got, want,
                    "flags {flags:#04x} from {src} with VLANs {vlans:?}"
                );
                runs += 1;
            }
        }
    }
    let stats = h.stats();
    assert_eq!(stats[Stat::Packets as usize], runs);
    for class in InvalidClass::ALL {
        assert_eq!(
            stats[Stat::dropped_invalid(class)],
            expected_drops[class as usize],
            "dropped counter for {class:?}"
        );
        assert_eq!(stats[Stat::counted_invalid(class)], 0);
    }
    let dropped: u64 = expected_drops.iter().sum();
    assert_eq!(stats[Stat::Passed as usize], runs - dropped);
    assert_eq!(stats[Stat::ParseFailed as usize], 0);
}

#[test]
fn count_only_classes_pass_and_are_counted() {
    // Drop only XMAS; count everything else.
    let mut h = Harness::new(flags_only(1 << InvalidClass::Xmas as u32));
    let mut counted = [0u64; INVALID_CLASSES];
    for flags in 0..=255u8 {
        let frame = Pkt::tcp("198.51.100.7", "198.51.100.1", 443, flags).build();
        let want = match reference_classify(flags) {
            Some(InvalidClass::Xmas) => XDP_DROP,
            Some(class) => {
                counted[class as usize] += 1;
                XDP_PASS
            }
            None => XDP_PASS,
        };
        assert_eq!(h.run(&frame), want, "flags {flags:#04x}");
    }
    let stats = h.stats();
    for class in InvalidClass::ALL {
        assert_eq!(
            stats[Stat::counted_invalid(class)],
            counted[class as usize],
            "{class:?}"
        );
    }
    assert!(stats[Stat::dropped_invalid(InvalidClass::Xmas)] > 0);
}

#[test]
fn invalid_flags_count_as_probe_evidence() {
    let mut h = Harness::new(flags_only((1 << INVALID_CLASSES) - 1));
    for port in 1..=5u16 {
        assert_eq!(
            h.run(&Pkt::tcp("203.0.113.9", "203.0.113.1", port, 0x29).build()),
            XDP_DROP
        );
    }
    let st = h
        .maps
        .source(&scan_guard_tests::harness::addr("203.0.113.9"))
        .expect("XMAS source is tracked");
    assert_eq!(
        st.probes[scan_guard_common::flags::ProbeKind::Xmas as usize],
        5
    );
    assert_eq!(st.distinct_ports, 5);
    assert_eq!(st.flags_or, 0x29);
}
