use scan_guard_common::config::KernelConfig;
use scan_guard_tests::{
    harness::{Harness, XDP_PASS},
    packet::Pkt,
};

#[test]
fn loads_and_passes_a_syn() {
    let mut h = Harness::new(KernelConfig::default());
    assert_eq!(
        h.run(&Pkt::tcp("10.0.0.2", "10.0.0.1", 80, 0x02).build()),
        XDP_PASS
    );
}
