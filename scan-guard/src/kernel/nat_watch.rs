//! The NAT-rule watcher. Listing the nat table needs CAP_NET_ADMIN, and the
//! controller gives up every capability once attached; so before that it starts
//! itself again as `scan-guard nat-watch`, a child that keeps only CAP_NET_ADMIN,
//! dies with its parent, reads the rules every `detection.nat_refresh` and prints
//! the published ports as one JSON line whenever they change.

use std::{
    io::{Read as _, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    sync::watch,
};

use crate::kernel::published::{self, Published};

/// Name of the hidden subcommand the controller starts.
pub const SUBCOMMAND: &str = "nat-watch";

/// Longest a rule dump may take before it is abandoned for this round.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// The child's side: read, print on change, until the parent goes away.
pub fn run_child(interval: Duration) -> Result<()> {
    // SAFETY: prctl with constant arguments; the parent may already be gone.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    if unsafe { libc::getppid() } == 1 {
        return Ok(());
    }
    crate::base::privileges::keep_only(&[
        caps::Capability::CAP_NET_ADMIN,
        caps::Capability::CAP_NET_RAW,
    ])?;
    let mut last: Option<Published> = None;
    let mut portless_reported = false;
    loop {
        let now = read_rules();
        if now.portless_rules > 0 && !portless_reported {
            eprintln!(
                "scan-guard nat-watch: {} DNAT/REDIRECT rule(s) name no destination port; the ports they forward stay scored",
                now.portless_rules
            );
            portless_reported = true;
        }
        if last.as_ref() != Some(&now) {
            let line = serde_json::to_string(&now)?;
            let mut out = std::io::stdout().lock();
            // The controller closed its end: it is gone, so are we.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
            last = Some(now);
        }
        std::thread::sleep(interval);
    }
}

/// Every source of rules that exists on this host, merged.
fn read_rules() -> Published {
    let mut all = Published::default();
    for tool in ["iptables-save", "ip6tables-save"] {
        if let Some(text) = dump(tool, &["-t", "nat"]) {
            all.merge(published::from_iptables_save(&text));
        }
    }
    if let Some(text) = dump("nft", &["-j", "list", "ruleset"]) {
        match published::from_nft_json(&text) {
            Ok(p) => all.merge(p),
            Err(e) => eprintln!("scan-guard nat-watch: nft printed no JSON: {e}"),
        }
    }
    all
}

/// Output of one dump, `None` when the tool is missing, fails or hangs.
fn dump(tool: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < DUMP_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let text = reader.join().ok()?.ok()?;
    status.success().then_some(text)
}

/// The controller's side: the running watcher and its latest report.
pub struct Watcher {
    pub ports: watch::Receiver<Published>,
    _child: tokio::process::Child,
}

impl Watcher {
    /// Starts the child (while the controller still holds its capabilities) and
    /// waits up to `first_report` for its first reading, so the bitmap written
    /// before attaching already holds the published ports.
    pub async fn start(interval: Duration, first_report: Duration) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the scan-guard binary")?;
        let mut child = tokio::process::Command::new(exe)
            .arg(SUBCOMMAND)
            .arg("--interval-ms")
            .arg(interval.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the NAT-rule watcher")?;
        let stdout = child
            .stdout
            .take()
            .context("the NAT-rule watcher has no output pipe")?;
        let (tx, mut rx) = watch::channel(Published::default());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Published>(&line) {
                    Ok(p) => {
                        if p != *tx.borrow() {
                            tracing::info!("NAT-published ports: tcp {:?}, udp {:?}", p.tcp, p.udp);
                        }
                        tx.send_replace(p);
                    }
                    Err(e) => tracing::warn!("NAT-rule watcher printed {line:?}: {e}"),
                }
            }
            tracing::warn!(
                "the NAT-rule watcher stopped: published ports stay as last read until restart"
            );
        });
        if tokio::time::timeout(first_report, rx.changed())
            .await
            .is_err()
        {
            tracing::warn!("the NAT-rule watcher has not reported yet; going on without");
        }
        rx.mark_unchanged();
        Ok(Self {
            ports: rx,
            _child: child,
        })
    }
}
