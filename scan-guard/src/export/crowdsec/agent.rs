//! Agent mode: our own blocks (scan detections by the kernel or the controller)
//! go to the Local API as alerts carrying a ban decision, so the bouncers of every
//! other host block the scanner too.
//!
//! Logs in as a machine (`POST /v1/watchers/login` -> JWT), then `POST /v1/alerts`.
//! With a TLS client certificate (empty machine id) the login carries no
//! credentials: the Local API names the machine after the certificate's CN.
//! A Local API that is down, restarting or refusing the credentials is logged and
//! retried with a growing delay; alerts wait meanwhile (at most
//! [`MAX_PENDING`], the oldest dropped first, with a log line).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    health::Health,
    lapi::{Client, HttpError},
};
use crate::base::cidr::format_duration;

/// The scenario name our alerts and decisions carry.
pub const SCENARIO: &str = "scan-guard/port-scan";
/// Alerts kept while the Local API cannot take them.
pub const MAX_PENDING: usize = 1000;
/// Alerts per request.
const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// What an alert is made of: the facts of one `blocked` event.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertInfo {
    /// RFC 3339 time of the block.
    pub ts: String,
    /// Address (`Ip`) or prefix (`Range`, prefix aggregation).
    pub src: String,
    pub kind: String,
    pub ports: Vec<u16>,
    pub probes: u32,
    pub score: u32,
    /// Our block's lifetime; the decision gets the same.
    pub ttl_s: Option<u64>,
    pub reason: Option<String>,
    /// `kernel` or `detector`.
    pub origin: String,
}

/// The `POST /v1/alerts` item for `a` (schema: the Local API's swagger, `Alert`).
pub fn alert_json(a: &AlertInfo, host: &str) -> Value {
    let range = a.src.contains('/');
    let scope = if range { "Range" } else { "Ip" };
    let source = if range {
        json!({"scope": scope, "value": a.src, "range": a.src})
    } else {
        json!({"scope": scope, "value": a.src, "ip": a.src})
    };
    // Without a lifetime (never ends here) the decision still needs one.
    let duration = format!("{}s", a.ttl_s.filter(|t| *t > 0).unwrap_or(4 * 3600));
    let ports = a
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let reason = a.reason.clone().unwrap_or_default();
    let message = format!(
        "{} {} blocked by scan-guard on {host}: {} scan, {} probes, ports [{ports}]{}",
        scope,
        a.src,
        a.kind,
        a.probes,
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    );
    let meta = |pairs: &[(&str, String)]| -> Value {
        Value::Array(
            pairs
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
        )
    };
    json!({
        "scenario": SCENARIO,
        "scenario_hash": "",
        "scenario_version": env!("CARGO_PKG_VERSION"),
        "message": message,
        "events_count": a.probes.clamp(1, i32::MAX as u32),
        "start_at": a.ts,
        "stop_at": a.ts,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "remediation": true,
        "events": [{
            "timestamp": a.ts,
            "meta": meta(&[
                (if range { "source_range" } else { "source_ip" }, a.src.clone()),
                ("service", "scan-guard".into()),
                ("kind", a.kind.clone()),
                ("ports", ports.clone()),
                ("probes", a.probes.to_string()),
                ("score", a.score.to_string()),
            ]),
        }],
        "source": source,
        "meta": meta(&[
            ("scan_guard_origin", a.origin.clone()),
            ("scan_guard_host", host.to_string()),
            ("reason", reason),
        ]),
        "decisions": [{
            "origin": "crowdsec",
            "type": "ban",
            "scope": scope,
            "value": a.src,
            "duration": duration,
            "scenario": SCENARIO,
        }],
    })
}

enum Failure {
    /// Credentials refused at login.
    Auth(String),
    /// The token stopped working (expired): log in again at once.
    TokenRejected,
    Transport(HttpError),
    /// The Local API refused these alerts for what they are (400): retrying would
    /// not help; they are dropped.
    Refused(String),
    Answer(String),
}

pub async fn run(
    ep: Client,
    machine_id: String,
    password: String,
    mut rx: mpsc::Receiver<AlertInfo>,
    health: Arc<Health>,
) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let who = if machine_id.is_empty() {
        "the machine of our client certificate".to_string()
    } else {
        format!("{machine_id:?}")
    };
    let mut pending: VecDeque<AlertInfo> = VecDeque::new();
    let mut dropped = 0u64;
    let mut token: Option<String> = None;
    let mut retry = FIRST_RETRY;
    let mut failing = false;
    // A token was just refused and we logged in again (refused twice: back off).
    let mut relogged = false;
    loop {
        if pending.is_empty() && token.is_some() {
            match rx.recv().await {
                Some(a) => pending.push_back(a),
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(a) => pending.push_back(a),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if pending.is_empty() => return,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        while pending.len() > MAX_PENDING {
            pending.pop_front();
            dropped += 1;
        }
        health.dropped(dropped);
        if dropped > 0 {
            tracing::warn!(
                "crowdsec agent: the Local API at {ep} is behind; dropped the {dropped} oldest alerts"
            );
            dropped = 0;
        }
        let result = match &token {
            None => login(&ep, &machine_id, &password).await.map(|t| {
                token = Some(t);
                0
            }),
            Some(t) => {
                let n = pending.len().min(BATCH);
                let items: Vec<Value> = pending
                    .iter()
                    .take(n)
                    .map(|a| alert_json(a, &host))
                    .collect();
                push(&ep, t, &items).await.map(|()| n)
            }
        };
        match result {
            Ok(0) => {
                health.agent.succeeded();
                if relogged {
                    tracing::debug!("crowdsec agent: logged in again");
                } else {
                    tracing::info!(
                        "crowdsec agent: logged in to the Local API at {ep} as {who}; our blocks are pushed as {SCENARIO} alerts"
                    );
                }
            }
            Ok(sent) => {
                health.agent.succeeded();
                health.pushed(sent);
                if failing {
                    tracing::info!("crowdsec agent: the Local API at {ep} takes alerts again");
                    failing = false;
                }
                relogged = false;
                for a in pending.drain(..sent) {
                    tracing::debug!("crowdsec agent: pushed the block of {}", a.src);
                }
                retry = FIRST_RETRY;
            }
            Err(Failure::TokenRejected) if !relogged => {
                tracing::info!(
                    "crowdsec agent: the Local API no longer takes our token; logging in again"
                );
                token = None;
                relogged = true;
                continue;
            }
            Err(Failure::Refused(m)) => {
                let n = pending.len().min(BATCH);
                tracing::error!(
                    "crowdsec agent: the Local API at {ep} refused {n} alerts ({m}); they are dropped"
                );
                pending.drain(..n);
                // The Local API answered: it is up, these alerts are lost.
                health.agent.succeeded();
                health.dropped(n as u64);
            }
            Err(f) => {
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                let again = format!(
                    "{} alerts waiting; retrying in {}",
                    pending.len(),
                    format_duration(wait)
                );
                if matches!(f, Failure::TokenRejected) {
                    // Refused again right after a fresh login: not an expiry.
                    token = None;
                }
                match f {
                    Failure::TokenRejected => tracing::warn!(
                        "crowdsec agent: the Local API at {ep} refuses alerts from {who} even after a fresh login; {again}"
                    ),
                    Failure::Auth(m) if machine_id.is_empty() => tracing::error!(
                        "crowdsec agent: the Local API at {ep} rejected the agent's client certificate ({m}): its OU must be listed in the Local API's api.server.tls.agents_allowed_ou and its CA in ca_cert_path (check crowdsec.agent_tls_cert); {again}"
                    ),
                    Failure::Auth(m) => tracing::error!(
                        "crowdsec agent: the Local API at {ep} rejected the machine credentials for {machine_id:?} ({m}): check crowdsec.agent_machine_id and agent_password / agent_password_file (create the machine with `cscli machines add {machine_id} --password ...`); {again}"
                    ),
                    Failure::Transport(e @ HttpError::Tls(_)) => tracing::error!(
                        "crowdsec agent: no trusted connection to the Local API at {ep}: {e}; {again}"
                    ),
                    Failure::Transport(e) => tracing::warn!(
                        "crowdsec agent: the Local API at {ep} is not reachable ({e}); {again}"
                    ),
                    Failure::Answer(m) => tracing::warn!(
                        "crowdsec agent: unusable answer from the Local API at {ep}: {m}; {again}"
                    ),
                    Failure::Refused(_) => {}
                }
                failing = true;
                health.agent.failed();
                sleep_collecting(wait, &mut rx, &mut pending, &health).await;
            }
        }
    }
}

/// Sleeps for `wait` while still taking alerts in (so the controller never finds
/// the channel full because we are backing off).
async fn sleep_collecting(
    wait: Duration,
    rx: &mut mpsc::Receiver<AlertInfo>,
    pending: &mut VecDeque<AlertInfo>,
    health: &Health,
) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            a = rx.recv() => match a {
                Some(a) => {
                    pending.push_back(a);
                    if pending.len() > MAX_PENDING {
                        pending.pop_front();
                        health.dropped(1);
                    }
                }
                None => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            },
        }
    }
}

async fn login(ep: &Client, machine_id: &str, password: &str) -> Result<String, Failure> {
    let body = if machine_id.is_empty() {
        json!({ "scenarios": [SCENARIO] })
    } else {
        json!({
            "machine_id": machine_id,
            "password": password,
            "scenarios": [SCENARIO],
        })
    };
    let body = serde_json::to_vec(&body).map_err(|e| Failure::Answer(e.to_string()))?;
    let resp = ep
        .request(
            Method::POST,
            "/v1/watchers/login",
            &[],
            Some(&body),
            REQUEST_LIMIT,
        )
        .await
        .map_err(Failure::Transport)?;
    match resp.status {
        200 => serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::Answer(format!("login answer without a token: {}", resp.message()))
            }),
        401 | 403 => Err(Failure::Auth(format!(
            "HTTP {}: {}",
            resp.status,
            resp.message()
        ))),
        s => Err(Failure::Answer(format!(
            "login: HTTP {s}: {}",
            resp.message()
        ))),
    }
}

async fn push(ep: &Client, token: &str, items: &[Value]) -> Result<(), Failure> {
    let body = serde_json::to_vec(items).map_err(|e| Failure::Answer(e.to_string()))?;
    let auth = format!("Bearer {token}");
    let resp = ep
        .request(
            Method::POST,
            "/v1/alerts",
            &[("Authorization", &auth)],
            Some(&body),
            REQUEST_LIMIT,
        )
        .await
        .map_err(Failure::Transport)?;
    match resp.status {
        200 | 201 => Ok(()),
        401 | 403 => Err(Failure::TokenRejected),
        400 | 422 => Err(Failure::Refused(format!(
            "HTTP {}: {}",
            resp.status,
            resp.message()
        ))),
        s => Err(Failure::Answer(format!(
            "alerts: HTTP {s}: {}",
            resp.message()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_follow_the_local_api_schema() {
        let a = AlertInfo {
            ts: "2026-11-27T06:42:00.883216Z".into(),
            src: "10.200.1.1".into(),
            kind: "syn".into(),
            ports: vec![22, 80],
            probes: 6,
            score: 21,
            ttl_s: Some(600),
            reason: Some("port_score: score 21".into()),
            origin: "kernel".into(),
        };
        let v = alert_json(&a, "h1");
        // Every field the swagger of 1.4 requires.
        for k in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
            "source",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(
            v["source"],
            json!({"scope": "Ip", "value": "10.200.1.1", "ip": "10.200.1.1"})
        );
        assert_eq!(v["events_count"], 6);
        let d = &v["decisions"][0];
        for k in ["origin", "type", "scope", "value", "duration", "scenario"] {
            assert!(d.get(k).is_some(), "decision without {k}");
        }
        assert_eq!(d["duration"], "600s");
        assert_eq!(d["type"], "ban");
        assert_eq!(d["value"], "10.200.1.1");
        assert!(v["message"].as_str().unwrap().contains("syn scan"));

        let r = alert_json(
            &AlertInfo {
                src: "10.200.1.0/24".into(),
                ttl_s: None,
                probes: 0,
                ..a
            },
            "h1",
        );
        assert_eq!(r["source"]["scope"], "Range");
        assert_eq!(r["decisions"][0]["scope"], "Range");
        assert_eq!(r["decisions"][0]["duration"], "14400s");
        assert_eq!(r["events_count"], 1);
    }
}
