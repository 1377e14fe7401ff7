//! The kernel-side configuration record, written by the controller into the
//! single-entry `CONFIG` array at load (and on reload): no recompiling to tune.

use crate::flags::{INVALID_CLASSES, InvalidClass};

/// Policy bit: insert a blocklist entry in the kernel as soon as a source crosses
/// the threshold, without waiting for userspace.
pub const POLICY_AUTO_BLOCK: u32 = 1 << 0;
/// Policy bit: drop SYNs to TCP ports with no listener instead of letting the stack
/// answer with RST (stealth mode).
pub const POLICY_STEALTH: u32 = 1 << 1;

/// Policy bit: the allowlist has entries. Lets the packet path skip the allowlist
/// lookup entirely on hosts without one; kept in step by the controller.
pub const POLICY_ALLOWLIST: u32 = 1 << 2;

/// Policy bit: only traffic to the host's own unicast addresses (the `LOCAL_ADDRS`
/// set) is evidence; broadcast, multicast and forwarded traffic is passed unscored.
/// The controller sets it once it has written the host's addresses.
pub const POLICY_LOCAL_ONLY: u32 = 1 << 3;

/// Default tracking window: scores and sketches restart after this long.
pub const DEFAULT_WINDOW_NS: u64 = 30_000_000_000;
/// Default lifetime of a block inserted by the kernel.
pub const DEFAULT_BLOCK_TTL_NS: u64 = 600_000_000_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Length of the per-source window (ns).
    pub window_ns: u64,
    /// Expiry given to kernel auto-blocks (ns, 0 = never expires).
    pub block_ttl_ns: u64,
    /// Score at which a source is reported (and auto-blocked).
    pub score_threshold: u32,
    /// Distinct destination addresses (of ours) at which a source is reported.
    pub sweep_threshold: u32,
    /// Weight of a new destination port below 1024 (closed, or invalid flags).
    pub weight_privileged: u32,
    /// Weight of a new destination port from 1024 up (closed, or invalid flags).
    pub weight_unprivileged: u32,
    /// Extra weight when the port has no listener.
    pub weight_closed: u32,
    /// Extra weight when the packet carried invalid TCP flags.
    pub weight_invalid: u32,
    /// Lowest port of the host's ephemeral range: stray ACKs and UDP to ports at or
    /// above it are replies to the host's own connections, never evidence.
    pub ephemeral_port_min: u32,
    /// `POLICY_*` bits.
    pub policy: u32,
    /// Bit `c` set: drop packets of invalid class `c`; clear: count and pass.
    pub invalid_drop_mask: u32,
    /// Most sources the kernel blocks on its own per second (spoofing safety);
    /// 0 = no cap.
    pub max_auto_blocks_per_sec: u32,
    /// Key of the port sketch's hash (random per controller start).
    pub sketch_key: u32,
    /// IPv4 sources are scored (and auto-blocked) per prefix of this length
    /// (32: per address), unless the prefix holds an address that must be judged
    /// alone (`NO_AGGREGATE`).
    pub v4_source_prefix: u8,
    /// The same for IPv6 (64: one customer's or one host's usual allocation).
    pub v6_source_prefix: u8,
    /// Length of the IPv4 prefix the controller blocks once enough of its
    /// addresses are (`blocking.aggregate_ipv4_prefix`, /24): blocks of this
    /// length are hashed too, whoever made them. 32: none.
    pub v4_aggregate_prefix: u8,
    /// The same for IPv6 (128: none).
    pub v6_aggregate_prefix: u8,
    /// New per-source states one CPU may allocate per budget window
    /// (`fastpath::budget_per_window`); a new source beyond it is not tracked
    /// (its first contact still goes to the controller). 0: no budget.
    pub new_source_budget: u32,
    pub _pad: u32,
}

impl KernelConfig {
    pub const DEFAULT: KernelConfig = KernelConfig {
        window_ns: DEFAULT_WINDOW_NS,
        block_ttl_ns: DEFAULT_BLOCK_TTL_NS,
        score_threshold: 21,
        sweep_threshold: 8,
        weight_privileged: 2,
        weight_unprivileged: 1,
        weight_closed: 2,
        weight_invalid: 2,
        ephemeral_port_min: 32_768,
        policy: POLICY_AUTO_BLOCK,
        invalid_drop_mask: (1 << INVALID_CLASSES) - 1,
        max_auto_blocks_per_sec: 100,
        sketch_key: 0,
        // The program's own default is per address; the controller's is per /64
        // for IPv6 (`detection.ipv6_source_prefix`).
        v4_source_prefix: 32,
        v6_source_prefix: 128,
        v4_aggregate_prefix: 32,
        v6_aggregate_prefix: 128,
        new_source_budget: 0,
        _pad: 0,
    };

    #[inline(always)]
    pub const fn auto_block(&self) -> bool {
        self.policy & POLICY_AUTO_BLOCK != 0
    }

    #[inline(always)]
    pub const fn stealth(&self) -> bool {
        self.policy & POLICY_STEALTH != 0
    }

    #[inline(always)]
    pub const fn has_allowlist(&self) -> bool {
        self.policy & POLICY_ALLOWLIST != 0
    }

    #[inline(always)]
    pub const fn local_only(&self) -> bool {
        self.policy & POLICY_LOCAL_ONLY != 0
    }

    /// The prefix (in the 128-bit form) that `src`'s evidence is kept under.
    #[inline(always)]
    pub fn source_prefix(&self, src: &crate::addr::Addr) -> u32 {
        self.source_prefix_of(crate::addr::is_v4(src))
    }

    /// `source_prefix` for an IPv4 (mapped) or an IPv6 address.
    #[inline(always)]
    pub fn source_prefix_of(&self, v4: bool) -> u32 {
        mapped_prefix(v4, self.v4_source_prefix, self.v6_source_prefix)
    }

    /// The aggregate prefix length (128-bit form) of an IPv4 or IPv6 address.
    #[inline(always)]
    pub fn aggregate_prefix_of(&self, v4: bool) -> u32 {
        mapped_prefix(v4, self.v4_aggregate_prefix, self.v6_aggregate_prefix)
    }

    #[inline(always)]
    pub const fn drops(&self, class: InvalidClass) -> bool {
        self.invalid_drop_mask & (1 << class as u32) != 0
    }

    /// Weight of a probe to a port never seen before from this source in the window.
    /// A valid contact with a listening port weighs nothing: using the host's open
    /// services, however many, is never evidence on its own.
    #[inline(always)]
    pub const fn port_weight(&self, port: u16, listening: bool, invalid: bool) -> u32 {
        if listening && !invalid {
            return 0;
        }
        let mut w = if port < 1024 {
            self.weight_privileged
        } else {
            self.weight_unprivileged
        };
        if !listening {
            w += self.weight_closed;
        }
        if invalid {
            w += self.weight_invalid;
        }
        w
    }
}

/// A family's prefix length in the 128-bit form (IPv4 ones sit past `::ffff:0:0/96`).
#[inline(always)]
fn mapped_prefix(v4: bool, v4_len: u8, v6_len: u8) -> u32 {
    if v4 {
        crate::addr::V4_MAPPED_PREFIX_BITS + (v4_len as u32).min(32)
    } else {
        (v6_len as u32).min(128)
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}

const _: () = assert!(core::mem::size_of::<KernelConfig>() == 72);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_drop_every_invalid_class_and_auto_block() {
        let c = KernelConfig::default();
        for class in InvalidClass::ALL {
            assert!(c.drops(class), "{class:?}");
        }
        assert!(c.auto_block());
        assert!(!c.stealth());
    }

    #[test]
    fn weights_order_closed_privileged_highest() {
        let c = KernelConfig::default();
        let open_high = c.port_weight(8080, true, false);
        let open_low = c.port_weight(22, true, false);
        let closed_high = c.port_weight(8081, false, false);
        let closed_low = c.port_weight(23, false, false);
        assert_eq!((open_high, open_low), (0, 0));
        assert!(0 < closed_high && closed_high < closed_low);
        assert!(c.port_weight(23, false, true) > closed_low);
        assert!(
            c.port_weight(22, true, true) > 0,
            "invalid flags weigh on open ports too"
        );
    }

    #[test]
    fn a_few_open_ports_never_reach_the_threshold() {
        // A client of every open service, however many, stays below the line.
        let c = KernelConfig::default();
        assert_eq!(c.port_weight(443, true, false), 0);
        // Six closed privileged ports cross it.
        assert!(6 * c.port_weight(1, false, false) >= c.score_threshold);
    }
}
