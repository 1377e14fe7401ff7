//! `parse_duration` (config durations and `scan-guard block --ttl`).
//! Invariants: no panic; `format_duration` of an accepted duration parses back to
//! its whole seconds; and any accepted non-zero duration works as a block TTL the
//! way `scan-guard block --ttl` and the controller use it: the block record
//! (`new_meta`) ends after it starts, its kernel deadline is computed, and the
//! `blocked` event and `list` row can be written (`from_meta`, `with_ttl`).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use scan_guard::{
    cidr::{format_duration, parse_duration},
    clock, enforcer,
    events::EventRecord,
};
use scan_guard_common::{
    meta::MetaKey,
    state::{BlockOrigin, KIND_NONE},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = match parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let shown = format_duration(d);
    let back = parse_duration(&shown).unwrap_or_else(|e| {
        panic!("{text:?} -> {d:?} formats as {shown:?}, which does not parse: {e}")
    });
    assert_eq!(
        back,
        Duration::from_secs(d.as_secs()),
        "{text:?} -> {shown:?}"
    );

    if d.is_zero() {
        return; // `--ttl 0` means "until unblocked": no expiry to compute.
    }
    let meta = enforcer::new_meta(BlockOrigin::Manual, KIND_NONE, "fuzz", Some(d), 1);
    assert!(
        meta.expires_unix_s > meta.since_unix_s,
        "ttl {d:?}: block ends at {} but starts at {}",
        meta.expires_unix_s,
        meta.since_unix_s
    );
    let _ = clock::mono_deadline(meta.expires_unix_s);
    let key = MetaKey {
        prefix_len: 128,
        addr: [0; 16],
    };
    let rec = EventRecord::from_meta("blocked", &key, &meta).with_ttl(Some(d), Some(1));
    serde_json::to_string(&rec).expect("event serialises");
    let _ = clock::rfc3339_unix(meta.since_unix_s);
});
