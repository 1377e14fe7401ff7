//! Ring-buffer records as the controller reads them: `ScanEvent::from_bytes` and
//! `Contact::from_bytes` on arbitrary bytes, then what the controller does with
//! them. Invariants: a record is parsed exactly when it is long enough, and its
//! bytes round-trip; the port sample never exceeds its array; the JSON event line
//! (`EventRecord::from_kernel`) is one line of valid JSON with the documented keys;
//! the distributed-scan correlator and the slow-scan test (TRW) accept any stream
//! of records without panicking, and TRW's findings are consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan_guard::{
    config::SlowScan,
    detector::{Correlator, Trw},
    events::EventRecord,
};
use scan_guard_common::{
    config::KernelConfig,
    event::{CONTACT_SIZE, Contact, SCAN_EVENT_SIZE, ScanEvent, Suppression},
    state::{PORT_SAMPLES, Trigger},
};

const KEYS: [&str; 8] = [
    "ts", "event", "src", "kind", "ports", "probes", "score", "origin",
];

fuzz_target!(|data: &[u8]| {
    match ScanEvent::from_bytes(data) {
        None => assert!(data.len() < SCAN_EVENT_SIZE),
        Some(ev) => {
            assert!(data.len() >= SCAN_EVENT_SIZE);
            // SAFETY: ScanEvent is repr(C) plain data of exactly SCAN_EVENT_SIZE bytes
            // without implicit padding (checked at compile time in scan-guard-common).
            let bytes: [u8; SCAN_EVENT_SIZE] = unsafe { core::mem::transmute(ev) };
            assert_eq!(&bytes[..], &data[..SCAN_EVENT_SIZE]);
            assert!(ev.ports().len() <= PORT_SAMPLES);
            let _ = Trigger::from_u8(ev.trigger);
            let _ = Suppression::from_u8(ev.suppressed).map(Suppression::name);
            let rec = EventRecord::from_kernel(&ev, &KernelConfig::DEFAULT);
            let line = serde_json::to_string(&rec).expect("event serialises");
            assert!(!line.contains('\n'), "{line}");
            let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            for k in KEYS {
                assert!(v.get(k).is_some(), "no {k} in {line}");
            }
            let mut corr = Correlator::new(60_000_000_000, 3);
            for chunk in data.chunks(SCAN_EVENT_SIZE) {
                if let Some(e) = ScanEvent::from_bytes(chunk) {
                    if let Some(h) = corr.observe(e.ts_ns, e.src, e.ports()) {
                        assert!(h.sources.len() >= 2, "{h:?}");
                        assert!(h.ports.len() >= 3, "{h:?}");
                    }
                }
            }
        }
    }
    match Contact::from_bytes(data) {
        None => assert!(data.len() < CONTACT_SIZE),
        Some(c) => {
            // SAFETY: as above, for Contact.
            let bytes: [u8; CONTACT_SIZE] = unsafe { core::mem::transmute(c) };
            assert_eq!(&bytes[..], &data[..CONTACT_SIZE]);
        }
    }
    let cfg = SlowScan {
        max_sources: 4,
        ..SlowScan::default()
    };
    let threshold = cfg.threshold;
    let mut trw = Trw::new(cfg);
    for chunk in data.chunks(CONTACT_SIZE) {
        let Some(c) = Contact::from_bytes(chunk) else {
            continue;
        };
        if let Some(f) = trw.observe(&c) {
            assert_eq!(f.src, c.src);
            assert!(f.likelihood_ratio > threshold, "{f:?}");
            assert!(f.failures >= 1, "{f:?}");
            assert!(f.ports.len() <= 8, "{f:?}");
            assert!(!f.kind.is_empty());
        }
        assert!(
            trw.sources() <= 4,
            "TRW remembers {} sources, cap 4",
            trw.sources()
        );
    }
    trw.expire(u64::MAX);
});
