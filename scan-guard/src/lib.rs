//! scan-guard controller library: loading and attaching the XDP program, typed
//! access to its maps, detection, enforcement and export, and the pieces the
//! CLI is built from. The integration tests
//! use the same library, so what they exercise is what users run.

// The parts, lowest first; each imports only from itself and the parts above
// it in this list (docs/architecture.md draws the flow).
pub mod base;
pub mod cli;
pub mod config;
pub mod detect;
pub mod enforce;
pub mod export;
pub mod kernel;
pub mod runner;

#[cfg(test)]
mod layering;

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
