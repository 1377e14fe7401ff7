//! The words events, block records and metrics share: what kind of scan a
//! source runs and what an event says happened. Typed everywhere inside; turned
//! into the documented strings (docs/events.md) only where they leave the
//! program. Who decided a block is [`crate::state::BlockOrigin`], why a
//! detection did not block is [`crate::event::Suppression`].

use crate::flags::ProbeKind;

/// What a source is doing. The first codes are the kernel's probe kinds
/// ([`ProbeKind`], which block records store as they are); from 16 on, kinds
/// only the controller can tell. Stored as one byte in block records
/// (`BlockEntry::kind`, `BlockMeta::kind`), `KIND_NONE` for none.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScanKind {
    Syn = 0,
    Fin = 1,
    Xmas = 2,
    Null = 3,
    Ack = 4,
    Maimon = 5,
    Udp = 6,
    /// Any other invalid flag combination (SYN+FIN, SYN+RST, ...).
    InvalidFlags = 8,
    Fragment = 9,
    Sctp = 10,
    IpProtocol = 11,
    /// ICMP timestamp or address-mask requests: reported, never blocked alone.
    Discovery = 12,
    /// SYNs from an operating system's stack (full connects).
    Connect = 16,
    /// No kind makes three quarters of the probes.
    Mixed = 17,
    /// An address sweep (ICMP echo or one port over many addresses).
    Sweep = 18,
    /// Several sources with one port pattern (hints only).
    Distributed = 19,
}

impl ScanKind {
    pub const ALL: [ScanKind; 16] = [
        Self::Syn,
        Self::Fin,
        Self::Xmas,
        Self::Null,
        Self::Ack,
        Self::Maimon,
        Self::Udp,
        Self::InvalidFlags,
        Self::Fragment,
        Self::Sctp,
        Self::IpProtocol,
        Self::Discovery,
        Self::Connect,
        Self::Mixed,
        Self::Sweep,
        Self::Distributed,
    ];

    /// The byte block records store.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind of a stored byte; `None` for `KIND_NONE` and unknown bytes.
    /// Byte 7 (the kernel's ICMP echo) is a sweep.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            7 => Some(Self::Sweep),
            c if c < 16 => match ProbeKind::from_u8(c) {
                Some(k) => Some(Self::from_probe(k)),
                None => None,
            },
            16 => Some(Self::Connect),
            17 => Some(Self::Mixed),
            18 => Some(Self::Sweep),
            19 => Some(Self::Distributed),
            _ => None,
        }
    }

    /// The scan a kernel probe kind stands for.
    pub const fn from_probe(k: ProbeKind) -> Self {
        match k {
            ProbeKind::Syn => Self::Syn,
            ProbeKind::Fin => Self::Fin,
            ProbeKind::Xmas => Self::Xmas,
            ProbeKind::Null => Self::Null,
            ProbeKind::Ack => Self::Ack,
            ProbeKind::Maimon => Self::Maimon,
            ProbeKind::Udp => Self::Udp,
            ProbeKind::IcmpEcho => Self::Sweep,
            ProbeKind::OtherInvalid => Self::InvalidFlags,
            ProbeKind::Fragment => Self::Fragment,
            ProbeKind::Sctp => Self::Sctp,
            ProbeKind::Protocol => Self::IpProtocol,
            ProbeKind::IcmpDiscovery => Self::Discovery,
        }
    }

    /// The documented name (`kind` of docs/events.md).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Fin => "fin",
            Self::Xmas => "xmas",
            Self::Null => "null",
            Self::Ack => "ack",
            Self::Maimon => "maimon",
            Self::Udp => "udp",
            Self::InvalidFlags => "invalid_flags",
            Self::Fragment => "fragment",
            Self::Sctp => "sctp",
            Self::IpProtocol => "ip_protocol",
            Self::Discovery => "discovery",
            Self::Connect => "connect",
            Self::Mixed => "mixed",
            Self::Sweep => "sweep",
            Self::Distributed => "distributed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The name of an optional kind as records show it (`-` for none).
pub const fn kind_name(kind: Option<ScanKind>) -> &'static str {
    match kind {
        Some(k) => k.name(),
        None => "-",
    }
}

/// What an event says happened (`event` of docs/events.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventName {
    ScanDetected,
    Blocked,
    WouldBlock,
    Suppressed,
    Unblocked,
    Expired,
    DistributedScan,
}

impl EventName {
    pub const ALL: [EventName; 7] = [
        Self::ScanDetected,
        Self::Blocked,
        Self::WouldBlock,
        Self::Suppressed,
        Self::Unblocked,
        Self::Expired,
        Self::DistributedScan,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::ScanDetected => "scan_detected",
            Self::Blocked => "blocked",
            Self::WouldBlock => "would_block",
            Self::Suppressed => "suppressed",
            Self::Unblocked => "unblocked",
            Self::Expired => "expired",
            Self::DistributedScan => "distributed_scan",
        }
    }
}

#[cfg(feature = "user")]
mod serialize {
    use serde::{Serialize, Serializer};

    use super::{EventName, ScanKind};
    use crate::{event::Suppression, state::BlockOrigin};

    macro_rules! as_name {
        ($t:ty) => {
            impl Serialize for $t {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_str(self.name())
                }
            }
        };
    }
    as_name!(ScanKind);
    as_name!(EventName);
    as_name!(BlockOrigin);
    as_name!(Suppression);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::KIND_NONE;

    #[test]
    fn names_and_codes_round_trip() {
        for k in ScanKind::ALL {
            assert_eq!(ScanKind::from_name(k.name()), Some(k));
            assert_eq!(ScanKind::from_code(k.code()), Some(k));
        }
        assert_eq!(ScanKind::from_code(KIND_NONE), None);
        assert_eq!(
            ScanKind::from_code(ProbeKind::IcmpEcho as u8),
            Some(ScanKind::Sweep)
        );
        assert_eq!(kind_name(None), "-");
    }

    #[test]
    fn every_probe_kind_is_a_scan_kind_of_the_same_byte_or_a_sweep() {
        for p in ProbeKind::ALL {
            let k = ScanKind::from_probe(p);
            assert!(
                k.code() == p as u8 || k == ScanKind::Sweep,
                "{p:?} -> {k:?}"
            );
        }
    }
}
