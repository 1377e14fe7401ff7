//! Building the scan-guard controller (its build.rs embeds the XDP program).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use crate::{process, workspace::Workspace};

#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release { Self::Release } else { Self::Debug }
    }
}

/// `cargo build -p scan-guard`; returns the path of the scan-guard executable.
/// Call [`crate::setup::ensure`] first.
pub fn scan_guard(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let mut cmd = ws.cargo();
    cmd.args(["build", "--package", "scan-guard", "--bin", "scan-guard"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    if let Profile::Release = profile {
        cmd.arg("--release");
    }
    let mut child = cmd.spawn().map_err(|e| {
        process::spawn_error(&cmd, e, "install Rust with rustup (https://rustup.rs)")
    })?;

    // Diagnostics and progress go to stderr as usual; stdout carries the artifacts.
    let mut exe = None;
    for line in BufReader::new(child.stdout.take().context("cargo stdout")?).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "scan-guard" {
            if let Some(path) = msg["executable"].as_str() {
                exe = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): see the errors above",
            process::describe(&cmd)
        );
    }
    exe.context("cargo build succeeded but reported no scan-guard executable")
}
