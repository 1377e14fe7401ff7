//! TCP flag classes: which flag combinations are invalid (no conforming stack sends
//! them, scanners do) and what kind of probe a packet is.

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The six classic flags; ECE and CWR (ECN) never make a packet invalid.
const CLASSIC: u8 = FIN | SYN | RST | PSH | ACK | URG;

/// Invalid flag combinations, in the order they are tested (first match wins).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidClass {
    /// No classic flag at all (nmap -sN).
    Null = 0,
    /// SYN and FIN together.
    SynFin = 1,
    /// SYN and RST together.
    SynRst = 2,
    /// FIN and RST together.
    FinRst = 3,
    /// FIN+PSH+URG without ACK (nmap -sX).
    Xmas = 4,
    /// FIN, PSH or URG without ACK (and without SYN), e.g. nmap -sF.
    NoAck = 5,
}

/// Number of invalid classes (size of per-class tables).
pub const INVALID_CLASSES: usize = 6;

impl InvalidClass {
    pub const ALL: [InvalidClass; INVALID_CLASSES] = [
        Self::Null,
        Self::SynFin,
        Self::SynRst,
        Self::FinRst,
        Self::Xmas,
        Self::NoAck,
    ];

    /// Stable lower-case name used in config files, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::SynFin => "syn_fin",
            Self::SynRst => "syn_rst",
            Self::FinRst => "fin_rst",
            Self::Xmas => "xmas",
            Self::NoAck => "no_ack",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Null),
            1 => Some(Self::SynFin),
            2 => Some(Self::SynRst),
            3 => Some(Self::FinRst),
            4 => Some(Self::Xmas),
            5 => Some(Self::NoAck),
            _ => None,
        }
    }
}

/// Fast classifier used on the packet path: a few mask tests, no table.
#[inline(always)]
pub const fn classify_invalid(flags: u8) -> Option<InvalidClass> {
    let f = flags & CLASSIC;
    if f == 0 {
        return Some(InvalidClass::Null);
    }
    if f & (SYN | FIN) == SYN | FIN {
        return Some(InvalidClass::SynFin);
    }
    if f & (SYN | RST) == SYN | RST {
        return Some(InvalidClass::SynRst);
    }
    if f & (FIN | RST) == FIN | RST {
        return Some(InvalidClass::FinRst);
    }
    if f & (SYN | ACK) == 0 && f & (FIN | PSH | URG) != 0 {
        if f & (FIN | PSH | URG) == FIN | PSH | URG {
            return Some(InvalidClass::Xmas);
        }
        return Some(InvalidClass::NoAck);
    }
    None
}

/// Reference classifier: the rules written out one by one, as the documentation
/// states them. Tests hold the fast classifier and the kernel's verdicts to it.
pub fn reference_classify(flags: u8) -> Option<InvalidClass> {
    let has = |bit: u8| flags & bit != 0;
    let (fin, syn, rst, psh, ack, urg) =
        (has(FIN), has(SYN), has(RST), has(PSH), has(ACK), has(URG));
    if !(fin || syn || rst || psh || ack || urg) {
        Some(InvalidClass::Null)
    } else if syn && fin {
        Some(InvalidClass::SynFin)
    } else if syn && rst {
        Some(InvalidClass::SynRst)
    } else if fin && rst {
        Some(InvalidClass::FinRst)
    } else if fin && psh && urg && !ack && !syn {
        Some(InvalidClass::Xmas)
    } else if (fin || psh || urg) && !ack && !syn {
        Some(InvalidClass::NoAck)
    } else {
        None
    }
}

/// What a packet contributes as scan evidence. Indexes `SourceState::probes`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Syn = 0,
    Fin = 1,
    Xmas = 2,
    Null = 3,
    Ack = 4,
    /// FIN+ACK to a port with no listener (Maimon scan).
    Maimon = 5,
    Udp = 6,
    IcmpEcho = 7,
    /// Any other invalid flag combination (SYN+FIN, SYN+RST, ...).
    OtherInvalid = 8,
    /// A first fragment too short to hold the TCP flags (nmap -f, --mtu 8): no
    /// conforming stack sends one (RFC 1858).
    Fragment = 9,
    /// An SCTP INIT or COOKIE ECHO (nmap -sY, -sZ); the "port" is the SCTP port.
    Sctp = 10,
    /// A packet of an IP protocol the program does not parse (nmap -sO); the
    /// "port" is the protocol number.
    Protocol = 11,
    /// An ICMP timestamp or address-mask request (nmap -PP, -PM): host discovery,
    /// reported, never blocked on its own.
    IcmpDiscovery = 12,
}

pub const PROBE_KINDS: usize = 13;

impl ProbeKind {
    pub const ALL: [ProbeKind; PROBE_KINDS] = [
        Self::Syn,
        Self::Fin,
        Self::Xmas,
        Self::Null,
        Self::Ack,
        Self::Maimon,
        Self::Udp,
        Self::IcmpEcho,
        Self::OtherInvalid,
        Self::Fragment,
        Self::Sctp,
        Self::Protocol,
        Self::IcmpDiscovery,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Fin => "fin",
            Self::Xmas => "xmas",
            Self::Null => "null",
            Self::Ack => "ack",
            Self::Maimon => "maimon",
            Self::Udp => "udp",
            Self::IcmpEcho => "icmp_echo",
            Self::OtherInvalid => "invalid_flags",
            Self::Fragment => "fragment",
            Self::Sctp => "sctp",
            Self::Protocol => "ip_protocol",
            Self::IcmpDiscovery => "icmp_discovery",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < PROBE_KINDS {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

/// How a TCP segment counts, before the listener/ephemeral-port check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpRole {
    /// Invalid flags: always evidence, whatever the port.
    Invalid(InvalidClass, ProbeKind),
    /// A connection attempt: always evidence (weighted by the port).
    Syn,
    /// Bare ACK or FIN+ACK: evidence only towards a port with no listener below the
    /// ephemeral range, since anything else is an established flow or a reply.
    Stray(ProbeKind),
    /// Replies (SYN+ACK, RST, ...) and established traffic: never evidence.
    Ignore,
}

/// Classifies a segment by its flag byte.
#[inline(always)]
pub const fn tcp_role(flags: u8) -> TcpRole {
    if let Some(class) = classify_invalid(flags) {
        let kind = match class {
            InvalidClass::Null => ProbeKind::Null,
            InvalidClass::Xmas => ProbeKind::Xmas,
            InvalidClass::NoAck if flags & FIN != 0 => ProbeKind::Fin,
            _ => ProbeKind::OtherInvalid,
        };
        return TcpRole::Invalid(class, kind);
    }
    let f = flags & CLASSIC;
    if f & (SYN | ACK) == SYN {
        return TcpRole::Syn;
    }
    if f & (SYN | RST) == 0 && f & ACK != 0 {
        if f & FIN != 0 {
            return TcpRole::Stray(ProbeKind::Maimon);
        }
        return TcpRole::Stray(ProbeKind::Ack);
    }
    TcpRole::Ignore
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_classifier_equals_reference_for_every_flag_byte() {
        for b in 0..=255u8 {
            assert_eq!(classify_invalid(b), reference_classify(b), "flags {b:#04x}");
        }
    }

    #[test]
    fn nmap_probe_flags() {
        assert_eq!(classify_invalid(0), Some(InvalidClass::Null));
        assert_eq!(classify_invalid(FIN | PSH | URG), Some(InvalidClass::Xmas));
        assert_eq!(classify_invalid(FIN), Some(InvalidClass::NoAck));
        assert_eq!(classify_invalid(SYN | FIN), Some(InvalidClass::SynFin));
        assert_eq!(classify_invalid(SYN | RST), Some(InvalidClass::SynRst));
        assert_eq!(
            classify_invalid(FIN | RST | ACK),
            Some(InvalidClass::FinRst)
        );
        assert_eq!(classify_invalid(PSH), Some(InvalidClass::NoAck));
        assert_eq!(classify_invalid(URG), Some(InvalidClass::NoAck));
        assert_eq!(classify_invalid(RST | PSH), Some(InvalidClass::NoAck));
    }

    #[test]
    fn normal_traffic_is_valid() {
        for f in [
            SYN,
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            ACK | URG,
            FIN | PSH | ACK,
        ] {
            assert_eq!(classify_invalid(f), None, "flags {f:#04x}");
        }
        // ECN bits never matter.
        assert_eq!(classify_invalid(SYN | ECE | CWR), None);
        assert_eq!(classify_invalid(ECE | CWR), Some(InvalidClass::Null));
    }

    #[test]
    fn roles() {
        assert_eq!(tcp_role(SYN), TcpRole::Syn);
        assert_eq!(tcp_role(SYN | ECE | CWR), TcpRole::Syn);
        assert_eq!(tcp_role(SYN | ACK), TcpRole::Ignore);
        assert_eq!(tcp_role(RST), TcpRole::Ignore);
        assert_eq!(tcp_role(RST | ACK), TcpRole::Ignore);
        assert_eq!(tcp_role(ACK), TcpRole::Stray(ProbeKind::Ack));
        assert_eq!(tcp_role(ACK | PSH), TcpRole::Stray(ProbeKind::Ack));
        assert_eq!(tcp_role(FIN | ACK), TcpRole::Stray(ProbeKind::Maimon));
        assert_eq!(
            tcp_role(0),
            TcpRole::Invalid(InvalidClass::Null, ProbeKind::Null)
        );
        assert_eq!(
            tcp_role(FIN),
            TcpRole::Invalid(InvalidClass::NoAck, ProbeKind::Fin)
        );
        assert_eq!(
            tcp_role(FIN | PSH | URG),
            TcpRole::Invalid(InvalidClass::Xmas, ProbeKind::Xmas)
        );
        assert_eq!(
            tcp_role(SYN | FIN),
            TcpRole::Invalid(InvalidClass::SynFin, ProbeKind::OtherInvalid)
        );
    }

    #[test]
    fn names_round_trip() {
        for c in InvalidClass::ALL {
            assert_eq!(InvalidClass::from_u8(c as u8), Some(c));
        }
        for k in ProbeKind::ALL {
            assert_eq!(ProbeKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(ProbeKind::from_u8(PROBE_KINDS as u8), None);
        assert_eq!(InvalidClass::from_u8(INVALID_CLASSES as u8), None);
    }
}
