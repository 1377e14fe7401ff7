//! [`Lab`]: the scene the tests play in, built from the guards of this module.
//!
//! Two namespaces (attacker and target) joined by a veth pair, or with a second
//! client a bridge in a switch namespace of its own; fixed MACs; addresses that
//! exist only there; no default route anywhere (checked); a lab directory under
//! /run with a private bpffs for the controller's pins. Every packet stays between
//! the lab's namespaces.
//!
//! Teardown is the guards' drops, in the order of [`Lab`]'s fields: processes
//! first (a controller still running detaches on SIGTERM), links, namespaces, the
//! bpffs, the lab directory; also when the test panicked, also halfway through
//! building the lab.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    bpffs::Bpffs,
    cmd::{describe, ip_ok, run_bounded},
    netns::{Netns, assert_no_default_route},
    process::{Processes, SPAWN_TIMEOUT},
    run_dir::RunDir,
    veth::{Veth, VethEnd},
};

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One end of the lab's link.
#[derive(Clone, Debug)]
pub struct Side {
    /// Network namespace name.
    pub ns: String,
    /// The veth end inside `ns`.
    pub iface: String,
    pub mac: &'static str,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Side {
    fn veth_end(&self) -> VethEnd<'_> {
        VethEnd {
            ns: &self.ns,
            iface: &self.iface,
            mac: Some(self.mac),
        }
    }
}

/// What [`Lab::with_options`] builds besides the two namespaces of [`Lab::new`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LabOptions {
    /// A second client namespace `sg-<id>-cli` (10.200.1.3/24, fd00:200::3/64, MAC
    /// ...:03). The attacker, the client and the target then each hang off a bridge
    /// in a switch namespace of its own (`sg-<id>-sw`, no addresses): a bridge inside
    /// the target namespace would answer for the target's addresses itself, and
    /// packets would bypass the protected interface and its XDP program.
    pub second_client: bool,
}

pub struct Lab {
    /// What the test called it (shows up in panic messages).
    pub tag: String,
    /// Unique per lab in this machine at this time: pid + counter, in hex.
    pub id: String,
    pub att: Side,
    pub tgt: Side,
    /// The second client ([`LabOptions::second_client`]): `sg-<id>-cli`, 10.200.1.3.
    pub cli: Option<Side>,
    /// The switch namespace holding the bridge when there is a second client.
    pub switch_ns: Option<String>,
    /// `/run/sg-test-<id>`: logs, captures, events.
    pub dir: PathBuf,
    /// `<dir>/bpffs`, a bpffs mounted for this lab only.
    pub bpffs: PathBuf,
    // The guards, dropped in this order after `Lab`'s own Drop.
    pub(super) procs: Processes,
    links: Vec<Veth>,
    namespaces: Vec<Netns>,
    _bpffs_mount: Bpffs,
    _run_dir: RunDir,
    /// Numbers the lab directory's files.
    pub(super) files: AtomicU32,
    /// Pin directories controllers were started with (their runtime files under
    /// /run/scan-guard are removed on drop, also after a SIGKILL).
    pub(super) pin_dirs: Mutex<Vec<PathBuf>>,
    /// Bound (seconds) of every process spawned from now on; [`SPAWN_TIMEOUT`]
    /// unless [`Lab::set_spawn_limit`] changed it.
    pub(super) spawn_limit_s: AtomicU64,
}

fn unique_id() -> String {
    let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
    assert!(n < 256, "more than 256 labs in one test process");
    // pid is at most 2^22 (6 hex digits) + 2 digits: interface names stay <= 15 chars.
    format!("{:x}{n:02x}", std::process::id())
}

impl Lab {
    /// Creates the namespaces `sg-<id>-att` and `sg-<id>-tgt`, the veth pair
    /// `sg<id>a` / `sg<id>t` with fixed MACs, 10.200.1.1/24 + fd00:200::1/64 on the
    /// attacker and .2 / ::2 on the target, all links up, and a private bpffs.
    pub fn new(tag: &str) -> Self {
        Self::with_options(tag, LabOptions::default())
    }

    /// Like [`new`](Self::new), with the extras `opts` asks for (see [`LabOptions`]).
    pub fn with_options(tag: &str, opts: LabOptions) -> Self {
        let id = unique_id();
        let who = format!("[lab {tag}]");
        let side = |name: &str, letter: char, mac: &'static str, last: u8| Side {
            ns: format!("sg-{id}-{name}"),
            iface: format!("sg{id}{letter}"),
            mac,
            v4: Ipv4Addr::new(10, 200, 1, last),
            v6: Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, last.into()),
        };
        let att = side("att", 'a', "02:53:47:00:00:01", 1);
        let tgt = side("tgt", 't', "02:53:47:00:00:02", 2);
        let cli = opts
            .second_client
            .then(|| side("cli", 'c', "02:53:47:00:00:03", 3));
        let switch_ns = opts.second_client.then(|| format!("sg-{id}-sw"));
        let endpoints: Vec<&Side> = [&att, &tgt].into_iter().chain(cli.as_ref()).collect();
        assert!(endpoints.iter().all(|s| s.iface.len() <= 15));

        // A panic from here on drops the guards made so far, which undo themselves.
        let run_dir = RunDir::create(&PathBuf::from(format!("/run/sg-test-{id}")), &who);
        let bpffs = Bpffs::mount(&run_dir.bpffs_path(), &who);
        let namespaces: Vec<Netns> = endpoints
            .iter()
            .map(|s| s.ns.as_str())
            .chain(switch_ns.as_deref())
            .map(|ns| Netns::create(ns, &who))
            .collect();
        let links = match &switch_ns {
            Some(sw) => build_switch(sw, &id, &endpoints, &who),
            None => vec![Veth::create(att.veth_end(), tgt.veth_end(), &who)],
        };
        for s in &endpoints {
            ip_ok(&["-n", &s.ns, "link", "set", "lo", "up"]);
            address_side(s);
        }
        for ns in &namespaces {
            assert_no_default_route(ns.name(), &who);
        }
        Lab {
            tag: tag.to_owned(),
            id,
            att,
            tgt,
            cli,
            switch_ns,
            dir: run_dir.path().to_path_buf(),
            bpffs: bpffs.path().to_path_buf(),
            procs: Processes::new(&who),
            links,
            namespaces,
            _bpffs_mount: bpffs,
            _run_dir: run_dir,
            files: AtomicU32::new(0),
            pin_dirs: Mutex::new(Vec::new()),
            spawn_limit_s: AtomicU64::new(SPAWN_TIMEOUT.as_secs()),
        }
    }

    /// The second client; panics unless the lab was built with one.
    pub fn client(&self) -> &Side {
        self.cli.as_ref().unwrap_or_else(|| {
            panic!(
                "[lab {}] has no second client: build it with LabOptions {{ second_client: true, .. }}",
                self.tag
            )
        })
    }

    /// The endpoint sides: attacker, target and (if any) the second client.
    pub(super) fn endpoints(&self) -> Vec<Side> {
        let mut v = vec![self.att.clone(), self.tgt.clone()];
        v.extend(self.cli.clone());
        v
    }

    /// The namespaces of the endpoints and the switch (all removed on drop).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.endpoints().into_iter().map(|s| s.ns).collect();
        v.extend(self.switch_ns.clone());
        v
    }

    /// A host behind the target, which routes for it: namespace `sg-<id>-far`,
    /// joined to the target by the veth pair `sg<id>f` (far side, 10.201.1.2/24) /
    /// `sg<id>r` (target side, 10.201.1.1/24). The target forwards between its
    /// links; the attacker and the far host reach each other through it by a route
    /// to the other's /24 only. No default route anywhere (checked). Torn down
    /// with the lab.
    pub fn add_far_host_behind_target(&mut self) -> Side {
        let far = Side {
            ns: format!("sg-{}-far", self.id),
            iface: format!("sg{}f", self.id),
            mac: "02:53:47:00:00:0f",
            v4: Ipv4Addr::new(10, 201, 1, 2),
            v6: "fd00:201::2".parse().expect("v6"),
        };
        let router_if = format!("sg{}r", self.id);
        let who = format!("[lab {}]", self.tag);
        self.namespaces.push(Netns::create(&far.ns, &who));
        let router_end = VethEnd {
            ns: &self.tgt.ns,
            iface: &router_if,
            mac: Some("02:53:47:00:00:0e"),
        };
        self.links
            .push(Veth::create(far.veth_end(), router_end, &who));
        ip_ok(&["-n", &far.ns, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &far.ns, "link", "set", &far.iface, "up"]);
        ip_ok(&[
            "-n",
            &far.ns,
            "addr",
            "add",
            "10.201.1.2/24",
            "dev",
            &far.iface,
        ]);
        ip_ok(&["-n", &self.tgt.ns, "link", "set", &router_if, "up"]);
        ip_ok(&[
            "-n",
            &self.tgt.ns,
            "addr",
            "add",
            "10.201.1.1/24",
            "dev",
            &router_if,
        ]);
        self.sysctl(&self.tgt.ns, "net.ipv4.ip_forward=1");
        ip_ok(&[
            "-n",
            &self.att.ns,
            "route",
            "add",
            "10.201.1.0/24",
            "via",
            "10.200.1.2",
        ]);
        ip_ok(&[
            "-n",
            &far.ns,
            "route",
            "add",
            "10.200.1.0/24",
            "via",
            "10.201.1.1",
        ]);
        for ns in [&far.ns, &self.att.ns, &self.tgt.ns] {
            assert_no_default_route(ns, &who);
        }
        far
    }

    /// The closing line of a test: its lab's tag and how long it took.
    pub fn report_passed(&self, t0: Instant) {
        eprintln!(
            "[{}] passed in {:.1} s",
            self.tag,
            t0.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (the guard would stop them next anyway): the runtime files
        // of a controller are only ours to remove once it has stopped.
        self.procs.stop_all();
        for pin_dir in self
            .pin_dirs
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            // Left behind by a controller that was killed; only ours (per pin dir).
            scan_guard::kernel::instance::remove(&pin_dir);
        }
    }
}

/// Gives a side's veth end its IPv4 /24 and IPv6 /64 (no DAD) and brings it up.
pub fn address_side(s: &Side) {
    ip_ok(&[
        "-n",
        &s.ns,
        "addr",
        "add",
        &format!("{}/24", s.v4),
        "dev",
        &s.iface,
    ]);
    ip_ok(&[
        "-n",
        &s.ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", s.v6),
        "dev",
        &s.iface,
        "nodad",
    ]);
    ip_ok(&["-n", &s.ns, "link", "set", &s.iface, "up"]);
}

/// The bridge `sg<id>br` in the switch namespace `sw` and one veth per endpoint,
/// each created inside its endpoint namespace with the peer (`sg<id>p<letter>`)
/// straight in the switch namespace, enslaved to the bridge.
fn build_switch(sw: &str, id: &str, endpoints: &[&Side], who: &str) -> Vec<Veth> {
    // The switch only forwards frames: no addresses, no IPv6 chatter of its own.
    let out = run_bounded(
        Duration::from_secs(10),
        "ip",
        &[
            "netns",
            "exec",
            sw,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    );
    if !out.status.success() {
        panic!("{who} sysctl in {sw}: {}", describe(&out));
    }
    let br = format!("sg{id}br");
    ip_ok(&[
        "-n",
        sw,
        "link",
        "add",
        "name",
        &br,
        "type",
        "bridge",
        "stp_state",
        "0",
    ]);
    ip_ok(&["-n", sw, "link", "set", &br, "up"]);
    let mut links = Vec::new();
    for s in endpoints {
        let letter = s.iface.chars().last().expect("iface name");
        let port = format!("sg{id}p{letter}");
        let port_end = VethEnd {
            ns: sw,
            iface: &port,
            mac: None,
        };
        links.push(Veth::create(s.veth_end(), port_end, who));
        ip_ok(&["-n", sw, "link", "set", &port, "master", &br]);
        ip_ok(&["-n", sw, "link", "set", &port, "up"]);
    }
    links
}
