//! The benchmarks' own small lab: two network namespaces joined by one veth pair,
//! addresses that exist only there, no default route (asserted), a private bpffs,
//! and RAII teardown of all of it (processes, namespaces with every netfilter rule
//! and set inside them, the bpffs, the run directory), also when a part panics.
//!
//! Every command runs under `timeout`. Nothing here touches the host's own network
//! namespace apart from creating and deleting ours.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::lab;

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

/// A process the lab started and stops on drop.
#[derive(Clone, Copy, Debug)]
pub struct Spawned {
    idx: usize,
    /// Pid of the `timeout` wrapper (also its process group id).
    pub pid: u32,
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
    children: Mutex<Vec<Child>>,
    namespaces: Vec<String>,
    mounted: bool,
}

pub use crate::lab::run_bounded;

/// Status and output of a finished command, for messages.
pub fn describe(out: &Output) -> String {
    let status = match out.status.code() {
        Some(124) => "timed out".to_string(),
        Some(c) => format!("exit status {c}"),
        None => format!("{:?}", out.status),
    };
    format!(
        "{status}; stdout: {}; stderr: {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn ip_ok(args: &[&str]) -> String {
    let out = run_bounded(CMD_TIMEOUT, "ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when `program` is an executable on PATH or in /usr/sbin, /sbin.
pub fn have(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(program).is_file())
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
        let dir = PathBuf::from(format!("/run/sg-bench-{id}"));
        let end = |side: char, last: u8| End {
            ns: format!("sgb-{id}-{side}"),
            iface: format!("sgb{id}{side}"),
            mac: [0x02, 0x53, 0x42, 0x00, 0x00, last],
            v4: Ipv4Addr::new(10, 201, 0, last),
        };
        let mut lab = BenchLab {
            a: end('a', 1),
            t: end('t', 2),
            bpffs: dir.join("bpffs"),
            dir,
            id,
            children: Mutex::new(Vec::new()),
            namespaces: Vec::new(),
            mounted: false,
        };
        // A panic from here on unwinds through Drop, which undoes what was done.
        lab.setup();
        lab
    }

    fn setup(&mut self) {
        assert!(self.a.iface.len() <= 15, "interface name too long");
        let names = [self.a.ns.clone(), self.t.ns.clone()];
        lab::remove_stale_netns(&names);
        lab::remove_stale_dir(&self.dir, &self.bpffs);
        fs::create_dir_all(&self.bpffs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.bpffs.display()));
        lab::mount_bpffs(&self.bpffs, WHO);
        self.mounted = true;

        for ns in names {
            lab::add_netns(&ns);
            self.namespaces.push(ns);
        }
        let (a, t) = (&self.a, &self.t);
        lab::add_veth_pair(
            &a.ns,
            &a.iface,
            &a.mac_text(),
            &t.ns,
            &t.iface,
            &t.mac_text(),
        );
        for e in [a, t] {
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
        self.assert_no_default_route();
    }

    /// Panics if either namespace has a default route (IPv4 or IPv6): packets
    /// must have nowhere to go but the veth pair.
    pub fn assert_no_default_route(&self) {
        for e in [&self.a, &self.t] {
            lab::assert_no_default_route(&e.ns, WHO);
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
        let secs = limit.as_secs().max(1).to_string();
        Command::new("timeout")
            .args(["-k", "2", &secs, "ip", "netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {args:?} in {ns}: {e}"))
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
    ) -> Spawned {
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let child = lab::spawn_bounded(limit, &argv, env, log)
            .unwrap_or_else(|e| panic!("spawning {args:?} in {ns}: {e}"));
        let s = Spawned {
            idx: children.len(),
            pid: child.id(),
        };
        children.push(child);
        s
    }

    /// Exit status if it has finished.
    pub fn try_wait(&self, s: Spawned) -> Option<ExitStatus> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children[s.idx].try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to finish.
    pub fn wait(&self, s: Spawned, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait(s) {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (which `timeout` passes on), a bounded wait, then SIGKILL to the
    /// group. Returns the exit status when it ended by itself.
    pub fn stop(&self, s: Spawned, limit: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_wait(s) {
            return Some(st);
        }
        // SAFETY: our own unreaped child: its pid cannot have been reused.
        unsafe {
            libc::kill(s.pid as libc::pid_t, libc::SIGTERM);
        }
        if let Some(st) = self.wait(s, limit) {
            return Some(st);
        }
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        lab::kill_group(&mut children[s.idx]);
        None
    }

    /// The process `timeout` runs for `s` (the command itself).
    pub fn command_pid(&self, s: Spawned) -> Option<u32> {
        super::sys::children_of(s.pid).first().copied()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        let mut children =
            std::mem::take(self.children.get_mut().unwrap_or_else(|p| p.into_inner()));
        lab::stop_children(&mut children, WHO);
        // Deleting a namespace takes its interfaces, addresses, netfilter rules and
        // sets with it.
        for ns in self.namespaces.drain(..) {
            lab::delete_netns(&ns, CMD_TIMEOUT, WHO);
        }
        if self.mounted {
            lab::unmount(&self.bpffs);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("bench: removing {}: {e}", self.dir.display());
            }
        }
    }
}
