//! scan-guard controller library: loading and attaching the XDP program, typed
//! access to its maps, and the pieces the CLI is built from. The integration tests
//! use the same library, so what they exercise is what users run.

pub mod bpffs;
pub mod cidr;
pub mod clock;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod detector;
pub mod enforcer;
pub mod error;
pub mod events;
pub mod instance;
pub mod journal;
pub mod kernel;
pub mod kernel_maps;
pub mod kinds;
pub mod listeners;
pub mod loader;
pub mod metrics;
pub mod nat_watch;
pub mod neverblock;
pub mod persist;
pub mod privileges;
pub mod published;
pub mod retry;
pub mod runner;

/// The compiled XDP program, embedded at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scan-guard"));

/// Benchmark baseline: an XDP program that only returns XDP_PASS (program
/// `baseline_pass`), for per-packet cost ratios measured in the same run.
pub static BASELINE_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline-pass"));

/// Benchmark programs: the reference filters (`ref_source_drop`,
/// `ref_source_lookup_drop`) and the random-source driver that tail-calls the
/// program under test (`random_source_driver`).
pub static BENCH_PROGRAMS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-programs"));
