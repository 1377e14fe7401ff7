//! Prometheus/OpenMetrics exposition (`--metrics ADDR`): kernel counters by
//! reason, map occupancy, events and detections by kind, controller loop latency.
//! Served by hyper (GET /metrics only, one request per connection) on the
//! controller's own runtime; nothing listens unless asked to.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use scan_guard_common::{
    flags::InvalidClass,
    stats::{NAMED, Stat, StatBlock},
    vocab::{EventName, ScanKind, kind_name},
};
use tokio::net::TcpListener;

use crate::{base::error::usage, export::crowdsec::health::Snapshot};

type Labels = Vec<(String, String)>;

/// Parses `--metrics`: `HOST:PORT`, `:PORT` or `PORT` (the last two on loopback).
pub fn parse_listen(s: &str) -> Result<SocketAddr> {
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    t.parse::<SocketAddr>().map_err(|_| {
        usage(format!(
            "--metrics {s:?}: expected PORT, :PORT or HOST:PORT (e.g. 127.0.0.1:9184 or [::1]:9184)"
        ))
    })
}

pub struct Metrics {
    registry: Registry,
    kernel: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    last: Mutex<StatBlock>,
    tracked_sources: Gauge,
    blocked_sources: Gauge,
    blocklist_capacity: Gauge,
    sources_capacity: Gauge,
    evictions: Gauge,
    events: Family<Labels, Counter>,
    detections: Family<Labels, Counter>,
    loop_seconds: Histogram,
    /// Per interface; an interface dropped from the list loses its series.
    xdp_attached: Family<Labels, Gauge>,
    attached_ifaces: Mutex<Vec<String>>,
    crowdsec: CrowdsecMetrics,
}

/// The CrowdSec link's series. Its counters come from a [`Snapshot`] that counts
/// from the link's start, so they are folded in as deltas (a reload starts a new
/// link: see [`Metrics::crowdsec_link_replaced`]).
struct CrowdsecMetrics {
    enabled: Family<Labels, Gauge>,
    up: Family<Labels, Gauge>,
    failures: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    alerts_pushed: Counter,
    alerts_dropped: Counter,
    last: Mutex<Snapshot>,
}

impl CrowdsecMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            enabled: Family::default(),
            up: Family::default(),
            failures: Family::default(),
            decisions: Family::default(),
            alerts_pushed: Counter::default(),
            alerts_dropped: Counter::default(),
            last: Mutex::new(Snapshot::default()),
        };
        registry.register(
            "crowdsec_enabled",
            "1 when this CrowdSec role (bouncer or agent) is configured",
            m.enabled.clone(),
        );
        registry.register(
            "crowdsec_lapi_up",
            "1 when the role's last Local API request succeeded",
            m.up.clone(),
        );
        registry.register(
            "crowdsec_request_failures",
            "Local API requests that failed, by role",
            m.failures.clone(),
        );
        registry.register(
            "crowdsec_decisions",
            "CrowdSec decisions applied to the kernel blocklist, by action",
            m.decisions.clone(),
        );
        registry.register(
            "crowdsec_alerts_pushed",
            "Alerts (our blocks) the Local API took",
            m.alerts_pushed.clone(),
        );
        registry.register(
            "crowdsec_alerts_dropped",
            "Alerts given up on: queue or backlog full, or refused by the Local API",
            m.alerts_dropped.clone(),
        );
        for role in ROLES {
            let _ = m.enabled.get_or_create(&label("role", role));
            let _ = m.up.get_or_create(&label("role", role));
            let _ = m.failures.get_or_create(&label("role", role));
        }
        for action in ["block", "unblock"] {
            let _ = m.decisions.get_or_create(&label("action", action));
        }
        m
    }

    fn update(&self, now: &Snapshot) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let roles = [
            (
                ROLES[0],
                now.bouncer_on,
                now.bouncer_up,
                now.bouncer_failures,
                last.bouncer_failures,
            ),
            (
                ROLES[1],
                now.agent_on,
                now.agent_up,
                now.agent_failures,
                last.agent_failures,
            ),
        ];
        for (role, on, up, failures, before) in roles {
            let key = label("role", role);
            self.enabled.get_or_create(&key).set(i64::from(on));
            self.up.get_or_create(&key).set(i64::from(up));
            Metrics::add(&self.failures, "role", role, delta(failures, before));
        }
        self.alerts_pushed
            .inc_by(delta(now.alerts_pushed, last.alerts_pushed));
        self.alerts_dropped
            .inc_by(delta(now.alerts_dropped, last.alerts_dropped));
        *last = *now;
    }
}

const ROLES: [&str; 2] = ["bouncer", "agent"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("scan_guard");
        let kernel = Family::<Labels, Counter>::default();
        registry.register(
            "kernel",
            "Kernel counters of the XDP program, by counter",
            kernel.clone(),
        );
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "dropped_packets",
            "Packets dropped at XDP, by reason",
            dropped.clone(),
        );
        let tracked_sources = Gauge::default();
        registry.register(
            "tracked_sources",
            "Sources in the per-source LRU map",
            tracked_sources.clone(),
        );
        let blocked_sources = Gauge::default();
        registry.register(
            "blocked_sources",
            "Blocked sources and prefixes (the controller's records, each with its kernel blocklist entry)",
            blocked_sources.clone(),
        );
        let blocklist_capacity = Gauge::default();
        registry.register(
            "blocklist_capacity",
            "Capacity of the kernel blocklist",
            blocklist_capacity.clone(),
        );
        let sources_capacity = Gauge::default();
        registry.register(
            "sources_capacity",
            "Capacity of the per-source LRU map",
            sources_capacity.clone(),
        );
        let evictions = Gauge::default();
        registry.register(
            "source_evictions_estimate",
            "New sources minus tracked sources: sources the LRU map has evicted (upper bound)",
            evictions.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register("events", "Events written, by event name", events.clone());
        let detections = Family::<Labels, Counter>::default();
        registry.register("detections", "Scan detections, by kind", detections.clone());
        let loop_seconds = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register(
            "controller_tick_seconds",
            "Time spent in one controller housekeeping tick",
            loop_seconds.clone(),
        );
        let xdp_attached = Family::<Labels, Gauge>::default();
        registry.register(
            "xdp_attached",
            "1 while the XDP program is attached to the interface iface, 0 while it is not (gone, or attaching failed)",
            xdp_attached.clone(),
        );
        let crowdsec = CrowdsecMetrics::register(&mut registry);
        let metrics = Self {
            registry,
            xdp_attached,
            attached_ifaces: Mutex::new(Vec::new()),
            crowdsec,
            kernel,
            dropped,
            last: Mutex::new([0; scan_guard_common::stats::STAT_COUNT]),
            tracked_sources,
            blocked_sources,
            blocklist_capacity,
            sources_capacity,
            evictions,
            events,
            detections,
            loop_seconds,
        };
        metrics.export_known_series();
        metrics
    }

    fn add(family: &Family<Labels, Counter>, key: &str, value: &str, delta: u64) {
        if delta > 0 {
            family.get_or_create(&label(key, value)).inc_by(delta);
        }
    }

    /// Folds a fresh read of the kernel counters in (counters only move forward;
    /// a restarted program that reset them just stops adding until it catches up).
    pub fn update_kernel(&self, now: &StatBlock) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let delta = |i: usize| now[i].saturating_sub(last[i]);
        for (stat, name) in NAMED {
            Self::add(&self.kernel, "counter", name, delta(stat as usize));
        }
        for (reason, i) in drop_reasons() {
            Self::add(&self.dropped, "reason", &reason, delta(i));
        }
        *last = *now;
    }

    /// Every kernel counter, drop reason, event name and detection kind is exported
    /// from the start, at 0: a series born at its first increment would hide that
    /// increment from rate() and increase() (the first detection of a kind would
    /// never show on a graph, nor fire an alert on lost events).
    fn export_known_series(&self) {
        for (_, name) in NAMED {
            let _ = self.kernel.get_or_create(&label("counter", name));
        }
        for (reason, _) in drop_reasons() {
            let _ = self.dropped.get_or_create(&label("reason", &reason));
        }
        for event in EventName::ALL {
            let _ = self.events.get_or_create(&label("event", event.name()));
        }
        for kind in detection_kinds() {
            let _ = self.detections.get_or_create(&label("kind", kind));
        }
    }

    pub fn set_occupancy(
        &self,
        tracked: usize,
        blocked: usize,
        sources_cap: u32,
        blocklist_cap: u32,
        new_sources: u64,
    ) {
        self.tracked_sources.set(tracked as i64);
        self.blocked_sources.set(blocked as i64);
        self.sources_capacity.set(i64::from(sources_cap));
        self.blocklist_capacity.set(i64::from(blocklist_cap));
        self.evictions
            .set(new_sources.saturating_sub(tracked as u64) as i64);
    }

    pub fn event(&self, name: EventName) {
        Self::add(&self.events, "event", name.name(), 1);
    }

    pub fn detection(&self, kind: Option<ScanKind>) {
        Self::add(&self.detections, "kind", kind_name(kind), 1);
    }

    /// Every interface of the list with its attach status.
    pub fn set_attached(&self, ifaces: &[crate::kernel::attachments::IfaceStatus]) {
        let mut known = self
            .attached_ifaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for old in known.iter() {
            if !ifaces.iter().any(|i| &i.name == old) {
                self.xdp_attached.remove(&label("iface", old));
            }
        }
        for i in ifaces {
            self.xdp_attached
                .get_or_create(&label("iface", &i.name))
                .set(i64::from(i.attached));
        }
        *known = ifaces.iter().map(|i| i.name.clone()).collect();
    }

    /// The CrowdSec link's state and counters (read every tick).
    pub fn update_crowdsec(&self, now: &Snapshot) {
        self.crowdsec.update(now);
    }

    /// A reload replaced the link: its counters start again from 0.
    pub fn crowdsec_link_replaced(&self) {
        let mut last = self.crowdsec.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Snapshot::default();
    }

    /// A CrowdSec decision applied: `block` or `unblock`.
    pub fn crowdsec_decision(&self, action: &str) {
        Self::add(&self.crowdsec.decisions, "action", action, 1);
    }

    pub fn tick(&self, took: Duration) {
        self.loop_seconds.observe(took.as_secs_f64());
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The exposition in the classic Prometheus text format (0.0.4).
    pub fn render_text(&self) -> String {
        to_text_format(&self.render())
    }
}

const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic text format (0.0.4) of an OpenMetrics exposition, for clients that
/// only ask for `text/plain` (`promtool check metrics`, older scrapers): they read
/// a counter family `x` as an untyped `x_total` without help, so its HELP and TYPE
/// are renamed after the `_total` samples, and there is no `# EOF`.
pub fn to_text_format(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    // HELP comes before TYPE, which decides the family's name.
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), kind),
                "unknown" => (name.to_string(), "untyped"),
                _ => (name.to_string(), kind),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(&format!("# HELP {h}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// True when the request's Accept header asks for the classic text format and not
/// for OpenMetrics (Prometheus asks for both and gets OpenMetrics; so does a
/// client that says nothing).
fn wants_text_format(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    accept.iter().any(|v| v.contains("text/plain"))
        && !accept
            .iter()
            .any(|v| v.contains("application/openmetrics-text"))
}

/// Every `kind` a detection can carry, by its documented name.
fn detection_kinds() -> Vec<&'static str> {
    let mut v: Vec<&str> = ScanKind::ALL.iter().map(|k| k.name()).collect();
    v.sort_unstable();
    v
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// The `reason` label of every XDP drop and its kernel counter's index.
fn drop_reasons() -> Vec<(String, usize)> {
    let mut v = vec![
        ("blocked".to_string(), Stat::DroppedBlocked as usize),
        ("stealth".to_string(), Stat::DroppedStealth as usize),
        (
            "tiny_fragment".to_string(),
            Stat::DroppedTinyFragment as usize,
        ),
        ("fragment".to_string(), Stat::DroppedFragment as usize),
    ];
    v.extend(
        InvalidClass::ALL
            .iter()
            .map(|c| (format!("invalid_{}", c.name()), Stat::dropped_invalid(*c))),
    );
    v
}

/// How long a client may take to send its request head.
const HEAD_LIMIT: Duration = Duration::from_secs(5);
/// How long one connection may last (a client that stops reading the answer).
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Serves GET /metrics on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                // Out of file descriptors, say: do not spin on it.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = respond(&metrics, &req);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_LIMIT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(sock), service);
                let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
            });
        }
    }))
}

/// The answer to one request: the exposition in the format the client asked
/// for, or 404.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        if wants_text_format(req.headers()) {
            (StatusCode::OK, TEXT_TYPE, metrics.render_text())
        } else {
            (StatusCode::OK, OPENMETRICS_TYPE, metrics.render())
        }
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics is served\n".to_string(),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn crowdsec_counters_keep_counting_across_a_new_link() {
        let m = Metrics::new();
        let up = Snapshot {
            bouncer_on: true,
            bouncer_up: true,
            bouncer_failures: 2,
            alerts_pushed: 5,
            ..Snapshot::default()
        };
        m.update_crowdsec(&up);
        m.update_crowdsec(&up);
        let text = m.render();
        let failures = "scan_guard_crowdsec_request_failures_total{role=\"bouncer\"}";
        assert_eq!(value(&text, failures), Some(2.0), "{text}");
        assert_eq!(
            value(&text, "scan_guard_crowdsec_alerts_pushed_total"),
            Some(5.0)
        );
        assert_eq!(
            value(&text, "scan_guard_crowdsec_lapi_up{role=\"bouncer\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "scan_guard_crowdsec_enabled{role=\"agent\"}"),
            Some(0.0)
        );
        // A reload: the new link counts from 0 again; the exported counters go on.
        m.crowdsec_link_replaced();
        m.update_crowdsec(&Snapshot {
            bouncer_on: true,
            bouncer_failures: 1,
            alerts_pushed: 1,
            ..Snapshot::default()
        });
        let text = m.render();
        assert_eq!(value(&text, failures), Some(3.0), "{text}");
        assert_eq!(
            value(&text, "scan_guard_crowdsec_alerts_pushed_total"),
            Some(6.0)
        );
        assert_eq!(
            value(&text, "scan_guard_crowdsec_lapi_up{role=\"bouncer\"}"),
            Some(0.0)
        );
        m.crowdsec_decision("block");
        let iface = |name: &str, attached| crate::kernel::attachments::IfaceStatus {
            name: name.into(),
            attached,
            mode: String::new(),
            bond: None,
        };
        m.set_attached(&[iface("eth0", true), iface("eth1", true)]);
        m.set_attached(&[iface("eth0", false)]);
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "scan_guard_crowdsec_decisions_total{action=\"block\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "scan_guard_xdp_attached{iface=\"eth0\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "scan_guard_xdp_attached{iface=\"eth1\"}"),
            None,
            "an interface dropped from the list keeps no series"
        );
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(
            parse_listen("9184").unwrap(),
            "127.0.0.1:9184".parse().unwrap()
        );
        assert_eq!(
            parse_listen(":9184").unwrap(),
            "127.0.0.1:9184".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:9184").unwrap(),
            "[::1]:9184".parse().unwrap()
        );
        assert!(parse_listen("nowhere").is_err());
    }

    #[test]
    fn kernel_counters_become_monotonic_metrics() {
        let m = Metrics::new();
        let mut s = [0u64; scan_guard_common::stats::STAT_COUNT];
        s[Stat::Packets as usize] = 10;
        s[Stat::dropped_invalid(InvalidClass::Xmas)] = 3;
        m.update_kernel(&s);
        s[Stat::Packets as usize] = 15;
        m.update_kernel(&s);
        m.event(EventName::Blocked);
        m.detection(Some(ScanKind::Syn));
        let text = m.render();
        assert!(
            text.contains("scan_guard_kernel_total{counter=\"packets\"} 15"),
            "{text}"
        );
        assert!(
            text.contains("scan_guard_dropped_packets_total{reason=\"invalid_xmas\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("scan_guard_events_total{event=\"blocked\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scan_guard_detections_total{kind=\"syn\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn text_format_names_counter_families_after_their_samples() {
        let m = Metrics::new();
        m.event(EventName::Blocked);
        let text = m.render_text();
        assert!(
            text.contains("# TYPE scan_guard_events_total counter\nscan_guard_events_total{"),
            "{text}"
        );
        assert!(
            text.contains("# HELP scan_guard_events_total Events written, by event name"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE scan_guard_controller_tick_seconds histogram"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn accept_header_picks_the_format() {
        let req = |accept: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in accept {
                h.append(ACCEPT, HeaderValue::from_static(v));
            }
            wants_text_format(&h)
        };
        assert!(req(&["text/plain; version=0.0.4"]));
        assert!(req(&["text/plain"]));
        assert!(!req(&["*/*"]));
        assert!(!req(&[]));
        // What Prometheus sends: OpenMetrics preferred.
        assert!(!req(&[
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ]));
        // The same, split over two Accept headers.
        assert!(!req(&[
            "text/plain;version=0.0.4",
            "application/openmetrics-text"
        ]));
    }

    #[test]
    fn known_counters_are_exported_at_zero_before_they_move() {
        let text = Metrics::new().render();
        for series in [
            "scan_guard_kernel_total{counter=\"events_lost\"} 0",
            "scan_guard_dropped_packets_total{reason=\"blocked\"} 0",
            "scan_guard_dropped_packets_total{reason=\"invalid_xmas\"} 0",
            "scan_guard_events_total{event=\"blocked\"} 0",
            "scan_guard_detections_total{kind=\"syn\"} 0",
            "scan_guard_detections_total{kind=\"connect\"} 0",
            "scan_guard_detections_total{kind=\"sweep\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }
}
