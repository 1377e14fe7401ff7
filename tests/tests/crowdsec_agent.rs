//! Agent mode against a real CrowdSec Local API (Debian's crowdsec 1.4.6, run by
//! the test inside the lab's target namespace on its 127.0.0.1; no Central API):
//! a real nmap SYN scan from the lab's attacker is blocked (kernel threshold or
//! slow-scan test, whichever fires first), and the block reaches the Local API as
//! a `scan-guard/port-scan` alert with a ban decision (`cscli alerts list`,
//! `cscli decisions list`), which another host's bouncer receives in its decision
//! stream. Our own bouncer gets the decision back and leaves our block as it is.

use std::{
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    crowdsec::{self, Lapi, SCAN_SCENARIO, is_crowdsec_event},
    lab::{ControllerOptions, LabOptions, XdpMode, read_lossy},
};
use serde_json::Value;

#[test]
fn nmap_scan_becomes_a_crowdsec_alert_and_decision() {
    let t0 = Instant::now();
    let lab = crowdsec::lab("crowdsec-agent", LabOptions::default(), None);
    let tag = lab.tag.clone();
    let lapi = Lapi::start(&lab);
    let cfg = lapi.bouncer_and_agent_config("scan-guard-test");
    let other_host = lapi.add_bouncer("another-host");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    lab.wait_log(&c, "logged in to the Local API", Duration::from_secs(10));

    let att = lab.att.v4.to_string();
    let scan = lab.fast_syn_scan();
    let blocked = lab.wait_blocked_during(&c, &scan, Duration::from_secs(5), &att);
    // The kernel's threshold or the slow-scan test, whichever fired first.
    let origin = blocked["origin"].as_str().unwrap_or("").to_string();
    assert!(
        matches!(origin.as_str(), "kernel" | "detector"),
        "[{tag}] {blocked}"
    );
    let ttl = blocked["ttl_s"].as_u64().expect("ttl_s");

    // The alert, as the Local API keeps it.
    let alert = lapi.wait_alert(&c, &att);
    assert_eq!(alert["source"]["scope"], "Ip", "[{tag}] {alert}");
    assert!(
        alert["events_count"].as_u64().unwrap_or(0) >= 1,
        "[{tag}] {alert}"
    );
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or("")
            .contains("blocked by scan-guard"),
        "[{tag}] {alert}"
    );
    let d = &alert["decisions"][0];
    assert_eq!(d["type"], "ban", "[{tag}] {alert}");
    assert_eq!(d["value"], att.as_str(), "[{tag}] {alert}");
    assert_eq!(d["origin"], "crowdsec", "[{tag}] {alert}");

    // The decision is active (what every bouncer enforces), as long as our block.
    let decision: Vec<Value> = lapi
        .decisions()
        .into_iter()
        .flat_map(|a| a["decisions"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["value"] == att.as_str() && d["scenario"] == SCAN_SCENARIO)
        .collect();
    assert_eq!(
        decision.len(),
        1,
        "[{tag}] decisions for {att}: {decision:?}"
    );
    let left = go_seconds(decision[0]["duration"].as_str().unwrap_or(""));
    assert!(
        left > 0.0 && left <= ttl as f64,
        "[{tag}] {decision:?} vs our ttl {ttl}"
    );

    // Another host's bouncer gets it.
    let stream = lapi.stream_startup(&other_host);
    let new = stream["new"].as_array().cloned().unwrap_or_default();
    assert!(
        new.iter().any(|d| d["value"] == att.as_str()
            && d["scenario"] == SCAN_SCENARIO
            && d["type"] == "ban"),
        "[{tag}] the other host's stream lacks {att}: {stream}"
    );

    // Ours gets it back too and leaves our own block alone.
    thread::sleep(Duration::from_secs(3));
    let row = c
        .listed(&att)
        .unwrap_or_else(|| panic!("[{tag}] {att} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], origin.as_str(), "[{tag}] {row}");
    assert!(
        c.events_where(|e| is_crowdsec_event(e, "blocked", &att))
            .is_empty(),
        "[{tag}] a second block for {att}\n{}",
        read_lossy(&c.events)
    );
    lab.assert_running(&c, "at the end");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

/// Seconds in a Go duration such as `9m58.3s` (h, m, s only: what the Local API
/// prints for decisions of minutes to hours).
fn go_seconds(text: &str) -> f64 {
    let mut total = 0.0;
    let mut num = String::new();
    for ch in text.chars() {
        match ch {
            '0'..='9' | '.' => num.push(ch),
            'h' | 'm' | 's' => {
                let v: f64 = num.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
                total += v * match ch {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => panic!("duration {text:?}"),
        }
    }
    total
}
