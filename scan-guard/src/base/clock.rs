//! The kernel stamps everything with `bpf_ktime_get_coarse_ns`
//! (CLOCK_MONOTONIC_COARSE: a few ms resolution, much cheaper per packet than the
//! fine clock); these helpers read the same clock and translate its instants to
//! wall-clock time.

use std::time::{Duration, SystemTime};

/// Current CLOCK_MONOTONIC_COARSE time in ns, the time base of every kernel timestamp.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock exists on every supported kernel.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock time of a monotonic instant.
pub fn to_wall(mono_ns: u64) -> SystemTime {
    let now_mono = monotonic_ns();
    let now = SystemTime::now();
    if mono_ns <= now_mono {
        now - Duration::from_nanos(now_mono - mono_ns)
    } else {
        now + Duration::from_nanos(mono_ns - now_mono)
    }
}

/// RFC 3339 timestamp (UTC, microseconds) of a wall-clock time.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The kernel (monotonic, ns) expiry matching a wall-clock expiry; 0 stays "never".
pub fn mono_deadline(expires_unix_s: u64) -> u64 {
    if expires_unix_s == 0 {
        return 0;
    }
    let left = expires_unix_s.saturating_sub(unix_now());
    monotonic_ns()
        .saturating_add(left.saturating_mul(1_000_000_000))
        .max(1)
}

/// Last second RFC 3339 can write (9999-12-31T23:59:59Z).
const RFC3339_MAX_UNIX_S: u64 = 253_402_300_799;

/// RFC 3339 text of a Unix time in seconds (clamped to the year 9999).
pub fn rfc3339_unix(secs: u64) -> String {
    let secs = secs.min(RFC3339_MAX_UNIX_S);
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_future_times_are_clamped_not_a_panic() {
        assert_eq!(rfc3339_unix(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_unix(0), "1970-01-01T00:00:00Z");
    }
}
