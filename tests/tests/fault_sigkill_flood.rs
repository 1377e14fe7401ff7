//! SIGKILL of the controller in the middle of a SYN flood from a blocked source
//! (`hping3 --flood`, bounded by `timeout`), in the lab with a second client and a
//! short block lifetime (`[blocking] ttl = ["4s"]`):
//! - with no controller, the kernel keeps dropping the blocked flood, ends the 4 s
//!   block on its own (the flood passes again, `blocks_expired` counts it), and
//!   blocks a new scanner by itself;
//! - `list --json` is the same right after the kill as right before it;
//! - the restart re-adopts the instance: every block is still there exactly once
//!   (the long ones unchanged, the kernel's new one adopted), none is lost, and the
//!   events file reports every block start and end exactly once across both
//!   controllers: no `blocked` event repeated for a block that ended meanwhile.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    hardening::{block_rows, count_events, served, stat, wait_until},
    is_root,
    lab::{
        ControllerOptions, Lab, LabOptions, XdpMode, event_name, is_event, quick_scan_args,
        read_lossy,
    },
};

const PORT: u16 = 8080;
const LONG_V4: &str = "10.200.1.99";
const LONG_V6: &str = "fd00:200::99";

#[test]
fn sigkill_during_a_flood_loses_and_duplicates_no_block() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::with_options(
        "sigkill-flood",
        LabOptions {
            second_client: true,
        },
    );
    let tag = lab.tag.clone();
    lab.start_http_server(PORT);
    let cfg = lab.write_file("config", "toml", "[blocking]\nttl = [\"4s\"]\n");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(&cfg));
    let att = lab.att.v4.to_string();
    let cli = lab.client().v4.to_string();
    let cli_ns = lab.client().ns.clone();
    let limit = Duration::from_secs(5);

    // Blocks of every kind: two long manual ones and the attacker's (kernel, 4 s).
    c.cli_ok(&["block", LONG_V4, "--ttl", "10m", "--reason", "long v4"]);
    c.cli_ok(&["block", LONG_V6, "--ttl", "0", "--reason", "long v6"]);
    for a in [LONG_V4, LONG_V6] {
        lab.wait_event(&c, limit, "manual blocked", |e| is_event(e, "blocked", a));
    }
    let scan = lab.fast_syn_scan();
    let blocked = lab.wait_event_during(&c, &scan, limit, "blocked for the attacker", |e| {
        is_event(e, "blocked", &att)
    });
    let blocked_at = Instant::now();
    lab.finish(&scan);
    assert_eq!(blocked["ttl_s"], 4, "[{tag}] {blocked}");

    // The flood: SYNs to one closed port as fast as hping3 goes (one port never
    // scores as a scan, so it is only the block that drops them).
    let flood_log = lab.file("hping3", "log");
    let target = lab.tgt.v4.to_string();
    let flood = lab.spawn_in(
        &lab.att.ns,
        &[
            "timeout", "-s", "INT", "20", "hping3", "-q", "-S", "-p", "7", "--flood", &target,
        ],
        &flood_log,
    );
    let d_start = stat(&c, "dropped_blocked");
    wait_until(Duration::from_secs(3), "the flood being dropped", || {
        stat(&c, "dropped_blocked") > d_start + 1000
    });

    let before = block_rows(&c);
    assert_eq!(
        before.len(),
        3,
        "[{tag}] blocks before the kill: {before:?}"
    );
    let status = lab.kill_controller(&c);
    assert!(!status.success(), "[{tag}] SIGKILL exit status {status:?}");
    assert_eq!(block_rows(&c), before, "[{tag}] list changed with the kill");

    // No controller: the kernel keeps dropping the blocked flood...
    let d0 = stat(&c, "dropped_blocked");
    thread::sleep(Duration::from_millis(300));
    let d1 = stat(&c, "dropped_blocked");
    assert!(
        d1 > d0 + 100,
        "[{tag}] no drops without the controller: {d0} -> {d1}"
    );

    // ...and ends the 4 s block by itself: the flood passes again.
    let expired_before = stat(&c, "blocks_expired");
    wait_until(
        Duration::from_secs(10),
        "the attacker's block ending in the kernel",
        || !block_rows(&c).iter().any(|r| r.0 == att),
    );
    let ended_after = blocked_at.elapsed().as_secs_f64();
    assert!(
        ended_after >= 2.5,
        "[{tag}] the 4 s block ended after only {ended_after:.1} s"
    );
    assert!(
        stat(&c, "blocks_expired") > expired_before,
        "[{tag}] blocks_expired did not count the end"
    );
    let (e0, p0) = (stat(&c, "dropped_blocked"), stat(&c, "passed"));
    thread::sleep(Duration::from_millis(300));
    let (e1, p1) = (stat(&c, "dropped_blocked"), stat(&c, "passed"));
    assert!(
        e1 - e0 < 50 && p1 > p0 + 100,
        "[{tag}] after the block ended the flood should pass: dropped {e0}->{e1}, passed {p0}->{p1}"
    );
    assert!(
        lab.try_status(flood).is_none(),
        "[{tag}] the flood stopped early:\n{}",
        read_lossy(&flood_log)
    );

    // The kernel blocks a new scanner on its own, still without a controller.
    let mut nmap = vec!["nmap"];
    nmap.extend(quick_scan_args("-sS", "20s"));
    nmap.push(&target);
    let scan2 = lab.spawn_in(&cli_ns, &nmap, &lab.file("nmap-client", "log"));
    wait_until(
        Duration::from_secs(10),
        "the kernel blocking the client",
        || block_rows(&c).iter().any(|r| r.0 == cli && r.1 == "kernel"),
    );
    lab.terminate(scan2, Duration::from_secs(5));
    let down = block_rows(&c);
    lab.terminate(flood, Duration::from_secs(5));

    // Restart on the same pins, state file and events file: re-adopted.
    let c2 = lab.start_controller_with(&c.opts);
    let log2 = read_lossy(&c2.log);
    assert!(
        log2.contains("re-adopted"),
        "[{tag}] no re-adoption:\n{log2}"
    );
    assert_eq!(lab.xdp_prog_ids(&lab.tgt).len(), 1, "[{tag}]");
    // Two reconcile ticks.
    thread::sleep(Duration::from_millis(2500));
    let after = block_rows(&c2);
    let by_addr: BTreeMap<&str, usize> = after.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.0.as_str()).or_default() += 1;
        m
    });
    assert!(
        by_addr.values().all(|n| *n == 1),
        "[{tag}] duplicated rows after the restart: {after:?}"
    );
    for long in [LONG_V4, LONG_V6] {
        let was = before.iter().find(|r| r.0 == long).expect("listed before");
        assert!(
            after.contains(was),
            "[{tag}] {long} lost or changed by the restart: before {was:?}, after {after:?}"
        );
    }
    let client_row = down.iter().find(|r| r.0 == cli).expect("client blocked");
    let still_blocked = after.iter().any(|r| r.0 == cli);
    let client_ended = count_events(&c2, "expired", &cli) == 1;
    assert!(
        still_blocked || client_ended,
        "[{tag}] the block the kernel made while no controller ran ({client_row:?}) is lost: {after:?}"
    );
    assert!(
        !after.iter().any(|r| r.0 == att),
        "[{tag}] the ended block is back: {after:?}"
    );

    // Every start and end reported exactly once across both controllers.
    lab.wait_event(&c2, limit, "expired for the attacker", |e| {
        is_event(e, "expired", &att)
    });
    lab.wait_event(&c2, Duration::from_secs(8), "expired for the client", |e| {
        is_event(e, "expired", &cli)
    });
    thread::sleep(Duration::from_millis(1200));
    let mut report = Vec::new();
    for (src, blocked_n, expired_n) in [
        (LONG_V4, 1, 0),
        (LONG_V6, 1, 0),
        (att.as_str(), 1, 1),
        (cli.as_str(), 1, 1),
    ] {
        let b = count_events(&c2, "blocked", src);
        let x = count_events(&c2, "expired", src);
        if (b, x) != (blocked_n, expired_n) {
            report.push(format!(
                "{src}: {b} blocked / {x} expired events, want {blocked_n} / {expired_n}"
            ));
        }
    }
    let timeline: Vec<String> = c2
        .events()
        .iter()
        .filter(|e| matches!(event_name(e), "blocked" | "expired" | "unblocked"))
        .map(|e| format!("{} {} {}", e["ts"], event_name(e), e["src"]))
        .collect();
    assert!(
        report.is_empty(),
        "[{tag}] events across the kill and restart:\n{}\n--- timeline ---\n{}\n--- log after restart ---\n{}",
        report.join("\n"),
        timeline.join("\n"),
        read_lossy(&c2.log)
    );
    assert!(
        served(&lab, &lab.att.ns, PORT),
        "[{tag}] attacker not served after its block ended"
    );
    assert!(
        served(&lab, &cli_ns, PORT),
        "[{tag}] client not served after its block ended"
    );
    assert_eq!(
        block_rows(&c2),
        before
            .iter()
            .filter(|r| r.0 != att)
            .cloned()
            .collect::<Vec<_>>(),
        "[{tag}] the long blocks should be all that is left"
    );
    assert!(
        lab.stop_controller(&c2).success(),
        "[{tag}] controller exit"
    );
    eprintln!(
        "[{tag}] attacker's block ended in the kernel after {ended_after:.1} s with no controller; passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
