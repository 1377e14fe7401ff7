//! Legitimate traffic: wrk (keep-alive, or a new connection per request with
//! `Connection: close`) and small HTTP clients of our own that model real users:
//! short connections to a few open ports, a typo to one closed port, several
//! clients behind one NAT address, a health checker. The clients run on threads
//! that enter the client namespace (setns affects only the calling thread) and
//! bind their own source address, so every pattern is one address to look for in
//! the events.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::lab::{Lab, Proc, read_lossy};

/// A wrk run in a namespace.
pub struct Wrk {
    pub label: String,
    pub proc: Proc,
    pub log: PathBuf,
    pub url: String,
}

/// What wrk printed at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WrkResult {
    pub label: String,
    pub url: String,
    pub connections: u32,
    pub keep_alive: bool,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_timeout: u64,
    pub non_2xx: u64,
}

impl WrkResult {
    pub fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_timeout
            + self.non_2xx
    }
}

/// How to run wrk.
#[derive(Clone, Debug)]
pub struct WrkPlan {
    pub label: String,
    pub url: String,
    pub connections: u32,
    /// `Connection: close`: a new TCP connection per request.
    pub close: bool,
    /// wrk's `-d`.
    pub duration: Duration,
    /// Pause of each connection between requests (a steady, bounded rate).
    pub delay_ms: Option<u32>,
}

/// Starts wrk in `ns` as `plan` says (bounded by the lab's spawn limit).
pub fn spawn_wrk(lab: &Lab, ns: &str, plan: &WrkPlan) -> Wrk {
    let secs = format!("{}s", plan.duration.as_secs().max(1));
    let conns = plan.connections.to_string();
    let mut args: Vec<String> = ["wrk", "-t1", "-c", &conns, "-d", &secs, "--timeout", "3s"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if plan.close {
        args.extend(["-H".to_owned(), "Connection: close".to_owned()]);
    }
    if let Some(ms) = plan.delay_ms {
        let script = lab.write_file(
            "wrk-delay",
            "lua",
            &format!("function delay()\n  return {ms}\nend\n"),
        );
        args.extend(["-s".to_owned(), script.to_str().expect("UTF-8").to_owned()]);
    }
    args.push(plan.url.clone());
    let log = lab.file("wrk", "log");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = lab.spawn_in(ns, &a, &log);
    Wrk {
        label: plan.label.clone(),
        proc,
        log,
        url: plan.url.clone(),
    }
}

/// Ends a wrk run: SIGINT (wrk then prints its totals) if it still runs, a
/// bounded wait, and its totals parsed. Panics if it printed none.
pub fn finish_wrk(lab: &Lab, w: &Wrk, plan: &WrkPlan) -> WrkResult {
    lab.signal(w.proc, libc::SIGINT);
    if lab.wait_for(w.proc, Duration::from_secs(10)).is_none() {
        lab.terminate(w.proc, Duration::from_secs(5));
    }
    let text = read_lossy(&w.log);
    let mut r = parse_wrk(&text).unwrap_or_else(|| {
        panic!(
            "[lab {}] wrk {} printed no totals:\n{text}",
            lab.tag, w.label
        )
    });
    r.label = w.label.clone();
    r.url = w.url.clone();
    r.connections = plan.connections;
    r.keep_alive = !plan.close;
    r
}

/// Reads wrk's summary: "N requests in Xs", "Socket errors: connect A, read B,
/// write C, timeout D", "Non-2xx or 3xx responses: N".
pub fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut found = false;
    for line in text.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            r.requests = n.trim().parse().ok()?;
            let secs = rest.split(',').next()?.trim();
            r.seconds = parse_duration(secs)?;
            found = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut w = part.split_whitespace();
                let (name, n) = (w.next()?, w.next()?.parse().ok()?);
                match name {
                    "connect" => r.errors_connect = n,
                    "read" => r.errors_read = n,
                    "write" => r.errors_write = n,
                    "timeout" => r.errors_timeout = n,
                    _ => {}
                }
            }
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse().ok()?;
        }
    }
    if r.seconds > 0.0 {
        r.requests_per_s = r.requests as f64 / r.seconds;
    }
    found.then_some(r)
}

fn parse_duration(s: &str) -> Option<f64> {
    for (suffix, scale) in [("ms", 1e-3), ("us", 1e-6), ("m", 60.0), ("s", 1.0)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// What a client pattern does.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A new connection per request, cycling over `ports` (all open), one every
    /// `every`.
    ShortConnections { ports: Vec<u16>, every: Duration },
    /// `times` connections to one closed port, `every` apart (a typo); each is
    /// refused, which is what it expects.
    Typo {
        port: u16,
        times: u32,
        every: Duration,
    },
    /// `clients` independent users behind one address: even ones keep a
    /// connection open to the first port, odd ones open a new connection per
    /// request, alternating over `ports`; each makes a request every `every`.
    Nat {
        clients: usize,
        ports: Vec<u16>,
        every: Duration,
    },
    /// Connects to every port of `ports` (one request each) every `every`.
    HealthCheck { ports: Vec<u16>, every: Duration },
}

/// A legitimate client: a behaviour from one source address to one target address.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub name: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub behaviour: Behaviour,
}

/// Totals of one pattern.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PatternTotals {
    pub name: String,
    pub src: String,
    /// Requests answered with 200.
    pub ok: u64,
    /// New TCP connections opened.
    pub connections: u64,
    /// Refusals the pattern expected (the typo).
    pub refused_expected: u64,
    /// Anything else: timeouts, resets, refusals of open ports, bad answers.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl PatternTotals {
    fn add(&mut self, o: &PatternTotals) {
        self.ok += o.ok;
        self.connections += o.connections;
        self.refused_expected += o.refused_expected;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Runs `patterns` from namespace `ns` until `stop` is set or `limit` passed, on
/// threads of their own; returns their totals (same order).
pub fn run_patterns(
    ns: &str,
    patterns: &[Pattern],
    stop: &Arc<AtomicBool>,
    limit: Duration,
) -> Vec<PatternTotals> {
    let deadline = Instant::now() + limit;
    std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = patterns
            .iter()
            .map(|p| {
                let workers = match &p.behaviour {
                    Behaviour::Nat { clients, .. } => *clients,
                    _ => 1,
                };
                (0..workers)
                    .map(|w| {
                        let stop = Arc::clone(stop);
                        s.spawn(move || {
                            enter_netns(ns)
                                .unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
                            worker(p, w, &stop, deadline)
                        })
                    })
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .zip(patterns)
            .map(|(hs, p)| {
                let mut total = PatternTotals {
                    name: p.name.clone(),
                    src: p.src.to_string(),
                    ..PatternTotals::default()
                };
                for h in hs {
                    match h.join() {
                        Ok(t) => total.add(&t),
                        Err(e) => std::panic::resume_unwind(e),
                    }
                }
                total
            })
            .collect()
    })
}

fn worker(p: &Pattern, index: usize, stop: &AtomicBool, deadline: Instant) -> PatternTotals {
    let mut t = PatternTotals::default();
    let running = || !stop.load(Ordering::SeqCst) && Instant::now() < deadline;
    let pause = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10).min(d));
        }
    };
    match &p.behaviour {
        Behaviour::ShortConnections { ports, every } => {
            let mut i = 0;
            while running() {
                one_request(p, ports[i % ports.len()], &mut t);
                i += 1;
                pause(*every);
            }
        }
        Behaviour::Typo { port, times, every } => {
            for _ in 0..*times {
                if !running() {
                    break;
                }
                t.connections += 1;
                match connect(p.src, SocketAddr::new(p.dst, *port)) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        t.refused_expected += 1
                    }
                    Err(e) => t.error(format!("port {port}: {e}")),
                    Ok(_) => t.error(format!("port {port} accepted: it should be closed")),
                }
                pause(*every);
            }
        }
        Behaviour::Nat { ports, every, .. } => {
            // Spread the users over the interval.
            pause(*every / 7 * (index as u32 % 7));
            if index.is_multiple_of(2) {
                let mut conn: Option<TcpStream> = None;
                while running() {
                    if conn.is_none() {
                        t.connections += 1;
                        match connect(p.src, SocketAddr::new(p.dst, ports[0])) {
                            Ok(s) => conn = Some(s),
                            Err(e) => t.error(format!("port {}: connect: {e}", ports[0])),
                        }
                    }
                    if let Some(s) = conn.as_mut() {
                        match request(s, true) {
                            Ok(()) => t.ok += 1,
                            Err(e) => {
                                t.error(format!("port {} (keep-alive): {e}", ports[0]));
                                conn = None;
                            }
                        }
                    }
                    pause(*every);
                }
            } else {
                let mut i = index;
                while running() {
                    one_request(p, ports[i % ports.len()], &mut t);
                    i += 1;
                    pause(*every);
                }
            }
        }
        Behaviour::HealthCheck { ports, every } => {
            while running() {
                let round = Instant::now();
                for &port in ports {
                    one_request(p, port, &mut t);
                }
                pause(every.saturating_sub(round.elapsed()));
            }
        }
    }
    t
}

/// A new connection from `p.src`, one request with `Connection: close`.
fn one_request(p: &Pattern, port: u16, t: &mut PatternTotals) {
    t.connections += 1;
    match connect(p.src, SocketAddr::new(p.dst, port)).and_then(|mut s| request(&mut s, false)) {
        Ok(()) => t.ok += 1,
        Err(e) => t.error(format!("port {port}: {e}")),
    }
}

fn connect(src: IpAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&dst.into(), Duration::from_secs(3))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One GET; Ok on a complete 200 answer.
fn request(s: &mut TcpStream, keep_alive: bool) -> io::Result<()> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: scan-guard-lab\r\nUser-Agent: scan-guard-lab\r\nConnection: {conn}\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let header_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16_384 {
            return Err(io::Error::other("header too long"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(io::Error::other(format!(
            "answer {:?}",
            head.lines().next().unwrap_or("")
        )));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Moves the calling thread (only it) into the network namespace `ns`.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    let file = fs::File::open(Path::new("/run/netns").join(ns))?;
    // SAFETY: a namespace descriptor we own; affects this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_totals() {
        let text = "Running 3s test @ http://10.200.1.2/\n  1 threads and 16 connections\n  16541 requests in 3.06s, 2.49MB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:   5397.91\n";
        let r = parse_wrk(text).expect("totals");
        assert_eq!(r.requests, 16541);
        assert!((r.seconds - 3.06).abs() < 1e-9);
        assert_eq!(
            (
                r.errors_connect,
                r.errors_read,
                r.errors_write,
                r.errors_timeout,
                r.non_2xx
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(r.errors(), 15);
        let r = parse_wrk("  92278 requests in 1.00m, 14.34MB read\n").expect("totals");
        assert!((r.seconds - 60.0).abs() < 1e-9);
        assert!(parse_wrk("nothing").is_none());
    }
}
