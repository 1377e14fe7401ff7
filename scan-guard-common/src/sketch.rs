//! Fixed-size distinct-count sketches (one bit per hash bucket). A bit that flips
//! from 0 to 1 is a value not seen before in the window (up to collisions, which
//! only ever under-count: safe for false positives).

/// Buckets of the destination-port sketch.
pub const PORT_SKETCH_BITS: usize = 256;
/// Words of the destination-port sketch.
pub const PORT_SKETCH_WORDS: usize = PORT_SKETCH_BITS / 64;
/// Buckets of the destination-address sketch.
pub const ADDR_SKETCH_BITS: u32 = 64;

/// Bucket of a port under `key`: Fibonacci hashing spreads sequential scans
/// evenly, and the key (random per controller start, `KernelConfig::sketch_key`)
/// keeps a scanner from knowing which ports share a bucket with the host's open
/// ports (with a public hash it could scan only those, and never be counted).
#[inline(always)]
pub const fn port_bucket(port: u16, key: u32) -> u32 {
    ((port as u32) ^ key).wrapping_mul(0x9E37_79B1) >> 24
}

/// Hash of an address (16-byte form); [`addr_bucket_of`] and [`pair_bucket_of`]
/// derive both sketches' buckets from one.
#[inline(always)]
pub fn addr_hash(addr: &[u8; 16]) -> u32 {
    let mut h: u32 = 0;
    let mut i = 0;
    while i < 16 {
        let w = u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
        h = (h ^ w).wrapping_mul(0x9E37_79B1);
        i += 4;
    }
    h
}

/// Bucket of an address (16-byte form).
#[inline(always)]
pub fn addr_bucket(addr: &[u8; 16]) -> u32 {
    addr_bucket_of(addr_hash(addr))
}

/// Bucket of an address from its [`addr_hash`].
#[inline(always)]
pub const fn addr_bucket_of(hash: u32) -> u32 {
    hash >> 26
}

/// Bucket of a (destination address, port) pair, in a 64-bucket sketch like the
/// address sketch's.
#[inline(always)]
pub fn pair_bucket(addr: &[u8; 16], port: u16) -> u32 {
    pair_bucket_of(addr_hash(addr), port)
}

/// Bucket of a pair from the address's [`addr_hash`].
#[inline(always)]
pub const fn pair_bucket_of(hash: u32, port: u16) -> u32 {
    (hash ^ (port as u32).wrapping_mul(0x85EB_CA6B)).wrapping_mul(0x9E37_79B1) >> 26
}

/// Sets bucket `b` in a port sketch; returns true when it was clear.
#[inline(always)]
pub fn set_port_bit(sketch: &mut [u64; PORT_SKETCH_WORDS], bucket: u32) -> bool {
    let word = (bucket as usize >> 6) & (PORT_SKETCH_WORDS - 1);
    let bit = 1u64 << (bucket & 63);
    if let Some(w) = sketch.get_mut(word) {
        if *w & bit == 0 {
            *w |= bit;
            return true;
        }
    }
    false
}

/// Sets bucket `b` in an address sketch; returns true when it was clear.
#[inline(always)]
pub fn set_addr_bit(sketch: &mut u64, bucket: u32) -> bool {
    let bit = 1u64 << (bucket & 63);
    if *sketch & bit == 0 {
        *sketch |= bit;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_in_range() {
        for p in 0..=u16::MAX {
            assert!((port_bucket(p, 0x5eed_1234) as usize) < PORT_SKETCH_BITS);
        }
        assert!(addr_bucket(&[0xff; 16]) < ADDR_SKETCH_BITS);
    }

    #[test]
    fn sequential_ports_fill_buckets_evenly() {
        // nmap's default run touches ports in order; 64 consecutive ports should
        // land in (nearly) 64 different buckets.
        let mut s = [0u64; PORT_SKETCH_WORDS];
        let new = (1..=64u16)
            .filter(|p| set_port_bit(&mut s, port_bucket(*p, 0)))
            .count();
        assert!(new >= 60, "only {new} distinct buckets");
    }

    #[test]
    fn repeated_port_counts_once() {
        let mut s = [0u64; PORT_SKETCH_WORDS];
        assert!(set_port_bit(&mut s, port_bucket(443, 7)));
        for _ in 0..1000 {
            assert!(!set_port_bit(&mut s, port_bucket(443, 7)));
        }
    }

    #[test]
    fn pairs_spread() {
        // nmap -sn -PS22,80,443 over four addresses: twelve pairs.
        let mut s = 0u64;
        let mut new = 0;
        for last in 1..=4u8 {
            let a = crate::addr::from_v4([10, 0, 0, last]);
            for port in [22, 80, 443] {
                new += usize::from(set_addr_bit(&mut s, pair_bucket(&a, port)));
            }
        }
        assert!(new >= 10, "only {new} distinct buckets for 12 pairs");
    }

    #[test]
    fn addresses_spread() {
        let mut s = 0u64;
        let mut new = 0;
        for last in 1..=16u8 {
            let a = crate::addr::from_v4([10, 0, 0, last]);
            if set_addr_bit(&mut s, addr_bucket(&a)) {
                new += 1;
            }
        }
        assert!(new >= 12, "only {new} distinct buckets for 16 addresses");
    }
}
