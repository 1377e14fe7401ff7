//! The protected interface disappears and comes back (the lab's veth pair deleted
//! and created again with the same names, MACs and addresses) under a running
//! controller, in native XDP mode:
//! - the controller notices (log: the interface is gone; metric
//!   scan_guard_xdp_attached 0), keeps running, and when
//!   the interface returns attaches to it again (log: "re-attached"), with exactly
//!   one XDP program on it;
//! - detection and blocking work again on the new interface: a fast SYN scan is
//!   blocked and reported, the attacker is cut off;
//! - `status` reports the instance attached and supervised; a clean stop detaches.

use std::time::{Duration, Instant};

use scan_guard_tests::{
    hardening::{create_veth, delete_veth, served, wait_log, wait_until},
    is_root,
    lab::{ControllerOptions, Lab, XdpMode, is_event, read_lossy},
    scrape::wait_sample,
};

const PORT: u16 = 8080;
const METRICS_PORT: u16 = 9184;

#[test]
fn interface_gone_and_back_is_reattached_and_protected_again() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("iface-flap");
    let tag = lab.tag.clone();
    lab.start_http_server(PORT);
    let mut opts = ControllerOptions::new(XdpMode::Native);
    opts.extra_args = vec!["--metrics".into(), METRICS_PORT.to_string()];
    let c = lab.start_controller_with(&opts);
    assert_eq!(lab.xdp_prog_ids(&lab.tgt).len(), 1, "[{tag}]");
    let attached = |want: f64| {
        let ns = &lab.tgt.ns;
        let series = &format!("scan_guard_xdp_attached{{iface=\"{}\"}}", lab.tgt.iface);
        wait_sample(
            &lab,
            ns,
            METRICS_PORT,
            series,
            Duration::from_secs(5),
            |v| v == want,
        );
    };
    attached(1.0);
    assert!(
        served(&lab, &lab.att.ns, PORT),
        "[{tag}] attacker not served at start"
    );

    delete_veth(&lab);
    wait_log(&c, Duration::from_secs(5), "is gone");
    lab.assert_running(&c, "after the interface disappeared");
    attached(0.0);

    create_veth(&lab);
    let back_at = Instant::now();
    let log = wait_log(&c, Duration::from_secs(5), "re-attached");
    let reattach_s = back_at.elapsed().as_secs_f64();
    lab.assert_running(&c, "after the interface came back");
    attached(1.0);
    assert!(
        !log.contains("ERROR"),
        "[{tag}] errors while following the interface:\n{log}"
    );
    let progs = lab.xdp_prog_ids(&lab.tgt);
    assert_eq!(
        progs.len(),
        1,
        "[{tag}] XDP programs on the new interface: {progs:?}\n{}",
        lab.link_show(&lab.tgt)
    );
    assert!(
        lab.link_show(&lab.tgt)
            .contains(XdpMode::Native.ip_link_word()),
        "[{tag}] not in native mode after re-attaching:\n{}",
        lab.link_show(&lab.tgt)
    );
    // The new link answers (neighbours re-learnt) before we judge blocking.
    wait_until(Duration::from_secs(10), "the attacker served again", || {
        served(&lab, &lab.att.ns, PORT)
    });

    let att = lab.att.v4.to_string();
    let packets_before = c.stats_json()["packets"].as_u64().unwrap_or(0);
    let scan = lab.fast_syn_scan();
    let ev = lab.wait_event_during(&c, &scan, Duration::from_secs(5), "blocked", |e| {
        is_event(e, "blocked", &att)
    });
    lab.finish(&scan);
    assert!(
        !served(&lab, &lab.att.ns, PORT),
        "[{tag}] the attacker is still served after {ev}"
    );
    let stats = c.stats_json();
    assert!(
        stats["packets"].as_u64().unwrap_or(0) > packets_before
            && stats["dropped_blocked"].as_u64().unwrap_or(0) > 0,
        "[{tag}] the program on the new interface does not count/drop: {stats}"
    );
    let st = c.cli_json(&["status"]);
    assert_eq!(st["attached"], true, "[{tag}] {st}");
    assert_eq!(st["controller_running"], true, "[{tag}] {st}");

    assert!(
        lab.stop_controller(&c).success(),
        "[{tag}] controller exit\n{}",
        read_lossy(&c.log)
    );
    assert!(
        lab.xdp_prog_ids(&lab.tgt).is_empty(),
        "[{tag}] still attached after SIGTERM:\n{}",
        lab.link_show(&lab.tgt)
    );
    eprintln!(
        "[{tag}] re-attached {reattach_s:.1} s after the interface returned; passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
