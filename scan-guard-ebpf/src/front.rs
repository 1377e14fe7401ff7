//! The front door: the blocklist verdict on a frame's source, taken from its
//! words before anything that can fail is parsed. A source whose /16 holds
//! no block is clear at once (two inlined array reads); otherwise this CPU's
//! verdict cache answers without a helper call, and only what it cannot
//! decide goes to the maps (`lists::settle`).

use scan_guard_common::{
    fastpath::{HIT_BATCH, SLOT_BLOCKED, SLOT_CLEAR, presence_slot_of_words, slot_index},
    stats::{Stat, StatBlock},
};

use crate::{
    bump, fast,
    lists::{generation, marked},
    maps::{BLOCK_PRESENCE, KERNEL_PRESENCE},
};

/// What the front door knows of a source: plain numbers, so that the paths
/// after it meet one register value, not one verifier state per branch.
pub type Front = u32;
/// Blocked: drop the frame.
pub const DROP: Front = 0;
/// No block covers it.
pub const CLEAR: Front = 1;
/// The maps must say (`lists::settle`).
pub const ASK: Front = 2;

/// The verdict on the source whose 16-byte form has the native words `words`.
#[inline(always)]
pub fn verdict(words: &[u64; 2], stats: &mut StatBlock) -> Front {
    let slot = presence_slot_of_words(words);
    if !marked(&BLOCK_PRESENCE, slot) && !marked(&KERNEL_PRESENCE, slot) {
        return CLEAR;
    }
    let Some(f) = fast::record() else {
        return ASK;
    };
    let i = slot_index(words);
    let Some(s) = f.slots.get(i) else {
        return ASK;
    };
    if s.src != *words || s.generation != generation() {
        return ASK;
    }
    if s.verdict == SLOT_CLEAR {
        bump(stats, Stat::VerdictCacheHits as usize);
        return CLEAR;
    }
    if s.verdict != SLOT_BLOCKED {
        return ASK;
    }
    let expires = s.expires_ns;
    // The clock only for a blocked slot: a clear one has no expiry.
    if fast::now_in(f) >= expires {
        return ASK;
    }
    let Some(s) = f.slots.get_mut(i) else {
        return ASK;
    };
    s.pending_hits += 1;
    if s.pending_hits >= HIT_BATCH {
        // The batch goes to the block entry, which is checked again on the way.
        return ASK;
    }
    bump(stats, Stat::VerdictCacheHits as usize);
    DROP
}
