//! The Local API's decision stream (`GET /v1/decisions/stream`): parsing, Go
//! duration text (`3h59m58.5s`), and turning `new`/`deleted` into what the
//! controller applies. A decision that cannot be understood is logged and skipped,
//! never half-applied: nothing is blocked on a guess.

use std::{collections::HashMap, net::IpAddr};

use scan_guard_common::addr::{V4_MAPPED_PREFIX_BITS, mask};
use serde::Deserialize;
use serde_json::Value;

use crate::base::cidr::Cidr;

/// A ban to enforce until `expires_unix_s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub prefix: Cidr,
    pub expires_unix_s: u64,
    pub id: i64,
    /// Who decided, as the Local API says (`cscli`, `crowdsec`, `CAPI`, `lists`, ...).
    pub origin: String,
    pub scenario: String,
}

impl Ban {
    /// The reason stored with the block (shown by `scan-guard list`).
    pub fn reason(&self) -> String {
        format!("crowdsec #{} {}: {}", self.id, self.origin, self.scenario)
    }
}

/// One poll's worth of changes, in the order they must be applied: lifts first,
/// then bans (a prefix both deleted and new in the same answer stays blocked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The first answer of a stream (`startup=true`): the complete set of bans; a
    /// CrowdSec block not in it is stale (deleted while we were not looking).
    pub startup: bool,
    pub lifts: Vec<Cidr>,
    pub bans: Vec<Ban>,
}

/// What one answer held besides the batch, for the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Decisions we do not enforce (another type than `ban`, another scope than
    /// `Ip`/`Range`, already over).
    pub ignored: usize,
    /// Decisions that could not be understood (logged one by one).
    pub malformed: usize,
}

#[derive(Deserialize)]
struct RawDecision {
    id: Option<i64>,
    origin: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    scope: Option<String>,
    value: Option<String>,
    duration: Option<String>,
    scenario: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    #[serde(default)]
    new: Option<Vec<Value>>,
    #[serde(default)]
    deleted: Option<Vec<Value>>,
}

/// Parses a stream answer. `Err` only when the answer as a whole is not one (the
/// caller then asks for the full set again); single bad decisions are skipped.
pub fn parse_stream(body: &[u8], startup: bool, now_unix: u64) -> Result<(Batch, Tally), String> {
    let raw: RawStream = serde_json::from_slice::<Value>(body)
        .map_err(|e| e.to_string())
        .and_then(|v| match v {
            Value::Object(_) => serde_json::from_value(v).map_err(|e| e.to_string()),
            _ => Err("not an object".into()),
        })
        .map_err(|e| {
            format!(
                "the decision stream is not the expected JSON object ({e}): {}",
                preview(&String::from_utf8_lossy(body))
            )
        })?;
    let mut tally = Tally::default();
    let mut lifts = Vec::new();
    for v in raw.deleted.unwrap_or_default() {
        match parse_one(&v) {
            Ok(Some(d)) => lifts.push(d.prefix),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("crowdsec: skipping a deleted decision: {e}");
                tally.malformed += 1;
            }
        }
    }
    let mut bans: HashMap<Cidr, Ban> = HashMap::new();
    for v in raw.new.unwrap_or_default() {
        let d = match parse_one(&v) {
            Ok(Some(d)) => d,
            Ok(None) => {
                tally.ignored += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!("crowdsec: skipping a decision, nothing blocked for it: {e}");
                tally.malformed += 1;
                continue;
            }
        };
        let secs = match d.duration_ns {
            Ok(ns) if ns > 0 => (ns + 999_999_999) / 1_000_000_000,
            Ok(_) => {
                tally.ignored += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    "crowdsec: skipping decision #{} for {}, nothing blocked for it: {e}",
                    d.id,
                    d.prefix
                );
                tally.malformed += 1;
                continue;
            }
        };
        let ban = Ban {
            prefix: d.prefix,
            expires_unix_s: now_unix.saturating_add(u64::try_from(secs).unwrap_or(u64::MAX)),
            id: d.id,
            origin: d.origin,
            scenario: d.scenario,
        };
        match bans.get(&ban.prefix) {
            Some(b) if b.expires_unix_s >= ban.expires_unix_s => {}
            _ => {
                bans.insert(ban.prefix, ban);
            }
        }
    }
    lifts.sort();
    lifts.dedup();
    lifts.retain(|c| !bans.contains_key(c));
    let mut bans: Vec<Ban> = bans.into_values().collect();
    bans.sort_by_key(|a| a.prefix);
    Ok((
        Batch {
            startup,
            lifts,
            bans,
        },
        tally,
    ))
}

struct Parsed {
    prefix: Cidr,
    id: i64,
    origin: String,
    scenario: String,
    duration_ns: Result<i128, String>,
}

/// `Ok(None)`: a well-formed decision we do not enforce (type or scope).
fn parse_one(v: &Value) -> Result<Option<Parsed>, String> {
    let raw: RawDecision = serde_json::from_value(v.clone())
        .map_err(|e| format!("{e}: {}", preview(&v.to_string())))?;
    let id = raw.id.unwrap_or(0);
    let what = || format!("decision #{id} ({})", preview(&v.to_string()));
    let kind = raw
        .kind
        .as_deref()
        .ok_or_else(|| format!("{}: no type", what()))?;
    let scope = raw
        .scope
        .as_deref()
        .ok_or_else(|| format!("{}: no scope", what()))?;
    let value = raw
        .value
        .as_deref()
        .ok_or_else(|| format!("{}: no value", what()))?;
    if !kind.eq_ignore_ascii_case("ban") {
        tracing::debug!("crowdsec: decision #{id} is a {kind:?}, not a ban: not enforced at XDP");
        return Ok(None);
    }
    let prefix = match scope.to_ascii_lowercase().as_str() {
        "ip" => parse_ip(value),
        "range" => parse_range(value),
        _ => {
            tracing::debug!(
                "crowdsec: decision #{id} has scope {scope:?}: only Ip and Range are enforced"
            );
            return Ok(None);
        }
    }
    .map_err(|e| format!("{}: {e}", what()))?;
    let duration_ns = match raw.duration.as_deref() {
        Some(d) => parse_go_duration(d),
        None => Err("no duration".to_string()),
    };
    Ok(Some(Parsed {
        prefix,
        id,
        origin: raw.origin.unwrap_or_else(|| "unknown".into()),
        scenario: raw.scenario.unwrap_or_default(),
        duration_ns,
    }))
}

fn parse_addr(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))?;
    // IPv4-mapped IPv6 is IPv4, as everywhere else.
    Ok(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

/// Scope `Ip`: one address.
pub fn parse_ip(value: &str) -> Result<Cidr, String> {
    if value.contains('/') {
        return Err(format!("{value:?} is a prefix, not an address (scope Ip)"));
    }
    Ok(Cidr::host(parse_addr(value)?))
}

/// Scope `Range`: `ADDR/LEN` (host bits are cleared, as CrowdSec itself does) or a
/// bare address. `/0` is refused: it would block every address.
pub fn parse_range(value: &str) -> Result<Cidr, String> {
    let (addr, len) = match value.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let ip = parse_addr(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{value:?}: prefix length must be 0..={max}"))?,
    };
    if len == 0 {
        return Err(format!("{value:?} covers every address: refused"));
    }
    let host = Cidr::host(ip);
    let prefix_len = if ip.is_ipv4() {
        len + V4_MAPPED_PREFIX_BITS
    } else {
        len
    };
    Ok(Cidr::from_key(mask(&host.addr, prefix_len), prefix_len))
}

/// Go's `time.Duration` text (`3h59m58.5s`, `-1.5s`, `150ms`, `0s`) in
/// nanoseconds: an optional sign, then numbers (with an optional fraction), each
/// followed by one of `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let err = || format!("{text:?} is not a duration like 3h59m58.5s");
    let mut s = text.trim();
    let negative = match s.as_bytes().first() {
        Some(b'-') => {
            s = &s[1..];
            true
        }
        Some(b'+') => {
            s = &s[1..];
            false
        }
        _ => false,
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    const LIMIT: i128 = 1 << 100;
    let mut total: i128 = 0;
    while !s.is_empty() {
        let digits_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number = &s[..digits_end];
        s = &s[digits_end..];
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return Err(err());
        }
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit: i128 = match &s[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(err()),
        };
        s = &s[unit_end..];
        let int: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 24 {
            return Err(err());
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut value = int.checked_mul(unit).ok_or_else(err)?;
        // Fraction digits beyond nanosecond precision change nothing.
        let frac: String = frac_part.chars().take(18).collect();
        if !frac.is_empty() {
            let f: i128 = frac.parse().map_err(|_| err())?;
            value += f * unit / 10i128.pow(frac.len() as u32);
        }
        total = total
            .checked_add(value)
            .filter(|t| *t < LIMIT)
            .ok_or_else(err)?;
    }
    Ok(if negative { -total } else { total })
}

/// The first 160 characters of `s`, for log lines.
fn preview(s: &str) -> String {
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("3h59m58.5s").unwrap(),
            (3 * 3600 + 59 * 60 + 58) * S + S / 2
        );
        assert_eq!(
            parse_go_duration("59m56.176304514s").unwrap(),
            3596 * S + 176_304_514
        );
        assert_eq!(parse_go_duration("4h0m0s").unwrap(), 4 * 3600 * S);
        assert_eq!(parse_go_duration("1.5ms").unwrap(), 1_500_000);
        assert_eq!(parse_go_duration("250µs").unwrap(), 250_000);
        assert_eq!(parse_go_duration("250us").unwrap(), 250_000);
        assert_eq!(parse_go_duration("17ns").unwrap(), 17);
        assert_eq!(parse_go_duration("0s").unwrap(), 0);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert_eq!(parse_go_duration("-2.5s").unwrap(), -5 * S / 2);
        assert_eq!(parse_go_duration(".5s").unwrap(), S / 2);
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s").unwrap(),
            i64::MAX as i128
        );
        for bad in [
            "", "-", "5", "1d", "h", "1.2.3s", "3h 5m", "1e3s", "abc", "10 s", "s5", ".",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_go_duration(&"9".repeat(40)).is_err());
        assert!(parse_go_duration(&format!("{}h", "9".repeat(24))).is_err());
    }

    #[test]
    fn values() {
        assert_eq!(parse_ip("10.200.1.1").unwrap().to_string(), "10.200.1.1");
        assert_eq!(parse_ip("::ffff:10.0.0.1").unwrap().to_string(), "10.0.0.1");
        assert_eq!(parse_ip("fd00:200::1").unwrap().to_string(), "fd00:200::1");
        assert!(parse_ip("10.0.0.0/24").is_err());
        assert!(parse_ip("10.0.0.256").is_err());
        assert_eq!(
            parse_range("10.200.1.0/31").unwrap().to_string(),
            "10.200.1.0/31"
        );
        assert_eq!(
            parse_range("10.200.1.7/24").unwrap().to_string(),
            "10.200.1.0/24"
        );
        assert_eq!(
            parse_range("fd00:200::5/64").unwrap().to_string(),
            "fd00:200::/64"
        );
        assert_eq!(parse_range("192.0.2.1").unwrap().to_string(), "192.0.2.1");
        assert!(parse_range("0.0.0.0/0").is_err());
        assert!(parse_range("::/0").is_err());
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("10.0.0.0/x").is_err());
    }

    #[test]
    fn streams() {
        let body = br#"{"deleted":[
            {"duration":"-1s","id":1,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"10.0.0.1"},
            {"duration":"-1s","id":2,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"10.0.0.2"},
            {"duration":"-1s","id":3,"origin":"cscli","scenario":"x","scope":"Ip","type":"captcha","value":"10.0.0.3"}],
          "new":[
            {"duration":"59m56.5s","id":4,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"10.0.0.2"},
            {"duration":"1h","id":5,"origin":"crowdsec","scenario":"ssh-bf","scope":"Range","type":"ban","value":"fd00:200::/64"},
            {"duration":"2h","id":6,"origin":"crowdsec","scenario":"ssh-bf","scope":"range","type":"ban","value":"fd00:200::9/64"},
            {"duration":"1h","id":7,"origin":"CAPI","scenario":"s","scope":"Ip","type":"captcha","value":"10.0.0.9"},
            {"duration":"1h","id":8,"origin":"CAPI","scenario":"s","scope":"Country","type":"ban","value":"FR"},
            {"duration":"1h","id":9,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"not-an-ip"},
            {"duration":"forever","id":10,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"10.0.0.10"},
            {"duration":"-3s","id":11,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"10.0.0.11"},
            {"id":12,"origin":"cscli","scope":"Ip","type":"ban","value":"10.0.0.12"},
            {"duration":"1h","id":13,"origin":"cscli","scenario":"s","scope":"Range","type":"ban","value":"0.0.0.0/0"},
            "garbage",
            {"duration":"1h","id":14,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban"}
          ]}"#;
        let (b, t) = parse_stream(body, true, 1000).unwrap();
        assert!(b.startup);
        // 10.0.0.2 is deleted and new: it stays; the captcha deletion lifts nothing.
        assert_eq!(b.lifts, vec![parse_ip("10.0.0.1").unwrap()]);
        assert_eq!(b.bans.len(), 2, "{:?}", b.bans);
        let v4 = &b.bans[0];
        assert_eq!(v4.prefix.to_string(), "10.0.0.2");
        assert_eq!(v4.expires_unix_s, 1000 + 3597);
        assert_eq!(v4.reason(), "crowdsec #4 cscli: manual");
        // Two decisions for one range: the longer one.
        let v6 = &b.bans[1];
        assert_eq!(v6.prefix.to_string(), "fd00:200::/64");
        assert_eq!((v6.id, v6.expires_unix_s), (6, 1000 + 7200));
        assert_eq!(t.ignored, 3, "captcha, country, over");
        assert_eq!(
            t.malformed, 6,
            "bad ip, bad duration, no duration, /0, not an object, no value"
        );

        let (b, t) = parse_stream(br#"{"deleted":null,"new":null}"#, false, 1).unwrap();
        assert_eq!((b, t), (Batch::default(), Tally::default()));
        assert!(parse_stream(b"[]", false, 1).is_err());
        assert!(parse_stream(b"<html>", false, 1).is_err());
    }
}
