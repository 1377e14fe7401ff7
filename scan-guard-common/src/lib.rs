//! Everything the XDP program and the controller must agree on: map keys and values,
//! event records, configuration, statistic indices, and the pure decision logic
//! (TCP flag classes, probe kinds, sketches, weights) that both sides run.
//!
//! `no_std` so the kernel side can use it; the `user` feature adds `aya::Pod`.
#![no_std]

pub mod addr;
pub mod blocklist;
pub mod config;
pub mod event;
pub mod fastpath;
pub mod flags;
pub mod meta;
pub mod ports;
pub mod rate;
pub mod sketch;
pub mod state;
pub mod stats;
pub mod vocab;

/// Names of the maps as they appear in the object file and under the pin directory.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const SOURCES: &str = "SOURCES";
    /// Prefix blocks other than host and source-prefix blocks (LPM trie).
    pub const BLOCKLIST: &str = "BLOCKLIST";
    /// IPv4 host and source-prefix blocks (hash map, `blocklist::v4_key`).
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// IPv6 host and source-prefix blocks (hash map, `blocklist::BlockKey`).
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// Which /16s a block the controller wrote covers (`blocklist::covered_slots`).
    pub const BLOCK_PRESENCE: &str = "BLOCK_PRESENCE";
    /// Which /16s hold a kernel auto-block.
    pub const KERNEL_PRESENCE: &str = "KERNEL_PRESENCE";
    pub const ALLOWLIST: &str = "ALLOWLIST";
    pub const LISTENING: &str = "LISTENING";
    pub const EVENTS: &str = "EVENTS";
    pub const SCRATCH: &str = "SCRATCH";
    /// Kernel-only scratch: the probe a packet makes, between its protocol
    /// handler and the evidence update.
    pub const PROBE: &str = "PROBE";
    pub const PROTECTED: &str = "PROTECTED";
    pub const RATE: &str = "RATE";
    pub const CONTACTS: &str = "CONTACTS";
    /// The host's own unicast addresses (evidence is only traffic to these).
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// Source prefixes scored per address, not as a whole (they hold the host's
    /// own, protected or allowlisted addresses).
    pub const NO_AGGREGATE: &str = "NO_AGGREGATE";
    /// Userspace-only: the controller's desired blocks with reasons and expiry.
    pub const BLOCK_META: &str = "BLOCK_META";
    /// Per CPU: the cached clock, the new-source budget and the verdict cache
    /// (`fastpath::FastPath`). Only the kernel writes it.
    pub const FAST: &str = "FAST";
    /// One counter (memory-mappable, added to atomically by the controller
    /// and the kernel alike), bumped on every block added, lifted or replaced
    /// and every allowlist change: verdict cache slots of an older generation
    /// are void.
    pub const BLOCK_GENERATION: &str = "BLOCK_GENERATION";
    /// Every map, in the order the controller pins them.
    pub const ALL: [&str; 21] = [
        CONFIG,
        STATS,
        SOURCES,
        BLOCKLIST,
        ALLOWLIST,
        LISTENING,
        EVENTS,
        SCRATCH,
        PROBE,
        PROTECTED,
        RATE,
        CONTACTS,
        BLOCK_META,
        LOCAL_ADDRS,
        NO_AGGREGATE,
        BLOCK_V4,
        BLOCK_V6,
        BLOCK_PRESENCE,
        KERNEL_PRESENCE,
        FAST,
        BLOCK_GENERATION,
    ];
}

/// Name of the XDP program inside the object file.
pub const PROGRAM_NAME: &str = "scan_guard";

/// Default capacities; the controller may override them at load time.
pub mod limits {
    /// Sources tracked at once (LRU: the least recently seen are evicted first).
    pub const MAX_SOURCES: u32 = 65_536;
    /// Blocklist entries (exact addresses and prefixes).
    pub const MAX_BLOCKS: u32 = 131_072;
    /// Allowlist prefixes.
    pub const MAX_ALLOWS: u32 = 4_096;
    /// Ring buffer for threshold-crossing events, in bytes (power of two, page multiple).
    pub const EVENT_RING_BYTES: u32 = 256 * 1024;
    /// Ring buffer for first-contact records, in bytes: about 75,000 records,
    /// what a flood of new sources at several hundred thousand per second
    /// brings between two drains of the controller (woken every 256th record
    /// of a CPU, and every 100 ms).
    pub const CONTACT_RING_BYTES: u32 = 4 * 1024 * 1024;
    /// Never-block prefixes.
    pub const MAX_PROTECTED: u32 = 1_024;
    /// Source prefixes scored per address (`NO_AGGREGATE`).
    pub const MAX_NO_AGGREGATE: u32 = 4_096;
    /// Addresses of the host's own (all interfaces, both families).
    pub const MAX_LOCAL_ADDRS: u32 = 4_096;
    /// IPv6 extension headers walked before giving up (fail open).
    pub const MAX_IPV6_EXT_HEADERS: usize = 6;
    /// VLAN tags parsed (802.1Q / 802.1ad).
    pub const MAX_VLAN_TAGS: usize = 2;
}
