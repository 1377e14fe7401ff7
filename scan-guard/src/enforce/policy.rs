//! `[blocking]`: how blocks are decided (dry run, escalation, caps,
//! aggregation, never-block and allow lists).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::settings::{Dur, Prefix};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Blocking {
    /// Block in the kernel the moment a source crosses the threshold.
    pub kernel_auto_block: bool,
    /// Detect and report `would_block`, drop nothing for scanning.
    pub dry_run: bool,
    /// Block lifetimes for the 1st, 2nd, ... offence (the last one repeats).
    pub ttl: Vec<Dur>,
    /// How long an offence counts towards escalation.
    pub offence_memory: Dur,
    pub max_blocks: u32,
    pub max_new_blocks_per_sec: u32,
    /// Block the whole /N (IPv4) or /M (IPv6) once this many addresses inside it are
    /// blocked; 0 = off.
    pub aggregate_after: u32,
    pub aggregate_ipv4_prefix: u32,
    pub aggregate_ipv6_prefix: u32,
    /// Never inspected, never blocked.
    pub allow: Vec<Prefix>,
    /// Inspected and reported (`suppressed`), never blocked; added to the
    /// automatic set (host addresses, gateways, resolvers, loopback, link-local).
    pub never_block: Vec<Prefix>,
    /// Compute the automatic never-block set at start.
    pub protect_host_addresses: bool,
    /// Drop SYNs to ports with no listener instead of answering RST.
    pub stealth: bool,
}

impl Default for Blocking {
    fn default() -> Self {
        let h = |n| Dur(Duration::from_secs(n));
        Self {
            kernel_auto_block: true,
            dry_run: false,
            ttl: vec![h(600), h(3600), h(86_400), h(7 * 86_400)],
            offence_memory: h(30 * 86_400),
            max_blocks: 100_000,
            max_new_blocks_per_sec: 100,
            aggregate_after: 0,
            aggregate_ipv4_prefix: 24,
            aggregate_ipv6_prefix: 64,
            allow: Vec::new(),
            never_block: Vec::new(),
            protect_host_addresses: true,
            stealth: false,
        }
    }
}

impl Blocking {
    /// Lifetime of a block for the `n`th offence (1-based); the last step repeats.
    pub fn ttl_for_offence(&self, n: u32) -> Duration {
        let i = (n.max(1) as usize - 1).min(self.ttl.len().saturating_sub(1));
        self.ttl.get(i).map_or(Duration::from_secs(600), |d| d.0)
    }
}
