//! The results as people read them (a fixed-width table) and as the benchmarks
//! read them (JSON under target/bench/).

use std::path::{Path, PathBuf};

use super::measure::{FAST_MS, FAST_PROBES, Outcome, SLOW_PROBES};

/// The attack table: attack, source, detected as, probes that reached the target
/// before the block, time to block, blocked.
pub fn attacks(rows: &[Outcome]) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let src_w = rows
        .iter()
        .map(|r| r.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<name_w$}  {:<src_w$}  {:<13}  {:>14}  {:>13}  {:<7}\n",
        "attack", "source", "detected as", "probes reached", "time to block", "blocked"
    );
    out.push_str(&format!(
        "{}\n",
        "-".repeat(name_w + src_w + 13 + 14 + 13 + 7 + 10)
    ));
    for r in rows {
        let detected = match (&r.kind, r.detected) {
            (Some(k), true) if r.kind_ok => k.clone(),
            (Some(k), true) => format!("{k} (!)"),
            _ => "no".to_owned(),
        };
        let mark = if r.time_method == "event" { "*" } else { " " };
        let time = match r.time_to_block_ms {
            Some(ms) if ms >= 1000.0 => format!("{:.1} s{mark}", ms / 1000.0),
            Some(ms) => format!("{ms:.1} ms{mark}"),
            None => "- ".to_owned(),
        };
        let blocked = if r.blocked && r.listed { "yes" } else { "NO" };
        let mut probes = r.probes_reached_target.to_string();
        if r.leaked_after_block > 0 {
            probes = format!("{probes} ({} late)", r.leaked_after_block);
        }
        out.push_str(&format!(
            "{:<name_w$}  {:<src_w$}  {:<13}  {:>14}  {:>13}  {:<7}\n",
            r.name, r.source, detected, probes, time, blocked
        ));
    }
    out
}

/// What the table's marks mean (empty when it has none).
pub fn footnotes(rows: &[Outcome]) -> String {
    let mut out = String::new();
    if rows
        .iter()
        .any(|r| r.time_method == "event" && r.time_to_block_ms.is_some())
    {
        out.push_str(
            "times: first probe to first dropped probe, from captures at both ends of the wire;\n\
             * to the `blocked` event's time instead (kernel clock, a tick is a few ms): invalid-flag\n  \
             probes are dropped whatever their source\n",
        );
    }
    if rows
        .iter()
        .any(|r| r.slow && r.time_method == "event" && r.time_to_block_ms.is_some())
    {
        out.push_str("  (and a slow scan sends no probe into the block soon enough)\n");
    }
    if rows.iter().any(|r| r.leaked_after_block > 0) {
        out.push_str("late: probes that reached the target after the block\n");
    }
    out
}

/// Lines about the rows that miss the targets (never hidden).
pub fn misses(rows: &[Outcome]) -> Vec<String> {
    let mut v = Vec::new();
    for r in rows {
        if !r.blocked {
            continue;
        }
        if !r.meets_probe_target {
            let t = if r.slow { SLOW_PROBES } else { FAST_PROBES };
            v.push(format!(
                "{}: {} probes reached the target (target: at most {t})",
                r.name, r.probes_reached_target
            ));
        }
        if !r.meets_time_target {
            v.push(format!(
                "{}: blocked {} after the first probe (target: {FAST_MS} ms)",
                r.name,
                r.time_to_block_ms
                    .map_or("-".to_owned(), |t| format!("{t:.1} ms"))
            ));
        }
    }
    v
}

/// `target/` of this build: the first ancestor of the running executable that
/// holds cargo's CACHEDIR.TAG (`target/debug/deps/x` or `target/release/x`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not inside a cargo target directory", exe.display()))
}

/// Writes `value` as pretty JSON to `target/bench/<name>` and returns the path.
pub fn write_bench_json(name: &str, value: &serde_json::Value) -> PathBuf {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).expect("JSON");
    std::fs::write(&path, text + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
