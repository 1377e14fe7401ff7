//! Least privilege, against the real controller in the lab:
//! - every control command run by an unprivileged user (uid/gid 65534 through
//!   `setpriv`) fails with exit 1 and one sentence saying it needs root, and
//!   changes nothing; `run` as that user fails the same way;
//! - the running controller holds no capabilities after attaching (CapEff, CapPrm,
//!   CapInh and CapAmb all 0 in /proc/PID/status, NoNewPrivs set) and still does
//!   its job: a scan is blocked and reported, a manual block is picked up;
//! - its pin directory is mode 0700 and every pinned object 0600, owned by root;
//!   its state file is 0600;
//! - nothing of scan-guard listens on a socket (`ss -lnp -A all` in the target
//!   namespace).

use std::time::{Duration, Instant};

use scan_guard_tests::{
    hardening::{count_events, listening_sockets, mode_owner, proc_caps, stderr_lines, wait_until},
    is_root,
    lab::{Lab, XdpMode, controller_bin, describe, is_event, run_bounded},
};

const NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

#[test]
fn control_commands_as_a_non_root_user_fail_in_one_sentence() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("non-root");
    let c = lab.start_controller(XdpMode::Native);
    let tag = lab.tag.clone();
    let bin = controller_bin();
    let bin = bin.to_str().expect("UTF-8");
    let pin = c.pin_dir.to_str().expect("UTF-8").to_owned();
    let victim = "10.200.1.77";

    let commands: [&[&str]; 8] = [
        &["status"],
        &["status", "--json"],
        &["stats"],
        &["list", "--json"],
        &["block", victim, "--ttl", "1h"],
        &["unblock", victim],
        &["allow", victim],
        &["disallow", victim],
    ];
    let mut failures = Vec::new();
    for args in commands {
        let mut full: Vec<&str> = NOBODY.to_vec();
        full.push(bin);
        full.extend_from_slice(args);
        full.extend(["--pin-dir", &pin]);
        let out = run_bounded(Duration::from_secs(20), full[0], &full[1..]);
        let lines = stderr_lines(&out);
        let ok = out.status.code() == Some(1)
            && lines.len() == 1
            && lines[0].starts_with("scan-guard: ")
            && lines[0].contains("root");
        if !ok {
            failures.push(format!(
                "`scan-guard {}` as uid 65534: want exit 1 and one line saying it needs root; got {}",
                args.join(" "),
                describe(&out)
            ));
        }
    }
    // `run` as that user, inside the target namespace where the interface exists.
    let other_pin = lab.bpffs.join("nobody");
    let mut run: Vec<&str> = NOBODY.to_vec();
    run.extend([
        bin,
        "run",
        "--iface",
        &lab.tgt.iface,
        "--pin-dir",
        other_pin.to_str().expect("UTF-8"),
        "--events",
        "-",
    ]);
    let out = lab.exec_in(&lab.tgt.ns, &run);
    let lines = stderr_lines(&out);
    if !(out.status.code() == Some(1) && lines.len() == 1 && lines[0].contains("root")) {
        failures.push(format!(
            "`scan-guard run` as uid 65534: want exit 1 and one line saying it needs root; got {}",
            describe(&out)
        ));
    }

    // Nothing changed.
    assert!(c.list().is_empty(), "[{tag}] list: {:?}", c.list());
    assert_eq!(c.stats_json()["allowlist_entries"], 0, "[{tag}]");
    assert!(
        !other_pin.exists(),
        "[{tag}] run as nobody created {}",
        other_pin.display()
    );
    lab.assert_running(&c, "after the unprivileged commands");
    assert!(lab.stop_controller(&c).success(), "[{tag}] controller exit");
    assert!(
        failures.is_empty(),
        "[{tag}] {} of {} unprivileged commands misbehaved:\n{}",
        failures.len(),
        commands.len() + 1,
        failures.join("\n")
    );
    eprintln!("[{tag}] passed in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn controller_runs_without_capabilities_with_root_only_pins_and_no_sockets() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("least-priv");
    let c = lab.start_controller(XdpMode::Native);
    let tag = lab.tag.clone();
    let pid = lab
        .controller_pid(&c)
        .unwrap_or_else(|| panic!("[{tag}] no controller pid"));

    // Capabilities: all gone once attached (the runtime file is written right
    // before they are dropped, so wait for the log line).
    wait_until(Duration::from_secs(5), "the capability drop", || {
        scan_guard_tests::lab::read_lossy(&c.log).contains("dropped all capabilities")
    });
    let caps = proc_caps(pid);
    assert_eq!(
        (caps.eff, caps.prm, caps.inh, caps.amb),
        (0, 0, 0, 0),
        "[{tag}] capabilities of the running controller (pid {pid}): {caps:?}"
    );
    assert!(caps.no_new_privs, "[{tag}] NoNewPrivs not set: {caps:?}");
    // Its one child, the NAT-rule watcher, keeps CAP_NET_ADMIN and CAP_NET_RAW
    // only (bounding set too) and dies with it.
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let kids: Vec<u32> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(
        kids.len(),
        1,
        "[{tag}] children of the controller: {kids:?}"
    );
    // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
    let net = (1u64 << 12) | (1u64 << 13);
    let w = proc_caps(kids[0]);
    assert_eq!(
        (w.eff, w.prm, w.bnd, w.amb),
        (net, net, net, 0),
        "[{tag}] capabilities of the NAT-rule watcher (pid {}): {w:?}",
        kids[0]
    );
    assert!(w.no_new_privs, "[{tag}] watcher without NoNewPrivs: {w:?}");

    // Pins: directory 0700, every object 0600, all root's; every map and the link.
    let (dmode, downer) = mode_owner(&c.pin_dir);
    assert_eq!(
        (dmode, downer),
        (0o700, 0),
        "[{tag}] pin dir {} mode {dmode:o} owner {downer}",
        c.pin_dir.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(&c.pin_dir)
        .expect("read pin dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let link = scan_guard::kernel::loader::link_pin(&c.pin_dir, &lab.tgt.iface);
    let link = link
        .file_name()
        .and_then(|n| n.to_str())
        .expect("link pin name");
    for want in scan_guard_common::map_names::ALL
        .iter()
        .copied()
        .chain([link])
    {
        assert!(
            names.iter().any(|n| n == want),
            "[{tag}] {want} not pinned: {names:?}"
        );
    }
    for n in &names {
        let (m, owner) = mode_owner(&c.pin_dir.join(n));
        assert_eq!(
            (m, owner),
            (0o600, 0),
            "[{tag}] pinned {n}: mode {m:o} owner {owner}"
        );
    }

    // Still does its job without capabilities: a scan is blocked and adopted, a
    // manual block is picked up, and the state file is written (0600).
    let att = lab.att.v4.to_string();
    let scan = lab.fast_syn_scan();
    lab.wait_event_during(&c, &scan, Duration::from_secs(5), "blocked", |e| {
        is_event(e, "blocked", &att)
    });
    lab.finish(&scan);
    c.cli_ok(&["block", "10.200.1.66", "--ttl", "10m"]);
    lab.wait_event(&c, Duration::from_secs(5), "manual blocked", |e| {
        is_event(e, "blocked", "10.200.1.66")
    });
    wait_until(Duration::from_secs(5), "the state file", || {
        c.state_file.exists()
    });
    let (smode, sowner) = mode_owner(&c.state_file);
    assert_eq!(
        (smode, sowner),
        (0o600, 0),
        "[{tag}] state file mode {smode:o}"
    );
    assert_eq!(count_events(&c, "blocked", &att), 1, "[{tag}]");

    // No listening socket of any kind belongs to it.
    let ss = listening_sockets(&lab, &lab.tgt.ns);
    let pid_tag = format!("pid={pid},");
    let ours: Vec<&str> = ss
        .lines()
        .filter(|l| l.contains("scan-guard") || l.contains(&pid_tag))
        .collect();
    assert!(
        ours.is_empty(),
        "[{tag}] scan-guard listens:\n{}\n--- all listening sockets ---\n{ss}",
        ours.join("\n")
    );
    let socket_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0);
    lab.assert_running(&c, "at the end");
    assert!(lab.stop_controller(&c).success(), "[{tag}] controller exit");
    wait_until(
        Duration::from_secs(5),
        "the NAT-rule watcher's exit",
        || !std::path::Path::new(&format!("/proc/{}", kids[0])).exists(),
    );
    eprintln!(
        "[{tag}] caps {caps:?}; {} pins 0600 in a 0700 dir; {socket_fds} socket fds, none listening; passed in {:.1} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
}
