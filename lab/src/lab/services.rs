//! Services in the target namespace and clients of them: an HTTP server
//! (python3 or nginx), curl from any namespace, and the checks of who is still
//! served once the controller blocks.

use std::{
    fs,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use super::{
    cmd::{describe, path_str, read_lossy},
    controller::Controller,
    process::Proc,
    topology::{Lab, LabOptions},
};

impl Lab {
    /// A lab with the second client ([`LabOptions::second_client`]) and the HTTP
    /// server of [`start_http_server`](Self::start_http_server) listening on `port`:
    /// the scene of the tests that check who is still served.
    pub fn with_client_and_http_server(tag: &str, port: u16) -> Self {
        let lab = Self::with_options(
            tag,
            LabOptions {
                second_client: true,
            },
        );
        lab.start_http_server(port);
        lab
    }

    /// Starts `python3 -m http.server PORT` (dual-stack) in the target namespace
    /// serving a one-line page, and waits until it listens.
    pub fn start_http_server(&self, port: u16) -> Proc {
        let www = self.dir.join(format!("www-{port}"));
        fs::create_dir_all(&www).unwrap_or_else(|e| panic!("creating {}: {e}", www.display()));
        fs::write(www.join("index.html"), "scan-guard lab\n").expect("index.html");
        let log = self.file("http-server", "log");
        let p = self.spawn_in(
            &self.tgt.ns,
            &[
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "::",
                "--directory",
                path_str(&www),
            ],
            &log,
        );
        self.wait_listening(&self.tgt.ns, port, Duration::from_secs(10));
        p
    }

    /// Starts nginx (nginx-light) in the target namespace with a minimal config of
    /// its own in the lab directory: every port in `ports` on IPv4 and IPv6, a
    /// 200 "scan-guard lab" answer to every request, no access log, logs and temp
    /// files in the lab directory; waits until every port listens. It runs in the
    /// foreground under the lab's `timeout`, so the lab stops it on drop.
    pub fn start_nginx(&self, ports: &[u16]) -> Proc {
        let root = self.file("nginx", "d");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let r = path_str(&root);
        let listen: String = ports
            .iter()
            .map(|p| format!("    listen {p} backlog=4096;\n    listen [::]:{p} backlog=4096;\n"))
            .collect();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
             \x20 client_body_temp_path {r}/body;\n  proxy_temp_path {r}/proxy;\n\
             \x20 fastcgi_temp_path {r}/fastcgi;\n  uwsgi_temp_path {r}/uwsgi;\n\
             \x20 scgi_temp_path {r}/scgi;\n\
             \x20 server {{\n{listen}    location / {{ default_type text/plain; return 200 \"scan-guard lab\\n\"; }}\n  }}\n}}\n"
        );
        let conf_file = root.join("nginx.conf");
        fs::write(&conf_file, conf)
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf_file.display()));
        let log = self.file("nginx", "log");
        let error_log = root.join("error.log");
        let p = self.spawn_in(
            &self.tgt.ns,
            &[
                "nginx",
                "-e",
                path_str(&error_log),
                "-p",
                r,
                "-c",
                path_str(&conf_file),
            ],
            &log,
        );
        for &port in ports {
            self.wait_started(
                p,
                "nginx",
                &format!("listen on {port}"),
                &[&log, &error_log],
                Duration::from_secs(10),
                || self.listens(&self.tgt.ns, port),
            );
        }
        p
    }

    /// Polls `ss` until a TCP listener on `port` exists in `ns` (bounded).
    pub fn wait_listening(&self, ns: &str, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.listens(ns, port) {
            assert!(
                Instant::now() < deadline,
                "[lab {}] nothing listens on TCP port {port} in {ns} after {limit:?}",
                self.tag
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when a TCP listener on `port` exists in `ns` (`ss`).
    pub fn listens(&self, ns: &str, port: u16) -> bool {
        let filter = format!("sport = :{port}");
        let out = self.exec_in(ns, &["ss", "-Hltn", &filter]);
        out.status.success() && !out.stdout.is_empty()
    }

    /// One HTTP GET from `ns` to `ip:port` with curl (connect timeout 2 s, total
    /// 3 s): `Ok(())` on status 200, else what happened.
    pub fn http_get(&self, ns: &str, ip: IpAddr, port: u16) -> Result<(), String> {
        self.http_get_from(ns, None, ip, port)
    }

    /// [`http_get`](Self::http_get) from source address `src` of `ns`.
    pub fn http_get_from(
        &self,
        ns: &str,
        src: Option<&str>,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), String> {
        let url = match ip {
            IpAddr::V4(a) => format!("http://{a}:{port}/"),
            IpAddr::V6(a) => format!("http://[{a}]:{port}/"),
        };
        let mut args = vec!["curl", "-sS", "-g"];
        if let Some(src) = src {
            args.extend(["--interface", src]);
        }
        args.extend([
            "--connect-timeout",
            "2",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        let out = self.exec_in_for(ns, Duration::from_secs(8), &args);
        let code = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && code.trim() == "200" {
            Ok(())
        } else {
            let from = src.map_or_else(|| ns.to_string(), |s| format!("{s} in {ns}"));
            Err(format!("GET {url} from {from}: {}", describe(&out)))
        }
    }

    /// Panics unless `ns` gets the page of the HTTP server on `ip:port`.
    pub fn assert_served(&self, c: &Controller, ns: &str, ip: IpAddr, port: u16, who: &str) {
        if let Err(e) = self.http_get(ns, ip, port) {
            panic!(
                "[lab {}] {who} is not served: {e}\n--- list ---\n{:?}\n--- events ---\n{}--- controller log ---\n{}",
                self.tag,
                c.list(),
                read_lossy(&c.events),
                read_lossy(&c.log)
            );
        }
    }

    /// Panics if `ns` gets the page of the HTTP server on `ip:port`.
    pub fn assert_cut_off(&self, c: &Controller, ns: &str, ip: IpAddr, port: u16, who: &str) {
        assert!(
            self.http_get(ns, ip, port).is_err(),
            "[lab {}] {who} is still served\n--- list ---\n{:?}\n--- events ---\n{}",
            self.tag,
            c.list(),
            read_lossy(&c.events)
        );
    }
}
