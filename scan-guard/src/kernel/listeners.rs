//! The host's listening sockets, read from procfs, become the `LISTENING` bitmap:
//! probes to ports with no listener weigh more. TCP listeners are remembered for a
//! while after they close (and across controller restarts, in the state file), so
//! a service restart or a host reboot does not turn its health checkers into
//! closed-port probers. Also reads the ephemeral port range.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, Result};
use scan_guard_common::ports::{self, LISTENING_WORDS, PROTO_TCP, PROTO_UDP};

/// TCP state code for LISTEN in /proc/net/tcp*.
const TCP_LISTEN: &str = "0A";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listening {
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
}

impl Listening {
    /// Reads the current network namespace's sockets.
    pub fn read() -> Result<Self> {
        Self::read_from(Path::new("/proc/net"))
    }

    pub fn read_from(dir: &Path) -> Result<Self> {
        let mut out = Self::default();
        for (file, is_tcp) in [
            ("tcp", true),
            ("tcp6", true),
            ("udp", false),
            ("udp6", false),
        ] {
            let path = dir.join(file);
            // A kernel without IPv6 has no tcp6/udp6: nothing listens there.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let set = if is_tcp { &mut out.tcp } else { &mut out.udp };
            set.extend(parse_proc_net(&text, is_tcp));
        }
        Ok(out)
    }

    /// Adds the ports the host's NAT rules publish (they have no socket here).
    pub fn with_published(mut self, p: &crate::kernel::published::Published) -> Self {
        self.tcp.extend(&p.tcp);
        self.udp.extend(&p.udp);
        self
    }

    /// The `LISTENING` map contents.
    pub fn bitmap(&self) -> Vec<u64> {
        let mut words = vec![0u64; LISTENING_WORDS as usize];
        for (proto, set) in [(PROTO_TCP, &self.tcp), (PROTO_UDP, &self.udp)] {
            for port in set {
                words[ports::word_index(proto, *port) as usize] |= ports::bit(*port);
            }
        }
        words
    }
}

/// TCP ports seen listening, with when they last were (Unix seconds). UDP is left
/// out on purpose: resolvers bind a fresh random port per query, and remembering
/// those would hide UDP scans of thousands of ports; the program's own socket
/// lookup already covers a UDP service that just came back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerMemory {
    tcp: BTreeMap<u16, u64>,
}

impl ListenerMemory {
    /// Restores saved ports (`(port, last seen)`), dropping those older than `keep_s`.
    pub fn from_saved(saved: impl IntoIterator<Item = (u16, u64)>, now: u64, keep_s: u64) -> Self {
        let mut m = Self {
            tcp: saved.into_iter().collect(),
        };
        m.forget_older_than(now, keep_s);
        m
    }

    /// Notes the ports listening now; forgets those not seen for `keep_s`.
    /// Returns true when the set of remembered ports changed.
    pub fn observe(&mut self, now_listening: &Listening, now: u64, keep_s: u64) -> bool {
        let before: Vec<u16> = self.tcp.keys().copied().collect();
        for port in &now_listening.tcp {
            self.tcp.insert(*port, now);
        }
        self.forget_older_than(now, keep_s);
        !self.tcp.keys().copied().eq(before)
    }

    fn forget_older_than(&mut self, now: u64, keep_s: u64) {
        self.tcp
            .retain(|_, seen| now.saturating_sub(*seen) <= keep_s);
    }

    /// What the kernel is told listens: the sockets of now plus the remembered TCP
    /// ports.
    pub fn effective(&self, now_listening: &Listening) -> Listening {
        let mut l = now_listening.clone();
        l.tcp.extend(self.tcp.keys().copied());
        l
    }

    /// `(port, last seen)` for the state file.
    pub fn saved(&self) -> Vec<(u16, u64)> {
        self.tcp.iter().map(|(p, t)| (*p, *t)).collect()
    }
}

/// Local ports of listening TCP sockets or bound UDP sockets in one procfs table.
pub fn parse_proc_net(text: &str, tcp: bool) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if tcp && state != TCP_LISTEN {
                return None;
            }
            let port_hex = local.rsplit(':').next()?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            (port != 0).then_some(port)
        })
        .collect()
}

/// Lowest port of the local ephemeral range (default 32768 when unreadable).
pub fn ephemeral_port_min() -> Result<u16> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = match std::fs::read_to_string(PATH) {
        Ok(t) => t,
        Err(_) => return Ok(32_768),
    };
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected contents of {PATH}: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0200000A:0016 0100000A:D431 01 00000000:00000000 02:000A7B2C 00000000     0        0 3 4 0000000000000000 20 4 29 10 -1
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0000000000000000 0
";

    #[test]
    fn tcp_listeners_are_remembered_for_a_while_after_they_close() {
        let up = Listening {
            tcp: [80, 443].into(),
            udp: [53, 20_053].into(),
        };
        let down = Listening {
            tcp: [22].into(),
            udp: [53].into(),
        };
        let mut m = ListenerMemory::default();
        assert!(m.observe(&up, 1000, 600));
        assert!(m.observe(&down, 1010, 600), "22 joined");
        let eff = m.effective(&down);
        assert_eq!(
            eff.tcp,
            [22, 80, 443].into(),
            "80 and 443 kept while nginx restarts"
        );
        assert_eq!(eff.udp, [53].into(), "UDP is never remembered");
        // Across a restart, through the state file.
        let back = ListenerMemory::from_saved(m.saved(), 1300, 600);
        assert_eq!(
            back.effective(&Listening::default()).tcp,
            [22, 80, 443].into()
        );
        // Forgotten once the memory has passed.
        assert!(m.observe(&down, 1700, 600));
        assert_eq!(m.effective(&down).tcp, [22].into());
    }

    #[test]
    fn tcp_listeners_only() {
        assert_eq!(parse_proc_net(TCP, true), vec![22, 8080]);
    }

    #[test]
    fn udp_bound_sockets() {
        assert_eq!(parse_proc_net(UDP6, false), vec![53]);
    }

    #[test]
    fn bitmap_sets_exact_bits() {
        let l = Listening {
            tcp: [22, 8080].into(),
            udp: [53].into(),
        };
        let b = l.bitmap();
        assert_eq!(b.iter().map(|w| w.count_ones()).sum::<u32>(), 3);
        assert_ne!(
            b[ports::word_index(PROTO_TCP, 22) as usize] & ports::bit(22),
            0
        );
        assert_ne!(
            b[ports::word_index(PROTO_UDP, 53) as usize] & ports::bit(53),
            0
        );
        assert_eq!(
            b[ports::word_index(PROTO_TCP, 53) as usize] & ports::bit(53),
            0
        );
    }
}
