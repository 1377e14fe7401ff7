//! Bouncer mode against a real CrowdSec Local API (Debian's crowdsec 1.4.6, run by
//! the test inside the lab's target namespace on its 127.0.0.1; no Central API):
//! - decisions added with `cscli decisions add --ip/--range` (IPv4 and IPv6) are
//!   blocked with origin `crowdsec` (`blocked` events, `list --json` rows) and the
//!   attacker's traffic is dropped while the second client is served; deleted
//!   decisions are lifted (`unblocked`); a range over the host's own address is
//!   `suppressed` (never-block); decisions present at start are applied at start;
//! - the Local API restarting: blocks stay, the controller reconnects and picks up
//!   new decisions; a decision deleted while the controller was stopped is lifted
//!   when it starts again (its block came back from the state file), and so is
//!   one the Local API no longer knows at all (database wiped);
//! - a wrong bouncer key, wrong machine credentials, a Local API that is not there:
//!   clear log lines, no crash; an unreadable key file: exit 2 before attaching.

use std::{
    net::IpAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    crowdsec::{
        self, LAPI_PORT, Lapi, is_crowdsec_event, wait_crowdsec_event, wait_unknown_decision_lifted,
    },
    lab::{Controller, ControllerOptions, Lab, LabOptions, XdpMode, read_lossy},
};

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(10);

fn lab(tag: &str, second_client: bool) -> Lab {
    crowdsec::lab(tag, LabOptions { second_client }, Some(PORT))
}

/// A config file for bouncer mode with `key` in a key file, polling every second.
fn bouncer_config(lab: &Lab, lapi: &Lapi, key: &str, extra: &str) -> PathBuf {
    let key_file = lab.write_file("bouncer", "key", &format!("{key}\n"));
    lab.write_file(
        "config",
        "toml",
        &format!(
            "[crowdsec]\nlapi_url = \"{}\"\nbouncer_api_key_file = \"{}\"\npoll_interval = \"1s\"\n{extra}",
            lapi.url,
            key_file.display()
        ),
    )
}

fn served(lab: &Lab, c: &Controller, ns: &str, ip: IpAddr, who: &str) {
    lab.assert_served(c, ns, ip, PORT, who);
}

fn cut_off(lab: &Lab, c: &Controller, ns: &str, ip: IpAddr, who: &str) {
    lab.assert_cut_off(c, ns, ip, PORT, who);
}

#[test]
fn decisions_block_and_lift_ipv4_and_ipv6() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-decisions", true);
    let lapi = Lapi::start(&lab);
    let key = lapi.add_bouncer("scan-guard-test");
    let tag = lab.tag.clone();
    let (att4, att6) = (lab.att.v4.to_string(), lab.att.v6.to_string());
    let (tgt4, tgt6) = (IpAddr::V4(lab.tgt.v4), IpAddr::V6(lab.tgt.v6));
    let (att_ns, cli_ns) = (lab.att.ns.clone(), lab.client().ns.clone());

    // Present before the controller starts: applied from the startup stream.
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);
    let cfg = bouncer_config(&lab, &lapi, &key, "");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let ev = wait_crowdsec_event(&lab, &c, "blocked", &att4);
    let ttl = ev["ttl_s"].as_u64().unwrap_or(0);
    assert!(
        (3500..=3600).contains(&ttl),
        "[{tag}] ttl of a 1h decision: {ev}"
    );
    assert_eq!(ev["evidence"]["rule"], "crowdsec_decision", "[{tag}] {ev}");
    assert_eq!(ev["evidence"]["decision_origin"], "cscli", "[{tag}] {ev}");
    let row = c
        .listed(&att4)
        .unwrap_or_else(|| panic!("[{tag}] {att4} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], "crowdsec", "[{tag}] {row}");
    assert!(row["expires"].is_string(), "[{tag}] {row}");
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt4,
        "the attacker over IPv4 (crowdsec --ip)",
    );
    served(
        &lab,
        &c,
        &att_ns,
        tgt6,
        "the attacker over IPv6 (not decided)",
    );
    served(&lab, &c, &cli_ns, tgt4, "the client");

    // An IPv6 range holding the attacker (fd00:200::0-1) and not the client (::3).
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--range",
        "fd00:200::/127",
        "--duration",
        "1h",
    ]);
    wait_crowdsec_event(&lab, &c, "blocked", "fd00:200::/127");
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt6,
        "the attacker over IPv6 (crowdsec --range)",
    );
    served(&lab, &c, &cli_ns, tgt6, "the client over IPv6");

    // A range over the host's own address: never blocked.
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--range",
        "10.200.1.0/24",
        "--duration",
        "1h",
    ]);
    let s = wait_crowdsec_event(&lab, &c, "suppressed", "10.200.1.0/24");
    assert_eq!(s["reason"], "never_block", "[{tag}] {s}");
    assert!(
        c.listed("10.200.1.0/24").is_none(),
        "[{tag}] {:?}",
        c.list()
    );
    served(&lab, &c, &cli_ns, tgt4, "the client after the /24 decision");

    // Deleting lifts (this also deletes the /24 decision, which contains it).
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att4]);
    let u = wait_crowdsec_event(&lab, &c, "unblocked", &att4);
    assert!(
        u["reason"].as_str().unwrap_or("").contains("deleted"),
        "[{tag}] {u}"
    );
    assert!(c.listed(&att4).is_none(), "[{tag}] {:?}", c.list());
    served(
        &lab,
        &c,
        &att_ns,
        tgt4,
        "the attacker over IPv4 after the deletion",
    );
    lapi.cscli_ok(&["decisions", "delete", "--range", "fd00:200::/127"]);
    wait_crowdsec_event(&lab, &c, "unblocked", "fd00:200::/127");
    served(
        &lab,
        &c,
        &att_ns,
        tgt6,
        "the attacker over IPv6 after the deletion",
    );

    // The other way round: an IPv4 range and an IPv6 address.
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "--range",
        "10.200.1.0/31",
        "--duration",
        "1h",
    ]);
    lapi.cscli_ok(&["decisions", "add", "--ip", &att6, "--duration", "30m"]);
    wait_crowdsec_event(&lab, &c, "blocked", "10.200.1.0/31");
    let ev6 = wait_crowdsec_event(&lab, &c, "blocked", &att6);
    let ttl = ev6["ttl_s"].as_u64().unwrap_or(0);
    assert!(
        (1700..=1800).contains(&ttl),
        "[{tag}] ttl of a 30m decision: {ev6}"
    );
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt4,
        "the attacker over IPv4 (crowdsec --range)",
    );
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt6,
        "the attacker over IPv6 (crowdsec --ip)",
    );
    served(&lab, &c, &cli_ns, tgt4, "the client");
    lapi.cscli_ok(&["decisions", "delete", "--range", "10.200.1.0/31"]);
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att6]);
    wait_crowdsec_event(&lab, &c, "unblocked", "10.200.1.0/31");
    wait_crowdsec_event(&lab, &c, "unblocked", &att6);
    served(&lab, &c, &att_ns, tgt4, "the attacker over IPv4 at the end");
    served(&lab, &c, &att_ns, tgt6, "the attacker over IPv6 at the end");
    assert_eq!(
        c.stats_json()["blocked_sources"],
        0,
        "[{tag}] {:?}",
        c.list()
    );
    lab.assert_running(&c, "at the end");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

#[test]
fn lapi_restart_keeps_blocks_and_stale_blocks_are_lifted_at_start() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-restart", false);
    let lapi = Lapi::start(&lab);
    let key = lapi.add_bouncer("scan-guard-test");
    let tag = lab.tag.clone();
    let (att4, att6) = (lab.att.v4.to_string(), lab.att.v6.to_string());
    let (tgt4, tgt6) = (IpAddr::V4(lab.tgt.v4), IpAddr::V6(lab.tgt.v6));
    let att_ns = lab.att.ns.clone();
    let cfg = bouncer_config(&lab, &lapi, &key, "");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);
    wait_crowdsec_event(&lab, &c, "blocked", &att4);

    // The Local API goes away: the block stays, the controller keeps running.
    lapi.stop();
    lab.wait_log(&c, "lost the Local API", EVENT_LIMIT);
    thread::sleep(Duration::from_secs(2));
    lab.assert_running(&c, "with the Local API down");
    assert!(
        c.listed(&att4).is_some(),
        "[{tag}] block gone with the Local API: {:?}",
        c.list()
    );
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt4,
        "the attacker while the Local API is down",
    );

    // Back: the controller reconnects and follows new decisions.
    lapi.restart();
    lapi.cscli_ok(&["decisions", "add", "--ip", &att6, "--duration", "1h"]);
    lab.wait_event(
        &c,
        Duration::from_secs(40),
        "blocked (crowdsec) after the restart",
        |e| is_crowdsec_event(e, "blocked", &att6),
    );
    assert!(
        read_lossy(&c.log).contains("answers again"),
        "[{tag}] {}",
        read_lossy(&c.log)
    );
    cut_off(
        &lab,
        &c,
        &att_ns,
        tgt6,
        "the attacker over IPv6 after the restart",
    );

    // The controller stops (its blocks go to the state file); a decision is
    // deleted meanwhile; at the next start its restored block is lifted.
    lab.stop_controller_ok(&c);
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att4]);
    let mut o = c.opts.clone();
    o.events = None;
    let c2 = lab.start_controller_with(&o);
    let u = wait_crowdsec_event(&lab, &c2, "unblocked", &att4);
    // The startup stream lists it among the deleted decisions (or, once the Local
    // API has flushed it, not at all: "no such decision any more").
    let why = u["reason"].as_str().unwrap_or("");
    assert!(
        why.contains("decision deleted") || why.contains("no such decision"),
        "[{tag}] {u}"
    );
    let row = c2
        .listed(&att6)
        .unwrap_or_else(|| panic!("[{tag}] the IPv6 block did not come back: {:?}", c2.list()));
    assert_eq!(row["origin"], "crowdsec", "[{tag}] {row}");
    assert!(c2.listed(&att4).is_none(), "[{tag}] {:?}", c2.list());
    served(
        &lab,
        &c2,
        &att_ns,
        tgt4,
        "the attacker over IPv4 after its decision was deleted",
    );
    cut_off(
        &lab,
        &c2,
        &att_ns,
        tgt6,
        "the attacker over IPv6 (decision still there)",
    );
    lab.stop_controller_ok(&c2);

    // A reinstalled Local API (empty database, the same bouncer key registered
    // again) knows nothing of the IPv6 decision: its restored block is stale.
    lapi.wipe_and_restart();
    lapi.add_bouncer_with_key("scan-guard-test", &key);
    let mut o = c2.opts.clone();
    o.events = None;
    let c3 = lab.start_controller_with(&o);
    wait_unknown_decision_lifted(&lab, &c3, &att6);
    assert!(c3.list().is_empty(), "[{tag}] {:?}", c3.list());
    served(
        &lab,
        &c3,
        &att_ns,
        tgt6,
        "the attacker over IPv6 after the wipe",
    );
    lab.stop_controller_ok(&c3);
    lab.report_passed(t0);
}

#[test]
fn bad_credentials_and_a_missing_lapi_are_reported_without_crashing() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-errors", false);
    let lapi = Lapi::start(&lab);
    lapi.add_machine("scan-guard-agent", "the-right-password");
    let tag = lab.tag.clone();

    let cfg = lab.write_file(
        "config",
        "toml",
        &format!(
            "[crowdsec]\nlapi_url = \"{}\"\nbouncer_api_key = \"not-a-valid-key\"\npoll_interval = \"1s\"\n\
             push_alerts = true\nagent_machine_id = \"scan-guard-agent\"\nagent_password = \"a-wrong-password\"\n",
            lapi.url
        ),
    );
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let line = lab.wait_log(&c, "rejected the bouncer API key", EVENT_LIMIT);
    assert!(
        line.contains("403") && line.contains("cscli bouncers add"),
        "[{tag}] {line}"
    );
    let line = lab.wait_log(&c, "rejected the machine credentials", EVENT_LIMIT);
    assert!(
        line.contains("scan-guard-agent") && line.contains("401"),
        "[{tag}] {line}"
    );
    thread::sleep(Duration::from_secs(2));
    lab.assert_running(&c, "with wrong CrowdSec credentials");
    served(
        &lab,
        &c,
        &lab.att.ns,
        IpAddr::V4(lab.tgt.v4),
        "the attacker",
    );
    lab.stop_controller_ok(&c);

    // Nothing listens at the configured address: retried, no crash.
    let key = lapi.add_bouncer("scan-guard-test");
    let key_file = lab.write_file("bouncer", "key", &key);
    let cfg = lab.write_file(
        "config",
        "toml",
        &format!(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:{}\"\nbouncer_api_key_file = \"{}\"\npoll_interval = \"1s\"\n",
            LAPI_PORT + 1,
            key_file.display()
        ),
    );
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let line = lab.wait_log(&c, "is not reachable", EVENT_LIMIT);
    assert!(line.contains("retrying in"), "[{tag}] {line}");
    thread::sleep(Duration::from_secs(2));
    lab.assert_running(&c, "with no Local API");
    lab.stop_controller_ok(&c);

    // A key file that cannot be read: a usage error before anything is attached.
    let missing = lab.dir.join("no-such-key-file");
    let cfg = lab.write_file(
        "config",
        "toml",
        &format!(
            "[crowdsec]\nlapi_url = \"{}\"\nbouncer_api_key_file = \"{}\"\n",
            lapi.url,
            missing.display()
        ),
    );
    let err = lab.run_refused(&cfg);
    assert!(
        err.contains("bouncer_api_key_file") && err.contains("no-such-key-file"),
        "[{tag}] {err}"
    );
    lab.report_passed(t0);
}
