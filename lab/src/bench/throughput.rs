//! Part 3: legitimate HTTP throughput (nginx in the target namespace, wrk in the
//! client namespace) with no XDP program, with an empty XDP_PASS program and with
//! the real controller attached (native XDP on the target veth). Variants
//! alternate within each round, so drift hits all of them alike.

use std::{path::Path, thread, time::Duration};

use aya::programs::{Xdp, XdpMode};

use super::cost::{self, median};
use super::{
    controller::Controller,
    machine::have,
    netns::BenchLab,
    results::{Throughput, ThroughputRow},
    sizes::Sizes,
    sys,
};
use crate::lab::describe;

pub const NO_XDP: &str = "no XDP";
pub const EMPTY_PASS: &str = "empty XDP_PASS";
pub const SCAN_GUARD: &str = "scan-guard";

fn nginx_conf(lab: &BenchLab) -> String {
    let d = lab.dir.to_string_lossy();
    let t = lab.t.v4;
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n\
         scgi_temp_path {d}/nginx-scgi;\n\
         server {{\n    listen {t}:80 backlog=4096;\n    root {d}/www;\n  }}\n}}\n"
    )
}

struct WrkResult {
    rps: f64,
    errors: u64,
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let mut errors = 0;
    for l in text.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(WrkResult { rps, errors })
}

fn wrk(lab: &BenchLab, sizes: &Sizes, close: bool) -> WrkResult {
    let url = format!("http://{}/", lab.t.v4);
    let t = format!("-t{}", sizes.wrk_threads);
    let c = format!("-c{}", sizes.wrk_connections);
    let d = format!("-d{}s", sizes.wrk_secs);
    let mut args = vec!["wrk", &t, &c, &d];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = lab.exec(
        &lab.a.ns,
        Duration::from_secs(u64::from(sizes.wrk_secs) + 30),
        &args,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("wrk gave no result: {}", describe(&out)))
}

fn wait_listening(lab: &BenchLab, port: u16) {
    let filter = format!("sport = :{port}");
    for _ in 0..250 {
        let out = lab.exec(&lab.t.ns, Duration::from_secs(5), &["ss", "-Hltn", &filter]);
        if out.status.success() && !out.stdout.is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "nginx does not listen on port {port}: {}",
        std::fs::read_to_string(lab.file("nginx-error.log")).unwrap_or_default()
    );
}

/// Attaches the empty XDP_PASS program natively to the target veth (from a thread
/// inside its namespace), runs `f`, detaches.
fn with_empty_pass<T>(lab: &BenchLab, f: impl FnOnce() -> T) -> T {
    let mut obj = cost::baseline();
    let iface = lab.t.iface.clone();
    let prog: &mut Xdp = obj
        .program_mut("baseline_pass")
        .expect("baseline program")
        .try_into()
        .expect("XDP program");
    let id = sys::in_netns(&lab.t.ns, None, || {
        prog.attach(&iface, XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching the empty program to {iface}: {e}"))
    });
    assert!(
        lab.xdp_prog_id(&lab.t).is_some(),
        "empty program not attached"
    );
    let v = f();
    sys::in_netns(&lab.t.ns, None, || {
        prog.detach(id).expect("detaching the empty program")
    });
    v
}

pub fn run(sizes: &Sizes, controller_bin: &Path) -> Throughput {
    let mut notes = Vec::new();
    for tool in ["nginx", "wrk"] {
        assert!(
            have(tool),
            "{tool} is not installed (Debian packages nginx-light, wrk)"
        );
    }
    let lab = BenchLab::new();
    // Client: wide port range and TIME_WAIT reuse for the connection-per-request runs.
    lab.sysctl(
        &lab.a.ns,
        &[
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    );
    // Server: few TIME_WAIT sockets, so connection-per-request runs do not slow down
    // the runs after them.
    lab.sysctl(&lab.t.ns, &["net.ipv4.tcp_max_tw_buckets=2048"]);
    let www = lab.file("www");
    std::fs::create_dir_all(&www).expect("creating the web root");
    std::fs::write(www.join("index.html"), "x".repeat(612)).expect("writing index.html");
    let conf = lab.file("nginx.conf");
    std::fs::write(&conf, nginx_conf(&lab)).expect("writing nginx.conf");
    let conf_s = conf.to_string_lossy().into_owned();
    let prefix = lab.dir.to_string_lossy().into_owned();
    let err_log = lab.file("nginx-error.log").to_string_lossy().into_owned();
    let limit = Duration::from_secs(600);
    let nginx = lab.spawn(
        &lab.t.ns,
        limit,
        &["nginx", "-c", &conf_s, "-p", &prefix, "-e", &err_log],
        &[],
        &lab.file("nginx.log"),
    );
    wait_listening(&lab, 80);

    let mut rows: Vec<ThroughputRow> = Vec::new();
    let mut scan_guard_drops = 0;
    for (mode, close) in [("keep-alive", false), ("close", true)] {
        for variant in [NO_XDP, EMPTY_PASS, SCAN_GUARD] {
            rows.push(ThroughputRow {
                mode: mode.into(),
                variant: variant.into(),
                ..Default::default()
            });
        }
        // Warm-up (connection tables, page cache), not recorded.
        wrk(
            &lab,
            &Sizes {
                wrk_secs: 1,
                ..sizes.clone()
            },
            close,
        );
        for round in 0..sizes.wrk_rounds.max(1) {
            // Rotate the order each round, so no variant always runs first or last.
            let mut order = [NO_XDP, EMPTY_PASS, SCAN_GUARD];
            order.rotate_left(round as usize % 3);
            for variant in order {
                let r = match variant {
                    NO_XDP => {
                        assert!(
                            lab.xdp_prog_id(&lab.t).is_none(),
                            "an XDP program is attached"
                        );
                        wrk(&lab, sizes, close)
                    }
                    EMPTY_PASS => with_empty_pass(&lab, || wrk(&lab, sizes, close)),
                    _ => {
                        let ctl = Controller::start(&lab, controller_bin, limit);
                        // The controller reads the listening sockets at start-up.
                        let r = wrk(&lab, sizes, close);
                        let st = ctl.maps().stats_total().expect("controller stats");
                        let packets = st[scan_guard_common::stats::Stat::Packets as usize];
                        let passed = st[scan_guard_common::stats::Stat::Passed as usize];
                        scan_guard_drops += packets - passed;
                        ctl.stop(&lab);
                        r
                    }
                };
                let row = rows
                    .iter_mut()
                    .find(|x| x.mode == mode && x.variant == variant)
                    .expect("row");
                row.requests_per_sec.push(r.rps);
                row.errors += r.errors;
            }
        }
    }
    lab.stop(nginx, Duration::from_secs(5));
    for r in &mut rows {
        r.median = median(&r.requests_per_sec);
    }
    let base: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.variant == NO_XDP)
        .map(|r| (r.mode.clone(), r.median))
        .collect();
    for r in &mut rows {
        let b = base
            .iter()
            .find(|(m, _)| *m == r.mode)
            .map_or(f64::NAN, |b| b.1);
        r.vs_no_xdp = r.median / b;
    }
    notes.push(format!(
        "nginx (one process) in the target namespace serves a 612-byte file; wrk -t{} -c{} -d{}s \
         from the client namespace; {} round(s), variants in rotating order; median shown",
        sizes.wrk_threads, sizes.wrk_connections, sizes.wrk_secs, sizes.wrk_rounds
    ));
    notes.push(
        "attaching any XDP program natively to a veth moves its receive side to NAPI \
         polling, which changes throughput by itself (see the empty XDP_PASS rows): \
         scan-guard's own cost is its difference to the empty program"
            .into(),
    );
    notes.push(
        "all processes share the machine's CPUs: the client, the server and the veth softirq \
         compete, so this measures what the XDP program adds to a CPU-bound web server"
            .into(),
    );
    Throughput {
        duration_secs: sizes.wrk_secs,
        threads: sizes.wrk_threads,
        connections: sizes.wrk_connections,
        rounds: sizes.wrk_rounds,
        rows,
        scan_guard_drops,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_wrk;

    #[test]
    fn wrk_output_gives_rate_and_errors() {
        let out = "Running 5s test @ http://10.201.0.2/\n  1 threads and 32 connections\n  148803 requests in 5.00s, 120.75MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 4\nRequests/sec:  29760.12\nTransfer/sec:     24.15MB\n";
        let r = parse_wrk(out).expect("parsed");
        assert!((r.rps - 29760.12).abs() < 1e-9);
        assert_eq!(r.errors, 9);
        assert!(parse_wrk("unable to connect").is_none());
    }
}
