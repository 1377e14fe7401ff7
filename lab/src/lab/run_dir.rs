//! The directory of one lab under /run (logs, captures, configs, events, its
//! bpffs) as a guard: removed with everything in it on drop.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::bpffs::unmount;

/// A lab directory this process created and removes on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    who: String,
}

impl RunDir {
    /// Creates `path`. One of that name can only be left over from a killed
    /// earlier run of a process with the same pid: it is removed first, its bpffs
    /// (at [`bpffs_path`](Self::bpffs_path)) unmounted.
    pub fn create(path: &Path, who: &str) -> Self {
        if path.exists() {
            unmount(&Self::bpffs_in(path));
            let _ = fs::remove_dir_all(path);
        }
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self {
            path: path.to_path_buf(),
            who: who.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the lab mounts its bpffs: `<dir>/bpffs`.
    pub fn bpffs_path(&self) -> PathBuf {
        Self::bpffs_in(&self.path)
    }

    fn bpffs_in(dir: &Path) -> PathBuf {
        dir.join("bpffs")
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("{} removing {}: {e}", self.who, self.path.display()),
        }
    }
}
