//! Events as JSON lines: one object per line, for people (`jq`) and pipelines.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use scan_guard_common::{
    config::KernelConfig,
    event::ScanEvent,
    flags::{PROBE_KINDS, ProbeKind},
    state::Trigger,
};
use serde::Serialize;

use crate::clock;

/// Human-facing address text (IPv4 for mapped addresses).
pub fn addr_text(addr: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// The evidence that fired.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub rule: &'static str,
    pub score: u32,
    pub score_threshold: u32,
    pub distinct_ports: u16,
    pub distinct_addrs: u16,
    pub sweep_threshold: u32,
    pub window_s: f64,
    pub flags_or: u8,
    pub flags_and: u8,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub ts: String,
    pub event: &'static str,
    pub src: String,
    pub kind: &'static str,
    pub ports: Vec<u16>,
    pub probes: u32,
    pub probes_by_kind: serde_json::Map<String, serde_json::Value>,
    pub score: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    pub origin: &'static str,
    pub evidence: Evidence,
}

/// What the source is doing, from its probe mix: the dominant kind, or `mixed`
/// when no kind makes up at least three quarters of the probes.
pub fn classify(ev: &ScanEvent) -> &'static str {
    if Trigger::from_u8(ev.trigger) == Some(Trigger::Sweep) {
        return "sweep";
    }
    let total: u64 = ev.probes.iter().map(|p| u64::from(*p)).sum();
    let Some((idx, top)) = ev.probes.iter().enumerate().max_by_key(|(_, p)| **p) else {
        return "mixed";
    };
    if total == 0 || u64::from(*top) * 4 < total * 3 {
        return "mixed";
    }
    match ProbeKind::from_u8(idx as u8) {
        Some(ProbeKind::IcmpEcho) => "sweep",
        Some(k) => k.name(),
        None => "mixed",
    }
}

/// The records a kernel event becomes: `scan_detected`, plus `blocked` when the
/// kernel blocked the source on the spot.
pub fn records(ev: &ScanEvent, cfg: &KernelConfig) -> Vec<EventRecord> {
    let kind = classify(ev);
    let mut by_kind = serde_json::Map::new();
    for (i, n) in ev.probes.iter().enumerate().take(PROBE_KINDS) {
        if *n > 0 {
            if let Some(k) = ProbeKind::from_u8(i as u8) {
                by_kind.insert(k.name().to_string(), (*n).into());
            }
        }
    }
    let evidence = Evidence {
        rule: Trigger::from_u8(ev.trigger).map_or("unknown", Trigger::name),
        score: ev.score,
        score_threshold: cfg.score_threshold,
        distinct_ports: ev.distinct_ports,
        distinct_addrs: ev.distinct_addrs,
        sweep_threshold: cfg.sweep_threshold,
        window_s: cfg.window_ns as f64 / 1e9,
        flags_or: ev.flags_or,
        flags_and: ev.flags_and,
    };
    let base = EventRecord {
        ts: clock::rfc3339(clock::to_wall(ev.ts_ns)),
        event: "scan_detected",
        src: addr_text(&ev.src),
        kind,
        ports: ev.ports().to_vec(),
        probes: ev.probes.iter().fold(0u32, |a, p| a.saturating_add(*p)),
        probes_by_kind: by_kind,
        score: ev.score,
        ttl_s: None,
        origin: "kernel",
        evidence,
    };
    let mut out = vec![base.clone()];
    if ev.blocked != 0 {
        out.push(EventRecord {
            event: "blocked",
            ttl_s: (cfg.block_ttl_ns != 0).then_some(cfg.block_ttl_ns / 1_000_000_000),
            ..base
        });
    }
    out
}

/// Where events go.
pub enum EventSink {
    Stdout,
    File(PathBuf, std::fs::File),
}

impl EventSink {
    /// `-` is standard output; anything else a file opened for appending.
    pub fn open(spec: &Path) -> Result<Self> {
        if spec == Path::new("-") {
            return Ok(Self::Stdout);
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec)
            .with_context(|| format!("opening events file {}", spec.display()))?;
        Ok(Self::File(spec.to_path_buf(), f))
    }

    /// Writes one line and flushes it, so nothing is lost if we are killed.
    pub fn write(&mut self, rec: &EventRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec).context("serialising event")?;
        line.push('\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .context("writing event to stdout")
            }
            Self::File(path, f) => f
                .write_all(line.as_bytes())
                .and_then(|()| f.flush())
                .with_context(|| format!("writing event to {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use scan_guard_common::{addr::from_v4, state::SourceState};

    use super::*;

    fn event(probes: [u32; PROBE_KINDS], trigger: Trigger, blocked: bool) -> ScanEvent {
        let mut st = SourceState::new(crate::clock::monotonic_ns());
        st.probes = probes;
        st.score = 24;
        st.port_samples[0] = 22;
        st.sample_count = 1;
        ScanEvent::from_state(
            st.first_seen_ns,
            &from_v4([10, 9, 0, 2]),
            &from_v4([10, 9, 0, 1]),
            &st,
            trigger,
            0,
            blocked,
            0,
        )
    }

    #[test]
    fn dominant_kind_names_the_scan() {
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Xmas as usize] = 10;
        p[ProbeKind::Syn as usize] = 1;
        assert_eq!(classify(&event(p, Trigger::Score, false)), "xmas");
        p[ProbeKind::Syn as usize] = 10;
        assert_eq!(classify(&event(p, Trigger::Score, false)), "mixed");
        assert_eq!(classify(&event(p, Trigger::Sweep, false)), "sweep");
    }

    #[test]
    fn blocked_event_adds_a_blocked_record_with_ttl() {
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Syn as usize] = 6;
        let recs = records(&event(p, Trigger::Score, true), &KernelConfig::default());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].event, "scan_detected");
        assert_eq!(recs[1].event, "blocked");
        assert_eq!(recs[1].ttl_s, Some(600));
        assert_eq!(recs[0].src, "10.9.0.2");
        assert_eq!(recs[0].kind, "syn");
        assert_eq!(recs[0].ports, vec![22]);
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&recs[1]).unwrap()).unwrap();
        for key in [
            "ts", "event", "src", "kind", "ports", "probes", "score", "ttl_s", "evidence",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
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
