//! `scan-guard-demo`, what `cargo xtask demo` runs (as root, after building it and
//! scan-guard in release mode): the network-namespace lab, `scan-guard run` on the
//! target's side, and a scripted story with live progress lines:
//! 1. a legitimate client starts steady HTTP load from its own namespace (wrk with
//!    keep-alive and wrk with `Connection: close`) against nginx on the target;
//! 2. real attacks from the attacker's namespace, each from a source address of
//!    its own: nmap -sS -sT -sX -sN -sF -sA -sM -sU, a TCP SYN host sweep, a
//!    masscan burst, hping3 invalid-flag packets;
//! 3. a final table: attack, detected as, probes that reached the target before
//!    the block, time to block, blocked; and the legitimate client's totals.
//!
//! Exit status 0 only if every attack was detected (with the right kind) and
//! blocked and the legitimate client was never reported or blocked; 1 otherwise;
//! 128+signal when interrupted (Ctrl-C, SIGTERM). Every packet stays inside the
//! lab's namespaces, and the lab leaves nothing behind (namespaces, processes,
//! bpffs mount, pins), also on Ctrl-C or a failure: the demo checks and says so.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use scan_guard_lab::{
    is_root,
    lab::{event_name, netns_list},
    scenario::{
        attacks,
        interrupt::{self, Interrupted},
        legit::{self, WrkPlan, WrkResult},
        measure::{self, Outcome},
        stage::{self, Stage, StageOptions},
        table,
    },
};
use serde_json::json;

fn main() {
    interrupt::install();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if interrupt::interrupted() {
            eprintln!("scan-guard demo: interrupted during a step ({info}); cleaning up");
        } else {
            default_hook(info);
        }
    }));
    let code = match std::panic::catch_unwind(story) {
        Ok(code) => code,
        Err(_) if interrupt::interrupted() => interrupt::exit_code(),
        Err(_) => {
            eprintln!("scan-guard demo: failed (see above); the lab was torn down");
            1
        }
    };
    std::process::exit(code);
}

/// Prints a progress line with the time since the start.
struct Log {
    t0: Instant,
}

impl Log {
    fn line(&self, text: &str) {
        println!("[{:>6.1}s] {text}", self.t0.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
    }
}

/// What the story found.
struct Story {
    rows: Vec<Outcome>,
    wrk: Vec<WrkResult>,
    client: Vec<String>,
    client_reported: Vec<String>,
    client_listed: bool,
    client_served_at_end: bool,
}

fn story() -> i32 {
    if !is_root() {
        eprintln!(
            "scan-guard demo: needs root (network namespaces, XDP, raw-socket scanners); run `sudo cargo xtask demo`"
        );
        return 1;
    }
    let log = Log { t0: Instant::now() };
    println!("scan-guard demo: a port-scan detector on a real kernel, against real scanners");
    println!();
    let (result, lab_id, namespaces, lab_dir) = {
        log.line("setting up the lab: attacker, client and target namespaces on a bridge");
        let mut opts = StageOptions::new("demo");
        opts.client = true;
        let stage = Stage::new(&opts);
        let lab = &stage.lab;
        let cli = lab.client().clone();
        log.line(&format!(
            "lab {}: attacker {} (+{} source addresses, one per attack), client {}, target {} (+ {}-{} for sweeps); no default route anywhere",
            lab.id,
            lab.att.v4,
            opts.attacker_v4.clone().count(),
            cli.v4,
            lab.tgt.v4,
            stage.target.sweep[0],
            stage::SWEEP.end()
        ));
        log.line(&format!(
            "nginx on the target: ports {}; scan-guard run --iface {} --xdp-mode native (pid {}), default configuration",
            stage
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            lab.tgt.iface,
            lab.controller_pid(&stage.ctl)
                .map_or("?".to_owned(), |p| p.to_string())
        ));
        let result = play(&stage, &log);
        let ids = (lab.id.clone(), lab.namespaces(), lab.dir.clone());
        if result.is_err() {
            log.line("interrupted: stopping every process and tearing the lab down");
        } else {
            log.line("tearing the lab down");
        }
        drop(stage);
        (result, ids.0, ids.1, ids.2)
    };
    let left = leftovers(&lab_id, &namespaces, &lab_dir);
    if left.is_empty() {
        log.line(&format!(
            "cleanup: {} namespaces, every process, the bpffs mount and its pins of lab {lab_id} are gone",
            namespaces.len()
        ));
    } else {
        log.line(&format!("cleanup: LEFT BEHIND: {}", left.join("; ")));
    }
    match result {
        Err(e) => {
            println!("scan-guard demo: {e}");
            interrupt::exit_code()
        }
        Ok(s) => report(&s, left.is_empty()),
    }
}

fn play(stage: &Stage, log: &Log) -> Result<Story, Interrupted> {
    let lab = &stage.lab;
    let cli = lab.client().clone();
    let tgt = IpAddr::V4(lab.tgt.v4);
    if let Err(e) = lab.http_get(&cli.ns, tgt, 80) {
        panic!("the client is not served before anything happened: {e}");
    }

    // 1. Steady legitimate load for the whole story (stopped with SIGINT at the end).
    let plans = [
        WrkPlan {
            label: "wrk keep-alive".into(),
            url: format!("http://{tgt}/"),
            connections: 16,
            close: false,
            duration: Duration::from_secs(500),
            delay_ms: Some(10),
        },
        WrkPlan {
            label: "wrk Connection: close".into(),
            url: format!("http://{tgt}:8080/"),
            connections: 4,
            close: true,
            duration: Duration::from_secs(500),
            delay_ms: Some(5),
        },
    ];
    let wrks: Vec<legit::Wrk> = plans
        .iter()
        .map(|p| legit::spawn_wrk(lab, &cli.ns, p))
        .collect();
    log.line(&format!(
        "1. legitimate client {}: wrk keep-alive (16 connections to port 80) and wrk Connection: close (4 connections to port 8080, a new connection per request), steady",
        cli.v4
    ));
    interrupt::sleep(Duration::from_secs(2))?;
    let client = vec![cli.v4.to_string(), cli.v6.to_string()];
    let client_events = || -> Vec<String> {
        stage
            .ctl
            .events()
            .iter()
            .filter(|e| client.iter().any(|a| e["src"] == a.as_str()))
            .map(|e| format!("{} {}", event_name(e), e["kind"]))
            .collect()
    };

    // 2. The attacks, one after the other, each from a fresh source.
    let plan = attacks::demo();
    log.line(&format!(
        "2. {} attacks from the attacker namespace, each from a fresh source address",
        plan.len()
    ));
    let mut rows = Vec::new();
    for (i, a) in plan.iter().enumerate() {
        interrupt::check()?;
        log.line(&format!("   attack {}/{}: {}", i + 1, plan.len(), a.name));
        let o = measure::run(stage, a, &mut |l| log.line(&format!("      {l}")))?;
        let what = if o.blocked {
            format!(
                "detected {} ({} {}), blocked: {} probes reached the target, {}",
                o.kind.as_deref().unwrap_or("?"),
                o.origin.as_deref().unwrap_or("?"),
                o.rule.as_deref().unwrap_or("?"),
                o.probes_reached_target,
                o.time_to_block_ms.map_or("-".to_owned(), |t| format!(
                    "{t:.1} ms after the first probe"
                ))
            )
        } else if o.detected {
            format!(
                "detected {} but NOT blocked",
                o.kind.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "NOT detected ({} probes reached the target)",
                o.probes_reached_target
            )
        };
        log.line(&format!("      from {}: {what}", o.source));
        rows.push(o);
        let bad = client_events();
        if !bad.is_empty() {
            log.line(&format!(
                "      the legitimate client was reported: {bad:?}"
            ));
        }
    }

    // 3. Wrap up the legitimate load.
    interrupt::check()?;
    let client_served_at_end = lab.http_get(&cli.ns, tgt, 80).is_ok();
    let wrk: Vec<WrkResult> = wrks
        .iter()
        .zip(&plans)
        .map(|(w, p)| legit::finish_wrk(lab, w, p))
        .collect();
    let client_listed = client.iter().any(|a| stage.ctl.listed(a).is_some());
    let client_reported = client_events();
    log.line("3. results");
    Ok(Story {
        rows,
        wrk,
        client,
        client_reported,
        client_listed,
        client_served_at_end,
    })
}

fn report(s: &Story, clean: bool) -> i32 {
    println!();
    print!("{}", table::attacks(&s.rows));
    print!("{}", table::footnotes(&s.rows));
    let served: u64 = s.wrk.iter().map(|w| w.requests).sum();
    let errors: u64 = s.wrk.iter().map(WrkResult::errors).sum();
    let secs = s.wrk.iter().map(|w| w.seconds).fold(0.0, f64::max);
    let detail: Vec<String> = s
        .wrk
        .iter()
        .map(|w| format!("{} {}", w.label, w.requests))
        .collect();
    let never = s.client_reported.is_empty() && !s.client_listed;
    println!();
    println!(
        "legitimate client {}: requests served {served} in {secs:.0} s ({}), errors {errors}, blocked {}",
        s.client[0],
        detail.join(", "),
        if never { "never" } else { "YES" }
    );
    if !s.client_reported.is_empty() {
        println!("  reported: {:?}", s.client_reported);
    }
    let caught = s.rows.iter().filter(|r| r.correct()).count();
    let ok = caught == s.rows.len() && never && s.client_served_at_end && clean;
    let path = table::write_bench_json(
        "demo.json",
        &json!({
            "generated_unix_s": measure::unix_now(),
            "attacks": s.rows,
            "legit": {"wrk": s.wrk, "reported": s.client_reported, "blocked": s.client_listed},
            "pass": ok,
        }),
    );
    for m in table::misses(&s.rows) {
        println!("target missed: {m}");
    }
    println!();
    if ok {
        println!(
            "PASS: {caught}/{} attacks detected and blocked; the legitimate client was never blocked ({})",
            s.rows.len(),
            path.display()
        );
        0
    } else {
        let mut why = Vec::new();
        if caught < s.rows.len() {
            let missed: Vec<&str> = s
                .rows
                .iter()
                .filter(|r| !r.correct())
                .map(|r| r.name.as_str())
                .collect();
            why.push(format!(
                "{} attacks not detected with the right kind and blocked: {}",
                missed.len(),
                missed.join(", ")
            ));
        }
        if !never {
            why.push("the legitimate client was reported or blocked".to_owned());
        }
        if !s.client_served_at_end {
            why.push("the legitimate client was not served at the end".to_owned());
        }
        if !clean {
            why.push("the lab left something behind".to_owned());
        }
        println!("FAIL: {}", why.join("; "));
        1
    }
}

/// What the lab `id` left behind: namespaces, its directory, a mount under it,
/// processes whose command line names it.
fn leftovers(id: &str, namespaces: &[String], dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let existing = netns_list();
    for ns in namespaces {
        if existing.contains(ns) {
            left.push(format!("namespace {ns}"));
        }
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    let dir_s = dir.to_string_lossy().into_owned();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in m.lines().filter(|l| l.contains(&dir_s)) {
            left.push(format!("mount {line}"));
        }
    }
    let me = std::process::id().to_string();
    let needle = format!("sg-{id}-");
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                continue;
            }
            let cmd = std::fs::read(PathBuf::from("/proc").join(&name).join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if cmd.contains(&needle) || cmd.contains(&dir_s) {
                left.push(format!("process {name}: {}", cmd.trim()));
            }
        }
    }
    left
}
