//! The scene every scenario plays on: the lab (attacker, target, optionally a
//! client on a bridge in a switch namespace), nginx on the target's service ports,
//! extra target addresses for sweeps, a pool of attacker source addresses (one
//! per attack), the zmap files, and the real controller attached to the target's
//! veth in native XDP mode with the default configuration.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::lab::{Controller, ControllerOptions, Lab, LabOptions, XdpMode};

use super::attacks::Target;

/// What [`Stage::new`] builds.
#[derive(Clone, Debug)]
pub struct StageOptions {
    pub tag: String,
    /// A client namespace (on a bridge in a switch namespace).
    pub client: bool,
    /// Ports nginx listens on (IPv4 and IPv6).
    pub ports: Vec<u16>,
    /// Attacker source addresses: 10.200.1.n for n in this range ...
    pub attacker_v4: RangeInclusive<u8>,
    /// ... and fd00:200::n.
    pub attacker_v6: RangeInclusive<u16>,
    /// Spoofed decoys: 10.200.1.n, configured nowhere.
    pub decoys_v4: RangeInclusive<u8>,
    /// Bound of every long-running process (controller, loads).
    pub spawn_limit: Duration,
}

impl StageOptions {
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            client: false,
            ports: vec![80, 443, 8080],
            attacker_v4: 100..=199,
            attacker_v6: 0x100..=0x10f,
            decoys_v4: 200..=239,
            spawn_limit: Duration::from_secs(600),
        }
    }
}

/// Target addresses a sweep runs over: 10.200.1.10 - 10.200.1.40.
pub const SWEEP: RangeInclusive<u8> = 10..=40;

pub struct Stage {
    pub lab: Lab,
    pub ctl: Controller,
    pub target: Target,
    pub ports: Vec<u16>,
    pub started: Instant,
    v4: Mutex<VecDeque<Ipv4Addr>>,
    v6: Mutex<VecDeque<std::net::Ipv6Addr>>,
    decoys: Mutex<VecDeque<Ipv4Addr>>,
}

impl Stage {
    pub fn new(opts: &StageOptions) -> Self {
        let started = Instant::now();
        let lab = Lab::with_options(
            &opts.tag,
            LabOptions {
                second_client: opts.client,
            },
        );
        lab.set_spawn_limit(opts.spawn_limit);
        let tgt_ns = lab.tgt.ns.clone();
        // UDP scans need every port-unreachable; stale TIME_WAIT answers after heavy
        // Connection: close load would confuse nmap (lab gotchas).
        lab.sysctl(&tgt_ns, "net.ipv4.icmp_ratelimit=0");
        lab.sysctl(&tgt_ns, "net.ipv6.icmp.ratelimit=0");
        lab.sysctl(&tgt_ns, "net.ipv4.tcp_max_tw_buckets=4096");
        if let Some(cli) = lab.cli.clone() {
            // Thousands of new connections per second from one address.
            lab.sysctl(&cli.ns, "net.ipv4.ip_local_port_range=1024 65535");
            lab.sysctl(&cli.ns, "net.ipv4.tcp_tw_reuse=1");
        }
        lab.start_nginx(&opts.ports);
        let sweep = lab.add_target_v4(SWEEP);
        let att = lab.att.clone();
        let v4 = lab.add_v4(&att, opts.attacker_v4.clone());
        let v6 = lab.add_v6(&att, opts.attacker_v6.clone());
        let decoys = opts
            .decoys_v4
            .clone()
            .map(|n| Ipv4Addr::new(10, 200, 1, n))
            .collect();
        let allow: String = sweep.iter().map(|a| format!("{a}/32\n")).collect();
        let target = Target {
            att_iface: lab.att.iface.clone(),
            att_mac: lab.att.mac.to_owned(),
            tgt_mac: lab.tgt.mac.to_owned(),
            tgt_v4: lab.tgt.v4,
            tgt_v6: lab.tgt.v6,
            sweep,
            zmap_conf: lab.write_file("zmap", "conf", "# scan-guard lab: no defaults\n"),
            zmap_blocklist: lab.write_file("zmap-blocklist", "txt", ""),
            zmap_allowlist: lab.write_file("zmap-allowlist", "txt", &allow),
        };
        let ctl = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native));
        Self {
            lab,
            ctl,
            target,
            ports: opts.ports.clone(),
            started,
            v4: Mutex::new(v4.into()),
            v6: Mutex::new(v6.into()),
            decoys: Mutex::new(decoys),
        }
    }

    /// A fresh attacker source address of `family` (never used before in this lab).
    pub fn fresh_source(&self, family: super::attacks::Family) -> IpAddr {
        let next = match family {
            super::attacks::Family::V4 => self.v4.lock().expect("pool").pop_front().map(IpAddr::V4),
            super::attacks::Family::V6 => self.v6.lock().expect("pool").pop_front().map(IpAddr::V6),
        };
        next.unwrap_or_else(|| {
            panic!(
                "[{}] out of fresh {family:?} attacker sources",
                self.lab.tag
            )
        })
    }

    /// `n` spoofed decoy sources inside the lab subnet (configured nowhere).
    pub fn fresh_decoys(&self, n: usize) -> Vec<IpAddr> {
        let mut pool = self.decoys.lock().expect("pool");
        (0..n)
            .map(|_| {
                IpAddr::V4(
                    pool.pop_front()
                        .unwrap_or_else(|| panic!("[{}] out of decoy addresses", self.lab.tag)),
                )
            })
            .collect()
    }

    /// Seconds since the stage was set up (for progress lines).
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
