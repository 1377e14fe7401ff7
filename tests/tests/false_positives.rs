//! False positives: none allowed. Against the real controller (native XDP on the
//! target's veth, default configuration, nginx on ports 80, 443, 8080, 8443 and
//! 9090), over one run, from a client namespace on a bridge in a switch namespace:
//! - wrk with keep-alive (64 connections) and with `Connection: close` (a new
//!   connection per request: thousands per second from one address to one port),
//!   over IPv4 and over IPv6;
//! - at the same time, each from an address of its own, over IPv4 and IPv6: a
//!   client opening many short connections to three open ports, a client that hits
//!   one closed port a few times (a typo), six clients behind one address (NAT),
//!   and a health checker connecting to five service ports every second;
//! - then a real scan from the attacker, which must be blocked (the control: the
//!   guard was on all along).
//!
//! No legitimate source may appear in any event (not as `src`, not among the
//! `sources` of a hint) or in `scan-guard list`. Totals:
//! target/bench/false_positives.json.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use scan_guard_tests::{
    is_root,
    lab::read_lossy,
    scenario::{
        attacks::{self, Attack},
        legit::{self, Behaviour, Pattern, WrkPlan},
        measure,
        stage::{Stage, StageOptions},
        table,
    },
};
use serde_json::{Value, json};

const SERVICE_PORTS: [u16; 5] = [80, 443, 8080, 8443, 9090];
const CLOSED_PORT: u16 = 8081;

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}:{port}/"),
        IpAddr::V6(a) => format!("http://[{a}]:{port}/"),
    }
}

/// The four client patterns from `srcs` (four addresses) to `dst`.
fn patterns(family: &str, srcs: &[IpAddr], dst: IpAddr) -> Vec<Pattern> {
    vec![
        Pattern {
            name: format!("short connections to 3 open ports ({family})"),
            src: srcs[0],
            dst,
            behaviour: Behaviour::ShortConnections {
                ports: vec![80, 443, 8080],
                every: Duration::from_millis(10),
            },
        },
        Pattern {
            name: format!("typo: closed port {CLOSED_PORT} 4 times ({family})"),
            src: srcs[1],
            dst,
            behaviour: Behaviour::Typo {
                port: CLOSED_PORT,
                times: 4,
                every: Duration::from_secs(2),
            },
        },
        Pattern {
            name: format!("6 clients behind one address (NAT) ({family})"),
            src: srcs[2],
            dst,
            behaviour: Behaviour::Nat {
                clients: 6,
                ports: vec![80, 443],
                every: Duration::from_millis(50),
            },
        },
        Pattern {
            name: format!("health checker, 5 ports every second ({family})"),
            src: srcs[3],
            dst,
            behaviour: Behaviour::HealthCheck {
                ports: SERVICE_PORTS.to_vec(),
                every: Duration::from_secs(1),
            },
        },
    ]
}

/// True when `e` names `addr` as its source or among its `sources`.
fn mentions(e: &Value, addr: &str) -> bool {
    e["src"] == addr
        || e["sources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == addr))
}

#[test]
fn legitimate_traffic_is_never_reported_or_blocked() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let mut opts = StageOptions::new("false-pos");
    opts.client = true;
    opts.ports = SERVICE_PORTS.to_vec();
    let stage = Stage::new(&opts);
    let lab = &stage.lab;
    let cli = lab.client().clone();
    let v4: Vec<IpAddr> = lab
        .add_v4(&cli, 60..=63)
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    let v6: Vec<IpAddr> = lab
        .add_v6(&cli, 0x60..=0x63)
        .into_iter()
        .map(IpAddr::V6)
        .collect();
    let (tgt4, tgt6) = (IpAddr::V4(lab.tgt.v4), IpAddr::V6(lab.tgt.v6));
    let mut all = patterns("IPv4", &v4, tgt4);
    all.extend(patterns("IPv6", &v6, tgt6));

    // The patterns run on their own threads for the whole wrk sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let plans = [
        (tgt4, false, 64, "wrk keep-alive, 64 connections (IPv4)"),
        (tgt4, true, 32, "wrk Connection: close (IPv4)"),
        (tgt6, false, 64, "wrk keep-alive, 64 connections (IPv6)"),
        (tgt6, true, 32, "wrk Connection: close (IPv6)"),
    ]
    .map(|(ip, close, connections, label)| WrkPlan {
        label: label.to_owned(),
        url: url(ip, 80),
        connections,
        close,
        duration: Duration::from_secs(4),
        delay_ms: None,
    });
    let (totals, wrks) = std::thread::scope(|s| {
        let h = s.spawn(|| legit::run_patterns(&cli.ns, &all, &stop, Duration::from_secs(60)));
        let mut wrks = Vec::new();
        for plan in &plans {
            eprintln!("[false-pos] {}", plan.label);
            let w = legit::spawn_wrk(lab, &cli.ns, plan);
            let done = lab.wait_for(w.proc, plan.duration + Duration::from_secs(10));
            assert!(done.is_some(), "wrk {} did not finish", plan.label);
            wrks.push(legit::finish_wrk(lab, &w, plan));
            stage
                .lab
                .assert_running(&stage.ctl, "under legitimate load");
        }
        stop.store(true, Ordering::SeqCst);
        (h.join().expect("patterns"), wrks)
    });
    let load_s = t0.elapsed().as_secs_f64();

    // The control: a real scan from the attacker is still caught and blocked.
    let control_attack: Attack = attacks::matrix()
        .into_iter()
        .find(|a| a.name == "nmap -sS -T4")
        .expect("nmap -sS -T4 in the matrix");
    let control = measure::run(&stage, &control_attack, &mut |l| {
        eprintln!("[false-pos] control: {l}")
    })
    .expect("nothing interrupts a test");

    let events = stage.ctl.events();
    let list = stage.ctl.list();
    let mut legit_addrs: Vec<String> = vec![cli.v4.to_string(), cli.v6.to_string()];
    legit_addrs.extend(v4.iter().chain(&v6).map(IpAddr::to_string));
    let reported: Vec<String> = events
        .iter()
        .filter(|e| legit_addrs.iter().any(|a| mentions(e, a)))
        .map(|e| e.to_string())
        .collect();
    let listed: Vec<String> = list
        .iter()
        .filter(|r| legit_addrs.iter().any(|a| r["addr"] == a.as_str()))
        .map(|r| r.to_string())
        .collect();
    let status = stage.lab.stop_controller(&stage.ctl);

    let wrk_requests: u64 = wrks.iter().map(|w| w.requests).sum();
    let wrk_errors: u64 = wrks.iter().map(legit::WrkResult::errors).sum();
    let ok: u64 = totals.iter().map(|t| t.ok).sum();
    let conns: u64 = totals.iter().map(|t| t.connections).sum();
    let errors: u64 = totals.iter().map(|t| t.errors).sum();
    eprintln!();
    for w in &wrks {
        eprintln!(
            "{:<44} {:>8} requests in {:.1} s ({:>6.0}/s), errors {} (connect {}, read {}, write {}, timeout {}, non-2xx {})",
            w.label,
            w.requests,
            w.seconds,
            w.requests_per_s,
            w.errors(),
            w.errors_connect,
            w.errors_read,
            w.errors_write,
            w.errors_timeout,
            w.non_2xx
        );
    }
    for t in &totals {
        eprintln!(
            "{:<52} from {:<15} ok {:>6}, connections {:>6}, expected refusals {}, errors {}{}",
            t.name,
            t.src,
            t.ok,
            t.connections,
            t.refused_expected,
            t.errors,
            t.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        );
    }
    eprintln!(
        "legitimate totals: {} requests served ({wrk_requests} by wrk, {ok} by the client patterns over {conns} connections), {} errors; reported {}, blocked {}; control scan blocked {} after {} probes",
        wrk_requests + ok,
        wrk_errors + errors,
        reported.len(),
        listed.len(),
        control.blocked,
        control.probes_reached_target
    );
    let path = table::write_bench_json(
        "false_positives.json",
        &json!({
            "generated_unix_s": measure::unix_now(),
            "load_s": load_s,
            "wall_s": t0.elapsed().as_secs_f64(),
            "wrk": wrks,
            "patterns": totals,
            "requests_served": wrk_requests + ok,
            "errors": wrk_errors + errors,
            "legitimate_sources": legit_addrs,
            "legitimate_sources_reported": reported.len(),
            "legitimate_sources_blocked": listed.len(),
            "events_total": events.len(),
            "control": control,
        }),
    );
    eprintln!("results: {}", path.display());

    assert!(
        status.success(),
        "controller exit on SIGTERM: {status:?}\n{}",
        read_lossy(&stage.ctl.log)
    );
    assert!(
        reported.is_empty() && listed.is_empty(),
        "legitimate sources reported or blocked:\n--- events ---\n{}\n--- list ---\n{}",
        reported.join("\n"),
        listed.join("\n")
    );
    for t in &totals {
        if t.name.starts_with("typo") {
            assert_eq!(
                (t.refused_expected, t.errors),
                (4, 0),
                "{}: every connection to the closed port is refused: {t:?}",
                t.name
            );
        } else {
            assert!(t.ok > 0, "{} was never served: {t:?}", t.name);
        }
    }
    assert!(
        wrks.iter().all(|w| w.requests > 0),
        "a wrk run was never served: {wrks:?}"
    );
    assert!(
        control.correct(),
        "the control scan was not detected and blocked: {control:?}\n--- events ---\n{}",
        events.iter().map(|e| format!("{e}\n")).collect::<String>()
    );
}
