//! Sources whose block the rate cap refused. A flood of threshold crossings
//! (spoofed, or from the attacker's own addresses) can spend the new-block budget
//! before the real scanner crosses; without a second chance the scanner would only
//! ever be reported `suppressed`. Each refused source waits here and is retried at
//! every tick, strongest evidence first: the kernel keeps a quarter of the budget
//! for these retries (see `Config::kernel_config`), so a scanner that keeps
//! probing, or completes handshakes, wins over sources that sent a handful of
//! spoofable SYNs.

use std::collections::HashMap;

use scan_guard_common::{addr::Addr, event::Suppression, vocab::ScanKind};

use crate::{base::cidr::Cidr, export::events::EventRecord};

/// Most sources waiting at once; beyond it the oldest is dropped.
const MAX_PENDING: usize = 10_000;
/// How long a refused source stays eligible (its evidence goes stale after that).
const KEEP_NS: u64 = 10 * 60 * 1_000_000_000;

/// One refused block, as it would have been made.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The source as it is scored: one address, or a prefix.
    pub src: Cidr,
    pub rec: EventRecord,
    pub kind: Option<ScanKind>,
    pub reason: String,
    pub since_ns: u64,
}

impl Pending {
    /// A block refused now.
    pub fn new(src: Cidr, rec: &EventRecord, kind: Option<ScanKind>, reason: &str) -> Self {
        Self {
            src,
            rec: rec.clone(),
            kind,
            reason: reason.to_string(),
            since_ns: crate::base::clock::monotonic_ns(),
        }
    }
}

/// True when the enforcer refused a block for the rate cap.
pub fn rate_capped(verdicts: &[crate::enforce::enforcer::Verdict]) -> bool {
    verdicts.iter().any(
        |v| matches!(v, crate::enforce::enforcer::Verdict::Suppressed { why } if *why == Suppression::RateLimited),
    )
}

#[derive(Debug, Default)]
pub struct Retries {
    pending: HashMap<Addr, Pending>,
}

impl Retries {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues a refused block (a source already waiting keeps its first record).
    pub fn push(&mut self, p: Pending) {
        let src = p.src.addr;
        if !self.pending.contains_key(&src) && self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.since_ns)
                .map(|(a, _)| *a)
            {
                self.pending.remove(&oldest);
            }
        }
        self.pending.entry(src).or_insert(p);
    }

    /// Drops stale entries and returns the waiting sources, strongest first by
    /// `strength` (ties: the longest waiting first).
    pub fn by_strength(&mut self, now_ns: u64, strength: impl Fn(&Addr) -> u64) -> Vec<Addr> {
        self.pending
            .retain(|_, p| now_ns.saturating_sub(p.since_ns) <= KEEP_NS);
        let mut v: Vec<(u64, u64, Addr)> = self
            .pending
            .iter()
            .map(|(a, p)| (strength(a), p.since_ns, *a))
            .collect();
        v.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        v.into_iter().map(|(_, _, a)| a).collect()
    }

    pub fn get(&self, src: &Addr) -> Option<&Pending> {
        self.pending.get(src)
    }

    pub fn remove(&mut self, src: &Addr) {
        self.pending.remove(src);
    }
}

#[cfg(test)]
mod tests {
    use scan_guard_common::{
        addr::from_v4,
        config::KernelConfig,
        event::ScanEvent,
        state::{SourceState, Trigger},
    };

    use super::*;

    fn pending(a: Addr, since_ns: u64) -> Pending {
        let ev =
            ScanEvent::from_state(0, &a, &a, &SourceState::new(0), Trigger::Score, 0, false, 2);
        Pending {
            src: Cidr::from_key(a, 128),
            rec: EventRecord::from_kernel(&ev, &KernelConfig::default()),
            kind: Some(ScanKind::Syn),
            reason: String::new(),
            since_ns,
        }
    }

    #[test]
    fn strongest_first_then_oldest_and_stale_ones_dropped() {
        let mut r = Retries::default();
        let (a, b, c) = (
            from_v4([1, 0, 0, 1]),
            from_v4([1, 0, 0, 2]),
            from_v4([1, 0, 0, 3]),
        );
        r.push(pending(a, 10));
        r.push(pending(b, 5));
        r.push(pending(c, 0));
        let strength = |x: &Addr| if *x == c { 300 } else { 7 };
        assert_eq!(r.by_strength(100, strength), vec![c, b, a]);
        assert_eq!(r.by_strength(KEEP_NS + 6, strength), vec![a]);
    }

    #[test]
    fn bounded() {
        let mut r = Retries::default();
        for i in 0..(MAX_PENDING as u32 + 50) {
            r.push(pending(from_v4(i.to_be_bytes()), u64::from(i)));
        }
        assert_eq!(r.len(), MAX_PENDING);
        assert!(
            r.get(&from_v4(0u32.to_be_bytes())).is_none(),
            "the oldest went first"
        );
    }
}
