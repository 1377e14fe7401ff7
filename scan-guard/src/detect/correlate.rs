//! Hints of distributed or decoy scans: several sources with one port pattern.

use std::collections::{HashSet, VecDeque};

use scan_guard_common::addr::Addr;

/// A hint that several sources scan with one pattern (decoys or a distributed scan).
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedHint {
    pub sources: Vec<Addr>,
    pub ports: Vec<u16>,
    /// The correlator's settings the hint was found with (for the evidence).
    pub min_sources: usize,
    pub window_ns: u64,
}

/// Groups recent detections by their sampled port pattern.
pub struct Correlator {
    window_ns: u64,
    min_sources: usize,
    recent: VecDeque<(u64, Vec<u16>, Addr)>,
    reported: HashSet<Vec<u16>>,
}

impl Correlator {
    pub fn new(window_ns: u64, min_sources: usize) -> Self {
        Self {
            window_ns,
            min_sources: min_sources.max(2),
            recent: VecDeque::new(),
            reported: HashSet::new(),
        }
    }

    /// Records a detection; returns a hint once `min_sources` distinct sources have
    /// shown the same port pattern within the window (once per pattern per window).
    pub fn observe(&mut self, ts_ns: u64, src: Addr, ports: &[u16]) -> Option<DistributedHint> {
        while self
            .recent
            .front()
            .is_some_and(|(t, _, _)| ts_ns.saturating_sub(*t) > self.window_ns)
        {
            if let Some((_, p, _)) = self.recent.pop_front() {
                if !self.recent.iter().any(|(_, q, _)| *q == p) {
                    self.reported.remove(&p);
                }
            }
        }
        if ports.len() < 3 {
            return None;
        }
        let mut pattern = ports.to_vec();
        pattern.sort_unstable();
        self.recent.push_back((ts_ns, pattern.clone(), src));
        let mut sources: Vec<Addr> = self
            .recent
            .iter()
            .filter(|(_, p, _)| *p == pattern)
            .map(|(_, _, s)| *s)
            .collect();
        sources.sort_unstable();
        sources.dedup();
        if sources.len() < self.min_sources || !self.reported.insert(pattern.clone()) {
            return None;
        }
        Some(DistributedHint {
            sources,
            ports: pattern,
            min_sources: self.min_sources,
            window_ns: self.window_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use scan_guard_common::addr::from_v4;

    use super::*;

    #[test]
    fn same_pattern_from_many_sources_is_a_hint() {
        let mut c = Correlator::new(60_000_000_000, 3);
        let ports = [21, 22, 23, 25, 80];
        assert!(c.observe(0, from_v4([1, 1, 1, 1]), &ports).is_none());
        assert!(c.observe(1, from_v4([1, 1, 1, 2]), &ports).is_none());
        let h = c.observe(2, from_v4([1, 1, 1, 3]), &ports).expect("hint");
        assert_eq!(h.sources.len(), 3);
        assert!(
            c.observe(3, from_v4([1, 1, 1, 4]), &ports).is_none(),
            "once per pattern"
        );
        assert!(c.observe(4, from_v4([1, 1, 1, 5]), &[1, 2, 3]).is_none());
    }
}
