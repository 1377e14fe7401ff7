//! Events as JSON lines: one object per line, for people (`jq`) and pipelines.
//! The schema is documented in docs/events.md; where they go is `sinks`.

use std::time::Duration;

use scan_guard_common::{
    config::KernelConfig,
    event::ScanEvent,
    flags::{PROBE_KINDS, ProbeKind},
    meta::{BlockMeta, MetaKey},
    state::{BlockOrigin, Trigger},
    vocab::{EventName, ScanKind, kind_name},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    base::clock,
    detect::{
        classify::classify_event,
        correlate::DistributedHint,
        slow_scan::{SlowScan, SlowScanFinding},
    },
    enforce::enforcer::cidr_of,
};

/// Human-facing address text (IPv4 for mapped addresses).
pub fn addr_text(addr: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub ts: String,
    pub event: EventName,
    pub src: String,
    #[serde(serialize_with = "kind_text")]
    pub kind: Option<ScanKind>,
    pub ports: Vec<u16>,
    pub probes: u32,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub probes_by_kind: serde_json::Map<String, Value>,
    pub score: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offences: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(serialize_with = "origin_text")]
    pub origin: Option<BlockOrigin>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub evidence: Value,
}

/// `-` for no kind (a manual block), as docs/events.md says.
fn kind_text<S: serde::Serializer>(k: &Option<ScanKind>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind_name(*k))
}

/// `unknown` for a record whose origin byte this version does not know.
fn origin_text<S: serde::Serializer>(o: &Option<BlockOrigin>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.map_or("unknown", BlockOrigin::name))
}

impl EventRecord {
    fn base(
        event: EventName,
        src: String,
        kind: Option<ScanKind>,
        origin: Option<BlockOrigin>,
        evidence: Value,
    ) -> Self {
        Self {
            ts: clock::rfc3339(std::time::SystemTime::now()),
            event,
            src,
            kind,
            ports: Vec::new(),
            probes: 0,
            probes_by_kind: serde_json::Map::new(),
            score: 0,
            ttl_s: None,
            expires: None,
            offences: None,
            reason: None,
            origin,
            sources: Vec::new(),
            evidence,
        }
    }

    /// The same facts under another event name (e.g. `scan_detected` -> `blocked`).
    pub fn as_event(&self, event: EventName) -> Self {
        Self {
            event,
            ..self.clone()
        }
    }

    /// Adds the block lifetime (and the resulting end time).
    pub fn with_ttl(mut self, ttl: Option<Duration>, offences: Option<u32>) -> Self {
        if let Some(t) = ttl {
            self.ttl_s = Some(t.as_secs());
            self.expires = Some(clock::rfc3339_unix(clock::unix_now() + t.as_secs()));
        }
        self.offences = offences;
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// A kernel threshold crossing.
    pub fn from_kernel(ev: &ScanEvent, cfg: &KernelConfig) -> Self {
        let trigger = Trigger::from_u8(ev.trigger);
        let evidence = json!({
            "rule": trigger.map_or("unknown", Trigger::name),
            "score": ev.score,
            "score_threshold": cfg.score_threshold,
            "distinct_ports": ev.distinct_ports,
            "distinct_addrs": ev.distinct_addrs,
            "sweep_threshold": cfg.sweep_threshold,
            "window_s": cfg.window_ns as f64 / 1e9,
            "flags_or": ev.flags_or,
            "flags_and": ev.flags_and,
            "os_stack_syns": ev.os_syns,
        });
        let mut rec = Self::base(
            EventName::ScanDetected,
            crate::base::cidr::Cidr::from_key(ev.src, ev.src_prefix_len()).to_string(),
            Some(classify_event(ev)),
            Some(BlockOrigin::Kernel),
            evidence,
        );
        rec.ts = clock::rfc3339(clock::to_wall(ev.ts_ns));
        rec.ports = ev.ports().to_vec();
        rec.probes = ev.probes.iter().fold(0u32, |a, p| a.saturating_add(*p));
        rec.probes_by_kind = by_kind(&ev.probes);
        rec.score = ev.score;
        rec
    }

    /// A slow scan found by the sequential test.
    pub fn from_slow_scan(f: &SlowScanFinding, cfg: &SlowScan) -> Self {
        let evidence = json!({
            "rule": "trw",
            "likelihood_ratio": f.likelihood_ratio,
            "threshold": cfg.threshold,
            "failures": f.failures,
            "successes": f.successes,
            "benign_success": cfg.benign_success,
            "scanner_success": cfg.scanner_success,
        });
        let mut rec = Self::base(
            EventName::ScanDetected,
            crate::base::cidr::Cidr::from_key(f.src, f.src_prefix).to_string(),
            Some(f.kind),
            Some(BlockOrigin::Detector),
            evidence,
        );
        rec.ports = f.ports.clone();
        rec.probes = f.failures + f.successes;
        rec
    }

    /// A block record that ended or was lifted, or one that another process added.
    pub fn from_meta(event: EventName, key: &MetaKey, m: &BlockMeta) -> Self {
        let mut rec = Self::base(
            event,
            cidr_of(key).to_string(),
            ScanKind::from_code(m.kind),
            BlockOrigin::from_u8(m.origin),
            json!({"rule": "block_record"}),
        );
        rec.offences = Some(m.offences);
        if !m.reason().is_empty() {
            rec.reason = Some(m.reason().to_string());
        }
        if m.expires_unix_s != 0 {
            rec.expires = Some(clock::rfc3339_unix(m.expires_unix_s));
            rec.ttl_s = Some(m.expires_unix_s.saturating_sub(m.since_unix_s));
        }
        rec
    }

    /// Several sources with one port pattern (reported, never blocked by itself).
    pub fn from_hint(h: &DistributedHint) -> Self {
        let evidence = json!({
            "rule": "same_port_pattern",
            "min_sources": h.min_sources,
            "window_s": h.window_ns / 1_000_000_000,
        });
        let mut rec = Self::base(
            EventName::DistributedScan,
            addr_text(&h.sources[0]),
            Some(ScanKind::Distributed),
            Some(BlockOrigin::Detector),
            evidence,
        );
        rec.ports = h.ports.clone();
        rec.sources = h.sources.iter().map(addr_text).collect();
        rec
    }
}

fn by_kind(probes: &[u32; PROBE_KINDS]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (i, n) in probes.iter().enumerate() {
        if *n > 0 {
            if let Some(k) = ProbeKind::from_u8(i as u8) {
                m.insert(k.name().to_string(), (*n).into());
            }
        }
    }
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use scan_guard_common::{addr::from_v4, state::SourceState};

    use super::*;

    pub(crate) fn event(probes: [u32; PROBE_KINDS], blocked: bool) -> ScanEvent {
        let mut st = SourceState::new(crate::base::clock::monotonic_ns());
        st.probes = probes;
        st.score = 24;
        st.port_samples[0] = 22;
        st.sample_count = 1;
        ScanEvent::from_state(
            st.first_seen_ns,
            &from_v4([10, 9, 0, 2]),
            &from_v4([10, 9, 0, 1]),
            &st,
            Trigger::Score,
            0,
            blocked,
            0,
        )
    }

    #[test]
    fn kernel_event_has_the_documented_fields() {
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Syn as usize] = 6;
        let rec = EventRecord::from_kernel(&event(p, true), &KernelConfig::default());
        assert_eq!(rec.event, EventName::ScanDetected);
        assert_eq!(rec.src, "10.9.0.2");
        assert_eq!(rec.kind, Some(ScanKind::Syn));
        assert_eq!(rec.ports, vec![22]);
        let blocked = rec
            .as_event(EventName::Blocked)
            .with_ttl(Some(Duration::from_secs(600)), Some(1));
        let json: Value = serde_json::from_str(&serde_json::to_string(&blocked).unwrap()).unwrap();
        for key in [
            "ts", "event", "src", "kind", "ports", "probes", "score", "ttl_s", "evidence",
            "expires",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["evidence"]["rule"], "port_score");
        // The vocabulary leaves as the documented strings.
        assert_eq!(json["event"], "blocked");
        assert_eq!(json["kind"], "syn");
        assert_eq!(json["origin"], "kernel");
        assert_eq!(json["ttl_s"], 600);
        assert!(json["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn ipv6_addresses_print_as_ipv6() {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = 2;
        assert_eq!(addr_text(&a), "fd00::2");
        assert_eq!(addr_text(&from_v4([192, 0, 2, 1])), "192.0.2.1");
    }
}
