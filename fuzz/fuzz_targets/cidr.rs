//! `Cidr::from_str` (every address and prefix users type: CLI, config, state file).
//! Invariants: no panic; an accepted prefix has no host bits, a length within its
//! family, and survives display -> parse -> display unchanged (IPv4 shown as IPv4);
//! it contains its own address, and so does every widening of it; the blocklist key
//! form round-trips; a rejection is a message, and its "did you mean" suggestion
//! parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan_guard::{cidr::Cidr, enforcer};
use scan_guard_common::addr::mask;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Cidr>() {
        Ok(c) => {
            assert!(c.prefix_len <= 128, "{text:?} -> {c:?}");
            assert_eq!(
                mask(&c.addr, c.prefix_len),
                c.addr,
                "{text:?}: host bits kept"
            );
            let shown = c.to_string();
            let again: Cidr = shown.parse().unwrap_or_else(|e| {
                panic!("{text:?} displays as {shown:?}, which does not parse: {e}")
            });
            assert_eq!(again, c, "{text:?} -> {shown:?} -> {again:?}");
            assert_eq!(again.to_string(), shown);
            assert_eq!(c.is_v4(), !shown.contains(':'), "{text:?} -> {shown:?}");
            if c.is_v4() {
                assert!(c.prefix_len >= 96, "{text:?}");
            }
            assert!(c.contains(&c.addr));
            let max = if c.is_v4() { 32 } else { 128 };
            for len in [0, 1, 8, 16, 24, 31, 32, 48, 64, 96, 127, 128] {
                if len > max {
                    continue;
                }
                let w = c.widen(len);
                assert!(w.contains(&c.addr), "{c} widened to /{len}: {w}");
                assert!(w.prefix_len <= c.prefix_len);
                assert_eq!(w.is_v4(), c.is_v4(), "{c} widened to /{len}: {w}");
                let ws = w.to_string();
                assert_eq!(ws.parse::<Cidr>().ok(), Some(w), "{c} widened: {ws:?}");
            }
            assert_eq!(enforcer::cidr_of(&enforcer::key_of(&c)), c);
        }
        Err(e) => {
            assert!(!e.is_empty(), "empty error for {text:?}");
            // The product appends its suggestion last (the echoed input may hold
            // the same words).
            if let Some(i) = e
                .rfind("; did you mean ")
                .filter(|_| e.ends_with('?') && e.contains("has host bits set"))
                .map(|i| i + 2)
            {
                let tail = &e[i + "did you mean ".len()..];
                let suggestion = tail.strip_suffix('?').unwrap_or(tail);
                let s: Cidr = suggestion.parse().unwrap_or_else(|e2| {
                    panic!("{text:?}: suggestion {suggestion:?} does not parse: {e2}")
                });
                assert_eq!(s.to_string(), suggestion);
            }
        }
    }
});
