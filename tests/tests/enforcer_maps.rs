//! The controller's blocking policy against the real kernel maps (loaded, not
//! attached): escalation, never-block, dry run, caps, prefix aggregation, the
//! reconcile loop and restoring saved state.

use std::time::Duration;

use scan_guard::{
    base::cidr::Cidr,
    cli::control,
    config::{Config, Dur},
    enforce::enforcer::{Change, Enforcer, Request, Verdict, entry_for, key_of, new_meta},
    enforce::state_file::{STATE_VERSION, SavedBlock, SavedState},
};
use scan_guard_common::{
    config::KernelConfig, event::Suppression, state::BlockOrigin, vocab::ScanKind,
};
use scan_guard_tests::harness::{Harness, addr};

/// One address as a source to block.
fn host(s: &str) -> Cidr {
    Cidr::from_key(addr(s), 128)
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("prefix")
}

fn blocks(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> = h
        .maps
        .blocks()
        .expect("blocks")
        .into_iter()
        .map(|(a, l, _)| Cidr::from_key(a, l).to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn repeat_offenders_get_longer_blocks() {
    let mut h = Harness::new(KernelConfig::default());
    let cfg = Config::default();
    let mut e = Enforcer::new(vec![]);
    let src = host("10.60.0.9");
    let mut ttls = Vec::new();
    for round in 0..3 {
        let v = e
            .block(
                &mut h.maps,
                Request::Detection {
                    src,
                    kind: Some(ScanKind::Syn),
                    reason: "test",
                },
                &cfg.blocking,
            )
            .expect("block");
        match &v[..] {
            [Verdict::Blocked { meta, .. }] => {
                assert_eq!(meta.offences, round + 1);
                ttls.push(Verdict::ttl_of(meta).expect("a lifetime"));
            }
            other => panic!("round {round}: {other:?}"),
        }
        // Lift it the way `scan-guard unblock` does, from "another process".
        control::unblock_maps(&mut h.maps, &cidr("10.60.0.9")).expect("unblock");
        let changes = e.reconcile(&mut h.maps, &cfg.blocking).expect("reconcile");
        assert!(
            matches!(changes[..], [Change::Unblocked(..)]),
            "{changes:?}"
        );
    }
    assert_eq!(
        ttls,
        vec![
            Duration::from_secs(600),
            Duration::from_secs(3600),
            Duration::from_secs(86_400)
        ]
    );
}

#[test]
fn never_block_dry_run_and_caps() {
    let mut h = Harness::new(KernelConfig::default());
    let mut cfg = Config::default();
    let mut e = Enforcer::new(vec![cidr("10.61.0.0/24")]);
    let v = e
        .block(
            &mut h.maps,
            Request::Detection {
                src: host("10.61.0.7"),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    assert_eq!(
        v,
        vec![Verdict::Suppressed {
            why: Suppression::Protected
        }]
    );
    cfg.blocking.dry_run = true;
    let v = e
        .block(
            &mut h.maps,
            Request::Detection {
                src: host("10.62.0.7"),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    assert!(matches!(v[..], [Verdict::WouldBlock { .. }]), "{v:?}");
    assert!(blocks(&h).is_empty(), "nothing blocked so far");

    // Rate cap: 3 per second.
    cfg.blocking.dry_run = false;
    cfg.blocking.max_new_blocks_per_sec = 3;
    let mut blocked = 0;
    let mut capped = 0;
    for i in 1..=10u8 {
        match &e
            .block(
                &mut h.maps,
                Request::Detection {
                    src: host(&format!("10.63.0.{i}")),
                    kind: Some(ScanKind::Syn),
                    reason: "t",
                },
                &cfg.blocking,
            )
            .expect("block")[..]
        {
            [Verdict::Blocked { .. }] => blocked += 1,
            [
                Verdict::Suppressed {
                    why: Suppression::RateLimited,
                },
            ] => capped += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((blocked, capped), (3, 7));

    // Size cap: 3 already in place, cap at 4.
    cfg.blocking.max_new_blocks_per_sec = 0;
    cfg.blocking.max_blocks = 4;
    let first = e
        .block(
            &mut h.maps,
            Request::Detection {
                src: host("10.64.0.1"),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    assert!(matches!(first[..], [Verdict::Blocked { .. }]));
    let second = e
        .block(
            &mut h.maps,
            Request::Detection {
                src: host("10.64.0.2"),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    assert_eq!(
        second,
        vec![Verdict::Suppressed {
            why: Suppression::BlocklistCap
        }]
    );
    assert_eq!(blocks(&h).len(), 4);
}

#[test]
fn enough_blocked_addresses_block_their_prefix() {
    let mut h = Harness::new(KernelConfig::default());
    let mut cfg = Config::default();
    cfg.blocking.aggregate_after = 3;
    let mut e = Enforcer::new(vec![]);
    for i in 1..=3u8 {
        let v = e
            .block(
                &mut h.maps,
                Request::Detection {
                    src: host(&format!("10.65.1.{i}")),
                    kind: Some(ScanKind::Syn),
                    reason: "t",
                },
                &cfg.blocking,
            )
            .expect("block");
        if i < 3 {
            assert_eq!(v.len(), 1);
        } else {
            assert!(
                matches!(&v[..], [_, Verdict::Blocked { prefix, .. }] if prefix.to_string() == "10.65.1.0/24"),
                "{v:?}"
            );
        }
    }
    for i in 1..=2u16 {
        e.block(
            &mut h.maps,
            Request::Detection {
                src: host(&format!("2001:db8:65::{i}")),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    }
    let v = e
        .block(
            &mut h.maps,
            Request::Detection {
                src: host("2001:db8:65::3"),
                kind: Some(ScanKind::Syn),
                reason: "t",
            },
            &cfg.blocking,
        )
        .expect("block");
    assert!(
        matches!(&v[..], [_, Verdict::Blocked { prefix, .. }] if prefix.to_string() == "2001:db8:65::/64"),
        "{v:?}"
    );
    assert!(blocks(&h).contains(&"10.65.1.0/24".to_string()));
}

#[test]
fn reconcile_expires_repairs_drift_and_adopts_kernel_blocks() {
    let mut h = Harness::new(KernelConfig::default());
    let cfg = Config::default();
    let mut e = Enforcer::new(vec![]);
    // A block that is already over, written as another process would.
    let mut old = new_meta(
        BlockOrigin::Manual,
        None,
        "old",
        Some(Duration::from_secs(60)),
        1,
    );
    old.since_unix_s -= 120;
    old.expires_unix_s -= 120;
    h.maps
        .put_meta(&key_of(&cidr("10.66.0.1")), &old)
        .expect("meta");
    // A block someone removed from the kernel behind our back (drift).
    e.block(
        &mut h.maps,
        Request::Detection {
            src: host("10.66.0.2"),
            kind: Some(ScanKind::Syn),
            reason: "t",
        },
        &cfg.blocking,
    )
    .expect("block");
    h.maps
        .remove_block(&addr("10.66.0.2"), 128)
        .expect("remove");
    // An entry nobody asked for.
    h.block("10.66.0.3", 32, 0);
    // A kernel auto-block (origin kernel, no record yet).
    let mut k = scan_guard::enforce::enforcer::entry_for(
        &cidr("10.66.0.4"),
        &new_meta(
            BlockOrigin::Kernel,
            Some(ScanKind::Syn),
            "",
            Some(Duration::from_secs(600)),
            1,
        ),
        5,
    );
    k.origin = BlockOrigin::Kernel as u8;
    h.maps
        .insert_block(&addr("10.66.0.4"), 128, &k)
        .expect("kernel entry");

    let changes = e.reconcile(&mut h.maps, &cfg.blocking).expect("reconcile");
    assert!(changes.iter().any(|c| matches!(c, Change::Expired(k, _) if Cidr::from_key(k.addr, k.prefix_len).to_string() == "10.66.0.1")), "{changes:?}");
    assert!(changes.iter().any(|c| matches!(c, Change::Adopted(k, _) if Cidr::from_key(k.addr, k.prefix_len).to_string() == "10.66.0.4")), "{changes:?}");
    assert_eq!(
        blocks(&h),
        vec!["10.66.0.2".to_string(), "10.66.0.4".to_string()]
    );
    // Idempotent: a second pass changes nothing.
    assert!(
        e.reconcile(&mut h.maps, &cfg.blocking)
            .expect("reconcile")
            .is_empty()
    );
}

#[test]
fn adoption_keeps_the_kernel_entry_hits_and_never_a_covering_prefix() {
    let mut h = Harness::new(KernelConfig::default());
    let cfg = Config::default();
    let mut e = Enforcer::new(vec![]);
    // A manual /24 with hits of its own covers both sources below.
    let manual = new_meta(
        BlockOrigin::Manual,
        None,
        "m",
        Some(Duration::from_secs(600)),
        1,
    );
    let net = cidr("10.68.0.0/24");
    h.maps
        .insert_block(&net.addr, net.prefix_len, &entry_for(&net, &manual, 40))
        .expect("covering prefix");
    let kernel_entry = |hits| {
        let host = cidr("10.68.0.1");
        let meta = new_meta(
            BlockOrigin::Kernel,
            Some(ScanKind::Syn),
            "",
            Some(Duration::from_secs(600)),
            1,
        );
        let mut k = entry_for(&host, &meta, hits);
        k.origin = BlockOrigin::Kernel as u8;
        k
    };
    h.maps
        .insert_block(&addr("10.68.0.1"), 128, &kernel_entry(5))
        .expect("kernel entry");
    let hits_of = |h: &Harness, a: &str| {
        let c = cidr(a);
        h.maps
            .blocks()
            .expect("blocks")
            .into_iter()
            .find(|(x, l, _)| *x == c.addr && *l == 128)
            .map(|(_, _, e)| e.hits)
    };
    e.block(
        &mut h.maps,
        Request::Kernel {
            src: host("10.68.0.1"),
            kind: Some(ScanKind::Syn),
            reason: "k",
        },
        &cfg.blocking,
    )
    .expect("adopt")
    .into_iter()
    .find(|v| matches!(v, Verdict::Blocked { .. }))
    .expect("adopted");
    assert_eq!(hits_of(&h, "10.68.0.1"), Some(5), "the kernel entry's hits");
    // No /128 of its own (gone before the event was handled): the /24's 40 hits
    // must not be taken for it.
    e.block(
        &mut h.maps,
        Request::Kernel {
            src: host("10.68.0.2"),
            kind: Some(ScanKind::Syn),
            reason: "k",
        },
        &cfg.blocking,
    )
    .expect("adopt")
    .into_iter()
    .find(|v| matches!(v, Verdict::Blocked { .. }))
    .expect("adopted");
    assert_eq!(
        hits_of(&h, "10.68.0.2"),
        Some(0),
        "hits borrowed from the /24"
    );
}

#[test]
fn between_full_passes_expiries_run_from_memory() {
    let mut h = Harness::new(KernelConfig::default());
    let cfg = Config::default();
    let mut e = Enforcer::new(vec![]);
    let short = new_meta(
        BlockOrigin::Manual,
        None,
        "short",
        Some(Duration::from_secs(1)),
        1,
    );
    h.maps
        .put_meta(&key_of(&cidr("10.67.0.1")), &short)
        .expect("meta");
    e.block(
        &mut h.maps,
        Request::Detection {
            src: host("10.67.0.2"),
            kind: Some(ScanKind::Syn),
            reason: "t",
        },
        &cfg.blocking,
    )
    .expect("block");
    let changes = e.reconcile(&mut h.maps, &cfg.blocking).expect("reconcile");
    assert!(
        changes.iter().any(|c| matches!(c, Change::Appeared(..))),
        "{changes:?}"
    );
    assert_eq!(e.block_count(), 2);
    assert!(
        e.expire_due(&mut h.maps).expect("expire").is_empty(),
        "expired too soon"
    );
    // Whole seconds: past the 1 s block's end whatever the sub-second start.
    std::thread::sleep(Duration::from_millis(2100));
    let changes = e.expire_due(&mut h.maps).expect("expire");
    assert!(
        matches!(changes.as_slice(), [Change::Expired(k, _)] if Cidr::from_key(k.addr, k.prefix_len).to_string() == "10.67.0.1"),
        "{changes:?}"
    );
    assert_eq!(blocks(&h), vec!["10.67.0.2".to_string()]);
    assert!(
        h.maps
            .metas()
            .iter()
            .all(|(k, _)| *k != key_of(&cidr("10.67.0.1"))),
        "the expired record is still in BLOCK_META"
    );
    assert_eq!(e.block_count(), 1);
    // The next full pass agrees: nothing left to change.
    assert!(
        e.reconcile(&mut h.maps, &cfg.blocking)
            .expect("reconcile")
            .is_empty()
    );
}

#[test]
fn saved_state_is_restored_and_expired_entries_are_skipped() {
    let mut h = Harness::new(KernelConfig::default());
    let mut cfg = Config::default();
    cfg.blocking.ttl = vec![Dur(Duration::from_secs(600))];
    let now = scan_guard::base::clock::unix_now();
    let saved = SavedState {
        version: STATE_VERSION,
        blocks: vec![
            SavedBlock {
                prefix: "10.67.0.0/24".into(),
                since_unix_s: now - 10,
                expires_unix_s: now + 600,
                offences: 2,
                origin: "manual".into(),
                kind: "-".into(),
                reason: "r".into(),
            },
            SavedBlock {
                prefix: "10.67.1.1".into(),
                since_unix_s: now - 900,
                expires_unix_s: now - 300,
                offences: 1,
                origin: "kernel".into(),
                kind: "syn".into(),
                reason: "r".into(),
            },
            SavedBlock {
                prefix: "2001:db8:67::1".into(),
                since_unix_s: now,
                expires_unix_s: 0,
                offences: 1,
                origin: "detector".into(),
                kind: "connect".into(),
                reason: "r".into(),
            },
        ],
        offences: vec![],
        allows: vec![],
        listeners: vec![],
    };
    let mut e = Enforcer::new(vec![]);
    assert_eq!(e.restore(&mut h.maps, &saved).expect("restore"), 2);
    assert_eq!(
        blocks(&h),
        vec!["10.67.0.0/24".to_string(), "2001:db8:67::1".to_string()]
    );
    let snap = e.snapshot(vec![]);
    assert_eq!(snap.blocks.len(), 2);
    assert!(
        snap.blocks
            .iter()
            .any(|b| b.kind == "connect" && b.expires_unix_s == 0)
    );
    // Restoring into maps that still hold them (a re-adopted instance) adds nothing.
    let mut again = Enforcer::new(vec![]);
    assert_eq!(again.restore(&mut h.maps, &saved).expect("restore"), 0);
    assert!(
        again
            .reconcile(&mut h.maps, &cfg.blocking)
            .expect("reconcile")
            .is_empty(),
        "no spurious events"
    );
}

#[test]
fn every_door_meets_the_never_block_set_and_the_cap() {
    let mut h = Harness::new(KernelConfig::default());
    let mut cfg = Config::default();
    let gateway = cidr("10.70.0.1");
    let mut e = Enforcer::new(vec![gateway]);
    // An operator's block of a prefix holding the gateway is refused, like a
    // CrowdSec decision's; the address next to it is not.
    let manual = |prefix: &str| Request::Manual {
        prefix: prefix.parse().expect("prefix"),
        ttl: Some(Duration::from_secs(60)),
        reason: "op",
    };
    for door in [
        manual("10.70.0.0/24"),
        Request::Decided {
            prefix: "10.70.0.0/16".parse().expect("prefix"),
            origin: BlockOrigin::Crowdsec,
            expires_unix_s: u64::MAX / 2,
            reason: "cs",
        },
        Request::Detection {
            src: gateway,
            kind: Some(ScanKind::Syn),
            reason: "scan",
        },
    ] {
        let v = e.block(&mut h.maps, door, &cfg.blocking).expect("block");
        assert_eq!(
            v,
            [Verdict::Suppressed {
                why: Suppression::Protected
            }],
            "{door:?}"
        );
    }
    assert!(blocks(&h).is_empty(), "{:?}", blocks(&h));
    let v = e
        .block(&mut h.maps, manual("10.70.0.2"), &cfg.blocking)
        .expect("block");
    assert!(matches!(v[..], [Verdict::Blocked { .. }]), "{v:?}");
    // The cap holds for the operator too.
    cfg.blocking.max_blocks = 1;
    let v = e
        .block(&mut h.maps, manual("10.70.0.3"), &cfg.blocking)
        .expect("block");
    assert_eq!(
        v,
        [Verdict::Suppressed {
            why: Suppression::BlocklistCap
        }]
    );
    // An operator's word replaces an existing record of the same prefix.
    let v = e
        .block(&mut h.maps, manual("10.70.0.2"), &cfg.blocking)
        .expect("block");
    assert!(matches!(v[..], [Verdict::Blocked { .. }]), "{v:?}");
}
