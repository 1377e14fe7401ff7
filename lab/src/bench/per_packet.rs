//! Part 1: ns/packet of every path with BPF_PROG_TEST_RUN, next to the empty
//! XDP_PASS program and xdp-filter measured round-robin in the same run.

use std::net::Ipv4Addr;

use super::cost::{self, BLOCKED_EXACT, BLOCKED_EXACT_SRC, Case, CostPlan, EMPTY_PASS};
use super::{
    netns::BenchLab,
    results::{CostRow, PerPacket},
    sizes::Sizes,
    sys,
    xdp_filter::XdpFilter,
};
use crate::packet::Pkt;

pub fn run(sizes: &Sizes) -> PerPacket {
    sys::on_cpu(sys::bench_cpu(), || measure(sizes))
}

fn measure(sizes: &Sizes) -> PerPacket {
    let mut notes = Vec::new();
    // xdp-filter needs an interface to load onto: the lab's target veth.
    let lab = BenchLab::new();
    let (filter_prog, mut rules, filter_name) = match XdpFilter::load(&lab, &lab.t, BLOCKED_EXACT.0)
    {
        Ok(f) => (Some(f.prog), Some(f.rules), f.prog_name),
        Err(why) => {
            notes.push(format!("xdp-filter rows skipped: {why}"));
            (None, None, String::new())
        }
    };
    let ack = Pkt::tcp("10.50.0.3", "10.50.0.1", 80, 0x10).build();
    let mut extra = Vec::new();
    if let Some(p) = &filter_prog {
        extra.push(Case {
            name: "xdp-filter: pass (unlisted source)".into(),
            group: "xdp-filter",
            entries: Some(1),
            prog: p,
            frame: ack.clone(),
        });
    }
    let mut size_notes = Vec::new();
    let mut for_size = |n: u32| -> Vec<Case> {
        let (Some(p), Some(r)) = (&filter_prog, rules.as_mut()) else {
            return Vec::new();
        };
        if let Err(why) = r.fill_to(n) {
            size_notes.push(format!(
                "xdp-filter with {} not measured: {why}",
                cost::entries_label(n)
            ));
            return Vec::new();
        }
        vec![Case {
            name: format!("xdp-filter: drop ({})", cost::entries_label(n)),
            group: "xdp-filter",
            entries: Some(n),
            prog: p,
            frame: cost::syn_from(BLOCKED_EXACT_SRC),
        }]
    };
    let plan = CostPlan {
        repeat: sizes.repeat,
        rounds: sizes.rounds,
        new_sources: sizes.new_sources,
        block_sizes: sizes.block_sizes.clone(),
    };
    let report = cost::measure_all(&plan, &extra, &mut for_size);
    notes.extend(size_notes);
    if filter_prog.is_some() {
        notes.push(format!(
            "xdp-filter: program {filter_name} (xdp-tools, loaded by `xdp-filter load -f ipv4,ipv6`, \
             rule by `xdp-filter ip {} --mode src`, more entries written into its filter_ipv4 map \
             with the same value)",
            Ipv4Addr::from(BLOCKED_EXACT.0)
        ));
    }
    if let Some(n) = report.verified_insns {
        notes.push(format!(
            "The kernel's verifier processed {n} instructions to load scan-guard (its limit: \
             1000000); `target/release/verifier-cost` prints the same count for a new build"
        ));
    }
    if report.auto_blocks > 0 {
        notes.push(format!(
            "warning: the main instance auto-blocked {} source(s) while measuring",
            report.auto_blocks
        ));
    }

    let floor = report
        .rows
        .iter()
        .find(|r| r.name == EMPTY_PASS)
        .map_or(1.0, |r| r.ns_per_packet);
    let filter_drop = |entries: Option<u32>| {
        report
            .rows
            .iter()
            .find(|r| r.group == "xdp-filter" && r.verdict == 1 && r.entries == entries)
            .map(|r| r.ns_per_packet)
    };
    let rows = report
        .rows
        .iter()
        .map(|r| CostRow {
            name: r.name.clone(),
            program: match r.group {
                "baseline" => "empty XDP_PASS".into(),
                "driver" => "random-source driver".into(),
                g => g.into(),
            },
            ns: r.ns_per_packet,
            min: r.min,
            max: r.max,
            samples: r.samples,
            verdict: verdict_name(r.verdict).into(),
            entries: r.entries,
            vs_empty: r.ns_per_packet / floor,
            // xdp-filter's rows block an IPv4 source: compared with IPv4 rows.
            vs_xdp_filter: (r.group == "scan-guard" && r.verdict == 1 && !r.name.contains("_v6"))
                .then(|| filter_drop(r.entries))
                .flatten()
                .map(|f| r.ns_per_packet / f),
        })
        .collect();
    notes.push(format!(
        "The new-source rows run behind the random-source driver (bench-programs' \
         random_source_driver: a per-CPU counter rewrites the IPv4 source within 10.128.0.0/9, \
         IP and TCP checksums fixed, then a tail call into the program under test), so every \
         repetition is a packet from a source never seen before; each row is the driver run \
         minus the driver's own cost (its row: driver -> empty program). The listening-port and \
         closed-port rows use the shipped new-source budget ({}/s per CPU), the \"within \
         budget\" row an instance without one. Single runs, for comparison with earlier \
         reports: new source {:.1} ns, tracked source {:.1} ns, empty program {:.1} ns ({} \
         distinct sources, timer overhead included)",
        scan_guard::config::Config::default()
            .detection
            .new_sources_per_cpu_per_sec,
        report.new_source.single_run_new,
        report.new_source.single_run_tracked,
        report.new_source.single_run_empty,
        report.new_source.sources,
    ));
    drop(rules);
    drop(filter_prog);
    drop(lab);
    PerPacket {
        repeat: sizes.repeat,
        rounds: sizes.rounds,
        rows,
        new_source_sources: report.new_source.sources,
        new_source_single_run_ns: report.new_source.single_run_new,
        tracked_single_run_ns: report.new_source.single_run_tracked,
        empty_single_run_ns: report.new_source.single_run_empty,
        inserts: report.inserts.clone(),
        auto_blocks_during_measure: report.auto_blocks,
        counters: report.counters.clone(),
        notes,
    }
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "aborted",
        1 => "drop",
        2 => "pass",
        3 => "tx",
        4 => "redirect",
        _ => "other",
    }
}
