//! The per-CPU fast path (`FAST`): a clock read once per tick, the budget of
//! new per-source states, and the verdict cache of blocked sources.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use scan_guard_common::fastpath::{BUDGET_WINDOW_SHIFT, FastPath};

use crate::maps::FAST;

/// This CPU's record (always present: a one-slot per-CPU array).
#[inline(always)]
pub fn record() -> Option<&'static mut FastPath> {
    // SAFETY: per-CPU slot, valid for the whole program run, touched by this
    // CPU only (XDP runs with preemption off).
    FAST.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The coarse monotonic clock. It only moves on a tick, so it is read once per
/// jiffy (the verifier inlines `bpf_jiffies64` to one load) and cached.
#[inline(always)]
pub fn now() -> u64 {
    match record() {
        Some(f) => now_in(f),
        // SAFETY: helper without preconditions.
        None => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

#[inline(always)]
pub fn now_in(f: &mut FastPath) -> u64 {
    // SAFETY: helper without preconditions.
    let j = unsafe { bpf_jiffies64() };
    if f.clock_jiffies == j && f.clock_ns != 0 {
        return f.clock_ns;
    }
    // SAFETY: helper without preconditions.
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    f.clock_jiffies = j;
    f.clock_ns = ns;
    ns
}

/// Takes one new-state allocation from this CPU's budget for the window of
/// `now`; false when the window's budget (`budget`, 0: none) is spent.
#[inline(always)]
pub fn take_budget(now: u64, budget: u32) -> bool {
    if budget == 0 {
        return true;
    }
    let Some(f) = record() else {
        return true;
    };
    let window = now >> BUDGET_WINDOW_SHIFT;
    if f.budget_window != window {
        f.budget_window = window;
        f.budget_used = 0;
    }
    if f.budget_used >= budget {
        return false;
    }
    f.budget_used += 1;
    true
}
