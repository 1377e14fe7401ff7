//! A small runtime file per running controller (under /run/scan-guard), so
//! `scan-guard status` can tell attached-and-supervised from attached-and-orphaned.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

const RUN_DIR: &str = "/run/scan-guard";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceInfo {
    pub pid: u32,
    /// The interfaces the program is on, comma-separated (see `ifaces`).
    pub iface: String,
    /// "native", "skb" or "adopted" when all interfaces share it, else "mixed".
    pub mode: String,
    /// Every interface of the list, attached or not, with its own mode.
    #[serde(default)]
    pub ifaces: Vec<crate::kernel::attachments::IfaceStatus>,
    pub started_unix_s: u64,
    pub pin_dir: PathBuf,
    pub state_file: PathBuf,
    pub dry_run: bool,
    /// The controller takes SIGUSR2 as "the maps changed, look now" (older ones
    /// would die of it, so the CLI signals only when this says so).
    #[serde(default)]
    pub notify_sigusr2: bool,
}

/// Runtime file of the instance pinned at `pin_dir`.
pub fn info_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(RUN_DIR).join(format!("{name}.json"))
}

pub fn write(info: &InstanceInfo) -> Result<()> {
    let path = info_path(&info.pin_dir);
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    let body = serde_json::to_vec_pretty(info).context("serialising instance info")?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
}

pub fn read(pin_dir: &Path) -> Option<InstanceInfo> {
    let text = std::fs::read_to_string(info_path(pin_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn remove(pin_dir: &Path) {
    let _ = std::fs::remove_file(info_path(pin_dir));
}

/// Tells the running controller of `pin_dir` (if any, and if it takes the signal)
/// that a control command changed its maps, so it reports and saves at once
/// rather than at its next full pass.
pub fn notify_changed(pin_dir: &Path) {
    let Some(info) = read(pin_dir).filter(|i| i.notify_sigusr2 && alive(i.pid)) else {
        return;
    };
    let Ok(pid) = i32::try_from(info.pid) else {
        return;
    };
    // SAFETY: a signal the controller handles, to the pid its own runtime file names.
    unsafe {
        libc::kill(pid, libc::SIGUSR2);
    }
}

/// True when a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists, we just may not signal it.
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
