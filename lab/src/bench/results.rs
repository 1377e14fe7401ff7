//! The shape of `target/bench/results.json`: written by `scan-guard-bench run`,
//! read by `scan-guard-bench report` (BENCHMARKS.md and the charts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    /// Tiny sizes (CI): numbers are not meaningful.
    pub smoke: bool,
    /// RFC 3339 UTC time the run started.
    pub started: String,
    pub wall_secs: f64,
    pub machine: Machine,
    pub parts: Vec<PartStatus>,
    pub per_packet: Option<PerPacket>,
    pub flood: Option<Flood>,
    pub throughput: Option<Throughput>,
    pub scale: Option<Scale>,
    pub blocklist_ops: Option<BlocklistOps>,
    pub goals: Vec<Goal>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub kernel: String,
    pub date_utc: String,
    pub memory_gib: f64,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub bpf_stats_enabled: String,
    /// CPU the measuring thread was pinned to.
    pub bench_cpu: usize,
    /// Tool name -> version line.
    pub tools: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartStatus {
    pub part: String,
    /// "ok", "partial" (some rows skipped, see notes), "skipped" or "failed".
    pub status: String,
    pub detail: String,
    pub secs: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PerPacket {
    pub repeat: u32,
    pub rounds: u32,
    pub rows: Vec<CostRow>,
    pub new_source_sources: u32,
    pub new_source_single_run_ns: f64,
    pub tracked_single_run_ns: f64,
    pub empty_single_run_ns: f64,
    /// (entries, seconds to insert them one syscall each, BLOCKLIST memlock bytes).
    pub inserts: Vec<(u32, f64, Option<u64>)>,
    pub auto_blocks_during_measure: u64,
    /// Kernel counters read after measuring: verdict cache hits and misses,
    /// what the random-source flood did (admitted, over budget, contacts).
    #[serde(default)]
    pub counters: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CostRow {
    pub name: String,
    /// "scan-guard", "empty XDP_PASS", "xdp-filter".
    pub program: String,
    pub ns: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
    pub verdict: String,
    pub entries: Option<u32>,
    pub vs_empty: f64,
    /// For scan-guard drop rows: the ratio to xdp-filter's drop with the same
    /// number of entries (when xdp-filter can hold that many).
    pub vs_xdp_filter: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flood {
    pub frame_bytes: usize,
    pub batch: u32,
    pub rounds: u32,
    pub target_secs_per_round: f64,
    pub rows: Vec<FloodRow>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodRow {
    pub name: String,
    /// "xdp" or "netfilter".
    pub layer: String,
    pub entries: Option<u32>,
    /// Frames per round.
    pub frames: u64,
    /// Median over rounds of frames / wall-clock seconds, in millions.
    pub mpps: f64,
    pub mpps_min: f64,
    pub mpps_max: f64,
    /// The kernel's own mean ns per frame (whole ns; excludes scheduling gaps).
    pub kernel_ns_per_frame: f64,
    /// Drops confirmed by the filter's own counter.
    pub verified: bool,
    pub verification: String,
    pub vs_xdp_drop: f64,
    pub vs_iptables_raw: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    pub duration_secs: u32,
    pub threads: u32,
    pub connections: u32,
    pub rounds: u32,
    pub rows: Vec<ThroughputRow>,
    /// Packets scan-guard dropped while wrk ran (should be 0).
    pub scan_guard_drops: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// "keep-alive" or "close".
    pub mode: String,
    /// "no XDP", "empty XDP_PASS", "scan-guard".
    pub variant: String,
    pub requests_per_sec: Vec<f64>,
    pub median: f64,
    pub vs_no_xdp: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scale {
    pub sources: u32,
    pub flood_secs: f64,
    pub flood_pps: f64,
    pub passed: u64,
    pub dropped: u64,
    pub maps: Vec<MapMemory>,
    pub memlock_total_bytes: u64,
    /// Kernel counters: after minus before the flood.
    pub stats_delta: BTreeMap<String, u64>,
    pub tracked_sources_after: usize,
    pub controller_cpu_secs: f64,
    /// Wall time over which the CPU time was taken (flood, scan and the waits).
    pub controller_cpu_window_secs: f64,
    /// Of one CPU.
    pub controller_cpu_percent: f64,
    pub nmap_ports: u32,
    pub nmap_secs: f64,
    pub nmap_caught: bool,
    pub nmap_detail: String,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MapMemory {
    pub name: String,
    pub map_type: u32,
    pub max_entries: u64,
    pub memlock_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlocklistOps {
    pub entries: u32,
    pub rows: Vec<OpRow>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpRow {
    pub name: String,
    pub secs: f64,
    pub us_per_entry: f64,
    pub note: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    /// None: could not be measured in this run.
    pub met: Option<bool>,
}
