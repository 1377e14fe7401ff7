//! SIGHUP re-applies `[crowdsec]` (a real Local API over HTTPS, Debian's crowdsec
//! 1.4.6 in the lab's target namespace), asserted on the kernel blocklist:
//! - switched on: the decisions of the stream are blocked;
//! - changed (a reinstalled Local API with another key and other decisions): the
//!   new stream's startup snapshot replaces the old blocks;
//! - a new section that cannot be used (missing key file): nothing changes;
//! - an unchanged section: the tasks are not restarted;
//! - switched off: the CrowdSec blocks are lifted, others stay.

use std::{
    net::IpAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    crowdsec::{
        self, Lapi, Pki, is_crowdsec_event, wait_crowdsec_event, wait_unknown_decision_lifted,
    },
    lab::{Controller, ControllerOptions, Lab, LabOptions, XdpMode, read_lossy},
};

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// Waits for the `n`th `name` event (origin `crowdsec`) for `src` (1-based).
fn wait_cs_n(lab: &Lab, c: &Controller, name: &str, src: &str, n: usize) {
    let deadline = Instant::now() + EVENT_LIMIT;
    let matching = || c.events_where(|e| is_crowdsec_event(e, name, src)).len();
    while matching() < n {
        lab.assert_running(c, &format!("while waiting for {name} #{n} of {src}"));
        assert!(
            Instant::now() < deadline,
            "[{}] no {name} (crowdsec) #{n} for {src}\n{}",
            lab.tag,
            read_lossy(&c.events)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn bouncer(lapi: &Lapi, pki: &Pki, key_file: &Path) -> String {
    format!(
        "[crowdsec]\nlapi_url = \"{}\"\nca_cert = \"{}\"\nbouncer_api_key_file = \"{}\"\npoll_interval = \"1s\"\n",
        lapi.url,
        pki.ca.display(),
        key_file.display()
    )
}

#[test]
fn sighup_switches_crowdsec_on_changes_it_and_turns_it_off() {
    let t0 = Instant::now();
    let lab = crowdsec::lab("crowdsec-reload", LabOptions::default(), Some(PORT));
    let tag = lab.tag.clone();
    let pki = Pki::new(&lab, "lab");
    let lapi = Lapi::start_tls(&lab, &pki);
    let (att4, att6) = (lab.att.v4.to_string(), lab.att.v6.to_string());
    let (tgt4, tgt6) = (IpAddr::V4(lab.tgt.v4), IpAddr::V6(lab.tgt.v6));
    let reachable = |ip: IpAddr| lab.http_get(&lab.att.ns, ip, PORT).is_ok();

    // Off at start: a decision in the LAPI changes nothing.
    let key = lapi.add_bouncer("scan-guard-reload");
    let key_file = lab.write_file("bouncer", "key", &format!("{key}\n"));
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);
    let cfg = lab.write_file("config", "toml", "[detection]\nscore_threshold = 21\n");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    // An operator block, which no CrowdSec change may touch.
    let manual = "10.200.9.9";
    c.cli_ok(&["block", manual, "--ttl", "1h"]);
    thread::sleep(Duration::from_secs(2));
    assert!(c.listed(&att4).is_none(), "[{tag}] {:?}", c.list());
    assert!(
        reachable(tgt4),
        "[{tag}] attacker cut off with CrowdSec off"
    );

    // Switched on.
    lab.reload_controller(&c, &cfg, &bouncer(&lapi, &pki, &key_file));
    wait_crowdsec_event(&lab, &c, "blocked", &att4);
    assert_eq!(
        c.listed(&att4).map(|r| r["origin"].clone()),
        Some("crowdsec".into()),
        "[{tag}] {:?}",
        c.list()
    );
    assert!(
        !reachable(tgt4),
        "[{tag}] attacker served after switching on"
    );
    lab.wait_log_nth(&c, "CrowdSec tasks restarted", 1, EVENT_LIMIT);

    // The same section again: nothing restarted.
    lab.reload_controller(&c, &cfg, &bouncer(&lapi, &pki, &key_file));
    lab.wait_log_nth(&c, "configuration reloaded", 2, EVENT_LIMIT);
    thread::sleep(Duration::from_millis(500));
    let restarts = read_lossy(&c.log)
        .lines()
        .filter(|l| l.contains("CrowdSec tasks restarted"))
        .count();
    assert_eq!(restarts, 1, "[{tag}] restarted for an unchanged section");

    // Changed: a reinstalled LAPI knows another key and only the IPv6 decision.
    // Until the new stream answers, the old blocks stay; then its snapshot
    // replaces them.
    lapi.wipe_and_restart();
    let key2 = lapi.add_bouncer("scan-guard-reload-2");
    lapi.cscli_ok(&["decisions", "add", "--ip", &att6, "--duration", "1h"]);
    let key_file2 = lab.write_file("bouncer", "key", &format!("{key2}\n"));
    lab.reload_controller(&c, &cfg, &bouncer(&lapi, &pki, &key_file2));
    wait_crowdsec_event(&lab, &c, "blocked", &att6);
    wait_unknown_decision_lifted(&lab, &c, &att4);
    assert!(c.listed(&att4).is_none(), "[{tag}] {:?}", c.list());
    assert!(
        reachable(tgt4),
        "[{tag}] attacker cut off by the old stream's block"
    );
    assert!(!reachable(tgt6), "[{tag}] attacker served over IPv6");

    // A section that cannot be used: everything stays as it runs.
    let missing = lab.dir.join("no-such-key");
    lab.reload_controller(&c, &cfg, &bouncer(&lapi, &pki, &missing));
    lab.wait_log_nth(&c, "keeping the running configuration", 1, EVENT_LIMIT);
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);
    wait_cs_n(&lab, &c, "blocked", &att4, 2);
    assert!(c.listed(&att6).is_some(), "[{tag}] {:?}", c.list());

    // Switched off: the CrowdSec blocks go, the operator's stays.
    lab.reload_controller(&c, &cfg, "[detection]\nscore_threshold = 21\n");
    for src in [&att4, &att6] {
        lab.wait_event(
            &c,
            EVENT_LIMIT,
            &format!("unblocked (turned off) for {src}"),
            |e| {
                is_crowdsec_event(e, "unblocked", src)
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("turned off"))
            },
        );
    }
    let rows = c.list();
    assert_eq!(rows.len(), 1, "[{tag}] {rows:?}");
    assert_eq!(rows[0]["origin"], "manual", "[{tag}] {rows:?}");
    assert!(
        reachable(tgt4) && reachable(tgt6),
        "[{tag}] attacker still cut off"
    );
    // Decisions added now are not followed.
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "2h"]);
    thread::sleep(Duration::from_secs(2));
    assert!(c.listed(&att4).is_none(), "[{tag}] {:?}", c.list());
    lab.assert_running(&c, "at the end");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}
