//! The block generation (`BLOCK_GENERATION`): one counter every writer adds
//! to atomically, the controller and control commands through a shared memory
//! mapping of the map, the kernel with an atomic add. A read-then-write
//! through the map syscalls could hand an old value back after two writers
//! raced, and revive verdicts the kernel cached before a block was added.

use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};
use aya::maps::Map;

use super::mapped::MappedValue;

pub struct Generation(MappedValue);

impl Generation {
    pub fn new(map: Map) -> Result<Self> {
        let mapped = MappedValue::new(map, "BLOCK_GENERATION", 8)?;
        mapped.word(0).context("BLOCK_GENERATION has no value")?;
        Ok(Self(mapped))
    }

    /// Voids every verdict the kernel cached so far.
    pub fn bump(&self) {
        if let Some(w) = self.0.word(0) {
            w.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn value(&self) -> u64 {
        self.0.word(0).map_or(0, |w| w.load(Ordering::SeqCst))
    }
}
