//! Real scanners against the real controller, one scan type per test. The lab has
//! an attacker and a second client on a bridge in a switch namespace, and the
//! target behind it with the controller attached (native XDP) to its veth and an
//! HTTP server on port 8080. For each nmap scan type (`-sS -sT -sF -sX -sN -sA -sW
//! -sM -sU`) and a `-sn -PS80 --disable-arp-ping` host sweep:
//! - the controller reports the attacker with the right `kind`, in a
//!   `scan_detected` and a `blocked` event;
//! - the attacker is in `scan-guard list --json`, and nobody else is;
//! - the attacker's next `curl` to the open port fails, while the second client is
//!   still served;
//! - the kernel counted the drops (`dropped_blocked` in `stats --json`).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    is_root,
    lab::{
        Controller, ControllerOptions, Lab, LabOptions, XdpMode, event_name, is_event,
        quick_scan_args,
    },
};
use serde_json::Value;

const PORT: u16 = 8080;
/// How long a detection may take to show up as events after the scan ended.
const EVENT_LIMIT: Duration = Duration::from_secs(5);

/// What the test runs and what it expects.
struct Case {
    tag: &'static str,
    /// nmap arguments before the target.
    nmap: &'static [&'static str],
    /// The expected `kind` in the events.
    kind: &'static str,
    /// Sweep the target's extra addresses instead of scanning its ports.
    sweep: bool,
}

#[test]
fn syn_scan_ss_is_reported_as_syn_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sS",
        nmap: &["-sS"],
        kind: "syn",
        sweep: false,
    });
}

#[test]
fn connect_scan_st_is_reported_as_connect_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sT",
        nmap: &["-sT"],
        kind: "connect",
        sweep: false,
    });
}

#[test]
fn fin_scan_sf_is_reported_as_fin_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sF",
        nmap: &["-sF"],
        kind: "fin",
        sweep: false,
    });
}

#[test]
fn xmas_scan_sx_is_reported_as_xmas_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sX",
        nmap: &["-sX"],
        kind: "xmas",
        sweep: false,
    });
}

#[test]
fn null_scan_sn_is_reported_as_null_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sN",
        nmap: &["-sN"],
        kind: "null",
        sweep: false,
    });
}

#[test]
fn ack_scan_sa_is_reported_as_ack_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sA",
        nmap: &["-sA"],
        kind: "ack",
        sweep: false,
    });
}

#[test]
fn window_scan_sw_is_reported_as_ack_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sW",
        nmap: &["-sW"],
        kind: "ack",
        sweep: false,
    });
}

#[test]
fn maimon_scan_sm_is_reported_as_maimon_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sM",
        nmap: &["-sM"],
        kind: "maimon",
        sweep: false,
    });
}

#[test]
fn udp_scan_su_is_reported_as_udp_blocked_and_cut_off() {
    run(&Case {
        tag: "scan-sU",
        nmap: &["-sU"],
        kind: "udp",
        sweep: false,
    });
}

#[test]
fn host_sweep_sn_ps_is_reported_as_sweep_blocked_and_cut_off() {
    run(&Case {
        tag: "sweep-sn",
        // Never -Pn with -sn (nmap would send nothing); no ARP discovery either.
        nmap: &[
            "-sn",
            "-n",
            "-PS80",
            "--disable-arp-ping",
            "-T4",
            "--max-retries",
            "1",
            "--max-rtt-timeout",
            "200ms",
            "--host-timeout",
            "20s",
        ],
        kind: "sweep",
        sweep: true,
    });
}

fn run(case: &Case) {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::with_options(
        case.tag,
        LabOptions {
            second_client: true,
        },
    );
    let tag = &lab.tag;
    let att = lab.att.v4.to_string();
    let tgt = IpAddr::V4(lab.tgt.v4);
    let cli_ns = lab.client().ns.clone();

    lab.start_http_server(PORT);
    // nmap's UDP scan needs every port-unreachable (docs: lab gotchas).
    lab.sysctl(&lab.tgt.ns, "net.ipv4.icmp_ratelimit=0");
    let sweep_targets = if case.sweep {
        lab.add_target_v4(10..=40)
    } else {
        Vec::new()
    };
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native));

    // Both clients are served through the program before anything happens.
    for ns in [&lab.att.ns, &cli_ns] {
        if let Err(e) = lab.http_get(ns, tgt, PORT) {
            panic!(
                "[{tag}] before the scan: {e}\n--- controller log ---\n{}",
                log(&c)
            );
        }
    }

    let mut args = if case.nmap.len() == 1 {
        quick_scan_args(case.nmap[0], "30s")
    } else {
        case.nmap.to_vec()
    };
    let target_text;
    let range_text;
    if case.sweep {
        let (first, last) = (sweep_targets[0], sweep_targets[sweep_targets.len() - 1]);
        range_text = format!("{first}-{}", last.octets()[3]);
        args.push(&range_text);
    } else {
        target_text = lab.tgt.v4.to_string();
        args.push(&target_text);
    }
    let t_scan = Instant::now();
    let scan = lab.spawn_nmap(&args);
    // Reported with the right kind, then blocked with it. The scan is stopped once
    // the block is in (the rest of it would only wait for dropped probes).
    lab.wait_event_during(&c, &scan, EVENT_LIMIT, "blocked for the attacker", |e| {
        is_event(e, "blocked", &att)
    });
    let scan_s = t_scan.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let nmap_out = lab.finish(&scan);
    let events = c.events();
    let dump = || dump_events(&events);

    // Every detection of the attacker names the scan type. The kernel's threshold
    // and the slow-scan test (TRW, in the controller) may both fire on the same
    // probe; either may be the one that blocks.
    let kernel_rule = if case.sweep {
        "address_sweep"
    } else {
        "port_score"
    };
    let detections: Vec<&Value> = events
        .iter()
        .filter(|e| is_event(e, "scan_detected", &att))
        .collect();
    assert!(
        !detections.is_empty(),
        "[{tag}] blocked without a scan_detected event\n--- events ---\n{}",
        dump()
    );
    for d in &detections {
        assert_eq!(
            d["kind"],
            case.kind,
            "[{tag}] nmap {args:?}: scan_detected reports the wrong kind\n{}\n--- events ---\n{}",
            evidence_note(d),
            dump()
        );
        let rule = d["evidence"]["rule"].as_str().unwrap_or("");
        assert!(
            rule == kernel_rule || rule == "trw",
            "[{tag}] scan_detected by rule {rule:?}, want {kernel_rule} or trw\n--- events ---\n{}",
            dump()
        );
    }
    let blocks: Vec<&Value> = events
        .iter()
        .filter(|e| is_event(e, "blocked", &att))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "[{tag}] one block, one blocked event\n--- events ---\n{}",
        dump()
    );
    let blocked = blocks[0];
    assert_eq!(
        blocked["kind"],
        case.kind,
        "[{tag}] nmap {args:?}: blocked reports the wrong kind\n--- events ---\n{}",
        dump()
    );
    let origin = blocked["origin"].as_str().unwrap_or("");
    assert!(
        origin == "kernel" || origin == "detector",
        "[{tag}] blocked by {origin:?}\n--- events ---\n{}",
        dump()
    );
    assert!(
        blocked["ttl_s"].as_u64().is_some_and(|t| t > 0) && blocked["expires"].is_string(),
        "[{tag}] blocked event without ttl_s/expires: {blocked}"
    );
    // Nobody but the attacker is reported or blocked.
    let others: Vec<&Value> = events.iter().filter(|e| e["src"] != att.as_str()).collect();
    assert!(
        others.is_empty(),
        "[{tag}] events about other sources: {others:?}"
    );

    // In the blocklist, alone.
    let list = c.list();
    let row = list
        .iter()
        .find(|r| r["addr"] == att.as_str())
        .unwrap_or_else(|| panic!("[{tag}] attacker {att} not in `list --json`: {list:?}"));
    assert_eq!(
        row["origin"], blocked["origin"],
        "[{tag}] list row {row} vs blocked event {blocked}"
    );
    assert!(
        row["expires"].is_string(),
        "[{tag}] list row without expiry: {row}"
    );
    assert_eq!(
        list.len(),
        1,
        "[{tag}] list holds more than the attacker: {list:?}"
    );

    // Cut off: the attacker's next connection fails, the other client is served.
    let att_get = lab.http_get(&lab.att.ns, tgt, PORT);
    assert!(
        att_get.is_err(),
        "[{tag}] the blocked attacker still gets the page after nmap {args:?}\n--- list ---\n{list:?}"
    );
    if let Err(e) = lab.http_get(&cli_ns, tgt, PORT) {
        panic!(
            "[{tag}] the second client is not served while the attacker is blocked: {e}\n--- events ---\n{}",
            dump()
        );
    }
    let stats = c.stats_json();
    assert!(
        stats["dropped_blocked"].as_u64().is_some_and(|n| n > 0),
        "[{tag}] dropped_blocked is 0 after the scan and a blocked curl: {stats}"
    );
    assert_eq!(stats["blocked_sources"], 1, "[{tag}] stats: {stats}");

    let status = lab.stop_controller(&c);
    assert!(
        status.success(),
        "[{tag}] controller exit on SIGTERM: {status:?}\n{}",
        log(&c)
    );
    let rules: Vec<String> = detections
        .iter()
        .map(|d| format!("{}/{}", d["origin"], d["evidence"]["rule"]))
        .collect();
    eprintln!(
        "[{tag}] nmap {} (blocked after {scan_s:.1} s): kind {} blocked by {origin} (list kind {}), detections {rules:?}, probes {}, score {}; passed in {:.1} s\n{}",
        args.join(" "),
        blocked["kind"],
        row["kind"],
        blocked["probes"],
        blocked["score"],
        t0.elapsed().as_secs_f64(),
        nmap_summary(&nmap_out)
    );
}

fn log(c: &Controller) -> String {
    scan_guard_tests::lab::read_lossy(&c.log)
}

fn dump_events(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect::<String>()
}

fn evidence_note(e: &Value) -> String {
    format!(
        "event {}: kind {}, probes_by_kind {}, evidence {}",
        event_name(e),
        e["kind"],
        e["probes_by_kind"],
        e["evidence"]
    )
}

/// nmap's last lines (what it concluded), for the test log.
fn nmap_summary(out: &str) -> String {
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}
