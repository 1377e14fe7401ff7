//! The one budget of new blocks per second that the kernel and the controller
//! share. A ring of the start times of the last `RATE_SLOTS` blocks: a new block
//! is allowed when fewer than `cap` blocks started in the second before it, so
//! no window of one second, wherever it falls, holds more than `cap` (a fixed
//! per-second counter lets twice the cap through across a second's edge).

/// Slots of the ring: the largest `blocking.max_new_blocks_per_sec` there is.
pub const RATE_SLOTS: usize = 1024;
const MASK: u64 = RATE_SLOTS as u64 - 1;
const SECOND_NS: u64 = 1_000_000_000;

/// Start times (coarse monotonic ns) of the most recent blocks; block number `i`
/// sits in slot `i % RATE_SLOTS`, `next` is the number the next block gets.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RateRing {
    pub next: u64,
    pub started_ns: [u64; RATE_SLOTS],
}

impl RateRing {
    pub const EMPTY: Self = Self {
        next: 0,
        started_ns: [0; RATE_SLOTS],
    };

    /// The slot whose start time decides whether block number `next` may
    /// start under `cap` (the block `cap` numbers before it); `None` when it
    /// may start whatever the time (`cap` 0: no cap; fewer than `cap` blocks
    /// so far). Caps above the ring's size count as its size.
    #[inline(always)]
    pub fn deciding_slot(next: u64, cap: u32) -> Option<usize> {
        if cap == 0 {
            return None;
        }
        let cap = (cap as u64).min(RATE_SLOTS as u64);
        if next < cap {
            return None;
        }
        Some(Self::slot(next - cap))
    }

    /// True when a block that started at `oldest` is a second or more before
    /// `now`, so that it no longer counts against the cap.
    #[inline(always)]
    pub fn out_of_window(oldest: u64, now: u64) -> bool {
        now.saturating_sub(oldest) >= SECOND_NS
    }

    /// True when block number `next` may start at `now`: fewer than `cap`
    /// blocks started within the second before it.
    #[inline(always)]
    pub fn allows(&self, next: u64, now: u64, cap: u32) -> bool {
        match Self::deciding_slot(next, cap) {
            None => true,
            Some(i) => Self::out_of_window(self.started_ns[i], now),
        }
    }

    /// The slot block number `next` is recorded in.
    #[inline(always)]
    pub fn slot(next: u64) -> usize {
        (next & MASK) as usize
    }
}

/// The window rule driven by one writer, for the unit tests; the kernel and
/// the controller share the ring and claim each number atomically instead
/// (`within_rate` in the XDP program, `KernelMaps::take_rate`).
#[cfg(test)]
impl RateRing {
    fn take(&mut self, now: u64, cap: u32) -> bool {
        if !self.allows(self.next, now, cap) {
            return false;
        }
        self.started_ns[Self::slot(self.next)] = now;
        self.next = self.next.wrapping_add(1);
        true
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RateRing {}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn no_second_holds_more_than_the_cap_across_a_window_edge() {
        let mut r = RateRing::EMPTY;
        // Four at t=0 (the kernel's share), then a burst just before 1 s.
        let t0 = 5_000 * MS;
        for _ in 0..4 {
            assert!(r.take(t0, 4));
        }
        assert!(!r.take(t0 + 10 * MS, 4), "the kernel's share is spent");
        assert!(r.take(t0 + 992 * MS, 5), "the fifth of the full cap");
        assert!(!r.take(t0 + 996 * MS, 5), "a fixed window would reset here");
        assert!(r.take(t0 + 1000 * MS, 5), "the first block is a second old");
    }

    #[test]
    fn a_cap_of_zero_never_refuses_and_a_steady_rate_at_the_cap_passes() {
        let mut r = RateRing::EMPTY;
        for i in 0..5_000u64 {
            assert!(r.take(i, 0));
        }
        let mut r = RateRing::EMPTY;
        for i in 0..3_000u64 {
            assert!(r.take(i * 10 * MS, 100), "block {i}");
        }
    }

    #[test]
    fn caps_above_the_ring_size_count_as_its_size() {
        let mut r = RateRing::EMPTY;
        let taken = (0..5_000)
            .filter(|_| r.take(7 * SECOND_NS, u32::MAX))
            .count();
        assert_eq!(taken, RATE_SLOTS);
    }
}
