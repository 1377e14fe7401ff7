//! `[crowdsec]`: where the Local API is and how scan-guard logs in to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::settings::Dur;

/// `[crowdsec]`: the CrowdSec Local API (see `crate::export::crowdsec` and
/// docs/operations.md). An empty `lapi_url` turns all of it off.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Crowdsec {
    /// `http://HOST:PORT` or `https://HOST:PORT` of the Local API; empty = off.
    pub lapi_url: String,
    /// `https://` only: PEM file of the CA(s) to trust for the Local API's
    /// certificate; empty = the system's CA bundle.
    pub ca_cert: String,
    /// Bouncer mode: the key from `cscli bouncers add NAME` (or a file holding it).
    pub bouncer_api_key: String,
    pub bouncer_api_key_file: String,
    /// Bouncer mode with a TLS client certificate instead of a key (`https://`
    /// only): PEM certificate (chain) and its private key.
    pub bouncer_tls_cert: String,
    pub bouncer_tls_key: String,
    /// How often the decision stream is polled.
    pub poll_interval: Dur,
    /// Agent mode: the machine from `cscli machines add NAME --password ...`.
    pub agent_machine_id: String,
    pub agent_password: String,
    pub agent_password_file: String,
    /// Agent mode with a TLS client certificate instead of a machine and password.
    pub agent_tls_cert: String,
    pub agent_tls_key: String,
    /// Push our own blocks to the Local API as alerts with a ban decision.
    pub push_alerts: bool,
}

impl Default for Crowdsec {
    fn default() -> Self {
        Self {
            lapi_url: String::new(),
            ca_cert: String::new(),
            bouncer_api_key: String::new(),
            bouncer_api_key_file: String::new(),
            bouncer_tls_cert: String::new(),
            bouncer_tls_key: String::new(),
            poll_interval: Dur(Duration::from_secs(10)),
            agent_machine_id: String::new(),
            agent_password: String::new(),
            agent_password_file: String::new(),
            agent_tls_cert: String::new(),
            agent_tls_key: String::new(),
            push_alerts: false,
        }
    }
}
