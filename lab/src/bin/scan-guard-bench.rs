//! The benchmark runner behind `cargo xtask bench` (needs root).
//!
//! ```text
//! scan-guard-bench run [--smoke] [--only PART,...] --out FILE --controller PATH
//! scan-guard-bench report --results FILE --markdown FILE --charts DIR
//! ```
//! `run` writes the results as JSON and exits 1 when a part failed (the file is
//! written anyway); `report` turns a results file into Markdown and PNG charts.
//! Parts: per-packet, flood, throughput, scale, blocklist-ops.

use std::path::PathBuf;

use scan_guard_lab::bench::{self, Options, report};

fn usage() -> ! {
    eprintln!(
        "usage: scan-guard-bench run [--smoke] [--only PART,...] --out FILE --controller PATH\n       \
         scan-guard-bench report --results FILE --markdown FILE --charts DIR\n\
         parts: {}",
        bench::PARTS.join(", ")
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let mut flags = std::collections::HashMap::new();
    let mut smoke = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--out" | "--controller" | "--only" | "--results" | "--markdown" | "--charts" => {
                let Some(v) = it.next() else { usage() };
                flags.insert(a.clone(), v.clone());
            }
            _ => usage(),
        }
    }
    let path = |k: &str| flags.get(k).map(PathBuf::from).unwrap_or_else(|| usage());
    match cmd.as_str() {
        "run" => {
            if !scan_guard_lab::is_root() {
                eprintln!("scan-guard-bench run needs root (BPF, network namespaces)");
                std::process::exit(1);
            }
            let only: Vec<String> = flags
                .get("--only")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            if let Some(bad) = only.iter().find(|p| !bench::PARTS.contains(&p.as_str())) {
                eprintln!("unknown part {bad}");
                usage();
            }
            let opts = Options {
                smoke,
                only,
                controller: path("--controller"),
            };
            let out = path("--out");
            let results = bench::run(&opts);
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| {
                    panic!("creating {}: {e}", dir.display());
                });
            }
            let text = serde_json::to_string_pretty(&results).expect("serialising results");
            std::fs::write(&out, text).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
            eprintln!(
                "bench: results in {} ({:.1} min)",
                out.display(),
                results.wall_secs / 60.0
            );
            for g in &results.goals {
                let met = match g.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None if g.measured.starts_with("inconclusive") => "inconclusive",
                    None => "not measured",
                };
                eprintln!("bench: goal [{met}] {}: {}", g.goal, g.measured);
            }
            if !bench::all_ok(&results) {
                for p in results.parts.iter().filter(|p| p.status == "failed") {
                    eprintln!("bench: part {} failed: {}", p.part, p.detail);
                }
                std::process::exit(1);
            }
        }
        "report" => {
            if let Err(e) =
                report::write(&path("--results"), &path("--markdown"), &path("--charts"))
            {
                eprintln!("scan-guard-bench report: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}
