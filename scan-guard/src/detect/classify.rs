//! What kind of scan a source runs, from the probe mix the kernel counted.

use scan_guard_common::{
    event::ScanEvent,
    flags::{PROBE_KINDS, ProbeKind},
    state::Trigger,
    vocab::ScanKind,
};

/// What the source is doing, from its probe mix: the dominant kind (at least three
/// quarters of the probes), `connect` for SYNs that come from an OS stack, `sweep`
/// for address sweeps, or `mixed`.
pub fn classify(probes: &[u32; PROBE_KINDS], trigger: Option<Trigger>, os_syns: u16) -> ScanKind {
    match trigger {
        Some(Trigger::Sweep) => return ScanKind::Sweep,
        Some(Trigger::Discovery) => return ScanKind::Discovery,
        _ => {}
    }
    let total: u64 = probes.iter().map(|p| u64::from(*p)).sum();
    let Some((idx, top)) = probes.iter().enumerate().max_by_key(|(_, p)| **p) else {
        return ScanKind::Mixed;
    };
    if total == 0 || u64::from(*top) * 4 < total * 3 {
        return ScanKind::Mixed;
    }
    match ProbeKind::from_u8(idx as u8) {
        Some(ProbeKind::Syn) if u32::from(os_syns) * 2 >= *top => ScanKind::Connect,
        Some(k) => ScanKind::from_probe(k),
        None => ScanKind::Mixed,
    }
}

/// Kind of a kernel event.
pub fn classify_event(ev: &ScanEvent) -> ScanKind {
    classify(&ev.probes, Trigger::from_u8(ev.trigger), ev.os_syns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_scans_are_told_from_syn_scans() {
        let mut p = [0u32; PROBE_KINDS];
        p[ProbeKind::Syn as usize] = 10;
        assert_eq!(classify(&p, Some(Trigger::Score), 0), ScanKind::Syn);
        assert_eq!(classify(&p, Some(Trigger::Score), 9), ScanKind::Connect);
        assert_eq!(classify(&p, Some(Trigger::Sweep), 0), ScanKind::Sweep);
        p[ProbeKind::Udp as usize] = 10;
        assert_eq!(classify(&p, Some(Trigger::Score), 0), ScanKind::Mixed);
    }
}
