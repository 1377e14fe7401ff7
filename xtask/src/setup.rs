//! `cargo xtask setup`: the toolchain recipe of ARCHITECTURE.md section 2, made
//! idempotent. Installs only what is missing; when nothing is, it only looks
//! (a few `rustup` queries, well under a second).

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{bpf_linker, process, workspace::Workspace};

const RUSTUP_FIX: &str = "install rustup from https://rustup.rs (the eBPF program is \
                          built with a rustup-managed nightly)";

/// What the eBPF nightly is.
struct Nightly {
    release: String,
    llvm_major: u32,
    sysroot: PathBuf,
}

pub fn ensure(ws: &Workspace) -> Result<()> {
    let toolchain = ws.ebpf_toolchain()?;
    let nightly = ensure_nightly(ws, &toolchain)?;
    let prefix = ensure_llvm_prefix(ws, &toolchain, &nightly)?;
    if !ws.cargo_bin_on_path {
        eprintln!(
            "note: {} is not on your PATH; xtask adds it for what it runs, add it to your \
             shell profile so a plain `cargo build` finds bpf-linker too",
            ws.cargo_bin.display()
        );
    }
    bpf_linker::ensure(ws, &prefix, nightly.llvm_major)
}

/// The pinned nightly with rust-src, installed if needed.
fn ensure_nightly(ws: &Workspace, toolchain: &str) -> Result<Nightly> {
    if let Some(rustc_vv) = rustc_verbose_version(ws, toolchain)? {
        if has_rust_src(ws, toolchain)? {
            let nightly = describe(ws, toolchain, &rustc_vv)?;
            eprintln!(
                "{toolchain} present (rustc {}, LLVM {}, rust-src)",
                nightly.release, nightly.llvm_major
            );
            return Ok(nightly);
        }
        eprintln!("{toolchain} lacks rust-src: adding it (rustup)");
        let mut cmd = ws.command("rustup");
        cmd.args(["component", "add", "rust-src", "--toolchain", toolchain]);
        process::run(&mut cmd, RUSTUP_FIX, &network_hint(toolchain))?;
    } else {
        eprintln!("installing {toolchain} with rust-src (rustup, ~1 min)");
        let mut cmd = ws.command("rustup");
        cmd.args(["toolchain", "install", toolchain, "--profile", "minimal"])
            .args(["--component", "rust-src"]);
        process::run(&mut cmd, RUSTUP_FIX, &network_hint(toolchain))?;
    }

    let rustc_vv = rustc_verbose_version(ws, toolchain)?.with_context(|| {
        format!(
            "`rustup run {toolchain} rustc` still fails after installing it: {}",
            network_hint(toolchain)
        )
    })?;
    if !has_rust_src(ws, toolchain)? {
        bail!(
            "{toolchain} still lacks rust-src after installing it: run \
             `rustup component add rust-src --toolchain {toolchain}` and read its error"
        );
    }
    let nightly = describe(ws, toolchain, &rustc_vv)?;
    eprintln!(
        "{toolchain} installed (rustc {}, LLVM {})",
        nightly.release, nightly.llvm_major
    );
    Ok(nightly)
}

fn network_hint(toolchain: &str) -> String {
    format!(
        "rustup needs network access to static.rust-lang.org; fix what it reports above \
         and rerun `cargo xtask setup` (the toolchain name comes from the repository's \
         `ebpf-toolchain` file: {toolchain})"
    )
}

/// `rustc -vV` of the toolchain, or None when it is not installed.
fn rustc_verbose_version(ws: &Workspace, toolchain: &str) -> Result<Option<String>> {
    let out = process::output(
        ws.command("rustup")
            .args(["run", toolchain, "rustc", "-vV"]),
        RUSTUP_FIX,
    )?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn has_rust_src(ws: &Workspace, toolchain: &str) -> Result<bool> {
    let out = process::output(
        ws.command("rustup")
            .args(["component", "list", "--toolchain", toolchain, "--installed"]),
        RUSTUP_FIX,
    )?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "rust-src"))
}

fn describe(ws: &Workspace, toolchain: &str, rustc_vv: &str) -> Result<Nightly> {
    let field = |name: &str| {
        rustc_vv
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let release = field("release:").unwrap_or("?").to_string();
    let llvm = field("LLVM version:")
        .with_context(|| format!("`rustc +{toolchain} -vV` reports no LLVM version"))?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected LLVM version {llvm:?} from rustc +{toolchain}"))?;

    let out = process::output(
        ws.command("rustup")
            .args(["run", toolchain, "rustc", "--print", "sysroot"]),
        RUSTUP_FIX,
    )?;
    if !out.status.success() {
        bail!(
            "`rustup run {toolchain} rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(Nightly {
        release,
        llvm_major,
        sysroot,
    })
}

/// `$HOME/.cache/scan-guard/llvm-<toolchain>/lib` with symlinks to the nightly's
/// libLLVM, the LLVM_PREFIX bpf-linker is built against (it keeps it as RUNPATH).
fn ensure_llvm_prefix(ws: &Workspace, toolchain: &str, nightly: &Nightly) -> Result<PathBuf> {
    let lib_dir = nightly.sysroot.join("lib");
    let mut libs: Vec<String> = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libLLVM.so."))
        .collect();
    libs.sort();
    let Some(lib) = libs.first() else {
        bail!(
            "{toolchain} ships no libLLVM.so.* in {}, which bpf-linker {} links against: \
             pin a nightly that does in the repository's `ebpf-toolchain` file",
            lib_dir.display(),
            bpf_linker::VERSION
        );
    };

    let prefix = ws.cache.join(format!("llvm-{toolchain}"));
    let target = lib_dir.join(lib);
    let mut changed = false;
    for name in ["libLLVM.so", lib.as_str()] {
        changed |= symlink(&target, &prefix.join("lib").join(name))?;
    }
    let verb = if changed { "linked" } else { "present" };
    eprintln!(
        "LLVM {} prefix {verb}: {}",
        nightly.llvm_major,
        ws.display(&prefix)
    );
    Ok(prefix)
}

/// Points `link` at `target` (like `ln -sfn`); returns whether anything changed.
fn symlink(target: &Path, link: &Path) -> Result<bool> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let fix = || {
        format!(
            "creating the symlink {} -> {}: make sure that directory is writable",
            link.display(),
            target.display()
        )
    };
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).with_context(fix)?;
    }
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).with_context(fix),
        _ => {}
    }
    std::os::unix::fs::symlink(target, link).with_context(fix)?;
    Ok(true)
}
