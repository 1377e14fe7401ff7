//! Builds the XDP program with the pinned nightly and bpf-linker, and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toolchain_file = manifest.join("../ebpf-toolchain");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let toolchain = toolchain.trim();

    // Fail with the fix, not with a wall of cargo output.
    let nightly_ok = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let linker_ok = Command::new("bpf-linker").arg("--version").output().is_ok();
    if !nightly_ok || !linker_ok {
        let missing = match (nightly_ok, linker_ok) {
            (false, false) => format!("the {toolchain} toolchain and bpf-linker"),
            (false, true) => format!("the {toolchain} toolchain"),
            _ => "bpf-linker (on PATH)".to_string(),
        };
        bail!("building the XDP program needs {missing}: run `cargo xtask setup` once");
    }

    let ebpf_dir = manifest.join("../scan-guard-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to scan-guard-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "scan-guard-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
}
