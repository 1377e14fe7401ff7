//! A small runtime file per running controller (under /run/scan-guard), so
//! `scan-guard status` can tell attached-and-supervised from attached-and-orphaned.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::kernel::attachments::IfaceStatus;

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
    pub ifaces: Vec<IfaceStatus>,
    pub started_unix_s: u64,
    pub pin_dir: PathBuf,
    pub state_file: PathBuf,
    pub dry_run: bool,
    /// The controller takes SIGUSR2 as "the maps changed, look now" (older ones
    /// would die of it, so the CLI signals only when this says so).
    #[serde(default)]
    pub notify_sigusr2: bool,
}

impl InstanceInfo {
    /// The interfaces, with the summary fields derived from them: `iface` the
    /// names comma-separated, `mode` the one mode of all attached interfaces
    /// or `mixed`.
    pub fn set_interfaces(&mut self, status: Vec<IfaceStatus>) {
        self.iface = status
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut modes = status
            .iter()
            .filter(|s| s.attached)
            .map(|s| s.mode.as_str());
        self.mode = match modes.next() {
            None => String::new(),
            Some(first) if modes.all(|m| m == first) => first.to_owned(),
            Some(_) => "mixed".to_owned(),
        };
        self.ifaces = status;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_follows_the_interfaces() {
        let iface = |name: &str, attached, mode: &str| IfaceStatus {
            name: name.into(),
            attached,
            mode: mode.into(),
            bond: None,
        };
        let mut info = InstanceInfo {
            pid: 1,
            iface: String::new(),
            mode: String::new(),
            ifaces: Vec::new(),
            started_unix_s: 0,
            pin_dir: PathBuf::new(),
            state_file: PathBuf::new(),
            dry_run: false,
            notify_sigusr2: true,
        };
        info.set_interfaces(vec![
            iface("eth0", true, "native"),
            iface("eth1", false, ""),
        ]);
        assert_eq!(
            (info.iface.as_str(), info.mode.as_str()),
            ("eth0,eth1", "native")
        );
        info.set_interfaces(vec![
            iface("eth0", true, "native"),
            iface("eth1", true, "skb"),
        ]);
        assert_eq!(info.mode, "mixed");
        info.set_interfaces(vec![iface("eth0", false, "")]);
        assert_eq!(info.mode, "");
    }
}
