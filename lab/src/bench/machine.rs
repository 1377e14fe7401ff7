//! Facts about the machine a run happened on, for the report.

use std::{collections::BTreeMap, fs, path::PathBuf, process::Command};

use super::results::Machine;

/// True when `program` is an executable on PATH or in /usr/sbin, /sbin.
pub fn have(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(program).is_file())
}

/// First non-empty output line of a bounded command (stdout, else stderr).
pub fn version(cmd: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["-k", "1", "10"])
        .args(cmd)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let pick = |b: &[u8]| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
            };
            pick(&o.stdout)
                .or_else(|| pick(&o.stderr))
                .unwrap_or_else(|| "?".into())
        }
        Err(e) => format!("? ({e})"),
    }
}

fn deb_version(pkg: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["-k", "1", "10", "dpkg-query", "-W", "-f=${Version}", pkg])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn collect(bench_cpu: usize) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let logical_cpus = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count()
        .max(1);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let mut tools = BTreeMap::new();
    // (program that shows it is there, Debian package, version command elsewhere)
    let probes: [(&str, &str, &[&str]); 8] = [
        ("xdp-filter", "xdp-tools", &[]),
        ("iptables", "iptables", &["iptables", "--version"]),
        ("nft", "nftables", &["nft", "--version"]),
        ("ipset", "ipset", &["ipset", "--version"]),
        ("nginx", "nginx-light", &["nginx", "-v"]),
        ("wrk", "wrk", &["wrk", "-v"]),
        ("nmap", "nmap", &["nmap", "--version"]),
        ("ip", "iproute2", &["ip", "-V"]),
    ];
    for (program, pkg, cmd) in probes {
        let v = if !have(program) {
            "not installed".to_string()
        } else {
            deb_version(pkg).unwrap_or_else(|| {
                if cmd.is_empty() {
                    "installed".into()
                } else {
                    version(cmd)
                }
            })
        };
        tools.insert(pkg.to_string(), v);
    }
    Machine {
        cpu_model,
        logical_cpus,
        kernel,
        date_utc: scan_guard::base::clock::rfc3339_unix(scan_guard::base::clock::unix_now()),
        memory_gib,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        bpf_stats_enabled: fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .unwrap_or_default()
            .trim()
            .to_string(),
        bench_cpu,
        tools,
    }
}
