//! A real Prometheus server and `promtool` (Debian's `prometheus` package) for the
//! dashboard and alert-rule tests.
//!
//! [`Server::start`] writes a configuration of its own into the lab directory
//! (scrape every second, the controller's `--metrics` port on the target
//! namespace's loopback, the alert rules loaded, its TSDB in the lab directory)
//! and runs Prometheus inside the lab's target namespace on 127.0.0.1 only. It is
//! started through the lab (so the lab stops it too); [`Drop`] stops it first.
//! Every HTTP API call is a bounded `curl` inside that namespace.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::lab::{Lab, Proc, describe, read_lossy, run_bounded};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
/// Prometheus' own port on the target namespace's loopback.
pub const PROMETHEUS_PORT: u16 = 19090;
/// The job name the lab scrapes the controller as (the rules' `up` alert expects it).
pub const JOB: &str = "scan-guard";
const READY_LIMIT: Duration = Duration::from_secs(20);
const PROMTOOL_LIMIT: Duration = Duration::from_secs(30);

/// Panics with an install hint unless Prometheus and promtool are installed.
pub fn require_prometheus() {
    for p in [PROMETHEUS, PROMTOOL] {
        assert!(
            Path::new(p).is_file(),
            "{p} not found: install Debian's prometheus package (apt-get install prometheus; `cargo xtask test` does)"
        );
    }
}

/// A path relative to the workspace root (this crate lives in `<root>/tests`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent directory")
        .join(rel)
}

/// `promtool ARGS`, bounded.
pub fn promtool(args: &[&str]) -> Output {
    require_prometheus();
    run_bounded(PROMTOOL_LIMIT, PROMTOOL, args)
}

/// `promtool ARGS` that must succeed; returns its stdout and stderr.
pub fn promtool_ok(args: &[&str]) -> String {
    let out = promtool(args);
    assert!(
        out.status.success(),
        "promtool {}: {}",
        args.join(" "),
        describe(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Prometheus running in the lab's target namespace.
pub struct Server<'a> {
    lab: &'a Lab,
    pub ns: String,
    /// `http://127.0.0.1:<PROMETHEUS_PORT>`, as seen inside `ns`.
    pub url: String,
    /// The scrape target, `127.0.0.1:<port>` (also the `instance` label).
    pub instance: String,
    pub log: PathBuf,
    proc: Proc,
}

impl<'a> Server<'a> {
    /// Starts Prometheus scraping `127.0.0.1:metrics_port` every second with the
    /// rule file `rules` loaded, and waits (bounded) until it is ready.
    pub fn start(lab: &'a Lab, metrics_port: u16, rules: &Path) -> Self {
        require_prometheus();
        let instance = format!("127.0.0.1:{metrics_port}");
        let tsdb = lab.file("prometheus-tsdb", "d");
        fs::create_dir_all(&tsdb).unwrap_or_else(|e| panic!("creating {}: {e}", tsdb.display()));
        // Evaluating every second makes the rules' health known within a second.
        let config = lab.write_file(
            "prometheus",
            "yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{instance}']\n",
                rules.display()
            ),
        );
        promtool_ok(&["check", "config", path_str(&config)]);
        let log = lab.file("prometheus", "log");
        let listen = format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}");
        let proc = lab.spawn_in(
            &lab.tgt.ns,
            &[
                PROMETHEUS,
                &format!("--config.file={}", path_str(&config)),
                &format!("--storage.tsdb.path={}", path_str(&tsdb)),
                &listen,
            ],
            &log,
        );
        let server = Server {
            lab,
            ns: lab.tgt.ns.clone(),
            url: format!("http://127.0.0.1:{PROMETHEUS_PORT}"),
            instance,
            log,
            proc,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        self.lab.wait_started(
            self.proc,
            "Prometheus",
            "answer /-/ready",
            &[&self.log],
            READY_LIMIT,
            || self.get("/-/ready").is_some(),
        );
    }

    /// Body of a successful (2xx) GET of `path`, None otherwise.
    fn get(&self, path: &str) -> Option<String> {
        let url = format!("{}{path}", self.url);
        let out = self
            .lab
            .exec_in(&self.ns, &["curl", "-sSf", "--max-time", "3", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET of an HTTP API endpoint with URL-encoded parameters; the JSON answer,
    /// whatever its status (errors come back as JSON with `"status": "error"`).
    pub fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("{}{endpoint}", self.url);
        let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["curl", "-sS", "--max-time", "5", "-G", &url];
        for p in &encoded {
            args.extend(["--data-urlencode", p]);
        }
        let out = self.lab.exec_in(&self.ns, &args);
        assert!(
            out.status.success(),
            "[lab {}] GET {endpoint} {params:?}: {}",
            self.lab.tag,
            describe(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "[lab {}] GET {endpoint}: not JSON ({e}): {}",
                self.lab.tag,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// An instant query (`/api/v1/query`): the whole answer.
    pub fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)])
    }

    /// A range query (`/api/v1/query_range`, as Grafana's graphs ask) over the last
    /// `window` with one point a second: the whole answer.
    pub fn query_range(&self, expr: &str, window: Duration) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let start = format!("{:.3}", now - window.as_secs_f64());
        let end = format!("{now:.3}");
        self.api(
            "/api/v1/query_range",
            &[
                ("query", expr),
                ("start", &start),
                ("end", &end),
                ("step", "1"),
            ],
        )
    }

    /// The result vector of `expr`, if the query succeeded.
    pub fn result(&self, expr: &str) -> Option<Vec<Value>> {
        let v = self.query(expr);
        (v["status"] == "success")
            .then(|| v["data"]["result"].as_array().cloned())
            .flatten()
    }

    /// Polls `expr` until it returns a non-empty result (bounded); returns it.
    pub fn wait_result(&self, expr: &str, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            match self.result(expr) {
                Some(r) if !r.is_empty() => return r,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "[lab {}] {expr} still empty after {limit:?}: {}\n--- Prometheus log ---\n{}",
                self.lab.tag,
                self.query(expr),
                read_lossy(&self.log)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The loaded rule groups (`/api/v1/rules`).
    pub fn rules(&self) -> Value {
        self.api("/api/v1/rules", &[])
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        // While unwinding, a second panic would abort: the lab's own drop stops it.
        if !thread::panicking() {
            self.lab.terminate(self.proc, Duration::from_secs(10));
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", p.display()))
}

/// `promtool check metrics` over `text` (the exposition-format lint), bounded.
pub fn check_metrics(text: &str) -> Output {
    require_prometheus();
    let secs = PROMTOOL_LIMIT.as_secs().to_string();
    let mut child = Command::new("timeout")
        .args(["-k", "2", &secs, PROMTOOL, "check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {PROMTOOL} check metrics: {e}"));
    {
        let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing the exposition to promtool: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for promtool check metrics: {e}"))
}
