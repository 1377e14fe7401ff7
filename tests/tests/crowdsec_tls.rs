//! The Local API over HTTPS (Debian's crowdsec 1.4.6 with an `api.server.tls`
//! section, run by the test inside the lab's target namespace on its 127.0.0.1,
//! with a CA, server and client certificates the test makes with `openssl`):
//! - bouncer mode with an API key, the server verified against `ca_cert`: a
//!   decision is blocked in the kernel; then with a TLS client certificate (OU
//!   `bouncer-ou`) instead of a key: the Local API registers the bouncer by
//!   itself and its decisions are blocked too;
//! - a `ca_cert` of another CA: a clear TLS log line, nothing blocked; a client
//!   certificate of the agents' OU for the bouncer: refused, nothing blocked;
//! - unreadable or unusable certificate files: exit 2 before attaching;
//! - agent mode over HTTPS, with a machine password, then (SIGHUP) with a client
//!   certificate (OU `agent-ou`): real nmap scans become alerts in the Local API.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    crowdsec::{AGENT_OU, BOUNCER_OU, Lapi, Pki},
    is_root,
    lab::{Controller, ControllerOptions, Lab, XdpMode, describe, is_event, read_lossy},
};
use serde_json::Value;

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(10);
const SCENARIO: &str = "scan-guard/port-scan";

fn lab(tag: &str) -> Lab {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    scan_guard_tests::crowdsec::require_crowdsec();
    let lab = Lab::new(tag);
    lab.start_http_server(PORT);
    lab
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn config(lab: &Lab, body: &str) -> PathBuf {
    lab.write_file("config", "toml", &format!("[crowdsec]\n{body}"))
}

fn start(lab: &Lab, cfg: &Path) -> Controller {
    lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(cfg))
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

fn wait_cs(lab: &Lab, c: &Controller, name: &str, src: &str) -> Value {
    lab.wait_event(
        c,
        EVENT_LIMIT,
        &format!("{name} (crowdsec) for {src}"),
        |e| is_event(e, name, src) && e["origin"] == "crowdsec",
    )
}

fn served(lab: &Lab, c: &Controller, ip: IpAddr, who: &str) {
    if let Err(e) = lab.http_get(&lab.att.ns, ip, PORT) {
        panic!(
            "[{}] {who} is not served: {e}\n--- list ---\n{:?}\n--- controller log ---\n{}",
            lab.tag,
            c.list(),
            read_lossy(&c.log)
        );
    }
}

fn cut_off(lab: &Lab, c: &Controller, ip: IpAddr, who: &str) {
    assert!(
        lab.http_get(&lab.att.ns, ip, PORT).is_err(),
        "[{}] {who} is still served\n--- list ---\n{:?}",
        lab.tag,
        c.list()
    );
}

fn stop(lab: &Lab, c: &Controller) {
    assert!(
        lab.stop_controller(c).success(),
        "[{}] controller exit\n{}",
        lab.tag,
        read_lossy(&c.log)
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
fn bouncer_over_https_with_a_key_and_with_a_client_certificate() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-tls-bouncer");
    let pki = Pki::new(&lab, "lab");
    let lapi = Lapi::start_tls(&lab, &pki);
    assert!(lapi.url.starts_with("https://"), "{}", lapi.url);
    let tag = lab.tag.clone();
    let (att4, att6) = (lab.att.v4.to_string(), lab.att.v6.to_string());
    let (tgt4, tgt6) = (IpAddr::V4(lab.tgt.v4), IpAddr::V6(lab.tgt.v6));

    // An API key, the LAPI's certificate checked against our CA.
    let key = lapi.add_bouncer("scan-guard-tls");
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);
    let cfg = config(
        &lab,
        &format!(
            "lapi_url = \"{}\"\nca_cert = \"{}\"\nbouncer_api_key = \"{key}\"\npoll_interval = \"1s\"\n",
            lapi.url,
            p(&pki.ca)
        ),
    );
    let c = start(&lab, &cfg);
    wait_cs(&lab, &c, "blocked", &att4);
    let row = c
        .listed(&att4)
        .unwrap_or_else(|| panic!("[{tag}] {att4} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], "crowdsec", "[{tag}] {row}");
    cut_off(&lab, &c, tgt4, "the attacker (decision over https)");
    served(&lab, &c, tgt6, "the attacker over IPv6 (not decided)");
    stop(&lab, &c);

    // A client certificate instead of a key: no `cscli bouncers add` at all.
    let (cert, cert_key) = pki.client("scan-guard-web1", BOUNCER_OU);
    lapi.cscli_ok(&["decisions", "add", "--ip", &att6, "--duration", "1h"]);
    let cfg = config(
        &lab,
        &format!(
            "lapi_url = \"{}\"\nca_cert = \"{}\"\nbouncer_tls_cert = \"{}\"\nbouncer_tls_key = \"{}\"\npoll_interval = \"1s\"\n",
            lapi.url,
            p(&pki.ca),
            p(&cert),
            p(&cert_key)
        ),
    );
    let c = start(&lab, &cfg);
    wait_cs(&lab, &c, "blocked", &att4);
    wait_cs(&lab, &c, "blocked", &att6);
    cut_off(
        &lab,
        &c,
        tgt4,
        "the attacker over IPv4 (client certificate)",
    );
    cut_off(
        &lab,
        &c,
        tgt6,
        "the attacker over IPv6 (client certificate)",
    );
    let bouncers = lapi.cscli_list(&["bouncers", "list"]);
    assert!(
        bouncers.iter().any(|b| b["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("scan-guard-web1@"))),
        "[{tag}] the LAPI did not register the certificate's bouncer: {bouncers:?}"
    );
    // Deleting still lifts over the certificate-authenticated stream.
    lapi.cscli_ok(&["decisions", "delete", "--ip", &att6]);
    wait_cs(&lab, &c, "unblocked", &att6);
    served(&lab, &c, tgt6, "the attacker over IPv6 after the deletion");
    stop(&lab, &c);
    done(&lab, t0);
}

#[test]
fn wrong_ca_wrong_ou_and_bad_files_block_nothing() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-tls-errors");
    let pki = Pki::new(&lab, "lab");
    let other = Pki::new(&lab, "other");
    let lapi = Lapi::start_tls(&lab, &pki);
    let tag = lab.tag.clone();
    let att4 = lab.att.v4.to_string();
    let tgt4 = IpAddr::V4(lab.tgt.v4);
    let key = lapi.add_bouncer("scan-guard-tls");
    lapi.cscli_ok(&["decisions", "add", "--ip", &att4, "--duration", "1h"]);

    // The LAPI's certificate is not from the CA we trust.
    let cfg = config(
        &lab,
        &format!(
            "lapi_url = \"{}\"\nca_cert = \"{}\"\nbouncer_api_key = \"{key}\"\npoll_interval = \"1s\"\n",
            lapi.url,
            p(&other.ca)
        ),
    );
    let c = start(&lab, &cfg);
    let line = wait_log(&lab, &c, "TLS failed");
    eprintln!("[{tag}] untrusted LAPI: {line}");
    assert!(
        line.contains("no trusted connection") && line.contains("crowdsec.ca_cert"),
        "[{tag}] {line}"
    );
    assert!(
        line.contains("UnknownIssuer") || line.contains("invalid peer certificate"),
        "[{tag}] {line}"
    );
    thread::sleep(Duration::from_secs(2));
    lab.assert_running(&c, "with an untrusted LAPI certificate");
    assert!(c.list().is_empty(), "[{tag}] {:?}", c.list());
    served(&lab, &c, tgt4, "the attacker (LAPI not trusted)");
    stop(&lab, &c);

    // A certificate of the agents' OU used by the bouncer: refused by the LAPI.
    let (cert, cert_key) = pki.client("scan-guard-wrong-ou", AGENT_OU);
    let cfg = config(
        &lab,
        &format!(
            "lapi_url = \"{}\"\nca_cert = \"{}\"\nbouncer_tls_cert = \"{}\"\nbouncer_tls_key = \"{}\"\npoll_interval = \"1s\"\n",
            lapi.url,
            p(&pki.ca),
            p(&cert),
            p(&cert_key)
        ),
    );
    let c = start(&lab, &cfg);
    let line = wait_log(&lab, &c, "rejected the bouncer's client certificate");
    eprintln!("[{tag}] wrong OU: {line}");
    assert!(line.contains("bouncers_allowed_ou"), "[{tag}] {line}");
    thread::sleep(Duration::from_secs(2));
    assert!(c.list().is_empty(), "[{tag}] {:?}", c.list());
    served(&lab, &c, tgt4, "the attacker (certificate refused)");
    stop(&lab, &c);

    // Files that cannot be used: exit 2 before anything is attached.
    let junk = lab.write_file("junk", "pem", "not a certificate\n");
    let missing = lab.dir.join("no-such-ca.pem");
    for (body, needle) in [
        (
            format!("ca_cert = \"{}\"\nbouncer_api_key = \"k\"\n", p(&missing)),
            "cannot read crowdsec.ca_cert",
        ),
        (
            format!("ca_cert = \"{}\"\nbouncer_api_key = \"k\"\n", p(&junk)),
            "no PEM CERTIFICATE",
        ),
        (
            format!(
                "ca_cert = \"{}\"\nbouncer_tls_cert = \"{}\"\nbouncer_tls_key = \"{}\"\n",
                p(&pki.ca),
                p(&cert),
                p(&junk)
            ),
            "crowdsec.bouncer_tls_key",
        ),
        (
            format!(
                "ca_cert = \"{}\"\nbouncer_tls_cert = \"{}\"\nbouncer_tls_key = \"{}\"\n",
                p(&pki.ca),
                p(&cert),
                p(&pki.server_key)
            ),
            "do not go together",
        ),
    ] {
        let cfg = config(&lab, &format!("lapi_url = \"{}\"\n{body}", lapi.url));
        let pin_dir = lab.bpffs.join("never");
        let out = lab.scan_guard_in(
            &lab.tgt.ns,
            &[
                "run",
                "--iface",
                &lab.tgt.iface,
                "--config",
                &p(&cfg),
                "--pin-dir",
                &p(&pin_dir),
                "--events",
                &p(&lab.file("events", "jsonl")),
                "--state-file",
                &p(&lab.file("state", "json")),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "[{tag}] {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "[{tag}] want {needle:?}: {err}");
        assert!(
            !pin_dir.join(scan_guard::loader::LINK_PIN).exists(),
            "[{tag}] attached although the config could not be used"
        );
    }
    done(&lab, t0);
}

/// Waits for a `scan-guard/port-scan` alert for `src` in the Local API.
fn wait_alert(lab: &Lab, lapi: &Lapi, c: &Controller, src: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(a) = lapi
            .alerts()
            .into_iter()
            .find(|a| a["scenario"] == SCENARIO && a["source"]["value"] == src)
        {
            return a;
        }
        lab.assert_running(c, "while waiting for the alert");
        assert!(
            Instant::now() < deadline,
            "[{}] no {SCENARIO} alert for {src}\n--- alerts ---\n{:?}\n--- controller log ---\n{}",
            lab.tag,
            lapi.alerts(),
            read_lossy(&c.log)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

fn scan(lab: &Lab, c: &Controller, target: &str, src: &str) {
    let mut args = vec![
        "-sS",
        "-n",
        "-Pn",
        "-T4",
        "-p",
        "1-200",
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "200ms",
        "--host-timeout",
        "30s",
    ];
    if target.contains(':') {
        args.push("-6");
    }
    args.push(target);
    let nmap = lab.spawn_nmap(&args);
    lab.wait_event_during(
        c,
        &nmap,
        Duration::from_secs(5),
        "blocked for the scan",
        |e| {
            is_event(e, "blocked", src)
                && matches!(e["origin"].as_str(), Some("kernel" | "detector"))
        },
    );
    lab.finish(&nmap);
}

#[test]
fn agent_over_https_with_a_password_then_a_client_certificate() {
    let t0 = Instant::now();
    let lab = lab("crowdsec-tls-agent");
    let pki = Pki::new(&lab, "lab");
    let lapi = Lapi::start_tls(&lab, &pki);
    let tag = lab.tag.clone();
    lapi.add_machine("scan-guard-agent", "agent-password-1234");
    let cfg = config(
        &lab,
        &format!(
            "lapi_url = \"{}\"\nca_cert = \"{}\"\npush_alerts = true\nagent_machine_id = \"scan-guard-agent\"\nagent_password = \"agent-password-1234\"\n",
            lapi.url,
            p(&pki.ca)
        ),
    );
    let c = start(&lab, &cfg);
    wait_log(&lab, &c, "logged in to the Local API");
    let att4 = lab.att.v4.to_string();
    scan(&lab, &c, &lab.tgt.v4.to_string(), &att4);
    let a = wait_alert(&lab, &lapi, &c, &att4);
    assert_eq!(a["machine_id"], "scan-guard-agent", "[{tag}] {a}");

    // SIGHUP: the same LAPI, now with a client certificate of the agents' OU.
    let (cert, cert_key) = pki.client("scan-guard-web1", AGENT_OU);
    std::fs::write(
        &cfg,
        format!(
            "[crowdsec]\nlapi_url = \"{}\"\nca_cert = \"{}\"\npush_alerts = true\nagent_tls_cert = \"{}\"\nagent_tls_key = \"{}\"\n",
            lapi.url,
            p(&pki.ca),
            p(&cert),
            p(&cert_key)
        ),
    )
    .expect("rewriting the config");
    let pid = lab.controller_pid(&c).expect("controller pid");
    // SAFETY: plain syscall on the lab's own controller process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_log(&lab, &c, "CrowdSec tasks restarted");
    wait_log(&lab, &c, "as the machine of our client certificate");
    let att6 = lab.att.v6.to_string();
    scan(&lab, &c, &lab.tgt.v6.to_string(), &att6);
    let a = wait_alert(&lab, &lapi, &c, &att6);
    assert!(
        a["machine_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("scan-guard-web1@")),
        "[{tag}] alert not from the certificate's machine: {a}"
    );
    stop(&lab, &c);
    done(&lab, t0);
}
