//! Blocking policy: escalation for repeat offenders, the never-block set, caps on
//! size and rate, prefix aggregation, dry-run, and the reconcile loop that keeps
//! the kernel blocklist equal to the desired state in `BLOCK_META`.
//!
//! `BLOCK_META` is pinned like the kernel maps, so control commands in other
//! processes (`scan-guard block/unblock`) edit the same desired state; the
//! reconcile pass notices their changes and reports them as events.

use std::{collections::HashMap, time::Duration};

use anyhow::Result;
use scan_guard_common::{
    addr::Addr,
    event::Suppression,
    meta::{BlockMeta, MetaKey, REASON_LEN},
    state::{BlockEntry, BlockOrigin, KIND_NONE},
    vocab::{self, ScanKind},
};

use crate::{
    base::cidr::Cidr,
    base::clock,
    enforce::policy::Blocking,
    enforce::state_file::{STATE_VERSION, SavedBlock, SavedOffence, SavedState},
    kernel::maps::KernelMaps,
};
// Where a block's key and kernel entry come from (the maps' own helpers), for
// the users of the enforcer.
pub use crate::kernel::maps::{cidr_of, entry_for, key_of};

/// Tolerance when comparing kernel and desired expiry (clock granularity, rounding).
const EXPIRY_SLACK_NS: u64 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offence {
    pub count: u32,
    pub last_unix_s: u64,
}

/// Who asks for a block. Every block, whoever decides it, goes through
/// [`Enforcer::block`] with one of these; the rules each one meets are
/// written here and nowhere else.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// The kernel blocked `src` itself on a threshold crossing (auto-block; it
    /// checked the never-block set and the rate budget): the block gets its
    /// escalated lifetime and a record.
    Kernel {
        src: Cidr,
        kind: Option<ScanKind>,
        reason: &'a str,
    },
    /// A userspace detection (slow scan, a crossing the kernel did not block, a
    /// retry): never-block set, dry run, the cap, the rate cap and escalation;
    /// enough blocked addresses in one prefix block the prefix.
    Detection {
        src: Cidr,
        kind: Option<ScanKind>,
        reason: &'a str,
    },
    /// An operator (`scan-guard block`): the never-block set (any overlap) and
    /// the cap; the lifetime is the operator's (`None`: until lifted), and it
    /// replaces a record of the same prefix.
    Manual {
        prefix: Cidr,
        ttl: Option<Duration>,
        reason: &'a str,
    },
    /// A decision taken elsewhere (a CrowdSec decision): the never-block set (any
    /// overlap) and the cap; escalation, dry run and the rate cap do not apply
    /// (it was not decided from packets we saw). A record of the same origin
    /// gets the new end; one of another origin is left as it is.
    Decided {
        prefix: Cidr,
        origin: BlockOrigin,
        expires_unix_s: u64,
        reason: &'a str,
    },
}

/// What became of a request to block.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Blocked now, with this record.
    Blocked {
        prefix: Cidr,
        meta: BlockMeta,
    },
    /// Dry run: this block would have started.
    WouldBlock {
        ttl: Duration,
        offences: u32,
    },
    Suppressed {
        why: Suppression,
    },
    /// A record of this prefix exists already (for a decided block: one of
    /// another origin, left as it is).
    AlreadyBlocked,
    /// A decided block of the same origin: its record got the new end.
    Refreshed,
}

impl Verdict {
    /// The lifetime of a block that started (`None`: until lifted).
    pub fn ttl_of(meta: &BlockMeta) -> Option<Duration> {
        (meta.expires_unix_s != 0)
            .then(|| Duration::from_secs(meta.expires_unix_s.saturating_sub(meta.since_unix_s)))
    }
}

/// A change the reconcile pass found or made.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A block reached its end and was removed.
    Expired(MetaKey, BlockMeta),
    /// A block disappeared from the desired state (`scan-guard unblock`).
    Unblocked(MetaKey, BlockMeta),
    /// A block appeared in the desired state from elsewhere (`scan-guard block`).
    Appeared(MetaKey, BlockMeta),
    /// A kernel auto-block nobody had recorded yet was taken over.
    Adopted(MetaKey, BlockMeta),
}

#[derive(Default)]
pub struct Enforcer {
    offences: HashMap<Addr, Offence>,
    /// `BLOCK_META` as of the last reconcile (to tell other processes' edits apart).
    known: HashMap<MetaKey, BlockMeta>,
    never_block: Vec<Cidr>,
}

/// A fresh record.
pub fn new_meta(
    origin: BlockOrigin,
    kind: Option<ScanKind>,
    reason: &str,
    ttl: Option<Duration>,
    offences: u32,
) -> BlockMeta {
    let now = clock::unix_now();
    let mut m = BlockMeta {
        since_unix_s: now,
        expires_unix_s: ttl.map_or(0, |t| now.saturating_add(t.as_secs().max(1))),
        offences,
        origin: origin as u8,
        kind: kind.map_or(KIND_NONE, ScanKind::code),
        _pad: [0; 2],
        reason: [0; REASON_LEN],
    };
    m.set_reason(reason);
    m
}

/// The kernel entry for a record, keeping the hit count of an existing one.
/// Name of a stored kind byte (`-` for none).
pub fn kind_name(kind: u8) -> &'static str {
    vocab::kind_name(ScanKind::from_code(kind))
}

impl Enforcer {
    pub fn new(never_block: Vec<Cidr>) -> Self {
        Self {
            never_block,
            ..Self::default()
        }
    }

    /// An enforcer for a process that is not the controller (`scan-guard
    /// block`): the records and the never-block set as the maps hold them.
    pub fn for_maps(maps: &KernelMaps) -> Self {
        let never = maps
            .protected()
            .into_iter()
            .map(|(a, l)| Cidr::from_key(a, l))
            .collect();
        let mut e = Self::new(never);
        e.known = maps.metas().into_iter().collect();
        e
    }

    pub fn never_block(&self) -> &[Cidr] {
        &self.never_block
    }

    pub fn set_never_block(&mut self, set: Vec<Cidr>) {
        self.never_block = set;
    }

    /// True when blocking `src` would cut off a never-block address: it lies in a
    /// protected prefix, or (a source prefix) holds a protected one.
    fn protects(&self, src: &Cidr) -> bool {
        self.never_block.iter().any(|c| {
            c.contains(&src.addr) || (c.prefix_len >= src.prefix_len && src.contains(&c.addr))
        })
    }

    /// The offence number a new block of `addr` would be (1-based), counting only
    /// offences within the configured memory.
    fn next_offence(&self, addr: &Addr, cfg: &Blocking) -> u32 {
        let now = clock::unix_now();
        match self.offences.get(addr) {
            Some(o) if now.saturating_sub(o.last_unix_s) <= cfg.offence_memory.0.as_secs() => {
                o.count + 1
            }
            _ => 1,
        }
    }

    fn note_offence(&mut self, addr: &Addr, n: u32) {
        self.offences.insert(
            *addr,
            Offence {
                count: n,
                last_unix_s: clock::unix_now(),
            },
        );
    }

    /// True when a block with this key is on record (made or adopted here).
    pub fn is_recorded(&self, key: &MetaKey) -> bool {
        self.known.contains_key(key)
    }

    /// One budget of new blocks per second, shared with the kernel's auto-blocks:
    /// both take from the pinned `RateRing` (same coarse monotonic clock), so a
    /// spoofed flood cannot get the cap twice.
    fn rate_ok(&mut self, maps: &mut KernelMaps, cfg: &Blocking) -> bool {
        let cap = cfg.max_new_blocks_per_sec;
        if cap == 0 {
            return true;
        }
        maps.take_rate(clock::monotonic_ns(), cap)
    }

    /// The one door: every block goes through here (see [`Request`] for the
    /// rules of each kind of request).
    pub fn block(
        &mut self,
        maps: &mut KernelMaps,
        request: Request<'_>,
        cfg: &Blocking,
    ) -> Result<Vec<Verdict>> {
        match request {
            Request::Kernel { src, kind, reason } => self.adopt(maps, src, kind, reason, cfg),
            Request::Detection { src, kind, reason } => {
                self.detection(maps, src, kind, reason, cfg)
            }
            Request::Manual {
                prefix,
                ttl,
                reason,
            } => {
                let meta = new_meta(BlockOrigin::Manual, None, reason, ttl, 1);
                self.decided(maps, prefix, meta, true, cfg)
            }
            Request::Decided {
                prefix,
                origin,
                expires_unix_s,
                reason,
            } => {
                let mut meta = new_meta(origin, None, reason, None, 1);
                meta.expires_unix_s = expires_unix_s;
                self.decided(maps, prefix, meta, false, cfg)
            }
        }
    }

    /// The kernel has already blocked `c` (auto-block): give the block its
    /// escalated lifetime and record it. Nothing if it was already recorded.
    fn adopt(
        &mut self,
        maps: &mut KernelMaps,
        c: Cidr,
        kind: Option<ScanKind>,
        reason: &str,
        cfg: &Blocking,
    ) -> Result<Vec<Verdict>> {
        let src = &c.addr;
        let key = key_of(&c);
        if maps.meta_of(&key).is_some() {
            return Ok(vec![Verdict::AlreadyBlocked]);
        }
        let n = self.next_offence(src, cfg);
        let meta = new_meta(
            BlockOrigin::Kernel,
            kind,
            reason,
            Some(cfg.ttl_for_offence(n)),
            n,
        );
        // The kernel's own entry hands on its hits and its start (`block`).
        maps.block(&c, &meta)?;
        self.note_offence(src, n);
        self.known.insert(key, meta);
        Ok(vec![Verdict::Blocked { prefix: c, meta }])
    }

    /// A userspace detection wants `c` blocked: apply never-block, dry-run, caps
    /// and escalation, then block (and maybe its whole prefix).
    fn detection(
        &mut self,
        maps: &mut KernelMaps,
        c: Cidr,
        kind: Option<ScanKind>,
        reason: &str,
        cfg: &Blocking,
    ) -> Result<Vec<Verdict>> {
        if self.protects(&c) {
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::Protected,
            }]);
        }
        let src = &c.addr;
        if maps.meta_of(&key_of(&c)).is_some() {
            return Ok(vec![Verdict::AlreadyBlocked]);
        }
        let n = self.next_offence(src, cfg);
        let ttl = cfg.ttl_for_offence(n);
        if cfg.dry_run {
            return Ok(vec![Verdict::WouldBlock { ttl, offences: n }]);
        }
        if self.known.len() >= cfg.max_blocks as usize {
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::BlocklistCap,
            }]);
        }
        if !self.rate_ok(maps, cfg) {
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::RateLimited,
            }]);
        }
        let meta = new_meta(BlockOrigin::Detector, kind, reason, Some(ttl), n);
        self.put(maps, &c, &meta)?;
        self.note_offence(src, n);
        let mut out = vec![Verdict::Blocked { prefix: c, meta }];
        if let Some(v) = self.aggregate(maps, &c, kind, cfg)? {
            out.push(v);
        }
        Ok(out)
    }

    fn put(&mut self, maps: &mut KernelMaps, c: &Cidr, meta: &BlockMeta) -> Result<()> {
        maps.block(c, meta)?;
        self.known.insert(key_of(c), *meta);
        Ok(())
    }

    /// Blocks the enclosing prefix once enough addresses inside it are blocked.
    fn aggregate(
        &mut self,
        maps: &mut KernelMaps,
        c: &Cidr,
        kind: Option<ScanKind>,
        cfg: &Blocking,
    ) -> Result<Option<Verdict>> {
        let k = cfg.aggregate_after;
        if k == 0 {
            return Ok(None);
        }
        let family_len = if c.is_v4() {
            cfg.aggregate_ipv4_prefix
        } else {
            cfg.aggregate_ipv6_prefix
        };
        let net = c.widen(family_len);
        if net == *c
            || self.known.contains_key(&key_of(&net))
            || self.never_block.iter().any(|p| net.contains(&p.addr))
        {
            return Ok(None);
        }
        let inside = self
            .known
            .keys()
            .filter(|m| m.prefix_len == 128 && net.contains(&m.addr))
            .count();
        if inside < k as usize {
            return Ok(None);
        }
        let ttl = cfg.ttl_for_offence(1);
        let reason = format!("aggregate: {inside} blocked addresses inside {net}");
        let meta = new_meta(BlockOrigin::Detector, kind, &reason, Some(ttl), 1);
        self.put(maps, &net, &meta)?;
        Ok(Some(Verdict::Blocked { prefix: net, meta }))
    }

    /// Makes the kernel blocklist equal to `BLOCK_META`: expires what is due, writes
    /// missing or drifted entries, removes entries nobody asked for, adopts kernel
    /// auto-blocks, and reports what other processes changed.
    pub fn reconcile(&mut self, maps: &mut KernelMaps, cfg: &Blocking) -> Result<Vec<Change>> {
        let now = clock::unix_now();
        let metas: HashMap<MetaKey, BlockMeta> = maps.metas().into_iter().collect();
        let mut kernel: HashMap<MetaKey, BlockEntry> = maps
            .blocks()?
            .into_iter()
            .map(|(a, l, e)| {
                (
                    MetaKey {
                        prefix_len: l,
                        addr: a,
                    },
                    e,
                )
            })
            .collect();
        let mut changes = Vec::new();
        for (k, m) in &self.known {
            if !metas.contains_key(k) {
                if kernel.contains_key(k) {
                    maps.lift(&cidr_of(k))?;
                }
                if m.expires_unix_s == 0 || now < m.expires_unix_s {
                    changes.push(Change::Unblocked(*k, *m));
                }
            }
        }
        let mut live = HashMap::new();
        for (k, m) in metas {
            // Expiry first: a record that ran out while nobody watched is reported
            // once, as expired, not also as a new block.
            if m.expires_unix_s != 0 && now >= m.expires_unix_s {
                maps.lift(&cidr_of(&k))?;
                // Handled: the pass over kernel entries below must not see it again.
                kernel.remove(&k);
                changes.push(Change::Expired(k, m));
                continue;
            }
            if !self.known.contains_key(&k) {
                changes.push(Change::Appeared(k, m));
            }
            let c = cidr_of(&k);
            let want = clock::mono_deadline(m.expires_unix_s);
            let ok = kernel.get(&k).is_some_and(|e| {
                (e.expires_ns == 0) == (want == 0) && e.expires_ns.abs_diff(want) <= EXPIRY_SLACK_NS
            });
            if !ok {
                maps.block(&c, &m)?;
            }
            live.insert(k, m);
        }
        self.known = live;
        for (k, e) in kernel {
            if self.known.contains_key(&k) {
                continue;
            }
            if e.origin == BlockOrigin::Kernel as u8 && !e.is_expired(clock::monotonic_ns()) {
                let request = Request::Kernel {
                    src: cidr_of(&k),
                    kind: ScanKind::from_code(e.kind),
                    reason: "kernel threshold",
                };
                for v in self.block(maps, request, cfg)? {
                    if let Verdict::Blocked { meta, .. } = v {
                        changes.push(Change::Adopted(k, meta));
                    }
                }
            } else {
                tracing::info!(
                    "removing blocklist entry {} that no record asks for",
                    cidr_of(&k)
                );
                maps.lift(&cidr_of(&k))?;
            }
        }
        Ok(changes)
    }

    /// Between full passes of [`Self::reconcile`]: expires the records that ran
    /// out, from memory. A full pass walks both maps at a bpf() call per entry,
    /// most of a second at 100k blocks; this touches only what expires.
    pub fn expire_due(&mut self, maps: &mut KernelMaps) -> Result<Vec<Change>> {
        let now = clock::unix_now();
        let due: Vec<(MetaKey, BlockMeta)> = self
            .known
            .iter()
            .filter(|(_, m)| m.expires_unix_s != 0 && now >= m.expires_unix_s)
            .map(|(k, m)| (*k, *m))
            .collect();
        let mut changes = Vec::with_capacity(due.len());
        for (k, m) in due {
            maps.lift(&cidr_of(&k))?;
            self.known.remove(&k);
            changes.push(Change::Expired(k, m));
        }
        Ok(changes)
    }

    /// Blocks this enforcer keeps (each with its kernel entry after a pass).
    pub fn block_count(&self) -> usize {
        self.known.len()
    }

    /// Everything worth keeping across restarts.
    pub fn snapshot(&self, operator_allows: Vec<String>) -> SavedState {
        let mut blocks: Vec<SavedBlock> = self
            .known
            .iter()
            .map(|(k, m)| SavedBlock {
                prefix: cidr_of(k).to_string(),
                since_unix_s: m.since_unix_s,
                expires_unix_s: m.expires_unix_s,
                offences: m.offences,
                origin: BlockOrigin::from_u8(m.origin)
                    .map_or("unknown", BlockOrigin::name)
                    .to_string(),
                kind: kind_name(m.kind).to_string(),
                reason: m.reason().to_string(),
            })
            .collect();
        blocks.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let mut offences: Vec<SavedOffence> = self
            .offences
            .iter()
            .map(|(a, o)| SavedOffence {
                addr: Cidr::from_key(*a, 128).to_string(),
                count: o.count,
                last_unix_s: o.last_unix_s,
            })
            .collect();
        offences.sort_by(|a, b| a.addr.cmp(&b.addr));
        SavedState {
            version: STATE_VERSION,
            blocks,
            offences,
            allows: operator_allows,
            listeners: Vec::new(),
        }
    }

    /// Restores saved blocks (those not yet expired) and offence history. Blocks
    /// already in the kernel (a re-adopted instance) are left as they are.
    pub fn restore(&mut self, maps: &mut KernelMaps, saved: &SavedState) -> Result<usize> {
        let now = clock::unix_now();
        for o in &saved.offences {
            match o.addr.parse::<Cidr>() {
                Ok(c) => {
                    self.offences.insert(
                        c.addr,
                        Offence {
                            count: o.count,
                            last_unix_s: o.last_unix_s,
                        },
                    );
                }
                Err(e) => tracing::warn!("state file: skipping offence record: {e}"),
            }
        }
        let mut restored = 0;
        for b in &saved.blocks {
            if b.expires_unix_s != 0 && b.expires_unix_s <= now {
                continue;
            }
            let c: Cidr = match b.prefix.parse() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("state file: skipping block record: {e}");
                    continue;
                }
            };
            let key = key_of(&c);
            if let Some(live) = maps.meta_of(&key) {
                // A re-adopted instance still has it: known, not new.
                self.known.insert(key, live);
                continue;
            }
            let origin = BlockOrigin::from_name(&b.origin).unwrap_or(BlockOrigin::Detector);
            let kind = ScanKind::from_name(&b.kind);
            let mut m = new_meta(origin, kind, &b.reason, None, b.offences);
            m.since_unix_s = b.since_unix_s;
            m.expires_unix_s = b.expires_unix_s;
            maps.block(&c, &m)?;
            self.known.insert(key, m);
            restored += 1;
        }
        Ok(restored)
    }

    /// A block decided elsewhere (an operator, a CrowdSec decision), with its
    /// record `meta` made: the never-block set (any overlap: a covering prefix
    /// must not cut off the gateway) and the cap apply. An existing record of
    /// the same prefix is replaced when `replace` (an operator's word is final),
    /// else refreshed when of the same origin and left alone otherwise.
    fn decided(
        &mut self,
        maps: &mut KernelMaps,
        c: Cidr,
        meta: BlockMeta,
        replace: bool,
        cfg: &Blocking,
    ) -> Result<Vec<Verdict>> {
        let key = key_of(&c);
        let live = maps.meta_of(&key);
        if let (Some(live), false) = (live, replace) {
            if live.origin != meta.origin {
                return Ok(vec![Verdict::AlreadyBlocked]);
            }
            if live.expires_unix_s != meta.expires_unix_s {
                // Only the record: the next reconcile moves the kernel entry's
                // end and keeps its hits.
                let mut m = live;
                m.expires_unix_s = meta.expires_unix_s;
                m.set_reason(meta.reason());
                maps.put_meta(&key, &m)?;
                self.known.insert(key, m);
            }
            return Ok(vec![Verdict::Refreshed]);
        }
        if self
            .never_block
            .iter()
            .any(|p| p.contains(&c.addr) || c.contains(&p.addr))
        {
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::Protected,
            }]);
        }
        if live.is_none() && self.known.len() >= cfg.max_blocks as usize {
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::BlocklistCap,
            }]);
        }
        // A full map (sized when the instance was first created) refuses this one
        // block; it does not stop the controller.
        if let Err(e) = maps.block(&c, &meta) {
            tracing::warn!("blocking {c}: {e:#}");
            return Ok(vec![Verdict::Suppressed {
                why: Suppression::BlocklistFull,
            }]);
        }
        self.known.insert(key, meta);
        Ok(vec![Verdict::Blocked { prefix: c, meta }])
    }

    /// Lifts a block of `origin` (a deleted CrowdSec decision); blocks of other
    /// origins are left alone. Returns the record that was lifted.
    pub fn lift_external(
        &mut self,
        maps: &mut KernelMaps,
        c: &Cidr,
        origin: BlockOrigin,
    ) -> Result<Option<BlockMeta>> {
        let key = key_of(c);
        let Some(live) = maps.meta_of(&key) else {
            return Ok(None);
        };
        if live.origin != origin as u8 {
            return Ok(None);
        }
        maps.lift(c)?;
        self.known.remove(&key);
        Ok(Some(live))
    }

    /// The prefixes of every recorded block of `origin`.
    pub fn blocks_of(&self, origin: BlockOrigin) -> Vec<Cidr> {
        self.known
            .iter()
            .filter(|(_, m)| m.origin == origin as u8)
            .map(|(k, _)| cidr_of(k))
            .collect()
    }

    /// Whether a block record exists for exactly this prefix.
    pub fn has_record(maps: &KernelMaps, c: &Cidr) -> bool {
        maps.meta_of(&key_of(c)).is_some()
    }

    /// Number of blocks in the desired state.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}
