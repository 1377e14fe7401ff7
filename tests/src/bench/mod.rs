//! `cargo xtask bench`: per-packet cost, flood drop rate, legitimate throughput,
//! scale and blocklist operations, each next to baselines measured in the same
//! run, written to `results.json`; [`report`] turns that into BENCHMARKS.md and
//! PNG charts.
//!
//! Every packet stays inside network namespaces the benchmark creates ([`netns`]):
//! veth pairs, addresses assigned there, no default route. Each part runs on its
//! own; a part that fails is recorded as failed and the others still run.

pub mod blocklist_ops;
pub mod controller;
pub mod flood;
pub mod machine;
pub mod netns;
pub mod per_packet;
pub mod report;
pub mod results;
pub mod scale;
pub mod sys;
pub mod throughput;
pub mod xdp_filter;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    time::Instant,
};

use results::{CostRow, Goal, PartStatus, PerPacket, Results};

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub repeat: u32,
    pub rounds: u32,
    pub new_sources: u32,
    pub block_sizes: Vec<u32>,
    pub flood_entries: Vec<u32>,
    pub flood_calibrate: u32,
    pub flood_secs: f64,
    pub flood_rounds: u32,
    pub flood_batch: u32,
    pub wrk_secs: u32,
    pub wrk_rounds: u32,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub scale_sources: u32,
    pub nmap_ports: u32,
    pub ops_entries: u32,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            repeat: 1_000_000,
            rounds: 7,
            new_sources: 20_000,
            block_sizes: vec![1, 10_000, 1_000_000],
            flood_entries: vec![1, 10_000],
            flood_calibrate: 200_000,
            flood_secs: 0.6,
            flood_rounds: 5,
            flood_batch: 64,
            wrk_secs: 3,
            wrk_rounds: 5,
            wrk_threads: 1,
            wrk_connections: 32,
            scale_sources: 1_000_000,
            nmap_ports: 1000,
            ops_entries: 100_000,
        }
    }

    /// Every part, tiny: seconds in total, for CI.
    pub fn smoke() -> Self {
        Self {
            repeat: 10_000,
            rounds: 1,
            new_sources: 100,
            block_sizes: vec![1, 100],
            flood_entries: vec![1, 100],
            flood_calibrate: 5_000,
            flood_secs: 0.02,
            flood_rounds: 1,
            flood_batch: 64,
            wrk_secs: 1,
            wrk_rounds: 1,
            wrk_threads: 1,
            wrk_connections: 8,
            scale_sources: 2_000,
            nmap_ports: 100,
            ops_entries: 1_000,
        }
    }
}

/// The parts, in the order they run.
pub const PARTS: [&str; 5] = [
    "per-packet",
    "flood",
    "throughput",
    "scale",
    "blocklist-ops",
];

pub struct Options {
    pub smoke: bool,
    pub only: Vec<String>,
    pub controller: PathBuf,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn part<T>(
    parts: &mut Vec<PartStatus>,
    name: &str,
    wanted: bool,
    f: impl FnOnce() -> T,
) -> Option<T> {
    if !wanted {
        parts.push(PartStatus {
            part: name.into(),
            status: "skipped".into(),
            detail: "not selected (--only)".into(),
            secs: 0.0,
        });
        return None;
    }
    eprintln!("bench: {name} ...");
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f));
    let secs = t.elapsed().as_secs_f64();
    eprintln!("bench: {name} took {secs:.1} s");
    match r {
        Ok(v) => {
            parts.push(PartStatus {
                part: name.into(),
                status: "ok".into(),
                detail: String::new(),
                secs,
            });
            Some(v)
        }
        Err(p) => {
            let msg = panic_text(p.as_ref());
            eprintln!("bench: {name} FAILED: {msg}");
            parts.push(PartStatus {
                part: name.into(),
                status: "failed".into(),
                detail: msg,
                secs,
            });
            None
        }
    }
}

/// Runs the selected parts; never panics for a part's failure (see `parts`).
pub fn run(opts: &Options) -> Results {
    let started = Instant::now();
    let sizes = if opts.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    let wanted = |p: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == p);
    let mut r = Results {
        schema: results::SCHEMA,
        smoke: opts.smoke,
        started: scan_guard::base::clock::rfc3339_unix(scan_guard::base::clock::unix_now()),
        machine: machine::collect(sys::bench_cpu()),
        ..Default::default()
    };
    let mut parts = Vec::new();
    r.per_packet = part(&mut parts, PARTS[0], wanted(PARTS[0]), || {
        per_packet::run(&sizes)
    });
    r.flood = part(&mut parts, PARTS[1], wanted(PARTS[1]), || {
        flood::run(&sizes)
    });
    r.throughput = part(&mut parts, PARTS[2], wanted(PARTS[2]), || {
        throughput::run(&sizes, &opts.controller)
    });
    r.scale = part(&mut parts, PARTS[3], wanted(PARTS[3]), || {
        scale::run(&sizes, &opts.controller)
    });
    r.blocklist_ops = part(&mut parts, PARTS[4], wanted(PARTS[4]), || {
        blocklist_ops::run(&sizes)
    });
    // Parts that ran but left some rows out say so.
    for p in &mut parts {
        let skipped_rows = match p.part.as_str() {
            "per-packet" => r.per_packet.as_ref().map(|x| &x.notes),
            "flood" => r.flood.as_ref().map(|x| &x.notes),
            "blocklist-ops" => r.blocklist_ops.as_ref().map(|x| &x.notes),
            _ => None,
        }
        .map(|notes| {
            notes
                .iter()
                .filter(|n| n.contains("skipped") || n.contains("not measured"))
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
        if p.status == "ok" && !skipped_rows.is_empty() {
            p.status = "partial".into();
            p.detail = skipped_rows.join("; ");
        }
    }
    r.parts = parts;
    r.goals = goals(&r);
    r.machine.loadavg_end = machine::loadavg();
    r.wall_secs = started.elapsed().as_secs_f64();
    r
}

fn goal(goal: &str, measured: String, met: Option<bool>) -> Goal {
    Goal {
        goal: goal.into(),
        measured,
        met,
    }
}

/// The per-packet goals (BPF_PROG_TEST_RUN, ratios to the empty program of
/// the same run).
const PER_PACKET_GOALS: [&str; 6] = [
    "blocked source (exact and prefix, every list size) <= 1.6x the empty program, flat across sizes",
    "established-flow ACK, any list size, <= 1.6x empty",
    "SYN from a tracked source, invalid flags, UDP to a closed port: <= 67 ns and <= 3x empty",
    "SYN from a new source to a listening port <= 2x empty",
    "first probe of a new source to a closed port <= 150 ns",
    "xdp-filter (a static filter) never faster on the blocked path",
];

fn per_packet_goals(pp: &PerPacket, g: &mut Vec<Goal>) {
    let sg: Vec<&CostRow> = pp
        .rows
        .iter()
        .filter(|x| x.program == "scan-guard")
        .collect();
    let list = |rows: &[&CostRow]| {
        rows.iter()
            .map(|x| format!("{} {:.0} ns ({:.2}x)", x.name, x.ns, x.vs_empty))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let judged = |name: &str, rows: Vec<&CostRow>, ok: &dyn Fn(&CostRow) -> bool| {
        let measured = if rows.is_empty() {
            "not measured in this run".to_string()
        } else {
            list(&rows)
        };
        let met = (!rows.is_empty()).then(|| rows.iter().all(|x| ok(x)));
        goal(name, measured, met)
    };
    let blocked: Vec<&CostRow> = sg
        .iter()
        .copied()
        .filter(|x| x.name.starts_with("blocked"))
        .collect();
    let spread = {
        let lo = blocked.iter().map(|x| x.ns).fold(f64::INFINITY, f64::min);
        let hi = blocked.iter().map(|x| x.ns).fold(0.0, f64::max);
        hi / lo.max(1e-9)
    };
    let mut blocked_goal = judged(PER_PACKET_GOALS[0], blocked.clone(), &|x| x.vs_empty <= 1.6);
    blocked_goal.measured = format!(
        "{}; slowest/fastest {spread:.2}x; IPv6 blocked rows not measured",
        blocked_goal.measured
    );
    g.push(blocked_goal);
    g.push(judged(
        PER_PACKET_GOALS[1],
        sg.iter()
            .copied()
            .filter(|x| x.name.starts_with("established_ack"))
            .collect(),
        &|x| x.vs_empty <= 1.6,
    ));
    g.push(judged(
        PER_PACKET_GOALS[2],
        sg.iter()
            .copied()
            .filter(|x| {
                [
                    "syn_tracked_source",
                    "invalid_flags_xmas",
                    "udp_closed_port",
                ]
                .contains(&x.name.as_str())
            })
            .collect(),
        &|x| x.ns <= 67.0 && x.vs_empty <= 3.0,
    ));
    g.push(judged(
        PER_PACKET_GOALS[3],
        sg.iter()
            .copied()
            .filter(|x| x.name == crate::cost::NEW_SOURCE_LISTENING)
            .collect(),
        &|x| x.vs_empty <= 2.0,
    ));
    g.push(judged(
        PER_PACKET_GOALS[4],
        sg.iter()
            .copied()
            .filter(|x| x.name.starts_with(crate::cost::NEW_SOURCE_CLOSED))
            .collect(),
        &|x| x.ns <= 150.0,
    ));
    let pairs: Vec<&CostRow> = blocked
        .iter()
        .copied()
        .filter(|x| x.vs_xdp_filter.is_some())
        .collect();
    g.push(goal(
        PER_PACKET_GOALS[5],
        if pairs.is_empty() {
            "not measured in this run".into()
        } else {
            pairs
                .iter()
                .map(|x| {
                    format!(
                        "{} {:.2}x xdp-filter's time",
                        x.name,
                        x.vs_xdp_filter.unwrap_or(f64::NAN)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        (!pairs.is_empty()).then(|| pairs.iter().all(|x| x.vs_xdp_filter.unwrap_or(2.0) < 1.0)),
    ));
}

/// The goals, judged from this run's numbers only.
pub fn goals(r: &Results) -> Vec<Goal> {
    let mut g = Vec::new();
    let missing = || "not measured in this run".to_string();
    match &r.per_packet {
        Some(pp) => per_packet_goals(pp, &mut g),
        None => {
            for name in PER_PACKET_GOALS {
                g.push(goal(name, missing(), None));
            }
        }
    }
    let fl = r.flood.as_ref();
    let sg_rows: Vec<_> = fl
        .map(|f| {
            f.rows
                .iter()
                .filter(|x| x.name.starts_with("scan-guard"))
                .collect()
        })
        .unwrap_or_default();
    let find = |name: &str| fl.and_then(|f| f.rows.iter().find(|x| x.name == name));
    let empty = find(flood::EMPTY_DROP);
    g.push(goal(
        "flood: >= 85% of the empty XDP_DROP program's drop rate",
        match (empty, sg_rows.is_empty()) {
            (Some(e), false) => sg_rows
                .iter()
                .map(|x| {
                    format!(
                        "{}: {:.0}% ({:.2} of {:.2} Mpps)",
                        x.name,
                        100.0 * x.vs_xdp_drop,
                        x.mpps,
                        e.mpps
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => missing(),
        },
        (empty.is_some() && !sg_rows.is_empty())
            .then(|| sg_rows.iter().all(|x| x.vs_xdp_drop >= 0.85)),
    ));
    let pairs: Vec<(f64, f64, Option<u32>)> = sg_rows
        .iter()
        .filter_map(|s| {
            let f = fl?
                .rows
                .iter()
                .find(|x| x.name.starts_with("xdp-filter") && x.entries == s.entries)?;
            Some((s.mpps, f.mpps, s.entries))
        })
        .collect();
    g.push(goal(
        "flood: ahead of xdp-filter",
        if pairs.is_empty() {
            missing()
        } else {
            pairs
                .iter()
                .map(|(s, f, n)| {
                    format!(
                        "{}: {s:.2} vs {f:.2} Mpps ({:.2}x)",
                        crate::cost::entries_label(n.unwrap_or(0)),
                        s / f
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        (!pairs.is_empty()).then(|| pairs.iter().all(|(s, f, _)| s > f)),
    ));
    let ipt = find(flood::IPTABLES_RAW);
    g.push(goal(
        "flood: >= 5x iptables raw-table DROP",
        match (ipt, sg_rows.is_empty()) {
            (Some(i), false) => sg_rows
                .iter()
                .map(|x| {
                    format!(
                        "{}: {:.1}x ({:.2} vs {:.2} Mpps)",
                        x.name,
                        x.mpps / i.mpps,
                        x.mpps,
                        i.mpps
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => missing(),
        },
        (ipt.is_some() && !sg_rows.is_empty()).then(|| {
            sg_rows
                .iter()
                .all(|x| x.vs_iptables_raw.unwrap_or(0.0) >= 5.0)
        }),
    ));
    match &r.throughput {
        Some(t) => {
            let sg: Vec<_> = t
                .rows
                .iter()
                .filter(|x| x.variant == throughput::SCAN_GUARD)
                .collect();
            // Largest max/min - 1 over the runs of one variant: when the machine's own
            // noise is several times the 5% to judge, a verdict would be a coin toss.
            let spread = t
                .rows
                .iter()
                .filter(|x| x.variant != throughput::EMPTY_PASS && x.requests_per_sec.len() > 1)
                .map(|x| {
                    let lo = x
                        .requests_per_sec
                        .iter()
                        .copied()
                        .fold(f64::INFINITY, f64::min);
                    let hi = x.requests_per_sec.iter().copied().fold(0.0, f64::max);
                    hi / lo.max(1e-9) - 1.0
                })
                .fold(0.0, f64::max);
            let noisy = spread > 0.2;
            let empty = |mode: &str| {
                t.rows
                    .iter()
                    .find(|x| x.mode == mode && x.variant == throughput::EMPTY_PASS)
                    .map(|x| x.median)
            };
            g.push(goal(
                "legitimate throughput with scan-guard within 5% of none",
                format!(
                    "{}{}",
                    if noisy {
                        format!(
                            "inconclusive: runs of the same variant differ by up to {:.0}%, \
                             more than the 5% to judge; medians: ",
                            100.0 * spread
                        )
                    } else {
                        String::new()
                    },
                    sg.iter()
                        .map(|x| {
                            format!(
                                "{}: {:+.1}% vs no XDP ({:+.1}% vs the empty XDP_PASS program)",
                                x.mode,
                                100.0 * (x.vs_no_xdp - 1.0),
                                empty(&x.mode).map_or(f64::NAN, |e| 100.0 * (x.median / e - 1.0))
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                (!noisy).then(|| !sg.is_empty() && sg.iter().all(|x| x.vs_no_xdp >= 0.95)),
            ));
        }
        None => g.push(goal(
            "legitimate throughput with scan-guard within 5% of none",
            missing(),
            None,
        )),
    }
    match &r.scale {
        Some(s) => g.push(goal(
            "a real nmap scan during the spoofed-source flood is still caught",
            s.nmap_detail.clone(),
            Some(s.nmap_caught),
        )),
        None => g.push(goal(
            "a real nmap scan during the spoofed-source flood is still caught",
            missing(),
            None,
        )),
    }
    g
}

/// True when every selected part ran (fully or with documented skips).
pub fn all_ok(r: &Results) -> bool {
    r.parts.iter().all(|p| p.status != "failed")
}
