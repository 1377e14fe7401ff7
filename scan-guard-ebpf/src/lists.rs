//! Allowlist, blocklist lookups (with expiry enforced here, so blocks lapse
//! even with no controller running) and the listening-port bitmap. The
//! blocklist is asked here only when the front door (`front`) cannot answer.

use aya_ebpf::maps::{Array, HashMap, lpm_trie::Key};
use scan_guard_common::{
    addr::Addr,
    addr::is_v4,
    blocklist::{BlockKey, presence_slot, v4_key, v4_word},
    config::KernelConfig,
    fastpath::{SLOT_BLOCKED, SLOT_CLEAR, slot_index},
    ports,
    state::BlockEntry,
    stats::{Stat, StatBlock},
};

use crate::{
    bump, fast,
    maps::{
        ALLOWLIST, BLOCK_GENERATION, BLOCK_PRESENCE, BLOCK_V4, BLOCK_V6, BLOCKLIST,
        KERNEL_PRESENCE, LISTENING, LOCAL_ADDRS,
    },
};

#[inline(always)]
pub fn is_allowed(src: &Addr) -> bool {
    ALLOWLIST.get(Key::new(128, *src)).is_some()
}

#[inline(always)]
fn hit(entry: &BlockEntry, n: u64) {
    // Plain add: the BPF target has no atomic RMW in Rust, and a hit lost to a
    // race between CPUs only makes a statistic approximate.
    let hits = (&raw const entry.hits).cast_mut();
    // SAFETY: the pointer comes from a live map value the kernel keeps valid for this
    // program run; the field is 8-byte aligned.
    unsafe { hits.write_volatile(hits.read_volatile().wrapping_add(n)) };
}

/// What a verdict cache slot keeps of a block: when it lapses (`u64::MAX`:
/// never); 0 for "not blocked".
#[inline(always)]
fn lapse(entry: &BlockEntry) -> u64 {
    if entry.expires_ns == 0 {
        u64::MAX
    } else {
        entry.expires_ns
    }
}

/// `lapse` of the unexpired entry `map` holds for `key` (its hits counted), 0
/// when there is none; an expired one is removed here.
#[inline(always)]
fn hashed_block<K>(map: &HashMap<K, BlockEntry>, key: &K, n: u64, stats: &mut StatBlock) -> u64 {
    // SAFETY: the value is read and its hit counter bumped while the program runs.
    let Some(entry) = (unsafe { map.get(key) }) else {
        return 0;
    };
    if entry.expires_ns != 0 && entry.is_expired(fast::now()) {
        let _ = map.remove(key);
        bump(stats, Stat::BlocksExpired as usize);
        return 0;
    }
    hit(entry, n);
    lapse(entry)
}

/// True when bit `slot` of a presence bitmap is set.
#[inline(always)]
pub fn marked(map: &Array<u64>, slot: u32) -> bool {
    match map.get(slot >> 6) {
        Some(word) => *word & (1u64 << (slot & 63)) != 0,
        None => false,
    }
}

/// The block generation now (read afresh: another CPU or the controller may
/// have moved it since this run began).
#[inline(always)]
pub fn generation() -> u64 {
    match BLOCK_GENERATION.get_ptr(0) {
        // SAFETY: a live map value; a plain aligned 8-byte read.
        Some(g) => unsafe { g.read_volatile() },
        None => 0,
    }
}

/// Moves the block generation on, so that no CPU keeps a cached "clear" for a
/// source blocked now. Atomic: the controller adds to the same counter.
#[inline(always)]
pub fn bump_generation() {
    if let Some(g) = BLOCK_GENERATION.get_ptr_mut(0) {
        let one: u64 = 1;
        // SAFETY: `g` points at an 8-byte aligned u64 inside a map value that
        // stays valid for this run; the instruction is BPF_ATOMIC | BPF_ADD.
        unsafe {
            core::arch::asm!("lock *(u64 *)({g} + 0) += {one}", g = in(reg) g, one = in(reg) one);
        }
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

/// The maps' verdict on `src` when the front door could not give one (its
/// /16 holds a block, and this CPU's cache had nothing current), written
/// back into the cache either way. A cached blocked slot's pending hits are
/// added to the entry found. The generation is read before the lookups, so
/// a block added while they run voids what they found.
// A subprogram of its own: the verifier then meets one return value, not every
// state of the lookups, at each packet path that follows.
#[inline(never)]
pub fn settle(src: &Addr, cfg: &KernelConfig, stats: &mut StatBlock) -> bool {
    bump(stats, Stat::VerdictCacheMisses as usize);
    let generation = generation();
    let mut hits = 1;
    if let Some(f) = fast::record() {
        let words = addr_words(src);
        if let Some(s) = f.slots.get_mut(slot_index(&words)) {
            if s.src == words && s.verdict == SLOT_BLOCKED && s.pending_hits > 0 {
                hits = u64::from(s.pending_hits);
                s.pending_hits = 0;
            }
        }
    }
    let by_controller = marked(&BLOCK_PRESENCE, presence_slot(src));
    let lapses = lookup(src, by_controller, cfg, hits, stats);
    // The words and the slot are worked out again rather than kept live
    // across the lookups' helper calls (each kept value is a stack slot).
    if let Some(f) = fast::record() {
        let words = addr_words(src);
        if let Some(s) = f.slots.get_mut(slot_index(&words)) {
            s.src = words;
            s.expires_ns = lapses;
            s.generation = generation;
            s.verdict = if lapses == 0 {
                SLOT_CLEAR
            } else {
                SLOT_BLOCKED
            };
            s.pending_hits = 0;
        }
    }
    lapses != 0
}

/// The address as two native words, read in place.
#[inline(always)]
fn addr_words(src: &Addr) -> [u64; 2] {
    // SAFETY: `src` is 16 readable bytes; unaligned reads.
    unsafe {
        let p = src.as_ptr().cast::<u64>();
        [p.read_unaligned(), p.add(1).read_unaligned()]
    }
}

/// The maps' verdict on `src` (`lapse` of the covering entry, 0: none), `n`
/// hits counted: its own host entry and its source prefix's entry (one hash
/// lookup each), then, where the controller marked the /16, its aggregate
/// prefix (hash) and the LPM trie. An expired entry is removed and the next
/// place is still asked, so a broader block underneath still applies.
// Inlined: a frame of its own on top of `settle`'s would pass the stack
// the verifier allows this call chain.
#[inline(always)]
fn lookup(
    src: &Addr,
    by_controller: bool,
    cfg: &KernelConfig,
    n: u64,
    stats: &mut StatBlock,
) -> u64 {
    let v4 = is_v4(src);
    let plen = cfg.source_prefix_of(v4);
    let agg = cfg.aggregate_prefix_of(v4);
    // One key per family, rewritten for each lookup: every key that lives on
    // its own is another stack slot this call chain cannot spare.
    if v4 {
        let word = v4_word(src);
        let mut key = v4_key(word, 128);
        let found = hashed_block(&BLOCK_V4, &key, n, stats);
        if found != 0 {
            return found;
        }
        if plen < 128 {
            key = v4_key(word, plen);
            let found = hashed_block(&BLOCK_V4, &key, n, stats);
            if found != 0 {
                return found;
            }
        }
        // Aggregates and trie prefixes are only ever written by the controller.
        if !by_controller {
            return 0;
        }
        if agg < 128 && agg != plen {
            key = v4_key(word, agg);
            let found = hashed_block(&BLOCK_V4, &key, n, stats);
            if found != 0 {
                return found;
            }
        }
    } else {
        let mut key = BlockKey::new(src, 128);
        let found = hashed_block(&BLOCK_V6, &key, n, stats);
        if found != 0 {
            return found;
        }
        if plen < 128 {
            key.narrow(plen);
            let found = hashed_block(&BLOCK_V6, &key, n, stats);
            if found != 0 {
                return found;
            }
        }
        if !by_controller {
            return 0;
        }
        if agg < 128 && agg != plen {
            key = BlockKey::new(src, agg);
            let found = hashed_block(&BLOCK_V6, &key, n, stats);
            if found != 0 {
                return found;
            }
        }
    }
    let mut lpm_key = Key::new(128, *src);
    let Some(entry) = BLOCKLIST.get(&lpm_key) else {
        return 0;
    };
    if entry.expires_ns == 0 {
        hit(entry, n);
        return u64::MAX;
    }
    let now = fast::now();
    if !entry.is_expired(now) {
        hit(entry, n);
        return lapse(entry);
    }
    // The LPM delete matches on the prefix length; bits past it are ignored.
    lpm_key.prefix_len = entry.prefix_len;
    let _ = BLOCKLIST.remove(&lpm_key);
    bump(stats, Stat::BlocksExpired as usize);
    lpm_key.prefix_len = 128;
    match BLOCKLIST.get(&lpm_key) {
        Some(e) if !e.is_expired(now) => {
            hit(e, n);
            lapse(e)
        }
        _ => 0,
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
