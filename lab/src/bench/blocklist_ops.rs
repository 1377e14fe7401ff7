//! Part 5: putting N blocks (distinct IPv4 hosts) in place: scan-guard through
//! `KernelMaps::insert_block` and through the controller's own path (records in
//! BLOCK_META, then `Enforcer::reconcile` writes the kernel entries), and the same
//! set loaded into an nftables set and an ipset inside a lab namespace.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration, time::Instant};

use scan_guard::{
    config::Config,
    enforce::enforcer::{Enforcer, entry_for, new_meta},
    kernel::loader,
    kernel::maps::KernelMaps,
};
use scan_guard_common::{addr::from_v4, meta::MetaKey, state::BlockOrigin};

use super::cost::{Rng, block_entry};
use super::{
    machine::have,
    netns::BenchLab,
    results::{BlocklistOps, OpRow},
    sizes::Sizes,
};
use crate::lab::describe;

/// `n` distinct host addresses outside 10.0.0.0/8.
fn hosts(n: usize) -> Vec<[u8; 4]> {
    let mut rng = Rng(0xb10c);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = (rng.next_u64() as u32).to_be_bytes();
        if a[0] == 10 || a[0] == 0 || a[0] >= 224 || !seen.insert(a) {
            continue;
        }
        out.push(a);
    }
    out
}

fn fresh_maps(capacity: u32) -> (aya::Ebpf, KernelMaps) {
    let mut ebpf = loader::load_with(None, Some(capacity))
        .unwrap_or_else(|e| panic!("loading scan-guard: {e:#}"));
    let maps = KernelMaps::take(&mut ebpf).expect("typed maps");
    (ebpf, maps)
}

fn op(name: &str, secs: f64, n: usize, note: &str) -> OpRow {
    OpRow {
        name: name.into(),
        secs,
        us_per_entry: secs * 1e6 / n.max(1) as f64,
        note: note.into(),
    }
}

pub fn run(sizes: &Sizes) -> BlocklistOps {
    let n = sizes.ops_entries as usize;
    let set = hosts(n);
    let capacity = (sizes.ops_entries + sizes.ops_entries / 4).max(16);
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // 1. Kernel entries only, one syscall per block.
    {
        let (_ebpf, mut maps) = fresh_maps(capacity);
        let t = Instant::now();
        for a in &set {
            maps.insert_block(&from_v4(*a), 128, &block_entry(128))
                .expect("insert_block");
        }
        rows.push(op(
            "scan-guard: KernelMaps::insert_block",
            t.elapsed().as_secs_f64(),
            n,
            "kernel entries only: the IPv4 hash map (one bpf() call per block) and the presence word of its /16 (read, written when the bit is new)",
        ));
    }

    // 2. The controller's path: desired state, then reconcile (and a second,
    //    steady-state reconcile: what every 1 s tick costs with N blocks).
    {
        let (_ebpf, mut maps) = fresh_maps(capacity);
        let cfg = Config::default();
        let t = Instant::now();
        for a in &set {
            let key = MetaKey {
                prefix_len: 128,
                addr: from_v4(*a),
            };
            let meta = new_meta(
                BlockOrigin::Manual,
                None,
                "bench",
                Some(Duration::from_secs(3600)),
                1,
            );
            maps.put_meta(&key, &meta).expect("put_meta");
        }
        let records = t.elapsed().as_secs_f64();
        let mut enforcer = Enforcer::new(Vec::new());
        let t = Instant::now();
        let changes = enforcer
            .reconcile(&mut maps, &cfg.blocking)
            .expect("reconcile");
        let first = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let again = enforcer
            .reconcile(&mut maps, &cfg.blocking)
            .expect("reconcile");
        let steady = t.elapsed().as_secs_f64();
        // Between full passes the controller only runs the expiry check.
        let t = Instant::now();
        let expired = enforcer.expire_due(&mut maps).expect("expire_due");
        let between = t.elapsed().as_secs_f64();
        assert!(expired.is_empty(), "{} blocks expired early", expired.len());
        // A kernel auto-block adopted (its event handled) with N blocks in place.
        let kernel_src = from_v4([10, 99, 0, 1]);
        let host = scan_guard::base::cidr::Cidr::from_key(kernel_src, 128);
        let mut entry = entry_for(
            &host,
            &new_meta(
                BlockOrigin::Kernel,
                None,
                "",
                Some(Duration::from_secs(600)),
                1,
            ),
            3,
        );
        entry.origin = BlockOrigin::Kernel as u8;
        maps.insert_block(&kernel_src, 128, &entry)
            .expect("kernel entry");
        let t = Instant::now();
        let request = scan_guard::enforce::enforcer::Request::Kernel {
            src: scan_guard::base::cidr::Cidr::from_key(kernel_src, 128),
            kind: None,
            reason: "bench",
        };
        let adopted = enforcer
            .block(&mut maps, request, &cfg.blocking)
            .expect("adopt");
        let adopt = t.elapsed().as_secs_f64();
        assert!(
            matches!(
                adopted.first(),
                Some(scan_guard::enforce::enforcer::Verdict::Blocked { .. })
            ),
            "the kernel block was not adopted: {adopted:?}"
        );
        maps.remove_block(&kernel_src, 128).expect("remove");
        let in_kernel = maps.blocks().expect("blocks").len();
        assert_eq!(in_kernel, n, "reconcile left {in_kernel} of {n} blocks");
        assert!(again.is_empty(), "second reconcile changed {}", again.len());
        rows.push(op(
            "scan-guard: records (BLOCK_META put_meta)",
            records,
            n,
            "the desired state, as `scan-guard block` writes it",
        ));
        rows.push(op(
            "scan-guard: first reconcile",
            first,
            n,
            &format!(
                "reads both maps, writes {n} kernel entries ({} changes reported)",
                changes.len()
            ),
        ));
        rows.push(op(
            "scan-guard: load + reconcile",
            records + first,
            n,
            "records plus first reconcile",
        ));
        rows.push(op(
            "scan-guard: steady-state reconcile",
            steady,
            n,
            "no changes: what a full pass costs (every 30 s, and after a control command)",
        ));
        rows.push(OpRow {
            name: "scan-guard: adopt one kernel auto-block".into(),
            secs: adopt,
            us_per_entry: adopt * 1e6,
            note: format!("one lookup of its entry, with {n} blocks in place"),
        });
        rows.push(op(
            "scan-guard: tick between full passes",
            between,
            n,
            &format!(
                "expiry check from memory: the other 29 of 30 ticks ({:.0}x cheaper than a full pass)",
                steady / between.max(1e-9)
            ),
        ));
    }

    // 3. nftables set and ipset in a lab namespace (their tables are per namespace).
    let lab = BenchLab::new();
    if have("nft") {
        let mut text = String::from(
            "table ip sgbench {\n  set blocked {\n    type ipv4_addr\n    size 1048576\n    elements = { ",
        );
        for (i, a) in set.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{}", Ipv4Addr::from(*a));
        }
        text.push_str(
            " }\n  }\n  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n    ip saddr @blocked drop\n  }\n}\n",
        );
        let file = lab.file("blocks.nft");
        std::fs::write(&file, text).expect("writing blocks.nft");
        let t = Instant::now();
        let out = lab.exec(
            &lab.t.ns,
            Duration::from_secs(300),
            &["nft", "-f", &file.to_string_lossy()],
        );
        let secs = t.elapsed().as_secs_f64();
        if out.status.success() {
            rows.push(op(
                "nftables: nft -f (set + rule)",
                secs,
                n,
                "one file, one transaction; includes starting nft and parsing",
            ));
        } else {
            notes.push(format!("nftables: failed: {}", describe(&out)));
        }
    } else {
        notes.push("nftables: skipped, nft is not installed".into());
    }
    if have("ipset") {
        let mut text = format!("create sgbench hash:ip family inet maxelem {capacity}\n");
        for a in &set {
            let _ = writeln!(text, "add sgbench {}", Ipv4Addr::from(*a));
        }
        let file = lab.file("blocks.ipset");
        std::fs::write(&file, text).expect("writing blocks.ipset");
        let t = Instant::now();
        let out = lab.exec(
            &lab.t.ns,
            Duration::from_secs(300),
            &[
                "sh",
                "-c",
                &format!("ipset restore < '{}'", file.to_string_lossy()),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        if out.status.success() {
            rows.push(op(
                "ipset: ipset restore (hash:ip)",
                secs,
                n,
                "one file; includes starting ipset and parsing",
            ));
        } else {
            notes.push(format!("ipset: failed: {}", describe(&out)));
        }
    } else {
        notes.push("ipset: skipped, ipset is not installed (Debian package ipset)".into());
    }
    drop(lab);
    notes.push(format!(
        "{n} distinct IPv4 host addresses; scan-guard times are for this process's bpf() \
         calls (no process start), the nft and ipset times include starting the tool"
    ));
    BlocklistOps {
        entries: sizes.ops_entries,
        rows,
        notes,
    }
}
