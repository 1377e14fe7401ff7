//! The controller's life around real scans, in the lab (attacker and second client
//! on a bridge in a switch namespace, the target behind it with the controller on
//! its veth in native XDP mode and an HTTP server on port 8080):
//! - a block with a short TTL (`[blocking] ttl = ["3s"]`) expires on its own: an
//!   `expired` event, and the attacker is served again;
//! - `scan-guard block/unblock/allow/disallow` steer the running instance, with
//!   `blocked`/`unblocked` events, `list --json` rows, and an allow entry that wins
//!   over a block;
//! - SIGKILL leaves the program enforcing every block; a restart with the same pin
//!   directory and state file re-adopts it: every block still listed and enforced,
//!   still one XDP program on the interface;
//! - `--dry-run` reports `would_block` and drops nothing;
//! - slow scans (nmap `--scan-delay 2s` over 10 closed ports) are caught by the
//!   slow-scan test (TRW) and blocked, with the right kind;
//! - a source in `[blocking] never_block` is reported as `suppressed` and never
//!   blocked.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    hardening::block_rows,
    is_root,
    lab::{
        Background, Controller, ControllerOptions, Lab, XdpMode, event_name, is_event, read_lossy,
    },
};
use serde_json::Value;

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(5);

/// A lab with a second client and an HTTP server, the controller started with the
/// options `opts` returns (it may write a config file into the lab first), and both
/// clients checked to be served.
fn scene(tag: &str, opts: impl FnOnce(&Lab) -> ControllerOptions) -> (Lab, Controller) {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let lab = Lab::with_client_and_http_server(tag, PORT);
    let o = opts(&lab);
    let c = lab.start_controller_with(&o);
    served(
        &lab,
        &c,
        &lab.att.ns,
        "the attacker, before anything happened",
    );
    served(
        &lab,
        &c,
        &lab.client().ns,
        "the client, before anything happened",
    );
    (lab, c)
}

fn tgt(lab: &Lab) -> IpAddr {
    IpAddr::V4(lab.tgt.v4)
}

fn att(lab: &Lab) -> String {
    lab.att.v4.to_string()
}

/// Panics unless `ns` gets the page.
fn served(lab: &Lab, c: &Controller, ns: &str, who: &str) {
    lab.assert_served(c, ns, tgt(lab), PORT, who);
}

/// Panics if `ns` gets the page.
fn cut_off(lab: &Lab, c: &Controller, ns: &str, who: &str) {
    lab.assert_cut_off(c, ns, tgt(lab), PORT, who);
}

/// Waits for the attacker's `blocked` event during `scan`, then stops the scan.
fn blocked_by(lab: &Lab, c: &Controller, scan: &Background) -> Value {
    let att = att(lab);
    let ev = lab.wait_event_during(c, scan, EVENT_LIMIT, "blocked for the attacker", |e| {
        is_event(e, "blocked", &att)
    });
    thread::sleep(Duration::from_millis(200));
    lab.finish(scan);
    ev
}

fn dump(c: &Controller) -> String {
    read_lossy(&c.events)
}

#[test]
fn short_ttl_block_expires_and_the_attacker_is_served_again() {
    let t0 = Instant::now();
    let (lab, c) = scene("ttl-expiry", |lab| {
        let cfg = lab.write_file("config", "toml", "[blocking]\nttl = [\"3s\"]\n");
        ControllerOptions::new(XdpMode::Native).config(&cfg)
    });
    let tag = lab.tag.clone();
    let att = att(&lab);

    let scan = lab.fast_syn_scan();
    let blocked = blocked_by(&lab, &c, &scan);
    assert_eq!(
        blocked["ttl_s"], 3,
        "[{tag}] the block should live for the configured 3 s: {blocked}"
    );
    cut_off(&lab, &c, &lab.att.ns, "the blocked attacker");
    served(
        &lab,
        &c,
        &lab.client().ns,
        "the client while the attacker is blocked",
    );

    let expired = lab.wait_event(
        &c,
        Duration::from_secs(10),
        "expired for the attacker",
        |e| is_event(e, "expired", &att),
    );
    lab.assert_running(&c, "after the block expired");
    assert!(
        c.listed(&att).is_none(),
        "[{tag}] the attacker is still listed after {expired}: {:?}",
        c.list()
    );
    served(
        &lab,
        &c,
        &lab.att.ns,
        "the attacker after its block expired",
    );
    served(
        &lab,
        &c,
        &lab.client().ns,
        "the client after the block expired",
    );
    let stats = c.stats_json();
    assert_eq!(stats["blocked_sources"], 0, "[{tag}] stats: {stats}");
    assert_eq!(
        c.events_where(|e| is_event(e, "unblocked", &att)).len(),
        0,
        "[{tag}] expiry reported as unblocked\n{}",
        dump(&c)
    );
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

#[test]
fn manual_block_and_unblock_steer_the_running_controller() {
    let t0 = Instant::now();
    let (lab, c) = scene("manual", |_| ControllerOptions::new(XdpMode::Native));
    let tag = lab.tag.clone();
    let att = att(&lab);
    let att_ns = lab.att.ns.clone();
    let cli_ns = lab.client().ns.clone();

    // block: listed, reported, enforced; the other client is not affected.
    let out = c.cli_ok(&["block", &att, "--ttl", "90s", "--reason", "lab manual"]);
    assert!(out.contains(&att), "[{tag}] block said: {out}");
    // The operator's door has the rules of every other: the host's own address
    // (never-block set) and a prefix covering it are refused, nothing written.
    let own = lab.tgt.v4.to_string();
    c.cli_fails(&["block", &own], 1, "never-block set");
    c.cli_fails(&["block", "10.200.0.0/16"], 1, "never-block set");
    assert!(
        c.listed(&own).is_none() && c.listed("10.200.0.0/16").is_none(),
        "[{tag}] a refused block was written: {:?}",
        c.list()
    );
    let ev = lab.wait_event(&c, EVENT_LIMIT, "manual blocked", |e| {
        is_event(e, "blocked", &att)
    });
    assert_eq!(ev["origin"], "manual", "[{tag}] {ev}");
    assert_eq!(ev["reason"], "lab manual", "[{tag}] {ev}");
    assert_eq!(ev["ttl_s"], 90, "[{tag}] {ev}");
    let row = c
        .listed(&att)
        .unwrap_or_else(|| panic!("[{tag}] {att} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], "manual", "[{tag}] {row}");
    assert_eq!(row["reason"], "lab manual", "[{tag}] {row}");
    assert!(row["expires"].is_string(), "[{tag}] {row}");
    cut_off(&lab, &c, &att_ns, "the manually blocked attacker");
    served(
        &lab,
        &c,
        &cli_ns,
        "the client while the attacker is blocked",
    );
    assert!(
        c.stats_json()["dropped_blocked"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "[{tag}] the blocked curl was not counted as dropped_blocked"
    );

    // unblock: reported, gone, served again.
    c.cli_ok(&["unblock", &att]);
    lab.wait_event(&c, EVENT_LIMIT, "unblocked", |e| {
        is_event(e, "unblocked", &att)
    });
    assert!(c.list().is_empty(), "[{tag}] list: {:?}", c.list());
    served(&lab, &c, &att_ns, "the attacker after unblock");
    // An IPv6 block with --ttl 0 never expires and leaves IPv4 alone.
    let att6 = lab.att.v6.to_string();
    c.cli_ok(&["block", &att6, "--ttl", "0"]);
    let row = c
        .listed(&att6)
        .unwrap_or_else(|| panic!("[{tag}] {att6} not listed: {:?}", c.list()));
    assert!(row["expires"].is_null(), "[{tag}] --ttl 0 row {row}");
    assert!(
        lab.http_get(&att_ns, IpAddr::V6(lab.tgt.v6), PORT).is_err(),
        "[{tag}] the attacker's IPv6 address is blocked but still served"
    );
    served(
        &lab,
        &c,
        &att_ns,
        "the attacker over IPv4 while only its IPv6 address is blocked",
    );
    c.cli_ok(&["unblock", &att6]);
    lab.wait_event(&c, EVENT_LIMIT, "unblocked (IPv6)", |e| {
        is_event(e, "unblocked", &att6)
    });

    // Unblocking what is not blocked is a runtime error that says so.
    c.cli_fails(&["unblock", &att], 1, "not blocked");

    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

#[test]
fn manual_allow_wins_over_blocks_and_scans_until_disallowed() {
    let t0 = Instant::now();
    let (lab, c) = scene("allow", |_| ControllerOptions::new(XdpMode::Native));
    let tag = lab.tag.clone();
    let att = att(&lab);
    let att_ns = lab.att.ns.clone();
    let cli_ns = lab.client().ns.clone();

    // allow: a scan from an allowlisted source is not inspected, not blocked.
    c.cli_ok(&["allow", &att]);
    assert_eq!(c.stats_json()["allowlist_entries"], 1, "[{tag}]");
    let before = c.events().len();
    let scan = lab.fast_syn_scan();
    let t_scan = Instant::now();
    while lab.try_status(scan.proc).is_none() && t_scan.elapsed() < Duration::from_secs(40) {
        thread::sleep(Duration::from_millis(100));
    }
    lab.finish(&scan);
    thread::sleep(Duration::from_millis(1500));
    let after: Vec<Value> = c.events().into_iter().skip(before).collect();
    assert!(
        after.is_empty(),
        "[{tag}] events about an allowlisted scanner: {after:?}"
    );
    assert!(c.list().is_empty(), "[{tag}] list: {:?}", c.list());
    let stats = c.stats_json();
    assert!(
        stats["allowlisted"].as_u64().is_some_and(|n| n >= 200),
        "[{tag}] the scan's probes were not counted as allowlisted: {stats}"
    );
    served(&lab, &c, &att_ns, "the allowlisted attacker after its scan");

    // An allow entry wins over a block; disallow lets the block bite.
    c.cli_ok(&["block", &att, "--ttl", "90s"]);
    lab.wait_event(&c, EVENT_LIMIT, "blocked (while allowed)", |e| {
        is_event(e, "blocked", &att) && e["ttl_s"] == 90 && e["reason"] == "manual"
    });
    served(&lab, &c, &att_ns, "the attacker, blocked but allowlisted");
    c.cli_ok(&["disallow", &att]);
    cut_off(
        &lab,
        &c,
        &att_ns,
        "the attacker after disallow (still blocked)",
    );
    served(&lab, &c, &cli_ns, "the client after disallow");
    c.cli_ok(&["unblock", &att]);
    served(&lab, &c, &att_ns, "the attacker after the last unblock");
    c.cli_fails(&["disallow", &att], 1, "not on the allowlist");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

#[test]
fn sigkill_keeps_every_block_enforced_and_a_restart_readopts_them() {
    let t0 = Instant::now();
    let (lab, c) = scene("sigkill-restart", |_| {
        ControllerOptions::new(XdpMode::Native)
    });
    let tag = lab.tag.clone();
    let att = att(&lab);
    let att_ns = lab.att.ns.clone();
    let cli_ns = lab.client().ns.clone();

    // Three blocks of three origins' worth: the scanner (kernel or detector) and two
    // manual ones, one IPv6 without expiry.
    let scan = lab.fast_syn_scan();
    blocked_by(&lab, &c, &scan);
    c.cli_ok(&["block", "10.200.1.99", "--ttl", "10m", "--reason", "m1"]);
    c.cli_ok(&["block", "fd00:200::99", "--ttl", "0", "--reason", "m2"]);
    for a in ["10.200.1.99", "fd00:200::99"] {
        lab.wait_event(&c, EVENT_LIMIT, "manual blocked", |e| {
            is_event(e, "blocked", a)
        });
    }
    let before = block_rows(&c);
    assert_eq!(before.len(), 3, "[{tag}] list before the kill: {before:?}");
    assert!(
        before.iter().any(|r| r.0 == att),
        "[{tag}] the scanner is not listed: {before:?}"
    );
    let progs = lab.xdp_prog_ids(&lab.tgt);
    assert_eq!(progs.len(), 1, "[{tag}] {}", lab.link_show(&lab.tgt));

    // kill -9: nothing cleans up, the kernel keeps enforcing.
    let status = lab.kill_controller(&c);
    assert!(!status.success(), "[{tag}] SIGKILL exit status {status:?}");
    assert!(
        c.link_pin().exists(),
        "[{tag}] the link pin is gone after SIGKILL"
    );
    assert_eq!(
        lab.xdp_prog_ids(&lab.tgt),
        progs,
        "[{tag}] the program changed or left with the controller:\n{}",
        lab.link_show(&lab.tgt)
    );
    cut_off(
        &lab,
        &c,
        &att_ns,
        "the blocked attacker with no controller running",
    );
    served(&lab, &c, &cli_ns, "the client with no controller running");
    let st = c.cli_json(&["status"]);
    assert_eq!(st["attached"], true, "[{tag}] status after SIGKILL: {st}");
    assert_eq!(
        st["controller_running"], false,
        "[{tag}] status after SIGKILL: {st}"
    );
    assert_eq!(
        block_rows(&c),
        before,
        "[{tag}] blocks changed while no controller ran"
    );

    // Restart on the same pins and state file: re-adopted, nothing lost, one program.
    let c2 = lab.start_controller_with(&c.opts);
    let log2 = read_lossy(&c2.log);
    assert!(
        log2.contains("re-adopted"),
        "[{tag}] the restarted controller did not re-adopt the instance:\n{log2}"
    );
    assert!(
        !log2.contains("another map layout"),
        "[{tag}] its own pins taken for another version's:\n{log2}"
    );
    let after = block_rows(&c2);
    assert_eq!(
        after, before,
        "[{tag}] blocks before the kill vs after the restart\n--- log ---\n{log2}"
    );
    let progs2 = lab.xdp_prog_ids(&lab.tgt);
    assert_eq!(
        progs2.len(),
        1,
        "[{tag}] after the restart the interface carries {} XDP programs:\n{}",
        progs2.len(),
        lab.link_show(&lab.tgt)
    );
    let bpftool = lab.exec_in(
        &lab.tgt.ns,
        &["bpftool", "-j", "net", "show", "dev", &lab.tgt.iface],
    );
    if bpftool.status.success() {
        let v: Value = serde_json::from_slice(&bpftool.stdout).unwrap_or(Value::Null);
        let xdp = v[0]["xdp"].as_array().map_or(0, Vec::len);
        assert_eq!(
            xdp,
            1,
            "[{tag}] bpftool net show: {}",
            String::from_utf8_lossy(&bpftool.stdout)
        );
    }
    cut_off(&lab, &c2, &att_ns, "the blocked attacker after the restart");
    served(&lab, &c2, &cli_ns, "the client after the restart");
    let st = c2.cli_json(&["status"]);
    assert_eq!(st["controller_running"], true, "[{tag}] status: {st}");
    assert_eq!(
        st["pid"].as_u64(),
        lab.controller_pid(&c2).map(u64::from),
        "[{tag}] status: {st}"
    );

    // The restarted controller is live: a new manual block is reported.
    c2.cli_ok(&["block", "10.200.1.98", "--ttl", "5m"]);
    lab.wait_event(&c2, EVENT_LIMIT, "blocked after the restart", |e| {
        is_event(e, "blocked", "10.200.1.98")
    });
    let reported_again: Vec<String> = c2
        .events()
        .iter()
        .filter(|e| event_name(e) == "blocked")
        .map(|e| e["src"].as_str().unwrap_or("").to_owned())
        .collect();

    // A clean stop now detaches; the state file keeps the blocks.
    lab.stop_controller_ok(&c2);
    assert!(
        lab.xdp_prog_ids(&lab.tgt).is_empty(),
        "[{tag}] still attached after SIGTERM"
    );
    let state = std::fs::read_to_string(&c2.state_file).unwrap_or_default();
    for r in &before {
        assert!(
            state.contains(r.0.as_str()),
            "[{tag}] state file lacks {}: {state}",
            r.0
        );
    }
    eprintln!("[{tag}] blocked events in the (shared) events file: {reported_again:?}");
    lab.report_passed(t0);
}

#[test]
fn dry_run_reports_would_block_and_drops_nothing() {
    let t0 = Instant::now();
    let (lab, c) = scene("dry-run", |_| {
        ControllerOptions::new(XdpMode::Native).dry_run()
    });
    let tag = lab.tag.clone();
    let att = att(&lab);
    let st = c.cli_json(&["status"]);
    assert_eq!(st["dry_run"], true, "[{tag}] status: {st}");

    let scan = lab.fast_syn_scan();
    let wb = lab.wait_event_during(&c, &scan, EVENT_LIMIT, "would_block", |e| {
        is_event(e, "would_block", &att)
    });
    assert_eq!(wb["kind"], "syn", "[{tag}] {wb}");
    let t_scan = Instant::now();
    while lab.try_status(scan.proc).is_none() && t_scan.elapsed() < Duration::from_secs(40) {
        thread::sleep(Duration::from_millis(100));
    }
    let out = lab.finish(&scan);
    assert!(
        out.contains("closed") || out.contains("Not shown"),
        "[{tag}] nmap saw no closed ports, was something dropped?\n{out}"
    );
    thread::sleep(Duration::from_millis(1200));
    let blocked = c.events_where(|e| event_name(e) == "blocked");
    assert!(blocked.is_empty(), "[{tag}] dry run blocked: {blocked:?}");
    assert!(c.list().is_empty(), "[{tag}] dry run list: {:?}", c.list());
    served(&lab, &c, &lab.att.ns, "the attacker in a dry run");
    served(&lab, &c, &lab.client().ns, "the client in a dry run");
    let stats = c.stats_json();
    assert_eq!(stats["dropped_blocked"], 0, "[{tag}] stats: {stats}");
    assert_eq!(stats["auto_blocks"], 0, "[{tag}] stats: {stats}");
    assert_eq!(stats["blocked_sources"], 0, "[{tag}] stats: {stats}");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}

/// A slow scan of 10 closed high ports, one probe every 2 s, no retries.
fn slow_scan(lab: &Lab, scan_type: &str, expect_kind: &str) {
    let t0 = Instant::now();
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let lab_tag = lab.tag.clone();
    let tag = lab_tag.as_str();
    let att = att(lab);
    // The attacker is checked before the controller starts: the slow-scan test sees
    // only the scan's first contacts.
    if let Err(e) = lab.http_get(&lab.att.ns, tgt(lab), PORT) {
        panic!("[{tag}] the attacker is not served before the controller starts: {e}");
    }
    let c = lab.start_controller(XdpMode::Native);
    served(lab, &c, &lab.client().ns, "the client, before the scan");
    let target = lab.tgt.v4.to_string();
    let scan = lab.spawn_nmap(&[
        scan_type,
        "-n",
        "-Pn",
        "--scan-delay",
        "2s",
        "--max-retries",
        "0",
        "-p",
        "1001-1010",
        "--host-timeout",
        "40s",
        &target,
    ]);
    let detected = lab.wait_event_during(&c, &scan, EVENT_LIMIT, "scan_detected", |e| {
        is_event(e, "scan_detected", &att)
    });
    let t_detect = t0.elapsed().as_secs_f64();
    assert_eq!(
        detected["evidence"]["rule"],
        "trw",
        "[{tag}] the first detection of a slow scan should come from the slow-scan test\n{}",
        dump(&c)
    );
    assert!(
        detected["evidence"]["failures"]
            .as_u64()
            .is_some_and(|f| f >= 4),
        "[{tag}] {detected}"
    );
    assert_eq!(
        detected["kind"],
        expect_kind,
        "[{tag}] nmap {scan_type} --scan-delay 2s: scan_detected kind\n{}",
        dump(&c)
    );
    let blocked = lab.wait_event_during(&c, &scan, EVENT_LIMIT, "blocked", |e| {
        is_event(e, "blocked", &att)
    });
    lab.finish(&scan);
    assert_eq!(blocked["origin"], "detector", "[{tag}] {blocked}");
    assert_eq!(blocked["evidence"]["rule"], "trw", "[{tag}] {blocked}");
    assert_eq!(
        blocked["kind"],
        expect_kind,
        "[{tag}] nmap {scan_type} --scan-delay 2s: blocked kind\n{}",
        dump(&c)
    );
    let row = c
        .listed(&att)
        .unwrap_or_else(|| panic!("[{tag}] {att} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], "detector", "[{tag}] {row}");
    cut_off(lab, &c, &lab.att.ns, "the slow scanner");
    served(lab, &c, &lab.client().ns, "the client after the slow scan");
    lab.stop_controller_ok(&c);
    eprintln!("[{tag}] detected after {t_detect:.1} s");
    lab.report_passed(t0);
}

#[test]
fn slow_syn_scan_is_caught_by_the_slow_scan_test() {
    let lab = Lab::with_client_and_http_server("slow-sS", PORT);
    slow_scan(&lab, "-sS", "syn");
}

#[test]
fn slow_connect_scan_is_caught_by_the_slow_scan_test_as_connect() {
    let lab = Lab::with_client_and_http_server("slow-sT", PORT);
    slow_scan(&lab, "-sT", "connect");
}

#[test]
fn never_block_source_is_reported_as_suppressed_and_never_blocked() {
    let t0 = Instant::now();
    let (lab, c) = scene("never-block", |lab| {
        let cfg = lab.write_file(
            "config",
            "toml",
            &format!("[blocking]\nnever_block = [\"{}/32\"]\n", lab.att.v4),
        );
        ControllerOptions::new(XdpMode::Native).config(&cfg)
    });
    let tag = lab.tag.clone();
    let att = att(&lab);

    let scan = lab.fast_syn_scan();
    let sup = lab.wait_event_during(&c, &scan, EVENT_LIMIT, "suppressed", |e| {
        is_event(e, "suppressed", &att)
    });
    assert_eq!(sup["reason"], "never_block", "[{tag}] {sup}");
    assert_eq!(sup["kind"], "syn", "[{tag}] {sup}");
    let t_scan = Instant::now();
    while lab.try_status(scan.proc).is_none() && t_scan.elapsed() < Duration::from_secs(40) {
        thread::sleep(Duration::from_millis(100));
    }
    lab.finish(&scan);
    thread::sleep(Duration::from_millis(1200));
    let bad = c.events_where(|e| {
        e["src"] == att.as_str() && matches!(event_name(e), "blocked" | "would_block")
    });
    assert!(
        bad.is_empty(),
        "[{tag}] never-block source blocked: {bad:?}"
    );
    let supp = c.events_where(|e| is_event(e, "suppressed", &att));
    assert!(
        supp.iter().all(|e| e["reason"] == "never_block"),
        "[{tag}] suppressed for other reasons: {supp:?}"
    );
    assert!(c.list().is_empty(), "[{tag}] list: {:?}", c.list());
    served(
        &lab,
        &c,
        &lab.att.ns,
        "the never-block scanner after its scan",
    );
    served(&lab, &c, &lab.client().ns, "the client");
    let stats = c.stats_json();
    assert_eq!(stats["dropped_blocked"], 0, "[{tag}] stats: {stats}");
    assert!(
        stats["auto_block_suppressed"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "[{tag}] stats: {stats}"
    );
    lab.stop_controller_ok(&c);
    eprintln!("[{tag}] {} suppressed events", supp.len());
    lab.report_passed(t0);
}

/// Pins made by a scan-guard with another map layout (here: those of the
/// previous version, which had no per-family block maps nor presence bitmaps)
/// are not reused: the restart recreates the maps, swaps the program in the
/// pinned link (one program on the interface throughout), restores every block
/// from the state file, and control commands work again; a control command
/// meeting such pins says what to do instead of failing on a missing map.
#[test]
fn pins_of_another_layout_are_recreated_and_blocks_restored() {
    let (lab, c) = scene("layout-other", |_| ControllerOptions::new(XdpMode::Native));
    let tag = lab.tag.clone();
    let att = att(&lab);
    let att_ns = lab.att.ns.clone();
    let cli_ns = lab.client().ns.clone();
    let scan = lab.fast_syn_scan();
    blocked_by(&lab, &c, &scan);
    c.cli_ok(&["block", "10.200.1.99", "--ttl", "10m", "--reason", "m1"]);
    lab.wait_event(&c, EVENT_LIMIT, "manual blocked", |e| {
        is_event(e, "blocked", "10.200.1.99")
    });
    let before = block_rows(&c);
    assert_eq!(before.len(), 2, "[{tag}] {before:?}");
    assert!(before.iter().any(|r| r.0 == att), "[{tag}] {before:?}");
    assert!(!lab.kill_controller(&c).success(), "[{tag}] SIGKILL");

    use scan_guard_common::map_names;
    for name in [
        map_names::BLOCK_V4,
        map_names::BLOCK_V6,
        map_names::BLOCK_PRESENCE,
        map_names::KERNEL_PRESENCE,
    ] {
        std::fs::remove_file(c.pin_dir.join(name)).expect("unpinning a map");
    }
    c.cli_fails(&["list"], 2, "another map layout");

    let c2 = lab.start_controller_with(&c.opts);
    let log2 = read_lossy(&c2.log);
    assert!(
        log2.contains("another map layout"),
        "[{tag}] no word of the recreated maps:\n{log2}"
    );
    let after = block_rows(&c2);
    assert_eq!(after, before, "[{tag}] blocks after the restart\n{log2}");
    assert_eq!(
        lab.xdp_prog_ids(&lab.tgt).len(),
        1,
        "[{tag}] {}",
        lab.link_show(&lab.tgt)
    );
    cut_off(&lab, &c2, &att_ns, "the blocked attacker after the restart");
    served(&lab, &c2, &cli_ns, "the client after the restart");
    c2.cli_ok(&["block", "10.200.1.98", "--ttl", "5m"]);
    lab.wait_event(&c2, EVENT_LIMIT, "blocked after the restart", |e| {
        is_event(e, "blocked", "10.200.1.98")
    });
    lab.stop_controller_ok(&c2);
}
