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
    state::{BlockEntry, SourceState},
    stats::{STAT_COUNT, StatBlock},
};

pub struct KernelMaps {
    pub config: Array<MapData, KernelConfig>,
    pub stats: PerCpuArray<MapData, StatBlock>,
    pub sources: HashMap<MapData, Addr, SourceState>,
    pub blocklist: LpmTrie<MapData, Addr, BlockEntry>,
    pub allowlist: LpmTrie<MapData, Addr, u8>,
    pub listening: Array<MapData, u64>,
}

fn typed<T>(map: Map, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl KernelMaps {
    /// Takes the maps out of a loaded object (the object keeps its program).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("object has no map {name}"))
        };
        Ok(Self {
            config: typed(take(map_names::CONFIG)?, map_names::CONFIG)?,
            stats: typed(take(map_names::STATS)?, map_names::STATS)?,
            sources: typed(take(map_names::SOURCES)?, map_names::SOURCES)?,
            blocklist: typed(take(map_names::BLOCKLIST)?, map_names::BLOCKLIST)?,
            allowlist: typed(take(map_names::ALLOWLIST)?, map_names::ALLOWLIST)?,
            listening: typed(take(map_names::LISTENING)?, map_names::LISTENING)?,
        })
    }

    /// Opens the maps pinned under `dir` by a running (or crashed) instance.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("pinned map {}", path.display()))
        };
        Ok(Self {
            config: typed(open(map_names::CONFIG)?, map_names::CONFIG)?,
            stats: typed(open(map_names::STATS)?, map_names::STATS)?,
            sources: typed(open(map_names::SOURCES)?, map_names::SOURCES)?,
            blocklist: typed(open(map_names::BLOCKLIST)?, map_names::BLOCKLIST)?,
            allowlist: typed(open(map_names::ALLOWLIST)?, map_names::ALLOWLIST)?,
            listening: typed(open(map_names::LISTENING)?, map_names::LISTENING)?,
        })
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
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).context("removing from BLOCKLIST"),
        }
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
            Err(aya::maps::MapError::KeyNotFound) => false,
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
