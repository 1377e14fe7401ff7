//! The state file (`persist::load` reads it with serde_json into `SavedState`).
//! Invariants for every file it accepts: writing it back (`to_vec_pretty`, as
//! `persist::save` does) and reading again gives the same state; and every record
//! the controller would restore goes through restore's steps and out again as
//! `scan-guard list` and the events show it: prefix parsed, block record built
//! (reason truncated on a character boundary), kernel deadline computed, since and
//! expiry written as RFC 3339, the `expired` event serialised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan_guard::{
    cidr::Cidr,
    clock, enforcer,
    events::EventRecord,
    kinds,
    persist::{STATE_VERSION, SavedState},
};
use scan_guard_common::state::BlockOrigin;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(state) = serde_json::from_str::<SavedState>(text) else {
        return;
    };
    let body = serde_json::to_vec_pretty(&state).expect("state serialises");
    let back: SavedState = serde_json::from_slice(&body).expect("written state parses");
    assert_eq!(back, state);
    if state.version != STATE_VERSION {
        return; // kept aside by persist::load
    }
    let now = clock::unix_now();
    for b in &state.blocks {
        if b.expires_unix_s != 0 && b.expires_unix_s <= now {
            continue; // restore skips blocks that ended
        }
        let Ok(c) = b.prefix.parse::<Cidr>() else {
            continue; // restore skips them with a warning
        };
        let origin = match b.origin.as_str() {
            "kernel" => BlockOrigin::Kernel,
            "manual" => BlockOrigin::Manual,
            _ => BlockOrigin::Detector,
        };
        let mut m = enforcer::new_meta(origin, kinds::code(&b.kind), &b.reason, None, b.offences);
        m.since_unix_s = b.since_unix_s;
        m.expires_unix_s = b.expires_unix_s;
        assert!(
            b.reason.starts_with(m.reason()),
            "{:?} vs {:?}",
            b.reason,
            m.reason()
        );
        let _ = enforcer::entry_for(&c, &m, 0);
        // `scan-guard list` prints since and expires; the controller reports the end.
        let _ = clock::rfc3339_unix(m.since_unix_s);
        let rec = EventRecord::from_meta("expired", &enforcer::key_of(&c), &m);
        serde_json::to_string(&rec).expect("event serialises");
    }
    for o in &state.offences {
        let _ = o.addr.parse::<Cidr>();
    }
    for a in &state.allows {
        let _ = a.parse::<Cidr>();
    }
});
