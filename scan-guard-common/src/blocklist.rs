//! Where a block lives. The blocks the kernel meets most (one address, or the
//! source prefix evidence is scored under: a /64 for IPv6 by default) sit in
//! hash maps, one per family (IPv4 keyed by 8 bytes, IPv6 by 24): one or two
//! lookups whatever the list's size. Every other prefix
//! (manual ranges, CrowdSec ranges) sits in the LPM trie. The kernel asks any
//! of them only for a source whose /16 (IPv4) or first 16 bits (IPv6) the
//! presence bitmaps mark, so a source far from every block (a random-source
//! flood) costs two bit tests.

use crate::{
    addr::{Addr, V4_MAPPED_PREFIX_BITS, is_v4, mask, top_bits},
    config::KernelConfig,
};

/// Key of the block hash map: a prefix length (128-bit form) and the masked
/// address as two native-endian words (8-byte aligned, so masking it is two
/// ANDs: the kernel's stack has little room for byte shuffling).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub prefix_len: u32,
    pub _pad: u32,
    pub words: [u64; 2],
}

impl BlockKey {
    /// The key of a block of `prefix_len` on `addr` (bits past it cleared).
    #[inline(always)]
    pub fn new(addr: &Addr, prefix_len: u32) -> Self {
        let mut k = Self {
            prefix_len: 128,
            _pad: 0,
            words: [0; 2],
        };
        // A plain copy of the 16 bytes: one load and store at a time, where
        // assembling the words from bytes kept all of them live (and spilled
        // them to the kernel's small stack).
        // SAFETY: both sides are 16 bytes, and `words` does not overlap `addr`.
        unsafe {
            core::ptr::copy_nonoverlapping(addr.as_ptr(), k.words.as_mut_ptr().cast::<u8>(), 16);
        }
        if prefix_len < 128 {
            k.narrow(prefix_len);
        }
        k
    }

    /// Narrows a key to `prefix_len` bits in place.
    #[inline(always)]
    pub fn narrow(&mut self, prefix_len: u32) {
        let p = if prefix_len > 128 { 128 } else { prefix_len };
        self.prefix_len = p;
        // The mask's bytes in address order, read as a native word.
        self.words[0] &= top_bits(p).to_be();
        self.words[1] &= top_bits(p.saturating_sub(64)).to_be();
    }

    /// The (masked) address.
    pub fn addr(&self) -> Addr {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.words[0].to_ne_bytes());
        out[8..].copy_from_slice(&self.words[1].to_ne_bytes());
        out
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for BlockKey {}

/// Presence bits: 65,536 for IPv4 /16s, then 65,536 for IPv6's first 16 bits.
pub const PRESENCE_SLOTS: u32 = 1 << 17;
/// Words of the `PREFIX_PRESENCE` array.
pub const PRESENCE_WORDS: u32 = PRESENCE_SLOTS / 64;
pub(crate) const V6_BASE: u32 = 1 << 16;

/// True when a block of `prefix_len` on `addr` goes to a hash map: a host, a
/// source prefix, or an aggregate prefix (the controller's /24s).
#[inline(always)]
pub fn is_hashed(cfg: &KernelConfig, addr: &Addr, prefix_len: u32) -> bool {
    let v4 = is_v4(addr);
    prefix_len >= 128
        || prefix_len == cfg.source_prefix_of(v4)
        || prefix_len == cfg.aggregate_prefix_of(v4)
}

/// Key of the IPv4 block map: the prefix length (128-bit form) in the high
/// half, the masked address (its four octets read as a native word) in the low.
#[inline(always)]
pub fn v4_key(word: u32, prefix_len: u32) -> u64 {
    let bits = prefix_len.saturating_sub(V4_MAPPED_PREFIX_BITS);
    let mask = ((top_bits(bits.min(32)) >> 32) as u32).to_be();
    ((prefix_len as u64) << 32) | (word & mask) as u64
}

/// The four octets of an IPv4-mapped address as a native word.
#[inline(always)]
pub fn v4_word(addr: &Addr) -> u32 {
    u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]])
}

/// The IPv4 map key of a block of `prefix_len` (96..=128) on mapped `addr`.
pub fn v4_key_of(addr: &Addr, prefix_len: u32) -> u64 {
    v4_key(v4_word(addr), prefix_len.clamp(V4_MAPPED_PREFIX_BITS, 128))
}

/// The block an IPv4 map key stands for: (mapped address, prefix length).
pub fn v4_block_of(key: u64) -> (Addr, u32) {
    (
        crate::addr::from_v4((key as u32).to_ne_bytes()),
        (key >> 32) as u32,
    )
}

/// The presence slot of a host address.
#[inline(always)]
pub fn presence_slot(addr: &Addr) -> u32 {
    presence_slot_of(addr, is_v4(addr))
}

/// `presence_slot` when the caller already knows the family.
#[inline(always)]
pub fn presence_slot_of(addr: &Addr, v4: bool) -> u32 {
    if v4 {
        ((addr[12] as u32) << 8) | addr[13] as u32
    } else {
        V6_BASE + (((addr[0] as u32) << 8) | addr[1] as u32)
    }
}

/// Slots a prefix covers, as inclusive ranges (IPv4 part, IPv6 part): a prefix
/// shorter than /96 that holds `::ffff:0:0/96` covers every IPv4 slot too.
pub fn covered_slots(addr: &Addr, prefix_len: u32) -> [Option<(u32, u32)>; 2] {
    let plen = prefix_len.min(128);
    let span = |first16: u32, bits: u32| -> (u32, u32) {
        let free = 16u32.saturating_sub(bits);
        let lo = first16 & !((1u32 << free) - 1);
        (lo, lo | ((1u32 << free) - 1))
    };
    if is_v4(addr) && plen >= V4_MAPPED_PREFIX_BITS {
        let first = ((addr[12] as u32) << 8) | addr[13] as u32;
        return [Some(span(first, plen - V4_MAPPED_PREFIX_BITS)), None];
    }
    let first = ((addr[0] as u32) << 8) | addr[1] as u32;
    let (lo, hi) = span(first, plen);
    let v6 = Some((V6_BASE + lo, V6_BASE + hi));
    let mapped = crate::addr::from_v4([0; 4]);
    let v4 = (mask(&mapped, plen) == mask(addr, plen)).then_some((0, V6_BASE - 1));
    [v4, v6]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::from_v4;

    fn v6(s: [u16; 8]) -> Addr {
        let mut a = [0u8; 16];
        for (i, w) in s.iter().enumerate() {
            a[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        a
    }

    #[test]
    fn hosts_and_source_prefixes_are_hashed_and_other_prefixes_are_not() {
        let cfg = KernelConfig {
            v6_source_prefix: 64,
            ..KernelConfig::DEFAULT
        };
        let a4 = from_v4([192, 0, 2, 7]);
        let a6 = v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        assert!(is_hashed(&cfg, &a4, 128));
        assert!(is_hashed(&cfg, &a6, 128));
        assert!(is_hashed(&cfg, &a6, 64), "IPv6 sources scored per /64");
        assert!(!is_hashed(&cfg, &a4, 120), "no /24 aggregate configured");
        assert!(!is_hashed(&cfg, &a6, 48));
        let agg = KernelConfig {
            v4_aggregate_prefix: 24,
            v6_aggregate_prefix: 48,
            ..cfg
        };
        assert!(is_hashed(&agg, &a4, 120) && is_hashed(&agg, &a6, 48));

        assert_eq!(
            BlockKey::new(&a6, 64).addr(),
            v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0])
        );
        for plen in [96, 104, 112, 120, 127, 128] {
            let k = v4_key_of(&a4, plen);
            assert_eq!(v4_block_of(k), (mask(&a4, plen), plen), "/{plen}");
        }
        for plen in [0, 1, 7, 8, 63, 64, 65, 100, 120, 127, 128] {
            for a in [a4, a6, [0xff; 16]] {
                assert_eq!(BlockKey::new(&a, plen).addr(), mask(&a, plen), "/{plen}");
            }
        }
    }

    #[test]
    fn a_prefix_covers_exactly_the_slots_of_its_hosts() {
        let p24 = from_v4([192, 0, 2, 0]);
        let slot = presence_slot(&from_v4([192, 0, 2, 200]));
        assert_eq!(covered_slots(&p24, 120), [Some((slot, slot)), None]);
        let p8 = from_v4([10, 0, 0, 0]);
        assert_eq!(
            covered_slots(&p8, 104),
            [Some((10 << 8, (10 << 8) | 0xff)), None]
        );
        let p48 = v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]);
        let s6 = presence_slot(&v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9]));
        assert_eq!(covered_slots(&p48, 48), [None, Some((s6, s6))]);
        // ::/0 covers everything, IPv4 included.
        assert_eq!(
            covered_slots(&[0; 16], 0),
            [Some((0, V6_BASE - 1)), Some((V6_BASE, PRESENCE_SLOTS - 1))]
        );
        for (a, l) in [(p24, 120), (p8, 104)] {
            let [r4, _] = covered_slots(&a, l);
            let (lo, hi) = r4.expect("v4 range");
            assert!((lo..=hi).contains(&presence_slot(&mask(&a, 128))));
        }
    }
}
