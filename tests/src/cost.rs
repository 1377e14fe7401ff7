//! Per-packet cost of the XDP program's paths, measured with BPF_PROG_TEST_RUN
//! next to an empty XDP_PASS program loaded in the same run (the floor).

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use scan_guard_common::config::KernelConfig;

use crate::{
    harness::Harness,
    packet::{ETH_P_8021Q, EXT_HOP_BY_HOP, Pkt},
};

/// One measured path.
#[derive(Debug, Clone)]
pub struct PathCost {
    pub name: &'static str,
    pub ns_per_packet: f64,
    pub verdict: u32,
}

fn baseline() -> Ebpf {
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

fn repeat_cost(prog: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64) {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("test run");
    (r.return_value, r.duration.as_nanos() as f64)
}

/// Runs each path `repeat` times (the kernel reports the mean per run); the new-source
/// path needs a different source per run, so it is measured one run at a time over
/// `repeat / 100` sources, and so is a floor to compare it with.
pub fn measure(repeat: u32) -> Vec<PathCost> {
    let mut base = baseline();
    let base_prog: &mut Xdp = base
        .program_mut("baseline_pass")
        .expect("p")
        .try_into()
        .expect("xdp");
    let syn = Pkt::tcp("10.50.0.2", "10.50.0.1", 80, 0x02).build();
    let mut out = Vec::new();
    let (v, ns) = repeat_cost(base_prog, &syn, repeat);
    out.push(PathCost {
        name: "empty_xdp_pass",
        ns_per_packet: ns,
        verdict: v,
    });

    let mut h = Harness::new(KernelConfig::default());
    h.set_listening(&[80, 443], &[53]);
    h.block("10.60.0.9", 32, 0);
    h.block("10.61.0.0", 16, 0);
    let prog_cost = |h: &mut Harness, frame: &[u8]| {
        let (v, ns) = h.try_run(frame, repeat).expect("test run");
        (v, ns as f64)
    };
    let paths: [(&'static str, Vec<u8>); 9] = [
        (
            "established_ack",
            Pkt::tcp("10.50.0.3", "10.50.0.1", 80, 0x10).build(),
        ),
        (
            "syn_tracked_source",
            Pkt::tcp("10.50.0.4", "10.50.0.1", 80, 0x02).build(),
        ),
        (
            "blocked_exact",
            Pkt::tcp("10.60.0.9", "10.50.0.1", 80, 0x02).build(),
        ),
        (
            "blocked_prefix",
            Pkt::tcp("10.61.3.4", "10.50.0.1", 80, 0x02).build(),
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
        (
            "udp_listening_port",
            Pkt::udp("10.50.0.8", "10.50.0.1", 53).build(),
        ),
    ];
    for (name, frame) in paths {
        let (v, ns) = prog_cost(&mut h, &frame);
        out.push(PathCost {
            name,
            ns_per_packet: ns,
            verdict: v,
        });
    }

    // New sources: one run per distinct source; the same one-at-a-time method for
    // the floor, so timer overhead cancels out in the ratio.
    let sources = (repeat / 100).max(100);
    let mut new_total = 0.0;
    let mut floor_total = 0.0;
    let mut verdict = 0;
    for i in 0..sources {
        let src = format!(
            "10.{}.{}.{}",
            100 + (i >> 16) % 100,
            (i >> 8) & 0xff,
            i & 0xff
        );
        let frame = Pkt::tcp(&src, "10.50.0.1", 80, 0x02).build();
        let (v, ns) = h.try_run(&frame, 1).expect("test run");
        verdict = v;
        new_total += ns as f64;
        floor_total += repeat_cost(base_prog, &frame, 1).1;
    }
    out.push(PathCost {
        name: "syn_new_source",
        ns_per_packet: new_total / sources as f64,
        verdict,
    });
    out.push(PathCost {
        name: "empty_xdp_pass_single_runs",
        ns_per_packet: floor_total / sources as f64,
        verdict: 2,
    });
    out
}
