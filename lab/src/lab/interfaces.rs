//! What sits on the lab's interfaces: addresses added after setup (more sources
//! for a side, many hosts behind the target) and the XDP programs attached.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use super::{
    cmd::ip_ok,
    topology::{Lab, Side},
};

impl Lab {
    /// Adds 10.200.1.`n`/24 for every `n` in `hosts` to the target's veth (so a host
    /// sweep from the attacker finds many addresses behind the protected interface)
    /// and returns them.
    pub fn add_target_v4(&self, hosts: RangeInclusive<u8>) -> Vec<Ipv4Addr> {
        self.add_v4(&self.tgt, hosts)
    }

    /// Adds 10.200.1.`n`/24 for every `n` in `hosts` to `side`'s veth (more source
    /// addresses for that side, e.g. a fresh one per attack) and returns them.
    pub fn add_v4(&self, side: &Side, hosts: RangeInclusive<u8>) -> Vec<Ipv4Addr> {
        let mut added = Vec::new();
        for n in hosts {
            let a = Ipv4Addr::new(10, 200, 1, n);
            assert!(
                self.endpoints().iter().all(|s| s.v4 != a),
                "[lab {}] {a} belongs to an endpoint",
                self.tag
            );
            ip_ok(&[
                "-n",
                &side.ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &side.iface,
            ]);
            added.push(a);
        }
        added
    }

    /// Adds fd00:200::`n` (n written in hex)/64 for every `n` in `hosts` to `side`'s
    /// veth (no duplicate address detection: usable at once) and returns them.
    pub fn add_v6(&self, side: &Side, hosts: RangeInclusive<u16>) -> Vec<Ipv6Addr> {
        let mut added = Vec::new();
        for n in hosts {
            let a = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, n);
            assert!(
                self.endpoints().iter().all(|s| s.v6 != a),
                "[lab {}] {a} belongs to an endpoint",
                self.tag
            );
            ip_ok(&[
                "-n",
                &side.ns,
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                &side.iface,
                "nodad",
            ]);
            added.push(a);
        }
        added
    }

    /// Ids of the XDP programs `ip -d link show` reports on `side`'s veth (one
    /// `prog/xdp id N` per attached program).
    pub fn xdp_prog_ids(&self, side: &Side) -> Vec<u32> {
        let text = self.link_show(side);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(3)
            .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
            .filter_map(|w| w[2].parse().ok())
            .collect()
    }

    /// `ip -d link show dev <iface>` inside `side`'s namespace.
    pub fn link_show(&self, side: &Side) -> String {
        ip_ok(&["-n", &side.ns, "-d", "link", "show", "dev", &side.iface])
    }
}
