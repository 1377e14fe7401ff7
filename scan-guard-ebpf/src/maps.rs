//! The program's maps. Capacities here are defaults; the controller may resize the
//! LRU and the lists at load time and pins every map under the instance directory.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use scan_guard_common::{
    addr::Addr,
    blocklist::{BlockKey, PRESENCE_WORDS},
    config::KernelConfig,
    fastpath::FastPath,
    limits,
    meta::{BlockMeta, MetaKey},
    ports::LISTENING_WORDS,
    rate::RateRing,
    state::{BlockEntry, Probe, SourceState},
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

/// IPv4 host and source-prefix blocks (`blocklist::is_hashed`): checked first.
#[map]
pub static BLOCK_V4: HashMap<u64, BlockEntry> = HashMap::with_max_entries(limits::MAX_BLOCKS, 0);

/// IPv6 host and source-prefix blocks.
#[map]
pub static BLOCK_V6: HashMap<BlockKey, BlockEntry> =
    HashMap::with_max_entries(limits::MAX_BLOCKS, 0);

/// Per /16 (`blocklist::presence_slot`): a block the controller wrote may
/// cover it. Only the controller writes it.
#[map]
pub static BLOCK_PRESENCE: Array<u64> = Array::with_max_entries(PRESENCE_WORDS, 0);

/// Per /16: the kernel auto-blocked a source there. Only the kernel writes it
/// (atomic OR), the controller clears it only with fresh maps.
#[map]
pub static KERNEL_PRESENCE: Array<u64> = Array::with_max_entries(PRESENCE_WORDS, 0);

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

/// Per-CPU slot where a protocol handler writes the probe `track::record`
/// reads (see `inspect`: one verifier state for every kind of probe).
#[map]
pub static PROBE: PerCpuArray<Probe> = PerCpuArray::with_max_entries(1, 0);

/// Never-block set: a crossing from one of these is reported, never blocked.
#[map]
pub static PROTECTED: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(limits::MAX_PROTECTED, 0);

/// Start times of the latest blocks: the new-block budget the kernel and the
/// controller share. Both claim a block's number with a compare-and-swap (the
/// controller through a memory mapping).
#[map]
pub static RATE: Array<RateRing> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// First contacts for the userspace slow-scan detector.
#[map]
pub static CONTACTS: RingBuf = RingBuf::with_byte_size(limits::CONTACT_RING_BYTES, 0);

/// The host's own unicast addresses, kept current by the controller: only traffic
/// to these is evidence while `POLICY_LOCAL_ONLY` is set.
#[map]
pub static LOCAL_ADDRS: HashMap<Addr, u8> = HashMap::with_max_entries(limits::MAX_LOCAL_ADDRS, 0);

/// Source prefixes scored per address rather than as a whole: those that hold
/// the host's own, protected or allowlisted addresses (the controller keeps it).
#[map]
pub static NO_AGGREGATE: HashMap<Addr, u8> = HashMap::with_max_entries(limits::MAX_NO_AGGREGATE, 0);

/// Userspace-only (the program never touches it): the controller's block records,
/// pinned with the rest so control commands can share them.
#[map]
pub static BLOCK_META: HashMap<MetaKey, BlockMeta> =
    HashMap::with_max_entries(limits::MAX_BLOCKS, 0);

/// Per CPU: the clock read once per tick, the new-source budget and the
/// verdict cache of blocked sources (`fast`).
#[map]
pub static FAST: PerCpuArray<FastPath> = PerCpuArray::with_max_entries(1, 0);

/// The block generation: bumped (atomically, by the controller through a
/// memory mapping and by the kernel on an auto-block) on every block added,
/// lifted or replaced and every allowlist change; it voids every cached
/// verdict of an older one.
#[map]
pub static BLOCK_GENERATION: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
