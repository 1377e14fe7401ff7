//! A veth pair as a guard: created inside one namespace with its peer moved
//! straight into another, so the host's own namespace never sees either end;
//! deleted on drop (deleting one end deletes both).

use std::time::Duration;

use super::{
    cmd::{describe, ip_ok, run_bounded},
    netns,
};

/// One end of a veth pair to create.
#[derive(Clone, Copy, Debug)]
pub struct VethEnd<'a> {
    pub ns: &'a str,
    pub iface: &'a str,
    /// Fixed MAC; `None`: the kernel picks one.
    pub mac: Option<&'a str>,
}

/// A veth pair this process created and deletes on drop, unless a test deleted
/// it already or its namespace went first (which takes the pair with it).
#[derive(Debug)]
pub struct Veth {
    ns: String,
    iface: String,
    who: String,
}

impl Veth {
    /// Creates the pair `a` / `b`.
    pub fn create(a: VethEnd<'_>, b: VethEnd<'_>, who: &str) -> Self {
        add(a, b);
        Self {
            ns: a.ns.to_owned(),
            iface: a.iface.to_owned(),
            who: who.to_owned(),
        }
    }
}

impl Drop for Veth {
    /// Never panics; says on stderr what went wrong other than "already gone".
    fn drop(&mut self) {
        if !netns::exists(&self.ns) {
            return;
        }
        let out = run_bounded(
            Duration::from_secs(10),
            "ip",
            &["-n", &self.ns, "link", "del", "dev", &self.iface],
        );
        let gone = String::from_utf8_lossy(&out.stderr).contains("Cannot find device");
        if !out.status.success() && !gone {
            eprintln!(
                "{} deleting veth {} in {}: {}",
                self.who,
                self.iface,
                self.ns,
                describe(&out)
            );
        }
    }
}

/// The veth pair `a_iface` / `b_iface` with the given MACs, without a guard: it
/// lives as long as its namespaces (for a test that re-creates a link it deleted).
pub fn add_veth_pair(
    a_ns: &str,
    a_iface: &str,
    a_mac: &str,
    b_ns: &str,
    b_iface: &str,
    b_mac: &str,
) {
    add(
        VethEnd {
            ns: a_ns,
            iface: a_iface,
            mac: Some(a_mac),
        },
        VethEnd {
            ns: b_ns,
            iface: b_iface,
            mac: Some(b_mac),
        },
    );
}

fn add(a: VethEnd<'_>, b: VethEnd<'_>) {
    let mut args = vec!["-n", a.ns, "link", "add", a.iface];
    if let Some(mac) = a.mac {
        args.extend(["address", mac]);
    }
    args.extend(["type", "veth", "peer", "name", b.iface]);
    if let Some(mac) = b.mac {
        args.extend(["address", mac]);
    }
    args.extend(["netns", b.ns]);
    ip_ok(&args);
}
