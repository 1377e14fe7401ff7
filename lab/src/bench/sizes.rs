//! How much of everything a benchmark run does: the full sizes and the smoke
//! sizes (`--smoke`, seconds in all, for CI).

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub repeat: u32,
    pub rounds: u32,
    pub new_sources: u32,
    pub block_sizes: Vec<u32>,
    pub flood_entries: Vec<u32>,
    pub flood_calibrate: u32,
    pub flood_secs: f64,
    pub flood_rounds: u32,
    pub flood_batch: u32,
    pub wrk_secs: u32,
    pub wrk_rounds: u32,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub scale_sources: u32,
    pub nmap_ports: u32,
    pub ops_entries: u32,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            repeat: 1_000_000,
            rounds: 7,
            new_sources: 20_000,
            block_sizes: vec![1, 10_000, 1_000_000],
            flood_entries: vec![1, 10_000],
            flood_calibrate: 200_000,
            flood_secs: 0.6,
            flood_rounds: 5,
            flood_batch: 64,
            wrk_secs: 3,
            wrk_rounds: 5,
            wrk_threads: 1,
            wrk_connections: 32,
            scale_sources: 1_000_000,
            nmap_ports: 1000,
            ops_entries: 100_000,
        }
    }

    /// Every part, tiny: seconds in total, for CI.
    pub fn smoke() -> Self {
        Self {
            repeat: 10_000,
            rounds: 1,
            new_sources: 100,
            block_sizes: vec![1, 100],
            flood_entries: vec![1, 100],
            flood_calibrate: 5_000,
            flood_secs: 0.02,
            flood_rounds: 1,
            flood_batch: 64,
            wrk_secs: 1,
            wrk_rounds: 1,
            wrk_threads: 1,
            wrk_connections: 8,
            scale_sources: 2_000,
            nmap_ports: 100,
            ops_entries: 1_000,
        }
    }
}
