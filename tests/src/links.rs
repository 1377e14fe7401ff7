//! More links between the lab's attacker and target: a host with several NICs
//! (each a veth pair of its own subnet) and bonds made of such links.
//!
//! The attacker can send through any of them from its one address on the first
//! link (`Lab::att.v4`), so one scanner reaches the target through every
//! interface; the target's answers all go back over the first link. Reverse-path
//! filtering is off in both namespaces for that.

use std::net::{IpAddr, Ipv4Addr};

use crate::lab::{Lab, Side, add_veth_pair, address_side, ip_ok};

/// Link `n` (2..=9): `sg<id>a<n>` / `sg<id>t<n>`, 10.200.<10+n>.1 and .2/24.
pub fn add_link(lab: &Lab, n: u8) -> (Side, Side) {
    assert!((2..=9).contains(&n), "link number {n} out of 2..=9");
    let mac = |side: u8| -> &'static str {
        Box::leak(format!("02:53:47:00:{n:02x}:{side:02x}").into_boxed_str())
    };
    let att = Side {
        ns: lab.att.ns.clone(),
        iface: format!("{}{n}", lab.att.iface),
        mac: mac(1),
        v4: Ipv4Addr::new(10, 200, 10 + n, 1),
        v6: format!("fd00:2{n:02}::1").parse().expect("v6"),
    };
    let tgt = Side {
        ns: lab.tgt.ns.clone(),
        iface: format!("{}{n}", lab.tgt.iface),
        mac: mac(2),
        v4: Ipv4Addr::new(10, 200, 10 + n, 2),
        v6: format!("fd00:2{n:02}::2").parse().expect("v6"),
    };
    assert!(att.iface.len() <= 15 && tgt.iface.len() <= 15);
    add_veth_pair(&att.ns, &att.iface, att.mac, &tgt.ns, &tgt.iface, tgt.mac);
    for s in [&att, &tgt] {
        no_rp_filter(lab, s);
        address_side(s);
    }
    (att, tgt)
}

/// Renames one end of a link (inside its namespace), as a server's NIC is
/// called, keeping its IPv4 address.
pub fn rename(side: &mut Side, name: &str) {
    ip_ok(&["-n", &side.ns, "link", "set", "dev", &side.iface, "down"]);
    ip_ok(&[
        "-n",
        &side.ns,
        "link",
        "set",
        "dev",
        &side.iface,
        "name",
        name,
    ]);
    ip_ok(&["-n", &side.ns, "link", "set", "dev", name, "up"]);
    side.iface = name.to_owned();
}

/// Deletes link `side` (both ends go with it).
pub fn remove_link(side: &Side) {
    ip_ok(&["-n", &side.ns, "link", "del", &side.iface]);
}

/// Replies to the attacker's first-link address leave by the first link, so
/// packets from it arriving on another link must not be dropped as spoofed.
pub fn no_rp_filter(lab: &Lab, s: &Side) {
    for scope in ["all", "default", s.iface.as_str(), "lo"] {
        lab.sysctl(&s.ns, &format!("net.ipv4.conf.{scope}.rp_filter=0"));
    }
}

/// A SYN scan from the attacker's first-link address through `via` (the
/// attacker's end of a link) of `ports` at `target`, one probe per port.
pub fn syn_scan_through(lab: &Lab, via: &Side, target: Ipv4Addr, ports: &str) {
    let src = lab.att.v4.to_string();
    let target = target.to_string();
    lab.nmap(
        &[
            "-sS",
            "-Pn",
            "-n",
            "--max-retries",
            "0",
            "--host-timeout",
            "10s",
            "-e",
            &via.iface,
            "-S",
            &src,
            "-p",
            ports,
            &target,
        ],
        std::time::Duration::from_secs(20),
    );
}

/// An HTTP GET from the attacker's first-link address to `target`: through the
/// link whose subnet holds `target`.
pub fn served_from_attacker(lab: &Lab, target: Ipv4Addr, port: u16) -> Result<(), String> {
    let src = lab.att.v4.to_string();
    lab.http_get_from(&lab.att.ns, Some(&src), IpAddr::V4(target), port)
}
