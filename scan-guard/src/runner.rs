//! `scan-guard run`: load, configure, attach, stream events, detach on signal.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::RingBuf;
use scan_guard_common::{config::KernelConfig, event::ScanEvent, map_names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    bpffs,
    events::{self, EventSink},
    kernel_maps::KernelMaps,
    listeners::{self, Listening},
    loader::{self, AttachMode},
};

/// How often the listening-port bitmap is refreshed from procfs.
const LISTENER_REFRESH: Duration = Duration::from_secs(2);

pub struct RunOptions {
    pub iface: String,
    pub mode: AttachMode,
    pub pin_dir: PathBuf,
    pub events: PathBuf,
    pub keep_attached: bool,
    pub config: KernelConfig,
}

pub async fn run(opts: RunOptions) -> Result<()> {
    // Validate everything the user typed before touching the kernel.
    loader::if_index(&opts.iface)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("scan-guard run must be started as root: it loads an XDP program and pins BPF maps");
    }
    let mut sink = EventSink::open(&opts.events)?;
    bpffs::prepare_pin_dir(&opts.pin_dir)?;
    let fresh = !opts.pin_dir.join(loader::LINK_PIN).exists();

    let started = start(&opts).await;
    let (mut ebpf_guard, mut maps, ring, cfg) = match started {
        Ok(v) => v,
        Err(e) => {
            // Nothing half-applied: a fresh start that failed leaves no pins behind.
            if fresh {
                let _ = loader::detach(&opts.pin_dir);
            }
            return Err(e);
        }
    };

    // SAFETY: the RingBuf owns its map fd and keeps it open for as long as the
    // AsyncFd (which owns the RingBuf) lives.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("watching the event ring buffer: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut refresh = tokio::time::interval(LISTENER_REFRESH);
    let mut listening = Listening::default();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for kernel events")?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    match ScanEvent::from_bytes(&item) {
                        Some(ev) => for rec in events::records(&ev, &cfg) {
                            sink.write(&rec)?;
                        },
                        None => tracing::warn!("short event record ({} bytes) ignored", item.len()),
                    }
                }
                guard.clear_ready();
            }
            _ = refresh.tick() => {
                match Listening::read() {
                    Ok(now) if now != listening => {
                        if let Err(e) = maps.write_listening(&now.bitmap()) {
                            tracing::warn!("updating listening ports: {e:#}");
                        } else {
                            tracing::debug!(tcp = ?now.tcp, udp = ?now.udp, "listening ports updated");
                            listening = now;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("reading listening ports: {e:#}"),
                }
            }
            _ = sigint.recv() => { tracing::info!("SIGINT received"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); break; }
        }
    }

    drop(ring);
    if opts.keep_attached {
        tracing::info!(
            "leaving the program attached to {} (pins in {})",
            opts.iface,
            opts.pin_dir.display()
        );
    } else {
        loader::detach(&opts.pin_dir)?;
        tracing::info!("detached from {}", opts.iface);
    }
    ebpf_guard.take();
    Ok(())
}

type Started = (
    Option<aya::Ebpf>,
    KernelMaps,
    RingBuf<aya::maps::MapData>,
    KernelConfig,
);

async fn start(opts: &RunOptions) -> Result<Started> {
    let mut ebpf = loader::load(Some(&opts.pin_dir))?;
    let mut maps = KernelMaps::take(&mut ebpf)?;
    let mut cfg = opts.config;
    cfg.ephemeral_port_min = u32::from(listeners::ephemeral_port_min()?);
    maps.write_config(&cfg)?;
    maps.write_listening(&Listening::read()?.bitmap())?;
    let ring = ebpf
        .take_map(map_names::EVENTS)
        .ok_or_else(|| anyhow!("object has no map {}", map_names::EVENTS))?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    let att = loader::attach(&mut ebpf, &opts.iface, opts.mode, &opts.pin_dir)?;
    if att.readopted {
        tracing::info!(iface = %opts.iface, "re-adopted the instance left attached; its maps and blocks are kept");
    } else {
        tracing::info!(iface = %opts.iface, mode = att.mode, pins = %opts.pin_dir.display(), "attached");
    }
    Ok((Some(ebpf), maps, ring, cfg))
}
