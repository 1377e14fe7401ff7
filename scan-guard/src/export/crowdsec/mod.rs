//! CrowdSec integration, through the Local API (LAPI) of a CrowdSec installation
//! (see docs/operations.md, "Fleet setup (CrowdSec)"):
//!
//! - bouncer mode ([`bouncer`]): the decision stream (bans of `Ip` and `Range`
//!   scope, IPv4 and IPv6) becomes XDP blocks with origin `crowdsec`; deleted
//!   decisions lift them;
//! - agent mode ([`agent`]): our own blocks go to the LAPI as alerts with a ban
//!   decision, for the bouncers of the other hosts.
//!
//! Both run as tokio tasks and talk to the controller over channels; the
//! controller stays the only writer of the maps ([`apply`] runs in its loop).
//! [`Link`] is the controller's end. The Local API is reached over `http://` or
//! `https://` ([`tls`]: server verification, optional client certificates).
//!
//! Starting is two steps so that SIGHUP can swap links safely: [`Plan::prepare`]
//! reads every secret and certificate (all errors are usage errors, nothing
//! started yet), [`Plan::spawn`] starts the tasks.

pub mod agent;
pub mod apply;
pub mod bouncer;
pub mod decisions;
pub mod endpoint;
pub mod health;
pub mod lapi;
pub mod settings;
pub mod tls;

use std::{path::Path, sync::Arc};

use anyhow::Result;
use tokio::{sync::mpsc, task::JoinHandle};

pub use self::decisions::Batch;
use self::{
    agent::AlertInfo,
    apply::Applier,
    lapi::{Client, Endpoint},
};
use scan_guard_common::{state::BlockOrigin, vocab::EventName};

use crate::{
    base::cidr::format_duration, base::error::usage, enforce::enforcer::Enforcer,
    enforce::policy::Blocking, export::crowdsec::settings::Crowdsec, export::events::EventRecord,
    kernel::maps::KernelMaps,
};

/// Answers the bouncer may have queued for the controller.
const DECISION_QUEUE: usize = 4;
/// Alerts the controller may have queued for the agent.
const ALERT_QUEUE: usize = 1024;

/// Checks `[crowdsec]` (part of [`Config`] validation): what is set must be
/// usable, and nothing is set that would silently do nothing. Files are read
/// later, by [`Plan::prepare`].
pub fn validate(c: &Crowdsec) -> Result<(), String> {
    let key = !c.bouncer_api_key.is_empty() || !c.bouncer_api_key_file.is_empty();
    let bouncer_cert = !c.bouncer_tls_cert.is_empty() || !c.bouncer_tls_key.is_empty();
    let agent_cert = !c.agent_tls_cert.is_empty() || !c.agent_tls_key.is_empty();
    let bouncer = key || bouncer_cert;
    if c.lapi_url.is_empty() {
        if bouncer || c.push_alerts {
            return Err(
                "crowdsec: a bouncer key or certificate or push_alerts is set but crowdsec.lapi_url is empty"
                    .into(),
            );
        }
        return Ok(());
    }
    let ep = Endpoint::parse(&c.lapi_url).map_err(|e| format!("crowdsec.lapi_url: {e}"))?;
    if !ep.is_tls() && (!c.ca_cert.is_empty() || bouncer_cert || agent_cert) {
        return Err(
            "crowdsec: ca_cert and the TLS client certificates need an https:// lapi_url".into(),
        );
    }
    for (cert, key, what) in [
        (&c.bouncer_tls_cert, &c.bouncer_tls_key, "bouncer_tls"),
        (&c.agent_tls_cert, &c.agent_tls_key, "agent_tls"),
    ] {
        if cert.is_empty() != key.is_empty() {
            return Err(format!(
                "crowdsec: set both {what}_cert and {what}_key, or neither"
            ));
        }
    }
    if !c.bouncer_api_key.is_empty() && !c.bouncer_api_key_file.is_empty() {
        return Err("crowdsec: set bouncer_api_key or bouncer_api_key_file, not both".into());
    }
    if key && bouncer_cert {
        return Err(
            "crowdsec: the bouncer authenticates with an API key or a TLS client certificate (bouncer_tls_cert), not both"
                .into(),
        );
    }
    if !c.agent_password.is_empty() && !c.agent_password_file.is_empty() {
        return Err("crowdsec: set agent_password or agent_password_file, not both".into());
    }
    let agent_password = !c.agent_machine_id.is_empty()
        || !c.agent_password.is_empty()
        || !c.agent_password_file.is_empty();
    if agent_cert && agent_password {
        return Err(
            "crowdsec: the agent authenticates with agent_machine_id and a password or with a TLS client certificate (agent_tls_cert), not both"
                .into(),
        );
    }
    if agent_cert && !c.push_alerts {
        return Err("crowdsec: agent_tls_cert is set but push_alerts is off".into());
    }
    if c.push_alerts
        && !agent_cert
        && (c.agent_machine_id.is_empty()
            || c.agent_password.is_empty() && c.agent_password_file.is_empty())
    {
        return Err(
            "crowdsec.push_alerts needs agent_machine_id and agent_password (or agent_password_file), or agent_tls_cert and agent_tls_key"
                .into(),
        );
    }
    if !bouncer && !c.push_alerts {
        return Err(
            "crowdsec.lapi_url is set but neither a bouncer key or certificate nor push_alerts: nothing would use the Local API"
                .into(),
        );
    }
    if c.poll_interval.0.is_zero() {
        return Err("crowdsec.poll_interval must be longer than 0s".into());
    }
    Ok(())
}

/// A secret given inline or in a file (first line, trimmed).
fn secret(inline: &str, file: &str, field: &str) -> Result<String> {
    if file.is_empty() {
        return Ok(inline.trim().to_string());
    }
    let text = std::fs::read_to_string(Path::new(file))
        .map_err(|e| usage(format!("cannot read crowdsec.{field} {file}: {e}")))?;
    let s = text.lines().next().unwrap_or_default().trim().to_string();
    if s.is_empty() {
        return Err(usage(format!("crowdsec.{field} {file} is empty")));
    }
    Ok(s)
}

/// Everything the tasks need, read and checked, nothing started yet.
pub struct Plan {
    poll: std::time::Duration,
    /// Bouncer: the Local API and the key (empty: client certificate).
    bouncer: Option<(Client, String)>,
    /// Agent: the Local API, machine id and password (both empty: certificate).
    agent: Option<(Client, String, String)>,
    origin: Origin,
}

/// What a link was started from: the section and a hash of every byte it read
/// (secrets, certificates), so a reload restarts it when either changed (a
/// rotated key or certificate).
#[derive(Clone, Debug, PartialEq)]
struct Origin {
    section: Crowdsec,
    material: u64,
}

fn tls_client(
    ep: &Endpoint,
    cfg: &Crowdsec,
    auth: Option<tls::ClientAuth<'_>>,
    material: &mut Vec<u8>,
) -> Result<Client> {
    let config = if ep.is_tls() {
        let loaded = tls::load(&cfg.ca_cert, auth).map_err(|e| usage(e.to_string()))?;
        material.extend_from_slice(&loaded.material);
        Some(loaded.config)
    } else {
        None
    };
    Client::new(ep.clone(), config).map_err(|e| usage(format!("crowdsec.lapi_url: {e}")))
}

impl Plan {
    /// Reads the secrets and certificates `cfg` names (a validated section).
    pub fn prepare(cfg: &Crowdsec) -> Result<Self> {
        let mut plan = Self {
            poll: cfg.poll_interval.0,
            bouncer: None,
            agent: None,
            origin: Origin {
                section: cfg.clone(),
                material: 0,
            },
        };
        if cfg.lapi_url.is_empty() {
            return Ok(plan);
        }
        let ep =
            Endpoint::parse(&cfg.lapi_url).map_err(|e| usage(format!("crowdsec.lapi_url: {e}")))?;
        let mut material = Vec::new();
        let m = &mut material;
        let key = secret(
            &cfg.bouncer_api_key,
            &cfg.bouncer_api_key_file,
            "bouncer_api_key_file",
        )?;
        m.extend_from_slice(key.as_bytes());
        m.push(0);
        if !key.is_empty() || !cfg.bouncer_tls_cert.is_empty() {
            let auth = (!cfg.bouncer_tls_cert.is_empty()).then_some(tls::ClientAuth {
                cert: &cfg.bouncer_tls_cert,
                key: &cfg.bouncer_tls_key,
                cert_field: "bouncer_tls_cert",
                key_field: "bouncer_tls_key",
            });
            plan.bouncer = Some((tls_client(&ep, cfg, auth, m)?, key));
        }
        if cfg.push_alerts {
            let password = secret(
                &cfg.agent_password,
                &cfg.agent_password_file,
                "agent_password_file",
            )?;
            m.extend_from_slice(password.as_bytes());
            m.push(0);
            let auth = (!cfg.agent_tls_cert.is_empty()).then_some(tls::ClientAuth {
                cert: &cfg.agent_tls_cert,
                key: &cfg.agent_tls_key,
                cert_field: "agent_tls_cert",
                key_field: "agent_tls_key",
            });
            let client = tls_client(&ep, cfg, auth, m)?;
            plan.agent = Some((client, cfg.agent_machine_id.clone(), password));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&material, &mut h);
        plan.origin.material = std::hash::Hasher::finish(&h);
        Ok(plan)
    }

    /// Bouncer mode on.
    pub fn is_bouncer(&self) -> bool {
        self.bouncer.is_some()
    }

    /// Neither mode: nothing to start.
    pub fn is_off(&self) -> bool {
        self.bouncer.is_none() && self.agent.is_none()
    }

    /// Starts the tasks (needs a tokio runtime).
    pub fn spawn(self) -> Link {
        let mut link = Link::default();
        link.origin = Some(self.origin);
        if let Some((client, key)) = self.bouncer {
            let (tx, rx) = mpsc::channel(DECISION_QUEUE);
            let auth = if key.is_empty() {
                ", authenticated by its client certificate"
            } else {
                ""
            };
            tracing::info!(
                "crowdsec bouncer: enforcing the decisions of the Local API at {client} (polled every {}{auth})",
                format_duration(self.poll)
            );
            link.tasks.push(tokio::spawn(bouncer::run(
                client,
                key,
                self.poll,
                tx,
                Arc::clone(&link.health),
            )));
            link.decisions = Some(rx);
            link.bouncer = true;
        }
        if let Some((client, id, password)) = self.agent {
            let (tx, rx) = mpsc::channel(ALERT_QUEUE);
            let who = if id.is_empty() {
                "the machine of its client certificate".to_string()
            } else {
                format!("{id:?}")
            };
            tracing::info!(
                "crowdsec agent: pushing our blocks to the Local API at {client} as {who}"
            );
            link.tasks.push(tokio::spawn(agent::run(
                client,
                id,
                password,
                rx,
                Arc::clone(&link.health),
            )));
            link.alerts = Some(tx);
            link.agent = true;
        }
        link
    }
}

/// The controller's end of the CrowdSec tasks.
#[derive(Default)]
pub struct Link {
    /// What it was started from (`None`: [`Link::disabled`]).
    origin: Option<Origin>,
    /// Started with bouncer mode (stays true if its task ends).
    bouncer: bool,
    /// Started with agent mode (likewise).
    agent: bool,
    decisions: Option<mpsc::Receiver<Batch>>,
    alerts: Option<mpsc::Sender<AlertInfo>>,
    applier: Applier,
    tasks: Vec<JoinHandle<()>>,
    alerts_dropped: u64,
    /// What the tasks report, for metrics.
    health: Arc<health::Health>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Link {
    /// Nothing to talk to (`[crowdsec] lapi_url` empty).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Reads the secrets and certificates and starts the tasks `cfg` asks for
    /// (needs a tokio runtime). Unreadable or unusable files are usage errors.
    pub fn start(cfg: &Crowdsec) -> Result<Self> {
        Ok(Plan::prepare(cfg)?.spawn())
    }

    /// Bouncer mode is on: CrowdSec blocks are kept up to date.
    pub fn is_bouncer(&self) -> bool {
        self.bouncer
    }

    /// Which roles run and how their Local API answers, for metrics.
    pub fn health(&self) -> health::Snapshot {
        self.health
            .snapshot(self.bouncer, self.agent, self.alerts_dropped)
    }

    /// It was started from the same section and the same file contents.
    pub fn runs(&self, plan: &Plan) -> bool {
        self.origin.as_ref() == Some(&plan.origin)
    }

    /// The next answer of the decision stream; never ready when bouncer mode is
    /// off (or its task ended).
    pub async fn next(&mut self) -> Batch {
        let Some(rx) = self.decisions.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Some(b) => b,
            None => {
                tracing::error!(
                    "crowdsec bouncer: the task ended; decisions are no longer followed"
                );
                self.decisions = None;
                std::future::pending().await
            }
        }
    }

    /// Applies a batch (in the controller's loop); returns the events to write.
    pub fn apply(
        &mut self,
        batch: Batch,
        enforcer: &mut Enforcer,
        maps: &mut KernelMaps,
        cfg: &Blocking,
    ) -> Result<Vec<EventRecord>> {
        self.applier.apply(batch, enforcer, maps, cfg)
    }

    /// Sees every event written; our own `blocked` decisions (kernel or detector)
    /// go to the agent. Never waits: when the queue is full the alert is dropped.
    pub fn observe(&mut self, rec: &EventRecord) {
        let Some(tx) = &self.alerts else {
            return;
        };
        if rec.event != EventName::Blocked
            || !matches!(
                rec.origin,
                Some(BlockOrigin::Kernel | BlockOrigin::Detector)
            )
        {
            return;
        }
        let info = AlertInfo {
            ts: rec.ts.clone(),
            src: rec.src.clone(),
            kind: scan_guard_common::vocab::kind_name(rec.kind).to_string(),
            ports: rec.ports.clone(),
            probes: rec.probes,
            score: rec.score,
            ttl_s: rec.ttl_s,
            reason: rec.reason.clone(),
            origin: rec.origin.map_or("unknown", BlockOrigin::name).to_string(),
        };
        match tx.try_send(info) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.alerts_dropped += 1;
                if self.alerts_dropped.is_power_of_two() {
                    tracing::warn!(
                        "crowdsec agent: alert queue full, {} alerts not pushed so far",
                        self.alerts_dropped
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("crowdsec agent: the task ended; blocks are no longer pushed");
                self.alerts = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text)
    }

    #[test]
    fn off_by_default_and_round_trips() {
        let c = Config::default();
        assert!(c.crowdsec.lapi_url.is_empty());
        assert_eq!(c.crowdsec.poll_interval.0.as_secs(), 10);
        let text = c.to_toml().unwrap();
        assert!(text.contains("[crowdsec]"), "{text}");
        let full = parse(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\nbouncer_api_key = \"k\"\npoll_interval = \"2s\"\n\
             agent_machine_id = \"m\"\nagent_password_file = \"/etc/p\"\npush_alerts = true\n",
        )
        .unwrap();
        assert_eq!(parse(&full.to_toml().unwrap()).unwrap(), full);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let err = |t: &str| parse(&format!("[crowdsec]\n{t}")).unwrap_err();
        assert!(err("bouncer_api_key = \"k\"\n").contains("lapi_url is empty"));
        assert!(err("lapi_url = \"ftp://h:8080\"\nbouncer_api_key = \"k\"\n").contains("https://"));
        assert!(
            err("lapi_url = \"http://h:8080\"\nbouncer_api_key = \"k\"\nca_cert = \"/ca.pem\"\n")
                .contains("https://")
        );
        assert!(
            err("lapi_url = \"https://h:8080\"\nbouncer_tls_cert = \"/c.pem\"\n")
                .contains("bouncer_tls_key")
        );
        assert!(
            err("lapi_url = \"https://h:8080\"\nbouncer_api_key = \"k\"\nbouncer_tls_cert = \"/c\"\nbouncer_tls_key = \"/k\"\n")
                .contains("not both")
        );
        assert!(
            err("lapi_url = \"https://h:8080\"\npush_alerts = true\nagent_machine_id = \"m\"\nagent_password = \"p\"\nagent_tls_cert = \"/c\"\nagent_tls_key = \"/k\"\n")
                .contains("not both")
        );
        assert!(
            err("lapi_url = \"https://h:8080\"\nbouncer_api_key = \"k\"\nagent_tls_cert = \"/c\"\nagent_tls_key = \"/k\"\n")
                .contains("push_alerts is off")
        );
        for ok in [
            "lapi_url = \"https://h:8080\"\nbouncer_api_key = \"k\"\nca_cert = \"/ca.pem\"\n",
            "lapi_url = \"https://h:8080\"\nbouncer_tls_cert = \"/c\"\nbouncer_tls_key = \"/k\"\n",
            "lapi_url = \"https://h\"\npush_alerts = true\nagent_tls_cert = \"/c\"\nagent_tls_key = \"/k\"\n",
        ] {
            parse(&format!("[crowdsec]\n{ok}")).unwrap();
        }
        assert!(err("lapi_url = \"http://h:8080\"\n").contains("nothing would use"));
        assert!(
            err("lapi_url = \"http://h:8080\"\nbouncer_api_key = \"k\"\nbouncer_api_key_file = \"f\"\n")
                .contains("not both")
        );
        assert!(
            err("lapi_url = \"http://h:8080\"\npush_alerts = true\nagent_machine_id = \"m\"\n")
                .contains("agent_password")
        );
        assert!(
            err(
                "lapi_url = \"http://h:8080\"\nbouncer_api_key = \"k\"\npoll_interval = \"soon\"\n"
            )
            .contains("line 4")
        );
        assert!(err("lapi_uri = \"http://h:8080\"\n").contains("lapi_uri"));
    }

    #[test]
    fn a_reload_sees_changed_sections_and_changed_files() {
        let dir = std::env::temp_dir().join(format!("sg-crowdsec-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "key-1\n").unwrap();
        let cfg = parse(&format!(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\nbouncer_api_key_file = \"{}\"\n",
            f.display()
        ))
        .unwrap()
        .crowdsec;
        let origin = |c: &Crowdsec| Plan::prepare(c).unwrap().origin;
        let first = origin(&cfg);
        assert_eq!(origin(&cfg), first);
        std::fs::write(&f, "key-2\n").unwrap();
        assert_ne!(origin(&cfg), first, "a rotated key file");
        let slower = Crowdsec {
            poll_interval: crate::config::Dur(std::time::Duration::from_secs(30)),
            ..cfg.clone()
        };
        assert_ne!(origin(&slower), origin(&cfg));
        let off = Plan::prepare(&Crowdsec::default()).unwrap();
        assert!(off.is_off() && !off.is_bouncer());
        assert!(Plan::prepare(&cfg).unwrap().is_bouncer());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_from_files() {
        let dir = std::env::temp_dir().join(format!("sg-crowdsec-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "abc123\n").unwrap();
        let path = f.to_str().unwrap();
        assert_eq!(secret("", path, "x").unwrap(), "abc123");
        assert_eq!(secret(" inline ", "", "x").unwrap(), "inline");
        std::fs::write(&f, "\n").unwrap();
        assert!(secret("", path, "x").is_err());
        let missing = dir.join("missing");
        let e = secret("", missing.to_str().unwrap(), "bouncer_api_key_file").unwrap_err();
        assert_eq!(crate::base::error::exit_code(&e), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
