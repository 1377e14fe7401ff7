//! Events as JSON lines: one object per line, for people (`jq`) and pipelines.
//! The schema is documented in docs/events.md.

use std::{
    collections::VecDeque,
    io::{ErrorKind, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use anyhow::{Context as _, Result};
use scan_guard_common::{
    config::KernelConfig,
    event::ScanEvent,
    flags::{PROBE_KINDS, ProbeKind},
    meta::{BlockMeta, MetaKey},
    state::{BlockOrigin, Trigger},
};
use serde::Serialize;
use serde_json::{Value, json};
use syslog::{Facility, Formatter3164, LogFormat as _, Severity};

use crate::{
    clock,
    config::Config,
    detector::{self, DistributedHint, SlowScanFinding},
    enforcer::{cidr_of, kind_name},
};

/// Human-facing address text (IPv4 for mapped addresses).
pub fn addr_text(addr: &[u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub ts: String,
    pub event: &'static str,
    pub src: String,
    pub kind: String,
    pub ports: Vec<u16>,
    pub probes: u32,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub probes_by_kind: serde_json::Map<String, Value>,
    pub score: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offences: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub origin: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub evidence: Value,
}

impl EventRecord {
    fn base(
        event: &'static str,
        src: String,
        kind: &str,
        origin: &'static str,
        evidence: Value,
    ) -> Self {
        Self {
            ts: clock::rfc3339(std::time::SystemTime::now()),
            event,
            src,
            kind: kind.to_string(),
            ports: Vec::new(),
            probes: 0,
            probes_by_kind: serde_json::Map::new(),
            score: 0,
            ttl_s: None,
            expires: None,
            offences: None,
            reason: None,
            origin,
            sources: Vec::new(),
            evidence,
        }
    }

    /// The same facts under another event name (e.g. `scan_detected` -> `blocked`).
    pub fn as_event(&self, event: &'static str) -> Self {
        Self {
            event,
            ..self.clone()
        }
    }

    /// Adds the block lifetime (and the resulting end time).
    pub fn with_ttl(mut self, ttl: Option<Duration>, offences: Option<u32>) -> Self {
        if let Some(t) = ttl {
            self.ttl_s = Some(t.as_secs());
            self.expires = Some(clock::rfc3339_unix(clock::unix_now() + t.as_secs()));
        }
        self.offences = offences;
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// A kernel threshold crossing.
    pub fn from_kernel(ev: &ScanEvent, cfg: &KernelConfig) -> Self {
        let trigger = Trigger::from_u8(ev.trigger);
        let evidence = json!({
            "rule": trigger.map_or("unknown", Trigger::name),
            "score": ev.score,
            "score_threshold": cfg.score_threshold,
            "distinct_ports": ev.distinct_ports,
            "distinct_addrs": ev.distinct_addrs,
            "sweep_threshold": cfg.sweep_threshold,
            "window_s": cfg.window_ns as f64 / 1e9,
            "flags_or": ev.flags_or,
            "flags_and": ev.flags_and,
            "os_stack_syns": ev.os_syns,
        });
        let mut rec = Self::base(
            "scan_detected",
            crate::cidr::Cidr::from_key(ev.src, ev.src_prefix_len()).to_string(),
            detector::classify_event(ev),
            "kernel",
            evidence,
        );
        rec.ts = clock::rfc3339(clock::to_wall(ev.ts_ns));
        rec.ports = ev.ports().to_vec();
        rec.probes = ev.probes.iter().fold(0u32, |a, p| a.saturating_add(*p));
        rec.probes_by_kind = by_kind(&ev.probes);
        rec.score = ev.score;
        rec
    }

    /// A slow scan found by the sequential test.
    pub fn from_slow_scan(f: &SlowScanFinding, cfg: &Config) -> Self {
        let evidence = json!({
            "rule": "trw",
            "likelihood_ratio": f.likelihood_ratio,
            "threshold": cfg.slow_scan.threshold,
            "failures": f.failures,
            "successes": f.successes,
            "benign_success": cfg.slow_scan.benign_success,
            "scanner_success": cfg.slow_scan.scanner_success,
        });
        let mut rec = Self::base(
            "scan_detected",
            crate::cidr::Cidr::from_key(f.src, f.src_prefix).to_string(),
            f.kind,
            "detector",
            evidence,
        );
        rec.ports = f.ports.clone();
        rec.probes = f.failures + f.successes;
        rec
    }

    /// A block record that ended or was lifted, or one that another process added.
    pub fn from_meta(event: &'static str, key: &MetaKey, m: &BlockMeta) -> Self {
        let origin = BlockOrigin::from_u8(m.origin).map_or("unknown", BlockOrigin::name);
        let mut rec = Self::base(
            event,
            cidr_of(key).to_string(),
            kind_name(m.kind),
            origin,
            json!({"rule": "block_record"}),
        );
        rec.offences = Some(m.offences);
        if !m.reason().is_empty() {
            rec.reason = Some(m.reason().to_string());
        }
        if m.expires_unix_s != 0 {
            rec.expires = Some(clock::rfc3339_unix(m.expires_unix_s));
            rec.ttl_s = Some(m.expires_unix_s.saturating_sub(m.since_unix_s));
        }
        rec
    }

    /// Several sources with one port pattern (reported, never blocked by itself).
    pub fn from_hint(h: &DistributedHint, cfg: &Config) -> Self {
        let evidence = json!({
            "rule": "same_port_pattern",
            "min_sources": cfg.detection.distributed_min_sources,
            "window_s": cfg.detection.distributed_window.0.as_secs(),
        });
        let mut rec = Self::base(
            "distributed_scan",
            addr_text(&h.sources[0]),
            "distributed",
            "detector",
            evidence,
        );
        rec.ports = h.ports.clone();
        rec.sources = h.sources.iter().map(addr_text).collect();
        rec
    }
}

fn by_kind(probes: &[u32; PROBE_KINDS]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (i, n) in probes.iter().enumerate() {
        if *n > 0 {
            if let Some(k) = ProbeKind::from_u8(i as u8) {
                m.insert(k.name().to_string(), (*n).into());
            }
        }
    }
    m
}

/// Where events go.
pub enum EventSink {
    Stdout,
    File(PathBuf, std::fs::File),
    /// A syslog socket (`/dev/log`: syslog daemons and journald listen there).
    Syslog(DatagramSink),
    /// journald's native socket: the JSON as MESSAGE plus fields of its own
    /// (see `crate::journal`). Same reconnect and backlog as syslog.
    Journal(DatagramSink),
}

/// The system log's socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// RFC 3164 as syslog(3) writes it: facility daemon, tag `scan-guard[PID]:`, no
/// host name (the daemon adds its own).
static SYSLOG_FORMAT: LazyLock<Formatter3164> = LazyLock::new(|| Formatter3164 {
    facility: Facility::LOG_DAEMON,
    hostname: None,
    process: "scan-guard".into(),
    pid: std::process::id(),
});
/// Events kept while the syslog daemon or journald is away (restarting, or its
/// queue full); beyond this the oldest are dropped, so memory stays bounded.
pub const SOCKET_BACKLOG: usize = 1024;

/// A datagram socket (syslog's or journald's) that outlives its daemon: sends
/// never block the controller
/// (the socket is non-blocking), and when the daemon is gone or busy the framed
/// messages wait in a bounded backlog and go out, in order, with the next event
/// after it is back, over a fresh connection to the same path.
pub struct DatagramSink {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    backlog: VecDeque<Vec<u8>>,
    /// Dropped from a full backlog since the daemon was last reachable.
    dropped: u64,
    /// The daemon was unreachable at the last flush (logged once per outage).
    down: bool,
}

impl DatagramSink {
    fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    /// Connects to the socket at `path`; fails if nothing listens there.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let sock = Self::connect(&path)?;
        Ok(Self {
            path,
            sock: Some(sock),
            backlog: VecDeque::new(),
            dropped: 0,
            down: false,
        })
    }

    /// Messages waiting for the daemon.
    pub fn pending(&self) -> usize {
        self.backlog.len()
    }

    /// Queues one framed message and sends what the daemon will take.
    pub fn send(&mut self, msg: Vec<u8>) {
        if self.backlog.len() >= SOCKET_BACKLOG {
            self.backlog.pop_front();
            self.dropped += 1;
        }
        self.backlog.push_back(msg);
        self.flush();
    }

    /// Sends the backlog, oldest first, until it is empty or the daemon stops
    /// taking messages. At most one reconnect per call: a daemon that is down
    /// costs one failed connect per event, never a wait.
    pub fn flush(&mut self) {
        let mut reconnected = false;
        while let Some(msg) = self.backlog.front() {
            let sock = match &self.sock {
                Some(s) => s,
                // Reachable at connect, refused at send: try again with the next event.
                None if reconnected => return self.went_down("it refused the message"),
                None => {
                    reconnected = true;
                    match Self::connect(&self.path) {
                        Ok(s) => self.sock.insert(s),
                        Err(e) => return self.went_down(&e.to_string()),
                    }
                }
            };
            match sock.send(msg) {
                Ok(_) => {
                    self.backlog.pop_front();
                }
                // The daemon's queue is full: it keeps its messages, we keep ours.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.went_down("its queue is full");
                }
                // The daemon closed its socket (stopped or restarted): the next
                // round connects to whatever listens at the path now.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ECONNRESET | libc::EPIPE)
                    ) =>
                {
                    self.sock = None;
                }
                // A message it will never take (e.g. too long): drop it, not the rest.
                Err(e) => {
                    tracing::warn!(
                        "event socket {}: dropping an event: {e}",
                        self.path.display()
                    );
                    self.backlog.pop_front();
                }
            }
        }
        if self.down || self.dropped > 0 {
            tracing::info!(
                "event socket {}: reachable again, {} events dropped while it was not",
                self.path.display(),
                self.dropped
            );
        }
        self.down = false;
        self.dropped = 0;
    }

    fn went_down(&mut self, why: &str) {
        if !self.down {
            tracing::warn!(
                "event socket {}: {why}; keeping up to {SOCKET_BACKLOG} events until it takes them",
                self.path.display()
            );
        }
        self.down = true;
    }
}

impl Drop for DatagramSink {
    /// One last non-blocking try for what is still queued.
    fn drop(&mut self) {
        if !self.backlog.is_empty() {
            self.flush();
        }
    }
}

impl EventSink {
    /// `-` is standard output; `syslog` the system log, `syslog:PATH` a syslog
    /// socket at PATH; `journal` journald's native socket (`journal:PATH`
    /// another); anything else a file opened for appending.
    pub fn open(spec: &Path) -> Result<Self> {
        if spec == Path::new("-") {
            return Ok(Self::Stdout);
        }
        let text = spec.to_string_lossy();
        if let Some(socket) = socket_spec(&text, "syslog", SYSLOG_SOCKET) {
            let hint = "is a syslog daemon or journald running?";
            return Ok(Self::Syslog(open_socket(&text, socket, hint)?));
        }
        if let Some(socket) = socket_spec(&text, "journal", crate::journal::JOURNAL_SOCKET) {
            let hint = "is systemd-journald running?";
            return Ok(Self::Journal(open_socket(&text, socket, hint)?));
        }
        Ok(Self::File(spec.to_path_buf(), open_append(spec)?))
    }

    /// Writes one line and flushes it, so nothing is lost if we are killed.
    /// To syslog it never fails: an unreachable daemon is waited for (bounded).
    pub fn write(&mut self, rec: &EventRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec).context("serialising event")?;
        line.push('\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .context("writing event to stdout")
            }
            Self::File(path, f) => f
                .write_all(line.as_bytes())
                .and_then(|()| f.flush())
                .with_context(|| format!("writing event to {}", path.display())),
            Self::Syslog(sink) => {
                line.pop();
                // Severity notice: `<29>` with facility daemon, for every event.
                let mut msg = Vec::with_capacity(line.len() + 48);
                SYSLOG_FORMAT
                    .format(&mut msg, Severity::LOG_NOTICE, &line)
                    .map_err(|e| anyhow::anyhow!("framing an event for syslog: {e}"))?;
                sink.send(msg);
                Ok(())
            }
            Self::Journal(sink) => {
                line.pop();
                sink.send(crate::journal::entry(rec, &line));
                Ok(())
            }
        }
    }
}

/// `NAME` means the default socket, `NAME:PATH` the socket at PATH.
fn socket_spec(text: &str, name: &str, default: &str) -> Option<PathBuf> {
    if text == name {
        return Some(PathBuf::from(default));
    }
    text.strip_prefix(name)?
        .strip_prefix(':')
        .map(PathBuf::from)
}

/// At start a missing daemon is a usage error; later it is an outage.
fn open_socket(spec: &str, socket: PathBuf, hint: &str) -> Result<DatagramSink> {
    DatagramSink::open(socket.clone()).map_err(|e| {
        crate::error::usage(format!(
            "--events {spec}: nothing listens at {} ({e}); {hint}",
            socket.display()
        ))
    })
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening events file {}", path.display()))
}

/// Every place events go (`--events` may be given more than once, e.g. a file
/// and the journal): each event is written to all of them.
pub struct EventOutputs(Vec<EventSink>);

impl EventOutputs {
    /// Opens every spec (see [`EventSink::open`]); one that fails fails the whole
    /// start, before anything was written anywhere. The same spec twice would
    /// write each event twice, so it is refused.
    pub fn open(specs: &[PathBuf]) -> Result<Self> {
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].contains(spec) {
                return Err(crate::error::usage(format!(
                    "--events {} given twice",
                    spec.display()
                )));
            }
        }
        specs
            .iter()
            .map(|s| EventSink::open(s))
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    /// Opens every events file anew under its name, for log rotation (the renamed
    /// old file is closed once the new one is open). A file that cannot be opened
    /// keeps its old handle, and the error is returned after the others moved.
    pub fn reopen(&mut self) -> Result<usize> {
        let mut reopened = 0;
        let mut first_err = None;
        for sink in &mut self.0 {
            if let EventSink::File(path, f) = sink {
                match open_append(path) {
                    Ok(new) => {
                        *f = new;
                        reopened += 1;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        first_err.map_or(Ok(reopened), Err)
    }

    /// Writes to every output; an output that fails does not keep the event from
    /// the others. The first failure is returned.
    pub fn write(&mut self, rec: &EventRecord) -> Result<()> {
        let mut first_err = None;
        for sink in &mut self.0 {
            if let Err(e) = sink.write(rec) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use scan_guard_common::{addr::from_v4, state::SourceState};

    use super::*;

    fn event(probes: [u32; PROBE_KINDS], blocked: bool) -> ScanEvent {
        let mut st = SourceState::new(crate::clock::monotonic_ns());
        st.probes = probes;
        st.score = 24;
        st.port_samples[0] = 22;
        st.sample_count = 1;
        ScanEvent::from_state(
            st.first_seen_ns,
            &from_v4([10, 9, 0, 2]),
            &from_v4([10, 9, 0, 1]),
            &st,
            Trigger::Score,
            0,
            blocked,
            0,
        )
    }

    #[test]
    fn kernel_event_has_the_documented_fields() {
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Syn as usize] = 6;
        let rec = EventRecord::from_kernel(&event(p, true), &KernelConfig::default());
        assert_eq!(rec.event, "scan_detected");
        assert_eq!(rec.src, "10.9.0.2");
        assert_eq!(rec.kind, "syn");
        assert_eq!(rec.ports, vec![22]);
        let blocked = rec
            .as_event("blocked")
            .with_ttl(Some(Duration::from_secs(600)), Some(1));
        let json: Value = serde_json::from_str(&serde_json::to_string(&blocked).unwrap()).unwrap();
        for key in [
            "ts", "event", "src", "kind", "ports", "probes", "score", "ttl_s", "evidence",
            "expires",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["evidence"]["rule"], "port_score");
        assert_eq!(json["ttl_s"], 600);
        assert!(json["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn syslog_sink_sends_framed_json_lines() {
        let dir = std::env::temp_dir().join(format!("sg-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let mut sink = EventSink::open(Path::new(&format!("syslog:{}", path.display()))).unwrap();
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Syn as usize] = 6;
        let rec = EventRecord::from_kernel(&event(p, true), &KernelConfig::default());
        sink.write(&rec).unwrap();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        // `<29>Mmm dd hh:mm:ss scan-guard[PID]: JSON`, as syslog(3) writes it.
        assert!(msg.starts_with("<29>"), "{msg}");
        let tag = format!(" scan-guard[{}]: ", std::process::id());
        let (head, json) = msg.split_once(&tag).unwrap();
        assert_eq!(head.len(), "<29>Nov 27 09:00:00".len(), "{msg}");
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["event"], "scan_detected");
        assert!(EventSink::open(Path::new("syslog:/nonexistent/sock")).is_err());
        // Only `syslog` and `syslog:PATH` mean the system log; other names are files.
        let file = dir.join("syslog-events.jsonl");
        assert!(matches!(
            EventSink::open(&file).unwrap(),
            EventSink::File(..)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_output_gets_every_event() {
        let dir = std::env::temp_dir().join(format!("sg-outputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("log");
        let server = UnixDatagram::bind(&sock).unwrap();
        let file = dir.join("events.jsonl");
        let specs = [
            file.clone(),
            PathBuf::from(format!("syslog:{}", sock.display())),
        ];
        let mut outs = EventOutputs::open(&specs).unwrap();
        let mut p = [0; PROBE_KINDS];
        p[ProbeKind::Fin as usize] = 3;
        let rec = EventRecord::from_kernel(&event(p, false), &KernelConfig::default());
        outs.write(&rec).unwrap();
        outs.write(&rec.as_event("blocked")).unwrap();
        let lines: Vec<Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "blocked");
        assert!(recv_text(&server).contains("\"event\":\"scan_detected\""));
        assert!(recv_text(&server).contains("\"event\":\"blocked\""));
        // Rotation: the file renamed away, reopen starts a new one under the name.
        let rotated = dir.join("events.jsonl.1");
        std::fs::rename(&file, &rotated).unwrap();
        assert_eq!(outs.reopen().unwrap(), 1);
        outs.write(&rec.as_event("expired")).unwrap();
        let _ = recv_text(&server);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            2
        );
        let fresh = std::fs::read_to_string(&file).unwrap();
        assert_eq!(fresh.lines().count(), 1, "{fresh}");
        assert!(fresh.contains("\"event\":\"expired\""));
        // The same output twice, or one that cannot open, fails the whole start.
        assert!(EventOutputs::open(&[file.clone(), file.clone()]).is_err());
        assert!(EventOutputs::open(&[file, PathBuf::from("syslog:/nonexistent/sock")]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch_socket(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        (dir, path)
    }

    fn recv_text(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn syslog_sink_reconnects_after_the_daemon_restarts() {
        let (dir, path) = scratch_socket("syslog-restart");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut sink = DatagramSink::open(path.clone()).unwrap();
        sink.send(b"one".to_vec());
        assert_eq!(recv_text(&server), "one");
        // The daemon stops (and removes its socket, as rsyslog does).
        drop(server);
        std::fs::remove_file(&path).unwrap();
        sink.send(b"two".to_vec());
        assert_eq!(sink.pending(), 1, "kept while nobody listens");
        // A new daemon on the same path: the kept event goes first.
        let server = UnixDatagram::bind(&path).unwrap();
        sink.send(b"three".to_vec());
        assert_eq!(sink.pending(), 0);
        assert_eq!(recv_text(&server), "two");
        assert_eq!(recv_text(&server), "three");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syslog_sink_never_blocks_on_a_daemon_that_does_not_read() {
        let (dir, path) = scratch_socket("syslog-full");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut sink = DatagramSink::open(path.clone()).unwrap();
        let started = std::time::Instant::now();
        for i in 0..SOCKET_BACKLOG + 3000 {
            sink.send(i.to_string().into_bytes());
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(sink.pending() > 0 && sink.pending() <= SOCKET_BACKLOG);
        // What the kernel queued came first and in order.
        assert_eq!(recv_text(&server), "0");
        assert_eq!(recv_text(&server), "1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ipv6_addresses_print_as_ipv6() {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = 2;
        assert_eq!(addr_text(&a), "fd00::2");
        assert_eq!(addr_text(&from_v4([192, 0, 2, 1])), "192.0.2.1");
    }
}
