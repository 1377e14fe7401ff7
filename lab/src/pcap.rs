//! Reading the lab's captures back: every IPv4/IPv6 packet of a classic pcap file
//! (Ethernet link type, microsecond or nanosecond timestamps) with its capture time,
//! its IP bytes (to match one packet seen at both ends of the wire) and the few
//! header facts the probe counters need; or just the TCP segments ([`TcpSeen`]).
//! The one parser of captures in the lab.

use std::net::IpAddr;

/// The TCP flag bits, from the classifier the XDP program shares.
pub use scan_guard_common::flags::{ACK, FIN, PSH, RST, SYN, URG};

/// Transport protocol numbers.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// One captured IP packet.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Capture time, seconds since the Unix epoch.
    pub ts: f64,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags, when the TCP header is in this packet up to its flags byte.
    pub tcp_flags: Option<u8>,
    /// Source and destination port, when the transport header's first 4 bytes
    /// are here.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// A fragment (IPv4 MF or offset, or an IPv6 fragment header).
    pub fragment: bool,
    /// A fragment other than the first: no transport header at all.
    pub later_fragment: bool,
    /// The IP packet as captured (snap length permitting): identical at both
    /// ends of the lab's wire (no router in between).
    pub ip: Vec<u8>,
}

impl Packet {
    /// True for TCP with exactly `flags` among FIN/SYN/RST/PSH/ACK/URG.
    pub fn tcp_is(&self, flags: u8) -> bool {
        self.tcp_flags.is_some_and(|f| f & 0x3f == flags)
    }
}

/// One TCP segment: its addresses, ports and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSeen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
}

impl TcpSeen {
    /// The segment `p` carries, if it is TCP with its header up to the flags.
    fn of(p: &Packet) -> Option<Self> {
        (p.proto == TCP).then_some(())?;
        Some(Self {
            src: p.src,
            dst: p.dst,
            sport: p.sport?,
            dport: p.dport?,
            flags: p.tcp_flags?,
        })
    }
}

/// The TCP segments in `b`, a capture tcpdump was stopped cleanly on: a record
/// cut short means a broken file here.
pub fn tcp_segments(b: &[u8]) -> Result<Vec<TcpSeen>, String> {
    let frames = frames(b)?;
    if let Some(off) = frames.cut_at {
        return Err(format!("record at {off} runs past the end"));
    }
    Ok(frames
        .frames
        .into_iter()
        .filter_map(|(ts, f)| parse_frame(ts, f))
        .filter_map(|p| TcpSeen::of(&p))
        .collect())
}

/// Every IP packet in `b` (other frames, e.g. ARP, are skipped).
pub fn read(b: &[u8]) -> Result<Vec<Packet>, String> {
    // A last record cut short (tcpdump stopped mid-record) is left out: what came
    // before is complete.
    Ok(frames(b)?
        .frames
        .into_iter()
        .filter_map(|(ts, f)| parse_frame(ts, f))
        .collect())
}

/// The records of a classic pcap file with Ethernet link type.
pub struct Frames<'a> {
    /// Each complete frame with its capture time (seconds since the Unix epoch),
    /// in file order.
    pub frames: Vec<(f64, &'a [u8])>,
    /// Offset of a last record that runs past the end of the file, if any.
    pub cut_at: Option<usize>,
}

/// Splits a classic pcap file (microsecond or nanosecond timestamps, either byte
/// order, Ethernet link type) into its frames; `Err` for anything else.
pub fn frames(b: &[u8]) -> Result<Frames<'_>, String> {
    if b.len() < 24 {
        return Err(format!("{} bytes: no pcap header", b.len()));
    }
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => return Err(format!("unknown magic {m:#010x} (pcapng?)")),
    };
    let u32_at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(20) & 0x0fff_ffff;
    if link != 1 {
        return Err(format!("link type {link}, want 1 (Ethernet)"));
    }
    let frac = if nanos { 1e-9 } else { 1e-6 };
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let ts = f64::from(u32_at(off)) + f64::from(u32_at(off + 4)) * frac;
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        let end = start + incl;
        if end > b.len() {
            return Ok(Frames {
                frames,
                cut_at: Some(off),
            });
        }
        frames.push((ts, &b[start..end]));
        off = end;
    }
    Ok(Frames {
        frames,
        cut_at: None,
    })
}

/// The ethertype of an Ethernet frame (past any 802.1Q/802.1ad tags) and the
/// bytes after it (the IP packet for IPv4 and IPv6).
fn ethernet_payload(f: &[u8]) -> Option<(u16, &[u8])> {
    let be16 = |o: usize| f.get(o..o + 2).map(|s| u16::from_be_bytes([s[0], s[1]]));
    let mut off = 12;
    let mut ethertype = be16(off)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = be16(off)?;
    }
    Some((ethertype, f.get(off + 2..)?))
}

fn parse_frame(ts: f64, f: &[u8]) -> Option<Packet> {
    let (ethertype, ip) = ethernet_payload(f)?;
    match ethertype {
        0x0800 => parse_v4(ts, ip),
        0x86dd => parse_v6(ts, ip),
        _ => None,
    }
}

fn parse_v4(ts: f64, ip: &[u8]) -> Option<Packet> {
    let h = ip.get(..20)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let s: [u8; 4] = h[12..16].try_into().ok()?;
    let d: [u8; 4] = h[16..20].try_into().ok()?;
    // The IP total length bounds the transport header (frames may be padded).
    let total = usize::from(u16::from_be_bytes([h[2], h[3]])).min(ip.len());
    let l4 = ip.get(ihl..total).unwrap_or(&[]);
    Some(packet(
        ts,
        IpAddr::from(s),
        IpAddr::from(d),
        h[9],
        offset != 0 || more,
        offset != 0,
        l4,
        ip,
    ))
}

fn parse_v6(ts: f64, ip: &[u8]) -> Option<Packet> {
    let h = ip.get(..40)?;
    let s: [u8; 16] = h[8..24].try_into().ok()?;
    let d: [u8; 16] = h[24..40].try_into().ok()?;
    let total = (40 + usize::from(u16::from_be_bytes([h[4], h[5]]))).min(ip.len());
    let mut next = h[6];
    let mut off = 40;
    let (mut fragment, mut later) = (false, false);
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let e = ip.get(off..off + 2)?;
                next = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            44 => {
                let e = ip.get(off..off + 8)?;
                next = e[0];
                fragment = true;
                later = u16::from_be_bytes([e[2], e[3]]) >> 3 != 0;
                off += 8;
            }
            _ => break,
        }
    }
    let l4 = ip.get(off..total).unwrap_or(&[]);
    Some(packet(
        ts,
        IpAddr::from(s),
        IpAddr::from(d),
        next,
        fragment,
        later,
        l4,
        ip,
    ))
}

#[allow(clippy::too_many_arguments)]
fn packet(
    ts: f64,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    fragment: bool,
    later_fragment: bool,
    l4: &[u8],
    ip: &[u8],
) -> Packet {
    let ports = (!later_fragment && matches!(proto, TCP | UDP) && l4.len() >= 4).then(|| {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    });
    let tcp_flags = (!later_fragment && proto == TCP && l4.len() >= 14).then(|| l4[13]);
    Packet {
        ts,
        src,
        dst,
        proto,
        tcp_flags,
        sport: ports.map(|(s, _)| s),
        dport: ports.map(|(_, d)| d),
        fragment,
        later_fragment,
        ip: ip.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_of(frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for (s, us, f) in frames {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&us.to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    fn v4_tcp(flags: u8, frag: u16, l4_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4_len) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let mut tcp = [0u8; 20];
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[13] = flags;
        f.extend_from_slice(&tcp[..l4_len]);
        f
    }

    #[test]
    fn reads_time_flags_ports_and_fragments() {
        let b = pcap_of(&[
            (100, 250_000, v4_tcp(SYN, 0, 20)),
            (100, 500_000, v4_tcp(0, 0x2000, 8)),
            (101, 0, v4_tcp(0, 1, 8)),
        ]);
        let p = read(&b).expect("pcap");
        assert_eq!(p.len(), 3);
        assert!((p[0].ts - 100.25).abs() < 1e-9);
        assert!(p[0].tcp_is(SYN));
        assert_eq!(p[0].dport, Some(80));
        assert!(!p[0].fragment);
        // A first fragment of 8 bytes: ports, no flags.
        assert!(p[1].fragment && !p[1].later_fragment);
        assert_eq!((p[1].dport, p[1].tcp_flags), (Some(80), None));
        assert!(p[2].later_fragment && p[2].dport.is_none());
    }

    #[test]
    fn tcp_segments_keep_whole_headers_only_and_refuse_a_cut_file() {
        let b = pcap_of(&[
            (1, 0, v4_tcp(SYN | ACK, 0, 20)),
            (1, 1, v4_tcp(0, 0x2000, 8)),
            (1, 2, v4_tcp(0, 1, 8)),
        ]);
        let segs = tcp_segments(&b).expect("pcap");
        assert_eq!(segs.len(), 1);
        assert_eq!(
            (segs[0].sport, segs[0].dport, segs[0].flags),
            (0, 80, SYN | ACK)
        );
        assert_eq!(segs[0].src, "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert!(tcp_segments(&b[..b.len() - 1]).is_err());
    }
}
