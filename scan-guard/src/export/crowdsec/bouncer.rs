//! Bouncer mode: polls the Local API's decision stream (`startup=true` first, then
//! the changes since the last poll) and hands each answer to the controller as a
//! [`Batch`]. The controller alone writes the maps.
//!
//! Failures never stop the task: a Local API that is down or restarting, a key it
//! rejects, an answer it cannot parse are logged and retried with a growing delay
//! (1 s doubling to 30 s). Blocks already applied stay while it retries.
//!
//! It authenticates with its API key, or (empty key) with the TLS client
//! certificate of its [`Client`].

use std::{sync::Arc, time::Duration};

use hyper::Method;
use tokio::sync::mpsc;

use super::{
    decisions::{self, Batch},
    health::Health,
    lapi::{Client, HttpError},
};
use crate::{base::cidr::format_duration, base::clock};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Bound of one poll (a startup answer can be large).
const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// Why a poll failed.
enum Failure {
    /// The key was refused (401/403).
    Auth(String),
    /// Not reachable, broken connection, timeout.
    Transport(HttpError),
    /// Reachable but the answer is an error or unusable.
    Answer(String),
}

pub async fn run(
    ep: Client,
    key: String,
    poll: Duration,
    tx: mpsc::Sender<Batch>,
    health: Arc<Health>,
) {
    let mut startup = true;
    let mut retry = FIRST_RETRY;
    // None before the first answer; Some(true) while polls succeed.
    let mut healthy: Option<bool> = None;
    loop {
        match poll_once(&ep, &key, startup).await {
            Ok((batch, tally)) => {
                health.bouncer.succeeded();
                let n_bans = batch.bans.len();
                let n_lifts = batch.lifts.len();
                if healthy != Some(true) {
                    if startup {
                        tracing::info!(
                            "crowdsec bouncer: connected to the Local API at {ep}: {n_bans} decisions to enforce{}",
                            tally_text(&tally)
                        );
                    } else {
                        tracing::info!("crowdsec bouncer: the Local API at {ep} answers again");
                    }
                } else if n_bans + n_lifts > 0 || tally.malformed > 0 {
                    tracing::debug!(
                        "crowdsec bouncer: {n_bans} new, {n_lifts} deleted{}",
                        tally_text(&tally)
                    );
                }
                healthy = Some(true);
                retry = FIRST_RETRY;
                startup = false;
                if tx.send(batch).await.is_err() {
                    return; // the controller is gone
                }
                tokio::time::sleep(poll).await;
            }
            Err(f) => {
                health.bouncer.failed();
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                let again = format!("retrying in {}", format_duration(wait));
                match &f {
                    Failure::Auth(m) if key.is_empty() => tracing::error!(
                        "crowdsec bouncer: the Local API at {ep} rejected the bouncer's client certificate ({m}): its OU must be listed in the Local API's api.server.tls.bouncers_allowed_ou and its CA in ca_cert_path (check crowdsec.bouncer_tls_cert); blocks already applied stay; {again}"
                    ),
                    Failure::Auth(m) => tracing::error!(
                        "crowdsec bouncer: the Local API at {ep} rejected the bouncer API key ({m}): check crowdsec.bouncer_api_key / bouncer_api_key_file (create a key with `cscli bouncers add NAME`); blocks already applied stay; {again}"
                    ),
                    // Never "not reachable": retrying alone will not fix a certificate.
                    Failure::Transport(e @ HttpError::Tls(_)) => tracing::error!(
                        "crowdsec bouncer: no trusted connection to the Local API at {ep}: {e}; blocks already applied stay; {again}"
                    ),
                    Failure::Transport(e) if healthy == Some(true) => tracing::warn!(
                        "crowdsec bouncer: lost the Local API at {ep} ({e}); blocks already applied stay; {again}"
                    ),
                    Failure::Transport(e) => tracing::warn!(
                        "crowdsec bouncer: the Local API at {ep} is not reachable ({e}); {again}"
                    ),
                    Failure::Answer(m) => tracing::warn!(
                        "crowdsec bouncer: unusable answer from the Local API at {ep}: {m}; {again}"
                    ),
                }
                if matches!(f, Failure::Answer(_)) && !startup {
                    // What that answer held is lost: ask for the complete set again.
                    startup = true;
                }
                healthy = Some(false);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn tally_text(t: &decisions::Tally) -> String {
    let mut s = String::new();
    if t.ignored > 0 {
        s.push_str(&format!(
            ", {} decisions not enforced (not a ban of an Ip or Range, or over)",
            t.ignored
        ));
    }
    if t.malformed > 0 {
        s.push_str(&format!(", {} malformed decisions skipped", t.malformed));
    }
    s
}

async fn poll_once(
    ep: &Client,
    key: &str,
    startup: bool,
) -> Result<(Batch, decisions::Tally), Failure> {
    let path = format!("/v1/decisions/stream?startup={startup}&scopes=ip,range");
    // No key: the client certificate authenticates us.
    let headers: &[(&str, &str)] = if key.is_empty() {
        &[]
    } else {
        &[("X-Api-Key", key)]
    };
    let resp = ep
        .request(Method::GET, &path, headers, None, REQUEST_LIMIT)
        .await
        .map_err(Failure::Transport)?;
    match resp.status {
        200 => {
            decisions::parse_stream(&resp.body, startup, clock::unix_now()).map_err(Failure::Answer)
        }
        401 | 403 => Err(Failure::Auth(format!(
            "HTTP {}: {}",
            resp.status,
            resp.message()
        ))),
        s => Err(Failure::Answer(format!("HTTP {s}: {}", resp.message()))),
    }
}
