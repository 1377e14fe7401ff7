//! The block generation (`BLOCK_GENERATION`): one counter every writer adds
//! to atomically, the controller and control commands through a shared memory
//! mapping of the map, the kernel with an atomic add. A read-then-write
//! through the map syscalls could hand an old value back after two writers
//! raced, and revive verdicts the kernel cached before a block was added.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Result, bail};
use aya::maps::{Map, MapData};

pub struct Generation {
    /// Keeps the map (and so the mapping's object) open.
    _map: MapData,
    counter: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is shared memory the kernel writes too; every access to
// it goes through the atomic.
unsafe impl Send for Generation {}
// SAFETY: as above.
unsafe impl Sync for Generation {}

impl Generation {
    pub fn new(map: Map) -> Result<Self> {
        let Map::Array(data) = map else {
            bail!("map BLOCK_GENERATION is not an array");
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let len = usize::try_from(page).unwrap_or(4096).max(8);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's value area; nothing else
        // in this process refers to that address range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mapping BLOCK_GENERATION into memory: {}",
                std::io::Error::last_os_error()
            );
        }
        let Some(counter) = NonNull::new(p.cast::<AtomicU64>()) else {
            bail!("mapping BLOCK_GENERATION into memory gave a null address");
        };
        Ok(Self {
            _map: data,
            counter,
            len,
        })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping lives as long as `self`; its first 8 bytes are
        // the array's one page-aligned u64 value.
        unsafe { self.counter.as_ref() }
    }

    /// Voids every verdict the kernel cached so far.
    pub fn bump(&self) {
        self.counter().fetch_add(1, Ordering::SeqCst);
    }

    pub fn value(&self) -> u64 {
        self.counter().load(Ordering::SeqCst)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: exactly the range `new` mapped, unmapped once.
        unsafe { libc::munmap(self.counter.as_ptr().cast(), self.len) };
    }
}
