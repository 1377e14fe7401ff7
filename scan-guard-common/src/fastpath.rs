//! The kernel's per-CPU fast-path record (`FAST` map): a clock read once per
//! tick, the budget of new per-source states, and a small cache of blocked
//! sources so a flood from one costs no helper call per packet.

/// Slots of the per-CPU verdict cache (a power of two).
pub const VERDICT_SLOTS: usize = 256;

/// A cached slot's hits are added to its block entry every this many hits
/// (the entry's counter stays close, the map is touched once per batch, and
/// the entry is checked again then: gone or expired, the slot is dropped).
pub const HIT_BATCH: u32 = 64;

/// Length of a new-source budget window: 2^22 ns (about 4.2 ms, one tick at
/// HZ=250), so the coarse clock moves the window on most ticks.
pub const BUDGET_WINDOW_SHIFT: u32 = 22;

/// One cached "blocked" verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictSlot {
    /// The source, as the two words of its 16-byte form.
    pub src: [u64; 2],
    /// When the covering block lapses (coarse monotonic ns; `u64::MAX`: never).
    /// 0: the slot is empty.
    pub expires_ns: u64,
    /// `BLOCK_GENERATION` when the slot was filled: any other value means the
    /// controller lifted a block or allowed a source since, and the slot is void.
    pub generation: u32,
    /// Hits not yet added to the block entry.
    pub pending_hits: u32,
}

/// The whole per-CPU record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FastPath {
    /// `bpf_jiffies64` when `clock_ns` was read: the coarse clock only moves
    /// on a tick, so one read per tick serves every packet of it.
    pub clock_jiffies: u64,
    pub clock_ns: u64,
    /// Budget window (`clock_ns >> BUDGET_WINDOW_SHIFT`) `budget_used` counts in.
    pub budget_window: u64,
    /// New per-source states allocated on this CPU in `budget_window`.
    pub budget_used: u32,
    pub _pad: u32,
    pub slots: [VerdictSlot; VERDICT_SLOTS],
}

/// The slot of a source (both words mixed: IPv4 sources differ only in the
/// second).
#[inline(always)]
pub fn slot_index(src: &[u64; 2]) -> usize {
    let h = (src[0] ^ src[1]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as usize & (VERDICT_SLOTS - 1)
}

/// New states one CPU may allocate per budget window for a per-second cap.
pub fn budget_per_window(per_cpu_per_sec: u32) -> u32 {
    if per_cpu_per_sec == 0 {
        return 0;
    }
    let window_ns = 1u64 << BUDGET_WINDOW_SHIFT;
    let n = (u64::from(per_cpu_per_sec) * window_ns).div_ceil(1_000_000_000);
    n.clamp(1, u64::from(u32::MAX)) as u32
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FastPath {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_fits_a_per_cpu_value() {
        // The kernel refuses per-CPU values over 32 KiB.
        assert!(core::mem::size_of::<FastPath>() <= 32 * 1024);
        assert_eq!(core::mem::size_of::<VerdictSlot>(), 32);
    }

    #[test]
    fn ipv4_sources_spread_over_the_slots() {
        let mut seen = [false; VERDICT_SLOTS];
        for i in 0u32..4096 {
            let mut a = crate::addr::from_v4((0x0a00_0000 + i).to_be_bytes());
            let mut w = [0u64; 2];
            w[0] = u64::from_ne_bytes(a[..8].try_into().unwrap());
            a.rotate_left(8);
            w[1] = u64::from_ne_bytes(a[..8].try_into().unwrap());
            seen[slot_index(&w)] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > VERDICT_SLOTS * 9 / 10);
    }

    #[test]
    fn budget_per_window_rounds_up_and_zero_means_none() {
        assert_eq!(budget_per_window(0), 0);
        assert_eq!(budget_per_window(1), 1);
        // 20,000/s over 4.19 ms: 84.
        assert_eq!(budget_per_window(20_000), 84);
    }
}
