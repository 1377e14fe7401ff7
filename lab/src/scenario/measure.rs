//! Running one attack and measuring what the target saw.
//!
//! Two captures per attack, both filtered on the attack's source address: one on
//! the attacker's veth (everything it sent) and one on the target's veth, where
//! the XDP program runs first: packets it drops never reach tcpdump there. A probe
//! sent and captured at the attacker but never seen at the target was dropped. The
//! IP bytes of a packet are identical at both ends (a bridge does not route), which
//! matches the two.
//!
//! - probes that reached the target: the attack's probes in the target capture;
//! - time to block: from the first probe sent to the first probe dropped, for
//!   probes the program passes until their source is blocked (microseconds from
//!   the captures); for invalid-flag probes (dropped whatever the source) from the
//!   first probe to the `blocked` event's timestamp (which comes from the kernel's
//!   coarse clock: a few milliseconds' resolution);
//! - leaked: probes that reached the target after the block.

use std::{
    collections::HashSet,
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use serde_json::Value;

use super::{
    attacks::Attack,
    interrupt::{self, Interrupted},
    stage::Stage,
};
use crate::{
    lab::{event_name, read_lossy},
    pcap,
};

/// Targets from the issue: a fast scan is blocked after at most this many probes
/// reached the target ...
pub const FAST_PROBES: usize = 12;
/// ... and within this many milliseconds of its first probe;
pub const FAST_MS: f64 = 50.0;
/// a slow scan after at most this many probes.
pub const SLOW_PROBES: usize = 10;

/// Cap on each capture (floods are stopped right after the block anyway).
const CAPTURE_CAP: u32 = 200_000;

/// What one attack did and what scan-guard made of it.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub name: String,
    pub command: String,
    pub source: String,
    pub decoys: Vec<String>,
    /// A `scan_detected` event about the source.
    pub detected: bool,
    /// The kind of the `blocked` event (else of the first detection).
    pub kind: Option<String>,
    pub expected_kinds: Vec<String>,
    pub kind_ok: bool,
    /// Who blocked (`kernel` or `detector`) and the rule that fired.
    pub origin: Option<String>,
    pub rule: Option<String>,
    /// A `blocked` event about the source, and the source in `scan-guard list`.
    pub blocked: bool,
    pub listed: bool,
    /// Probes captured leaving the attacker (the capture may be capped for floods).
    pub probes_sent: usize,
    /// Probes that reached the target's interface (all of them before the block,
    /// unless `leaked_after_block` says otherwise).
    pub probes_reached_target: usize,
    pub leaked_after_block: usize,
    /// Milliseconds from the first probe to the block; how it was measured.
    pub time_to_block_ms: Option<f64>,
    pub time_method: &'static str,
    /// From the first probe to the `blocked` event's timestamp (coarse clock).
    pub event_time_to_block_ms: Option<f64>,
    /// Decoys the controller blocked too (they did scan, as far as it can tell).
    pub decoys_blocked: usize,
    pub slow: bool,
    /// Expected to be dropped at the NIC without detection (see `Attack`).
    pub dropped_at_nic: bool,
    /// Whether the targets were met (probes and, for fast scans, time).
    pub meets_probe_target: bool,
    pub meets_time_target: bool,
    /// Wall time of the whole attack step, seconds.
    pub wall_s: f64,
    /// Anything odd (tool failures, capture drops).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Detected with an expected kind and blocked: what the scenarios require.
    pub fn correct(&self) -> bool {
        if self.dropped_at_nic {
            return self.probes_reached_target == 0;
        }
        self.detected && self.blocked && self.listed && self.kind_ok
    }
}

/// Progress callback: short lines for live output.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Runs `attack` from a fresh source and measures it. Returns `Err` only when
/// interrupted (the caller then tears the lab down).
pub fn run(stage: &Stage, attack: &Attack, progress: Progress<'_>) -> Result<Outcome, Interrupted> {
    let t0 = Instant::now();
    let lab = &stage.lab;
    let src = stage.fresh_source(attack.family);
    let decoys = stage.fresh_decoys(attack.decoys);
    let argv = attack.argv(&stage.target, src, &decoys);
    let filter = format!("src host {src}");
    let att_cap = lab.start_capture_where(&lab.att.ns, &lab.att.iface, &filter, CAPTURE_CAP);
    let tgt_cap = lab.start_capture_where(&lab.tgt.ns, &lab.tgt.iface, &filter, CAPTURE_CAP);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let log = lab.file("attack", "log");
    let proc = lab.spawn_in(&lab.att.ns, &args, &log);
    let src_s = src.to_string();
    let mut notes = Vec::new();

    // Until the block (or the tool ended and a grace period passed, or a bound).
    let limit = if attack.slow {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(30)
    };
    let grace = if attack.slow {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(3)
    };
    let mut ended: Option<Instant> = None;
    let blocked_event = loop {
        if let Err(e) = interrupt::check() {
            lab.terminate(proc, Duration::from_secs(5));
            return Err(e);
        }
        if let Some(e) = stage
            .ctl
            .events()
            .into_iter()
            .find(|e| event_name(e) == "blocked" && e["src"] == src_s.as_str())
        {
            break Some(e);
        }
        stage
            .lab
            .assert_running(&stage.ctl, &format!("during {}", attack.name));
        if ended.is_none() {
            if let Some(s) = lab.try_status(proc) {
                if !s.success() {
                    notes.push(format!(
                        "{} exited with {s} before any block: {}",
                        argv[0],
                        tail(&read_lossy(&log), 3)
                    ));
                }
                ended = Some(Instant::now());
            }
        }
        if ended.is_some_and(|t| t.elapsed() >= grace) || t0.elapsed() >= limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if blocked_event.is_some() {
        progress(&format!(
            "blocked after {:.1} s; letting the scanner run on briefly",
            t0.elapsed().as_secs_f64()
        ));
        // Lets the scanner send on into the block, so the first dropped probe shows
        // in the captures.
        interrupt::sleep(Duration::from_millis(400)).inspect_err(|_| {
            lab.terminate(proc, Duration::from_secs(5));
        })?;
    }
    lab.signal(proc, libc::SIGINT);
    if lab.wait_for(proc, Duration::from_secs(3)).is_none() {
        lab.terminate(proc, Duration::from_secs(5));
    }
    let (att_bytes, att_log) = lab.stop_capture_raw(&att_cap, Duration::from_millis(100));
    let (tgt_bytes, tgt_log) = lab.stop_capture_raw(&tgt_cap, Duration::ZERO);
    for (side, l) in [("attacker", &att_log), ("target", &tgt_log)] {
        if let Some(line) = l.lines().find(|l| l.contains("dropped by kernel")) {
            if !line.trim().starts_with('0') {
                notes.push(format!("{side} capture: {}", line.trim()));
            }
        }
    }
    let att_pkts = pcap::read(&att_bytes).unwrap_or_else(|e| panic!("attacker capture: {e}"));
    let tgt_pkts = pcap::read(&tgt_bytes).unwrap_or_else(|e| panic!("target capture: {e}"));
    let targets: HashSet<IpAddr> = stage.target.addrs_of(attack).into_iter().collect();
    let is_probe =
        |p: &&pcap::Packet| p.src == src && targets.contains(&p.dst) && attack.probe.matches(p);
    let sent: Vec<&pcap::Packet> = att_pkts.iter().filter(is_probe).collect();
    let reached: Vec<&pcap::Packet> = tgt_pkts.iter().filter(is_probe).collect();
    let reached_bytes: HashSet<&[u8]> = reached.iter().map(|p| p.ip.as_slice()).collect();
    let first_ts = sent
        .first()
        .map(|p| p.ts)
        .or_else(|| reached.first().map(|p| p.ts));

    let events = stage.ctl.events();
    let about = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| event_name(e) == name && e["src"] == src_s.as_str())
            .collect()
    };
    let detections = about("scan_detected");
    let blocked = about("blocked");
    let block = blocked.first().copied();
    let event_ts = block.and_then(|e| e["ts"].as_str()).and_then(parse_rfc3339);
    let event_ms = match (event_ts, first_ts) {
        (Some(b), Some(f)) => Some((b - f) * 1000.0),
        _ => None,
    };

    // The block as the captures saw it: the first probe sent that never arrived,
    // after at least one that did (probes that pass until their source is blocked).
    let first_dropped = if attack.probe.passes_until_blocked() && block.is_some() {
        sent.iter()
            .position(|p| !reached_bytes.contains(p.ip.as_slice()))
            .filter(|&i| i > 0 || reached.is_empty())
    } else {
        None
    };
    let (time_ms, method, leaked) = match (first_dropped, first_ts) {
        (Some(i), Some(f)) => {
            let leaked = sent[i..]
                .iter()
                .filter(|p| reached_bytes.contains(p.ip.as_slice()))
                .count();
            (Some((sent[i].ts - f) * 1000.0), "capture", leaked)
        }
        _ => {
            // Probes reaching the target more than one clock tick after the event.
            let leaked =
                event_ts.map_or(0, |b| reached.iter().filter(|p| p.ts > b + 0.005).count());
            (event_ms.map(|m| m.max(0.0)), "event", leaked)
        }
    };
    let time_ms = if block.is_some() { time_ms } else { None };
    let kind = block
        .or(detections.first().copied())
        .and_then(|e| e["kind"].as_str())
        .map(str::to_owned);
    let kind_ok = kind.as_deref().is_some_and(|k| attack.kinds.contains(&k));
    // Who blocked, and by which rule (the kernel's threshold and the controller's
    // slow-scan test may both fire on the same probe).
    let decider = block.or(detections.first().copied());
    let origin = decider
        .and_then(|e| e["origin"].as_str())
        .map(str::to_owned);
    let rule = decider
        .and_then(|e| e["evidence"]["rule"].as_str())
        .map(str::to_owned);
    let listed = block.is_some() && stage.ctl.listed(&src_s).is_some();
    let decoys_blocked = decoys
        .iter()
        .filter(|d| {
            events
                .iter()
                .any(|e| event_name(e) == "blocked" && e["src"] == d.to_string().as_str())
        })
        .count();
    let probes_reached_target = reached.len();
    let probe_target = if attack.slow {
        SLOW_PROBES
    } else {
        FAST_PROBES
    };
    Ok(Outcome {
        name: attack.name.clone(),
        command: argv.join(" "),
        source: src_s,
        decoys: decoys.iter().map(IpAddr::to_string).collect(),
        detected: !detections.is_empty(),
        kind,
        expected_kinds: attack.kinds.iter().map(|k| (*k).to_owned()).collect(),
        kind_ok,
        origin,
        rule,
        blocked: block.is_some(),
        listed,
        probes_sent: sent.len(),
        probes_reached_target,
        leaked_after_block: leaked,
        time_to_block_ms: time_ms,
        time_method: method,
        event_time_to_block_ms: event_ms,
        decoys_blocked,
        slow: attack.slow,
        dropped_at_nic: attack.dropped_at_nic,
        meets_probe_target: (block.is_some() || attack.dropped_at_nic)
            && probes_reached_target <= probe_target,
        meets_time_target: attack.slow || time_ms.is_some_and(|t| t <= FAST_MS),
        wall_s: t0.elapsed().as_secs_f64(),
        notes,
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as the events write it
/// (`2026-11-27T06:42:00.883216Z`).
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse::<f64>().ok()?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-27T06:42:00.883216Z").expect("parses");
        // date -u -d 2026-11-27T06:42:00Z +%s
        assert!((t - 1_795_761_720.883_216).abs() < 1e-6, "{t}");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert!(parse_rfc3339("garbage").is_none());
    }
}
