//! The scan-guard XDP program. Per packet:
//! source words -> cached blocked? drop -> parse -> allowlisted? pass ->
//! blocked? drop -> sane TCP flags? -> track -> verdict.
//! Policy lives in userspace; this program only applies the config it is given.
#![no_std]
#![no_main]
// One atomic OR (lists::mark_kernel_presence): inline BPF assembly.
#![feature(asm_experimental_arch)]

mod fast;
mod front;
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
    maps::{CONFIG, PROBE, STATS},
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, L3},
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
    // long to walk, a malformed header): nothing it sends can pass on parse
    // trouble. The front door reads the source with word loads and asks no
    // helper for a source its CPU already judged.
    let at = match parse::locate(ctx) {
        Ok(Some(at)) => at,
        Ok(None) => {
            bump(stats, Stat::NotIp as usize);
            return XDP_PASS;
        }
        Err(()) => {
            bump(stats, Stat::ParseFailed as usize);
            return XDP_PASS;
        }
    };
    let front = match parse::source_words(ctx, &at) {
        Some(words) => front::verdict(&words, stats),
        None => front::ASK,
    };
    if front == front::DROP {
        bump(stats, Stat::DroppedBlocked as usize);
        return XDP_DROP;
    }
    let Ok(mut l3) = parse::ip(ctx, &at) else {
        bump(stats, Stat::ParseFailed as usize);
        return XDP_PASS;
    };
    let Some(cfg) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    if cfg.has_allowlist() && lists::is_allowed(&l3.src) {
        bump(stats, Stat::Allowlisted as usize);
        return XDP_PASS;
    }
    if front == front::ASK && lists::settle(&l3.src, cfg, stats) {
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
    // The probe is built in a per-CPU map value, not on the stack: the
    // verifier knows nothing of what a map value holds, so `record` meets one
    // state whatever the handler and the kind of probe (on the stack, every
    // constant kind would be walked through `record` again).
    let Some(probe) = PROBE.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: per-CPU slot, valid for the whole program run, touched by nobody else.
    let probe = unsafe { &mut *probe };
    let step = match l3.proto {
        IPPROTO_TCP => tcp(ctx, &l3, cfg, stats, probe),
        IPPROTO_UDP => udp(ctx, &l3, cfg, stats, probe),
        IPPROTO_ICMP => icmp(ctx, &l3, ICMP_ECHO_REQUEST, cfg, stats, probe),
        IPPROTO_ICMPV6 => icmp(ctx, &l3, ICMPV6_ECHO_REQUEST, cfg, stats, probe),
        IPPROTO_SCTP => sctp(ctx, &l3, cfg, stats, probe),
        proto => Ok(other_protocol(&l3, proto, cfg, stats, probe)),
    };
    let step = step.unwrap_or_else(|()| {
        bump(stats, Stat::ParseFailed as usize);
        Step::pass()
    });
    if !step.probe {
        return step.verdict;
    }
    // The one place a probe is recorded: the verifier walks `record` once
    // for every path that reaches here, not once per protocol handler.
    if track::record(&l3, probe, cfg, stats) {
        // This very probe got its source blocked in the kernel.
        log_auto_block(ctx, &l3.src);
        return XDP_DROP;
    }
    if step.stealth {
        bump(stats, Stat::DroppedStealth as usize);
        return XDP_DROP;
    }
    step.verdict
}

/// What a protocol handler made of a packet: its verdict, unless the probe it
/// wrote (if any) gets the source blocked.
struct Step {
    verdict: u32,
    /// The handler wrote a probe to record.
    probe: bool,
    /// Dropped when the probe leaves its source unblocked (stealth mode: a
    /// SYN to a closed port gets no answer).
    stealth: bool,
}

impl Step {
    #[inline(always)]
    fn pass() -> Self {
        Self::verdict(XDP_PASS)
    }

    #[inline(always)]
    fn verdict(verdict: u32) -> Self {
        Self {
            verdict,
            probe: false,
            stealth: false,
        }
    }

    /// `verdict`, and a probe the handler wrote.
    #[inline(always)]
    fn probe(verdict: u32) -> Self {
        Self {
            verdict,
            probe: true,
            stealth: false,
        }
    }
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

#[inline(always)]
fn tcp(
    ctx: &XdpContext,
    l3: &L3,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Result<Step, ()> {
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
        Err(()) if l3.first_fragment => return Ok(tiny_fragment(ctx, l3, cfg, stats, out)),
        Err(()) => return Err(()),
    };
    Ok(match tcp_role(flags) {
        TcpRole::Invalid(class, kind) => {
            let verdict = if cfg.drops(class) {
                bump(stats, Stat::dropped_invalid(class));
                XDP_DROP
            } else {
                bump(stats, Stat::counted_invalid(class));
                XDP_PASS
            };
            if !evidence_dst(l3, cfg, stats) {
                return Ok(Step::verdict(verdict));
            }
            let listening = lists::is_listening(PROTO_TCP, port);
            probe(
                out,
                l3,
                kind,
                Some(port),
                cfg.port_weight(port, listening, true),
                Some(flags),
                listening,
                false,
            );
            Step::probe(verdict)
        }
        TcpRole::Syn => {
            if !evidence_dst(l3, cfg, stats) {
                return Ok(Step::pass());
            }
            let mut listening = lists::is_listening(PROTO_TCP, port);
            if !listening && sockets::tcp(ctx, l3, sport, port) {
                // A listener newer than the controller's last refresh.
                bump(stats, Stat::SocketExplained as usize);
                listening = true;
            }
            probe(
                out,
                l3,
                ProbeKind::Syn,
                Some(port),
                cfg.port_weight(port, listening, false),
                Some(flags),
                listening,
                os_stack,
            );
            Step {
                verdict: XDP_PASS,
                probe: true,
                stealth: cfg.stealth() && !listening,
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
                Step::pass()
            } else if sockets::tcp(ctx, l3, sport, port) {
                bump(stats, Stat::SocketExplained as usize);
                Step::pass()
            } else {
                probe(
                    out,
                    l3,
                    kind,
                    Some(port),
                    cfg.port_weight(port, false, false),
                    Some(flags),
                    false,
                    false,
                );
                Step::probe(XDP_PASS)
            }
        }
        TcpRole::Ignore => Step::pass(),
    })
}

/// A first fragment too short for the TCP flags (nmap -f, --mtu 8) is dropped
/// (RFC 1858: no conforming stack sends one) and scored like invalid flags to a
/// closed port; the source's later fragments are then dropped too.
#[inline(always)]
fn tiny_fragment(
    ctx: &XdpContext,
    l3: &L3,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Step {
    bump(stats, Stat::DroppedTinyFragment as usize);
    if !evidence_dst(l3, cfg, stats) {
        return Step::verdict(XDP_DROP);
    }
    // Eight bytes (nmap's fragments) hold the ports; fewer leave port 0.
    let port = match parse::header::<4>(ctx, l3.l4_off) {
        Ok(h) => parse::be16(h, 2),
        Err(()) => 0,
    };
    probe(
        out,
        l3,
        ProbeKind::Fragment,
        Some(port),
        cfg.port_weight(port, false, true),
        None,
        false,
        false,
    );
    Step::probe(XDP_DROP)
}

#[inline(always)]
fn udp(
    ctx: &XdpContext,
    l3: &L3,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Result<Step, ()> {
    let h = parse::header::<4>(ctx, l3.l4_off)?;
    let (sport, port) = (parse::be16(h, 0), parse::be16(h, 2));
    if port as u32 >= cfg.ephemeral_port_min
        || lists::is_listening(PROTO_UDP, port)
        || !evidence_dst(l3, cfg, stats)
    {
        return Ok(Step::pass());
    }
    // A socket bound since the last refresh: a resolver's fresh query port, a
    // collector that just restarted.
    if sockets::udp(ctx, l3, sport, port) {
        bump(stats, Stat::SocketExplained as usize);
        return Ok(Step::pass());
    }
    Ok(closed_port(l3, ProbeKind::Udp, port, cfg, out))
}

/// A probe of `kind` to a `port` (or protocol number) with no listener.
#[inline(always)]
fn closed_port(l3: &L3, kind: ProbeKind, port: u16, cfg: &KernelConfig, out: &mut Probe) -> Step {
    probe(
        out,
        l3,
        kind,
        Some(port),
        cfg.port_weight(port, false, false),
        None,
        false,
        false,
    );
    Step::probe(XDP_PASS)
}

#[inline(always)]
fn icmp(
    ctx: &XdpContext,
    l3: &L3,
    echo_request: u8,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Result<Step, ()> {
    let icmp_type = parse::byte(parse::header::<2>(ctx, l3.l4_off)?, 0);
    let kind = if icmp_type == echo_request {
        ProbeKind::IcmpEcho
    } else if !l3.v6
        && (icmp_type == ICMP_TIMESTAMP_REQUEST || icmp_type == ICMP_ADDRESS_MASK_REQUEST)
    {
        ProbeKind::IcmpDiscovery
    } else {
        return Ok(Step::pass());
    };
    if !evidence_dst(l3, cfg, stats) {
        return Ok(Step::pass());
    }
    probe(out, l3, kind, None, 0, None, false, false);
    Ok(Step::probe(XDP_PASS))
}

/// SCTP INIT and COOKIE ECHO open associations (nmap -sY, -sZ); the host keeps
/// no SCTP listener list, so every port counts as closed (a client of one SCTP
/// service adds one port's weight, once per window).
#[inline(always)]
fn sctp(
    ctx: &XdpContext,
    l3: &L3,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Result<Step, ()> {
    let h = parse::header::<16>(ctx, l3.l4_off)?;
    let chunk = parse::byte(h, 12);
    if (chunk != SCTP_INIT && chunk != SCTP_COOKIE_ECHO) || !evidence_dst(l3, cfg, stats) {
        return Ok(Step::pass());
    }
    Ok(closed_port(
        l3,
        ProbeKind::Sctp,
        parse::be16(h, 2),
        cfg,
        out,
    ))
}

/// An IP protocol the program does not parse (nmap -sO walks them all): each
/// distinct protocol counts like a closed privileged port. A tunnel peer (GRE,
/// ESP) uses one or two, far below the threshold.
#[inline(always)]
fn other_protocol(
    l3: &L3,
    proto: u8,
    cfg: &KernelConfig,
    stats: &mut StatBlock,
    out: &mut Probe,
) -> Step {
    if !evidence_dst(l3, cfg, stats) {
        return Step::pass();
    }
    closed_port(l3, ProbeKind::Protocol, u16::from(proto), cfg, out)
}

/// Writes a probe of `kind` to `port` (none: a protocol without ports) into
/// `out`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn probe(
    out: &mut Probe,
    l3: &L3,
    kind: ProbeKind,
    port: Option<u16>,
    weight: u32,
    tcp_flags: Option<u8>,
    listening: bool,
    os_stack: bool,
) {
    out.kind = kind as u8;
    out.dst = l3.dst;
    out.port = port;
    out.weight = weight;
    out.tcp_flags = tcp_flags;
    out.listening = listening;
    out.os_stack = os_stack;
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
