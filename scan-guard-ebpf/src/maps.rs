//! The program's maps. Capacities here are defaults; the controller may resize the
//! LRU and the lists at load time and pins every map under the instance directory.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use scan_guard_common::{
    addr::Addr,
    config::KernelConfig,
    limits,
    ports::LISTENING_WORDS,
    state::{BlockEntry, SourceState},
    stats::StatBlock,
};

#[map]
pub static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

#[map]
pub static STATS: PerCpuArray<StatBlock> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static SOURCES: LruHashMap<Addr, SourceState> =
    LruHashMap::with_max_entries(limits::MAX_SOURCES, 0);

#[map]
pub static BLOCKLIST: LpmTrie<Addr, BlockEntry> = LpmTrie::with_max_entries(limits::MAX_BLOCKS, 0);

#[map]
pub static ALLOWLIST: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(limits::MAX_ALLOWS, 0);

#[map]
pub static LISTENING: Array<u64> = Array::with_max_entries(LISTENING_WORDS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENT_RING_BYTES, 0);

/// Per-CPU scratch slot where a fresh `SourceState` is built before insertion
/// (it is too large for the 512-byte BPF stack alongside the rest).
#[map]
pub static SCRATCH: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);
