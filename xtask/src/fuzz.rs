//! `cargo xtask fuzz [--frames N] [--seconds S] [--targets LIST] [--no-differential]`:
//! the fuzzing of issue 6, in one command.
//!
//! 1. The differential test (`tests/tests/xdp_differential.rs`): N random and
//!    mutated frames through the real XDP program (BPF_PROG_TEST_RUN) and through the
//!    reference model, which must agree on every verdict, counter, event and block.
//!    Release build, `SCAN_GUARD_FUZZ_FRAMES=N`. Needs root.
//! 2. The cargo-fuzz targets of `fuzz/` (config, cidr, duration, ring_records,
//!    state_file: the userspace parsers and what the controller does with their
//!    output), S seconds each, with the pinned nightly (`ebpf-toolchain`, installed
//!    by setup) and cargo-fuzz (installed with `cargo install cargo-fuzz --locked`
//!    when missing). Seeds come from `fuzz/seeds/<target>`, dictionaries from
//!    `fuzz/dicts/<target>.dict`; the grown corpus stays in `fuzz/corpus/<target>`
//!    and crashes in `fuzz/artifacts/<target>/` (both ignored by git). Before each
//!    target runs, every input in `fuzz/regressions/<target>/` (one file per problem
//!    found so far) is replayed once: a failing one is a known bug still there.
//!
//! Every step is bounded; a crash or a failing differential run is reported with
//! its reproducer, and the command fails after running everything.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{privilege, process, setup, workspace::Workspace};

/// The cargo-fuzz targets in fuzz/Cargo.toml.
pub const TARGETS: [&str; 5] = ["config", "cidr", "duration", "ring_records", "state_file"];

const CARGO_FIX: &str = "install Rust with rustup (https://rustup.rs)";

#[derive(clap::Args)]
pub struct Args {
    /// Frames for the differential test (XDP program vs reference model).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    frames: u64,
    /// Seconds per cargo-fuzz target; 0 skips the targets.
    #[arg(long, value_name = "S", default_value_t = 15)]
    seconds: u32,
    /// Only these cargo-fuzz targets, comma-separated (config, cidr, duration,
    /// ring_records, state_file).
    #[arg(long, value_name = "LIST")]
    targets: Option<String>,
    /// Skip the differential test (it needs root).
    #[arg(long)]
    no_differential: bool,
}

/// What one step found.
struct Outcome {
    name: String,
    ok: bool,
    summary: String,
}

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    let targets: Vec<&str> = match &args.targets {
        None => TARGETS.to_vec(),
        Some(list) => {
            let picked: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if let Some(bad) = picked.iter().find(|t| !TARGETS.contains(t)) {
                bail!(
                    "no fuzz target {bad:?}; the targets are {}",
                    TARGETS.join(", ")
                );
            }
            picked
        }
    };
    if !args.no_differential {
        privilege::require_root(
            "cargo xtask fuzz",
            "the differential test runs the XDP program in the kernel (BPF_PROG_TEST_RUN); \
             pass --no-differential to run only the cargo-fuzz targets",
        )?;
    }
    setup::ensure(ws)?;
    let mut outcomes = Vec::new();
    if !args.no_differential {
        outcomes.push(differential(ws, args.frames)?);
    }
    if args.seconds > 0 && !targets.is_empty() {
        outcomes.extend(fuzz_targets(ws, &targets, args.seconds)?);
    }

    eprintln!("\nfuzz summary:");
    for o in &outcomes {
        eprintln!(
            "  {:<34} {:<6} {}",
            o.name,
            if o.ok { "ok" } else { "FAILED" },
            o.summary
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems in: {} (reproducers above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs `cmd` under `timeout`, capturing its output; returns (success, stdout+stderr).
fn bounded(ws: &Workspace, limit_s: u64, cmd: &Command) -> Result<(bool, Option<i32>, String)> {
    let mut t = ws.command("timeout");
    t.args(["-k", "10", &limit_s.to_string()])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let out = process::output(&mut t, "timeout comes with coreutils")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), out.status.code(), text))
}

fn differential(ws: &Workspace, frames: u64) -> Result<Outcome> {
    eprintln!("differential test: building the test binary (release)");
    process::run(
        ws.cargo().args([
            "test",
            "--release",
            "--package",
            "scan-guard-tests",
            "--test",
            "xdp_differential",
            "--no-run",
        ]),
        CARGO_FIX,
        "fix the build errors above",
    )?;
    eprintln!("differential test: {frames} frames through the XDP program and the model");
    let mut cmd = ws.cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "scan-guard-tests",
        "--test",
        "xdp_differential",
        "--",
        "--nocapture",
    ])
    .env("SCAN_GUARD_FUZZ_FRAMES", frames.to_string());
    let started = Instant::now();
    // Generous: ~10 s per million frames here, bounded all the same.
    let limit = 300 + frames / 2_000;
    let (ok, code, text) = bounded(ws, limit, &cmd)?;
    let secs = started.elapsed().as_secs_f64();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("differential:"))
        .collect();
    for l in &lines {
        eprintln!("  {l}");
    }
    if !ok {
        eprintln!("{text}");
        let why = if code == Some(124) {
            format!("stopped after {limit} s")
        } else {
            "see the output above (it names the seed: rerun with SCAN_GUARD_FUZZ_SEED)".into()
        };
        return Ok(Outcome {
            name: "differential".into(),
            ok: false,
            summary: format!("{frames} frames: {why}"),
        });
    }
    Ok(Outcome {
        name: "differential".into(),
        ok: true,
        summary: format!(
            "{frames} frames in {secs:.0} s, program and model identical ({} runs)",
            lines.len()
        ),
    })
}

/// `cargo-fuzz` present, or installed now.
fn ensure_cargo_fuzz(ws: &Workspace) -> Result<()> {
    if ws.which("cargo-fuzz").is_some() {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz (cargo install cargo-fuzz --locked; once, ~1 min)");
    process::run(
        ws.cargo().args(["install", "cargo-fuzz", "--locked"]),
        CARGO_FIX,
        "cargo install needs network access to crates.io; fix what it reports above and rerun",
    )
}

/// `cargo fuzz ...` with the pinned nightly (through rustup, whatever toolchain runs
/// xtask), from the repository root.
fn cargo_fuzz(ws: &Workspace, nightly: &str) -> Command {
    let mut cmd = ws.command("rustup");
    cmd.args(["run", nightly, "cargo", "fuzz"]);
    // Set by the cargo that runs xtask; they would pin the inner build to stable.
    for k in [
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

fn fuzz_targets(ws: &Workspace, targets: &[&str], seconds: u32) -> Result<Vec<Outcome>> {
    ensure_cargo_fuzz(ws)?;
    let nightly = ws.ebpf_toolchain()?;
    eprintln!(
        "cargo-fuzz: building {} with {nightly} (sanitizer build; the first one takes minutes)",
        targets.join(", ")
    );
    let mut build = cargo_fuzz(ws, &nightly);
    build.args(["build", "--fuzz-dir", "fuzz"]);
    process::run(&mut build, CARGO_FIX, "fix the build errors above")?;

    let mut out = Vec::new();
    for t in targets {
        out.extend(regressions(ws, &nightly, t)?);
        let corpus = ws.root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = ws.root.join("fuzz/seeds").join(t);
        let dict = ws.root.join("fuzz/dicts").join(format!("{t}.dict"));
        let mut cmd = cargo_fuzz(ws, &nightly);
        cmd.args(["run", "--fuzz-dir", "fuzz", t]).arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048");
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        eprintln!("cargo-fuzz: {t} for {seconds} s");
        let (ok, code, text) = bounded(ws, u64::from(seconds) + 300, &cmd)?;
        out.push(judge(ws, t, ok, code, &text));
    }
    Ok(out)
}

/// Replays `fuzz/regressions/<target>/*`: inputs that once broke an invariant (kept
/// by hand, one file per problem), each run once. A failing one is a known bug
/// still there.
fn regressions(ws: &Workspace, nightly: &str, target: &str) -> Result<Vec<Outcome>> {
    let dir = ws.root.join("fuzz/regressions").join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = format!(
            "{target}/{}",
            f.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let mut cmd = cargo_fuzz(ws, nightly);
        cmd.args(["run", "--fuzz-dir", "fuzz", target]).arg(&f);
        let (ok, _, text) = bounded(ws, 300, &cmd)?;
        eprintln!(
            "cargo-fuzz: regression {name}: {}",
            if ok { "passes" } else { "still fails" }
        );
        out.push(Outcome {
            name,
            ok,
            summary: if ok {
                "regression input passes".into()
            } else {
                format!(
                    "known reproducer still fails: {}",
                    panic_summary(&text).unwrap_or_else(|| "see `cargo fuzz run` on it".into())
                )
            },
        });
    }
    Ok(out)
}

/// The panic message and the first frames of our own code in its backtrace (or
/// the sanitizer's error line).
fn panic_summary(text: &str) -> Option<String> {
    const SKIP: [&str; 19] = [
        "__libfuzzer_sys_run",
        "do_call",
        "catch_unwind",
        "map_or",
        "std::",
        "core::",
        "alloc::",
        "__rust",
        "rust_begin",
        "_ZN",
        "libfuzzer_sys",
        "rust_fuzzer",
        "test_input_wrap",
        "expect",
        "unwrap",
        "{closure",
        "spec_to_string",
        "to_string",
        "<",
    ];
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .map(|i| {
            let message = lines.get(i + 1).copied().unwrap_or("").trim();
            let frames: Vec<&str> = lines[i..]
                .iter()
                .take(80)
                .filter_map(|l| {
                    let (n, sym) = l.trim_start().split_once(": ")?;
                    n.parse::<u32>().ok()?;
                    Some(sym.trim())
                })
                .filter(|sym| !SKIP.iter().any(|p| sym.starts_with(p)))
                .take(3)
                .collect();
            format!("{message} (in {})", frames.join(" <- "))
        })
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.contains("ERROR: AddressSanitizer") || l.contains("ERROR: libFuzzer"))
                .map(|l| l.to_string())
        })
}

/// Reads libFuzzer's report: executions, corpus, and a crash with its reproducer.
fn judge(ws: &Workspace, target: &str, ok: bool, code: Option<i32>, text: &str) -> Outcome {
    let stat = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let execs = stat("stat::number_of_executed_units:").unwrap_or_else(|| "?".into());
    let rate = stat("stat::average_exec_per_sec:").unwrap_or_else(|| "?".into());
    let corpus = text
        .lines()
        .rev()
        .find_map(|l| {
            let i = l.find("corp: ")?;
            l[i + 6..].split_whitespace().next().map(str::to_string)
        })
        .unwrap_or_else(|| "?".into());
    if ok {
        return Outcome {
            name: target.into(),
            ok: true,
            summary: format!("{execs} execs ({rate}/s), corpus {corpus}, no crash"),
        };
    }
    let artifact = text.lines().rev().find_map(|l| {
        let i = l.find("fuzz/artifacts/")?;
        Some(l[i..].split_whitespace().next()?.to_string())
    });
    let panic = panic_summary(text);
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- {target}: libFuzzer output ---");
    let from = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("==ERROR"))
        .unwrap_or(lines.len().saturating_sub(40));
    for l in &lines[from..] {
        eprintln!("{l}");
    }
    let summary = match (&artifact, code) {
        (Some(a), _) => format!(
            "crash after {execs} execs: {}; reproduce: cargo +{} fuzz run --fuzz-dir fuzz {target} {a}",
            panic.as_deref().unwrap_or("see the output above"),
            ws.ebpf_toolchain().unwrap_or_else(|_| "nightly".into())
        ),
        (None, Some(124)) => "ran into its time bound".into(),
        (None, _) => format!(
            "failed without a crash artifact: {}",
            panic.as_deref().unwrap_or("see the output above")
        ),
    };
    Outcome {
        name: target.into(),
        ok: false,
        summary,
    }
}
