//! Scanners in the attacker namespace: nmap in the foreground or in the
//! background ([`Background`]), and waiting for the controller's verdict while a
//! scan runs.

use std::{
    net::IpAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    cmd::{describe, describe_status, read_lossy},
    controller::{Controller, is_event},
    process::Proc,
    topology::Lab,
};

/// A command the lab runs in the background (e.g. a scan), with its output file.
#[derive(Debug)]
pub struct Background {
    pub proc: Proc,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Its command line (for messages).
    pub what: String,
}

/// nmap arguments for a quick TCP SYN host sweep probing `ports` (e.g. "80" or
/// "22,80,443"). Never -Pn with -sn (nmap would send nothing), and no ARP
/// discovery (the lab's hosts would answer it instead).
pub fn quick_sweep_args(ports: &str) -> Vec<String> {
    [
        "-sn",
        "-n",
        &format!("-PS{ports}"),
        "--disable-arp-ping",
        "-T4",
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "200ms",
        "--host-timeout",
        "20s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// nmap arguments of a quick `scan` (`-sS`, `-sT`, ...) of the privileged ports 1-200
/// (mostly closed), given up after `host_timeout`; the target goes after them.
/// Quick timing, bounded retries and timeouts: most probes are dropped once the
/// kernel blocks.
pub fn quick_scan_args<'a>(scan: &'a str, host_timeout: &'a str) -> Vec<&'a str> {
    vec![
        scan,
        "-n",
        "-Pn",
        "-T4",
        "-p",
        "1-200",
        "--max-retries",
        "1",
        "--max-rtt-timeout",
        "200ms",
        "--host-timeout",
        host_timeout,
    ]
}

impl Lab {
    /// Runs `nmap ARGS` in the attacker namespace, bounded by `limit` (give nmap its
    /// own `--host-timeout` below it); panics unless nmap exits 0. Returns stdout.
    pub fn nmap(&self, args: &[&str], limit: Duration) -> String {
        let mut full = vec!["nmap"];
        full.extend_from_slice(args);
        let out = self.exec_in_for(&self.att.ns, limit, &full);
        if !out.status.success() {
            panic!(
                "[lab {}] {} (in {}): {}",
                self.tag,
                full.join(" "),
                self.att.ns,
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `nmap ARGS` in the attacker namespace in the background (bounded by
    /// [`SPAWN_TIMEOUT`]; give it a `--host-timeout` too).
    pub fn spawn_nmap(&self, args: &[&str]) -> Background {
        let mut full = vec!["nmap"];
        full.extend_from_slice(args);
        let log = self.file("nmap", "log");
        let proc = self.spawn_in(&self.att.ns, &full, &log);
        Background {
            proc,
            log,
            what: full.join(" "),
        }
    }

    /// A fast SYN scan of 200 low ports from the attacker, in the background.
    pub fn fast_syn_scan(&self) -> Background {
        self.fast_syn_scan_of(IpAddr::V4(self.tgt.v4))
    }

    /// [`fast_syn_scan`](Self::fast_syn_scan) of `target` (IPv4 or IPv6).
    pub fn fast_syn_scan_of(&self, target: IpAddr) -> Background {
        let target = target.to_string();
        let mut args = quick_scan_args("-sS", "30s");
        if target.contains(':') {
            args.push("-6");
        }
        args.push(&target);
        self.spawn_nmap(&args)
    }

    /// Ends a background command: if it already finished it must have exited 0 (else
    /// this panics with its output); if it still runs it gets SIGTERM (bounded).
    /// Returns its output.
    pub fn finish(&self, b: &Background) -> String {
        match self.try_status(b.proc) {
            Some(s) if !s.success() => panic!(
                "[lab {}] {} failed: {}\n{}",
                self.tag,
                b.what,
                describe_status(s),
                read_lossy(&b.log)
            ),
            Some(_) => {}
            None => {
                self.terminate(b.proc, Duration::from_secs(5));
            }
        }
        read_lossy(&b.log)
    }

    /// Waits for the `blocked` event of `src` while `scan` runs (and at most
    /// `grace` after it ended), then ends the scan: the rest of it would only wait
    /// for dropped probes. Returns the event.
    pub fn wait_blocked_during(
        &self,
        c: &Controller,
        scan: &Background,
        grace: Duration,
        src: &str,
    ) -> Value {
        let ev = self.wait_event_during(c, scan, grace, &format!("blocked for {src}"), |e| {
            is_event(e, "blocked", src)
        });
        self.finish(scan);
        ev
    }

    /// Waits for the first event of `c` matching `pred` while `b` runs, and at most
    /// `grace` after it ended on its own; panics (with the events, the controller's
    /// log and `b`'s output) if none comes, or if `b` failed.
    pub fn wait_event_during(
        &self,
        c: &Controller,
        b: &Background,
        grace: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut ended: Option<Instant> = None;
        loop {
            if let Some(e) = c.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            self.assert_running(c, &format!("while waiting for a {what} event"));
            match (ended, self.try_status(b.proc)) {
                (None, Some(s)) => {
                    if !s.success() {
                        panic!(
                            "[lab {}] {} failed before any {what} event: {}\n{}",
                            self.tag,
                            b.what,
                            describe_status(s),
                            read_lossy(&b.log)
                        );
                    }
                    ended = Some(Instant::now());
                }
                (Some(t), _) if t.elapsed() >= grace => panic!(
                    "[lab {}] no {what} event within {grace:?} after {} ended\n--- its output ---\n{}--- events ---\n{}--- controller log ---\n{}",
                    self.tag,
                    b.what,
                    read_lossy(&b.log),
                    read_lossy(&c.events),
                    read_lossy(&c.log)
                ),
                _ => {}
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}
