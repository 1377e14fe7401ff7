//! One benchmark run: the selected parts in order, each on its own (a part that
//! panics is recorded as failed and the others still run), then the goals.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    time::Instant,
};

use super::{
    blocklist_ops, flood, goals, machine, per_packet,
    results::{self, PartStatus, Results},
    scale,
    sizes::Sizes,
    sys, throughput,
};

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
    r.goals = goals::goals(&r);
    r.machine.loadavg_end = machine::loadavg();
    r.wall_secs = started.elapsed().as_secs_f64();
    r
}

/// True when every selected part ran (fully or with documented skips).
pub fn all_ok(r: &Results) -> bool {
    r.parts.iter().all(|p| p.status != "failed")
}
