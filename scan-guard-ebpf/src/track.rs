//! Per-source evidence: update the LRU state, and on a threshold crossing emit one
//! event and (policy permitting) block the source in the kernel at once.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    maps::lpm_trie::Key,
};
use scan_guard_common::{
    addr::{Addr, is_v4, mask},
    blocklist::{BlockKey, v4_key, v4_word},
    config::KernelConfig,
    event::{Contact, ScanEvent, Suppression},
    rate::RateRing,
    state::{BlockEntry, BlockOrigin, Probe, SourceState, Trigger},
    stats::{Stat, StatBlock},
};

use crate::{
    bump, fast,
    maps::{BLOCK_V4, BLOCK_V6, CONTACTS, EVENTS, NO_AGGREGATE, PROTECTED, RATE, SCRATCH, SOURCES},
    parse::L3,
};

/// The key `src`'s evidence is kept under, and its prefix length (128-bit form):
/// the configured source prefix (a /64 for IPv6 by default), or the address
/// itself when the prefix holds addresses that must be judged alone.
#[inline(always)]
fn source_key(src: &Addr, cfg: &KernelConfig) -> (Addr, u32) {
    let plen = cfg.source_prefix(src);
    if plen >= 128 {
        return (*src, 128);
    }
    let masked = mask(src, plen);
    // SAFETY: presence test only.
    if unsafe { NO_AGGREGATE.get(&masked) }.is_some() {
        return (*src, 128);
    }
    (masked, plen)
}

/// Records `probe` against the packet's source; true when this very probe got
/// the source blocked in the kernel (the caller drops the packet and logs it;
/// logging here would overflow the verifier's stack budget for this call
/// chain).
#[inline(never)]
pub fn record(l3: &L3, probe: &Probe, cfg: &KernelConfig, stats: &mut StatBlock) -> bool {
    bump(stats, Stat::Probes as usize);
    let now = fast::now();
    let (key, plen) = source_key(&l3.src, cfg);
    let state = match SOURCES.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            // Admission: a source that so far only does what a client does (an
            // OS stack's SYN to a listening port) gets no state, so a flood of
            // such SYNs from random sources allocates nothing.
            if probe.listening && probe.os_stack {
                bump(stats, Stat::AdmittedUntracked as usize);
                return false;
            }
            if !fast::take_budget(now, cfg.new_source_budget) {
                // Past this CPU's budget of new states (a random-source flood):
                // the first contact still reaches the slow-scan detector.
                bump(stats, Stat::OverBudget as usize);
                if probe.port.is_some() {
                    contact(l3, &key, plen, probe, now, stats);
                }
                return false;
            }
            let Some(fresh) = SCRATCH.get_ptr_mut(0) else {
                return false;
            };
            // SAFETY: per-CPU scratch slot, ours for this run.
            let fresh = unsafe {
                fresh.write(SourceState::new(now));
                &*fresh
            };
            if SOURCES.insert(&key, fresh, BPF_NOEXIST as u64).is_ok() {
                bump(stats, Stat::NewSources as usize);
            }
            // Looked up again rather than updating the scratch copy before the
            // insert: one kind of pointer reaching the update rule keeps the
            // verifier's walk of it single (two would exceed its budget).
            match SOURCES.get_ptr_mut(&key) {
                Some(s) => s,
                None => {
                    bump(stats, Stat::TrackFailed as usize);
                    return false;
                }
            }
        }
    };
    // SAFETY: map value pointer valid for this run; concurrent updates from other
    // CPUs can only make counts approximate, never unsafe.
    let state = unsafe { &mut *state };
    let outcome = state.record(now, probe, cfg);
    if outcome.new_port {
        contact(l3, &key, plen, probe, now, stats);
    }
    let Some(trigger) = outcome.trigger else {
        return false;
    };
    // Host discovery is reported, never blocked on its own.
    let (blocked, suppressed) = if cfg.auto_block() && trigger != Trigger::Discovery {
        auto_block(&l3.src, &key, plen, now, probe.kind, cfg, stats)
    } else {
        (false, 0)
    };
    match EVENTS.reserve::<ScanEvent>(0) {
        Some(mut slot) => {
            // SAFETY: the reserved slot is sized and aligned for one ScanEvent.
            unsafe {
                ScanEvent::write_from_state(
                    slot.as_mut_ptr(),
                    now,
                    &key,
                    &l3.dst,
                    state,
                    trigger,
                    probe.kind,
                    blocked,
                    suppressed,
                    plen as u8,
                );
            }
            slot.submit(0);
            bump(stats, Stat::Events as usize);
        }
        None => bump(stats, Stat::EventsLost as usize),
    }
    if blocked {
        bump(stats, Stat::DroppedBlocked as usize);
    }
    blocked
}

/// True when `src` had a tiny first fragment dropped in its current window: its
/// later fragments are dropped too (they would only fill the reassembly queue).
#[inline(always)]
pub fn first_fragment_dropped(src: &Addr, cfg: &KernelConfig) -> bool {
    let (key, _) = source_key(src, cfg);
    // SAFETY: read-only look at a map value valid for this run.
    let Some(state) = (unsafe { SOURCES.get(&key) }) else {
        return false;
    };
    if state.tiny_frags == 0 {
        return false;
    }
    fast::now().saturating_sub(state.window_start_ns) < cfg.window_ns
}

/// One first-contact record for the slow-scan detector (lost ones are counted).
#[inline(always)]
fn contact(l3: &L3, key: &Addr, plen: u32, probe: &Probe, now: u64, stats: &mut StatBlock) {
    let Some(port) = probe.port else { return };
    match CONTACTS.reserve::<Contact>(0) {
        Some(mut slot) => {
            // Field by field into the slot: no 48-byte temporary on the stack, which
            // the verifier's 512-byte budget for the whole call chain cannot spare.
            let c = slot.as_mut_ptr();
            // SAFETY: the reserved slot is sized and aligned for one Contact; raw
            // field pointers never reference uninitialised memory.
            unsafe {
                (&raw mut (*c).ts_ns).write(now);
                (&raw mut (*c).src).write(*key);
                (&raw mut (*c).dst).write(l3.dst);
                (&raw mut (*c).port).write(port);
                (&raw mut (*c).kind).write(probe.kind);
                (&raw mut (*c).listening).write(probe.listening as u8);
                (&raw mut (*c).os_stack).write(probe.os_stack as u8);
                (&raw mut (*c).src_prefix).write(plen as u8);
                (&raw mut (*c)._pad).write([0; 2]);
            }
            // No wakeup per record: the controller drains this ring every 100 ms
            // and is woken only for every 256th record of a CPU, so a flood of
            // first contacts costs no wakeup each and is drained in batches.
            bump(stats, Stat::Contacts as usize);
            let flags = if stats[Stat::Contacts as usize] % 256 == 0 {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(flags as u64);
        }
        None => bump(stats, Stat::ContactsLost as usize),
    }
}

/// True while the kernel may still block a new source: its share of the shared
/// per-second budget (`RateRing`) is not spent within the last second.
#[inline(always)]
fn within_rate(now: u64, cfg: &KernelConfig) -> bool {
    if cfg.max_auto_blocks_per_sec == 0 {
        return true;
    }
    let Some(rate) = RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: map value pointer valid for this run; the number a block gets is
    // claimed atomically below, so two CPUs never count as one.
    let ring = unsafe { &mut *rate };
    // SAFETY: an aligned read of a live map value's field.
    let next = unsafe { (&raw const ring.next).read_volatile() };
    if !ring.allows(next, now, cfg.max_auto_blocks_per_sec) {
        return false;
    }
    // Another CPU that claimed this number first wins and this block waits:
    // the cap stays strict when CPUs race (a plain write let both through).
    if !claim(&raw mut ring.next, next) {
        return false;
    }
    if let Some(slot) = ring.started_ns.get_mut(RateRing::slot(next)) {
        *slot = now;
    }
    true
}

/// Moves `*counter` from `seen` to `seen + 1` if nobody moved it since: true
/// when this CPU made the move (BPF_ATOMIC | BPF_CMPXCHG; Rust has no atomic
/// RMW for this target).
#[inline(always)]
fn claim(counter: *mut u64, seen: u64) -> bool {
    let new = seen.wrapping_add(1);
    let prev: u64;
    // SAFETY: `counter` points at an 8-byte aligned u64 inside a map value
    // that stays valid for this run.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) counter,
            new = in(reg) new,
            inout("r0") seen => prev,
        );
    }
    prev == seen
}

/// Blocks `key`/`plen` (the source's scoring prefix) in the kernel unless the
/// packet's own source `src` is protected or a cap says no. Prefixes that hold a
/// protected address are never scored as a whole (`NO_AGGREGATE`), so a block of
/// one never covers a protected address. Returns (blocked, `Suppression` or 0).
#[inline(always)]
fn auto_block(
    src: &Addr,
    key: &Addr,
    plen: u32,
    now: u64,
    kind: u8,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
) -> (bool, u8) {
    if PROTECTED.get(Key::new(128, *src)).is_some() {
        bump(stats, Stat::AutoBlockSuppressed as usize);
        return (false, Suppression::Protected as u8);
    }
    if !within_rate(now, cfg) {
        bump(stats, Stat::AutoBlockSuppressed as usize);
        return (false, Suppression::RateLimited as u8);
    }
    let entry = BlockEntry {
        expires_ns: if cfg.block_ttl_ns == 0 {
            0
        } else {
            now.saturating_add(cfg.block_ttl_ns)
        },
        created_ns: now,
        hits: 0,
        prefix_len: plen,
        origin: BlockOrigin::Kernel as u8,
        kind,
        _pad: [0; 2],
    };
    // The source's own prefix (or host): always a hash-map block.
    // `key` is already masked to `plen`.
    let inserted = if is_v4(key) {
        BLOCK_V4.insert(&v4_key(v4_word(key), plen), &entry, 0)
    } else {
        let mut hkey = BlockKey::new(key, 128);
        hkey.prefix_len = plen;
        BLOCK_V6.insert(&hkey, &entry, 0)
    };
    if inserted.is_ok() {
        crate::lists::mark_kernel_presence(key);
        // After the entry and the presence bit: no CPU may keep a cached
        // "clear" for this source from before it.
        crate::lists::bump_generation();
        bump(stats, Stat::AutoBlocks as usize);
        (true, 0)
    } else {
        bump(stats, Stat::AutoBlockFailed as usize);
        (false, Suppression::BlocklistFull as u8)
    }
}
