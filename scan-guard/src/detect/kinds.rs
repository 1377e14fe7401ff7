//! Scan kinds as one byte in block records: the kernel's probe kinds (0..=8) plus
//! the kinds only the controller can tell (connect, mixed, sweep), so `list`
//! shows the same kind as the events.

use scan_guard_common::{flags::ProbeKind, state::KIND_NONE};

pub const CONNECT: u8 = 16;
pub const MIXED: u8 = 17;
pub const SWEEP: u8 = 18;

/// Name of a kind byte (`-` for none or unknown).
pub fn name(code: u8) -> &'static str {
    match code {
        CONNECT => "connect",
        MIXED => "mixed",
        SWEEP => "sweep",
        c => match ProbeKind::from_u8(c) {
            Some(ProbeKind::IcmpEcho) => "sweep",
            Some(ProbeKind::IcmpDiscovery) => "discovery",
            Some(k) => k.name(),
            None => "-",
        },
    }
}

/// Byte of a kind name (`KIND_NONE` when unknown).
pub fn code(name: &str) -> u8 {
    match name {
        "connect" => CONNECT,
        "mixed" => MIXED,
        "sweep" => SWEEP,
        "discovery" => ProbeKind::IcmpDiscovery as u8,
        n => ProbeKind::ALL
            .iter()
            .find(|k| k.name() == n)
            .map_or(KIND_NONE, |k| *k as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            "syn",
            "connect",
            "fin",
            "xmas",
            "null",
            "ack",
            "maimon",
            "udp",
            "sweep",
            "invalid_flags",
            "mixed",
            "fragment",
            "sctp",
            "ip_protocol",
            "discovery",
        ] {
            assert_eq!(name(code(n)), n);
        }
        assert_eq!(name(KIND_NONE), "-");
        assert_eq!(name(ProbeKind::IcmpEcho as u8), "sweep");
    }
}
