//! The scan-guard XDP program. Per packet:
//! parse -> allowlisted? pass -> blocked? drop -> sane TCP flags? -> track -> verdict.
//! Policy lives in userspace; this program only applies the config it is given.
#![no_std]
#![no_main]
// One atomic OR (lists::mark_kernel_presence): inline BPF assembly.
#![feature(asm_experimental_arch)]

mod fast;
mod lists;
mod maps;
mod parse;
mod sockets;
mod track;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::info;
use scan_guard_common::{
    config::KernelConfig,
    flags::{ProbeKind, TcpRole, tcp_role},
    ports::{PROTO_TCP, PROTO_UDP},
    state::Probe,
    stats::{Stat, StatBlock},
};

use crate::{
    maps::{CONFIG, STATS},
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, L3, Parsed},
};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMP timestamp and address-mask requests (host discovery, nmap -PP / -PM).
const ICMP_TIMESTAMP_REQUEST: u8 = 13;
const ICMP_ADDRESS_MASK_REQUEST: u8 = 17;
/// SCTP chunk types that open an association (nmap -sY, -sZ).
const SCTP_INIT: u8 = 1;
const SCTP_COOKIE_ECHO: u8 = 10;

#[xdp]
pub fn scan_guard(ctx: XdpContext) -> u32 {
    let Some(stats) = STATS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: per-CPU slot, valid for the whole program run, touched by nobody else.
    let stats = unsafe { &mut *stats };
    bump(stats, Stat::Packets as usize);
    let verdict = inspect(&ctx, stats);
    if verdict == XDP_PASS {
        bump(stats, Stat::Passed as usize);
    }
    verdict
}

#[inline(always)]
pub(crate) fn bump(stats: &mut StatBlock, index: usize) {
    if let Some(s) = stats.get_mut(index) {
        *s += 1;
    }
}

#[inline(always)]
fn inspect(ctx: &XdpContext, stats: &mut StatBlock) -> u32 {
    // Only what the addresses need is parsed before the lists are checked, so a
    // blocked source is dropped whatever follows (an extension-header chain too
    // long to walk, a malformed header): nothing it sends can pass on parse trouble.
    let mut l3 = match parse::parse_l3(ctx) {
        Ok(Parsed::Ip(l3)) => l3,
        Ok(Parsed::NotIp) => {
            bump(stats, Stat::NotIp as usize);
            return XDP_PASS;
        }
        Err(()) => {
            bump(stats, Stat::ParseFailed as usize);
            return XDP_PASS;
        }
    };
    let Some(cfg) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    if cfg.has_allowlist() && lists::is_allowed(&l3.src) {
        bump(stats, Stat::Allowlisted as usize);
        return XDP_PASS;
    }
    if lists::is_blocked(&l3.src, cfg, stats) {
        bump(stats, Stat::DroppedBlocked as usize);
        return XDP_DROP;
    }
    if parse::complete(ctx, &mut l3).is_err() {
        bump(stats, Stat::ParseFailed as usize);
        return XDP_PASS;
    }
    if l3.later_fragment {
        if track::first_fragment_dropped(&l3.src, cfg) {
            bump(stats, Stat::DroppedFragment as usize);
            return XDP_DROP;
        }
        bump(stats, Stat::Fragments as usize);
        return XDP_PASS;
    }
    let verdict = match l3.proto {
        IPPROTO_TCP => tcp(ctx, &l3, cfg, stats),
        IPPROTO_UDP => udp(ctx, &l3, cfg, stats),
        IPPROTO_ICMP => icmp(ctx, &l3, ICMP_ECHO_REQUEST, cfg, stats),
        IPPROTO_ICMPV6 => icmp(ctx, &l3, ICMPV6_ECHO_REQUEST, cfg, stats),
        IPPROTO_SCTP => sctp(ctx, &l3, cfg, stats),
        proto => Ok(other_protocol(&l3, proto, cfg, stats)),
    };
    let verdict = verdict.unwrap_or_else(|()| {
        bump(stats, Stat::ParseFailed as usize);
        XDP_PASS
    });
    if verdict & track::AUTO_BLOCKED != 0 {
        log_auto_block(ctx, &l3.src);
    }
    verdict & !track::AUTO_BLOCKED
}

/// Rare (once per blocked source): worth a log line for operators.
#[inline(never)]
fn log_auto_block(ctx: &XdpContext, src: &scan_guard_common::addr::Addr) {
    info!(ctx, "kernel auto-block of {:i}", *src);
}

/// True when a packet to `l3.dst` may count as evidence: one of the host's own
/// unicast addresses (or every destination, when the operator asked for that).
/// Broadcast, multicast and forwarded traffic says nothing about a scan of us.
#[inline(always)]
fn evidence_dst(l3: &L3, cfg: &KernelConfig, stats: &mut StatBlock) -> bool {
    if !cfg.local_only() || lists::is_local(&l3.dst) {
        return true;
    }
    bump(stats, Stat::NotLocal as usize);
    false
}

/// A socket of the host explains the packet (counted).
#[inline(always)]
fn explained(stats: &mut StatBlock) -> u32 {
    bump(stats, Stat::SocketExplained as usize);
    XDP_PASS
}

#[inline(always)]
fn tcp(ctx: &XdpContext, l3: &L3, cfg: &KernelConfig, stats: &mut StatBlock) -> Result<u32, ()> {
    let (sport, port, flags, os_stack) = match parse::header::<14>(ctx, l3.l4_off) {
        Ok(h) => {
            // A header of 32+ bytes (12+ option bytes: MSS, SACK, timestamps, window
            // scale) is what an OS stack sends on connect(); raw scanners send few.
            (
                parse::be16(h, 0),
                parse::be16(h, 2),
                parse::byte(h, 13),
                parse::byte(h, 12) >> 4 >= 8,
            )
        }
        Err(()) if l3.first_fragment => return Ok(tiny_fragment(ctx, l3, cfg, stats)),
        Err(()) => return Err(()),
    };
    Ok(match tcp_role(flags) {
        TcpRole::Invalid(class, kind) => {
            let tracked = if evidence_dst(l3, cfg, stats) {
                let listening = lists::is_listening(PROTO_TCP, port);
                let probe = probe(
                    l3,
                    kind,
                    port,
                    cfg.port_weight(port, listening, true),
                    Some(flags),
                    listening,
                    false,
                );
                track::record(l3, &probe, cfg, stats)
            } else {
                XDP_PASS
            };
            if cfg.drops(class) {
                bump(stats, Stat::dropped_invalid(class));
                XDP_DROP | (tracked & track::AUTO_BLOCKED)
            } else {
                bump(stats, Stat::counted_invalid(class));
                tracked
            }
        }
        TcpRole::Syn => {
            if !evidence_dst(l3, cfg, stats) {
                return Ok(XDP_PASS);
            }
            let mut listening = lists::is_listening(PROTO_TCP, port);
            if !listening && sockets::tcp(ctx, l3, sport, port) {
                // A listener newer than the controller's last refresh.
                bump(stats, Stat::SocketExplained as usize);
                listening = true;
            }
            let probe = probe(
                l3,
                ProbeKind::Syn,
                port,
                cfg.port_weight(port, listening, false),
                Some(flags),
                listening,
                os_stack,
            );
            let tracked = track::record(l3, &probe, cfg, stats);
            if tracked == XDP_PASS && cfg.stealth() && !listening {
                bump(stats, Stat::DroppedStealth as usize);
                XDP_DROP
            } else {
                tracked
            }
        }
        TcpRole::Stray(kind) => {
            // Ports in the ephemeral range or with a listener carry the host's own
            // flows; below the range, a socket of the host (a client bound to a
            // privileged port, a flow in time-wait) explains the rest.
            if port as u32 >= cfg.ephemeral_port_min
                || lists::is_listening(PROTO_TCP, port)
                || !evidence_dst(l3, cfg, stats)
            {
                XDP_PASS
            } else if sockets::tcp(ctx, l3, sport, port) {
                explained(stats)
            } else {
                let probe = probe(
                    l3,
                    kind,
                    port,
                    cfg.port_weight(port, false, false),
                    Some(flags),
                    false,
                    false,
                );
                track::record(l3, &probe, cfg, stats)
            }
        }
        TcpRole::Ignore => XDP_PASS,
    })
}

/// A first fragment too short for the TCP flags (nmap -f, --mtu 8) is dropped
/// (RFC 1858: no conforming stack sends one) and scored like invalid flags to a
/// closed port; the source's later fragments are then dropped too.
#[inline(always)]
fn tiny_fragment(ctx: &XdpContext, l3: &L3, cfg: &KernelConfig, stats: &mut StatBlock) -> u32 {
    bump(stats, Stat::DroppedTinyFragment as usize);
    if !evidence_dst(l3, cfg, stats) {
        return XDP_DROP;
    }
    // Eight bytes (nmap's fragments) hold the ports; fewer leave port 0.
    let port = match parse::header::<4>(ctx, l3.l4_off) {
        Ok(h) => parse::be16(h, 2),
        Err(()) => 0,
    };
    let probe = probe(
        l3,
        ProbeKind::Fragment,
        port,
        cfg.port_weight(port, false, true),
        None,
        false,
        false,
    );
    XDP_DROP | (track::record(l3, &probe, cfg, stats) & track::AUTO_BLOCKED)
}

#[inline(always)]
fn udp(ctx: &XdpContext, l3: &L3, cfg: &KernelConfig, stats: &mut StatBlock) -> Result<u32, ()> {
    let h = parse::header::<4>(ctx, l3.l4_off)?;
    let (sport, port) = (parse::be16(h, 0), parse::be16(h, 2));
    if port as u32 >= cfg.ephemeral_port_min
        || lists::is_listening(PROTO_UDP, port)
        || !evidence_dst(l3, cfg, stats)
    {
        return Ok(XDP_PASS);
    }
    // A socket bound since the last refresh: a resolver's fresh query port, a
    // collector that just restarted.
    if sockets::udp(ctx, l3, sport, port) {
        return Ok(explained(stats));
    }
    Ok(closed_port(l3, ProbeKind::Udp, port, cfg, stats))
}

/// Records a probe of `kind` to a `port` (or protocol number) with no listener.
#[inline(always)]
fn closed_port(
    l3: &L3,
    kind: ProbeKind,
    port: u16,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
) -> u32 {
    let probe = probe(
        l3,
        kind,
        port,
        cfg.port_weight(port, false, false),
        None,
        false,
        false,
    );
    track::record(l3, &probe, cfg, stats)
}

#[inline(always)]
fn icmp(
    ctx: &XdpContext,
    l3: &L3,
    echo_request: u8,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
) -> Result<u32, ()> {
    let icmp_type = parse::byte(parse::header::<2>(ctx, l3.l4_off)?, 0);
    let kind = if icmp_type == echo_request {
        ProbeKind::IcmpEcho
    } else if !l3.v6
        && (icmp_type == ICMP_TIMESTAMP_REQUEST || icmp_type == ICMP_ADDRESS_MASK_REQUEST)
    {
        ProbeKind::IcmpDiscovery
    } else {
        return Ok(XDP_PASS);
    };
    if !evidence_dst(l3, cfg, stats) {
        return Ok(XDP_PASS);
    }
    let probe = Probe {
        kind: kind as u8,
        dst: l3.dst,
        port: None,
        weight: 0,
        tcp_flags: None,
        listening: false,
        os_stack: false,
    };
    Ok(track::record(l3, &probe, cfg, stats))
}

/// SCTP INIT and COOKIE ECHO open associations (nmap -sY, -sZ); the host keeps
/// no SCTP listener list, so every port counts as closed (a client of one SCTP
/// service adds one port's weight, once per window).
#[inline(always)]
fn sctp(ctx: &XdpContext, l3: &L3, cfg: &KernelConfig, stats: &mut StatBlock) -> Result<u32, ()> {
    let h = parse::header::<16>(ctx, l3.l4_off)?;
    let chunk = parse::byte(h, 12);
    if (chunk != SCTP_INIT && chunk != SCTP_COOKIE_ECHO) || !evidence_dst(l3, cfg, stats) {
        return Ok(XDP_PASS);
    }
    Ok(closed_port(
        l3,
        ProbeKind::Sctp,
        parse::be16(h, 2),
        cfg,
        stats,
    ))
}

/// An IP protocol the program does not parse (nmap -sO walks them all): each
/// distinct protocol counts like a closed privileged port. A tunnel peer (GRE,
/// ESP) uses one or two, far below the threshold.
#[inline(always)]
fn other_protocol(l3: &L3, proto: u8, cfg: &KernelConfig, stats: &mut StatBlock) -> u32 {
    if !evidence_dst(l3, cfg, stats) {
        return XDP_PASS;
    }
    closed_port(l3, ProbeKind::Protocol, u16::from(proto), cfg, stats)
}

#[inline(always)]
fn probe(
    l3: &L3,
    kind: ProbeKind,
    port: u16,
    weight: u32,
    tcp_flags: Option<u8>,
    listening: bool,
    os_stack: bool,
) -> Probe {
    Probe {
        kind: kind as u8,
        dst: l3.dst,
        port: Some(port),
        weight,
        tcp_flags,
        listening,
        os_stack,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
