//! xdp-filter (Debian's xdp-tools) as a baseline: loaded by its own CLI onto the
//! lab's target veth (pinning into the lab's private bpffs), the rule added by its
//! CLI, then its program opened by id, pinned and driven with BPF_PROG_TEST_RUN
//! exactly like scan-guard.

use std::{collections::HashSet, time::Duration};

use aya::{
    maps::{Map, MapData, PerCpuHashMap, PerCpuValues},
    programs::Xdp,
};

use aya_obj::programs::XdpAttachType;

use super::cost::Rng;
use super::{
    machine::have,
    netns::{BenchLab, CMD_TIMEOUT, End},
    sys,
};
use crate::lab::describe;

pub struct XdpFilter {
    pub prog: Xdp,
    /// Name of the kernel program (which object xdp-filter chose).
    pub prog_name: String,
    pub rules: Rules,
}

/// xdp-filter's IPv4 rule map.
pub struct Rules {
    map: PerCpuHashMap<MapData, u32, u64>,
    value: PerCpuValues<u64>,
    pub entries: u32,
    pub capacity: u32,
    ns: String,
    used: HashSet<u32>,
}

/// Runs an xdp-filter command in `ns` with the lab's bpffs as its only choice: the
/// namespace's private mount namespace gets it bind-mounted on /sys/fs/bpf (where
/// xdp-tools looks first; `ip netns exec` leaves a fresh sysfs there), and
/// LIBXDP_BPFFS names it too. Otherwise xdp-tools may pick the first bpffs listed
/// in /proc/mounts, which can belong to someone else.
fn xdp_filter_cmd(lab: &BenchLab, ns: &str, args: &[&str]) -> std::process::Output {
    let bpffs = lab.bpffs.to_string_lossy().into_owned();
    let mut full = vec![
        "sh",
        "-c",
        "mount --bind \"$0\" /sys/fs/bpf && exec \"$@\"",
        bpffs.as_str(),
    ];
    full.extend_from_slice(args);
    lab.exec_env(ns, CMD_TIMEOUT, &full, &[("LIBXDP_BPFFS", bpffs.as_str())])
}

fn key(octets: [u8; 4]) -> u32 {
    // The program compares the address as it sits in the packet.
    u32::from_ne_bytes(octets)
}

impl XdpFilter {
    /// Loads xdp-filter (IPv4+IPv6 features, default-allow policy: listed addresses
    /// are dropped) on `end`'s veth and denies `blocked` as a source. Err: why it
    /// cannot be measured here.
    pub fn load(lab: &BenchLab, end: &End, blocked: [u8; 4]) -> Result<Self, String> {
        if !have("xdp-filter") {
            return Err("xdp-filter is not installed (Debian package xdp-tools)".into());
        }
        let run = |args: &[&str]| {
            let out = xdp_filter_cmd(lab, &end.ns, args);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("`{}` failed: {}", args.join(" "), describe(&out)))
            }
        };
        run(&[
            "xdp-filter",
            "load",
            "-m",
            "native",
            "-f",
            "ipv4,ipv6",
            &end.iface,
        ])?;
        let addr = std::net::Ipv4Addr::from(blocked).to_string();
        run(&["xdp-filter", "ip", &addr, "--mode", "src"])?;
        if !lab.bpffs.join("xdp-filter").is_dir() {
            return Err(format!(
                "xdp-filter did not pin its maps under {}",
                lab.bpffs.display()
            ));
        }

        let id = lab
            .xdp_prog_id(end)
            .ok_or("xdp-filter load succeeded but no XDP program is attached")?;
        let fd = sys::prog_fd_by_id(id).map_err(|e| format!("opening program {id}: {e}"))?;
        let pin = lab.bpffs.join("bench-xdp-filter-prog");
        sys::pin(&fd, &pin).map_err(|e| format!("pinning program {id}: {e}"))?;
        let prog = Xdp::from_pin(&pin, XdpAttachType::Interface)
            .map_err(|e| format!("opening pinned program {id}: {e}"))?;
        let prog_name = prog
            .info()
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());

        let map_pin = lab.bpffs.join("xdp-filter/filter_ipv4");
        // Retried briefly: seen to fail once right after `xdp-filter ip` returned.
        let mut tries = 0;
        let data = loop {
            match MapData::from_pin(&map_pin) {
                Ok(d) => break d,
                Err(e) if tries >= 25 => {
                    return Err(format!("opening {}: {e:?}", map_pin.display()));
                }
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        };
        let capacity = data
            .info()
            .map(|i| i.max_entries())
            .map_err(|e| format!("map info: {e}"))?;
        let map = Map::from_map_data(data).map_err(|e| format!("filter_ipv4: {e}"))?;
        let map: PerCpuHashMap<MapData, u32, u64> =
            PerCpuHashMap::try_from(map).map_err(|e| format!("filter_ipv4 type: {e}"))?;
        // The value the CLI wrote for a source rule: reused for the filler entries.
        let value = map
            .get(&key(blocked), 0)
            .map_err(|e| format!("reading the rule xdp-filter wrote: {e}"))?;
        let mut used = HashSet::new();
        used.insert(key(blocked));
        Ok(Self {
            prog,
            prog_name,
            rules: Rules {
                map,
                value,
                entries: 1,
                capacity,
                ns: end.ns.clone(),
                used,
            },
        })
    }
}

impl Rules {
    /// Adds source rules for other addresses (outside 10.0.0.0/8) until the map holds
    /// `n` entries. Err when xdp-filter cannot hold that many.
    pub fn fill_to(&mut self, n: u32) -> Result<(), String> {
        if n > self.capacity {
            return Err(format!(
                "xdp-filter's IPv4 map holds at most {} entries",
                self.capacity
            ));
        }
        let mut rng = Rng(0x5eed_f11e);
        while self.entries < n {
            let a = (rng.next_u64() as u32).to_be_bytes();
            if a[0] == 10 || a[0] == 0 || a[0] >= 224 || !self.used.insert(key(a)) {
                continue;
            }
            let values: Vec<u64> = self.value.iter().copied().collect();
            let values = PerCpuValues::try_from(values).map_err(|e| e.to_string())?;
            self.map
                .insert(key(a), values, 0)
                .map_err(|e| format!("filling filter_ipv4: {e}"))?;
            self.entries += 1;
        }
        Ok(())
    }

    /// Packets xdp-filter itself counted as dropped (`xdp-filter status`).
    pub fn dropped(&self, lab: &BenchLab) -> Option<u64> {
        let out = xdp_filter_cmd(lab, &self.ns, &["xdp-filter", "status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.trim_start().starts_with("XDP_DROP"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }
}
