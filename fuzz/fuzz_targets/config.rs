//! `Config::parse` on arbitrary text (what `scan-guard run --config` and SIGHUP
//! read). Invariants for every file it accepts:
//! - errors are one non-empty message; nothing panics;
//! - numbers the detectors compare against are real numbers (not NaN);
//! - the file prints (`to_toml`, as `default-config` does) and reads back to the same
//!   configuration when its durations are whole seconds (the documented forms);
//! - the kernel record holds the configured window and TTL exactly (no silent
//!   truncation of the nanosecond counters);
//! - every escalation step can become a block record that the controller stores
//!   and reports as a `blocked` event (`new_meta`, `from_meta`, `with_ttl`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan_guard::{config::Config, enforcer, events::EventRecord};
use scan_guard_common::{meta::MetaKey, state::BlockOrigin};

fn whole_seconds(cfg: &Config) -> bool {
    let d = &cfg.detection;
    let b = &cfg.blocking;
    [
        d.window,
        d.distributed_window,
        cfg.slow_scan.memory,
        b.offence_memory,
    ]
    .iter()
    .chain(b.ttl.iter())
    .all(|x| x.0.subsec_nanos() == 0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.trim().is_empty(), "empty error message for {text:?}");
            return;
        }
    };
    let s = &cfg.slow_scan;
    for (name, v) in [
        ("benign_success", s.benign_success),
        ("scanner_success", s.scanner_success),
        ("threshold", s.threshold),
    ] {
        assert!(
            !v.is_nan(),
            "slow_scan.{name} = NaN accepted by validation (the slow-scan test compares against it)\n{text}"
        );
    }

    let printed = cfg.to_toml().expect("a valid configuration prints as TOML");
    if whole_seconds(&cfg) {
        let back = Config::parse(&printed)
            .unwrap_or_else(|e| panic!("printed configuration does not parse: {e}\n{printed}"));
        assert_eq!(
            back, cfg,
            "configuration changed through print + parse:\n{printed}"
        );
    }

    let k = cfg.kernel_config(32_768);
    assert_eq!(
        u128::from(k.window_ns),
        cfg.detection.window.0.as_nanos(),
        "detection.window = {:?} does not fit the kernel's nanosecond window",
        cfg.detection.window.0
    );
    assert_eq!(
        u128::from(k.block_ttl_ns),
        cfg.ttl_for_offence(1).as_nanos(),
        "blocking.ttl[0] = {:?} does not fit the kernel's nanosecond TTL",
        cfg.ttl_for_offence(1)
    );

    let key = MetaKey {
        prefix_len: 128,
        addr: [0; 16],
    };
    for n in 1..=cfg.blocking.ttl.len() as u32 + 1 {
        let ttl = cfg.ttl_for_offence(n);
        let meta = enforcer::new_meta(BlockOrigin::Detector, 0, "fuzz", Some(ttl), n);
        assert!(
            meta.expires_unix_s > meta.since_unix_s,
            "{meta:?} for ttl {ttl:?}"
        );
        let rec = EventRecord::from_meta("blocked", &key, &meta).with_ttl(Some(ttl), Some(n));
        let line = serde_json::to_string(&rec).expect("event serialises");
        assert!(!line.contains('\n'));
    }
});
