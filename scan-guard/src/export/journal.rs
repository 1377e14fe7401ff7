//! systemd-journald's native protocol: one datagram per entry to
//! `/run/systemd/journal/socket`, holding `FIELD=value` lines. A value with a
//! newline in it goes in the binary form (name, newline, little-endian 64-bit
//! length, the bytes, newline). Events sent this way keep their JSON text as
//! `MESSAGE` and carry their main keys as fields of their own, so
//! `journalctl SCAN_GUARD_SRC=192.0.2.7` finds them without parsing.

use scan_guard_common::{state::BlockOrigin, vocab::kind_name};

use crate::export::events::EventRecord;

/// Where journald listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Severity notice, as the syslog output uses.
const PRIORITY: &str = "5";
/// Facility daemon.
const FACILITY: &str = "3";

/// One journal entry for `rec`, whose JSON text is `json` (no newline).
pub fn entry(rec: &EventRecord, json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 256);
    field(&mut out, "MESSAGE", json);
    field(&mut out, "PRIORITY", PRIORITY);
    field(&mut out, "SYSLOG_FACILITY", FACILITY);
    field(&mut out, "SYSLOG_IDENTIFIER", "scan-guard");
    field(&mut out, "SYSLOG_PID", &std::process::id().to_string());
    field(&mut out, "SCAN_GUARD_EVENT", rec.event.name());
    field(&mut out, "SCAN_GUARD_SRC", &rec.src);
    field(
        &mut out,
        "SCAN_GUARD_ORIGIN",
        rec.origin.map_or("unknown", BlockOrigin::name),
    );
    field(&mut out, "SCAN_GUARD_KIND", kind_name(rec.kind));
    if let Some(reason) = &rec.reason {
        field(&mut out, "SCAN_GUARD_REASON", reason);
    }
    out
}

/// Appends one field; `name` is one of ours (upper case, digits, underscores).
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        // A reason given on the command line may span lines.
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// Reads an entry back into (name, value) pairs, as journald does.
#[cfg(test)]
fn parse(mut data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'=' || b == b'\n')?;
        let name = String::from_utf8(data[..end].to_vec()).ok()?;
        let (value, rest) = if data[end] == b'=' {
            let tail = &data[end + 1..];
            let nl = tail.iter().position(|&b| b == b'\n')?;
            (&tail[..nl], &tail[nl + 1..])
        } else {
            let tail = &data[end + 1..];
            let len = u64::from_le_bytes(tail.get(..8)?.try_into().ok()?) as usize;
            let value = tail.get(8..8 + len)?;
            if tail.get(8 + len) != Some(&b'\n') {
                return None;
            }
            (value, &tail[9 + len..])
        };
        fields.push((name, String::from_utf8(value.to_vec()).ok()?));
        data = rest;
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reason: Option<&str>) -> EventRecord {
        EventRecord {
            ts: "2026-11-27T09:00:00Z".into(),
            event: scan_guard_common::vocab::EventName::Blocked,
            src: "192.0.2.7".into(),
            kind: Some(scan_guard_common::vocab::ScanKind::Syn),
            ports: vec![22],
            probes: 6,
            probes_by_kind: serde_json::Map::new(),
            score: 9,
            ttl_s: None,
            expires: None,
            offences: None,
            reason: reason.map(str::to_owned),
            origin: Some(BlockOrigin::Detector),
            sources: Vec::new(),
            evidence: serde_json::Value::Null,
        }
    }

    #[test]
    fn fields_round_trip_with_a_multi_line_value() {
        let rec = record(Some("first line\nsecond line"));
        let fields = parse(&entry(&rec, "{\"event\":\"blocked\"}")).unwrap();
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MESSAGE"), Some("{\"event\":\"blocked\"}"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("scan-guard"));
        assert_eq!(get("PRIORITY"), Some("5"));
        assert_eq!(get("SCAN_GUARD_EVENT"), Some("blocked"));
        assert_eq!(get("SCAN_GUARD_SRC"), Some("192.0.2.7"));
        assert_eq!(get("SCAN_GUARD_KIND"), Some("syn"));
        assert_eq!(get("SCAN_GUARD_REASON"), Some("first line\nsecond line"));
    }

    #[test]
    fn no_reason_no_field() {
        let fields = parse(&entry(&record(None), "{}")).unwrap();
        assert!(fields.iter().all(|(n, _)| n != "SCAN_GUARD_REASON"));
    }
}
