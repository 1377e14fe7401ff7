//! `scan-guard run`: load (or re-adopt), configure, attach, then turn kernel events
//! and first contacts into decisions until SIGINT/SIGTERM; SIGHUP reloads the config.

pub mod retry;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{MapData, RingBuf};
use scan_guard_common::{
    addr::Addr,
    config::KernelConfig,
    event::{Contact, ScanEvent, Suppression},
    map_names,
    state::{BlockOrigin, Trigger},
    vocab::{EventName, ScanKind},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use self::retry::Pending;
use crate::{
    base::cidr::Cidr,
    base::clock,
    config::Config,
    detect::{correlate::Correlator, slow_scan::Trw},
    enforce::enforcer::{Change, Enforcer, Request, Verdict},
    enforce::{neverblock, state_file as persist},
    export::metrics::Metrics,
    export::{events::EventRecord, sinks::EventOutputs},
    kernel::bpffs,
    kernel::instance::{self, InstanceInfo},
    kernel::listeners::{self, Listening},
    kernel::loader::{self, AttachMode},
    kernel::maps::KernelMaps,
    kernel::{
        attachments::{self, AttachChange, Attachments},
        ifaces::{self, IfacePattern},
    },
};

/// How often the first-contact ring is drained without a wakeup (the kernel
/// submits its records without one, and wakes us only for a batch of 256).
const CONTACT_DRAIN: Duration = Duration::from_millis(100);

/// Every first-contact record waiting in the ring.
fn drain_contacts(ring: &mut RingBuf<MapData>) -> Vec<Contact> {
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(c) = Contact::from_bytes(&item) {
            batch.push(c);
        }
    }
    batch
}

/// How often blocks are reconciled and listeners re-read.
const TICK: Duration = Duration::from_secs(1);
/// Least time between two state-file writes for changes the tick finds;
/// control commands, CrowdSec decisions, SIGHUP and shutdown write at once.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// Ticks between full passes over the blocklist maps (see `sync_blocks`).
/// Expiries run every tick from memory; control commands signal their changes
/// (SIGUSR2) and get a full pass at once.
const FULL_PASS_TICKS: u64 = 30;

/// Settings given on the command line; they win over the file, also after SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub dry_run: bool,
}

pub struct RunOptions {
    /// The interfaces to protect: names and globs, from `--iface` or the
    /// config's `ifaces` (the command line wins, also after SIGHUP).
    pub ifaces: Vec<IfacePattern>,
    /// `--iface` was given: SIGHUP keeps it instead of the file's `ifaces`.
    pub ifaces_from_cli: bool,
    pub mode: AttachMode,
    pub pin_dir: PathBuf,
    pub config_path: Option<PathBuf>,
    pub config: Config,
    pub overrides: Overrides,
    /// Every place events go (at least one).
    pub events: Vec<PathBuf>,
    pub state_file: PathBuf,
    pub keep_attached: bool,
    /// Serve Prometheus metrics here (off when `None`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Applies CLI overrides to a config read from the file.
pub fn apply_overrides(mut cfg: Config, o: &Overrides) -> Config {
    if o.dry_run {
        cfg.blocking.dry_run = true;
    }
    cfg
}

struct Controller {
    metrics: Arc<Metrics>,
    ticks: u64,
    /// A full pass over the blocklist maps is due at the next tick.
    full_pass_due: bool,
    /// The loaded object: its program is attached to every interface of the
    /// list, and again to one that comes back.
    ebpf: aya::Ebpf,
    attachments: Attachments,
    /// The runtime file as last written (rewritten when an attachment changes).
    info: InstanceInfo,
    cfg: Config,
    kcfg: KernelConfig,
    maps: KernelMaps,
    enforcer: Enforcer,
    trw: Trw,
    correlator: Correlator,
    sink: EventOutputs,
    /// What the kernel's listening bitmap holds: the sockets of now plus the
    /// remembered TCP listeners.
    listening: Listening,
    memory: listeners::ListenerMemory,
    /// Sources the rate cap refused, retried strongest first every tick.
    retries: retry::Retries,
    /// The NAT-rule watcher (`detection.nat_refresh`), when it runs.
    nat: Option<crate::kernel::nat_watch::Watcher>,
    /// The host's own addresses as last written to `LOCAL_ADDRS`.
    local: Vec<Addr>,
    state_file: PathBuf,
    /// A change the tick found (an expiry, an adopted kernel block, a listener)
    /// not yet in the state file.
    state_dirty: bool,
    /// When the state file was last written.
    saved_at: Option<std::time::Instant>,
    /// CrowdSec Local API tasks (bouncer and agent), when `[crowdsec]` asks.
    crowdsec: crate::export::crowdsec::Link,
}

/// The NAT-published ports as the watcher last read them (none without one).
fn published_now(
    nat: Option<&crate::kernel::nat_watch::Watcher>,
) -> crate::kernel::published::Published {
    nat.map(|w| w.ports.borrow().clone()).unwrap_or_default()
}

pub async fn run(opts: RunOptions) -> Result<()> {
    // Validate everything the user typed before touching the kernel.
    check_interfaces(&opts.ifaces)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("scan-guard run must be started as root: it loads an XDP program and pins BPF maps");
    }
    // Signals first: a SIGTERM during start-up is then handled by the loop (clean
    // detach) instead of killing us with the program attached.
    let signals = Signals::install()?;
    let sink = EventOutputs::open(&opts.events)?;
    // Bind before attaching: an address in use fails the start, not a running host.
    let metrics = Arc::new(Metrics::new());
    let _metrics_server = match opts.metrics {
        Some(addr) => Some(crate::export::metrics::serve(addr, Arc::clone(&metrics)).await?),
        None => None,
    };
    // Secrets are read (and bad ones refused) before anything is attached.
    let crowdsec = crate::export::crowdsec::Link::start(&opts.config.crowdsec)?;
    bpffs::prepare_pin_dir(&opts.pin_dir)?;
    let fresh = !loader::is_attached(&opts.pin_dir);
    // Pins left by a scan-guard with another map layout cannot be reused: their
    // maps go (the program attached through the link keeps enforcing with them
    // until the new one replaces it atomically), new ones are made, and the
    // blocks come back from the state file.
    if let Some(why) = loader::pins_of_other_layout(&opts.pin_dir) {
        tracing::warn!(
            pins = %opts.pin_dir.display(),
            "the pinned maps are from a scan-guard with another map layout ({why}): recreating them; blocks are restored from the state file"
        );
        loader::remove_map_pins(&opts.pin_dir)?;
    }
    let fresh_maps = !opts.pin_dir.join(map_names::CONFIG).exists();
    // Started while we still hold CAP_NET_ADMIN (listing the nat table needs it).
    let nat = match opts.config.detection.nat_refresh.0 {
        d if d.is_zero() => None,
        d => match crate::kernel::nat_watch::Watcher::start(d, Duration::from_secs(3)).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("NAT-published ports will not be read: {e:#}");
                None
            }
        },
    };

    let (mut ctl, events, contacts, klog) = match start(&opts, sink, fresh_maps, metrics, nat) {
        Ok(v) => v,
        Err(e) => {
            // Nothing half-applied: a fresh start that failed leaves no pins behind.
            if fresh {
                let _ = loader::detach(&opts.pin_dir);
            }
            return Err(e);
        }
    };
    ctl.crowdsec = crowdsec;
    ctl.info.dry_run = ctl.cfg.blocking.dry_run;
    ctl.write_info();
    // Everything from here on goes through descriptors we already hold.
    match crate::base::privileges::drop_all() {
        Ok(()) => tracing::info!("dropped all capabilities"),
        Err(e) => tracing::warn!("could not drop capabilities: {e:#}"),
    }

    let result = event_loop(&opts, &mut ctl, events, contacts, klog, signals).await;

    if let Err(e) = ctl.save() {
        tracing::warn!("saving state: {e:#}");
    }
    instance::remove(&opts.pin_dir);
    let names = ctl.info.iface.clone();
    if opts.keep_attached {
        tracing::info!(
            "leaving the program attached to {names} (pins in {})",
            opts.pin_dir.display()
        );
    } else {
        loader::detach(&opts.pin_dir)?;
        tracing::info!("detached from {names}");
    }
    drop(ctl);
    result
}

type Ring = AsyncFd<RingBuf<MapData>>;
type KernelLog = AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>;

/// Bridges the program's aya-log records into our logs (rare: kernel auto-blocks).
fn kernel_log(ebpf: &mut aya::Ebpf) -> Option<KernelLog> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("kernel log records unavailable: {e}");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
    match unsafe { AsyncFd::register(logger) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!("watching kernel log records: {e}");
            None
        }
    }
}

fn ring(ebpf: &mut aya::Ebpf, name: &str) -> Result<Ring> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("object has no map {name}"))?;
    let rb = RingBuf::try_from(map).with_context(|| format!("{name} is not a ring buffer"))?;
    // SAFETY: the RingBuf owns its map fd and keeps it open for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    unsafe { AsyncFd::register(rb) }.map_err(|e| anyhow!("watching {name}: {e}"))
}

type Started = (Controller, Ring, Ring, Option<KernelLog>);

/// Every interface named exactly must exist (a typo is a usage error, exit 2),
/// and the list must name at least one interface there is now; globs may match
/// nothing yet.
fn check_interfaces(patterns: &[IfacePattern]) -> Result<()> {
    if patterns.is_empty() {
        return Err(crate::base::error::usage(
            "no interface to protect: pass --iface IFACE (repeat it for several) or set ifaces in the config file",
        ));
    }
    for p in patterns.iter().filter(|p| !p.is_glob()) {
        loader::if_index(p.as_str())?;
    }
    if ifaces::matching(patterns, &ifaces::system_interfaces()).is_empty() {
        return Err(crate::base::error::usage(format!(
            "no network interface matches {} (see `ip link`)",
            patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

fn start(
    opts: &RunOptions,
    sink: EventOutputs,
    fresh_maps: bool,
    metrics: Arc<Metrics>,
    nat: Option<crate::kernel::nat_watch::Watcher>,
) -> Result<Started> {
    let cfg = opts.config.clone();
    let max_blocks = fresh_maps.then_some(cfg.blocking.max_blocks);
    let mut ebpf = loader::load_with(Some(&opts.pin_dir), max_blocks)?;
    let mut maps = KernelMaps::take(&mut ebpf)?;
    let ephemeral = listeners::ephemeral_port_min()?;
    let kcfg = cfg.kernel_config(ephemeral, sketch_key());
    // The addresses go in before the config that may tell the program to score
    // only traffic to them.
    let local = own_addresses();
    maps.write_local(&local)?;
    maps.write_config(&kcfg)?;
    let saved = persist::load(&opts.state_file);
    let keep_s = cfg.detection.listener_memory.0.as_secs();
    let now_s = clock::unix_now();
    let mut memory = listeners::ListenerMemory::from_saved(
        saved
            .iter()
            .flat_map(|s| s.listeners.iter().map(|l| (l.port, l.last_unix_s))),
        now_s,
        keep_s,
    );
    let current = Listening::read()?;
    memory.observe(&current, now_s, keep_s);
    let listening = memory
        .effective(&current)
        .with_published(&published_now(nat.as_ref()));
    maps.write_listening(&listening.bitmap())?;

    let mut enforcer = Enforcer::new(Vec::new());
    let mut ctl_cfg_maps = (cfg, maps);
    apply_lists(
        &mut ctl_cfg_maps.1,
        &ctl_cfg_maps.0,
        &mut enforcer,
        saved.as_ref().map(|s| s.allows.as_slice()),
    )?;
    let (cfg, mut maps) = ctl_cfg_maps;
    if let Some(saved) = &saved {
        let n = enforcer.restore(&mut maps, saved)?;
        if n > 0 {
            tracing::info!("restored {n} blocks from {}", opts.state_file.display());
        }
    }
    let events = ring(&mut ebpf, map_names::EVENTS)?;
    let contacts = ring(&mut ebpf, map_names::CONTACTS)?;
    let klog = kernel_log(&mut ebpf);
    let only = match opts.ifaces.as_slice() {
        [one] if !one.is_glob() => Some(one.as_str()),
        _ => None,
    };
    loader::adopt_legacy_link(&opts.pin_dir, only)?;
    let mut attachments = Attachments::new(opts.ifaces.clone(), opts.mode, opts.pin_dir.clone());
    // At start every refusal is fatal: nothing is left half-protected.
    for change in attachments.follow(&mut ebpf) {
        if let AttachChange::Failed { iface, error } = &change {
            return Err(anyhow!("attaching to {iface}: {error}"));
        }
        attachments::log_change(&change);
    }
    if !attachments.any_attached() {
        bail!("the program is attached to no interface");
    }
    tracing::info!(pins = %opts.pin_dir.display(), "maps pinned");
    if cfg.blocking.dry_run {
        tracing::info!(
            "dry run: scans are reported as would_block, nothing is dropped for scanning"
        );
    }
    let status = attachments.status();
    metrics.set_attached(&status);
    let mut info = InstanceInfo {
        pid: std::process::id(),
        iface: String::new(),
        mode: String::new(),
        ifaces: Vec::new(),
        started_unix_s: clock::unix_now(),
        pin_dir: opts.pin_dir.clone(),
        state_file: opts.state_file.clone(),
        dry_run: cfg.blocking.dry_run,
        notify_sigusr2: true,
    };
    info.set_interfaces(status);
    let ctl = Controller {
        ebpf,
        attachments,
        info,
        trw: Trw::new(cfg.slow_scan.clone()),
        correlator: Correlator::new(
            cfg.detection.distributed_window.0.as_nanos() as u64,
            cfg.detection.distributed_min_sources,
        ),
        kcfg,
        cfg,
        maps,
        enforcer,
        sink,
        listening,
        memory,
        retries: retry::Retries::default(),
        nat,
        local,
        state_file: opts.state_file.clone(),
        state_dirty: false,
        saved_at: None,
        metrics,
        ticks: 0,
        full_pass_due: true,
        crowdsec: crate::export::crowdsec::Link::disabled(),
    };
    Ok((ctl, events, contacts, klog))
}

/// A fresh random key for the kernel's port sketch (getrandom(2); a clock-derived
/// key if that fails, which still differs per start).
fn sketch_key() -> u32 {
    let mut key = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `key`.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(key)
    } else {
        (clock::monotonic_ns() ^ u64::from(std::process::id()).rotate_left(32)) as u32
    }
}

/// The host's own addresses in the kernel's form, sorted (compared every tick:
/// an address added or removed is in the kernel's set within a second).
fn own_addresses() -> Vec<Addr> {
    let mut v: Vec<Addr> = neverblock::host_addresses()
        .into_iter()
        .map(|ip| Cidr::host(ip).addr)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Installs the never-block set and the allowlist (config entries plus `extra`,
/// entries saved from earlier `scan-guard allow` commands).
fn apply_lists(
    maps: &mut KernelMaps,
    cfg: &Config,
    enforcer: &mut Enforcer,
    extra: Option<&[String]>,
) -> Result<()> {
    let mut never: Vec<Cidr> = cfg.blocking.never_block.iter().map(|p| p.0).collect();
    if cfg.blocking.protect_host_addresses {
        never.extend(neverblock::automatic());
    }
    never.sort();
    never.dedup();
    let keys: Vec<_> = never.iter().map(|c| (c.addr, c.prefix_len)).collect();
    maps.write_protected(&keys)?;
    tracing::info!(
        "never-block set: {}",
        never
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    enforcer.set_never_block(never);
    for p in &cfg.blocking.allow {
        maps.insert_allow(&p.0.addr, p.0.prefix_len)?;
    }
    for text in extra.unwrap_or_default() {
        match text.parse::<Cidr>() {
            Ok(c) => maps.insert_allow(&c.addr, c.prefix_len)?,
            Err(e) => tracing::warn!("state file: skipping allow entry: {e}"),
        }
    }
    write_no_aggregate(maps, cfg, enforcer, &own_addresses())
}

/// Source prefixes that hold an address judged alone (never-block, allowlisted,
/// the host's own) are scored per address: a /64 block must never cover the
/// gateway, and the host's own LAN is many hosts, not one source.
fn write_no_aggregate(
    maps: &mut KernelMaps,
    cfg: &Config,
    enforcer: &Enforcer,
    local: &[Addr],
) -> Result<()> {
    let k = cfg.kernel_config(0, 0);
    let alone = enforcer
        .never_block()
        .iter()
        .copied()
        .chain(maps.allows().into_iter().map(|(a, l)| Cidr::from_key(a, l)))
        .chain(local.iter().map(|a| Cidr::from_key(*a, 128)));
    let mut set: Vec<Addr> = alone
        .filter_map(|c| {
            let plen = k.source_prefix(&c.addr);
            (c.prefix_len > plen).then(|| scan_guard_common::addr::mask(&c.addr, plen))
        })
        .collect();
    set.sort_unstable();
    set.dedup();
    maps.write_no_aggregate(&set)
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?,
            usr2: signal(SignalKind::user_defined2()).context("installing SIGUSR2 handler")?,
        })
    }
}

async fn event_loop(
    opts: &RunOptions,
    ctl: &mut Controller,
    mut events: Ring,
    mut contacts: Ring,
    mut klog: Option<KernelLog>,
    signals: Signals,
) -> Result<()> {
    let Signals {
        int: mut sigint,
        term: mut sigterm,
        hup: mut sighup,
        usr1: mut sigusr1,
        usr2: mut sigusr2,
    } = signals;
    let mut tick = tokio::time::interval(TICK);
    let mut contact_drain = tokio::time::interval(CONTACT_DRAIN);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("waiting for kernel events")?;
                let mut batch = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    match ScanEvent::from_bytes(&item) {
                        Some(ev) => batch.push(ev),
                        None => tracing::warn!("short event record ({} bytes) ignored", item.len()),
                    }
                }
                guard.clear_ready();
                for ev in batch {
                    ctl.on_kernel_event(&ev)?;
                }
            }
            guard = contacts.readable_mut() => {
                let mut guard = guard.context("waiting for first contacts")?;
                let batch = drain_contacts(guard.get_inner_mut());
                guard.clear_ready();
                for c in batch {
                    ctl.on_contact(&c)?;
                }
            }
            // The kernel wakes us for first contacts only once a batch waits.
            _ = contact_drain.tick() => {
                for c in drain_contacts(contacts.get_mut()) {
                    ctl.on_contact(&c)?;
                }
            }
            guard = async {
                match klog.as_mut() {
                    Some(l) => l.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard.context("waiting for kernel log records")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tick.tick() => ctl.on_tick()?,
            batch = ctl.crowdsec.next() => ctl.on_crowdsec(batch)?,
            _ = sighup.recv() => {
                ctl.reopen_events("SIGHUP");
                ctl.reload(opts)?;
            }
            _ = sigusr1.recv() => ctl.reopen_events("SIGUSR1"),
            _ = sigusr2.recv() => ctl.on_maps_changed()?,
            _ = sigint.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
        }
    }
}

impl Controller {
    fn emit(&mut self, rec: &EventRecord) -> Result<()> {
        self.metrics.event(rec.event);
        if rec.event == EventName::ScanDetected {
            self.metrics.detection(rec.kind);
        }
        self.crowdsec.observe(rec);
        self.sink.write(rec)
    }

    /// One answer of the CrowdSec decision stream: blocks and lifts with origin
    /// `crowdsec`, reported as events like every other block.
    fn on_crowdsec(&mut self, batch: crate::export::crowdsec::Batch) -> Result<()> {
        let recs = self.crowdsec.apply(
            batch,
            &mut self.enforcer,
            &mut self.maps,
            &self.cfg.blocking,
        )?;
        for rec in &recs {
            match rec.event {
                EventName::Blocked => self.metrics.crowdsec_decision("block"),
                EventName::Unblocked | EventName::Expired => {
                    self.metrics.crowdsec_decision("unblock");
                }
                _ => {}
            }
            self.emit(rec)?;
        }
        if !recs.is_empty() {
            self.save()?;
        }
        Ok(())
    }

    fn on_kernel_event(&mut self, ev: &ScanEvent) -> Result<()> {
        let rec = EventRecord::from_kernel(ev, &self.kcfg);
        self.emit(&rec)?;
        if let Some(hint) = self.correlator.observe(ev.ts_ns, ev.src, ev.ports()) {
            self.emit(&EventRecord::from_hint(&hint))?;
        }
        // Host discovery is reported, never blocked on its own.
        if Trigger::from_u8(ev.trigger) == Some(Trigger::Discovery) {
            return Ok(());
        }
        let reason = format!(
            "{}: score {} (threshold {}), {} ports, {} addresses",
            Trigger::from_u8(ev.trigger).map_or("unknown", Trigger::name),
            ev.score,
            self.kcfg.score_threshold,
            ev.distinct_ports,
            ev.distinct_addrs
        );
        if ev.blocked != 0 {
            let request = Request::Kernel {
                src: Cidr::from_key(ev.src, ev.src_prefix_len()),
                kind: rec.kind,
                reason: &reason,
            };
            for v in self
                .enforcer
                .block(&mut self.maps, request, &self.cfg.blocking)?
            {
                if let Verdict::Blocked { meta, .. } = v {
                    self.emit(
                        &rec.as_event(EventName::Blocked)
                            .with_ttl(Verdict::ttl_of(&meta), Some(meta.offences))
                            .with_reason(reason.as_str()),
                    )?;
                    self.trw.forget(&ev.src);
                }
            }
            return Ok(());
        }
        if let Some(s) = Suppression::from_u8(ev.suppressed) {
            if s == Suppression::RateLimited {
                self.retries.push(Pending::new(
                    Cidr::from_key(ev.src, ev.src_prefix_len()),
                    &rec,
                    rec.kind,
                    &reason,
                ));
            }
            return self.emit(&rec.as_event(EventName::Suppressed).with_reason(s.name()));
        }
        // Kernel auto-block is off (dry run, or blocking left to userspace).
        let src = Cidr::from_key(ev.src, ev.src_prefix_len());
        self.block_or_queue(src, &rec, rec.kind, &reason)
    }

    /// A userspace decision to block `src`. While refused sources wait for budget,
    /// it joins them, so the next tick spends the budget on the strongest
    /// evidence rather than on whichever detection came first.
    fn block_or_queue(
        &mut self,
        src: Cidr,
        rec: &EventRecord,
        kind: Option<ScanKind>,
        reason: &str,
    ) -> Result<()> {
        if !self.retries.is_empty() && !self.cfg.blocking.dry_run {
            self.retries.push(Pending::new(src, rec, kind, reason));
            return Ok(());
        }
        let request = Request::Detection { src, kind, reason };
        let verdicts = self
            .enforcer
            .block(&mut self.maps, request, &self.cfg.blocking)?;
        // A block the rate cap refused waits for budget (see `retry.rs`).
        if retry::rate_capped(&verdicts) {
            self.retries.push(Pending::new(src, rec, kind, reason));
        }
        self.emit_verdicts(rec, verdicts, reason)
    }

    /// Retries refused blocks while the budget lasts, strongest evidence first:
    /// the source's probes in its current kernel window, a connect() SYN (a
    /// completed handshake) counting eight.
    /// Returns true when it blocked anything.
    fn retry_refused(&mut self) -> Result<bool> {
        if self.retries.is_empty() {
            return Ok(false);
        }
        let mut blocked = false;
        let maps = &self.maps;
        let order = self.retries.by_strength(clock::monotonic_ns(), |a| {
            maps.source(a).map_or(0, |s| {
                u64::from(s.total_probes()) + 8 * u64::from(s.os_syns)
            })
        });
        for src in order {
            let Some(p) = self.retries.get(&src).cloned() else {
                continue;
            };
            let reason = format!("{}; retried after the block rate cap", p.reason);
            let request = Request::Detection {
                src: p.src,
                kind: p.kind,
                reason: &reason,
            };
            let verdicts = self
                .enforcer
                .block(&mut self.maps, request, &self.cfg.blocking)?;
            if retry::rate_capped(&verdicts) {
                // The budget of this second is spent: the rest waits for the next.
                break;
            }
            self.retries.remove(&src);
            blocked |= verdicts
                .iter()
                .any(|v| matches!(v, Verdict::Blocked { .. }));
            let mut rec = p.rec;
            rec.ts = clock::rfc3339(std::time::SystemTime::now());
            self.emit_verdicts(&rec, verdicts, &reason)?;
        }
        Ok(blocked)
    }

    fn on_contact(&mut self, c: &Contact) -> Result<()> {
        // Contacts still in flight from a source blocked meanwhile add nothing.
        let host = Cidr::from_key(c.src, c.src_prefix_len());
        // The enforcer's own records, not a bpf() call per contact.
        if self
            .enforcer
            .is_recorded(&crate::enforce::enforcer::key_of(&host))
        {
            self.trw.forget(&c.src);
            return Ok(());
        }
        let Some(finding) = self.trw.observe(c) else {
            return Ok(());
        };
        let rec = EventRecord::from_slow_scan(&finding, &self.cfg.slow_scan);
        self.emit(&rec)?;
        let reason = format!(
            "trw: likelihood ratio {:.0} > {} after {} failed and {} successful first contacts",
            finding.likelihood_ratio,
            self.cfg.slow_scan.threshold,
            finding.failures,
            finding.successes
        );
        let src = Cidr::from_key(finding.src, finding.src_prefix);
        self.block_or_queue(src, &rec, Some(finding.kind), &reason)
    }

    fn emit_verdicts(
        &mut self,
        rec: &EventRecord,
        verdicts: Vec<Verdict>,
        reason: &str,
    ) -> Result<()> {
        for v in verdicts {
            let out = match v {
                Verdict::Blocked { prefix, meta } => {
                    let mut r = rec
                        .as_event(EventName::Blocked)
                        .with_ttl(Verdict::ttl_of(&meta), Some(meta.offences))
                        .with_reason(reason);
                    r.origin = Some(BlockOrigin::Detector);
                    r.src = prefix.to_string();
                    r
                }
                Verdict::WouldBlock { ttl, offences } => rec
                    .as_event(EventName::WouldBlock)
                    .with_ttl(Some(ttl), Some(offences))
                    .with_reason(reason),
                Verdict::Suppressed { why } => {
                    rec.as_event(EventName::Suppressed).with_reason(why.name())
                }
                Verdict::AlreadyBlocked | Verdict::Refreshed => continue,
            };
            self.emit(&out)?;
        }
        Ok(())
    }

    /// Follows the interfaces: one that disappears is reported and attached
    /// again when it (or a new one of the same name) appears; one that starts to
    /// match the list is attached; one the list dropped is detached.
    fn follow_interfaces(&mut self) {
        let changes = self.attachments.follow(&mut self.ebpf);
        if changes.is_empty() {
            return;
        }
        changes.iter().for_each(attachments::log_change);
        let status = self.attachments.status();
        self.metrics.set_attached(&status);
        self.info.set_interfaces(status);
        self.write_info();
    }

    /// The runtime file `status` reads; a failure is logged, not fatal.
    fn write_info(&self) {
        if let Err(e) = instance::write(&self.info) {
            tracing::warn!("writing runtime info: {e:#}");
        }
    }

    fn on_tick(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let r = self.housekeeping();
        self.metrics.tick(started.elapsed());
        r
    }

    /// Kernel counters every tick; occupancy (a walk over the LRU keys) every 10.
    fn update_metrics(&mut self) {
        self.metrics.update_crowdsec(&self.crowdsec.health());
        let Ok(stats) = self.maps.stats_total() else {
            return;
        };
        self.metrics.update_kernel(&stats);
        if self.ticks.is_multiple_of(10) {
            self.metrics.set_occupancy(
                self.maps.tracked_sources(),
                self.enforcer.block_count(),
                scan_guard_common::limits::MAX_SOURCES,
                self.cfg.blocking.max_blocks,
                stats[scan_guard_common::stats::Stat::NewSources as usize],
            );
        }
        self.ticks += 1;
    }

    fn housekeeping(&mut self) -> Result<()> {
        self.follow_interfaces();
        let full = self.full_pass_due || self.ticks.is_multiple_of(FULL_PASS_TICKS);
        self.update_metrics();
        let changed = self.sync_blocks(full)? | self.retry_refused()?;
        let mut remembered_changed = false;
        match Listening::read() {
            Ok(now) => {
                let keep_s = self.cfg.detection.listener_memory.0.as_secs();
                remembered_changed = self.memory.observe(&now, clock::unix_now(), keep_s);
                let effective = self
                    .memory
                    .effective(&now)
                    .with_published(&published_now(self.nat.as_ref()));
                if effective != self.listening {
                    match self.maps.write_listening(&effective.bitmap()) {
                        Ok(()) => self.listening = effective,
                        Err(e) => tracing::warn!("updating listening ports: {e:#}"),
                    }
                }
            }
            Err(e) => tracing::warn!("reading listening ports: {e:#}"),
        }
        let local = own_addresses();
        if local != self.local {
            let written = self.maps.write_local(&local).and_then(|()| {
                write_no_aggregate(&mut self.maps, &self.cfg, &self.enforcer, &local)
            });
            match written {
                Ok(()) => self.local = local,
                Err(e) => tracing::warn!("updating the host's addresses: {e:#}"),
            }
        }
        self.trw.expire(clock::monotonic_ns());
        // A listener that came or went is worth keeping across a reboot too.
        // Written at most every STATE_SAVE_INTERVAL: under a flood the blocks
        // change every tick, and the kernel's pinned maps keep them across a
        // controller crash meanwhile (the file matters when they are gone).
        if changed || remembered_changed {
            self.state_dirty = true;
        }
        let due = self
            .saved_at
            .is_none_or(|t| t.elapsed() >= STATE_SAVE_INTERVAL);
        if self.state_dirty && due {
            self.save()?;
        }
        Ok(())
    }

    /// Brings the records and the kernel blocklist together and reports what
    /// changed. A full pass ([`Enforcer::reconcile`]) walks both maps: it repairs
    /// drift, adopts kernel auto-blocks whose event was lost and sees what other
    /// processes wrote; it runs every [`FULL_PASS_TICKS`] and whenever a control
    /// command signals a change. In between only expiries run, from memory.
    fn sync_blocks(&mut self, full: bool) -> Result<bool> {
        let changes = if full {
            self.full_pass_due = false;
            let changes = self
                .enforcer
                .reconcile(&mut self.maps, &self.cfg.blocking)?;
            // Bits of blocks that expired or were lifted since go now.
            if let Err(e) = self.maps.sync_presence() {
                tracing::warn!("recomputing the blocklist presence bits: {e:#}");
            }
            changes
        } else {
            self.enforcer.expire_due(&mut self.maps)?
        };
        let changed = !changes.is_empty();
        for ch in changes {
            let rec = match ch {
                Change::Expired(k, m) => EventRecord::from_meta(EventName::Expired, &k, &m),
                Change::Unblocked(k, m) => EventRecord::from_meta(EventName::Unblocked, &k, &m),
                Change::Appeared(k, m) | Change::Adopted(k, m) => {
                    EventRecord::from_meta(EventName::Blocked, &k, &m)
                }
            };
            self.emit(&rec)?;
        }
        Ok(changed)
    }

    /// SIGUSR2 from a control command (block, unblock, allow, disallow): a full
    /// pass now, and the state file written (allowlist changes included).
    fn on_maps_changed(&mut self) -> Result<()> {
        self.sync_blocks(true)?;
        self.save()
    }

    fn save(&mut self) -> Result<()> {
        let config_allows: Vec<Cidr> = self.cfg.blocking.allow.iter().map(|p| p.0).collect();
        let operator_allows: Vec<String> = self
            .maps
            .allows()
            .into_iter()
            .map(|(a, l)| Cidr::from_key(a, l))
            .filter(|c| !config_allows.contains(c))
            .map(|c| c.to_string())
            .collect();
        let mut state = self.enforcer.snapshot(operator_allows);
        state.listeners = self
            .memory
            .saved()
            .into_iter()
            .map(|(port, last_unix_s)| persist::SavedListener { port, last_unix_s })
            .collect();
        persist::save(&self.state_file, &state)?;
        self.state_dirty = false;
        self.saved_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// SIGUSR1 (logrotate's postrotate) and SIGHUP: events files are opened anew
    /// under their names; a failure is logged and the old handle kept.
    fn reopen_events(&mut self, why: &str) {
        match self.sink.reopen() {
            Ok(0) => {}
            Ok(n) => tracing::info!("{why}: reopened {n} events file(s)"),
            Err(e) => tracing::error!("{why}: {e:#}; still writing to the old file"),
        }
    }

    /// SIGHUP: re-read the file; a bad file changes nothing. `[crowdsec]` is
    /// re-read too (secrets and certificates included): when it or a file it
    /// names changed, the old tasks stop and new ones start (see
    /// [`Self::swap_crowdsec`]). Errors are returned only for map writes of the
    /// swap, which the loop treats like any other map failure.
    fn reload(&mut self, opts: &RunOptions) -> Result<()> {
        let Some(path) = &opts.config_path else {
            tracing::info!("SIGHUP: no config file given, nothing to reload");
            return Ok(());
        };
        let new = match Config::load(path) {
            Ok(c) => apply_overrides(c, &opts.overrides),
            Err(e) => {
                tracing::error!("SIGHUP: {e:#}; keeping the running configuration");
                return Ok(());
            }
        };
        // Read before anything is applied: an unreadable key or certificate keeps
        // the running configuration as a whole.
        let plan = match crate::export::crowdsec::Plan::prepare(&new.crowdsec) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: config file {}: {e:#}; keeping the running configuration",
                    path.display()
                );
                return Ok(());
            }
        };
        // The interface list of the file, unless --iface fixed it. An empty one
        // would detach everything: refused like any other bad file.
        let new_ifaces = if opts.ifaces_from_cli {
            None
        } else {
            match ifaces::parse_all(&new.ifaces) {
                Ok(list) if !list.is_empty() => Some(list),
                Ok(_) => {
                    tracing::error!(
                        "SIGHUP: config file {} sets no ifaces; keeping the running configuration",
                        path.display()
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(
                        "SIGHUP: config file {}: {e}; keeping the running configuration",
                        path.display()
                    );
                    return Ok(());
                }
            }
        };
        let result = (|| -> Result<()> {
            let kcfg = new.kernel_config(listeners::ephemeral_port_min()?, self.kcfg.sketch_key);
            // Allow entries from the old file that the new one drops are removed.
            for p in &self.cfg.blocking.allow {
                if !new.blocking.allow.contains(p) {
                    self.maps.remove_allow(&p.0.addr, p.0.prefix_len)?;
                }
            }
            apply_lists(&mut self.maps, &new, &mut self.enforcer, None)?;
            self.maps.write_config(&kcfg)?;
            self.trw.set_config(new.slow_scan.clone());
            self.kcfg = kcfg;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.cfg = new;
                self.full_pass_due = true;
                if let Some(list) = new_ifaces.filter(|l| l != self.attachments.patterns()) {
                    tracing::info!(
                        "SIGHUP: interfaces now {}",
                        list.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.attachments.set_patterns(list);
                    self.follow_interfaces();
                }
                tracing::info!("SIGHUP: configuration reloaded from {}", path.display());
                self.swap_crowdsec(plan)
            }
            Err(e) => {
                tracing::error!("SIGHUP: applying {}: {e:#}", path.display());
                Ok(())
            }
        }
    }

    /// Replaces the CrowdSec link when `plan` differs from the running one. The
    /// old tasks stop at once (alerts still queued for the old agent are
    /// dropped). Blocks from the old decision stream:
    /// - bouncer mode off now: lifted, since no stream would lift them when
    ///   their decisions are deleted;
    /// - bouncer mode still on: kept until the new stream's first (startup)
    ///   answer, which replaces them as at a start (blocks it does not list are
    ///   lifted), so protection has no gap while it connects.
    fn swap_crowdsec(&mut self, plan: crate::export::crowdsec::Plan) -> Result<()> {
        if self.crowdsec.runs(&plan) {
            return Ok(());
        }
        let bouncer_before = self.crowdsec.is_bouncer();
        let bouncer_now = plan.is_bouncer();
        // The old link's last counts go to the metrics before it goes; its tasks
        // are aborted when it is dropped, before the new ones start.
        self.metrics.update_crowdsec(&self.crowdsec.health());
        self.crowdsec = crate::export::crowdsec::Link::disabled();
        let off = plan.is_off();
        self.crowdsec = plan.spawn();
        self.metrics.crowdsec_link_replaced();
        if off {
            tracing::info!("SIGHUP: [crowdsec] is off now; CrowdSec tasks stopped");
        } else {
            tracing::info!(
                "SIGHUP: [crowdsec] or a file it names changed; CrowdSec tasks restarted"
            );
        }
        if bouncer_before && !bouncer_now {
            let recs = crate::export::crowdsec::apply::lift_all(
                &mut self.enforcer,
                &mut self.maps,
                "crowdsec: bouncer mode turned off",
            )?;
            if !recs.is_empty() {
                tracing::info!(
                    "SIGHUP: bouncer mode is off; lifted {} CrowdSec blocks",
                    recs.len()
                );
            }
            for rec in &recs {
                self.emit(rec)?;
            }
            self.save()?;
        }
        Ok(())
    }
}

/// The state file to use: CLI, then config, then the instance's default
/// (named after its interfaces, see [`ifaces::instance_name`]).
pub fn state_file_for(cli: Option<&Path>, cfg: &Config, instance: &str) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| {
            (!cfg.output.state_file.is_empty()).then(|| PathBuf::from(&cfg.output.state_file))
        })
        .unwrap_or_else(|| persist::default_path(instance))
}
