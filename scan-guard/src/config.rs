//! The TOML configuration file. Every field is optional (defaults below and in
//! docs/config.md); unknown fields are errors, so a typo never silently does nothing.

use std::{fmt, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use scan_guard_common::{
    config::{KernelConfig, POLICY_AUTO_BLOCK, POLICY_LOCAL_ONLY, POLICY_STEALTH},
    fastpath::budget_per_window,
    flags::InvalidClass,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// The sections each part owns, composed here; re-exported so a config user
// needs one path.
use crate::base::error::usage;
pub use crate::{
    base::settings::{Dur, Prefix},
    detect::slow_scan::SlowScan,
    enforce::policy::Blocking,
    export::crowdsec::settings::Crowdsec,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagAction {
    /// Drop at XDP (and count).
    Drop,
    /// Count only; the packet goes on.
    Count,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Interfaces to protect, names or globs (`eth*`); `--iface` replaces the
    /// list. One program and one set of maps serve them all.
    pub ifaces: Vec<String>,
    pub detection: Detection,
    pub slow_scan: SlowScan,
    pub blocking: Blocking,
    pub invalid_flags: InvalidFlags,
    pub output: Output,
    pub crowdsec: Crowdsec,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Detection {
    pub window: Dur,
    pub score_threshold: u32,
    pub sweep_threshold: u32,
    pub weight_privileged: u32,
    pub weight_unprivileged: u32,
    pub weight_closed: u32,
    pub weight_invalid: u32,
    /// Sources sharing one port pattern within `distributed_window` before a
    /// distributed/decoy hint is reported.
    pub distributed_min_sources: usize,
    pub distributed_window: Dur,
    /// Score traffic to every destination, not only to the host's own unicast
    /// addresses (a router or bridge that wants its forwarded traffic watched).
    pub score_forwarded: bool,
    /// How long a TCP port that stopped listening still counts as listening (a
    /// service restart, a reboot: the state file carries it across).
    pub listener_memory: Dur,
    /// How often the NAT rules are read for published ports (DNAT, REDIRECT);
    /// 0s: never (those ports then count as closed).
    pub nat_refresh: Dur,
    /// IPv6 sources are scored, and blocked by the kernel, per prefix of this
    /// length: rotating through the addresses of one /64 is one source.
    pub ipv6_source_prefix: u8,
    /// The same for IPv4 (32: per address; 24 would make a /24 one source).
    pub ipv4_source_prefix: u8,
    /// New sources with evidence each CPU starts tracking per second; past it
    /// (a random-source flood) a new source is not tracked in the kernel, its
    /// first contact still reaches the slow-scan detector, and sources already
    /// tracked (a real scan during the flood) keep their state. 0: no budget.
    pub new_sources_per_cpu_per_sec: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvalidFlags {
    pub null: FlagAction,
    pub xmas: FlagAction,
    pub syn_fin: FlagAction,
    pub syn_rst: FlagAction,
    pub fin_rst: FlagAction,
    pub no_ack: FlagAction,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Output {
    /// Where events go: `-` (standard output), a file, `syslog[:SOCKET]`,
    /// `journal[:SOCKET]`, or a list of those.
    pub events: EventPlaces,
    /// Where blocks and offence history are persisted; empty = per interface under
    /// /var/lib/scan-guard.
    pub state_file: String,
    /// Prometheus endpoint (`PORT`, `:PORT` on loopback, or `HOST:PORT`); empty = off.
    pub metrics: String,
}

/// `output.events`: one place, written as a string, or several, as a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPlaces(pub Vec<String>);

impl Serialize for EventPlaces {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EventPlaces {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d) {
            Ok(Form::One(one)) => Ok(Self(vec![one])),
            Ok(Form::Many(many)) => Ok(Self(many)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a place (\"-\", a file, \"syslog\", \"journal\") or a list of them",
            )),
        }
    }
}

/// The kernel's part of the new-block budget: three quarters, so the controller
/// keeps a quarter for retrying refused sources strongest first (`retry.rs`); at
/// least one each when the cap allows two or more. 0 (no cap) stays 0.
pub fn kernel_share(cap: u32) -> u32 {
    match cap {
        0 | 1 => cap,
        c => (c - c / 4).min(c - 1),
    }
}

impl Default for Detection {
    fn default() -> Self {
        let k = KernelConfig::DEFAULT;
        Self {
            window: Dur(Duration::from_nanos(k.window_ns)),
            score_threshold: k.score_threshold,
            sweep_threshold: k.sweep_threshold,
            weight_privileged: k.weight_privileged,
            weight_unprivileged: k.weight_unprivileged,
            weight_closed: k.weight_closed,
            weight_invalid: k.weight_invalid,
            distributed_min_sources: 3,
            distributed_window: Dur(Duration::from_secs(60)),
            score_forwarded: false,
            listener_memory: Dur(Duration::from_secs(3600)),
            nat_refresh: Dur(Duration::from_secs(2)),
            ipv6_source_prefix: 64,
            ipv4_source_prefix: 32,
            new_sources_per_cpu_per_sec: 20_000,
        }
    }
}

impl Default for InvalidFlags {
    fn default() -> Self {
        Self {
            null: FlagAction::Drop,
            xmas: FlagAction::Drop,
            syn_fin: FlagAction::Drop,
            syn_rst: FlagAction::Drop,
            fin_rst: FlagAction::Drop,
            no_ack: FlagAction::Drop,
        }
    }
}

impl Default for Output {
    fn default() -> Self {
        Self {
            events: EventPlaces(vec!["-".into()]),
            state_file: String::new(),
            metrics: String::new(),
        }
    }
}

/// A semantic problem in an otherwise well-formed file.
#[derive(Debug)]
struct Invalid(String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Reads and validates a config file. Any problem is a usage error (exit 2) that
    /// names the file and, for syntax and type errors, the line and column.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| usage(format!("config file {}: {e}", path.display())))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        cfg.validate().map_err(|e| e.0)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Invalid> {
        crate::kernel::ifaces::parse_all(&self.ifaces)
            .map_err(|e| Invalid(format!("ifaces: {e}")))?;
        let d = &self.detection;
        if d.window.0.is_zero() {
            return Err(Invalid("detection.window must be longer than 0s".into()));
        }
        if d.score_threshold == 0 && d.sweep_threshold == 0 {
            return Err(Invalid(
                "detection.score_threshold and detection.sweep_threshold are both 0: nothing would ever be detected".into(),
            ));
        }
        if !(32..=128).contains(&d.ipv6_source_prefix) {
            return Err(Invalid(
                "detection.ipv6_source_prefix must be between 32 and 128".into(),
            ));
        }
        if !(16..=32).contains(&d.ipv4_source_prefix) {
            return Err(Invalid(
                "detection.ipv4_source_prefix must be between 16 and 32".into(),
            ));
        }
        let s = &self.slow_scan;
        let p = |v: f64| v > 0.0 && v < 1.0;
        if !p(s.benign_success) || !p(s.scanner_success) || s.scanner_success >= s.benign_success {
            return Err(Invalid(
                "slow_scan: need 0 < scanner_success < benign_success < 1".into(),
            ));
        }
        if !(s.threshold.is_finite() && s.threshold > 1.0) {
            return Err(Invalid("slow_scan.threshold must be greater than 1".into()));
        }
        let b = &self.blocking;
        if b.ttl.is_empty() {
            return Err(Invalid("blocking.ttl needs at least one duration".into()));
        }
        if b.ttl.iter().any(|t| t.0.is_zero()) {
            return Err(Invalid(
                "blocking.ttl durations must be longer than 0s".into(),
            ));
        }
        if b.max_blocks == 0 {
            return Err(Invalid("blocking.max_blocks must be at least 1".into()));
        }
        if b.max_new_blocks_per_sec as usize > scan_guard_common::rate::RATE_SLOTS {
            return Err(Invalid(format!(
                "blocking.max_new_blocks_per_sec must be at most {} (0 = no cap)",
                scan_guard_common::rate::RATE_SLOTS
            )));
        }
        crate::export::crowdsec::validate(&self.crowdsec).map_err(Invalid)?;
        let places = &self.output.events.0;
        if places.is_empty() || places.iter().any(|p| p.trim().is_empty()) {
            return Err(Invalid(
                "output.events needs at least one place, none of them empty".into(),
            ));
        }
        if let Some(dup) = places
            .iter()
            .enumerate()
            .find_map(|(i, p)| places[..i].contains(p).then_some(p))
        {
            return Err(Invalid(format!(
                "output.events names {dup:?} twice: every event would be written there twice"
            )));
        }
        if b.aggregate_ipv4_prefix > 32 || b.aggregate_ipv6_prefix > 128 {
            return Err(Invalid(
                "blocking.aggregate_ipv4_prefix must be 0..=32 and aggregate_ipv6_prefix 0..=128"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Lifetime of a block for the `n`th offence (1-based); the last step repeats.
    pub fn ttl_for_offence(&self, n: u32) -> Duration {
        self.blocking.ttl_for_offence(n)
    }

    /// The record the kernel program reads; `sketch_key` keys the port sketch
    /// (random per start, kept across reloads).
    pub fn kernel_config(&self, ephemeral_port_min: u16, sketch_key: u32) -> KernelConfig {
        let d = &self.detection;
        let b = &self.blocking;
        let mut policy = 0;
        if b.kernel_auto_block && !b.dry_run {
            policy |= POLICY_AUTO_BLOCK;
        }
        if b.stealth {
            policy |= POLICY_STEALTH;
        }
        if !d.score_forwarded {
            policy |= POLICY_LOCAL_ONLY;
        }
        let f = &self.invalid_flags;
        let mut drop_mask = 0;
        for (class, action) in [
            (InvalidClass::Null, f.null),
            (InvalidClass::Xmas, f.xmas),
            (InvalidClass::SynFin, f.syn_fin),
            (InvalidClass::SynRst, f.syn_rst),
            (InvalidClass::FinRst, f.fin_rst),
            (InvalidClass::NoAck, f.no_ack),
        ] {
            if action == FlagAction::Drop {
                drop_mask |= 1 << class as u32;
            }
        }
        KernelConfig {
            window_ns: u64::try_from(d.window.0.as_nanos()).unwrap_or(u64::MAX),
            block_ttl_ns: u64::try_from(self.ttl_for_offence(1).as_nanos()).unwrap_or(u64::MAX),
            score_threshold: d.score_threshold,
            sweep_threshold: d.sweep_threshold,
            weight_privileged: d.weight_privileged,
            weight_unprivileged: d.weight_unprivileged,
            weight_closed: d.weight_closed,
            weight_invalid: d.weight_invalid,
            ephemeral_port_min: u32::from(ephemeral_port_min),
            policy,
            invalid_drop_mask: drop_mask,
            max_auto_blocks_per_sec: kernel_share(b.max_new_blocks_per_sec),
            sketch_key,
            v4_source_prefix: d.ipv4_source_prefix,
            v6_source_prefix: d.ipv6_source_prefix,
            // Blocks of the aggregate length are hashed whether or not
            // aggregation is on: /24s are also what manual and CrowdSec range
            // blocks mostly are.
            v4_aggregate_prefix: b.aggregate_ipv4_prefix.min(32) as u8,
            v6_aggregate_prefix: b.aggregate_ipv6_prefix.min(128) as u8,
            new_source_budget: budget_per_window(d.new_sources_per_cpu_per_sec),
            _pad: 0,
        }
    }

    /// The whole configuration with defaults filled in, as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serialising config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_take_one_place_or_a_list() {
        let one = Config::parse("[output]\nevents = \"/var/log/e.jsonl\"\n").unwrap();
        assert_eq!(one.output.events.0, vec!["/var/log/e.jsonl"]);
        let many = Config::parse("[output]\nevents = [\"-\", \"journal\"]\n").unwrap();
        assert_eq!(many.output.events.0, vec!["-", "journal"]);
        // Written back the way it was given.
        let text = toml::to_string(&many.output).unwrap();
        assert!(text.contains("events = [\"-\", \"journal\"]"), "{text}");
        assert!(
            toml::to_string(&one.output)
                .unwrap()
                .contains("events = \"/var/log/e.jsonl\"")
        );
        for bad in [
            "events = []",
            "events = [\"a\", \"a\"]",
            "events = 3",
            "events = [\"\"]",
        ] {
            let err = Config::parse(&format!("[output]\n{bad}\n")).unwrap_err();
            assert!(err.contains("events"), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let k = Config::default().kernel_config(32768, 0);
        let d = KernelConfig::DEFAULT;
        assert_eq!(k.score_threshold, d.score_threshold);
        assert_eq!(k.window_ns, d.window_ns);
        assert_eq!(k.block_ttl_ns, d.block_ttl_ns);
        assert_eq!(k.invalid_drop_mask, d.invalid_drop_mask);
        assert_eq!(k.policy, POLICY_AUTO_BLOCK | POLICY_LOCAL_ONLY);
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml().unwrap();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let err = Config::parse("[detection]\nscore_treshold = 5\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("score_treshold"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(
            Config::parse("[blocking]\nttl = [\"ten\"]\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            Config::parse("[blocking]\nallow = [\"10.0.0.1/8\"]\n")
                .unwrap_err()
                .contains("did you mean 10.0.0.0/8")
        );
        assert!(
            Config::parse("[blocking]\nmax_new_blocks_per_sec = 5000\n")
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(
            Config::parse("[blocking]\nttl = []\n")
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            Config::parse("[slow_scan]\nbenign_success = 0.1\n")
                .unwrap_err()
                .contains("scanner_success")
        );
        assert!(
            Config::parse("[invalid_flags]\nxmas = \"maybe\"\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(Config::parse("[slow_scan]\nthreshold = nan\n").is_err());
        assert!(Config::parse("[slow_scan]\nthreshold = inf\n").is_err());
        assert!(
            Config::parse("[detection]\nwindow = \"600y\"\n")
                .unwrap_err()
                .contains("10-year")
        );
    }

    #[test]
    fn policy_bits_follow_the_switches() {
        let c = Config::parse(
            "[blocking]\ndry_run = true\nstealth = true\n[invalid_flags]\nnull = \"count\"\n",
        )
        .unwrap();
        let k = c.kernel_config(40000, 0);
        assert_eq!(k.policy & POLICY_AUTO_BLOCK, 0);
        assert_ne!(k.policy & POLICY_STEALTH, 0);
        assert_eq!(k.invalid_drop_mask & 1, 0);
        assert_eq!(k.ephemeral_port_min, 40000);
    }

    #[test]
    fn escalation_steps_repeat_the_last() {
        let c = Config::default();
        assert_eq!(c.ttl_for_offence(1), Duration::from_secs(600));
        assert_eq!(c.ttl_for_offence(2), Duration::from_secs(3600));
        assert_eq!(c.ttl_for_offence(4), Duration::from_secs(7 * 86400));
        assert_eq!(c.ttl_for_offence(9), Duration::from_secs(7 * 86400));
    }
}
