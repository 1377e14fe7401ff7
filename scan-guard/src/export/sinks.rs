//! Where events go: files (appended), standard output, the syslog socket and
//! journald, each event to every place given (`--events`, repeatable).

use std::{
    collections::VecDeque,
    io::{ErrorKind, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use anyhow::{Context as _, Result};
use syslog::{Facility, Formatter3164, LogFormat as _, Severity};

use crate::export::events::EventRecord;

/// Where events go.
pub enum EventSink {
    Stdout,
    File(PathBuf, std::fs::File),
    /// A syslog socket (`/dev/log`: syslog daemons and journald listen there).
    Syslog(DatagramSink),
    /// journald's native socket: the JSON as MESSAGE plus fields of its own
    /// (see `crate::export::journal`). Same reconnect and backlog as syslog.
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
        if let Some(socket) = socket_spec(&text, "journal", crate::export::journal::JOURNAL_SOCKET)
        {
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
                sink.send(crate::export::journal::entry(rec, &line));
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
        crate::base::error::usage(format!(
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
                return Err(crate::base::error::usage(format!(
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
    use scan_guard_common::{
        config::KernelConfig,
        flags::{PROBE_KINDS, ProbeKind},
    };
    use serde_json::Value;
    use std::time::Duration;

    use super::*;
    use crate::export::events::tests::event;

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
        outs.write(&rec.as_event(scan_guard_common::vocab::EventName::Blocked))
            .unwrap();
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
        outs.write(&rec.as_event(scan_guard_common::vocab::EventName::Expired))
            .unwrap();
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
}
