//! The goals for the benchmarks, judged from one run's numbers only.

use super::{
    cost, flood,
    results::{CostRow, Goal, PerPacket, Results},
    throughput,
};

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
    let v6 = blocked.iter().filter(|x| x.name.contains("_v6")).count();
    blocked_goal.measured = format!(
        "{}; slowest/fastest {spread:.2}x{}",
        blocked_goal.measured,
        if v6 == 0 {
            "; IPv6 blocked rows not measured"
        } else {
            ""
        }
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
            .filter(|x| x.name == cost::NEW_SOURCE_LISTENING)
            .collect(),
        &|x| x.vs_empty <= 2.0,
    ));
    g.push(judged(
        PER_PACKET_GOALS[4],
        sg.iter()
            .copied()
            .filter(|x| x.name.starts_with(cost::NEW_SOURCE_CLOSED))
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
                        cost::entries_label(n.unwrap_or(0)),
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
    let ratios = fl
        .map(|f| flood::random_source_ratios(&f.rows))
        .unwrap_or_default();
    g.push(goal(
        "random-source SYN flood (open and closed port): the host's SYN handling >= 95% of its rate through an empty XDP_PASS program",
        if ratios.is_empty() {
            missing()
        } else {
            ratios
                .iter()
                .map(|(name, sg, empty)| {
                    format!(
                        "{name}: {:.0}% ({sg:.2} vs {empty:.2} Mpps)",
                        100.0 * sg / empty
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        (ratios.len() == 2).then(|| ratios.iter().all(|(_, sg, empty)| sg / empty >= 0.95)),
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
