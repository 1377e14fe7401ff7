//! Making sure pin directories live on a bpffs.

use std::{
    ffi::CString,
    io,
    os::unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::base::error::usage;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is conventionally mounted.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// The default pin directory of the instance protecting `iface`.
pub fn default_pin_dir(iface: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS).join("scan-guard").join(iface)
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains NUL", path.display()))
}

/// True when `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let c = c_path(path)?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(buf.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts a bpffs on `/sys/fs/bpf` when nothing (or something else) is mounted there.
pub fn ensure_default_bpffs() -> Result<()> {
    let root = Path::new(DEFAULT_BPFFS);
    if root.exists() && is_bpffs(root)? {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {DEFAULT_BPFFS}"))?;
    let target = c_path(root)?;
    let fstype = c"bpf";
    // SAFETY: all strings are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!("{DEFAULT_BPFFS} is not a bpffs and mounting one there failed")
        });
    }
    tracing::info!("mounted a bpffs on {DEFAULT_BPFFS}");
    Ok(())
}

/// Creates `dir` (mode 0700) after checking that it lies on a bpffs. The default
/// location gets a bpffs mounted if needed; any other location is the user's choice
/// and must already be on one.
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    if dir.starts_with(DEFAULT_BPFFS) {
        ensure_default_bpffs()?;
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().ok_or_else(|| {
            usage(format!(
                "pin directory {} has no existing parent",
                dir.display()
            ))
        })?;
    }
    if !is_bpffs(existing)? {
        return Err(usage(format!(
            "pin directory {} is not on a bpffs (mount one with `mount -t bpf bpf DIR`, or use a directory under {DEFAULT_BPFFS})",
            dir.display()
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))
}
