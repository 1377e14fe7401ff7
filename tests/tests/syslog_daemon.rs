//! `--events syslog:SOCKET` against a real syslog daemon: Debian's rsyslogd, run by
//! the test with a configuration of its own (an imuxsock socket and an output file
//! in the lab directory; /etc/rsyslog.conf and /dev/log are never touched) inside
//! the lab's target namespace, where the controller runs. A real nmap SYN scan
//! from the lab's attacker must reach the daemon's file as the same JSON event,
//! tagged `scan-guard[PID]:` with facility daemon and severity notice
//! (docs/events.md), also after the daemon restarted under the running controller.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use scan_guard_tests::{
    is_root,
    lab::{Background, Controller, ControllerOptions, DaemonGuard, Lab, XdpMode, read_lossy},
};
use serde_json::Value;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
/// How long rsyslogd may take to open its socket.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long an event may take from the controller to the daemon's file.
const EVENT_LIMIT: Duration = Duration::from_secs(10);
/// Grace after a scan ended for its events.
const SCAN_GRACE: Duration = Duration::from_secs(5);

/// Panics with an install hint unless rsyslog is installed.
fn require_rsyslog() {
    assert!(
        Path::new(RSYSLOGD).is_file(),
        "{RSYSLOGD} not found: install Debian's rsyslog package (apt-get install rsyslog; \
         `cargo xtask test` does). The test runs a private rsyslogd of its own."
    );
}

/// One line of the daemon's output file, as the test's template writes it.
#[derive(Debug)]
struct Logged {
    /// `%syslogtag%`: `scan-guard[PID]:`.
    tag: String,
    /// `%syslogfacility-text%.%syslogseverity-text%`.
    priority: String,
    /// `%msg%`, parsed (scan-guard's lines only).
    event: Value,
}

/// A private rsyslogd in the lab's target namespace.
struct Rsyslog<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    conf: PathBuf,
    /// Its imuxsock input: what `--events syslog:` names.
    sock: PathBuf,
    /// Everything it receives, one line per message.
    messages: PathBuf,
    pid_file: PathBuf,
    /// Its own standard output and error (every start appends).
    log: PathBuf,
    /// The running rsyslogd, stopped when the `Rsyslog` is dropped.
    proc: DaemonGuard<'a>,
}

impl<'a> Rsyslog<'a> {
    fn start(lab: &'a Lab) -> Self {
        require_rsyslog();
        let dir = lab.file("rsyslog", "d");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let d = dir.display();
        let conf = dir.join("rsyslog.conf");
        // No system socket, no kernel log, no network inputs or outputs, no DNS: only
        // our socket in, only our file out. Rate limiting off so no event is dropped.
        let text = format!(
            "global(workDirectory=\"{d}\" net.enableDNS=\"off\" localHostName=\"sg-lab\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imuxsock\" Socket=\"{d}/log.sock\" RateLimit.Interval=\"0\")\n\
             template(name=\"sgTest\" type=\"string\" \
             string=\"%syslogtag% %syslogfacility-text%.%syslogseverity-text%%msg:::sp-if-no-1st-sp%%msg%\\n\")\n\
             *.* action(type=\"omfile\" file=\"{d}/messages\" template=\"sgTest\")\n"
        );
        fs::write(&conf, text).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let rs = Rsyslog {
            lab,
            sock: dir.join("log.sock"),
            messages: dir.join("messages"),
            pid_file: dir.join("rsyslogd.pid"),
            log: dir.join("rsyslogd.log"),
            conf,
            dir,
            proc: DaemonGuard::new(lab),
        };
        rs.spawn();
        rs
    }

    /// Runs `rsyslogd -n` (foreground) through the lab (bounded by its `timeout`,
    /// stopped by the lab too) and waits until its socket takes datagrams.
    fn spawn(&self) {
        let p = self.lab.spawn_in(
            &self.lab.tgt.ns,
            &[
                RSYSLOGD,
                "-n",
                "-f",
                path_str(&self.conf),
                "-i",
                path_str(&self.pid_file),
            ],
            &self.log,
        );
        let listening = || {
            let open = UnixDatagram::unbound()
                .and_then(|s| s.connect(&self.sock))
                .is_ok();
            open && self.pid_file.exists()
        };
        self.proc.start(
            p,
            "rsyslogd",
            &format!("open {}", self.sock.display()),
            &self.log,
            START_LIMIT,
            listening,
        );
    }

    /// SIGTERM (through the lab, bounded); rsyslogd removes its socket on the way out.
    fn stop(&self) {
        if let Some(p) = self.proc.take() {
            let status = self.lab.terminate(p, Duration::from_secs(10));
            assert!(
                status.success(),
                "[lab {}] rsyslogd: {status:?}\n{}",
                self.lab.tag,
                read_lossy(&self.log)
            );
        }
    }

    /// scan-guard's messages in the daemon's file so far (complete lines only).
    fn logged(&self) -> Vec<Logged> {
        let text = fs::read_to_string(&self.messages).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        complete
            .lines()
            .filter(|l| l.starts_with("scan-guard"))
            .map(|l| {
                let parts = l
                    .split_once(' ')
                    .and_then(|(tag, rest)| Some((tag, rest.split_once(' ')?)));
                let Some((tag, (priority, body))) = parts else {
                    panic!("{}: not `TAG PRIORITY MSG`: {l}", self.messages.display());
                };
                let event = serde_json::from_str(body).unwrap_or_else(|e| {
                    panic!(
                        "{}: the message is not a JSON event ({e}): {l}",
                        self.messages.display()
                    )
                });
                Logged {
                    tag: tag.to_owned(),
                    priority: priority.to_owned(),
                    event,
                }
            })
            .collect()
    }

    /// Waits (bounded) for a logged event named `name` about `src`; fails at once if
    /// the controller exits, and after `scan` (if any) ended plus a grace.
    fn wait(
        &self,
        c: &Controller,
        scan: Option<&Background>,
        nth: usize,
        name: &str,
        src: &str,
    ) -> Logged {
        let what = format!("{name} event #{nth} for {src} in rsyslog's file");
        let mut deadline = Instant::now() + EVENT_LIMIT;
        loop {
            let found = self
                .logged()
                .into_iter()
                .filter(|l| l.event["event"] == name && l.event["src"] == src)
                .nth(nth - 1);
            if let Some(l) = found {
                return l;
            }
            self.lab
                .assert_running(c, &format!("while waiting for the {what}"));
            // A scan may take longer than the limit: count from its end.
            if scan.is_some_and(|s| self.lab.try_status(s.proc).is_none()) {
                deadline = Instant::now() + SCAN_GRACE;
            }
            assert!(
                Instant::now() < deadline,
                "[lab {}] no {what}\n--- rsyslog's file ---\n{}--- rsyslogd ---\n{}--- controller log ---\n{}",
                self.lab.tag,
                read_lossy(&self.messages),
                read_lossy(&self.log),
                read_lossy(&c.log)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", p.display()))
}

fn lab(tag: &str) -> Lab {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    require_rsyslog();
    Lab::new(tag)
}

/// The controller sending its events to `rs`, and its pid (the tag's).
fn controller(lab: &Lab, rs: &Rsyslog) -> (Controller, u32) {
    let mut opts = ControllerOptions::new(XdpMode::Native);
    opts.events = Some(PathBuf::from(format!("syslog:{}", rs.sock.display())));
    let c = lab.start_controller_with(&opts);
    let pid = lab
        .controller_pid(&c)
        .unwrap_or_else(|| panic!("[lab {}] no controller pid", lab.tag));
    (c, pid)
}

/// The syslog framing docs/events.md promises.
fn assert_framed(l: &Logged, pid: u32) {
    assert_eq!(l.tag, format!("scan-guard[{pid}]:"), "tag of {l:?}");
    assert_eq!(l.priority, "daemon.notice", "facility.severity of {l:?}");
    for key in ["ts", "event", "src", "kind", "ports", "probes", "origin"] {
        assert!(l.event.get(key).is_some(), "{key} missing from {l:?}");
    }
}

/// Scans from the attacker and waits for its scan_detected and blocked events in
/// rsyslog's file (the `nth` of each).
fn scan_and_wait(lab: &Lab, rs: &Rsyslog, c: &Controller, pid: u32, nth: usize) {
    let att = lab.att.v4.to_string();
    let scan = lab.fast_syn_scan();
    let detected = rs.wait(c, Some(&scan), nth, "scan_detected", &att);
    let blocked = rs.wait(c, Some(&scan), nth, "blocked", &att);
    lab.finish(&scan);
    for l in [&detected, &blocked] {
        assert_framed(l, pid);
        assert_eq!(l.event["kind"], "syn", "a SYN scan: {l:?}");
    }
    assert!(
        detected.event["probes"].as_u64().unwrap_or(0) > 0,
        "{detected:?}"
    );
    assert!(blocked.event["ttl_s"].as_u64().is_some(), "{blocked:?}");
}

#[test]
fn rsyslog_logs_the_scan_event_as_json() {
    let t0 = Instant::now();
    let lab = lab("syslog-daemon");
    let rs = Rsyslog::start(&lab);
    assert!(rs.dir.starts_with(&lab.dir));
    let (c, pid) = controller(&lab, &rs);

    scan_and_wait(&lab, &rs, &c, pid, 1);
    // Every line from scan-guard is one framed JSON event, nothing else.
    let all = rs.logged();
    assert!(!all.is_empty());
    for l in &all {
        assert_framed(l, pid);
    }

    lab.stop_controller(&c);
    rs.stop();
    assert!(!rs.sock.exists(), "rsyslogd left its socket behind");
    eprintln!("[syslog-daemon] done in {:?}", t0.elapsed());
}

#[test]
fn controller_reconnects_when_rsyslog_restarts() {
    let t0 = Instant::now();
    let lab = lab("syslog-restart");
    let rs = Rsyslog::start(&lab);
    let (c, pid) = controller(&lab, &rs);
    let att = lab.att.v4.to_string();
    scan_and_wait(&lab, &rs, &c, pid, 1);

    // The daemon goes away; an event happens meanwhile (a manual block, seen by the
    // controller on its next tick). The controller keeps running and says so.
    rs.stop();
    c.cli_ok(&[
        "block",
        "10.200.1.99",
        "--ttl",
        "10m",
        "--reason",
        "while syslog was down",
    ]);
    lab.wait_log(&c, "keeping up to", EVENT_LIMIT);

    // Back on the same socket: the next event (the scanner lifted) goes out over a
    // fresh connection, the one kept while the daemon was away before it.
    rs.spawn();
    c.cli_ok(&["unblock", &att]);
    let lifted = rs.wait(&c, None, 1, "unblocked", &att);
    let kept = rs.wait(&c, None, 1, "blocked", "10.200.1.99");
    assert_framed(&lifted, pid);
    assert_framed(&kept, pid);
    assert_eq!(kept.event["reason"], "while syslog was down", "{kept:?}");
    let logged = rs.logged();
    let at = |name: &str, src: &str| {
        logged
            .iter()
            .position(|l| l.event["event"] == name && l.event["src"] == src)
    };
    assert!(
        at("blocked", "10.200.1.99") < at("unblocked", &att),
        "the kept event goes out before the next one:\n{}",
        read_lossy(&rs.messages)
    );
    assert!(
        read_lossy(&c.log).contains("reachable again"),
        "{}",
        read_lossy(&c.log)
    );

    // And a second real scan is logged like the first.
    scan_and_wait(&lab, &rs, &c, pid, 2);

    lab.stop_controller(&c);
    rs.stop();
    eprintln!("[syslog-restart] done in {:?}", t0.elapsed());
}
