//! Typed access to the program's maps, opened either from a freshly loaded object
//! or from the pins of a running instance (control commands in another process).

use std::{path::Path, sync::atomic::Ordering};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key},
};
use scan_guard_common::{
    addr::Addr,
    addr::is_v4,
    blocklist::{BlockKey, PRESENCE_WORDS, covered_slots, is_hashed, v4_block_of, v4_key_of},
    config::{KernelConfig, POLICY_ALLOWLIST},
    map_names,
    meta::{BlockMeta, MetaKey},
    rate::RateRing,
    state::{BlockEntry, SourceState},
    stats::{STAT_COUNT, StatBlock},
};

use super::{generation::Generation, mapped::MappedValue};
use crate::base::{cidr::Cidr, clock};

/// The record key of a block's prefix.
pub fn key_of(c: &Cidr) -> MetaKey {
    MetaKey {
        prefix_len: c.prefix_len,
        addr: c.addr,
    }
}

pub fn cidr_of(k: &MetaKey) -> Cidr {
    Cidr::from_key(k.addr, k.prefix_len)
}

/// The kernel entry of a block record (its end on the kernel's clock).
pub fn entry_for(c: &Cidr, m: &BlockMeta, hits: u64) -> BlockEntry {
    BlockEntry {
        expires_ns: clock::mono_deadline(m.expires_unix_s),
        created_ns: clock::monotonic_ns(),
        hits,
        prefix_len: c.prefix_len,
        origin: m.origin,
        kind: m.kind,
        _pad: [0; 2],
    }
}

pub struct KernelMaps {
    config: Array<MapData, KernelConfig>,
    stats: PerCpuArray<MapData, StatBlock>,
    sources: HashMap<MapData, Addr, SourceState>,
    /// Prefix blocks other than host and source-prefix ones.
    blocklist: LpmTrie<MapData, Addr, BlockEntry>,
    /// IPv4 host and source-prefix blocks (`blocklist::is_hashed`).
    block_v4: HashMap<MapData, u64, BlockEntry>,
    /// IPv6 host and source-prefix blocks.
    block_v6: HashMap<MapData, BlockKey, BlockEntry>,
    /// Which /16s the blocks the controller wrote cover (the kernel asks no
    /// map for a source elsewhere, unless it auto-blocked there itself).
    presence: Array<MapData, u64>,
    allowlist: LpmTrie<MapData, Addr, u8>,
    protected: LpmTrie<MapData, Addr, u8>,
    listening: Array<MapData, u64>,
    meta: HashMap<MapData, MetaKey, BlockMeta>,
    /// Start times of the latest blocks: the block-rate budget the kernel and
    /// the controller share.
    rate: MappedValue,
    /// The host's own unicast addresses (only traffic to them is evidence).
    local: HashMap<MapData, Addr, u8>,
    /// Source prefixes scored per address (they hold addresses judged alone).
    no_aggregate: HashMap<MapData, Addr, u8>,
    /// Bumped whenever a block is added, lifted or replaced, or the allowlist
    /// changes: the kernel's per-CPU verdict cache holds nothing of an older
    /// generation.
    generation: Generation,
    /// The config as last read or written: it says which blocks are hashed.
    kcfg: KernelConfig,
}

/// True when a map error means "no such key" (aya reports a delete of a missing
/// key as the syscall's ENOENT).
pub fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Makes the hash-set map `map` hold exactly `set`: new keys first, then the ones
/// that went away, so a key kept across the change never lapses.
fn replace_set(map: &mut HashMap<MapData, Addr, u8>, set: &[Addr], name: &str) -> Result<()> {
    let old: Vec<Addr> = map.keys().filter_map(|k| k.ok()).collect();
    for a in set {
        map.insert(a, 1, 0)
            .with_context(|| format!("writing {name}"))?;
    }
    for a in old.iter().filter(|a| !set.contains(a)) {
        match map.remove(a) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("removing from {name}")),
        }
    }
    Ok(())
}

fn typed<T>(map: Map, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl KernelMaps {
    fn build(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let mut open = |name: &'static str| get(name).map(|m| (m, name));
        macro_rules! field {
            ($name:expr) => {{
                let (m, n) = open($name)?;
                typed(m, n)?
            }};
        }
        let config: Array<MapData, KernelConfig> = field!(map_names::CONFIG);
        // A fresh CONFIG holds zeros until the controller writes it; what is
        // hashed then follows the first write.
        let kcfg = config.get(&0, 0).unwrap_or(KernelConfig::DEFAULT);
        Ok(Self {
            kcfg,
            config,
            stats: field!(map_names::STATS),
            sources: field!(map_names::SOURCES),
            blocklist: field!(map_names::BLOCKLIST),
            block_v4: field!(map_names::BLOCK_V4),
            block_v6: field!(map_names::BLOCK_V6),
            presence: field!(map_names::BLOCK_PRESENCE),
            allowlist: field!(map_names::ALLOWLIST),
            protected: field!(map_names::PROTECTED),
            listening: field!(map_names::LISTENING),
            meta: field!(map_names::BLOCK_META),
            rate: MappedValue::new(
                open(map_names::RATE)?.0,
                map_names::RATE,
                std::mem::size_of::<RateRing>(),
            )?,
            local: field!(map_names::LOCAL_ADDRS),
            no_aggregate: field!(map_names::NO_AGGREGATE),
            generation: Generation::new(open(map_names::BLOCK_GENERATION)?.0)?,
        })
    }

    /// Takes the maps out of a loaded object (the object keeps its program).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::build(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("object has no map {name}"))
        })
    }

    /// Opens the maps pinned under `dir` by a running (or crashed) instance.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("pinned map {}", path.display()))
        })
    }

    /// Replaces the set of the host's own addresses: new ones first, then the
    /// ones that went away, so an address kept across the change never lapses.
    pub fn write_local(&mut self, set: &[Addr]) -> Result<()> {
        replace_set(&mut self.local, set, map_names::LOCAL_ADDRS)
    }

    /// Replaces the source prefixes scored per address (same order as
    /// `write_local`).
    pub fn write_no_aggregate(&mut self, set: &[Addr]) -> Result<()> {
        replace_set(&mut self.no_aggregate, set, map_names::NO_AGGREGATE)
    }

    /// Replaces the never-block set.
    pub fn write_protected(&mut self, set: &[(Addr, u32)]) -> Result<()> {
        let old: Vec<Key<Addr>> = self.protected.keys().filter_map(|k| k.ok()).collect();
        for (a, l) in set {
            self.protected
                .insert(&Key::new(*l, *a), 1, 0)
                .context("writing PROTECTED")?;
        }
        for k in old {
            if !set
                .iter()
                .any(|(a, l)| *a == k.data() && *l == k.prefix_len())
            {
                let _ = self.protected.remove(&k);
            }
        }
        Ok(())
    }

    /// Every allowlist prefix as (address, prefix length).
    pub fn allows(&self) -> Vec<(Addr, u32)> {
        self.allowlist
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.data(), k.prefix_len()))
            .collect()
    }

    /// Every block record.
    /// The record of exactly this prefix, if there is one.
    pub fn meta_of(&self, key: &MetaKey) -> Option<BlockMeta> {
        self.meta.get(key, 0).ok()
    }

    /// The never-block set as written to `PROTECTED`.
    pub fn protected(&self) -> Vec<(Addr, u32)> {
        self.protected
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.data(), k.prefix_len()))
            .collect()
    }

    /// How many blocks the maps hold at most (sized when the instance was made).
    pub fn block_capacity(&self) -> u32 {
        self.meta.map().info().map_or(0, |i| i.max_entries())
    }

    /// Takes one block from the budget of new blocks per second the kernel
    /// and the controller share (`RateRing`, `cap` 0: none) at `now` (the
    /// kernel's coarse monotonic clock): the block's number is claimed with a
    /// compare-and-swap on the shared mapping, as the kernel claims its own,
    /// so no writer's block goes uncounted.
    pub fn take_rate(&self, now: u64, cap: u32) -> bool {
        // RateRing's layout: `next`, then one start time per slot.
        let Some(next_word) = self.rate.word(0) else {
            return false;
        };
        let started = |slot: usize| self.rate.word(1 + slot);
        loop {
            let next = next_word.load(Ordering::SeqCst);
            if let Some(i) = RateRing::deciding_slot(next, cap) {
                let oldest = started(i).map_or(u64::MAX, |w| w.load(Ordering::SeqCst));
                if !RateRing::out_of_window(oldest, now) {
                    return false;
                }
            }
            if next_word
                .compare_exchange(
                    next,
                    next.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                if let Some(w) = started(RateRing::slot(next)) {
                    w.store(now, Ordering::SeqCst);
                }
                return true;
            }
            // Another writer took that number first: look again.
        }
    }

    /// Kernel map ids of the blocklist maps (trie, IPv4 hash, IPv6 hash), for
    /// the benchmarks that run a reference filter against the same maps.
    pub fn blocklist_map_ids(&self) -> [Option<u32>; 3] {
        let id = |m: &MapData| m.info().ok().map(|i| i.id());
        [
            id(self.blocklist.map()),
            id(self.block_v4.map()),
            id(self.block_v6.map()),
        ]
    }

    /// The one writer of a block: its record, then its kernel entry. An entry
    /// of this very prefix already there (a kernel auto-block adopted, a block
    /// renewed or re-timed) hands on its hits and its start: a block started
    /// when it first dropped. If the entry cannot be written the record goes
    /// too, so a block is in both maps or in neither.
    pub fn block(&mut self, c: &Cidr, meta: &BlockMeta) -> Result<()> {
        let key = key_of(c);
        self.put_meta(&key, meta)?;
        let old = self.entry_of(&c.addr, c.prefix_len);
        let mut entry = entry_for(c, meta, old.map_or(0, |e| e.hits));
        if let Some(old) = old {
            entry.created_ns = old.created_ns;
        }
        if let Err(e) = self.insert_block(&c.addr, c.prefix_len, &entry) {
            let _ = self.remove_meta(&key);
            return Err(e);
        }
        Ok(())
    }

    /// The one way a block ends: its record and its kernel entry go. False if
    /// there was neither.
    pub fn lift(&mut self, c: &Cidr) -> Result<bool> {
        let had_meta = self.remove_meta(&key_of(c))?;
        let had_entry = self.remove_block(&c.addr, c.prefix_len)?;
        Ok(had_meta || had_entry)
    }

    pub fn metas(&self) -> Vec<(MetaKey, BlockMeta)> {
        self.meta.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn put_meta(&mut self, key: &MetaKey, meta: &BlockMeta) -> Result<()> {
        self.meta.insert(key, meta, 0).context("writing BLOCK_META")
    }

    pub fn remove_meta(&mut self, key: &MetaKey) -> Result<bool> {
        match self.meta.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).context("removing from BLOCK_META"),
        }
    }

    /// Writes the config; the allowlist bit is derived from the map, not taken
    /// from `cfg`.
    pub fn write_config(&mut self, cfg: &KernelConfig) -> Result<()> {
        let mut cfg = *cfg;
        if self.allowlist.keys().next().is_some() {
            cfg.policy |= POLICY_ALLOWLIST;
        } else {
            cfg.policy &= !POLICY_ALLOWLIST;
        }
        let before = self.kcfg;
        self.config.set(0, cfg, 0).context("writing CONFIG")?;
        self.kcfg = cfg;
        let lengths = |c: &KernelConfig| {
            (
                c.v4_source_prefix,
                c.v6_source_prefix,
                c.v4_aggregate_prefix,
                c.v6_aggregate_prefix,
            )
        };
        if lengths(&before) != lengths(&cfg) {
            self.rehome_blocks()?;
        }
        Ok(())
    }

    pub fn read_config(&self) -> Result<KernelConfig> {
        self.config.get(&0, 0).context("reading CONFIG")
    }

    /// Replaces the listening-port bitmap (word by word; unchanged words are skipped).
    pub fn write_listening(&mut self, words: &[u64]) -> Result<()> {
        for (i, w) in words.iter().enumerate() {
            let i = u32::try_from(i).context("bitmap too large")?;
            if self.listening.get(&i, 0).ok() != Some(*w) {
                self.listening.set(i, w, 0).context("writing LISTENING")?;
            }
        }
        Ok(())
    }

    /// Kernel counters summed over all CPUs.
    pub fn stats_total(&self) -> Result<StatBlock> {
        let per_cpu = self.stats.get(&0, 0).context("reading STATS")?;
        let mut total = [0u64; STAT_COUNT];
        for block in per_cpu.iter() {
            for (t, v) in total.iter_mut().zip(block.iter()) {
                *t = t.wrapping_add(*v);
            }
        }
        Ok(total)
    }

    /// Number of sources currently tracked (walks the LRU keys: not for the hot loop).
    pub fn tracked_sources(&self) -> usize {
        self.sources.keys().filter(|k| k.is_ok()).count()
    }

    /// Writes a block where the kernel looks for it: the hash map for a host or
    /// a source prefix, else the LPM trie (and its /16s into the presence bits).
    /// Every write bumps the generation: no CPU keeps a cached "clear" for a
    /// source it now covers, nor drops on a cached verdict of the entry it
    /// replaces (a new expiry, perhaps an earlier one).
    pub fn insert_block(&mut self, addr: &Addr, prefix_len: u32, entry: &BlockEntry) -> Result<()> {
        // Presence first: the kernel must never meet a block it would skip.
        self.mark_presence(addr, prefix_len)?;
        if is_hashed(&self.kcfg, addr, prefix_len) {
            self.insert_hashed(addr, prefix_len, entry)?;
        } else {
            self.blocklist
                .insert(&Key::new(prefix_len, *addr), entry, 0)
                .context("inserting into BLOCKLIST")?;
        }
        self.generation.bump();
        Ok(())
    }

    fn insert_hashed(&mut self, addr: &Addr, prefix_len: u32, entry: &BlockEntry) -> Result<()> {
        if is_v4(addr) {
            self.block_v4
                .insert(v4_key_of(addr, prefix_len), entry, 0)
                .context("inserting into BLOCK_V4")
        } else {
            self.block_v6
                .insert(BlockKey::new(addr, prefix_len), entry, 0)
                .context("inserting into BLOCK_V6")
        }
    }

    /// The block generation now (kernel auto-blocks move it too).
    pub fn generation(&self) -> u64 {
        self.generation.value()
    }

    fn remove_hashed(&mut self, addr: &Addr, prefix_len: u32) -> Result<bool> {
        let (result, name) = if is_v4(addr) {
            (
                self.block_v4.remove(&v4_key_of(addr, prefix_len)),
                "BLOCK_V4",
            )
        } else {
            (
                self.block_v6.remove(&BlockKey::new(addr, prefix_len)),
                "BLOCK_V6",
            )
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing from {name}")),
        }
    }

    /// The kernel entry of exactly this prefix, wherever it lives.
    fn entry_of(&self, addr: &Addr, prefix_len: u32) -> Option<BlockEntry> {
        if is_hashed(&self.kcfg, addr, prefix_len) {
            return self.get_hashed(addr, prefix_len);
        }
        // The trie answers with the longest prefix that covers the key: only
        // an entry of this very length is this block's.
        self.blocklist
            .get(&Key::new(prefix_len, *addr), 0)
            .ok()
            .filter(|e| e.prefix_len == prefix_len)
    }

    fn get_hashed(&self, addr: &Addr, prefix_len: u32) -> Option<BlockEntry> {
        if is_v4(addr) {
            self.block_v4.get(&v4_key_of(addr, prefix_len), 0).ok()
        } else {
            self.block_v6.get(&BlockKey::new(addr, prefix_len), 0).ok()
        }
    }

    pub fn remove_block(&mut self, addr: &Addr, prefix_len: u32) -> Result<bool> {
        let removed = if is_hashed(&self.kcfg, addr, prefix_len) {
            self.remove_hashed(addr, prefix_len)?
        } else {
            match self.blocklist.remove(&Key::new(prefix_len, *addr)) {
                Ok(()) => true,
                Err(e) if is_not_found(&e) => false,
                Err(e) => return Err(e).context("removing from BLOCKLIST"),
            }
        };
        if removed {
            self.generation.bump();
        }
        // A host's bit may stay until the next full pass (`sync_presence`):
        // a stale bit costs a lookup, never a verdict. A trie prefix may cover
        // many /16s, so those are recomputed now.
        if removed && !is_hashed(&self.kcfg, addr, prefix_len) {
            self.sync_presence()?;
        }
        Ok(removed)
    }

    /// The blocklist entry that decides for host `addr`, asked in the kernel's
    /// order: its own entry, its source prefix's, then the longest matching
    /// prefix in the trie.
    pub fn block_for_host(&self, addr: &Addr) -> Option<BlockEntry> {
        let plen = self.kcfg.source_prefix(addr);
        self.get_hashed(addr, 128)
            .or_else(|| (plen < 128).then(|| self.get_hashed(addr, plen)).flatten())
            .or_else(|| self.blocklist.get(&Key::new(128, *addr), 0).ok())
    }

    /// Every blocklist entry as (address, prefix length, entry).
    pub fn blocks(&self) -> Result<Vec<(Addr, u32, BlockEntry)>> {
        let mut out = Vec::new();
        for item in self.block_v4.iter() {
            let (key, entry) = item.context("iterating BLOCK_V4")?;
            let (addr, plen) = v4_block_of(key);
            out.push((addr, plen, entry));
        }
        for item in self.block_v6.iter() {
            let (key, entry) = item.context("iterating BLOCK_V6")?;
            out.push((key.addr(), key.prefix_len, entry));
        }
        for item in self.blocklist.iter() {
            let (key, entry) = item.context("iterating BLOCKLIST")?;
            out.push((key.data(), key.prefix_len(), entry));
        }
        Ok(out)
    }

    /// Sets the presence bits of a prefix's /16s (words already set are left).
    /// Only the words the prefix covers are read and, where a bit is new,
    /// written. Two processes (the controller and a control command) writing
    /// one word at once could lose a bit: the command's SIGUSR2 makes the
    /// controller recompute every bit on its next tick.
    fn mark_presence(&mut self, addr: &Addr, prefix_len: u32) -> Result<()> {
        for (lo, hi) in covered_slots(addr, prefix_len).into_iter().flatten() {
            for w in (lo >> 6)..=(hi >> 6) {
                let old = self.presence.get(&w, 0).context("reading BLOCK_PRESENCE")?;
                let first = (w << 6).max(lo) - (w << 6);
                let last = ((w << 6) + 63).min(hi) - (w << 6);
                let bits = if last - first == 63 {
                    u64::MAX
                } else {
                    ((1u64 << (last - first + 1)) - 1) << first
                };
                if old | bits != old {
                    self.presence
                        .set(w, old | bits, 0)
                        .context("writing BLOCK_PRESENCE")?;
                }
            }
        }
        Ok(())
    }

    /// Recomputes the controller's presence bits from every block (after a
    /// trie prefix went away, and on each full pass).
    pub fn sync_presence(&mut self) -> Result<()> {
        let before = self.read_presence()?;
        let mut words = vec![0u64; PRESENCE_WORDS as usize];
        for (addr, plen, _) in self.blocks()? {
            set_covered(&mut words, &addr, plen);
        }
        self.write_presence(&before, &words)
    }

    fn read_presence(&self) -> Result<Vec<u64>> {
        (0..PRESENCE_WORDS)
            .map(|i| self.presence.get(&i, 0).context("reading BLOCK_PRESENCE"))
            .collect()
    }

    fn write_presence(&mut self, before: &[u64], words: &[u64]) -> Result<()> {
        for (i, (old, new)) in before.iter().zip(words).enumerate() {
            if old != new {
                self.presence
                    .set(i as u32, new, 0)
                    .context("writing BLOCK_PRESENCE")?;
            }
        }
        Ok(())
    }

    /// Moves every block to the map the current prefix lengths assign it and
    /// recomputes the presence bits (after a source or aggregate prefix length
    /// changed).
    fn rehome_blocks(&mut self) -> Result<()> {
        let mut moves = Vec::new();
        for (addr, plen, entry) in self.blocks()? {
            let in_hash = self.get_hashed(&addr, plen).is_some();
            if in_hash != is_hashed(&self.kcfg, &addr, plen) {
                moves.push((addr, plen, entry, in_hash));
            }
        }
        for (addr, plen, mut entry, was_hashed) in moves {
            // The kernel needs the entry's own prefix length to delete it.
            entry.prefix_len = plen;
            if was_hashed {
                self.blocklist
                    .insert(&Key::new(plen, addr), entry, 0)
                    .context("inserting into BLOCKLIST")?;
                self.remove_hashed(&addr, plen)?;
            } else {
                self.insert_hashed(&addr, plen, &entry)?;
                let _ = self.blocklist.remove(&Key::new(plen, addr));
            }
        }
        self.sync_presence()
    }

    /// Allows a prefix; the generation moves, so no CPU keeps dropping an
    /// allowed source on a cached verdict.
    pub fn insert_allow(&mut self, addr: &Addr, prefix_len: u32) -> Result<()> {
        self.allowlist
            .insert(&Key::new(prefix_len, *addr), 1, 0)
            .context("inserting into ALLOWLIST")?;
        self.generation.bump();
        self.sync_allowlist_flag()
    }

    pub fn remove_allow(&mut self, addr: &Addr, prefix_len: u32) -> Result<bool> {
        let removed = match self.allowlist.remove(&Key::new(prefix_len, *addr)) {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(e).context("removing from ALLOWLIST"),
        };
        if removed {
            self.generation.bump();
        }
        self.sync_allowlist_flag()?;
        Ok(removed)
    }

    /// Sets `POLICY_ALLOWLIST` exactly when the allowlist has entries (the packet
    /// path skips the lookup otherwise).
    pub fn sync_allowlist_flag(&mut self) -> Result<()> {
        let cfg = self.read_config()?;
        self.write_config(&cfg)
    }

    pub fn source(&self, addr: &Addr) -> Option<SourceState> {
        self.sources.get(addr, 0).ok()
    }
}

/// Sets the bits of every /16 slot the prefix covers.
fn set_covered(words: &mut [u64], addr: &Addr, prefix_len: u32) {
    for (lo, hi) in covered_slots(addr, prefix_len).into_iter().flatten() {
        for slot in lo..=hi {
            if let Some(w) = words.get_mut((slot >> 6) as usize) {
                *w |= 1u64 << (slot & 63);
            }
        }
    }
}
