//! Builds Ethernet frames byte by byte: VLAN tags, IPv4 (options, fragments),
//! IPv6 (extension headers, fragments), TCP, UDP, ICMP echo. Checksums are left
//! zero: XDP never looks at them.

use std::net::IpAddr;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_DEST_OPTS: u8 = 60;

/// Seven extension headers: one more than the program walks
/// (`limits::MAX_IPV6_EXT_HEADERS`), so its parse fails after the addresses.
pub const UNWALKABLE_IPV6_CHAIN: [u8; 7] = [
    EXT_HOP_BY_HOP,
    EXT_DEST_OPTS,
    EXT_DEST_OPTS,
    EXT_DEST_OPTS,
    EXT_DEST_OPTS,
    EXT_DEST_OPTS,
    EXT_DEST_OPTS,
];

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const TCP_OS_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    IcmpEcho,
    /// Some other protocol number with a small opaque payload.
    Other(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    None,
    /// First fragment (offset 0, more fragments).
    First,
    /// A later fragment (offset > 0): no transport header.
    Later,
}

#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Outer to inner TPIDs (0x8100 / 0x88a8).
    pub vlans: Vec<u16>,
    pub l4: L4,
    /// IPv4 option bytes (padded to a multiple of 4 with NOPs).
    pub ipv4_options: usize,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<u8>,
    pub frag: Frag,
    pub payload: usize,
    /// TCP only: the option set a Linux connect() sends (MSS, SACK permitted,
    /// timestamps, window scale: 20 bytes, data offset 10).
    pub os_options: bool,
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

impl Pkt {
    pub fn tcp(src: &str, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport: 40_000,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: &str, dst: &str, dport: u16) -> Self {
        Self::new(
            src,
            dst,
            L4::Udp {
                sport: 40_000,
                dport,
            },
        )
    }

    pub fn icmp_echo(src: &str, dst: &str) -> Self {
        Self::new(src, dst, L4::IcmpEcho)
    }

    pub fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            src: ip(src),
            dst: ip(dst),
            vlans: Vec::new(),
            l4,
            ipv4_options: 0,
            ipv6_ext: Vec::new(),
            frag: Frag::None,
            payload: 0,
            os_options: false,
        }
    }

    pub fn vlans(mut self, tpids: &[u16]) -> Self {
        self.vlans = tpids.to_vec();
        self
    }

    pub fn ipv4_options(mut self, bytes: usize) -> Self {
        self.ipv4_options = bytes;
        self
    }

    pub fn ipv6_ext(mut self, chain: &[u8]) -> Self {
        self.ipv6_ext = chain.to_vec();
        self
    }

    pub fn frag(mut self, frag: Frag) -> Self {
        self.frag = frag;
        self
    }

    pub fn payload(mut self, bytes: usize) -> Self {
        self.payload = bytes;
        self
    }

    /// A SYN as an OS stack sends it (see `os_options`).
    pub fn os_options(mut self) -> Self {
        self.os_options = true;
        self
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let v6 = self.src.is_ipv6();
        let (proto, mut b) = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..8].copy_from_slice(&1u32.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = flags;
                b[14..16].copy_from_slice(&1024u16.to_be_bytes());
                if self.os_options {
                    b[12] = 10 << 4;
                    b.extend_from_slice(&TCP_OS_OPTIONS);
                }
                (6, b)
            }
            L4::Udp { sport, dport } => {
                let mut b = vec![0u8; 8];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..6].copy_from_slice(&(8u16 + self.payload as u16).to_be_bytes());
                (17, b)
            }
            L4::IcmpEcho => {
                let mut b = vec![0u8; 8];
                b[0] = if v6 { 128 } else { 8 };
                (if v6 { 58 } else { 1 }, b)
            }
            L4::Other(p) => (p, vec![0u8; 8]),
        };
        b.extend(std::iter::repeat_n(0xa5, self.payload));
        (proto, b)
    }

    /// The frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let (proto, l4) = self.l4_bytes();
        let (ethertype, l3) = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (ETH_P_IPV4, self.ipv4(s.octets(), d.octets(), proto, &l4))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                (ETH_P_IPV6, self.ipv6(s.octets(), d.octets(), proto, &l4))
            }
            _ => panic!("mixed address families in {self:?}"),
        };
        let mut f = Vec::with_capacity(l3.len() + 22);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // src MAC
        for (i, tpid) in self.vlans.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&l3);
        f
    }

    fn ipv4(&self, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let opts = self.ipv4_options.div_ceil(4) * 4;
        let ihl = 20 + opts;
        let body: &[u8] = if self.frag == Frag::Later {
            &l4[..8.min(l4.len())]
        } else {
            l4
        };
        let mut h = vec![0u8; ihl];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[2..4].copy_from_slice(&((ihl + body.len()) as u16).to_be_bytes());
        let frag: u16 = match self.frag {
            Frag::None => 0x4000,  // DF
            Frag::First => 0x2000, // MF, offset 0
            Frag::Later => 3,      // offset 3 (24 bytes), no flags
        };
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        for b in &mut h[20..] {
            *b = 1; // NOP options
        }
        h.extend_from_slice(body);
        h
    }

    fn ipv6(&self, src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut chain: Vec<u8> = self.ipv6_ext.clone();
        if self.frag != Frag::None && !chain.contains(&EXT_FRAGMENT) {
            chain.push(EXT_FRAGMENT);
        }
        let mut ext = Vec::new();
        for (i, t) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(proto);
            match *t {
                EXT_FRAGMENT => {
                    let off: u16 = match self.frag {
                        Frag::Later => (3 << 3) | 1,
                        _ => 1,
                    };
                    ext.extend_from_slice(&[next, 0]);
                    ext.extend_from_slice(&off.to_be_bytes());
                    ext.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                }
                EXT_ROUTING => {
                    // Type 0 routing header with no addresses left: 8 bytes.
                    ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
                _ => {
                    // Options header of 16 bytes: PadN filling the rest.
                    ext.extend_from_slice(&[next, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                }
            }
        }
        let first = chain.first().copied().unwrap_or(proto);
        let body: &[u8] = if self.frag == Frag::Later {
            &l4[..8.min(l4.len())]
        } else {
            l4
        };
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((ext.len() + body.len()) as u16).to_be_bytes());
        h[6] = first;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        h.extend_from_slice(&ext);
        h.extend_from_slice(body);
        h
    }
}

/// A frame that is not IP at all (ARP request).
pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0u8; 20]);
    f
}
