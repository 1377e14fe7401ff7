//! Whether we run as root (the lab needs it: XDP, network namespaces, apt).

use anyhow::{Result, bail};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with `why` and how to rerun unless we are root.
pub fn require_root(what: &str, why: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root because {why}; rerun it as root, e.g. \
             `sudo -E env \"PATH=$PATH\" {what}`"
        );
    }
    Ok(())
}
