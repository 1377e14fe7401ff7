//! The program on every configured interface: one loaded program and one set of
//! maps, a pinned link per interface. Followed every tick, so that interfaces
//! that appear later are attached, interfaces that go away are reported and
//! re-attached when they return, and a changed list (SIGHUP) takes effect.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::{
    kernel::ifaces::{self, IfacePattern},
    kernel::loader::{self, AttachMode},
};

/// One interface as `status`, the metrics and the runtime file show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatus {
    pub name: String,
    /// The program is attached to it now.
    pub attached: bool,
    /// "native", "skb" or "adopted" (a link left by an earlier run, taken over);
    /// empty while not attached.
    pub mode: String,
    /// The bond this interface is a slave of, when the program sits on the
    /// slaves because the bond itself has no XDP support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<String>,
}

/// What changed in one pass, for the log and the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachChange {
    Attached {
        iface: String,
        mode: &'static str,
    },
    Readopted {
        iface: String,
    },
    Reattached {
        iface: String,
        mode: &'static str,
    },
    Gone {
        iface: String,
    },
    Detached {
        iface: String,
    },
    /// The bond has no XDP support: its slaves carry the program instead.
    BondOnSlaves {
        bond: String,
        slaves: Vec<String>,
    },
    Failed {
        iface: String,
        error: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    /// Index the program is attached to; `None` while it is not.
    ifindex: Option<u32>,
    mode: &'static str,
    bond: Option<String>,
    /// The last attempt at this index failed: not retried until the index
    /// changes (or the list is reloaded), so a refusing driver is not asked
    /// every second.
    failed_at: Option<u32>,
}

pub struct Attachments {
    patterns: Vec<IfacePattern>,
    mode: AttachMode,
    pin_dir: PathBuf,
    entries: BTreeMap<String, Entry>,
    /// Bonds whose own attach failed: their slaves carry the program.
    bonds_on_slaves: BTreeSet<String>,
}

impl Attachments {
    pub fn new(patterns: Vec<IfacePattern>, mode: AttachMode, pin_dir: PathBuf) -> Self {
        Self {
            patterns,
            mode,
            pin_dir,
            entries: BTreeMap::new(),
            bonds_on_slaves: BTreeSet::new(),
        }
    }

    pub fn patterns(&self) -> &[IfacePattern] {
        &self.patterns
    }

    /// A new interface list (SIGHUP): the next [`Self::follow`] attaches what it
    /// adds and detaches what it drops.
    pub fn set_patterns(&mut self, patterns: Vec<IfacePattern>) {
        self.patterns = patterns;
        self.bonds_on_slaves.clear();
        for e in self.entries.values_mut() {
            e.failed_at = None;
        }
    }

    /// The interfaces the program belongs on now (see [`resolve_targets`]).
    fn targets(&self) -> BTreeMap<String, Option<String>> {
        let matched = ifaces::matching(&self.patterns, &ifaces::system_interfaces());
        resolve_targets(matched, ifaces::bond_slaves, &self.bonds_on_slaves)
    }

    /// Brings the attachments in line with the list and the interfaces there
    /// are now. Never fails as a whole: a refused interface is reported
    /// ([`AttachChange::Failed`]) and the others go on.
    pub fn follow(&mut self, ebpf: &mut aya::Ebpf) -> Vec<AttachChange> {
        let mut changes = Vec::new();
        // Two rounds at most: a bond that refuses XDP turns into its slaves.
        for _ in 0..2 {
            let targets = self.targets();
            let mut retry = false;
            for (iface, bond) in &targets {
                if let Some(c) = self.follow_one(ebpf, iface, bond.clone(), &mut retry) {
                    changes.push(c);
                }
            }
            if !retry {
                self.release_untargeted(&targets, &mut changes);
                break;
            }
        }
        changes
    }

    fn follow_one(
        &mut self,
        ebpf: &mut aya::Ebpf,
        iface: &str,
        bond: Option<String>,
        bond_refused: &mut bool,
    ) -> Option<AttachChange> {
        let now = loader::if_index(iface).ok();
        let known = self.entries.get(iface).cloned();
        if let Some(e) = &known
            && (e.ifindex == now || (now.is_some() && e.failed_at == now))
        {
            return None;
        }
        let Some(idx) = now else {
            // Listed a moment ago and gone now: the next pass sees it.
            return None;
        };
        let is_bond = bond.is_none() && ifaces::bond_slaves(iface).is_some();
        // A bond is tried natively first (skb mode asked for: as asked): where its
        // slaves' drivers cannot run XDP under it, its slaves carry the program.
        let mode = match (is_bond, self.mode) {
            (true, AttachMode::Auto) => AttachMode::Native,
            (_, m) => m,
        };
        // Known and not refused before: it was attached and went away (or was
        // recreated between two passes).
        let returned = known.as_ref().is_some_and(|e| e.failed_at.is_none());
        // A link that died with its interface is replaced by a new one there.
        let result =
            loader::attach(ebpf, iface, mode, &self.pin_dir).map(|a| (a.mode, a.readopted));
        match result {
            Ok((mode, readopted)) => {
                self.entries.insert(
                    iface.to_owned(),
                    Entry {
                        ifindex: Some(idx),
                        mode,
                        bond,
                        failed_at: None,
                    },
                );
                let iface = iface.to_owned();
                Some(if readopted {
                    AttachChange::Readopted { iface }
                } else if returned {
                    AttachChange::Reattached { iface, mode }
                } else {
                    AttachChange::Attached { iface, mode }
                })
            }
            Err(e) if is_bond => {
                self.bonds_on_slaves.insert(iface.to_owned());
                self.entries.remove(iface);
                *bond_refused = true;
                let slaves = ifaces::bond_slaves(iface).unwrap_or_default();
                tracing::info!(
                    "bond {iface} takes no XDP program ({e:#}); attaching to its slaves instead"
                );
                Some(AttachChange::BondOnSlaves {
                    bond: iface.to_owned(),
                    slaves,
                })
            }
            Err(e) => {
                self.entries.insert(
                    iface.to_owned(),
                    Entry {
                        ifindex: None,
                        mode: "",
                        bond,
                        failed_at: Some(idx),
                    },
                );
                Some(AttachChange::Failed {
                    iface: iface.to_owned(),
                    error: format!("{e:#}"),
                })
            }
        }
    }

    /// Interfaces attached before that are no target now: gone from the system
    /// (reported, re-attached when they return) or dropped from the list, or
    /// released from a bond (detached). Links pinned by an earlier run for
    /// interfaces of no target are released too.
    fn release_untargeted(
        &mut self,
        targets: &BTreeMap<String, Option<String>>,
        changes: &mut Vec<AttachChange>,
    ) {
        let mut drop_entries = Vec::new();
        for (iface, e) in &mut self.entries {
            if targets.contains_key(iface) {
                continue;
            }
            let exists = loader::if_index(iface).is_ok();
            let still_meant = self.patterns.iter().any(|p| p.matches(iface)) || e.bond.is_some();
            if !exists && still_meant {
                if e.ifindex.take().is_some() {
                    e.failed_at = None;
                    changes.push(AttachChange::Gone {
                        iface: iface.clone(),
                    });
                }
                continue;
            }
            drop_entries.push(iface.clone());
        }
        for iface in drop_entries {
            self.entries.remove(&iface);
            self.release(&iface, changes);
        }
        for iface in loader::pinned_links(&self.pin_dir) {
            let meant =
                self.patterns.iter().any(|p| p.matches(&iface)) || targets.contains_key(&iface);
            if !self.entries.contains_key(&iface) && !meant {
                self.release(&iface, changes);
            }
        }
    }

    fn release(&self, iface: &str, changes: &mut Vec<AttachChange>) {
        match loader::detach_iface(&self.pin_dir, iface) {
            Ok(()) => changes.push(AttachChange::Detached {
                iface: iface.to_owned(),
            }),
            Err(e) => changes.push(AttachChange::Failed {
                iface: iface.to_owned(),
                error: format!("detaching: {e:#}"),
            }),
        }
    }

    /// Every interface the program is on or belongs on, sorted by name.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.entries
            .iter()
            .map(|(name, e)| IfaceStatus {
                name: name.clone(),
                attached: e.ifindex.is_some(),
                mode: if e.ifindex.is_some() {
                    e.mode.to_owned()
                } else {
                    String::new()
                },
                bond: e.bond.clone(),
            })
            .collect()
    }

    /// True when the program is attached to at least one interface.
    pub fn any_attached(&self) -> bool {
        self.entries.values().any(|e| e.ifindex.is_some())
    }
}

/// The interfaces the program belongs on, each with the bond it stands in for
/// (when it does), from the interfaces the list matches. A matched bond covers
/// its slaves: they are not attached on their own too (the kernel refuses a
/// program under a bond that has one); a bond in `bonds_on_slaves` (its own
/// attach failed) is replaced by its slaves.
pub fn resolve_targets(
    matched: BTreeSet<String>,
    slaves_of: impl Fn(&str) -> Option<Vec<String>>,
    bonds_on_slaves: &BTreeSet<String>,
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut covered = BTreeSet::new();
    for name in &matched {
        if let Some(slaves) = slaves_of(name) {
            if bonds_on_slaves.contains(name) {
                for s in &slaves {
                    out.insert(s.clone(), Some(name.clone()));
                }
            } else {
                out.insert(name.clone(), None);
            }
            covered.extend(slaves);
            covered.insert(name.clone());
        }
    }
    for name in matched {
        if !covered.contains(&name) {
            out.insert(name, None);
        }
    }
    out
}

/// Logs one change the way operators grep for it ("attached", "is gone",
/// "re-attached", "re-adopted").
pub fn log_change(change: &AttachChange) {
    match change {
        AttachChange::Attached { iface, mode } => {
            tracing::info!(iface = %iface, mode = *mode, "attached");
        }
        AttachChange::Readopted { iface } => {
            tracing::info!(iface = %iface, "re-adopted the instance left attached; its maps and blocks are kept");
        }
        AttachChange::Reattached { iface, mode } => {
            tracing::info!(iface = %iface, mode = *mode, "interface is back; re-attached");
        }
        AttachChange::Gone { iface } => {
            tracing::warn!("interface {iface} is gone; will re-attach when it returns");
        }
        AttachChange::Detached { iface } => {
            tracing::info!(iface = %iface, "no longer configured; detached");
        }
        AttachChange::BondOnSlaves { bond, slaves } => {
            tracing::info!(bond = %bond, slaves = %slaves.join(","), "the bond takes no XDP program; its slaves carry it");
        }
        AttachChange::Failed { iface, error } => {
            tracing::error!("attaching to {iface}: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn slaves(name: &str) -> Option<Vec<String>> {
        (name == "bond0").then(|| vec!["eth0".to_owned(), "eth1".to_owned()])
    }

    #[test]
    fn a_bond_covers_its_slaves_even_when_a_glob_matches_them() {
        let t = resolve_targets(set(&["bond0", "eth0", "eth1", "eth2"]), slaves, &set(&[]));
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [("bond0".to_owned(), None), ("eth2".to_owned(), None)]
        );
    }

    #[test]
    fn a_bond_without_xdp_is_replaced_by_its_slaves() {
        let t = resolve_targets(set(&["bond0", "eth2"]), slaves, &set(&["bond0"]));
        let bond = Some("bond0".to_owned());
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [
                ("eth0".to_owned(), bond.clone()),
                ("eth1".to_owned(), bond),
                ("eth2".to_owned(), None)
            ]
        );
    }

    #[test]
    fn plain_interfaces_stand_for_themselves() {
        let t = resolve_targets(set(&["eth0", "eth2"]), slaves, &set(&[]));
        assert_eq!(t.len(), 2);
        assert!(t.values().all(Option::is_none));
    }
}
