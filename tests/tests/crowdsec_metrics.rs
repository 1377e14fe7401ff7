//! The CrowdSec link as Prometheus sees it, against a real Local API (Debian's
//! crowdsec, in the lab's target namespace): roles enabled and up, decisions
//! applied by action, alerts pushed, and the Local API going away (up drops to 0,
//! failures count) and coming back. Scraped with curl from the controller's
//! `--metrics` endpoint.

use std::time::{Duration, Instant};

use scan_guard_tests::{
    crowdsec::{self, Lapi, wait_crowdsec_event},
    lab::{ControllerOptions, LabOptions, XdpMode},
    scrape::{sample, scrape, wait_sample},
};

const METRICS_PORT: u16 = 9184;
const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn crowdsec_link_health_and_counts_are_exported() {
    let t0 = Instant::now();
    let lab = crowdsec::lab("crowdsec-metrics", LabOptions::default(), None);
    let tag = lab.tag.clone();
    let ns = lab.tgt.ns.clone();
    let lapi = Lapi::start(&lab);
    let cfg = lapi.bouncer_and_agent_config("scan-guard-metrics");
    let mut opts = ControllerOptions::new(XdpMode::Native).config(&cfg);
    opts.extra_args = vec!["--metrics".into(), METRICS_PORT.to_string()];
    let c = lab.start_controller_with(&opts);
    let wait = |series: &str, want: &dyn Fn(f64) -> bool| {
        wait_sample(&lab, &ns, METRICS_PORT, series, LIMIT, want)
    };

    // Both roles configured and answered.
    for role in ["bouncer", "agent"] {
        wait(
            &format!("scan_guard_crowdsec_enabled{{role=\"{role}\"}}"),
            &|v| v == 1.0,
        );
        wait(
            &format!("scan_guard_crowdsec_lapi_up{{role=\"{role}\"}}"),
            &|v| v == 1.0,
        );
    }
    wait(
        &format!("scan_guard_xdp_attached{{iface=\"{}\"}}", lab.tgt.iface),
        &|v| v == 1.0,
    );

    // A decision from the Local API, applied, then deleted.
    let banned = "10.200.1.77";
    lapi.cscli_ok(&["decisions", "add", "--ip", banned, "--duration", "1h"]);
    wait_crowdsec_event(&lab, &c, "blocked", banned);
    wait(
        "scan_guard_crowdsec_decisions_total{action=\"block\"}",
        &|v| v >= 1.0,
    );
    lapi.cscli_ok(&["decisions", "delete", "--ip", banned]);
    wait_crowdsec_event(&lab, &c, "unblocked", banned);
    wait(
        "scan_guard_crowdsec_decisions_total{action=\"unblock\"}",
        &|v| v >= 1.0,
    );

    // Our own block (a real scan) pushed as an alert.
    let scan = lab.fast_syn_scan();
    let att = lab.att.v4.to_string();
    lab.wait_event_during(&c, &scan, Duration::from_secs(5), "blocked", |e| {
        e["event"] == "blocked" && e["src"] == att.as_str()
    });
    lab.finish(&scan);
    wait("scan_guard_crowdsec_alerts_pushed_total", &|v| v >= 1.0);
    lapi.wait_alert(&c, &att);

    // The Local API goes away: the bouncer's polls fail and it is reported down.
    let failures_before = sample(
        &scrape(&lab, &ns, METRICS_PORT),
        "scan_guard_crowdsec_request_failures_total{role=\"bouncer\"}",
    )
    .unwrap_or_else(|| panic!("[{tag}] no bouncer failure counter"));
    lapi.stop();
    wait("scan_guard_crowdsec_lapi_up{role=\"bouncer\"}", &|v| {
        v == 0.0
    });
    wait(
        "scan_guard_crowdsec_request_failures_total{role=\"bouncer\"}",
        &|v| v > failures_before,
    );
    // Still enabled: an outage is not a configuration change.
    wait("scan_guard_crowdsec_enabled{role=\"bouncer\"}", &|v| {
        v == 1.0
    });

    // Back again: up once the next poll (backing off, at most a few seconds) answers.
    lapi.restart();
    wait_sample(
        &lab,
        &ns,
        METRICS_PORT,
        "scan_guard_crowdsec_lapi_up{role=\"bouncer\"}",
        Duration::from_secs(40),
        |v| v == 1.0,
    );
    lab.assert_running(&c, "after the Local API came back");
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}
