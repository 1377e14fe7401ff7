//! A fresh Debian machine booted with systemd inside the lab's target namespace,
//! for testing the package and the service as an operator installs them.
//!
//! The root file system comes from `debootstrap` (the host's Debian release,
//! minbase plus systemd), built once into `target/debian-root/<codename>-<hash of the package list>`
//! and then
//! only read: every boot puts a throw-away tmpfs over it (`systemd-nspawn
//! --volatile=overlay`), so each test starts from a machine nobody touched. The
//! container shares the lab's target network namespace (its NIC is the target
//! veth), so whatever it sends stays in the lab. It gets a bpffs of the lab's own
//! on /sys/fs/bpf, as systemd mounts one on a real machine, and the capabilities
//! the unit's bounding set names. Commands run inside with `nsenter` into the
//! container's init, bounded by `timeout`; the container is powered off on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use crate::lab::{Lab, Proc, describe, ip_ok, read_lossy, run_bounded};

/// Extra packages on top of debootstrap's minbase: an init, its bus, `ip`, and
/// what a standard Debian install has that the package recommends.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,logrotate";
/// debootstrap downloads about 100 MB; leave room for a slow mirror.
const DEBOOTSTRAP_LIMIT: Duration = Duration::from_secs(900);
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// Bound of every command run inside.
pub const SH_LIMIT: Duration = Duration::from_secs(60);

/// Panics with an install hint unless debootstrap and systemd-nspawn are there.
pub fn require_tools() {
    for (program, package) in [
        ("/usr/sbin/debootstrap", "debootstrap"),
        ("/usr/bin/systemd-nspawn", "systemd-container"),
    ] {
        assert!(
            Path::new(program).is_file(),
            "{program} not found: install Debian's {package} package (`cargo xtask test` does)"
        );
    }
}

/// `target/`, from the test executable's path (`target/<profile>/deps/<exe>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
}

/// `VERSION_CODENAME` of the host: the package is built against the host's libc,
/// so the machine runs the same release.
fn host_codename() -> String {
    let text = fs::read_to_string("/etc/os-release").expect("reading /etc/os-release");
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .expect("/etc/os-release names no VERSION_CODENAME: not a Debian host")
}

/// The Debian mirror the host's apt uses (so a local mirror is honoured).
fn host_mirror() -> String {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            texts.push(fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .flat_map(|l| l.split_whitespace())
        .find(|w| {
            (w.starts_with("http://") || w.starts_with("https://"))
                && w.trim_end_matches('/').ends_with("/debian")
        })
        .map(str::to_owned)
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// The cached root file system, built on first use. A half-built one (a crash
/// during debootstrap) never takes the final name, and is started over.
pub fn debian_root() -> PathBuf {
    let codename = host_codename();
    let base = target_dir().join("debian-root");
    // The package list is part of the name: a changed list builds a new root.
    let root = base.join(format!("{codename}-{:08x}", fnv1a(INCLUDE)));
    if root.join("usr/lib/systemd/systemd").is_file() {
        return root;
    }
    fs::create_dir_all(&base).expect("creating target/debian-root");
    let partial = root.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    let mirror = host_mirror();
    eprintln!(
        "debootstrap {codename} from {mirror} into {} (once)",
        root.display()
    );
    let started = Instant::now();
    let out = run_bounded(
        DEBOOTSTRAP_LIMIT,
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--include={INCLUDE}"),
            &codename,
            partial.to_str().expect("utf-8 path"),
            &mirror,
        ],
    );
    assert!(
        out.status.success(),
        "debootstrap {codename} {mirror}: {}",
        describe(&out)
    );
    fs::rename(&partial, &root).expect("moving the finished root into place");
    // Roots for other package lists or releases are stale now.
    for stale in fs::read_dir(&base).into_iter().flatten().flatten() {
        if stale.path() != root {
            let _ = fs::remove_dir_all(stale.path());
        }
    }
    eprintln!("debootstrap took {:.0?}", started.elapsed());
    root
}

/// A short stable hash (FNV-1a, 32 bits) for cache names.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A booted machine; powered off (and its tmpfs gone) on drop.
pub struct Machine<'a> {
    lab: &'a Lab,
    /// `timeout … systemd-nspawn`, a process of the lab.
    proc: Proc,
    /// The container's init (pid 1 inside), for `nsenter`.
    pub init_pid: u32,
    pub log: PathBuf,
}

/// What to bind into the machine before it boots.
pub struct Binds<'p> {
    /// Read-only: (host path, path inside).
    pub read_only: Vec<(&'p Path, &'p str)>,
}

impl<'a> Machine<'a> {
    /// Boots `root` (read-only, with a tmpfs overlay) in the lab's target namespace
    /// and waits until systemd reports the system up.
    pub fn boot(lab: &'a Lab, root: &Path, binds: &Binds<'_>) -> Self {
        let log = lab.file("machine", "log");
        let mut args: Vec<String> = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--volatile=overlay",
            // No host systemd-machined to register with.
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_ADMIN",
            // nspawn's default seccomp filter refuses bpf(2).
            "--system-call-filter=bpf",
            "--machine",
            &format!("sg-{}", lab.id),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--directory={}", root.display()));
        args.push(format!(
            "--network-namespace-path=/run/netns/{}",
            lab.tgt.ns
        ));
        args.push(format!("--bind={}:/sys/fs/bpf", lab.bpffs.display()));
        for (host, inside) in &binds.read_only {
            args.push(format!("--bind-ro={}:{inside}", host.display()));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = lab.spawn_outside(&argv, &log);
        let init_pid = find_init(lab, proc, &log);
        let m = Machine {
            lab,
            proc,
            init_pid,
            log,
        };
        m.wait_booted();
        m
    }

    /// `sh -c SCRIPT` inside, bounded by `limit`.
    pub fn sh_for(&self, limit: Duration, script: &str) -> Output {
        let secs = limit.as_secs().max(1).to_string();
        let pid = self.init_pid.to_string();
        run_bounded(
            limit + Duration::from_secs(5),
            "nsenter",
            &[
                "--target", &pid, "--all", "--", "timeout", "-k", "2", &secs, "/bin/sh", "-c",
                script,
            ],
        )
    }

    pub fn sh(&self, script: &str) -> Output {
        self.sh_for(SH_LIMIT, script)
    }

    /// Like [`sh`](Self::sh) but panics unless it succeeds; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.status.success() {
            panic!(
                "[machine] {script}: {}\n--- journal ---\n{}",
                describe(&out),
                self.journal_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of the whole journal, for failure messages.
    pub fn journal_tail(&self) -> String {
        let out = self.sh("journalctl --no-pager -n 40 2>&1");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn unit_prop(&self, unit: &str, prop: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Polls `probe` (bounded) until it returns `Some`; panics with `what` and the
    /// journal otherwise.
    pub fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "[machine] {what}: not within {limit:?}\n--- journal ---\n{}",
                    self.journal_tail()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_booted(&self) {
        // `is-system-running --wait` blocks until start-up is over; "degraded" (a
        // unit failed) is reported, not accepted.
        // Until systemd has set up its private bus, systemctl cannot ask it; in the
        // first moments after its exec, before it has created /run/systemd/system,
        // systemctl even reports "offline" at once (seen in CI): both mean "ask again".
        let deadline = Instant::now() + BOOT_LIMIT;
        let out = loop {
            let out = self.sh_for(BOOT_LIMIT, "systemctl is-system-running --wait");
            let no_bus = String::from_utf8_lossy(&out.stderr).contains("Failed to connect to bus");
            let too_early = String::from_utf8_lossy(&out.stdout).trim() == "offline";
            if !(no_bus || too_early) || Instant::now() >= deadline {
                break out;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state != "running" {
            let failed = self.sh("systemctl --failed --no-pager 2>&1");
            panic!(
                "[machine] did not boot cleanly: state {state:?} ({})\n{}\n--- nspawn ---\n{}\n--- journal ---\n{}",
                describe(&out),
                String::from_utf8_lossy(&failed.stdout),
                read_lossy(&self.log),
                self.journal_tail()
            );
        }
    }
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        // SIGTERM to nspawn (timeout forwards it) asks the container's systemd for
        // an orderly power-off; the lab kills what is left.
        if self.lab.try_status(self.proc).is_none() {
            self.lab.signal(self.proc, libc::SIGTERM);
            if self
                .lab
                .wait_for(self.proc, Duration::from_secs(20))
                .is_none()
            {
                eprintln!("[machine] did not power off within 20 s; the lab kills it");
            }
        }
    }
}

/// The container's init: the `systemd` process below nspawn, found through
/// `/proc/PID/task/*/children` (bounded wait while nspawn sets it up).
fn find_init(lab: &Lab, proc: Proc, log: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = descendants(proc.pid)
            .into_iter()
            .find(|p| comm(*p).as_deref() == Some("systemd"))
        {
            return pid;
        }
        if let Some(status) = lab.try_status(proc) {
            panic!(
                "[machine] systemd-nspawn exited ({status}) before booting:\n{}",
                read_lossy(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "[machine] no systemd below nspawn within 30 s:\n{}",
            read_lossy(log)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Renames the lab's target veth (inside its namespace) to `name`, as a server's
/// NIC is called, keeping its addresses.
pub fn rename_target_iface(lab: &mut Lab, name: &str) {
    let ns = lab.tgt.ns.clone();
    let old = lab.tgt.iface.clone();
    ip_ok(&["-n", &ns, "link", "set", "dev", &old, "down"]);
    ip_ok(&["-n", &ns, "link", "set", "dev", &old, "name", name]);
    ip_ok(&["-n", &ns, "link", "set", "dev", name, "up"]);
    // Taking the link down dropped its IPv6 address (keep_addr_on_down is off).
    let v6 = format!("{}/64", lab.tgt.v6);
    ip_ok(&[
        "-n", &ns, "-6", "addr", "replace", &v6, "dev", name, "nodad",
    ]);
    lab.tgt.iface = name.to_owned();
}
