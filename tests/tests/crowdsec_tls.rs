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
    crowdsec::{self, AGENT_OU, BOUNCER_OU, Lapi, Pki, wait_crowdsec_event},
    lab::{Controller, ControllerOptions, Lab, LabOptions, XdpMode},
};

const PORT: u16 = 8080;
const EVENT_LIMIT: Duration = Duration::from_secs(10);
const POLL: &str = "poll_interval = \"1s\"\n";

fn lab(tag: &str) -> Lab {
    crowdsec::lab(tag, LabOptions::default(), Some(PORT))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A `[crowdsec]` section for `lapi`, its certificate checked against `ca`.
fn section(lapi: &Lapi, ca: &Path, rest: &str) -> String {
    format!(
        "[crowdsec]\nlapi_url = \"{}\"\nca_cert = \"{}\"\n{rest}",
        lapi.url,
        p(ca)
    )
}

/// Bouncer authentication by a client certificate.
fn bouncer_cert(cert: &Path, key: &Path) -> String {
    format!(
        "bouncer_tls_cert = \"{}\"\nbouncer_tls_key = \"{}\"\n",
        p(cert),
        p(key)
    )
}

fn config(lab: &Lab, text: &str) -> PathBuf {
    lab.write_file("config", "toml", text)
}

/// A bouncer with the API key `key`, polling every second.
fn key_config(lab: &Lab, lapi: &Lapi, ca: &Path, key: &str) -> PathBuf {
    let auth = format!("bouncer_api_key = \"{key}\"\n{POLL}");
    config(lab, &section(lapi, ca, &auth))
}

/// A bouncer with the client certificate `cert`, polling every second.
fn cert_config(lab: &Lab, lapi: &Lapi, ca: &Path, cert: &Path, key: &Path) -> PathBuf {
    config(lab, &section(lapi, ca, &(bouncer_cert(cert, key) + POLL)))
}

fn start(lab: &Lab, cfg: &Path) -> Controller {
    lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).config(cfg))
}

fn served(lab: &Lab, c: &Controller, ip: IpAddr, who: &str) {
    lab.assert_served(c, &lab.att.ns, ip, PORT, who);
}

fn cut_off(lab: &Lab, c: &Controller, ip: IpAddr, who: &str) {
    lab.assert_cut_off(c, &lab.att.ns, ip, PORT, who);
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
    let cfg = key_config(&lab, &lapi, &pki.ca, &key);
    let c = start(&lab, &cfg);
    wait_crowdsec_event(&lab, &c, "blocked", &att4);
    let row = c
        .listed(&att4)
        .unwrap_or_else(|| panic!("[{tag}] {att4} not listed: {:?}", c.list()));
    assert_eq!(row["origin"], "crowdsec", "[{tag}] {row}");
    cut_off(&lab, &c, tgt4, "the attacker (decision over https)");
    served(&lab, &c, tgt6, "the attacker over IPv6 (not decided)");
    lab.stop_controller_ok(&c);

    // A client certificate instead of a key: no `cscli bouncers add` at all.
    let (cert, cert_key) = pki.client("scan-guard-web1", BOUNCER_OU);
    lapi.cscli_ok(&["decisions", "add", "--ip", &att6, "--duration", "1h"]);
    let cfg = cert_config(&lab, &lapi, &pki.ca, &cert, &cert_key);
    let c = start(&lab, &cfg);
    wait_crowdsec_event(&lab, &c, "blocked", &att4);
    wait_crowdsec_event(&lab, &c, "blocked", &att6);
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
    wait_crowdsec_event(&lab, &c, "unblocked", &att6);
    served(&lab, &c, tgt6, "the attacker over IPv6 after the deletion");
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
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
    let cfg = key_config(&lab, &lapi, &other.ca, &key);
    let c = start(&lab, &cfg);
    let line = lab.wait_log(&c, "TLS failed", EVENT_LIMIT);
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
    lab.stop_controller_ok(&c);

    // A certificate of the agents' OU used by the bouncer: refused by the LAPI.
    let (cert, cert_key) = pki.client("scan-guard-wrong-ou", AGENT_OU);
    let cfg = cert_config(&lab, &lapi, &pki.ca, &cert, &cert_key);
    let c = start(&lab, &cfg);
    let line = lab.wait_log(&c, "rejected the bouncer's client certificate", EVENT_LIMIT);
    eprintln!("[{tag}] wrong OU: {line}");
    assert!(line.contains("bouncers_allowed_ou"), "[{tag}] {line}");
    thread::sleep(Duration::from_secs(2));
    assert!(c.list().is_empty(), "[{tag}] {:?}", c.list());
    served(&lab, &c, tgt4, "the attacker (certificate refused)");
    lab.stop_controller_ok(&c);

    // Files that cannot be used: exit 2 before anything is attached.
    let junk = lab.write_file("junk", "pem", "not a certificate\n");
    let missing = lab.dir.join("no-such-ca.pem");
    for (ca, auth, needle) in [
        (
            &missing,
            "bouncer_api_key = \"k\"\n".to_string(),
            "cannot read crowdsec.ca_cert",
        ),
        (
            &junk,
            "bouncer_api_key = \"k\"\n".to_string(),
            "no PEM CERTIFICATE",
        ),
        (
            &pki.ca,
            bouncer_cert(&cert, &junk),
            "crowdsec.bouncer_tls_key",
        ),
        (
            &pki.ca,
            bouncer_cert(&cert, &pki.server_key),
            "do not go together",
        ),
    ] {
        let err = lab.run_refused(&config(&lab, &section(&lapi, ca, &auth)));
        assert!(err.contains(needle), "[{tag}] want {needle:?}: {err}");
    }
    lab.report_passed(t0);
}

/// A real SYN scan of `target`, until the kernel or the slow-scan test blocks
/// `src`.
fn scan(lab: &Lab, c: &Controller, target: IpAddr, src: &str) {
    let nmap = lab.fast_syn_scan_of(target);
    let blocked = lab.wait_blocked_during(c, &nmap, Duration::from_secs(5), src);
    assert!(
        matches!(blocked["origin"].as_str(), Some("kernel" | "detector")),
        "[{}] {blocked}",
        lab.tag
    );
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
        &section(
            &lapi,
            &pki.ca,
            "push_alerts = true\nagent_machine_id = \"scan-guard-agent\"\nagent_password = \"agent-password-1234\"\n",
        ),
    );
    let c = start(&lab, &cfg);
    lab.wait_log(&c, "logged in to the Local API", EVENT_LIMIT);
    let att4 = lab.att.v4.to_string();
    scan(&lab, &c, IpAddr::V4(lab.tgt.v4), &att4);
    let a = lapi.wait_alert(&c, &att4);
    assert_eq!(a["machine_id"], "scan-guard-agent", "[{tag}] {a}");

    // SIGHUP: the same LAPI, now with a client certificate of the agents' OU.
    let (cert, cert_key) = pki.client("scan-guard-web1", AGENT_OU);
    let agent_cert = format!(
        "push_alerts = true\nagent_tls_cert = \"{}\"\nagent_tls_key = \"{}\"\n",
        p(&cert),
        p(&cert_key)
    );
    lab.reload_controller(&c, &cfg, &section(&lapi, &pki.ca, &agent_cert));
    lab.wait_log(&c, "CrowdSec tasks restarted", EVENT_LIMIT);
    lab.wait_log(&c, "as the machine of our client certificate", EVENT_LIMIT);
    let att6 = lab.att.v6.to_string();
    scan(&lab, &c, IpAddr::V6(lab.tgt.v6), &att6);
    let a = lapi.wait_alert(&c, &att6);
    assert!(
        a["machine_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("scan-guard-web1@")),
        "[{tag}] alert not from the certificate's machine: {a}"
    );
    lab.stop_controller_ok(&c);
    lab.report_passed(t0);
}
