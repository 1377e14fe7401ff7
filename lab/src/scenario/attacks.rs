//! The attacks: real scanners with their real options, each run from a source
//! address of its own inside the lab (the kernel reports a source at most once per
//! window, and a blocked source stays blocked), against the target's addresses
//! only. Every scanner runs inside the attacker namespace, whose only link is the
//! lab's veth: nothing it sends can leave the lab.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use crate::pcap::{ACK, FIN, PSH, Packet, SYN, UDP, URG};

/// How a packet from the attacker counts as a probe of this attack (replies the
/// attacker's own kernel sends, e.g. the RST after a SYN/ACK, and the rest of a
/// connect() handshake are not probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMatch {
    /// TCP with exactly these flags (of FIN/SYN/RST/PSH/ACK/URG).
    Tcp(u8),
    /// Any UDP datagram.
    Udp,
    /// A first IP fragment (the probe's ports, its flags possibly in a later
    /// fragment) or an unfragmented SYN.
    FirstFragmentOrSyn,
}

impl ProbeMatch {
    pub fn matches(self, p: &Packet) -> bool {
        match self {
            Self::Tcp(flags) => !p.fragment && p.tcp_is(flags),
            Self::Udp => p.proto == UDP && !p.later_fragment,
            Self::FirstFragmentOrSyn => {
                (p.fragment && !p.later_fragment && p.proto == crate::pcap::TCP)
                    || (!p.fragment && p.tcp_is(SYN))
            }
        }
    }

    /// Probes with these flags pass the XDP program until their source is blocked
    /// (invalid flag combinations are dropped whatever the source).
    pub fn passes_until_blocked(self) -> bool {
        match self {
            Self::Tcp(f) => !matches!(f, 0 | FIN | 0x29) && f & (SYN | FIN) != SYN | FIN,
            Self::Udp | Self::FirstFragmentOrSyn => true,
        }
    }
}

/// The scanner and its options (source, interface, MACs and targets are added
/// by [`Attack::argv`]).
#[derive(Clone, Debug)]
pub enum Tool {
    /// `nmap ARGS` against the target's main address (IPv4 or IPv6).
    Nmap(Vec<String>),
    /// `nmap ARGS` over the target's extra IPv4 addresses (a host sweep).
    NmapSweep(Vec<String>),
    /// masscan over `ports` of the target at `rate` packets/s.
    Masscan { ports: String, rate: u32 },
    /// zmap (TCP SYN) to `port` of every extra target address at `rate` packets/s.
    Zmap { port: u16, rate: u32 },
    /// `hping3 ARGS` against the target's main address, spoofing the source.
    Hping(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One attack of the demo or the matrix.
#[derive(Clone, Debug)]
pub struct Attack {
    /// Short name for tables, e.g. `nmap -sS -T4`.
    pub name: String,
    pub tool: Tool,
    pub family: Family,
    /// The kinds a correct detection may report.
    pub kinds: Vec<&'static str>,
    pub probe: ProbeMatch,
    /// Spoofed decoy sources (nmap -D), taken from the lab's unused addresses.
    pub decoys: usize,
    /// A slow scan: caught by the controller's slow-scan test, not the kernel's
    /// window; its target is a probe count, not milliseconds.
    pub slow: bool,
    /// Probes the XDP program drops outright whatever the source (first fragments
    /// too short for the TCP flags, RFC 1858): nothing reaches the target, and
    /// nothing is tracked, so no detection is expected.
    pub dropped_at_nic: bool,
}

/// Everything [`Attack::argv`] needs to know about the lab.
#[derive(Clone, Debug)]
pub struct Target {
    /// The attacker's interface (inside its namespace) and MAC.
    pub att_iface: String,
    pub att_mac: String,
    /// The target's MAC (the "router" of masscan and zmap: it is on the link).
    pub tgt_mac: String,
    pub tgt_v4: Ipv4Addr,
    pub tgt_v6: std::net::Ipv6Addr,
    /// Extra target addresses for sweeps.
    pub sweep: Vec<Ipv4Addr>,
    /// zmap: a config file of our own (not /etc/zmap's), an empty blocklist and an
    /// allowlist holding only the sweep addresses.
    pub zmap_conf: PathBuf,
    pub zmap_blocklist: PathBuf,
    pub zmap_allowlist: PathBuf,
}

impl Target {
    /// The addresses probes of `a` go to.
    pub fn addrs_of(&self, a: &Attack) -> Vec<IpAddr> {
        match (&a.tool, a.family) {
            (Tool::NmapSweep(_) | Tool::Zmap { .. }, _) => {
                self.sweep.iter().copied().map(IpAddr::V4).collect()
            }
            (_, Family::V6) => vec![IpAddr::V6(self.tgt_v6)],
            (_, Family::V4) => vec![IpAddr::V4(self.tgt_v4)],
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl Attack {
    /// An IPv4 attack by `tool` expected to be reported as `kind`, without decoys,
    /// not slow and not dropped at the NIC (set those fields after if so).
    fn v4(name: impl Into<String>, tool: Tool, kind: &'static str, probe: ProbeMatch) -> Self {
        Self {
            name: name.into(),
            tool,
            family: Family::V4,
            kinds: vec![kind],
            probe,
            decoys: 0,
            slow: false,
            dropped_at_nic: false,
        }
    }

    fn nmap(name: &str, args: &[&str], kind: &'static str, probe: ProbeMatch) -> Self {
        Self::v4(name, Tool::Nmap(strings(args)), kind, probe)
    }

    /// The command line, run inside the attacker namespace.
    pub fn argv(&self, t: &Target, src: IpAddr, decoys: &[IpAddr]) -> Vec<String> {
        let src_s = src.to_string();
        match &self.tool {
            Tool::Nmap(args) | Tool::NmapSweep(args) => {
                let mut v = strings(&["nmap", "-n", "-e", &t.att_iface, "-S", &src_s]);
                if self.family == Family::V6 {
                    v.push("-6".into());
                }
                if !decoys.is_empty() {
                    let mut list: Vec<String> = decoys.iter().map(IpAddr::to_string).collect();
                    list.push("ME".into());
                    v.push("-D".into());
                    v.push(list.join(","));
                }
                v.extend(args.iter().cloned());
                // Bounds nmap itself; the scenario stops it once the block is in.
                v.extend(strings(&["--host-timeout", "60s"]));
                if let Tool::NmapSweep(_) = &self.tool {
                    let (first, last) = (t.sweep[0], t.sweep[t.sweep.len() - 1]);
                    v.push(format!("{first}-{}", last.octets()[3]));
                } else if self.family == Family::V6 {
                    v.push(t.tgt_v6.to_string());
                } else {
                    v.push(t.tgt_v4.to_string());
                }
                v
            }
            Tool::Masscan { ports, rate } => strings(&[
                "masscan",
                "--adapter",
                &t.att_iface,
                "--adapter-ip",
                &src_s,
                "--adapter-mac",
                &t.att_mac,
                "--router-mac",
                &t.tgt_mac,
                "-p",
                ports,
                "--rate",
                &rate.to_string(),
                "--wait",
                "1",
                &t.tgt_v4.to_string(),
            ]),
            Tool::Zmap { port, rate } => strings(&[
                "zmap",
                "-C",
                path(&t.zmap_conf),
                "-b",
                path(&t.zmap_blocklist),
                "-w",
                path(&t.zmap_allowlist),
                "-n",
                &t.sweep.len().to_string(),
                "-p",
                &port.to_string(),
                "-i",
                &t.att_iface,
                "-S",
                &src_s,
                "--source-mac",
                &t.att_mac,
                "-G",
                &t.tgt_mac,
                "-r",
                &rate.to_string(),
                "-c",
                "1",
                "-t",
                "5",
                "-o",
                "-",
                "-q",
                "--disable-syslog",
            ]),
            Tool::Hping(args) => {
                let mut v = strings(&["hping3", "-n", "-I", &t.att_iface, "-a", &src_s]);
                v.extend(args.iter().cloned());
                v.push(t.tgt_v4.to_string());
                v
            }
        }
    }

    /// The command line as text (for tables and JSON), with placeholders for what
    /// changes per run.
    pub fn describe(&self, t: &Target, src: IpAddr, decoys: &[IpAddr]) -> String {
        self.argv(t, src, decoys).join(" ")
    }
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The nmap port-scan types of the issue: option, kind reported, probe flags.
pub const NMAP_SCANS: [(&str, &str, ProbeMatch); 8] = [
    ("-sS", "syn", ProbeMatch::Tcp(SYN)),
    ("-sT", "connect", ProbeMatch::Tcp(SYN)),
    ("-sX", "xmas", ProbeMatch::Tcp(FIN | PSH | URG)),
    ("-sN", "null", ProbeMatch::Tcp(0)),
    ("-sF", "fin", ProbeMatch::Tcp(FIN)),
    ("-sA", "ack", ProbeMatch::Tcp(ACK)),
    ("-sM", "maimon", ProbeMatch::Tcp(FIN | ACK)),
    ("-sU", "udp", ProbeMatch::Udp),
];

/// nmap's TCP SYN host sweep (`-sn -PS80`, no ARP discovery: never with `-Pn`,
/// which would make it send nothing).
fn sweep(timing: &str) -> Attack {
    Attack::v4(
        format!("nmap -sn -PS80 sweep {timing}"),
        Tool::NmapSweep(strings(&["-sn", "-PS80", "--disable-arp-ping", timing])),
        "sweep",
        ProbeMatch::Tcp(SYN),
    )
}

fn masscan(ports: &str, rate: u32) -> Attack {
    Attack::v4(
        format!("masscan -p{ports} --rate {rate}"),
        Tool::Masscan {
            ports: ports.to_owned(),
            rate,
        },
        "syn",
        ProbeMatch::Tcp(SYN),
    )
}

fn hping(name: &str, args: &[&str], kind: &'static str, probe: ProbeMatch) -> Attack {
    Attack::v4(name, Tool::Hping(strings(args)), kind, probe)
}

/// The demo's story: every nmap scan type once (-T4), a SYN host sweep, a masscan
/// burst and hping3 invalid-flag packets.
pub fn demo() -> Vec<Attack> {
    let mut v: Vec<Attack> = NMAP_SCANS
        .iter()
        .map(|(opt, kind, probe)| {
            Attack::nmap(
                &format!("nmap {opt}"),
                &[opt, "-Pn", "-T4", "-p", "1-1000"],
                kind,
                *probe,
            )
        })
        .collect();
    let mut s = sweep("-T4");
    s.name = "nmap -sn -PS80 (host sweep)".into();
    v.push(s);
    v.push(masscan("1-10000", 100_000));
    v.push(hping(
        "hping3 -S -F (SYN+FIN)",
        &["-S", "-F", "-p", "++1", "-i", "u2000", "-c", "300"],
        "invalid_flags",
        ProbeMatch::Tcp(SYN | FIN),
    ));
    v
}

/// The scan matrix: every nmap scan type and the sweep at -T3, -T4 and -T5, then
/// the evasions and the fast scanners of the issue.
pub fn matrix() -> Vec<Attack> {
    let mut v = Vec::new();
    for timing in ["-T3", "-T4", "-T5"] {
        for (opt, kind, probe) in NMAP_SCANS {
            v.push(Attack::nmap(
                &format!("nmap {opt} {timing}"),
                &[opt, "-Pn", timing, "-p", "1-200"],
                kind,
                probe,
            ));
        }
        v.push(sweep(timing));
    }
    let syn = ProbeMatch::Tcp(SYN);
    v.push(Attack::nmap(
        "nmap -sS -T4 -p- (full range)",
        &["-sS", "-Pn", "-T4", "-p-"],
        "syn",
        syn,
    ));
    let mut decoy = Attack::nmap(
        "nmap -sS -T4 -D 3 decoys,ME",
        &["-sS", "-Pn", "-T4", "-p", "1-200"],
        "syn",
        syn,
    );
    decoy.decoys = 3;
    v.push(decoy);
    for (name, args) in [
        (
            "nmap -sS -T4 -f",
            &["-sS", "-Pn", "-T4", "-f", "-p", "1-200"][..],
        ),
        (
            "nmap -sS -T4 --mtu 8",
            &["-sS", "-Pn", "-T4", "--mtu", "8", "-p", "1-200"][..],
        ),
    ] {
        let mut tiny = Attack::nmap(name, args, "syn", ProbeMatch::FirstFragmentOrSyn);
        tiny.dropped_at_nic = true;
        v.push(tiny);
    }
    v.push(Attack::nmap(
        "nmap -sS -T4 --mtu 16",
        &["-sS", "-Pn", "-T4", "--mtu", "16", "-p", "1-200"],
        "syn",
        ProbeMatch::FirstFragmentOrSyn,
    ));
    v.push(Attack::nmap(
        "nmap -sS -T4 --source-port 53",
        &["-sS", "-Pn", "-T4", "--source-port", "53", "-p", "1-200"],
        "syn",
        syn,
    ));
    let mut slow = Attack::nmap(
        "nmap -sS --scan-delay 2s (slow)",
        &["-sS", "-Pn", "--scan-delay", "2s", "-p", "1-10"],
        "syn",
        syn,
    );
    slow.slow = true;
    v.push(slow);
    let mut v6 = Attack::nmap(
        "nmap -6 -sS -T4 (IPv6)",
        &["-sS", "-Pn", "-T4", "-p", "1-200"],
        "syn",
        syn,
    );
    v6.family = Family::V6;
    v.push(v6);
    v.push(masscan("1-1000", 100_000));
    v.push(Attack::v4(
        "zmap -p 80 --rate 100000 (sweep)",
        Tool::Zmap {
            port: 80,
            rate: 100_000,
        },
        "sweep",
        syn,
    ));
    v.push(hping(
        "hping3 --flood -S -F (invalid flags)",
        &["--flood", "-S", "-F", "-p", "++1"],
        "invalid_flags",
        ProbeMatch::Tcp(SYN | FIN),
    ));
    v.push(hping(
        "hping3 --flood -S -p ++20000",
        &["--flood", "-S", "-p", "++20000"],
        "syn",
        syn,
    ));
    v
}
