//! Indices of the per-CPU counters in the `STATS` map (one `[u64; STAT_COUNT]`
//! per CPU: a single lookup per packet).

use crate::flags::{INVALID_CLASSES, InvalidClass};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Packets = 0,
    Passed,
    DroppedBlocked,
    /// First invalid-class slot; the class number is added to it.
    DroppedInvalidBase,
    CountedInvalidBase = Stat::DroppedInvalidBase as u32 + INVALID_CLASSES as u32,
    /// Unparseable or truncated frames, passed (fail open).
    ParseFailed = Stat::CountedInvalidBase as u32 + INVALID_CLASSES as u32,
    /// Frames with neither IPv4 nor IPv6 inside.
    NotIp,
    /// Non-first fragments (carry no ports), passed unless the source is blocked.
    Fragments,
    Allowlisted,
    NewSources,
    /// The per-source map refused an insert (full and nothing evictable).
    TrackFailed,
    Events,
    EventsLost,
    AutoBlocks,
    AutoBlockFailed,
    /// Blocklist entries found expired (and removed) by the kernel.
    BlocksExpired,
    /// SYNs to closed ports dropped in stealth mode.
    DroppedStealth,
    Probes,
    /// First-contact records written for the slow-scan detector.
    Contacts,
    ContactsLost,
    /// Crossings not blocked: protected source, rate cap or full blocklist.
    AutoBlockSuppressed,
    /// First fragments too short for the TCP flags, dropped (RFC 1858).
    DroppedTinyFragment,
    /// Would-be probes to an address that is not one of the host's own (broadcast,
    /// multicast, forwarded): passed, never scored.
    NotLocal,
    /// Would-be probes that a socket of the host explains (a listener that opened
    /// since the last refresh, a reply to the host's own connection): passed.
    SocketExplained,
    /// Later fragments from a source whose tiny first fragment was dropped.
    DroppedFragment,
    /// A blocked source's drop decided by the per-CPU verdict cache.
    VerdictCacheHits,
    /// A source in a marked /16 the verdict cache could not decide.
    VerdictCacheMisses,
    /// A new source doing only what clients do (an OS-stack SYN to a listening
    /// port): passed without allocating per-source state.
    AdmittedUntracked,
    /// A new source with evidence beyond the CPU's new-state budget: not
    /// tracked in the kernel (its first contact still reported).
    OverBudget,
}

pub const STAT_COUNT: usize = Stat::OverBudget as usize + 1;

/// The per-CPU counter block.
pub type StatBlock = [u64; STAT_COUNT];

impl Stat {
    #[inline(always)]
    pub const fn dropped_invalid(class: InvalidClass) -> usize {
        Stat::DroppedInvalidBase as usize + class as usize
    }

    #[inline(always)]
    pub const fn counted_invalid(class: InvalidClass) -> usize {
        Stat::CountedInvalidBase as usize + class as usize
    }
}

/// Named counters (apart from the per-class ones), in index order, for userspace.
pub const NAMED: [(Stat, &str); 27] = [
    (Stat::Packets, "packets"),
    (Stat::Passed, "passed"),
    (Stat::DroppedBlocked, "dropped_blocked"),
    (Stat::ParseFailed, "parse_failed"),
    (Stat::NotIp, "not_ip"),
    (Stat::Fragments, "fragments"),
    (Stat::Allowlisted, "allowlisted"),
    (Stat::NewSources, "new_sources"),
    (Stat::TrackFailed, "track_failed"),
    (Stat::Events, "events"),
    (Stat::EventsLost, "events_lost"),
    (Stat::AutoBlocks, "auto_blocks"),
    (Stat::AutoBlockFailed, "auto_block_failed"),
    (Stat::BlocksExpired, "blocks_expired"),
    (Stat::DroppedStealth, "dropped_stealth"),
    (Stat::Probes, "probes"),
    (Stat::Contacts, "contacts"),
    (Stat::ContactsLost, "contacts_lost"),
    (Stat::AutoBlockSuppressed, "auto_block_suppressed"),
    (Stat::DroppedTinyFragment, "dropped_tiny_fragment"),
    (Stat::NotLocal, "not_local"),
    (Stat::SocketExplained, "socket_explained"),
    (Stat::DroppedFragment, "dropped_fragment"),
    (Stat::VerdictCacheHits, "verdict_cache_hits"),
    (Stat::VerdictCacheMisses, "verdict_cache_misses"),
    (Stat::AdmittedUntracked, "admitted_untracked"),
    (Stat::OverBudget, "over_budget"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_distinct_and_in_range() {
        let mut seen = [false; STAT_COUNT];
        for (s, _) in NAMED {
            assert!(!seen[s as usize]);
            seen[s as usize] = true;
        }
        for c in InvalidClass::ALL {
            for i in [Stat::dropped_invalid(c), Stat::counted_invalid(c)] {
                assert!(!seen[i], "{c:?}");
                seen[i] = true;
            }
        }
        assert!(
            seen.iter().all(|s| *s),
            "every slot has exactly one meaning"
        );
    }
}
