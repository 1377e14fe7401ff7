//! Per-source evidence: update the LRU state, and on a threshold crossing emit one
//! event and (policy permitting) block the source in the kernel at once.

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::bpf_ktime_get_coarse_ns,
    maps::lpm_trie::Key,
};
use scan_guard_common::{
    addr::Addr,
    config::KernelConfig,
    event::ScanEvent,
    state::{BlockEntry, BlockOrigin, Probe, SourceState},
    stats::{Stat, StatBlock},
};

use crate::{
    bump,
    maps::{BLOCKLIST, EVENTS, SCRATCH, SOURCES},
    parse::L3,
};

/// Records `probe` against the packet's source; returns the packet's verdict
/// (drop when this very probe got the source blocked).
#[inline(never)]
pub fn record(l3: &L3, probe: &Probe, cfg: &KernelConfig, stats: &mut StatBlock) -> u32 {
    bump(stats, Stat::Probes as usize);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let state = match SOURCES.get_ptr_mut(&l3.src) {
        Some(s) => s,
        None => {
            let Some(fresh) = SCRATCH.get_ptr_mut(0) else {
                return XDP_PASS;
            };
            // SAFETY: per-CPU scratch slot, ours for this run.
            let fresh = unsafe {
                fresh.write(SourceState::new(now));
                &*fresh
            };
            if SOURCES.insert(&l3.src, fresh, BPF_NOEXIST as u64).is_ok() {
                bump(stats, Stat::NewSources as usize);
            }
            match SOURCES.get_ptr_mut(&l3.src) {
                Some(s) => s,
                None => {
                    bump(stats, Stat::TrackFailed as usize);
                    return XDP_PASS;
                }
            }
        }
    };
    // SAFETY: map value pointer valid for this run; concurrent updates from other
    // CPUs can only make counts approximate, never unsafe.
    let state = unsafe { &mut *state };
    let Some(trigger) = state.record(now, probe, cfg) else {
        return XDP_PASS;
    };
    let blocked = cfg.auto_block() && auto_block(&l3.src, now, probe.kind, cfg, stats);
    match EVENTS.reserve::<ScanEvent>(0) {
        Some(mut slot) => {
            // SAFETY: the reserved slot is sized and aligned for one ScanEvent.
            unsafe {
                ScanEvent::write_from_state(
                    slot.as_mut_ptr(),
                    now,
                    &l3.src,
                    &l3.dst,
                    state,
                    trigger,
                    probe.kind,
                    blocked,
                );
            }
            slot.submit(0);
            bump(stats, Stat::Events as usize);
        }
        None => bump(stats, Stat::EventsLost as usize),
    }
    if blocked {
        bump(stats, Stat::DroppedBlocked as usize);
        XDP_DROP
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn auto_block(src: &Addr, now: u64, kind: u8, cfg: &KernelConfig, stats: &mut StatBlock) -> bool {
    let entry = BlockEntry {
        expires_ns: if cfg.block_ttl_ns == 0 {
            0
        } else {
            now.saturating_add(cfg.block_ttl_ns)
        },
        created_ns: now,
        hits: 0,
        prefix_len: 128,
        origin: BlockOrigin::Kernel as u8,
        kind,
        _pad: [0; 2],
    };
    if BLOCKLIST.insert(Key::new(128, *src), &entry, 0).is_ok() {
        bump(stats, Stat::AutoBlocks as usize);
        true
    } else {
        bump(stats, Stat::AutoBlockFailed as usize);
        false
    }
}
