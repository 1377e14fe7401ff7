//! Typed access to the program's maps, opened either from a freshly loaded object
//! or from the pins of a running instance (control commands in another process).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key},
};
use scan_guard_common::{
    addr::Addr,
    config::{KernelConfig, POLICY_ALLOWLIST},
    map_names,
    meta::{BlockMeta, MetaKey},
    rate::RateRing,
    state::{BlockEntry, SourceState},
    stats::{STAT_COUNT, StatBlock},
};

pub struct KernelMaps {
    pub config: Array<MapData, KernelConfig>,
    pub stats: PerCpuArray<MapData, StatBlock>,
    pub sources: HashMap<MapData, Addr, SourceState>,
    pub blocklist: LpmTrie<MapData, Addr, BlockEntry>,
    pub allowlist: LpmTrie<MapData, Addr, u8>,
    pub protected: LpmTrie<MapData, Addr, u8>,
    pub listening: Array<MapData, u64>,
    pub meta: HashMap<MapData, MetaKey, BlockMeta>,
    /// Start times of the latest blocks: the block-rate budget the kernel and
    /// the controller share.
    pub rate: Array<MapData, RateRing>,
    /// The host's own unicast addresses (only traffic to them is evidence).
    pub local: HashMap<MapData, Addr, u8>,
    /// Source prefixes scored per address (they hold addresses judged alone).
    pub no_aggregate: HashMap<MapData, Addr, u8>,
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
        Ok(Self {
            config: field!(map_names::CONFIG),
            stats: field!(map_names::STATS),
            sources: field!(map_names::SOURCES),
            blocklist: field!(map_names::BLOCKLIST),
            allowlist: field!(map_names::ALLOWLIST),
            protected: field!(map_names::PROTECTED),
            listening: field!(map_names::LISTENING),
            meta: field!(map_names::BLOCK_META),
            rate: field!(map_names::RATE),
            local: field!(map_names::LOCAL_ADDRS),
            no_aggregate: field!(map_names::NO_AGGREGATE),
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
        self.config.set(0, cfg, 0).context("writing CONFIG")
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

    pub fn insert_block(&mut self, addr: &Addr, prefix_len: u32, entry: &BlockEntry) -> Result<()> {
        self.blocklist
            .insert(&Key::new(prefix_len, *addr), entry, 0)
            .context("inserting into BLOCKLIST")
    }

    pub fn remove_block(&mut self, addr: &Addr, prefix_len: u32) -> Result<bool> {
        match self.blocklist.remove(&Key::new(prefix_len, *addr)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).context("removing from BLOCKLIST"),
        }
    }

    /// The blocklist entry that decides for host `addr`: one lookup, the longest
    /// matching prefix (its own /128 entry when it has one, else a covering prefix).
    pub fn block_for_host(&self, addr: &Addr) -> Option<BlockEntry> {
        self.blocklist.get(&Key::new(128, *addr), 0).ok()
    }

    /// Every blocklist entry as (address, prefix length, entry).
    pub fn blocks(&self) -> Result<Vec<(Addr, u32, BlockEntry)>> {
        let mut out = Vec::new();
        for item in self.blocklist.iter() {
            let (key, entry) = item.context("iterating BLOCKLIST")?;
            out.push((key.data(), key.prefix_len(), entry));
        }
        Ok(out)
    }

    pub fn insert_allow(&mut self, addr: &Addr, prefix_len: u32) -> Result<()> {
        self.allowlist
            .insert(&Key::new(prefix_len, *addr), 1, 0)
            .context("inserting into ALLOWLIST")?;
        self.sync_allowlist_flag()
    }

    pub fn remove_allow(&mut self, addr: &Addr, prefix_len: u32) -> Result<bool> {
        let removed = match self.allowlist.remove(&Key::new(prefix_len, *addr)) {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(e).context("removing from ALLOWLIST"),
        };
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
