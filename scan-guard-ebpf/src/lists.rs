//! Allowlist, blocklist (with expiry enforced here, so blocks lapse even with no
//! controller running) and the listening-port bitmap.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    maps::{Array, HashMap, lpm_trie::Key},
};
use scan_guard_common::{
    addr::Addr,
    addr::is_v4,
    blocklist::{BlockKey, presence_slot, presence_slot_of, v4_key, v4_word},
    config::KernelConfig,
    ports,
    state::BlockEntry,
    stats::{Stat, StatBlock},
};

use crate::{
    bump,
    maps::{
        ALLOWLIST, BLOCK_PRESENCE, BLOCK_V4, BLOCK_V6, BLOCKLIST, KERNEL_PRESENCE, LISTENING,
        LOCAL_ADDRS,
    },
};

#[inline(always)]
pub fn is_allowed(src: &Addr) -> bool {
    ALLOWLIST.get(Key::new(128, *src)).is_some()
}

#[inline(always)]
fn hit(entry: &BlockEntry) {
    // Plain increment: the BPF target has no atomic RMW in Rust, and a hit lost to a
    // race between CPUs only makes a statistic approximate.
    let hits = (&raw const entry.hits).cast_mut();
    // SAFETY: the pointer comes from a live map value the kernel keeps valid for this
    // program run; the field is 8-byte aligned.
    unsafe { hits.write_volatile(hits.read_volatile().wrapping_add(1)) };
}

/// True when `map` holds an unexpired entry for `key` (its hit counted); an
/// expired one is removed here.
#[inline(always)]
fn hashed_block<K>(map: &HashMap<K, BlockEntry>, key: &K, stats: &mut StatBlock) -> bool {
    // SAFETY: the value is read and its hit counter bumped while the program runs.
    let Some(entry) = (unsafe { map.get(key) }) else {
        return false;
    };
    // SAFETY: helper without preconditions.
    if entry.expires_ns != 0 && entry.is_expired(unsafe { bpf_ktime_get_coarse_ns() }) {
        let _ = map.remove(key);
        bump(stats, Stat::BlocksExpired as usize);
        return false;
    }
    hit(entry);
    true
}

/// True when bit `slot` of a presence bitmap is set.
#[inline(always)]
fn marked(map: &Array<u64>, slot: u32) -> bool {
    match map.get(slot >> 6) {
        Some(word) => *word & (1u64 << (slot & 63)) != 0,
        None => false,
    }
}

/// Marks `src`'s /16 in the kernel's presence bitmap after an auto-block. An
/// atomic OR: two CPUs marking the same word must not lose a bit (a lost bit
/// would let a blocked source pass); Rust has no atomic RMW for this target.
#[inline(always)]
pub fn mark_kernel_presence(src: &Addr) {
    let slot = presence_slot(src);
    if let Some(word) = KERNEL_PRESENCE.get_ptr_mut(slot >> 6) {
        let bit: u64 = 1u64 << (slot & 63);
        // SAFETY: `word` points at an 8-byte aligned u64 inside a map value
        // that stays valid for this run; the instruction is BPF_ATOMIC | BPF_OR.
        unsafe {
            core::arch::asm!("lock *(u64 *)({w} + 0) |= {b}", w = in(reg) word, b = in(reg) bit);
        }
    }
}

/// True when an unexpired entry covers `src`. Only for sources whose /16 holds
/// a block (the presence bitmaps: the controller's for everything it wrote,
/// the kernel's for its auto-blocks) are the maps asked at all: its own host
/// entry and its source prefix's entry (one hash lookup each), then, where the
/// controller marked the /16, its aggregate prefix (hash) and the LPM trie.
/// An expired entry is removed and the next place is still asked, so a
/// broader block underneath still applies.
// A subprogram of its own: the verifier then meets one return value, not every
// state of the lookups, at each packet path that follows.
#[inline(never)]
pub fn is_blocked(src: &Addr, cfg: &KernelConfig, stats: &mut StatBlock) -> bool {
    let v4 = is_v4(src);
    let slot = presence_slot_of(src, v4);
    let by_controller = marked(&BLOCK_PRESENCE, slot);
    if !by_controller && !marked(&KERNEL_PRESENCE, slot) {
        return false;
    }
    let plen = cfg.source_prefix_of(v4);
    let agg = cfg.aggregate_prefix_of(v4);
    if v4 {
        let word = v4_word(src);
        if hashed_block(&BLOCK_V4, &v4_key(word, 128), stats) {
            return true;
        }
        if plen < 128 && hashed_block(&BLOCK_V4, &v4_key(word, plen), stats) {
            return true;
        }
    } else {
        // The address goes into two words once; keeping its 16 bytes live
        // across the helper calls overflowed the stack this call chain may use.
        let host = BlockKey::new(src, 128);
        if hashed_block(&BLOCK_V6, &host, stats) {
            return true;
        }
        if plen < 128 {
            let mut key = host;
            key.narrow(plen);
            if hashed_block(&BLOCK_V6, &key, stats) {
                return true;
            }
        }
    }
    // Aggregates and trie prefixes are only ever written by the controller.
    if !by_controller {
        return false;
    }
    if agg < 128 && agg != plen {
        let found = if v4 {
            hashed_block(&BLOCK_V4, &v4_key(v4_word(src), agg), stats)
        } else {
            hashed_block(&BLOCK_V6, &BlockKey::new(src, agg), stats)
        };
        if found {
            return true;
        }
    }
    let mut lpm_key = Key::new(128, *src);
    let Some(entry) = BLOCKLIST.get(&lpm_key) else {
        return false;
    };
    if entry.expires_ns == 0 {
        hit(entry);
        return true;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !entry.is_expired(now) {
        hit(entry);
        return true;
    }
    // The LPM delete matches on the prefix length; bits past it are ignored.
    lpm_key.prefix_len = entry.prefix_len;
    let _ = BLOCKLIST.remove(&lpm_key);
    bump(stats, Stat::BlocksExpired as usize);
    lpm_key.prefix_len = 128;
    match BLOCKLIST.get(&lpm_key) {
        Some(e) if !e.is_expired(now) => {
            hit(e);
            true
        }
        _ => false,
    }
}

#[inline(always)]
pub fn is_listening(proto: u32, port: u16) -> bool {
    match LISTENING.get(ports::word_index(proto, port)) {
        Some(word) => *word & ports::bit(port) != 0,
        None => false,
    }
}

/// True when `dst` is one of the host's own unicast addresses.
#[inline(always)]
pub fn is_local(dst: &Addr) -> bool {
    // SAFETY: the value is only tested for presence, never read.
    unsafe { LOCAL_ADDRS.get(dst).is_some() }
}
