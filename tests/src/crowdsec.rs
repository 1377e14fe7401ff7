//! A real CrowdSec Local API (Debian's `crowdsec` package) for the lab tests.
//!
//! [`Lapi::start`] writes a configuration of its own into a directory inside the
//! lab directory (database, credentials, profiles: nothing under /etc/crowdsec or
//! /var/lib/crowdsec is read or written) and runs `crowdsec -no-cs -no-capi` (the
//! Local API alone, no agent, no Central API, no hub) inside the lab's target
//! namespace, listening on that namespace's 127.0.0.1 only. Every `cscli` call
//! runs there too, bounded by `timeout`. The process is started through the lab
//! (so the lab stops it too), and its [`DaemonGuard`] stops it first when the
//! [`Lapi`] is dropped, also on panic; the directory goes with the lab directory.
//!
//! [`Lapi::start_tls`] serves HTTPS instead, with the certificates of a [`Pki`]
//! made by the test (`openssl`, bounded): TLS client certificates with the OU
//! [`BOUNCER_OU`] or [`AGENT_OU`] authenticate bouncers and agents.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    is_root,
    lab::{Controller, DaemonGuard, Lab, LabOptions, describe, is_event, read_lossy, run_bounded},
};

/// Port of the Local API on the target namespace's loopback.
pub const LAPI_PORT: u16 = 18080;
/// How long the Local API may take to listen after it was started.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);
/// The OUs the TLS Local API accepts for bouncers and agents.
pub const BOUNCER_OU: &str = "bouncer-ou";
pub const AGENT_OU: &str = "agent-ou";
const OPENSSL_LIMIT: Duration = Duration::from_secs(20);
const CROWDSEC: &str = "/usr/bin/crowdsec";
const CSCLI: &str = "/usr/bin/cscli";
/// The scenario of the alerts scan-guard pushes in agent mode.
pub const SCAN_SCENARIO: &str = "scan-guard/port-scan";
/// How long a decision may take to show up as an event (the tests poll every
/// second), and an alert to show up in the Local API.
pub const DECISION_LIMIT: Duration = Duration::from_secs(10);
const ALERT_LIMIT: Duration = Duration::from_secs(15);

/// A Local API running in `ns` on 127.0.0.1:[`LAPI_PORT`].
pub struct Lapi<'a> {
    lab: &'a Lab,
    /// Namespace it runs in (the lab's target: where the controller runs).
    pub ns: String,
    /// Its own configuration, database and credentials.
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `http://127.0.0.1:18080`, for `[crowdsec] lapi_url`.
    pub url: String,
    /// Its standard output and error (every start appends).
    pub log: PathBuf,
    /// The running `crowdsec`, stopped when the `Lapi` is dropped.
    proc: DaemonGuard<'a>,
}

/// Panics with an install hint unless the crowdsec package is installed.
pub fn require_crowdsec() {
    for p in [CROWDSEC, CSCLI] {
        assert!(
            Path::new(p).is_file(),
            "{p} not found: install Debian's crowdsec package (`cargo xtask test` does, with its Central API registration disabled)"
        );
    }
}

/// A lab for a CrowdSec test (root and the crowdsec package checked first), with
/// an HTTP server on the target's `http_port` if given.
pub fn lab(tag: &str, opts: LabOptions, http_port: Option<u16>) -> Lab {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    require_crowdsec();
    let lab = Lab::with_options(tag, opts);
    if let Some(port) = http_port {
        lab.start_http_server(port);
    }
    lab
}

/// An event `name` about `src` that came from the Local API (origin `crowdsec`).
pub fn is_crowdsec_event(e: &Value, name: &str, src: &str) -> bool {
    is_event(e, name, src) && e["origin"] == "crowdsec"
}

/// Waits (bounded by [`DECISION_LIMIT`]) for a [`is_crowdsec_event`] of `c`.
pub fn wait_crowdsec_event(lab: &Lab, c: &Controller, name: &str, src: &str) -> Value {
    lab.wait_event(
        c,
        DECISION_LIMIT,
        &format!("{name} (crowdsec) for {src}"),
        |e| is_crowdsec_event(e, name, src),
    )
}

/// Waits for the `unblocked` (crowdsec) event of `src` and checks that it says
/// the Local API no longer knows the decision at all (a wiped or reinstalled one).
pub fn wait_unknown_decision_lifted(lab: &Lab, c: &Controller, src: &str) -> Value {
    let u = wait_crowdsec_event(lab, c, "unblocked", src);
    assert!(
        u["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no such decision")),
        "[lab {}] {u}",
        lab.tag
    );
    u
}

impl<'a> Lapi<'a> {
    /// Configures a Local API of its own in the lab's target namespace, registers
    /// the machine `cscli` itself uses, starts it and waits until it listens.
    pub fn start(lab: &'a Lab) -> Self {
        Self::start_with(lab, None)
    }

    /// Like [`start`](Self::start), serving HTTPS with `pki`'s server certificate
    /// and accepting its client certificates (OU [`BOUNCER_OU`] or [`AGENT_OU`]).
    pub fn start_tls(lab: &'a Lab, pki: &Pki) -> Self {
        Self::start_with(lab, Some(pki))
    }

    fn start_with(lab: &'a Lab, pki: Option<&Pki>) -> Self {
        require_crowdsec();
        let dir = lab.file("crowdsec", "d");
        for sub in ["", "data", "hub", "notifications"] {
            fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.join(sub).display()));
        }
        let d = dir.display();
        let scheme = if pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{LAPI_PORT}");
        // Client certificates are optional: bouncer keys and machine passwords
        // keep working over the same listener.
        let tls = match pki {
            None => String::new(),
            Some(p) => format!(
                "    tls:\n      cert_file: {}\n      key_file: {}\n      ca_cert_path: {}\n      \
                 client_verification: VerifyClientCertIfGiven\n      \
                 bouncers_allowed_ou:\n        - {BOUNCER_OU}\n      agents_allowed_ou:\n        - {AGENT_OU}\n",
                p.server_cert.display(),
                p.server_key.display(),
                p.ca.display()
            ),
        };
        // No `online_client`: no Central API. No prometheus listener.
        let config = format!(
            "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: {d}\n\
             config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  \
             hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
             plugin_dir: /usr/lib/crowdsec/plugins/\n\
             crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n  parser_routines: 1\n\
             cscli:\n  output: human\n  color: \"no\"\n\
             db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: false\n  \
             flush:\n    max_items: 5000\n    max_age: 7d\n\
             api:\n  client:\n    insecure_skip_verify: {skip}\n    credentials_path: {d}/local_api_credentials.yaml\n  \
             server:\n    log_level: info\n    listen_uri: 127.0.0.1:{LAPI_PORT}\n    profiles_path: {d}/profiles.yaml\n    \
             console_path: {d}/console.yaml\n    trusted_ips:\n      - 127.0.0.1\n      - ::1\n{tls}\
             prometheus:\n  enabled: false\n  level: full\n  listen_addr: 127.0.0.1\n  listen_port: 6060\n",
            // cscli (the test's own client) does not verify the lab's certificate.
            skip = pki.is_some(),
        );
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        };
        write("config.yaml", &config);
        // The package's default profile: alerts without decisions get a 4h ban.
        write(
            "profiles.yaml",
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        );
        write("simulation.yaml", "simulation: off\n");
        write("acquis.yaml", "");
        write("local_api_credentials.yaml", "");
        let lapi = Lapi {
            lab,
            ns: lab.tgt.ns.clone(),
            config: dir.join("config.yaml"),
            log: dir.join("lapi.log"),
            dir,
            url,
            proc: DaemonGuard::new(lab),
        };
        lapi.add_cscli_machine();
        lapi.spawn();
        lapi
    }

    /// cscli's own machine (decisions and alerts go through the API).
    fn add_cscli_machine(&self) {
        let creds = self.dir.join("local_api_credentials.yaml");
        self.cscli_ok(&[
            "machines",
            "add",
            "scan-guard-test-cli",
            "--auto",
            "--force",
            "-f",
            creds.to_str().expect("UTF-8 path"),
            "--url",
            &format!("{}/", self.url),
        ]);
    }

    /// Stops it, deletes its database (every decision, bouncer and machine: a
    /// reinstalled Local API) and starts it again.
    pub fn wipe_and_restart(&self) {
        self.stop();
        for f in ["crowdsec.db", "crowdsec.db-wal", "crowdsec.db-shm"] {
            let p = self.dir.join("data").join(f);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("removing {}: {e}", p.display()),
            }
        }
        self.add_cscli_machine();
        self.spawn();
    }

    fn spawn(&self) {
        let cfg = self.config.to_str().expect("UTF-8 path");
        let p = self.lab.spawn_in(
            &self.ns,
            &[CROWDSEC, "-c", cfg, "-no-cs", "-no-capi"],
            &self.log,
        );
        let listening = || self.lab.listens(&self.ns, LAPI_PORT);
        self.proc.start(
            p,
            "the CrowdSec Local API",
            &format!("listen on 127.0.0.1:{LAPI_PORT}"),
            &self.log,
            LISTEN_LIMIT,
            listening,
        );
    }

    /// Waits (bounded) for the [`SCAN_SCENARIO`] alert about `src`, as the
    /// Local API keeps it; fails at once if the controller `c` exits.
    pub fn wait_alert(&self, c: &Controller, src: &str) -> Value {
        let deadline = Instant::now() + ALERT_LIMIT;
        loop {
            let alert = self
                .alerts()
                .into_iter()
                .find(|a| a["scenario"] == SCAN_SCENARIO && a["source"]["value"] == src);
            if let Some(a) = alert {
                return a;
            }
            self.lab
                .assert_running(c, &format!("while waiting for the alert about {src}"));
            assert!(
                Instant::now() < deadline,
                "[lab {}] no {SCAN_SCENARIO} alert for {src} in the Local API within {ALERT_LIMIT:?}\n--- cscli alerts list ---\n{:?}\n--- controller log ---\n{}",
                self.lab.tag,
                self.alerts(),
                read_lossy(&c.log)
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the Local API (SIGTERM, bounded) and waits until it is gone.
    pub fn stop(&self) {
        if let Some(p) = self.proc.take() {
            self.lab.terminate(p, Duration::from_secs(10));
        }
    }

    /// Starts it again with the same configuration and database.
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    /// A config file for both modes: a new bouncer `bouncer` (its key in a key
    /// file), polled every second, and the machine `scan-guard-agent` (created
    /// here, its password in a file) pushing our blocks as alerts.
    pub fn bouncer_and_agent_config(&self, bouncer: &str) -> PathBuf {
        const MACHINE: &str = "scan-guard-agent";
        const PASSWORD: &str = "agent-password-1234";
        self.add_machine(MACHINE, PASSWORD);
        let key = self.add_bouncer(bouncer);
        let key_file = self.lab.write_file("bouncer", "key", &key);
        let pw_file = self
            .lab
            .write_file("agent", "password", &format!("{PASSWORD}\n"));
        self.lab.write_file(
            "config",
            "toml",
            &format!(
                "[crowdsec]\nlapi_url = \"{}\"\nbouncer_api_key_file = \"{}\"\npoll_interval = \"1s\"\n\
                 push_alerts = true\nagent_machine_id = \"{MACHINE}\"\nagent_password_file = \"{}\"\n",
                self.url,
                key_file.display(),
                pw_file.display()
            ),
        )
    }

    /// `cscli -c <config> ARGS` in the namespace, bounded.
    pub fn cscli(&self, args: &[&str]) -> Output {
        let cfg = self.config.to_str().expect("UTF-8 path");
        let mut full = vec![CSCLI, "-c", cfg];
        full.extend_from_slice(args);
        self.lab.exec_in(&self.ns, &full)
    }

    /// Like [`cscli`](Self::cscli) but panics (with the Local API's log) unless it
    /// exits 0; returns stdout.
    pub fn cscli_ok(&self, args: &[&str]) -> String {
        let out = self.cscli(args);
        if !out.status.success() {
            panic!(
                "[lab {}] cscli {}: {}\n--- Local API log ---\n{}",
                self.lab.tag,
                args.join(" "),
                describe(&out),
                read_lossy(&self.log)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cscli ARGS -o json` as a list (`null` is an empty list).
    pub fn cscli_list(&self, args: &[&str]) -> Vec<Value> {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let text = self.cscli_ok(&full);
        match serde_json::from_str(text.trim()) {
            Ok(Value::Array(v)) => v,
            Ok(Value::Null) => Vec::new(),
            other => panic!(
                "cscli {}: not a JSON list: {other:?}: {text}",
                full.join(" ")
            ),
        }
    }

    /// Registers a bouncer and returns its API key.
    pub fn add_bouncer(&self, name: &str) -> String {
        let key = self.cscli_ok(&["bouncers", "add", name, "-o", "raw"]);
        let key = key.trim().to_string();
        assert!(!key.is_empty(), "cscli bouncers add {name}: no key printed");
        key
    }

    /// Registers a bouncer with a key of our choosing.
    pub fn add_bouncer_with_key(&self, name: &str, key: &str) {
        self.cscli_ok(&["bouncers", "add", name, "-k", key]);
    }

    /// Registers a (validated) machine with this password.
    pub fn add_machine(&self, name: &str, password: &str) {
        self.cscli_ok(&["machines", "add", name, "--password", password, "-f", "-"]);
    }

    /// The alerts with an active decision (`cscli decisions list -o json`).
    pub fn decisions(&self) -> Vec<Value> {
        self.cscli_list(&["decisions", "list"])
    }

    /// `cscli alerts list -o json`.
    pub fn alerts(&self) -> Vec<Value> {
        self.cscli_list(&["alerts", "list"])
    }

    /// `GET /v1/decisions/stream?startup=true` with `key`, as another host's bouncer
    /// would ask (curl in the namespace, bounded).
    pub fn stream_startup(&self, key: &str) -> Value {
        let url = format!("{}/v1/decisions/stream?startup=true", self.url);
        let header = format!("X-Api-Key: {key}");
        // `-k`: this only stands in for another host's bouncer.
        let out = self.lab.exec_in(
            &self.ns,
            &["curl", "-ksS", "--max-time", "5", "-H", &header, &url],
        );
        assert!(out.status.success(), "GET {url}: {}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "GET {url}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// A certificate authority of the test's own, a server certificate for
/// 127.0.0.1 and client certificates, made with `openssl` (EC P-256, valid 2
/// days) in a directory of the lab.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM): `[crowdsec] ca_cert`, the LAPI's `ca_cert_path`.
    pub ca: PathBuf,
    ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = run_bounded(OPENSSL_LIMIT, "openssl", args);
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        describe(&out)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

impl Pki {
    /// A new CA named `name` with a server certificate for 127.0.0.1.
    pub fn new(lab: &Lab, name: &str) -> Self {
        let dir = lab.file(&format!("pki-{name}"), "d");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/O=scan-guard tests/CN={name} CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path(&ca_key),
            "-out",
            path(&ca),
        ]);
        let pki = Self {
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
            ca,
            ca_key,
        };
        pki.issue(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        pki
    }

    /// A client certificate with `ou` (and CN `cn`); returns (cert, key).
    pub fn client(&self, cn: &str, ou: &str) -> (PathBuf, PathBuf) {
        self.issue(
            cn,
            &format!("/OU={ou}/CN={cn}"),
            "extendedKeyUsage=clientAuth\n",
        )
    }

    fn issue(&self, stem: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext_file = self.dir.join(format!("{stem}.ext"));
        fs::write(
            &ext_file,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", ext_file.display()));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            path(&csr),
            "-CA",
            path(&self.ca),
            "-CAkey",
            path(&self.ca_key),
            "-CAcreateserial",
            "-extfile",
            path(&ext_file),
            "-out",
            path(&cert),
        ]);
        (cert, key)
    }
}
