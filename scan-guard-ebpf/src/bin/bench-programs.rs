//! Benchmark-only XDP programs, measured in the same run as scan-guard:
//! - `ref_source_drop`: reads the IPv4 source and drops (what any source filter
//!   pays at least);
//! - `ref_source_lookup_drop`: the same plus one hash lookup keyed by the
//!   4-byte source (what a static filter's hit costs);
//! - `random_source_driver`: gives each run a new IPv4 source (a per-CPU
//!   counter spread over 10.128.0.0/9, IP and TCP/UDP checksums fixed
//!   incrementally) and tail-calls the program in slot 0 of `TARGET`, so a
//!   repeated frame becomes a random-source flood.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Offsets in an untagged Ethernet + IPv4 (no options) frame.
const IP_CSUM: usize = ETH_HLEN + 10;
const IP_SRC: usize = ETH_HLEN + 12;
const L4: usize = ETH_HLEN + 20;
const TCP_CSUM: usize = L4 + 16;
const UDP_CSUM: usize = L4 + 6;
/// 10.128.0.0/9 in host order; the counter fills the low 23 bits.
const SPREAD_BASE: u32 = 0x0a80_0000;
const SPREAD_MASK: u32 = 0x007f_ffff;
/// Odd multiplier: a bijection on 23 bits, so 8M runs in a row are 8M sources,
/// spread over the /16s rather than walking one.
const SPREAD_MUL: u32 = 0x9e37_79b1;

/// Sources the lookup reference drops (key: the source in network order).
#[map]
static REF_BLOCKED: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[map]
static TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map]
static COUNTER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The IPv4 source (network order) of an untagged IPv4 frame.
#[inline(always)]
fn ipv4_source(ctx: &XdpContext) -> Option<u32> {
    let start = ctx.data();
    if start + L4 > ctx.data_end() {
        return None;
    }
    // SAFETY: the bound above covers the Ethernet and IPv4 headers.
    unsafe {
        let ethertype = u16::from_be((start as *const u8).add(12).cast::<u16>().read_unaligned());
        if ethertype != ETH_P_IP {
            return None;
        }
        Some(
            (start as *const u8)
                .add(IP_SRC)
                .cast::<u32>()
                .read_unaligned(),
        )
    }
}

#[xdp]
pub fn ref_source_drop(ctx: XdpContext) -> u32 {
    match ipv4_source(&ctx) {
        Some(_) => XDP_DROP,
        None => XDP_PASS,
    }
}

#[xdp]
pub fn ref_source_lookup_drop(ctx: XdpContext) -> u32 {
    let Some(src) = ipv4_source(&ctx) else {
        return XDP_PASS;
    };
    // SAFETY: presence test only.
    if unsafe { REF_BLOCKED.get(&src) }.is_some() {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// One's-complement update of a 16-bit checksum for a 32-bit field changing
/// from `from` to `to` (RFC 1624), all in network byte order as stored.
#[inline(always)]
fn csum_replace4(csum: u16, from: u32, to: u32) -> u16 {
    let mut sum = u32::from(!csum);
    sum += (!from >> 16) & 0xffff;
    sum += !from & 0xffff;
    sum += (to >> 16) & 0xffff;
    sum += to & 0xffff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[xdp]
pub fn random_source_driver(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + L4 + 20 > ctx.data_end() {
        return XDP_ABORTED;
    }
    let Some(counter) = COUNTER.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // SAFETY: per-CPU slot, ours for this run.
    let n = unsafe {
        let n = counter.read().wrapping_add(1);
        counter.write(n);
        n
    };
    let new_src = (SPREAD_BASE | (n.wrapping_mul(SPREAD_MUL) & SPREAD_MASK)).to_be();
    let p = start as *mut u8;
    // SAFETY: the bound above covers the IPv4 header and 20 bytes of L4 header;
    // every access is an unaligned read or write inside it.
    unsafe {
        let proto = p.add(ETH_HLEN + 9).read();
        let src = p.add(IP_SRC).cast::<u32>();
        let old = src.read_unaligned();
        src.write_unaligned(new_src);
        let ip_csum = p.add(IP_CSUM).cast::<u16>();
        ip_csum.write_unaligned(csum_replace4(ip_csum.read_unaligned(), old, new_src));
        // The source is part of the TCP and UDP pseudo-header.
        let l4_csum = match proto {
            IPPROTO_TCP => Some(p.add(TCP_CSUM).cast::<u16>()),
            IPPROTO_UDP => Some(p.add(UDP_CSUM).cast::<u16>()),
            _ => None,
        };
        if let Some(c) = l4_csum {
            let v = c.read_unaligned();
            // A zero UDP checksum means "none".
            if proto == IPPROTO_TCP || v != 0 {
                c.write_unaligned(csum_replace4(v, old, new_src));
            }
        }
        TARGET.tail_call(&ctx, 0);
    }
    // Only reached when slot 0 is empty.
    XDP_ABORTED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
