//! What an operator watches scan-guard with: the Grafana dashboard
//! (packaging/grafana) and the Prometheus alert rules (packaging/prometheus),
//! checked with promtool and against a real Prometheus scraping the real
//! controller in the lab while a real scan runs.

use std::{
    collections::BTreeSet,
    fs,
    time::{Duration, Instant},
};

use scan_guard::export::metrics::Metrics;
use scan_guard_common::stats::{STAT_COUNT, Stat};
use scan_guard_tests::{
    is_root,
    lab::{Controller, ControllerOptions, Lab, XdpMode, describe, is_event},
    prometheus::{self, Server},
};
use serde_json::Value;

const DASHBOARD: &str = "packaging/grafana/scan-guard-dashboard.json";
const RULES: &str = "packaging/prometheus/scan-guard-alerts.yml";
const RULES_TEST: &str = "packaging/prometheus/scan-guard-alerts.test.yml";
const METRICS_PORT: u16 = 9184;
/// What the panels' `$__rate_interval` and `$__range` become in the lab (1 s scrapes).
const RATE_INTERVAL: &str = "5s";
const RANGE: &str = "5m";
/// Panels that must have shown a non-zero value after the scan (not just a series).
/// Not the CrowdSec ones: the lab runs without CrowdSec, so they show 0 ("off").
const MOVING_PANELS: &[&str] = &[
    "XDP attached",
    "Blocked sources",
    "Tracked sources",
    "Packets at XDP",
    "Dropped at XDP",
    "Drops by reason",
    "Blocked and tracked sources",
    "Detections by kind",
    "Events by type",
    "Controller ticks per second",
];

fn read(rel: &str) -> String {
    let p = prometheus::repo_path(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel (rows' nested panels too) as (title, panel).
fn panels(d: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("dashboard has panels") {
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
        out.push(p.clone());
    }
    out.into_iter()
        .filter(|p| p["type"] != "row")
        .map(|p| (p["title"].as_str().unwrap_or("").to_string(), p))
        .collect()
}

/// Every (panel title, target expr) of the dashboard.
fn panel_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (title, p) in panels(d) {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: {t}"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// A panel query as Grafana sends it, for the scraped `instance`.
fn substitute(expr: &str, instance: &str) -> String {
    let e = expr
        .replace("${instance}", instance)
        .replace("$instance", instance)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE);
    assert!(!e.contains('$'), "unknown template variable left in {e}");
    e
}

/// The `scan_guard_*` names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("scan_guard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The exporter's text with every family populated (a detection, an event, a
/// tick, kernel counters), as a running controller serves it.
fn exposition() -> String {
    let m = Metrics::new();
    populate(&m);
    m.render()
}

fn populate(m: &Metrics) {
    let mut s = [0u64; STAT_COUNT];
    s[Stat::Packets as usize] = 100;
    s[Stat::DroppedBlocked as usize] = 7;
    m.update_kernel(&s);
    m.set_occupancy(3, 1, 65536, 100_000, 5);
    m.event(scan_guard_common::vocab::EventName::Blocked);
    m.detection(Some(scan_guard_common::vocab::ScanKind::Syn));
    m.tick(Duration::from_millis(2));
    // The controller sets every interface of its list at start.
    m.set_attached(&[scan_guard::kernel::attachments::IfaceStatus {
        name: "eth0".into(),
        attached: true,
        mode: "native".into(),
        bond: None,
    }]);
}

/// Names of the sample lines of an exposition.
fn served_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The names after `- alert:` in the rules file.
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    prometheus::require_prometheus();
    let rules = prometheus::repo_path(RULES);
    let out = prometheus::promtool_ok(&["check", "rules", rules.to_str().expect("UTF-8")]);
    let names = alert_names(&read(RULES));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{out}"
    );
    // The unit tests fire every alert on its input and keep it quiet otherwise.
    let tests = prometheus::repo_path(RULES_TEST);
    let out = prometheus::promtool_ok(&["test", "rules", tests.to_str().expect("UTF-8")]);
    assert!(out.contains("SUCCESS"), "{out}");
    let test_text = read(RULES_TEST);
    for name in &names {
        let firing = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels");
        assert!(test_text.contains(&firing), "{name} is never shown firing");
        let quiet = format!("alertname: {name}, exp_alerts: []");
        assert!(test_text.contains(&quiet), "{name} is never shown quiet");
    }
    // Every rule has a `for:`, a severity and both annotations.
    let rules_text = read(RULES);
    for block in rules_text.split("- alert:").skip(1) {
        let name = block.lines().next().unwrap_or("").trim();
        for key in ["for:", "severity:", "summary:", "description:"] {
            assert!(block.contains(key), "alert {name} has no {key}");
        }
    }
    let served = served_names(&exposition());
    let exprs: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert_eq!(exprs.len(), names.len(), "one expr per alert");
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        assert!(
            served.contains(&name),
            "the rules use {name}, which the exporter does not serve"
        );
    }
}

#[test]
fn exporter_text_passes_promtool_lint() {
    let m = Metrics::new();
    populate(&m);
    let text = m.render_text();
    let out = prometheus::check_metrics(&text);
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n--- exposition ---\n{text}",
        describe(&out)
    );
}

#[test]
fn dashboard_is_a_grafana_dashboard_over_served_metrics() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let inst = var("instance");
    assert_eq!(inst["type"], "query");
    assert!(
        inst["definition"]
            .as_str()
            .unwrap_or("")
            .starts_with("label_values(scan_guard_"),
        "{inst}"
    );
    let served = served_names(&exposition());
    let mut ids = BTreeSet::new();
    for (title, p) in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
    let all: Vec<(String, String)> = panel_exprs(&d);
    for (title, expr) in &all {
        for name in metric_names(expr) {
            assert!(
                served.contains(&name),
                "panel {title:?} uses {name}, which the exporter does not serve"
            );
        }
    }
    for title in MOVING_PANELS {
        assert!(all.iter().any(|(t, _)| t == title), "no panel {title:?}");
    }
}

/// The largest value of a range query's answer (0 if none).
fn peak(range: &Value) -> f64 {
    range["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|series| series["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|point| point[1].as_str()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// GET /metrics from the controller inside the target namespace, with `accept`.
fn scrape(lab: &Lab, accept: &str) -> String {
    lab.exec_ok(
        &lab.tgt.ns,
        &[
            "curl",
            "-sSf",
            "--max-time",
            "3",
            "-H",
            &format!("Accept: {accept}"),
            &format!("http://127.0.0.1:{METRICS_PORT}/metrics"),
        ],
    )
}

/// The real exposition passes the lint (promtool reads the classic text format;
/// Prometheus gets and ingests the OpenMetrics one).
fn assert_scrape_lints(lab: &Lab) {
    let open_metrics = scrape(lab, "*/*");
    assert!(
        open_metrics.ends_with("# EOF\n"),
        "[{}] {open_metrics}",
        lab.tag
    );
    let body = scrape(lab, "text/plain; version=0.0.4");
    let out = prometheus::check_metrics(&body);
    assert!(
        out.status.success(),
        "[{}] promtool check metrics: {}\n--- scrape ---\n{body}",
        lab.tag,
        describe(&out)
    );
}

/// A fast SYN scan until the attacker is blocked, one more packet of it (dropped
/// at XDP), and Prometheus seeing all of it.
fn scan_until_seen(lab: &Lab, c: &Controller, prom: &Server) {
    let att = lab.att.v4.to_string();
    let scan = lab.fast_syn_scan();
    lab.wait_event_during(c, &scan, Duration::from_secs(5), "blocked", |e| {
        is_event(e, "blocked", &att)
    });
    lab.finish(&scan);
    let _ = lab.http_get(&lab.att.ns, lab.tgt.v4.into(), 80);
    // Occupancy is refreshed every 10 s; the rest within a tick and a scrape.
    for what in [
        "scan_guard_events_total{event=\"blocked\"} > 0",
        "scan_guard_detections_total{kind=\"syn\"} > 0",
        "scan_guard_dropped_packets_total{reason=\"blocked\"} > 0",
        "scan_guard_blocked_sources > 0",
    ] {
        prom.wait_result(what, Duration::from_secs(15));
    }
}

/// The instance variable's query (label_values) finds the lab's controller, and
/// every panel query answers with data; the scan's panels with non-zero data.
fn assert_panels_show_data(prom: &Server, tag: &str) {
    let inst = &prom.instance;
    let values = prom.api(
        "/api/v1/label/instance/values",
        &[("match[]", "scan_guard_sources_capacity")],
    );
    assert_eq!(
        values["data"],
        serde_json::json!([inst]),
        "[{tag}] {values}"
    );
    for (title, expr) in panel_exprs(&dashboard()) {
        let q = substitute(&expr, inst);
        let v = prom.query(&q);
        assert_eq!(v["status"], "success", "[{tag}] panel {title:?}: {q}: {v}");
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "[{tag}] panel {title:?} shows nothing: {q}: {v}");
        // Graphs ask for a range: it holds the scan for the panels it moves.
        let v = prom.query_range(&q, Duration::from_secs(60));
        assert_eq!(v["status"], "success", "[{tag}] panel {title:?}: {q}: {v}");
        if MOVING_PANELS.contains(&title.as_str()) {
            assert!(
                peak(&v) > 0.0,
                "[{tag}] panel {title:?} never moved: {q}: {v}"
            );
        }
    }
}

/// The attachment and CrowdSec gauges as Prometheus stores them: attached, both
/// CrowdSec roles present and off (the lab has no CrowdSec), no failure counted;
/// and the alerts about them quiet (not even pending), nothing firing at all.
fn assert_link_state(prom: &Server, tag: &str) {
    let inst = &prom.instance;
    prom.wait_result(
        &format!("scan_guard_xdp_attached{{instance=\"{inst}\"}} == 1"),
        Duration::from_secs(5),
    );
    for (metric, want) in [
        ("scan_guard_crowdsec_enabled", "0"),
        ("scan_guard_crowdsec_lapi_up", "0"),
        ("scan_guard_crowdsec_request_failures_total", "0"),
    ] {
        let r = prom
            .result(&format!("{metric}{{instance=\"{inst}\"}}"))
            .unwrap_or_default();
        let roles: BTreeSet<(String, String)> = r
            .iter()
            .map(|s| {
                (
                    s["metric"]["role"].as_str().unwrap_or("").to_string(),
                    s["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String)> = ["agent", "bouncer"]
            .iter()
            .map(|role| (role.to_string(), want.to_string()))
            .collect();
        assert_eq!(roles, expected, "[{tag}] {metric}: {r:?}");
    }
    let alerts = prom.api("/api/v1/alerts", &[]);
    for a in alerts["data"]["alerts"].as_array().into_iter().flatten() {
        let name = a["labels"]["alertname"].as_str().unwrap_or("");
        assert_ne!(a["state"], "firing", "[{tag}] alert firing in the lab: {a}");
        assert!(
            !(name == "ScanGuardXdpDetached" || name.starts_with("ScanGuardCrowdsec")),
            "[{tag}] alert pending in the lab: {a}"
        );
    }
}

/// Every alerting rule of the file, loaded, with its severity, evaluated without
/// error (health `ok`; `unknown` until its first evaluation, bounded).
fn assert_rules_loaded(prom: &Server, tag: &str) {
    let names = alert_names(&read(RULES));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = prom.rules();
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let loaded: BTreeSet<String> = rules
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(loaded, names, "[{tag}] rules loaded: {v}");
        for r in &rules {
            assert_eq!(r["type"], "alerting", "[{tag}] {r}");
            assert!(r["labels"]["severity"].is_string(), "[{tag}] {r}");
            assert_ne!(r["health"], "err", "[{tag}] rule failed: {r}");
        }
        if rules.iter().all(|r| r["health"] == "ok") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{tag}] rules not all evaluated: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_the_controller_and_every_panel_shows_the_scan() {
    let t0 = Instant::now();
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    prometheus::require_prometheus();
    let lab = Lab::new("prometheus");
    let tag = lab.tag.clone();
    let mut opts = ControllerOptions::new(XdpMode::Skb);
    opts.extra_args = vec!["--metrics".into(), METRICS_PORT.to_string()];
    let c = lab.start_controller_with(&opts);
    assert_scrape_lints(&lab);

    let prom = Server::start(&lab, METRICS_PORT, &prometheus::repo_path(RULES));
    let inst = prom.instance.clone();
    prom.wait_result(
        &format!("up{{instance=\"{inst}\"}} == 1"),
        Duration::from_secs(15),
    );
    prom.wait_result(
        &format!("scan_guard_sources_capacity{{instance=\"{inst}\"}} > 0"),
        Duration::from_secs(15),
    );
    scan_until_seen(&lab, &c, &prom);
    assert_panels_show_data(&prom, &tag);
    assert_rules_loaded(&prom, &tag);
    assert_link_state(&prom, &tag);

    drop(prom);
    assert!(lab.stop_controller(&c).success());
    eprintln!("[{tag}] passed in {:?}", t0.elapsed());
}
