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
    crowdsec::{LAPI_PORT, Lapi},
    is_root,
    lab::{
        Controller, ControllerOptions, Lab, LabOptions, XdpMode, describe, is_event, read_lossy,
    },
};
use serde_json::Value;

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(10);

fn lab(tag: &str, second_client: bool) -> Lab {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    scan_guard_tests::crowdsec::require_crowdsec();
    let lab = Lab::with_options(tag, LabOptions { second_client });
    lab.start_http_server(PORT);
    lab
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

fn from_crowdsec(e: &Value, name: &str, src: &str) -> bool {
    is_event(e, name, src) && e["origin"] == "crowdsec"
}

fn wait_cs(lab: &Lab, c: &Controller, name: &str, src: &str) -> Value {
    lab.wait_event(
        c,
        EVENT_LIMIT,
        &format!("{name} (crowdsec) for {src}"),
        |e| from_crowdsec(e, name, src),
    )
}

fn served(lab: &Lab, c: &Controller, ns: &str, ip: IpAddr, who: &str) {
    if let Err(e) = lab.http_get(ns, ip, PORT) {
        panic!(
            "[{}] {who} is not served: {e}\n--- list ---\n{:?}\n--- events ---\n{}--- controller log ---\n{}",
            lab.tag,
            c.list(),
            read_lossy(&c.events),
            read_lossy(&c.log)
        );
    }
}

fn cut_off(lab: &Lab, c: &Controller, ns: &str, ip: IpAddr, who: &str) {
    assert!(
        lab.http_get(ns, ip, PORT).is_err(),
        "[{}] {who} is still served\n--- list ---\n{:?}\n--- events ---\n{}",
        lab.tag,
        c.list(),
        read_lossy(&c.events)
    );
}

fn done(lab: &Lab, t0: Instant) {
    eprintln!(
        "[{}] passed in {:.1} s",
        lab.tag,
        t0.elapsed().as_secs_f64()
    );
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
    let ev = wait_cs(&lab, &c, "blocked", &att4);
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
    wait_cs(&lab, &c, "blocked", "fd00:200::/127");
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
    let s = wait_cs(&lab, &c, "suppressed", "10.200.1.0/24");
    assert_eq!(s["reason"], "never_block", "[{tag}] {s}");
    assert!(
        c.listed("10.200.1.0/24").is_none(),
        "[{tag}] {:?}",
        c.list()
    );
    served(&lab, &c, &cli_ns, tgt4, "the client after the /24 decision");

    // Deleting lifts (this also deletes the /24 decision, which contains it).
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att4]);
    let u = wait_cs(&lab, &c, "unblocked", &att4);
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
    wait_cs(&lab, &c, "unblocked", "fd00:200::/127");
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
    wait_cs(&lab, &c, "blocked", "10.200.1.0/31");
    let ev6 = wait_cs(&lab, &c, "blocked", &att6);
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
    wait_cs(&lab, &c, "unblocked", "10.200.1.0/31");
    wait_cs(&lab, &c, "unblocked", &att6);
    served(&lab, &c, &att_ns, tgt4, "the attacker over IPv4 at the end");
    served(&lab, &c, &att_ns, tgt6, "the attacker over IPv6 at the end");
    assert_eq!(
        c.stats_json()["blocked_sources"],
        0,
        "[{tag}] {:?}",
        c.list()
    );
    lab.assert_running(&c, "at the end");
    assert!(
        lab.stop_controller(&c).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c.log)
    );
    done(&lab, t0);
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
    wait_cs(&lab, &c, "blocked", &att4);

    // The Local API goes away: the block stays, the controller keeps running.
    lapi.stop();
    let deadline = Instant::now() + EVENT_LIMIT;
    while !read_lossy(&c.log).contains("lost the Local API") {
        lab.assert_running(&c, "while the Local API is down");
        assert!(
            Instant::now() < deadline,
            "[{tag}] no log line about the lost Local API\n{}",
            read_lossy(&c.log)
        );
        thread::sleep(Duration::from_millis(100));
    }
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
        |e| from_crowdsec(e, "blocked", &att6),
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
    assert!(
        lab.stop_controller(&c).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c.log)
    );
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att4]);
    let mut o = c.opts.clone();
    o.events = None;
    let c2 = lab.start_controller_with(&o);
    let u = wait_cs(&lab, &c2, "unblocked", &att4);
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
    assert!(
        lab.stop_controller(&c2).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c2.log)
    );

    // A reinstalled Local API (empty database, the same bouncer key registered
    // again) knows nothing of the IPv6 decision: its restored block is stale.
    lapi.wipe_and_restart();
    lapi.add_bouncer_with_key("scan-guard-test", &key);
    let mut o = c2.opts.clone();
    o.events = None;
    let c3 = lab.start_controller_with(&o);
    let u = wait_cs(&lab, &c3, "unblocked", &att6);
    assert!(
        u["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no such decision"),
        "[{tag}] {u}"
    );
    assert!(c3.list().is_empty(), "[{tag}] {:?}", c3.list());
    served(
        &lab,
        &c3,
        &att_ns,
        tgt6,
        "the attacker over IPv6 after the wipe",
    );
    assert!(
        lab.stop_controller(&c3).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c3.log)
    );
    done(&lab, t0);
}

fn wait_log(lab: &Lab, c: &Controller, needle: &str) -> String {
    let deadline = Instant::now() + EVENT_LIMIT;
    loop {
        let log = read_lossy(&c.log);
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        lab.assert_running(c, &format!("while waiting for a log line with {needle:?}"));
        assert!(
            Instant::now() < deadline,
            "[{}] no log line with {needle:?} within {EVENT_LIMIT:?}\n{log}",
            lab.tag
        );
        thread::sleep(Duration::from_millis(100));
    }
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
    let line = wait_log(&lab, &c, "rejected the bouncer API key");
    assert!(
        line.contains("403") && line.contains("cscli bouncers add"),
        "[{tag}] {line}"
    );
    let line = wait_log(&lab, &c, "rejected the machine credentials");
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
    assert!(
        lab.stop_controller(&c).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c.log)
    );

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
    let line = wait_log(&lab, &c, "is not reachable");
    assert!(line.contains("retrying in"), "[{tag}] {line}");
    thread::sleep(Duration::from_secs(2));
    lab.assert_running(&c, "with no Local API");
    assert!(
        lab.stop_controller(&c).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c.log)
    );

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
    let pin_dir = lab.bpffs.join("never");
    let out = lab.scan_guard_in(
        &lab.tgt.ns,
        &[
            "run",
            "--iface",
            &lab.tgt.iface,
            "--config",
            cfg.to_str().expect("UTF-8"),
            "--pin-dir",
            pin_dir.to_str().expect("UTF-8"),
            "--events",
            lab.file("events", "jsonl").to_str().expect("UTF-8"),
            "--state-file",
            lab.file("state", "json").to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "[{tag}] {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bouncer_api_key_file") && err.contains("no-such-key-file"),
        "[{tag}] {err}"
    );
    assert!(
        !pin_dir.join(scan_guard::loader::LINK_PIN).exists(),
        "[{tag}] attached although the config could not be used"
    );
    done(&lab, t0);
}
