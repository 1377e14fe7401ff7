//! A one-value array map shared with the kernel through a memory mapping
//! (`BPF_F_MMAPABLE`), read and written as 8-byte atomics: what several
//! writers (the kernel on any CPU, the controller, a control command) must
//! change without losing each other's updates, which a read-then-write
//! through the map syscalls cannot promise.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::AtomicU64,
};

use anyhow::{Result, bail};
use aya::maps::{Map, MapData};

pub struct MappedValue {
    /// Keeps the map (and so the mapping's object) open.
    _map: MapData,
    base: NonNull<AtomicU64>,
    /// Bytes of the value (8-byte words: `bytes / 8`).
    bytes: usize,
    /// Bytes mapped (whole pages).
    len: usize,
}

// SAFETY: the mapping is shared memory the kernel writes too; every access to
// it goes through atomics.
unsafe impl Send for MappedValue {}
// SAFETY: as above.
unsafe impl Sync for MappedValue {}

impl MappedValue {
    /// Maps the one value (`bytes` long) of the array map `map`, called
    /// `name` in errors.
    pub fn new(map: Map, name: &str, bytes: usize) -> Result<Self> {
        let Map::Array(data) = map else {
            bail!("map {name} is not an array");
        };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(8);
        let len = bytes.max(8).div_ceil(page) * page;
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
                "mapping {name} into memory: {}",
                std::io::Error::last_os_error()
            );
        }
        let Some(base) = NonNull::new(p.cast::<AtomicU64>()) else {
            bail!("mapping {name} into memory gave a null address");
        };
        Ok(Self {
            _map: data,
            base,
            bytes,
            len,
        })
    }

    /// The value's 8-byte word `i` (`None` past its end).
    pub fn word(&self, i: usize) -> Option<&AtomicU64> {
        if (i + 1) * 8 > self.bytes {
            return None;
        }
        // SAFETY: the mapping lives as long as `self`, starts page-aligned
        // with the value, and word `i` lies inside it.
        Some(unsafe { &*self.base.as_ptr().add(i) })
    }
}

impl Drop for MappedValue {
    fn drop(&mut self) {
        // SAFETY: exactly the range `new` mapped, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
