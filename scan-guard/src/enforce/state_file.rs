//! The state file: blocks, offence history and operator allowlist entries, written
//! atomically (temp file, fsync, rename) so a crash never leaves half a file, and
//! read back at start. A corrupt file is kept aside as a backup, never fatal.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    pub version: u32,
    pub blocks: Vec<SavedBlock>,
    pub offences: Vec<SavedOffence>,
    /// Allowlist entries added with `scan-guard allow` (config entries are not saved).
    pub allows: Vec<String>,
    /// TCP ports seen listening recently (`detection.listener_memory`), so that
    /// after a restart their health checkers are not taken for probers. Absent in
    /// files written before it existed.
    #[serde(default)]
    pub listeners: Vec<SavedListener>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedListener {
    pub port: u16,
    pub last_unix_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBlock {
    pub prefix: String,
    pub since_unix_s: u64,
    /// 0 = never expires.
    pub expires_unix_s: u64,
    pub offences: u32,
    pub origin: String,
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedOffence {
    pub addr: String,
    pub count: u32,
    pub last_unix_s: u64,
}

/// Default state file of the instance protecting `iface`.
pub fn default_path(iface: &str) -> PathBuf {
    Path::new("/var/lib/scan-guard").join(format!("{iface}.state.json"))
}

/// Reads the state file. Missing: `None`. Unreadable or corrupt: a warning, the file
/// renamed to `<name>.corrupt-<unix time>` for inspection, and `None`.
pub fn load(path: &Path) -> Option<SavedState> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "cannot read state file {}: {e}; starting without it",
                path.display()
            );
            return None;
        }
    };
    // Invalid UTF-8 is as corrupt as invalid JSON: kept aside, never overwritten.
    match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(s) if s.version == STATE_VERSION => Some(s),
        Ok(s) => {
            keep_aside(path, &format!("unsupported version {}", s.version));
            None
        }
        Err(e) => {
            keep_aside(path, &e.to_string());
            None
        }
    }
}

fn keep_aside(path: &Path, why: &str) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut backup = path.as_os_str().to_owned();
    backup.push(format!(".corrupt-{stamp}"));
    let backup = PathBuf::from(backup);
    match std::fs::rename(path, &backup) {
        Ok(()) => tracing::warn!(
            "state file {} is unusable ({why}); kept as {} and starting without it",
            path.display(),
            backup.display()
        ),
        Err(e) => tracing::warn!(
            "state file {} is unusable ({why}) and could not be moved aside: {e}",
            path.display()
        ),
    }
}

/// Writes the state file atomically (mode 0600, directory 0700).
pub fn save(path: &Path, state: &SavedState) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(state).context("serialising state")?;
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            version: STATE_VERSION,
            blocks: vec![SavedBlock {
                prefix: "192.0.2.7".into(),
                since_unix_s: 10,
                expires_unix_s: 20,
                offences: 2,
                origin: "kernel".into(),
                kind: "syn".into(),
                reason: "port_score".into(),
            }],
            offences: vec![SavedOffence {
                addr: "192.0.2.7".into(),
                count: 2,
                last_unix_s: 10,
            }],
            allows: vec!["10.0.0.0/8".into()],
            listeners: vec![SavedListener {
                port: 443,
                last_unix_s: 1_700_000_000,
            }],
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sg-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_then_load_round_trips() {
        let d = tmpdir("rt");
        let p = d.join("sub/state.json");
        save(&p, &sample()).unwrap();
        assert_eq!(load(&p), Some(sample()));
        assert!(!d.join("sub/state.json.tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_from_before_listener_memory_still_loads() {
        let d = tmpdir("v1-old");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("state.json");
        std::fs::write(&p, r#"{"version":1,"blocks":[],"offences":[],"allows":[]}"#).unwrap();
        let s = load(&p).expect("loads");
        assert!(s.listeners.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_file_is_none() {
        assert_eq!(load(Path::new("/nonexistent/scan-guard/state.json")), None);
    }

    #[test]
    fn non_utf8_file_is_kept_aside_too() {
        let d = tmpdir("binary");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("state.json");
        std::fs::write(&p, [0xff, 0xfe, 0x00, 0x7b]).unwrap();
        assert_eq!(load(&p), None);
        assert!(!p.exists(), "moved aside, not left to be overwritten");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let d = tmpdir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("state.json");
        std::fs::write(&p, b"{\"version\": 1, \"blocks\": [tru").unwrap();
        assert_eq!(load(&p), None);
        assert!(!p.exists());
        let backups: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(backups.len(), 1);
        assert!(
            backups[0]
                .file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
