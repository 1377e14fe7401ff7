//! A network namespace as a guard: created by [`Netns::create`], deleted (with
//! its interfaces, addresses, routes and netfilter state) on drop.

use std::{path::Path, sync::Mutex, time::Duration};

use super::cmd::{describe, ip_ok, run_bounded};

/// Namespace create/delete through `ip netns` is serialised within the process
/// (`ip` sets up /run/netns on first use; parallel first uses can race).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Bound of deleting a namespace (one holding large netfilter sets takes a while).
const DELETE_LIMIT: Duration = Duration::from_secs(30);

/// A network namespace this process created and deletes on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// How teardown messages start (`[lab <tag>]`, `bench:`).
    who: String,
}

impl Netns {
    /// Creates the namespace `name`. One of that name can only be left over from a
    /// killed earlier run of a process with the same pid: it is deleted first.
    pub fn create(name: &str, who: &str) -> Self {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if exists(name) {
            ip_ok(&["netns", "del", name]);
        }
        ip_ok(&["netns", "add", name]);
        Self {
            name: name.to_owned(),
            who: who.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    /// Never panics (this runs in teardown, maybe while a test unwinds): a failure
    /// is said on stderr.
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let out = run_bounded(DELETE_LIMIT, "ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "{} deleting namespace {}: {}",
                self.who,
                self.name,
                describe(&out)
            );
        }
    }
}

/// True when a namespace named `name` exists (`ip netns` keeps them in /run/netns).
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Names of the network namespaces that currently exist.
pub fn netns_list() -> Vec<String> {
    let out = run_bounded(Duration::from_secs(10), "ip", &["netns", "list"]);
    assert!(out.status.success(), "ip netns list: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Panics if `ns` has an IPv4 or IPv6 default route: packets must have nowhere to
/// go but the lab's own links.
pub fn assert_no_default_route(ns: &str, who: &str) {
    for family in ["-4", "-6"] {
        let routes = ip_ok(&["-n", ns, family, "route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "{who} namespace {ns} has a default route ({family}): {routes}",
        );
    }
}
