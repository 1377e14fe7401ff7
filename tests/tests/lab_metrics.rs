//! `--metrics`: the Prometheus endpoint, scraped with a real HTTP client (curl)
//! inside the target namespace, follows the kernel counters and the events.

use std::time::Duration;

use scan_guard_tests::{
    lab::{ControllerOptions, Lab, XdpMode},
    scrape::wait_sample,
};

fn scrape(lab: &Lab, path: &str) -> (String, String) {
    let url = format!("http://127.0.0.1:9184{path}");
    let out = lab.exec_in(
        &lab.tgt.ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn metrics_endpoint_serves_kernel_counters_and_events() {
    let lab = Lab::new("metrics");
    let mut opts = ControllerOptions::new(XdpMode::Skb);
    opts.extra_args = vec!["--metrics".into(), "9184".into()];
    let c = lab.start_controller_with(&opts);

    let (body, code) = scrape(&lab, "/metrics");
    assert_eq!(code, "200", "{body}");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF: {body}"
    );
    for name in [
        "scan_guard_controller_tick_seconds",
        "scan_guard_sources_capacity",
        "scan_guard_blocklist_capacity",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let (_, code) = scrape(&lab, "/other");
    assert_eq!(code, "404");

    let tgt = lab.tgt.v4.to_string();
    // Loopback only: another host cannot reach it (checked before the scan, while
    // the attacker is not blocked yet).
    let out = lab.exec_in(
        &lab.att.ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "2",
            &format!("http://{tgt}:9184/metrics"),
        ],
    );
    assert!(
        !out.status.success(),
        "metrics must not be reachable from outside"
    );
    assert!(lab.http_get(&lab.att.ns, lab.tgt.v4.into(), 9184).is_err());

    // A scan: packets flow, the scanner is blocked, the series follow within a tick.
    lab.exec_in(
        &lab.att.ns,
        &[
            "nmap",
            "-Pn",
            "-sS",
            "-T4",
            "-p",
            "1-100",
            "--max-retries",
            "0",
            &tgt,
        ],
    );
    let ns = lab.tgt.ns.clone();
    let limit = Duration::from_secs(5);
    let packets = "scan_guard_kernel_total{counter=\"packets\"}";
    wait_sample(&lab, &ns, 9184, packets, limit, |v| v > 0.0);
    let blocked = "scan_guard_events_total{event=\"blocked\"}";
    wait_sample(&lab, &ns, 9184, blocked, limit, |v| v >= 1.0);
    // The blocked scanner's next packets are dropped; the counters follow within a
    // tick (whoever blocked it: the kernel at once or the slow-scan test).
    let _ = lab.http_get(&lab.att.ns, lab.tgt.v4.into(), 80);
    let dropped = "scan_guard_dropped_packets_total{reason=\"blocked\"}";
    wait_sample(&lab, &ns, 9184, dropped, limit, |v| v > 0.0);
    let (body, _) = scrape(&lab, "/metrics");
    assert!(
        body.contains("scan_guard_detections_total{kind=\"syn\"}"),
        "{body}"
    );

    assert!(lab.stop_controller(&c).success());
}
