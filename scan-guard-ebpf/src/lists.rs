//! Allowlist, blocklist (with expiry enforced here, so blocks lapse even with no
//! controller running) and the listening-port bitmap.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use scan_guard_common::{
    addr::Addr,
    ports,
    state::BlockEntry,
    stats::{Stat, StatBlock},
};

use crate::{
    bump,
    maps::{ALLOWLIST, BLOCKLIST, LISTENING, LOCAL_ADDRS},
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

/// True when an unexpired entry covers `src`. An expired longest match is removed
/// and the lookup repeated once, so a broader block underneath still applies.
#[inline(always)]
pub fn is_blocked(src: &Addr, stats: &mut StatBlock) -> bool {
    let key = Key::new(128, *src);
    let Some(entry) = BLOCKLIST.get(&key) else {
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
    let _ = BLOCKLIST.remove(Key::new(entry.prefix_len, *src));
    bump(stats, Stat::BlocksExpired as usize);
    match BLOCKLIST.get(&key) {
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
