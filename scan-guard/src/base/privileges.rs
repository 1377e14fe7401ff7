//! Least privilege: once the program is loaded, attached and every map is open,
//! the controller works through file descriptors it already holds, so it gives up
//! all capabilities (and the ability to regain them).

use anyhow::{Context as _, Result};
use caps::CapSet;

/// Drops every capability from the effective, permitted and inheritable sets and
/// sets no_new_privs. The process keeps uid 0, so it can still write its
/// root-owned state file and remove its own pins on exit.
pub fn drop_all() -> Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS and constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).with_context(|| format!("clearing the {set:?} capability set"))?;
    }
    Ok(())
}

/// Keeps only `keep` (in every set, and as the bounding set, so that programs
/// this process runs as root get no more) and sets no_new_privs: the NAT-rule
/// watcher's privileges.
pub fn keep_only(keep: &[caps::Capability]) -> Result<()> {
    // What we do not hold (a service's bounding set) cannot be kept.
    let held = caps::read(None, CapSet::Permitted).context("reading the permitted set")?;
    let keep: caps::CapsHashSet = keep.iter().copied().filter(|c| held.contains(c)).collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS and constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).with_context(|| format!("setting the {set:?} set"))?;
    }
    Ok(())
}

/// Capabilities currently effective (for logs and tests).
pub fn effective() -> Vec<String> {
    caps::read(None, CapSet::Effective)
        .map(|s| s.into_iter().map(|c| c.to_string()).collect())
        .unwrap_or_default()
}
