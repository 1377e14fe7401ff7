//! The kernel's per-CPU fast-path record (`FAST` map): a clock read once per
//! tick, the budget of new per-source states, and a small cache of blocklist
//! verdicts, so a flood from a blocked source, and the packets of a client
//! near blocked sources, cost no helper call each.
//!
//! Sources are handled here as the two native words of their 16-byte
//! (IPv4-mapped) form, which the kernel reads straight from the frame with
//! word loads.

/// Slots of the per-CPU verdict cache (a power of two).
pub const VERDICT_SLOTS: usize = 256;

/// A cached slot's hits are added to its block entry every this many hits
/// (the entry's counter stays close, the map is touched once per batch, and
/// the entry is checked again then: gone or expired, the slot is dropped).
pub const HIT_BATCH: u32 = 64;

/// Length of a new-source budget window: 2^22 ns (about 4.2 ms, one tick at
/// HZ=250), so the coarse clock moves the window on most ticks.
pub const BUDGET_WINDOW_SHIFT: u32 = 22;

/// `VerdictSlot::verdict`: a block covers the source (and no allowlist entry
/// did when the slot was filled). 0 means nothing is cached.
pub const SLOT_BLOCKED: u32 = 1;
/// `VerdictSlot::verdict`: no block covers the source.
pub const SLOT_CLEAR: u32 = 2;

/// One cached verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictSlot {
    /// The source, as the two words of its 16-byte form.
    pub src: [u64; 2],
    /// For a blocked source: when the covering block lapses (coarse monotonic
    /// ns; `u64::MAX`: never). Unused for a clear one: a new block always
    /// moves the generation.
    pub expires_ns: u64,
    /// `BLOCK_GENERATION` when the slot was read for filling: any other value
    /// means a block was added, lifted or replaced, or the allowlist changed,
    /// since, and the slot is void.
    pub generation: u64,
    /// `SLOT_BLOCKED`, `SLOT_CLEAR`, or 0 (nothing cached).
    pub verdict: u32,
    /// Hits not yet added to the block entry (blocked slots).
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

/// The words of the IPv4-mapped form of an IPv4 address whose four octets,
/// in packet order, load as the native word `octets` (`::ffff:a.b.c.d`:
/// ten zero bytes, two 0xff bytes, the octets).
#[inline(always)]
pub const fn mapped_v4_words(octets: u32) -> [u64; 2] {
    let mark = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    let high = u64::from_ne_bytes([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let word = octets as u64;
    let shifted = if cfg!(target_endian = "little") {
        word << 32
    } else {
        word
    };
    [0, mark | (shifted & high)]
}

/// True when the words hold an IPv4-mapped address (`addr::is_v4`).
#[inline(always)]
pub fn words_are_v4(w: &[u64; 2]) -> bool {
    let low = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let mark = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    w[0] == 0 && w[1] & low == mark
}

/// The blocklist presence slot of a source (`blocklist::presence_slot`),
/// from its words: its first two octets (IPv4) or bytes (IPv6), taken with
/// shifts (no trip through memory on the kernel's hot path).
#[inline(always)]
pub fn presence_slot_of_words(w: &[u64; 2]) -> u32 {
    let v4 = words_are_v4(w);
    let (word, byte, base) = if v4 {
        (w[1], 4, 0)
    } else {
        (w[0], 0, crate::blocklist::V6_BASE)
    };
    // Byte `i` of a word as it lies in memory.
    let at = |i: u32| -> u32 {
        let shift = if cfg!(target_endian = "little") {
            8 * i
        } else {
            8 * (7 - i)
        };
        ((word >> shift) & 0xff) as u32
    };
    base + (at(byte) << 8 | at(byte + 1))
}

/// The 16-byte form of a source's words (two word stores in the kernel,
/// where a byte-wise build would take sixteen loads and stores).
#[inline(always)]
pub fn addr_of_words(w: [u64; 2]) -> crate::addr::Addr {
    // SAFETY: two u64s and sixteen bytes have the same size, and every bit
    // pattern is a valid byte array.
    unsafe { core::mem::transmute::<[u64; 2], crate::addr::Addr>(w) }
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
        assert_eq!(core::mem::size_of::<VerdictSlot>(), 40);
    }

    fn words_of(a: &crate::addr::Addr) -> [u64; 2] {
        [
            u64::from_ne_bytes(a[..8].try_into().unwrap()),
            u64::from_ne_bytes(a[8..].try_into().unwrap()),
        ]
    }

    #[test]
    fn mapped_words_are_the_words_of_the_mapped_form() {
        for octets in [[10, 0, 0, 1], [192, 168, 7, 200], [0, 0, 0, 0], [255; 4]] {
            let addr = crate::addr::from_v4(octets);
            let w = mapped_v4_words(u32::from_ne_bytes(octets));
            assert_eq!(w, words_of(&addr));
            assert!(words_are_v4(&w));
            assert_eq!(addr_of_words(w), addr);
            assert_eq!(
                presence_slot_of_words(&w),
                crate::blocklist::presence_slot(&addr)
            );
        }
    }

    #[test]
    fn ipv6_words_give_the_ipv6_presence_slot() {
        let addrs: [crate::addr::Addr; 3] = [
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
            // Zero-prefixed but not mapped: IPv6.
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 1, 2, 3, 4],
        ];
        for addr in addrs {
            let w = words_of(&addr);
            assert!(!words_are_v4(&w));
            assert_eq!(addr_of_words(w), addr);
            assert_eq!(
                presence_slot_of_words(&w),
                crate::blocklist::presence_slot(&addr)
            );
        }
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
