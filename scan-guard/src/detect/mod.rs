//! Userspace detection on top of the kernel's evidence: what kind of scan a
//! source runs, slow scans, and hints of distributed scans.

pub mod classify;
pub mod correlate;
pub mod slow_scan;
