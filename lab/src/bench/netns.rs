//! The benchmarks' lab: two network namespaces joined by one veth pair, addresses
//! that exist only there, no default route (asserted), a private bpffs; built from
//! the guards of [`crate::lab`], so teardown (processes, namespaces with every
//! netfilter rule and set inside them, the bpffs, the run directory) happens also
//! when a part panics.
//!
//! Every command runs under `timeout`. Nothing here touches the host's own network
//! namespace apart from creating and deleting ours.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{ExitStatus, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::lab::{
    bpffs::Bpffs,
    cmd::{describe, ip_ok, run_bounded_env},
    netns::{Netns, assert_no_default_route},
    process::{Proc, Processes},
    run_dir::RunDir,
    veth::{Veth, VethEnd},
};

/// Bound of one-shot commands.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How this lab's teardown and setup messages start.
const WHO: &str = "bench:";

/// One end of the veth pair.
#[derive(Clone, Debug)]
pub struct End {
    pub ns: String,
    pub iface: String,
    pub mac: [u8; 6],
    pub v4: Ipv4Addr,
}

impl End {
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

pub struct BenchLab {
    pub id: String,
    /// Sending side ("client", "attacker").
    pub a: End,
    /// Protected side (where XDP programs and servers run).
    pub t: End,
    /// `/run/sg-bench-<id>`: logs, configs, pins.
    pub dir: PathBuf,
    /// `<dir>/bpffs`, a bpffs for this lab only.
    pub bpffs: PathBuf,
    // The guards, dropped in this order: processes, the link, the namespaces (and
    // everything in them), the bpffs, the directory.
    procs: Processes,
    _link: Veth,
    _namespaces: [Netns; 2],
    _bpffs_mount: Bpffs,
    _run_dir: RunDir,
}

impl Default for BenchLab {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchLab {
    /// Namespaces `sgb-<id>-a` / `sgb-<id>-t`, veth `sgb<id>a` / `sgb<id>t`,
    /// 10.201.0.1/24 and 10.201.0.2/24, links up, no default route, private bpffs.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:x}{:02x}", std::process::id(), n % 256);
        let end = |side: char, last: u8| End {
            ns: format!("sgb-{id}-{side}"),
            iface: format!("sgb{id}{side}"),
            mac: [0x02, 0x53, 0x42, 0x00, 0x00, last],
            v4: Ipv4Addr::new(10, 201, 0, last),
        };
        let (a, t) = (end('a', 1), end('t', 2));
        assert!(a.iface.len() <= 15, "interface name too long");

        // A panic from here on drops the guards made so far, which undo themselves.
        let run_dir = RunDir::create(&PathBuf::from(format!("/run/sg-bench-{id}")), WHO);
        let bpffs = Bpffs::mount(&run_dir.bpffs_path(), WHO);
        let namespaces = [Netns::create(&a.ns, WHO), Netns::create(&t.ns, WHO)];
        let (a_mac, t_mac) = (a.mac_text(), t.mac_text());
        let link = Veth::create(
            VethEnd {
                ns: &a.ns,
                iface: &a.iface,
                mac: Some(&a_mac),
            },
            VethEnd {
                ns: &t.ns,
                iface: &t.iface,
                mac: Some(&t_mac),
            },
            WHO,
        );
        for e in [&a, &t] {
            ip_ok(&["-n", &e.ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n",
                &e.ns,
                "addr",
                "add",
                &format!("{}/24", e.v4),
                "dev",
                &e.iface,
            ]);
            ip_ok(&["-n", &e.ns, "link", "set", &e.iface, "up"]);
        }
        let lab = BenchLab {
            dir: run_dir.path().to_path_buf(),
            bpffs: bpffs.path().to_path_buf(),
            id,
            a,
            t,
            procs: Processes::new(WHO),
            _link: link,
            _namespaces: namespaces,
            _bpffs_mount: bpffs,
            _run_dir: run_dir,
        };
        lab.assert_no_default_route();
        lab
    }

    /// Panics if either namespace has a default route (IPv4 or IPv6): packets
    /// must have nowhere to go but the veth pair.
    pub fn assert_no_default_route(&self) {
        for e in [&self.a, &self.t] {
            assert_no_default_route(&e.ns, WHO);
        }
    }

    /// Interface index of `end`'s veth inside its namespace.
    pub fn ifindex(&self, end: &End) -> u32 {
        let text = ip_ok(&["-n", &end.ns, "-j", "link", "show", "dev", &end.iface]);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j link show: {e}: {text}"));
        v[0]["ifindex"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ifindex in {text}")) as u32
    }

    /// Id of the XDP program attached to `end`'s veth, if any.
    pub fn xdp_prog_id(&self, end: &End) -> Option<u32> {
        let text = ip_ok(&["-n", &end.ns, "-j", "-d", "link", "show", "dev", &end.iface]);
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v[0]["xdp"]["prog"]["id"].as_u64().map(|id| id as u32)
    }

    /// `args` inside `ns`, bounded by `limit`.
    pub fn exec(&self, ns: &str, limit: Duration, args: &[&str]) -> Output {
        self.exec_env(ns, limit, args, &[])
    }

    pub fn exec_env(
        &self,
        ns: &str,
        limit: Duration,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        run_bounded_env(limit, "ip", &full, env)
    }

    /// Like `exec` with the default bound; panics unless it succeeds; stdout.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec(ns, CMD_TIMEOUT, args);
        assert!(
            out.status.success(),
            "in {ns}: {}: {}",
            args.join(" "),
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets sysctls (`key=value`) inside `ns`.
    pub fn sysctl(&self, ns: &str, settings: &[&str]) {
        for s in settings {
            self.exec_ok(ns, &["sysctl", "-q", "-w", s]);
        }
    }

    /// Starts `args` in `ns` under `timeout <limit>`, output appended to `log`.
    pub fn spawn(
        &self,
        ns: &str,
        limit: Duration,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Proc {
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        self.procs
            .spawn(limit, &argv, env, log)
            .unwrap_or_else(|e| panic!("spawning {args:?} in {ns}: {e}"))
    }

    /// Exit status if it has finished.
    pub fn try_wait(&self, p: Proc) -> Option<ExitStatus> {
        self.procs.try_status(p)
    }

    /// SIGTERM (which `timeout` passes on), a bounded wait, then SIGKILL to the
    /// group. Returns the exit status when it ended by itself.
    pub fn stop(&self, p: Proc, limit: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_wait(p) {
            return Some(st);
        }
        self.procs.signal(p, libc::SIGTERM);
        if let Some(st) = self.procs.wait_for(p, limit) {
            return Some(st);
        }
        self.procs.kill(p);
        None
    }

    /// The process `timeout` runs for `p` (the command itself).
    pub fn command_pid(&self, p: Proc) -> Option<u32> {
        super::sys::children_of(p.pid).first().copied()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
