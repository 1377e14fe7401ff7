//! A bpffs of the lab's own as a guard, mounted on a directory of its lab and
//! detached on drop. `ip netns exec` remounts /sys, hiding /sys/fs/bpf, so the
//! controller's pins go here instead.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::cmd::{describe, path_str, run_bounded};

/// A bpffs this process mounted and detaches on drop.
#[derive(Debug)]
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    /// Creates `path` and mounts a fresh bpffs on it.
    pub fn mount(path: &Path, who: &str) -> Self {
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let out = run_bounded(
            Duration::from_secs(10),
            "mount",
            &["-t", "bpf", "bpf", path_str(path)],
        );
        if !out.status.success() {
            panic!(
                "{who} mounting a bpffs on {}: {}",
                path.display(),
                describe(&out)
            );
        }
        let mounted = Self {
            path: path.to_path_buf(),
        };
        assert!(
            scan_guard::kernel::bpffs::is_bpffs(path).unwrap_or(false),
            "{who} {} is not a bpffs after mounting",
            path.display()
        );
        mounted
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        unmount(&self.path);
    }
}

/// Detaches the mount on `path` (never blocks on a busy one, never panics).
pub(crate) fn unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: NUL-terminated path; MNT_DETACH never blocks on busy mounts.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}
