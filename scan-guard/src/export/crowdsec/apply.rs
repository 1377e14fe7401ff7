//! The controller's side of bouncer mode: turns a [`Batch`] into blocks through
//! the enforcer (origin `crowdsec`) and into the events that report them.
//!
//! It remembers what CrowdSec wants blocked, so that
//! - a prefix already blocked by a detection or an operator is left alone and
//!   blocked for CrowdSec once that block is gone (while the decision lasts);
//! - a prefix refused for the blocklist cap is tried again when there is room;
//! - a `suppressed` event is written once per prefix, not at every poll;
//! - at start (`startup`), CrowdSec blocks restored from the state file whose
//!   decisions no longer exist are lifted.

use std::collections::HashMap;

use anyhow::Result;
use scan_guard_common::{
    event::Suppression, meta::BlockMeta, state::BlockOrigin, vocab::EventName,
};
use serde_json::json;

use super::decisions::{Ban, Batch};
use crate::{
    base::cidr::Cidr,
    base::clock,
    enforce::enforcer::{Enforcer, Request, Verdict, key_of, new_meta},
    enforce::policy::Blocking,
    export::events::EventRecord,
    kernel::maps::KernelMaps,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Applied,
    /// Another origin's record blocks exactly this prefix.
    Covered,
    /// Refused for the cap or a full map: tried again later.
    Capped,
    /// Overlaps the never-block set.
    Protected,
}

struct Want {
    ban: Ban,
    state: State,
}

#[derive(Default)]
pub struct Applier {
    wanted: HashMap<Cidr, Want>,
}

impl Applier {
    /// Applies one poll's changes; returns the events to write.
    pub fn apply(
        &mut self,
        batch: Batch,
        enforcer: &mut Enforcer,
        maps: &mut KernelMaps,
        cfg: &Blocking,
    ) -> Result<Vec<EventRecord>> {
        let now = clock::unix_now();
        let mut out = Vec::new();
        for c in &batch.lifts {
            self.wanted.remove(c);
            if let Some(m) = enforcer.lift_external(maps, c, BlockOrigin::Crowdsec)? {
                out.push(lifted(c, &m, "crowdsec: decision deleted"));
            }
        }
        if batch.startup {
            self.wanted.clear();
        }
        for ban in batch.bans {
            if ban.expires_unix_s > now {
                self.ensure(ban, None, enforcer, maps, cfg, &mut out)?;
            }
        }
        if batch.startup {
            for c in enforcer.blocks_of(BlockOrigin::Crowdsec) {
                if !self.wanted.contains_key(&c) {
                    if let Some(m) = enforcer.lift_external(maps, &c, BlockOrigin::Crowdsec)? {
                        out.push(lifted(&c, &m, "crowdsec: no such decision any more"));
                    }
                }
            }
        }
        self.wanted.retain(|_, w| w.ban.expires_unix_s > now);
        // Prefixes waiting for another block to end, or for room in the blocklist.
        let retry: Vec<(Ban, State)> = self
            .wanted
            .values()
            .filter(|w| match w.state {
                State::Covered => !Enforcer::has_record(maps, &w.ban.prefix),
                State::Capped => enforcer.len() < cfg.max_blocks as usize,
                State::Applied | State::Protected => false,
            })
            .map(|w| (w.ban.clone(), w.state))
            .collect();
        for (ban, state) in retry {
            self.ensure(ban, Some(state), enforcer, maps, cfg, &mut out)?;
        }
        Ok(out)
    }

    fn ensure(
        &mut self,
        ban: Ban,
        before: Option<State>,
        enforcer: &mut Enforcer,
        maps: &mut KernelMaps,
        cfg: &Blocking,
        out: &mut Vec<EventRecord>,
    ) -> Result<()> {
        let before = before.or_else(|| self.wanted.get(&ban.prefix).map(|w| w.state));
        let reason = ban.reason();
        let request = Request::Decided {
            prefix: ban.prefix,
            origin: BlockOrigin::Crowdsec,
            expires_unix_s: ban.expires_unix_s,
            reason: &reason,
        };
        let verdict = enforcer.block(maps, request, cfg)?.into_iter().next();
        let state = match verdict {
            Some(Verdict::Blocked { meta, .. }) => {
                out.push(blocked(&ban, &meta, &reason));
                State::Applied
            }
            Some(Verdict::Refreshed | Verdict::WouldBlock { .. }) | None => State::Applied,
            Some(Verdict::AlreadyBlocked) => State::Covered,
            Some(Verdict::Suppressed { why }) => {
                let state = if why == Suppression::Protected {
                    State::Protected
                } else {
                    State::Capped
                };
                if before != Some(state) {
                    out.push(suppressed(&ban, why));
                }
                state
            }
        };
        self.wanted.insert(ban.prefix, Want { ban, state });
        Ok(())
    }
}

/// Lifts every block of origin `crowdsec` (bouncer mode turned off: nothing would
/// follow their decisions any more); returns the events to write.
pub fn lift_all(
    enforcer: &mut Enforcer,
    maps: &mut KernelMaps,
    why: &str,
) -> Result<Vec<EventRecord>> {
    let mut out = Vec::new();
    for c in enforcer.blocks_of(BlockOrigin::Crowdsec) {
        if let Some(m) = enforcer.lift_external(maps, &c, BlockOrigin::Crowdsec)? {
            out.push(lifted(&c, &m, why));
        }
    }
    Ok(out)
}

fn evidence(ban: &Ban) -> serde_json::Value {
    json!({
        "rule": "crowdsec_decision",
        "decision_id": ban.id,
        "decision_origin": ban.origin,
        "scenario": ban.scenario,
    })
}

fn blocked(ban: &Ban, m: &BlockMeta, reason: &str) -> EventRecord {
    let mut rec = EventRecord::from_meta(EventName::Blocked, &key_of(&ban.prefix), m);
    rec.reason = Some(reason.to_string());
    rec.evidence = evidence(ban);
    rec
}

fn suppressed(ban: &Ban, why: Suppression) -> EventRecord {
    let m = new_meta(BlockOrigin::Crowdsec, None, "", None, 0);
    let mut rec = EventRecord::from_meta(EventName::Suppressed, &key_of(&ban.prefix), &m);
    rec.offences = None;
    rec.reason = Some(why.name().to_string());
    rec.evidence = evidence(ban);
    rec
}

fn lifted(c: &Cidr, m: &BlockMeta, why: &str) -> EventRecord {
    let mut rec = EventRecord::from_meta(EventName::Unblocked, &key_of(c), m);
    rec.reason = Some(format!("{why} ({})", m.reason()));
    rec
}
