//! Operator commands that work on a running (or orphaned) instance from another
//! process, through its pinned maps: status, stats, list, block, unblock, allow,
//! disallow.

use std::{path::Path, time::Duration};

use anyhow::{Result, bail};
use scan_guard_common::{
    event::Suppression,
    flags::InvalidClass,
    state::BlockOrigin,
    stats::{NAMED, Stat},
};
use serde_json::{Value, json};

use crate::{
    base::cidr::{Cidr, format_duration},
    base::clock,
    base::error::usage,
    enforce::{
        enforcer::{self, Enforcer, Request, Verdict, cidr_of, kind_name},
        policy::Blocking,
    },
    kernel::attachments::IfaceStatus,
    kernel::instance,
    kernel::loader,
    kernel::maps::KernelMaps,
};

/// Control commands read root-only pins: say so up front instead of reporting
/// "not attached" for what is really "not allowed to look".
fn require_root() -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("scan-guard control commands must run as root: the pinned BPF maps are root-only");
    }
    Ok(())
}

/// Opens the instance's maps or explains why there is none.
pub fn open(pin_dir: &Path) -> Result<KernelMaps> {
    require_root()?;
    if !pin_dir
        .join(scan_guard_common::map_names::BLOCKLIST)
        .exists()
    {
        return Err(usage(format!(
            "no scan-guard instance at {} (start one with `scan-guard run --iface IFACE`, or pass the right --pin-dir)",
            pin_dir.display()
        )));
    }
    if let Some(why) = crate::kernel::loader::pins_of_other_layout(pin_dir) {
        return Err(usage(format!(
            "the instance at {} was made by a scan-guard with another map layout ({why}): restart it with this version (`scan-guard run` recreates its maps and restores its blocks)",
            pin_dir.display()
        )));
    }
    KernelMaps::open_pinned(pin_dir)
}

/// Kernel counters and map occupancy, as JSON.
pub fn stats_json(maps: &KernelMaps) -> Result<Value> {
    let s = maps.stats_total()?;
    let mut obj = serde_json::Map::new();
    for (stat, name) in NAMED {
        obj.insert(name.to_string(), s[stat as usize].into());
    }
    let mut dropped_invalid = 0u64;
    let mut by_class = serde_json::Map::new();
    for c in InvalidClass::ALL {
        let d = s[Stat::dropped_invalid(c)];
        dropped_invalid += d;
        by_class.insert(
            c.name().to_string(),
            json!({"dropped": d, "counted": s[Stat::counted_invalid(c)]}),
        );
    }
    obj.insert("dropped_invalid".into(), dropped_invalid.into());
    obj.insert("invalid_by_class".into(), Value::Object(by_class));
    obj.insert("tracked_sources".into(), maps.tracked_sources().into());
    obj.insert("blocked_sources".into(), maps.blocks()?.len().into());
    obj.insert("allowlist_entries".into(), maps.allows().len().into());
    Ok(Value::Object(obj))
}

pub fn stats(pin_dir: &Path, as_json: bool) -> Result<()> {
    let maps = open(pin_dir)?;
    let v = stats_json(&maps)?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    let Value::Object(obj) = v else { return Ok(()) };
    for (k, v) in obj {
        if k == "invalid_by_class" {
            if let Value::Object(classes) = v {
                for (c, d) in classes {
                    println!(
                        "{:<24} dropped {} counted {}",
                        format!("invalid {c}"),
                        d["dropped"],
                        d["counted"]
                    );
                }
            }
        } else {
            println!("{k:<24} {v}");
        }
    }
    Ok(())
}

pub fn status(pin_dir: &Path, as_json: bool) -> Result<()> {
    require_root()?;
    let attached = loader::is_attached(pin_dir);
    let info = instance::read(pin_dir).filter(|i| instance::alive(i.pid));
    // The controller's own view when it runs; otherwise what the pins say (a
    // link pinned for an interface that exists).
    let interfaces: Vec<IfaceStatus> = match &info {
        Some(i) => i.ifaces.clone(),
        None => loader::pinned_links(pin_dir)
            .into_iter()
            .map(|name| IfaceStatus {
                attached: loader::if_index(&name).is_ok(),
                name,
                mode: String::new(),
                bond: None,
            })
            .collect(),
    };
    let counts = if attached {
        open(pin_dir).ok().map(|m| stats_json(&m)).transpose()?
    } else {
        None
    };
    let uptime = info
        .as_ref()
        .map(|i| clock::unix_now().saturating_sub(i.started_unix_s));
    let v = json!({
        "attached": attached,
        "controller_running": info.is_some(),
        "pid": info.as_ref().map(|i| i.pid),
        "iface": info.as_ref().map(|i| i.iface.clone()),
        "mode": info.as_ref().map(|i| i.mode.clone()),
        "interfaces": interfaces,
        "dry_run": info.as_ref().map(|i| i.dry_run),
        "uptime_s": uptime,
        "pin_dir": pin_dir,
        "state_file": info.as_ref().map(|i| i.state_file.clone()),
        "packets": counts.as_ref().map(|c| c["packets"].clone()),
        "dropped_blocked": counts.as_ref().map(|c| c["dropped_blocked"].clone()),
        "dropped_invalid": counts.as_ref().map(|c| c["dropped_invalid"].clone()),
        "blocked_sources": counts.as_ref().map(|c| c["blocked_sources"].clone()),
        "tracked_sources": counts.as_ref().map(|c| c["tracked_sources"].clone()),
    });
    if as_json {
        println!("{v}");
    } else if !attached {
        println!("not attached (no instance pinned at {})", pin_dir.display());
    } else {
        match &info {
            Some(i) => println!(
                "attached to {} ({} mode), controller pid {} up {}{}",
                i.iface,
                i.mode,
                i.pid,
                format_duration(Duration::from_secs(uptime.unwrap_or(0))),
                if i.dry_run { ", dry run" } else { "" }
            ),
            None => println!(
                "attached, no controller running (the kernel keeps enforcing blocks and their expiry)"
            ),
        }
        for i in &interfaces {
            let how = match (i.attached, i.mode.as_str()) {
                (false, _) => "not attached (gone, or attaching failed)".to_owned(),
                (true, "") => "attached".to_owned(),
                (true, mode) => format!("attached, {mode} mode"),
            };
            let bond = i
                .bond
                .as_ref()
                .map(|b| format!(" (slave of bond {b}, which takes no XDP program)"))
                .unwrap_or_default();
            println!("  {:<16} {how}{bond}", i.name);
        }
        if let Some(c) = counts {
            println!(
                "packets {}  dropped: blocked {} invalid {}  blocked sources {}  tracked sources {}",
                c["packets"],
                c["dropped_blocked"],
                c["dropped_invalid"],
                c["blocked_sources"],
                c["tracked_sources"]
            );
        }
    }
    Ok(())
}

pub fn list(pin_dir: &Path, as_json: bool) -> Result<()> {
    let maps = open(pin_dir)?;
    let metas: std::collections::HashMap<_, _> = maps.metas().into_iter().collect();
    let mono_now = clock::monotonic_ns();
    let mut rows = Vec::new();
    for (addr, plen, entry) in maps.blocks()? {
        let c = Cidr::from_key(addr, plen);
        let m = metas.get(&enforcer::key_of(&c));
        let expires = match m {
            Some(m) if m.expires_unix_s == 0 => None,
            Some(m) => Some(m.expires_unix_s),
            None if entry.expires_ns == 0 => None,
            None => {
                Some(clock::unix_now() + entry.expires_ns.saturating_sub(mono_now) / 1_000_000_000)
            }
        };
        rows.push(json!({
            "addr": c.to_string(),
            "kind": kind_name(m.map_or(entry.kind, |m| m.kind)),
            "reason": m.map_or("", |m| m.reason()),
            "origin": BlockOrigin::from_u8(m.map_or(entry.origin, |m| m.origin)).map_or("unknown", BlockOrigin::name),
            "since": clock::rfc3339_unix(m.map_or_else(
                || clock::unix_now().saturating_sub(mono_now.saturating_sub(entry.created_ns) / 1_000_000_000),
                |m| m.since_unix_s,
            )),
            "expires": expires.map(clock::rfc3339_unix),
            "offences": m.map(|m| m.offences),
            "hits": entry.hits,
        }));
    }
    rows.sort_by(|a, b| a["addr"].as_str().cmp(&b["addr"].as_str()));
    if as_json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no blocked sources");
        return Ok(());
    }
    println!(
        "{:<28} {:<14} {:<9} {:<21} {:<21} {:>8}  reason",
        "source", "kind", "origin", "since", "expires", "hits"
    );
    for r in rows {
        println!(
            "{:<28} {:<14} {:<9} {:<21} {:<21} {:>8}  {}",
            r["addr"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["origin"].as_str().unwrap_or(""),
            r["since"].as_str().unwrap_or(""),
            r["expires"].as_str().unwrap_or("never"),
            r["hits"],
            r["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn block(
    pin_dir: &Path,
    target: &Cidr,
    ttl: Option<Duration>,
    reason: Option<&str>,
) -> Result<()> {
    let mut maps = open(pin_dir)?;
    // Without --ttl, the first escalation step the running config gives the kernel.
    let ttl = match ttl {
        Some(t) => t,
        None => Duration::from_nanos(maps.read_config()?.block_ttl_ns),
    };
    let ttl_opt = (!ttl.is_zero()).then_some(ttl);
    // The same door as every other block, with the rules the running instance
    // gave the kernel: its never-block set (PROTECTED) and, as the cap, the
    // blocklist's size.
    let mut enforcer = Enforcer::for_maps(&maps);
    let cfg = Blocking {
        max_blocks: maps.block_capacity(),
        ..Blocking::default()
    };
    let request = Request::Manual {
        prefix: *target,
        ttl: ttl_opt,
        reason: reason.unwrap_or("manual"),
    };
    match enforcer.block(&mut maps, request, &cfg)?.first() {
        Some(Verdict::Blocked { .. }) => {}
        Some(Verdict::Suppressed {
            why: Suppression::Protected,
        }) => bail!(
            "{target} overlaps the never-block set (the host's own addresses, gateways, resolvers and blocking.never_block; see `scan-guard status` and docs/config.md): not blocked"
        ),
        Some(Verdict::Suppressed { why }) => {
            bail!("{target} not blocked: {}", why.name())
        }
        other => bail!("{target} not blocked ({other:?})"),
    }
    instance::notify_changed(pin_dir);
    match ttl_opt {
        Some(t) => println!("blocked {target} for {}", format_duration(t)),
        None => println!("blocked {target} until unblocked"),
    }
    Ok(())
}

/// Lifts a block in the maps (record and kernel entry); false if there was none.
/// The running controller notices and reports `unblocked`.
pub fn unblock_maps(maps: &mut KernelMaps, target: &Cidr) -> Result<bool> {
    maps.lift(target)
}

pub fn unblock(pin_dir: &Path, target: &Cidr) -> Result<()> {
    let mut maps = open(pin_dir)?;
    if !unblock_maps(&mut maps, target)? {
        bail!("{target} is not blocked (see `scan-guard list`)");
    }
    instance::notify_changed(pin_dir);
    println!("unblocked {target}");
    Ok(())
}

pub fn allow(pin_dir: &Path, target: &Cidr) -> Result<()> {
    let mut maps = open(pin_dir)?;
    maps.insert_allow(&target.addr, target.prefix_len)?;
    instance::notify_changed(pin_dir);
    println!("allowed {target}: never inspected, never blocked");
    Ok(())
}

pub fn disallow(pin_dir: &Path, target: &Cidr) -> Result<()> {
    let mut maps = open(pin_dir)?;
    if !maps.remove_allow(&target.addr, target.prefix_len)? {
        bail!("{target} is not on the allowlist");
    }
    instance::notify_changed(pin_dir);
    println!("removed {target} from the allowlist");
    Ok(())
}

/// A block key as text (for messages).
pub fn describe(k: &scan_guard_common::meta::MetaKey) -> String {
    cidr_of(k).to_string()
}
