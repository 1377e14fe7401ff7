//! The README's install section, run as written on a freshly bootstrapped Debian
//! booted with systemd (see `scan_guard_tests::machine`), then the service's life:
//! a real scan blocked, reload, restart, a crash, an upgrade, removal and purge.
//! The package is the one `cargo xtask package` built (`cargo xtask test` builds
//! it before the tests); the scanner is nmap in the lab's attacker namespace.

use std::{path::PathBuf, time::Duration};

use scan_guard_tests::{
    is_root,
    lab::Lab,
    links,
    machine::{self, Binds, Machine},
};
use serde_json::Value;

/// Where the repository's `target/package` appears inside the machine, so the
/// README's relative paths work from the checkout's root.
const CHECKOUT: &str = "/root/scan-guard";
const UNIT: &str = "scan-guard.service";
/// Ceiling for `systemd-analyze security`'s exposure score of the unit.
const MAX_EXPOSURE: f64 = 3.0;

/// The commands of the README's "Install as a service" block, minus the build
/// (`cargo xtask package`, already done on the host), comments stripped.
fn readme_install_commands() -> Vec<String> {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("reading README.md");
    let section = text
        .split_once("## Install as a service")
        .map(|(_, rest)| rest)
        .expect("README.md has an 'Install as a service' section");
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the install section has a ```sh block");
    block
        .lines()
        .map(|l| {
            l.split_once("  #")
                .map_or(l, |(cmd, _)| cmd)
                .trim()
                .to_owned()
        })
        .filter(|l| !l.is_empty() && !l.starts_with("cargo xtask package"))
        .collect()
}

fn package_dir() -> PathBuf {
    let dir = machine::target_dir().join("package");
    let debs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask package` first", dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "{} must hold exactly one .deb (the README's glob names one): run `cargo xtask package`",
        dir.display()
    );
    dir
}

fn main_pid(m: &Machine) -> u32 {
    m.unit_prop(UNIT, "MainPID")
        .parse()
        .expect("MainPID is a number")
}

/// The blocked sources as `scan-guard list --json` prints them inside.
fn listed(m: &Machine) -> Vec<Value> {
    let out = m.sh("scan-guard list --json");
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn is_listed(m: &Machine, addr: &str) -> bool {
    listed(m).iter().any(|e| e["addr"] == addr)
}

/// Waits (bounded) until `addr` is blocked again: a new controller restores the
/// state file once it has attached.
fn wait_listed(m: &Machine, addr: &str, what: &str) {
    m.wait_until(Duration::from_secs(15), what, || {
        is_listed(m, addr).then_some(())
    });
}

/// Waits (bounded) until the unit is active with a main process other than `not`.
fn wait_active(m: &Machine, not: Option<u32>, what: &str) -> u32 {
    m.wait_until(Duration::from_secs(30), what, || {
        let active = m.unit_prop(UNIT, "ActiveState") == "active";
        let pid = main_pid(m);
        (active && pid != 0 && Some(pid) != not).then_some(pid)
    })
}

#[test]
fn readme_install_then_service_lifecycle() {
    assert!(is_root(), "run as root: `cargo xtask test`");
    machine::require_tools();
    let commands = readme_install_commands();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("apt install ./target/package/"))
            && commands
                .iter()
                .any(|c| c == "systemctl enable --now scan-guard"),
        "the README's install block lost its apt install or systemctl line: {commands:?}"
    );
    let root = machine::debian_root();
    let pkg = package_dir();

    let mut lab = Lab::new("install");
    // The README's example interface is eth0, as on many servers.
    machine::rename_target_iface(&mut lab, "eth0");
    // A second NIC, eth1, for the unit with two interfaces further down.
    let (_, mut eth1) = links::add_link(&lab, 2);
    links::rename(&mut eth1, "eth1");
    let pkg_inside = format!("{CHECKOUT}/target/package");
    let m = Machine::boot(
        &lab,
        &root,
        &Binds {
            read_only: vec![(pkg.as_path(), pkg_inside.as_str())],
        },
    );
    let attacker = lab.att.v4.to_string();

    // A fresh install starts nothing.
    m.sh_ok(&format!("cd {CHECKOUT} && {}", commands[0]));
    assert_eq!(
        m.unit_prop(UNIT, "ActiveState"),
        "inactive",
        "installing started the service"
    );
    assert!(
        lab.xdp_prog_ids(&lab.tgt).is_empty(),
        "installing attached XDP"
    );
    for c in &commands[1..] {
        m.sh_ok(&format!("cd {CHECKOUT} && {c}"));
    }
    assert_eq!(m.sh_ok("systemctl is-enabled scan-guard").trim(), "enabled");
    let pid = wait_active(
        &m,
        None,
        "the service running after `systemctl enable --now`",
    );
    m.wait_until(Duration::from_secs(20), "XDP attached to eth0", || {
        (!lab.xdp_prog_ids(&lab.tgt).is_empty()).then_some(())
    });
    // Once attached the controller gives up every capability, under systemd too.
    m.wait_until(Duration::from_secs(10), "capabilities dropped", || {
        let status = m.sh_ok(&format!("cat /proc/{pid}/status"));
        status
            .lines()
            .any(|l| l.starts_with("CapEff:") && l.trim_end().ends_with("0000000000000000"))
            .then_some(())
    });
    // The unit's sandboxing as systemd itself rates it (0 = locked down, 10 = none).
    let security = m.sh_ok("systemd-analyze security --no-pager scan-guard.service 2>&1");
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for scan-guard.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    eprintln!("systemd-analyze security: exposure {exposure}\n{security}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{security}"
    );
    let journal = m.sh_ok("journalctl -u scan-guard --no-pager -o cat");
    assert!(
        journal.contains("attached iface=eth0"),
        "journal:\n{journal}"
    );
    // Plain text for the journal: no colour escapes, no second timestamp.
    assert!(
        !journal.contains('\x1b'),
        "colour escapes in the journal:\n{journal}"
    );
    assert!(
        journal.lines().all(|l| !l.starts_with("20")),
        "the journal's lines carry a timestamp of their own:\n{journal}"
    );

    // A real scan from the attacker namespace is detected and blocked.
    let scan = lab.fast_syn_scan();
    m.wait_until(
        Duration::from_secs(40),
        "the scanner in `scan-guard list`",
        || is_listed(&m, &attacker).then_some(()),
    );
    lab.finish(&scan);
    let events = m.sh_ok("cat /var/log/scan-guard/events.jsonl");
    assert!(
        events.lines().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|e| e["event"] == "blocked" && e["src"] == attacker.as_str())
        }),
        "no blocked event for {attacker} in /var/log/scan-guard/events.jsonl:\n{events}"
    );
    let status: Value =
        serde_json::from_str(&m.sh_ok("scan-guard status --json")).expect("status --json is JSON");
    assert_eq!(status["attached"], true, "status: {status}");

    // logrotate (the packaged /etc/logrotate.d/scan-guard): the old events move to
    // events.jsonl.1, the controller writes the next ones to a new events.jsonl.
    m.sh_ok("logrotate -f /etc/logrotate.d/scan-guard");
    m.sh_ok("test -s /var/log/scan-guard/events.jsonl.1");
    let rotated = "10.200.1.98";
    m.sh_ok(&format!(
        "scan-guard block {rotated} --reason after-rotation"
    ));
    m.wait_until(
        Duration::from_secs(10),
        "the next event in the new events file",
        || {
            m.sh_ok("cat /var/log/scan-guard/events.jsonl 2>/dev/null || true")
                .contains(&format!("\"src\":\"{rotated}\""))
                .then_some(())
        },
    );
    let old = m.sh_ok("cat /var/log/scan-guard/events.jsonl.1");
    assert!(
        !old.contains(rotated) && old.contains(&attacker),
        "rotation mixed up the files; events.jsonl.1:\n{old}"
    );
    assert_eq!(main_pid(&m), pid, "logrotate restarted the service");

    // systemctl reload: SIGHUP, same process, configuration re-read.
    m.sh_ok("systemctl reload scan-guard");
    m.wait_until(Duration::from_secs(10), "the reload in the journal", || {
        m.sh_ok("journalctl -u scan-guard --no-pager -o cat")
            .contains("configuration reloaded")
            .then_some(())
    });
    assert_eq!(main_pid(&m), pid, "reload restarted the process");

    // Events to the journal (native fields) as well as the file, and both NICs
    // (/etc/default/scan-guard), then
    // systemctl restart: a new process, the block carried over.
    m.sh_ok(
        "sed -i 's/^SCAN_GUARD_ARGS=.*/SCAN_GUARD_ARGS=\"--events journal\"/' /etc/default/scan-guard \
         && sed -i 's/^SCAN_GUARD_IFACE=.*/SCAN_GUARD_IFACE=eth0,eth1/' /etc/default/scan-guard \
         && systemctl restart scan-guard",
    );
    let pid = wait_active(&m, Some(pid), "a new process after restart");
    wait_listed(&m, &attacker, "the block back after restart");
    m.wait_until(
        Duration::from_secs(20),
        "XDP attached to eth0 and eth1",
        || {
            (lab.xdp_prog_ids(&lab.tgt).len() == 1 && lab.xdp_prog_ids(&eth1).len() == 1)
                .then_some(())
        },
    );
    let status: Value =
        serde_json::from_str(&m.sh_ok("scan-guard status --json")).expect("status --json is JSON");
    let attached: Vec<&str> = status["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["attached"] == true)
                .filter_map(|i| i["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(attached, ["eth0", "eth1"], "status: {status}");
    let manual = "10.200.1.99";
    m.sh_ok(&format!("scan-guard block {manual} --reason install-test"));
    let blocked_in = |text: &str| {
        text.lines().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|e| e["event"] == "blocked" && e["src"] == manual)
        })
    };
    m.wait_until(
        Duration::from_secs(10),
        "the manual block's event in the journal",
        || blocked_in(&m.sh_ok("journalctl -t scan-guard --no-pager -o cat")).then_some(()),
    );
    assert!(
        blocked_in(&m.sh_ok("cat /var/log/scan-guard/events.jsonl")),
        "the manual block's event is missing from the events file"
    );
    // Native journal fields: found by field match, no JSON parsing needed.
    let by_field = m.sh_ok(&format!(
        "journalctl --no-pager -o json SCAN_GUARD_SRC={manual} SCAN_GUARD_EVENT=blocked"
    ));
    let entry: Value = by_field
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no journal entry with SCAN_GUARD_SRC={manual}:\n{by_field}"));
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "scan-guard", "{entry}");
    assert_eq!(entry["PRIORITY"], "5", "{entry}");
    assert_eq!(entry["SCAN_GUARD_ORIGIN"], "manual", "{entry}");

    // A crash: systemd restarts it (Restart=on-failure); XDP never went away.
    m.sh_ok("systemctl kill --signal=SIGKILL scan-guard");
    let pid = wait_active(&m, Some(pid), "a new process after SIGKILL");
    assert!(
        !lab.xdp_prog_ids(&lab.tgt).is_empty() && !lab.xdp_prog_ids(&eth1).is_empty(),
        "XDP detached after a crash"
    );
    wait_listed(&m, &attacker, "the block back after a crash");

    // An upgrade (the same package, version bumped) restarts the running service.
    m.sh_ok(&format!(
        "set -e; rm -rf /tmp/up; dpkg-deb -R {pkg_inside}/scan-guard_*_amd64.deb /tmp/up; \
         sed -i 's/^Version: .*/&+up1/' /tmp/up/DEBIAN/control; \
         dpkg-deb -b /tmp/up /tmp/scan-guard-up.deb >/dev/null; \
         apt-get install -y -q /tmp/scan-guard-up.deb"
    ));
    assert!(
        m.sh_ok("dpkg-query -W -f '${Version}' scan-guard")
            .ends_with("+up1"),
        "the upgrade did not install"
    );
    let pid = wait_active(&m, Some(pid), "a new process after the upgrade");
    wait_listed(&m, &attacker, "the block back after the upgrade");
    assert_eq!(m.sh_ok("systemctl is-enabled scan-guard").trim(), "enabled");

    // A broken configuration file: the start fails with exit status 2 and systemd
    // does not retry (RestartPreventExitStatus=2); fixed, it starts again.
    m.sh_ok(
        "cp /etc/scan-guard/scan-guard.toml /root/good.toml \
         && echo 'not toml at all =' >> /etc/scan-guard/scan-guard.toml",
    );
    let _ = m.sh("systemctl restart scan-guard");
    m.wait_until(
        Duration::from_secs(15),
        "the unit failed on the bad file",
        || (m.unit_prop(UNIT, "ActiveState") == "failed").then_some(()),
    );
    let restarts = m.unit_prop(UNIT, "NRestarts");
    assert_eq!(m.unit_prop(UNIT, "ExecMainStatus"), "2");
    // Longer than RestartSec=2s: a retry would have happened by now.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        m.unit_prop(UNIT, "ActiveState"),
        "failed",
        "it was restarted"
    );
    assert_eq!(m.unit_prop(UNIT, "NRestarts"), restarts, "it was restarted");
    let journal = m.sh_ok("journalctl -u scan-guard --no-pager -o cat");
    assert!(
        journal.contains("scan-guard.toml"),
        "no word of the bad file:\n{journal}"
    );
    m.sh_ok("cp /root/good.toml /etc/scan-guard/scan-guard.toml && systemctl restart scan-guard");
    let pid = wait_active(&m, Some(pid), "the service back with the fixed file");
    wait_listed(&m, &attacker, "the block back after the fixed start");

    // apt remove: stopped, disabled, detached; state kept.
    m.sh_ok("apt-get remove -y -q scan-guard");
    m.wait_until(
        Duration::from_secs(20),
        "XDP detached after removal",
        || {
            (lab.xdp_prog_ids(&lab.tgt).is_empty() && lab.xdp_prog_ids(&eth1).is_empty())
                .then_some(())
        },
    );
    let gone = m.sh(&format!("kill -0 {pid}"));
    assert!(
        !gone.status.success(),
        "the controller still runs after apt remove"
    );
    let enabled = m.sh("systemctl is-enabled scan-guard");
    assert!(
        !enabled.status.success(),
        "still enabled after apt remove: {}",
        String::from_utf8_lossy(&enabled.stdout)
    );
    m.sh_ok("test -s /var/lib/scan-guard/state.json && test -f /etc/scan-guard/scan-guard.toml");

    // apt purge: configuration, state and logs gone.
    m.sh_ok("apt-get purge -y -q scan-guard");
    for path in [
        "/var/lib/scan-guard",
        "/var/log/scan-guard",
        "/etc/scan-guard",
        "/etc/default/scan-guard",
        "/etc/logrotate.d/scan-guard",
    ] {
        let left = m.sh(&format!("test -e {path}"));
        assert!(!left.status.success(), "{path} survived apt purge");
    }
}
