//! One controller, several interfaces (issue 13, part 1). The target has two or
//! three NICs (veth pairs to the attacker, each its own subnet); the attacker
//! sends through all of them from one address.
//! - Explicit names: one program and one set of maps on every interface. A scan
//!   spread over three interfaces, below the threshold on each one alone, is one
//!   detection and one block, and the block holds on every interface. `status`
//!   and the metrics show each interface attached in native mode.
//! - A glob: an interface that appears later is attached; one that goes away is
//!   reported and attached again when it returns; after SIGKILL a restart
//!   re-adopts every attachment (one program per interface, no gap).
//! - The config's `ifaces` without `--iface`: SIGHUP attaches what the new list
//!   adds and detaches what it drops.

use std::time::{Duration, Instant};

use scan_guard_tests::{
    hardening::{wait_log, wait_until},
    is_root,
    lab::{Controller, ControllerOptions, Lab, Side, XdpMode, is_event, read_lossy},
    links::{self, add_link, served_from_attacker, syn_scan_through},
    scrape::wait_sample,
};
use serde_json::Value;

const PORT: u16 = 8080;
const METRICS_PORT: u16 = 9186;

fn require_root() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
}

/// The lab plus links 2..=`n`, reverse-path filtering off on every end.
fn lab_with_links(tag: &str, n: u8) -> (Lab, Vec<(Side, Side)>) {
    let lab = Lab::new(tag);
    links::no_rp_filter(&lab, &lab.att);
    links::no_rp_filter(&lab, &lab.tgt);
    let extra = (2..=n).map(|i| add_link(&lab, i)).collect();
    (lab, extra)
}

/// `status --json`'s interfaces, by name: (attached, mode).
fn interfaces(c: &Controller) -> Vec<(String, bool, String)> {
    let st = c.cli_json(&["status"]);
    st["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("status without interfaces: {st}"))
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["attached"].as_bool().unwrap_or(false),
                i["mode"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn attached_to(c: &Controller, iface: &str) -> bool {
    interfaces(c)
        .iter()
        .any(|(name, attached, _)| name == iface && *attached)
}

fn one_program(lab: &Lab, side: &Side) {
    let ids = lab.xdp_prog_ids(side);
    assert_eq!(
        ids.len(),
        1,
        "[{}] XDP programs on {}: {ids:?}\n{}",
        lab.tag,
        side.iface,
        lab.link_show(side)
    );
}

fn blocked_events(c: &Controller, src: &str) -> Vec<Value> {
    c.events_where(|e| is_event(e, "blocked", src))
}

#[test]
fn one_detection_blocks_the_scanner_on_every_interface() {
    require_root();
    let t0 = Instant::now();
    let (lab, extra) = lab_with_links("multi-if", 3);
    let tag = lab.tag.clone();
    lab.start_http_server(PORT);
    // The kernel's score alone decides here (the slow-scan test would call four
    // failed first contacts a scan by itself).
    let cfg = lab.write_file("config", "toml", "[slow_scan]\nenabled = false\n");
    let mut opts = ControllerOptions::new(XdpMode::Native).config(&cfg);
    for (_, t) in &extra {
        opts.extra_args
            .extend(["--iface".to_owned(), t.iface.clone()]);
    }
    opts.extra_args
        .extend(["--metrics".to_owned(), METRICS_PORT.to_string()]);
    let c = lab.start_controller_with(&opts);
    let targets: Vec<&Side> = std::iter::once(&lab.tgt)
        .chain(extra.iter().map(|(_, t)| t))
        .collect();
    // One program on every interface, each in native mode, in status and metrics.
    let ids: Vec<Vec<u32>> = targets.iter().map(|t| lab.xdp_prog_ids(t)).collect();
    for (t, id) in targets.iter().zip(&ids) {
        assert_eq!(id.len(), 1, "[{tag}] programs on {}: {id:?}", t.iface);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "[{tag}] not the same program on every interface: {ids:?}"
    );
    let ifs = interfaces(&c);
    for t in &targets {
        assert!(
            ifs.iter()
                .any(|(n, a, m)| n == &t.iface && *a && m == "native"),
            "[{tag}] {} not attached natively in status: {ifs:?}",
            t.iface
        );
        let series = format!("scan_guard_xdp_attached{{iface=\"{}\"}}", t.iface);
        wait_sample(
            &lab,
            &lab.tgt.ns,
            METRICS_PORT,
            &series,
            Duration::from_secs(5),
            |v| v == 1.0,
        );
    }
    // The attacker's one address reaches the target through every interface.
    for t in &targets {
        served_from_attacker(&lab, t.v4, PORT)
            .unwrap_or_else(|e| panic!("[{tag}] before the scan, through {}: {e}", t.iface));
    }

    // Four closed privileged ports per interface: 16 points each, under the
    // threshold (21) alone; the second interface's probes cross it.
    let src = lab.att.v4.to_string();
    let vias: Vec<&Side> = std::iter::once(&lab.att)
        .chain(extra.iter().map(|(a, _)| a))
        .collect();
    let port_sets = ["1-4", "5-8", "9-12"];
    syn_scan_through(&lab, vias[0], targets[0].v4, port_sets[0]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c.listed(&src).is_none() && blocked_events(&c, &src).is_empty(),
        "[{tag}] blocked after the first interface's probes alone: {:?}\n{}",
        c.events(),
        read_lossy(&c.log)
    );
    syn_scan_through(&lab, vias[1], targets[1].v4, port_sets[1]);
    let ev = c.wait_event(Duration::from_secs(5), "blocked", |e| {
        is_event(e, "blocked", &src)
    });
    let dropped_before = c.stats_json()["dropped_blocked"].as_u64().unwrap_or(0);
    syn_scan_through(&lab, vias[2], targets[2].v4, port_sets[2]);
    let dropped_after = c.stats_json()["dropped_blocked"].as_u64().unwrap_or(0);
    assert!(
        dropped_after >= dropped_before + 4,
        "[{tag}] the third interface's probes were not dropped as blocked: {dropped_before} -> {dropped_after}"
    );
    // Blocked on every interface: no answer through any of them.
    for t in &targets {
        assert!(
            served_from_attacker(&lab, t.v4, PORT).is_err(),
            "[{tag}] the blocked scanner is still served through {}",
            t.iface
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let blocked = blocked_events(&c, &src);
    assert_eq!(
        blocked.len(),
        1,
        "[{tag}] one detection, one block expected: {blocked:?}"
    );
    lab.stop_controller_ok(&c);
    for t in &targets {
        assert!(
            lab.xdp_prog_ids(t).is_empty(),
            "[{tag}] still attached to {} after SIGTERM",
            t.iface
        );
    }
    eprintln!(
        "[{tag}] one block ({ev}) on {} interfaces; passed in {:.1} s",
        targets.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn globbed_interfaces_are_followed_as_they_come_and_go_and_readopted_after_sigkill() {
    require_root();
    let t0 = Instant::now();
    let (lab, extra) = lab_with_links("multi-glob", 2);
    let tag = lab.tag.clone();
    let glob = format!("{}*", lab.tgt.iface);
    let opts = ControllerOptions::new(XdpMode::Native)
        .arg("--iface")
        .arg(&glob);
    let c = lab.start_controller_with(&opts);
    let t2 = &extra[0].1;
    wait_until(Duration::from_secs(5), "both interfaces attached", || {
        attached_to(&c, &lab.tgt.iface) && attached_to(&c, &t2.iface)
    });

    // A third NIC appears: it matches the glob and is attached.
    let (a3, t3) = add_link(&lab, 3);
    wait_log(&c, Duration::from_secs(5), &format!("iface={}", t3.iface));
    wait_until(Duration::from_secs(5), "the new interface attached", || {
        attached_to(&c, &t3.iface)
    });
    one_program(&lab, &t3);

    // It goes away: reported, the others stay protected; it comes back: attached again.
    links::remove_link(&t3);
    wait_log(&c, Duration::from_secs(5), "is gone");
    wait_until(Duration::from_secs(5), "status shows it detached", || {
        !attached_to(&c, &t3.iface)
    });
    lab.assert_running(&c, "after an interface went away");
    one_program(&lab, &lab.tgt);
    one_program(&lab, t2);
    let (a3, t3) = {
        drop((a3, t3));
        add_link(&lab, 3)
    };
    wait_log(&c, Duration::from_secs(5), "re-attached");
    wait_until(
        Duration::from_secs(5),
        "the returned interface attached",
        || attached_to(&c, &t3.iface),
    );
    one_program(&lab, &t3);

    // SIGKILL: the program stays on every interface; the restart re-adopts each
    // link (the same program ids until the new program replaces them, one each).
    lab.kill_controller(&c);
    let targets = [&lab.tgt, t2, &t3];
    for t in targets {
        one_program(&lab, t);
    }
    let c2 = lab.start_controller_with(&c.opts);
    wait_until(Duration::from_secs(5), "all three re-adopted", || {
        targets.iter().all(|t| attached_to(&c2, &t.iface))
    });
    let log = read_lossy(&c2.log);
    assert_eq!(
        log.matches("re-adopted the instance left attached").count(),
        3,
        "[{tag}] every link re-adopted:\n{log}"
    );
    for t in targets {
        one_program(&lab, t);
    }
    // Still one set of maps: a scan through the third interface is blocked there
    // and on the first.
    syn_scan_through(&lab, &a3, t3.v4, "1-8");
    let src = lab.att.v4.to_string();
    c2.wait_event(Duration::from_secs(5), "blocked", |e| {
        is_event(e, "blocked", &src)
    });
    let before = c2.stats_json()["dropped_blocked"].as_u64().unwrap_or(0);
    syn_scan_through(&lab, &lab.att, lab.tgt.v4, "20-23");
    let after = c2.stats_json()["dropped_blocked"].as_u64().unwrap_or(0);
    assert!(
        after >= before + 4,
        "[{tag}] not dropped on the first interface: {before} -> {after}"
    );
    lab.stop_controller_ok(&c2);
    for t in targets {
        assert!(
            lab.xdp_prog_ids(t).is_empty(),
            "[{tag}] left on {}",
            t.iface
        );
    }
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn sighup_applies_a_changed_interface_list() {
    require_root();
    let t0 = Instant::now();
    let (lab, extra) = lab_with_links("multi-hup", 2);
    let tag = lab.tag.clone();
    let t2 = &extra[0].1;
    let text = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        format!("ifaces = [{}]\n", quoted.join(", "))
    };
    let cfg = lab.write_file("config", "toml", &text(&[&lab.tgt.iface]));
    let c = lab.start_controller_with(
        &ControllerOptions::new(XdpMode::Native)
            .config(&cfg)
            .ifaces_from_config(),
    );
    wait_until(
        Duration::from_secs(5),
        "the first interface attached",
        || attached_to(&c, &lab.tgt.iface),
    );
    assert!(
        lab.xdp_prog_ids(t2).is_empty(),
        "[{tag}] {} not listed yet",
        t2.iface
    );

    // Added by SIGHUP.
    lab.reload_controller(&c, &cfg, &text(&[&lab.tgt.iface, &t2.iface]));
    wait_until(
        Duration::from_secs(5),
        "the added interface attached",
        || attached_to(&c, &t2.iface),
    );
    one_program(&lab, t2);
    one_program(&lab, &lab.tgt);

    // A bad list changes nothing.
    lab.reload_controller(&c, &cfg, "ifaces = [\"no/slash\"]\n");
    wait_log(
        &c,
        Duration::from_secs(5),
        "keeping the running configuration",
    );
    one_program(&lab, t2);
    one_program(&lab, &lab.tgt);

    // Dropped by SIGHUP: detached there, the other stays.
    lab.reload_controller(&c, &cfg, &text(&[&t2.iface]));
    wait_until(
        Duration::from_secs(5),
        "the dropped interface detached",
        || lab.xdp_prog_ids(&lab.tgt).is_empty(),
    );
    one_program(&lab, t2);
    let names: Vec<String> = interfaces(&c).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        std::slice::from_ref(&t2.iface),
        "[{tag}] status after the reload"
    );
    lab.assert_running(&c, "after the reloads");
    lab.stop_controller_ok(&c);
    assert!(lab.xdp_prog_ids(t2).is_empty(), "[{tag}] left attached");
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}
