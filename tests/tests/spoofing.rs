//! Spoofed scans against the real controller, in the lab (attacker, second client
//! and target on a bridge; an HTTP server on the target). The spoofed frames are
//! written by a packet socket in the attacker namespace onto its veth, with source
//! addresses inside the lab's own 10.200.0.0/16 (a blackhole route in the target
//! namespace swallows any reply), so nothing leaves the lab.
//!
//! - Scans spoofed from addresses the host must never cut itself off from are never
//!   blocked: its resolver (a lab-only `/etc/netns/<target>/resolv.conf`, which
//!   `ip netns exec` shows the controller as /etc/resolv.conf), its own IPv4 and
//!   IPv6 addresses (reported `suppressed`, reason `never_block`), and an
//!   allowlisted prefix (not even reported). The gateway case needs a default route,
//!   which the lab may not have; the kernel side of it is covered in
//!   `spoofing_kernel_caps.rs`. A scan from an ordinary spoofed source in the same
//!   run is blocked, so the frames do reach the program.
//! - A scan spoofed from very many sources never pushes the blocklist past
//!   `blocking.max_blocks` and never starts blocks faster than
//!   `blocking.max_new_blocks_per_sec`, with kernel auto-block on (the default) and
//!   with blocking left to the controller (`kernel_auto_block = false`); the rest is
//!   reported `suppressed` (`block_rate_cap`, `blocklist_cap`/`blocklist_full`), and
//!   the legitimate client keeps being served throughout.
//! - A flood of spoofed crossings that spends the new-block budget every second
//!   does not starve a real scanner: refused, it is retried from the quarter of
//!   the budget the kernel leaves to the controller, strongest evidence first, and
//!   blocked while the flood goes on.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    hardening::{Injector, NetnsEtc, SCAN_PORTS, SpoofRange, block_rows, max_in_window, served},
    is_root,
    lab::{Controller, ControllerOptions, Lab, XdpMode, event_name, is_event, read_lossy},
};
use serde_json::Value;

const PORT: u16 = 8080;

fn lab(tag: &str) -> Lab {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    Lab::with_client_and_http_server(tag, PORT)
}

fn dump(c: &Controller) -> String {
    format!(
        "--- events ---\n{}--- log ---\n{}",
        read_lossy(&c.events),
        read_lossy(&c.log)
    )
}

#[test]
fn spoofed_scans_from_protected_sources_never_block_them() {
    let t0 = Instant::now();
    let lab = lab("spoof-protected");
    let tag = lab.tag.clone();
    // The target's resolvers, as the controller reads them at start.
    let _etc = NetnsEtc::new(
        &lab.tgt.ns,
        &[(
            "resolv.conf",
            "# scan-guard lab\nnameserver 10.200.1.53\nnameserver fd00:200::53\n",
        )],
    );
    let range = SpoofRange::MID;
    range.install(&lab);
    let cfg = lab.write_file(
        "config",
        "toml",
        "[blocking]\nallow = [\"10.200.7.0/24\"]\n",
    );
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let log = read_lossy(&c.log);
    for a in ["10.200.1.53", "fd00:200::53", "10.200.1.2", "fd00:200::2"] {
        assert!(
            log.lines()
                .any(|l| l.contains("never-block set") && l.contains(a)),
            "[{tag}] {a} not in the never-block set:\n{log}"
        );
    }

    let mut inj = Injector::new(&lab.att, &lab.tgt);
    let dst4 = IpAddr::V4(lab.tgt.v4);
    let dst6 = IpAddr::V6(lab.tgt.v6);
    let protected: [(&str, IpAddr); 4] = [
        ("10.200.1.53", dst4),
        ("fd00:200::53", dst6),
        ("10.200.1.2", dst4),
        ("fd00:200::2", dst6),
    ];
    let allowed = "10.200.7.5";
    let ordinary = range.addr(77);
    let ordinary_s = ordinary.to_string();
    // Two rounds of 8 ports each: a second window's worth of evidence cannot slip
    // through either.
    for _round in 0..2 {
        for (src, dst) in protected {
            inj.syn_scan(src.parse().expect("addr"), dst, &SCAN_PORTS);
        }
        inj.syn_scan(allowed.parse().expect("addr"), dst4, &SCAN_PORTS);
    }
    inj.syn_scan(ordinary, dst4, &SCAN_PORTS);

    lab.wait_event(
        &c,
        Duration::from_secs(5),
        "blocked for the ordinary spoofed source",
        |e| is_event(e, "blocked", &ordinary_s),
    );
    for (src, _) in protected {
        let ev = lab.wait_event(&c, Duration::from_secs(5), "suppressed", |e| {
            is_event(e, "suppressed", src)
        });
        assert_eq!(ev["reason"], "never_block", "[{tag}] {ev}");
    }
    thread::sleep(Duration::from_millis(1500)); // the controller's slow-scan test too
    let mut bad = Vec::new();
    for (src, _) in protected {
        for e in c.events_where(|e| e["src"] == src) {
            // Reported, never blocked: detections, never_block suppressions and
            // distributed-scan hints (which never block by themselves).
            let ok = matches!(event_name(&e), "scan_detected" | "distributed_scan")
                || (event_name(&e) == "suppressed" && e["reason"] == "never_block");
            if !ok {
                bad.push(e);
            }
        }
    }
    assert!(
        bad.is_empty(),
        "[{tag}] protected sources: {bad:?}\n{}",
        dump(&c)
    );
    let about_allowed = c.events_where(|e| e["src"] == allowed);
    assert!(
        about_allowed.is_empty(),
        "[{tag}] events about an allowlisted source: {about_allowed:?}"
    );
    let rows = block_rows(&c);
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        vec![ordinary_s.as_str()],
        "[{tag}] only the ordinary spoofed source may be blocked: {rows:?}"
    );
    let s = c.stats_json();
    assert!(
        s["allowlisted"].as_u64().unwrap_or(0) >= 2 * SCAN_PORTS.len() as u64,
        "[{tag}] {s}"
    );
    assert!(
        served(&lab, &lab.client().ns, PORT),
        "[{tag}] client not served"
    );
    assert!(
        served(&lab, &lab.att.ns, PORT),
        "[{tag}] attacker's real address not served"
    );
    assert!(lab.stop_controller(&c).success(), "[{tag}] controller exit");
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}

const MAX_BLOCKS: usize = 20;
const RATE: usize = 5;

/// Spoofed scans from `waves` x `per_wave` sources, one wave every 400 ms, against a
/// controller capped at MAX_BLOCKS blocks and RATE new blocks per second; checks
/// the caps while it runs and after.
fn caps_hold(tag: &str, kernel_auto_block: bool) {
    let t0 = Instant::now();
    let lab = lab(tag);
    let tag = lab.tag.clone();
    let range = SpoofRange::MID;
    range.install(&lab);
    let cfg = lab.write_file(
        "config",
        "toml",
        &format!(
            "[blocking]\nkernel_auto_block = {kernel_auto_block}\nmax_blocks = {MAX_BLOCKS}\nmax_new_blocks_per_sec = {RATE}\nttl = [\"10m\"]\n"
        ),
    );
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let mut inj = Injector::new(&lab.att, &lab.tgt);
    let dst = IpAddr::V4(lab.tgt.v4);
    let cli_ns = lab.client().ns.clone();

    let (waves, per_wave) = (16u32, 25u32);
    let mut peak = 0usize;
    let mut unserved = Vec::new();
    for w in 0..waves {
        for i in 0..per_wave {
            inj.syn_scan(range.addr(w * per_wave + i), dst, &SCAN_PORTS);
        }
        let n = c.maps().blocks().map(|b| b.len()).unwrap_or(0);
        peak = peak.max(n);
        if !served(&lab, &cli_ns, PORT) {
            unserved.push(w);
        }
        thread::sleep(Duration::from_millis(400));
    }
    // Let the controller finish (slow-scan test, reconcile).
    thread::sleep(Duration::from_millis(2000));
    lab.assert_running(&c, "after the spoofed scans");

    let entries = c.maps().blocks().expect("blocklist");
    peak = peak.max(entries.len());
    let rows = block_rows(&c);
    let blocked_events: Vec<Value> = c.events_where(|e| event_name(e) == "blocked");
    let suppressed: Vec<Value> = c.events_where(|e| event_name(e) == "suppressed");
    let reasons: std::collections::BTreeMap<String, usize> =
        suppressed.iter().fold(Default::default(), |mut m, e| {
            *m.entry(e["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            m
        });
    let created: Vec<u64> = entries.iter().map(|(_, _, e)| e.created_ns).collect();
    let span_s = created
        .iter()
        .max()
        .zip(created.iter().min())
        .map_or(0.0, |(a, b)| (a - b) as f64 / 1e9);
    // Block start times as the blocklist records them (kernel clock; an
    // adopted kernel auto-block keeps its own start): any window of one second
    // (less the coarse clock's tick) holds at most RATE of them.
    let burst = max_in_window(&created, 990_000_000);
    let mut timeline: Vec<(u64, u8)> = entries
        .iter()
        .map(|(_, _, e)| (e.created_ns, e.origin))
        .collect();
    timeline.sort_unstable();
    let first = timeline.first().map_or(0, |t| t.0);
    let timeline: Vec<String> = timeline
        .iter()
        .map(|(t, o)| {
            let origin = scan_guard_common::state::BlockOrigin::from_u8(*o)
                .map_or("?", scan_guard_common::state::BlockOrigin::name);
            format!("+{:.3}s {origin}", (t - first) as f64 / 1e9)
        })
        .collect();
    let summary = format!(
        "peak {peak} entries, {} listed, {} blocked events, suppressed {reasons:?}, max {burst} new blocks within 1 s, spread over {span_s:.1} s; block starts: {}",
        rows.len(),
        blocked_events.len(),
        timeline.join(", ")
    );
    eprintln!("[{tag}] {summary}");

    assert!(
        peak <= MAX_BLOCKS && rows.len() <= MAX_BLOCKS,
        "[{tag}] the blocklist went past max_blocks = {MAX_BLOCKS}: {summary}"
    );
    assert!(
        blocked_events.len() <= MAX_BLOCKS,
        "[{tag}] more blocks started than max_blocks = {MAX_BLOCKS}: {summary}\n{}",
        dump(&c)
    );
    assert_eq!(
        rows.len(),
        MAX_BLOCKS,
        "[{tag}] {waves} waves of {per_wave} scanners should fill the blocklist: {summary}"
    );
    assert!(
        burst <= RATE,
        "[{tag}] blocks started faster than max_new_blocks_per_sec = {RATE}: {summary}"
    );
    assert!(
        reasons.contains_key("block_rate_cap"),
        "[{tag}] no block_rate_cap suppression: {summary}"
    );
    assert!(
        reasons.contains_key("blocklist_cap") || reasons.contains_key("blocklist_full"),
        "[{tag}] no blocklist cap suppression: {summary}"
    );
    assert!(
        unserved.is_empty(),
        "[{tag}] the client was not served during waves {unserved:?}: {summary}"
    );
    assert!(
        served(&lab, &cli_ns, PORT),
        "[{tag}] client not served at the end"
    );
    assert!(lab.stop_controller(&c).success(), "[{tag}] controller exit");
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn spoofed_scan_from_many_sources_respects_the_caps_with_kernel_auto_block() {
    caps_hold("spoof-caps-kernel", true);
}

#[test]
fn spoofed_scan_from_many_sources_respects_the_caps_in_the_controller() {
    caps_hold("spoof-caps-ctl", false);
}

#[test]
fn a_real_scan_is_blocked_through_a_flood_of_spoofed_crossings() {
    let lab = lab("spoof-starve");
    let tag = lab.tag.clone();
    let range = SpoofRange::MID;
    range.install(&lab);
    // Four new blocks a second: three for the kernel, one kept for retries.
    let cfg = lab.write_file(
        "config",
        "toml",
        "[blocking]\nmax_new_blocks_per_sec = 4\nmax_blocks = 10000\n",
    );
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let mut inj = Injector::new(&lab.att, &lab.tgt);
    let dst = IpAddr::V4(lab.tgt.v4);
    let att = lab.att.v4.to_string();
    // 40 crossings a second, each from a spoofed address, for 12 s; the real scan
    // starts one second in.
    let mut scan = None;
    let mut blocked_at = None;
    let t0 = Instant::now();
    for wave in 0..48u32 {
        for i in 0..10 {
            inj.syn_scan(range.addr(wave * 10 + i), dst, &SCAN_PORTS);
        }
        if wave == 4 {
            let mut args = scan_guard_tests::lab::quick_scan_args("-sS", "30s");
            let target = lab.tgt.v4.to_string();
            args.push(&target);
            scan = Some((lab.spawn_nmap(&args), Instant::now()));
        }
        if blocked_at.is_none() && c.events().iter().any(|e| is_event(e, "blocked", &att)) {
            blocked_at = Some(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(250));
    }
    let flood_s = t0.elapsed().as_secs_f64();
    let (scan, started) = scan.expect("scan started");
    lab.finish(&scan);
    let events = c.events();
    let suppressed_first = events.iter().any(|e| is_event(e, "suppressed", &att));
    let blocked: Vec<&Value> = events
        .iter()
        .filter(|e| is_event(e, "blocked", &att))
        .collect();
    let spoofed_blocks = events
        .iter()
        .filter(|e| event_name(e) == "blocked" && e["src"] != att.as_str())
        .count();
    let summary = format!(
        "flood {flood_s:.1} s, attacker blocked at {blocked_at:?} (scan started {:.1} s in), suppressed first: {suppressed_first}, spoofed sources blocked: {spoofed_blocks}; attacker events: {blocked:?}",
        started.duration_since(t0).as_secs_f64()
    );
    eprintln!("[{tag}] {summary}");
    assert!(
        blocked_at.is_some(),
        "[{tag}] the real scanner was never blocked during the flood: {summary}\n{}",
        dump(&c)
    );
    assert!(
        spoofed_blocks > 0,
        "[{tag}] the flood did not spend the budget: {summary}"
    );
}
