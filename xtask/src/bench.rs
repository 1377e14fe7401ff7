//! `cargo xtask bench [--smoke] [--only PART,...]`: set up, install the lab and
//! baseline packages, build the controller and the benchmark runner (release),
//! run every benchmark (`scan-guard-bench run`, lab/src/bench/), then regenerate
//! BENCHMARKS.md and the charts under bench/ from `target/bench/results.json`.
//!
//! `--smoke` runs every part with tiny sizes (seconds; CI) and writes its results,
//! report and charts under `target/bench/smoke/`, leaving the committed
//! BENCHMARKS.md and bench/ alone.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::{self, Package},
    privilege, process, setup,
    workspace::Workspace,
};

/// Baselines and tools the benchmarks compare with, beyond the lab packages.
/// Keep in sync with `.ci/run` when CI runs `cargo xtask bench --smoke`.
pub const BENCH_PACKAGES: &[Package] = &[
    Package {
        name: "xdp-tools",
        program: "xdp-filter",
    },
    Package {
        name: "nftables",
        program: "nft",
    },
    Package {
        name: "iptables",
        program: "iptables",
    },
    Package {
        name: "ipset",
        program: "ipset",
    },
];

/// The TrueType font the charts are drawn with (Debian: fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Bound of the benchmark runner: a safety net well above the expected time
/// (about 3 minutes for the full run, seconds for --smoke).
const FULL_LIMIT_SECS: u32 = 1500;
const SMOKE_LIMIT_SECS: u32 = 300;

const CARGO_FIX: &str = "install Rust with rustup (https://rustup.rs)";

pub fn run(ws: &Workspace, smoke: bool, only: Option<&str>) -> Result<()> {
    privilege::require_root(
        "cargo xtask bench",
        "the benchmarks load XDP programs, create network namespaces and run servers and \
         scanners inside them",
    )?;
    setup::ensure(ws)?;
    apt::ensure(ws, apt::LAB_PACKAGES, "the test lab")?;
    apt::ensure(ws, BENCH_PACKAGES, "the benchmark baselines")?;
    if !Path::new(FONT).is_file() && ws.which("apt-get").is_some() {
        apt::ensure(
            ws,
            &[Package {
                name: "fonts-dejavu-core",
                program: "fc-list",
            }],
            "the benchmark charts",
        )?;
    }

    eprintln!("building the controller and the benchmark runner (release)");
    let (controller, runner) = build(ws)?;
    // target/release/<exe> -> target/bench
    let target = controller
        .parent()
        .and_then(Path::parent)
        .context("controller binary is not in target/<profile>/")?;
    let out_dir = if smoke {
        target.join("bench/smoke")
    } else {
        target.join("bench")
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let results = out_dir.join("results.json");
    let _ = std::fs::remove_file(&results);

    let limit = if smoke {
        SMOKE_LIMIT_SECS
    } else {
        FULL_LIMIT_SECS
    };
    let mut cmd = ws.command("timeout");
    cmd.args(["-k", "10", &limit.to_string()])
        .arg(&runner)
        .arg("run")
        .arg("--out")
        .arg(&results)
        .arg("--controller")
        .arg(&controller);
    if smoke {
        cmd.arg("--smoke");
    }
    if let Some(parts) = only {
        cmd.args(["--only", parts]);
    }
    eprintln!(
        "running the benchmarks{} (results: {})",
        if smoke { " (smoke sizes)" } else { "" },
        ws.display(&results)
    );
    let status = cmd
        .status()
        .map_err(|e| process::spawn_error(&cmd, e, "timeout comes with coreutils"))?;
    if !results.is_file() {
        bail!(
            "the benchmark runner wrote no results ({status}{}): see its output above",
            if status.code() == Some(124) {
                format!(", stopped after {limit} s")
            } else {
                String::new()
            }
        );
    }

    let (markdown, charts) = if smoke {
        (out_dir.join("BENCHMARKS.md"), out_dir.join("charts"))
    } else {
        (ws.root.join("BENCHMARKS.md"), ws.root.join("bench"))
    };
    process::run(
        ws.command(&runner)
            .arg("report")
            .arg("--results")
            .arg(&results)
            .arg("--markdown")
            .arg(&markdown)
            .arg("--charts")
            .arg(&charts),
        CARGO_FIX,
        "the report could not be written: see the error above",
    )?;
    eprintln!(
        "wrote {} and charts in {}",
        ws.display(&markdown),
        ws.display(&charts)
    );
    if !status.success() {
        bail!("a benchmark part failed ({status}): see `bench: ... FAILED` above and the report");
    }
    Ok(())
}

/// Builds scan-guard and scan-guard-bench with the release profile; returns their
/// paths as cargo reports them.
fn build(ws: &Workspace) -> Result<(PathBuf, PathBuf)> {
    let mut cmd = ws.cargo();
    cmd.args(["build", "--release"])
        .args(["--package", "scan-guard", "--bin", "scan-guard"])
        .args(["--package", "scan-guard-lab", "--bin", "scan-guard-bench"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| process::spawn_error(&cmd, e, CARGO_FIX))?;
    let (mut controller, mut runner) = (None, None);
    for line in BufReader::new(child.stdout.take().context("cargo stdout")?).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        match msg["target"]["name"].as_str() {
            Some("scan-guard") => controller = Some(PathBuf::from(exe)),
            Some("scan-guard-bench") => runner = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): see the errors above",
            process::describe(&cmd)
        );
    }
    Ok((
        controller.context("cargo reported no scan-guard executable")?,
        runner.context("cargo reported no scan-guard-bench executable")?,
    ))
}
