//! Header parsing with explicit bounds checks the verifier can follow. Every
//! failure is `Err(())`: the caller passes the frame and counts it (fail open).

use aya_ebpf::programs::XdpContext;
use scan_guard_common::{
    addr::Addr,
    fastpath::{addr_of_words, mapped_v4_words},
    limits::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS},
};

const ETH_HDR: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// Upper bound on any header offset we follow; keeps offsets provably small for
/// the verifier and is far above any sane header stack.
const MAX_L4_OFFSET: usize = 1024;

/// Layer-3 facts the rest of the program needs. `ip` fills the addresses
/// (all the blocklist needs) and whatever else the fixed IP header holds;
/// `complete` then does what can still fail (IPv6 extension headers, a malformed
/// IPv4 header), after the source has been checked against the blocklist.
pub struct L3 {
    pub src: Addr,
    pub dst: Addr,
    /// Transport protocol (after IPv6 extension headers, once complete).
    pub proto: u8,
    /// Offset of the transport header (once complete).
    pub l4_off: usize,
    /// A non-first fragment: no transport header in this frame.
    pub later_fragment: bool,
    /// The first fragment of a fragmented datagram (more follow): its transport
    /// header may be cut short, which no conforming stack does (RFC 1858).
    pub first_fragment: bool,
    /// An IPv6 header (the family of the header, not of the address: an
    /// IPv4-mapped source may arrive in either).
    pub v6: bool,
    /// An IPv4 header with a wrong version or IHL: its addresses are still read.
    bad_header: bool,
}

/// Where the IP header starts, after Ethernet and any VLAN tags.
pub struct Located {
    /// Offset of the IP header.
    off: usize,
    v6: bool,
}

/// A checked view of `N` header bytes at `offset`. Checking whole headers (N >= 2)
/// rather than single bytes keeps the comparison in the `ptr + N > end` form the
/// verifier understands (LLVM rewrites `ptr + 1 > end` into `ptr >= end`, which
/// it does not).
#[inline(always)]
pub fn header<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<*const [u8; N], ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return Err(());
    }
    Ok((start + offset) as *const [u8; N])
}

/// Byte `i` of a checked header view.
#[inline(always)]
pub fn byte<const N: usize>(h: *const [u8; N], i: usize) -> u8 {
    // SAFETY: `h` was bounds-checked for N bytes by `header`; callers index with
    // constants below N.
    unsafe { (*h)[i] }
}

/// Big-endian u16 at `i` of a checked header view.
#[inline(always)]
pub fn be16<const N: usize>(h: *const [u8; N], i: usize) -> u16 {
    u16::from_be_bytes([byte(h, i), byte(h, i + 1)])
}

/// Ethernet and up to two VLAN tags: where an IPv4 or IPv6 header starts,
/// `None` for other protocols (ARP, LLDP, ...: passed untouched).
#[inline(always)]
pub fn locate(ctx: &XdpContext) -> Result<Option<Located>, ()> {
    let eth = header::<ETH_HDR>(ctx, 0)?;
    let mut ethertype = be16(eth, 12);
    let mut off = ETH_HDR;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(header::<4>(ctx, off)?, 2);
        off += 4;
    }
    match ethertype {
        ETH_P_IPV4 => Ok(Some(Located { off, v6: false })),
        ETH_P_IPV6 => Ok(Some(Located { off, v6: true })),
        // A third VLAN tag is beyond what we parse: count it as a parse failure.
        ETH_P_8021Q | ETH_P_8021AD => Err(()),
        _ => Ok(None),
    }
}

/// The source address as the two native words of its 16-byte form
/// (`fastpath::mapped_v4_words` for IPv4), read with word loads; `None` when
/// the frame is too short for the fixed IP header (the full parse says why).
#[inline(always)]
pub fn source_words(ctx: &XdpContext, at: &Located) -> Option<[u64; 2]> {
    if at.v6 {
        let h = header::<40>(ctx, at.off).ok()?;
        let p = h as usize + 8;
        Some([load_u64(p), load_u64(p + 8)])
    } else {
        let h = header::<20>(ctx, at.off).ok()?;
        Some(mapped_v4_words(load_u32(h as usize + 12)))
    }
}

/// One 4-byte load from the frame at `p` (bounds-checked by the caller). A
/// Rust read would either assume an alignment the frame does not promise or
/// split into byte loads; the instruction itself does neither, and the
/// kernel allows unaligned packet loads where the CPU does.
#[inline(always)]
fn load_u32(p: usize) -> u32 {
    let v: u64;
    // SAFETY: `p` lies inside a range the caller checked against data_end.
    unsafe { core::arch::asm!("{v} = *(u32 *)({p} + 0)", v = out(reg) v, p = in(reg) p) };
    v as u32
}

/// One 8-byte load from the frame at `p`, as `load_u32`.
#[inline(always)]
fn load_u64(p: usize) -> u64 {
    let v: u64;
    // SAFETY: as for `load_u32`.
    unsafe { core::arch::asm!("{v} = *(u64 *)({p} + 0)", v = out(reg) v, p = in(reg) p) };
    v
}

/// The fixed IP header at `at`: addresses, protocol, fragment bits.
#[inline(always)]
pub fn ip(ctx: &XdpContext, at: &Located) -> Result<L3, ()> {
    if at.v6 {
        parse_ipv6(ctx, at.off)
    } else {
        parse_ipv4(ctx, at.off)
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<L3, ()> {
    let h = header::<20>(ctx, off)?;
    let ver_ihl = byte(h, 0);
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    let src = addr_of_words(mapped_v4_words(load_u32(h as usize + 12)));
    let dst = addr_of_words(mapped_v4_words(load_u32(h as usize + 16)));
    // Options (if any) are skipped by IHL; a frame too short for them fails at the
    // transport header read, which is bounds-checked itself.
    Ok(L3 {
        src,
        dst,
        proto: byte(h, 9),
        l4_off: off + ihl,
        later_fragment: be16(h, 6) & 0x1fff != 0,
        first_fragment: be16(h, 6) & 0x3fff == 0x2000,
        v6: false,
        bad_header: ver_ihl >> 4 != 4 || ihl < 20,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Result<L3, ()> {
    let h = header::<40>(ctx, off)?;
    Ok(L3 {
        src: addr_of_words([load_u64(h as usize + 8), load_u64(h as usize + 16)]),
        dst: addr_of_words([load_u64(h as usize + 24), load_u64(h as usize + 32)]),
        proto: byte(h, 6),
        l4_off: off + 40,
        later_fragment: false,
        first_fragment: false,
        v6: true,
        bad_header: byte(h, 0) >> 4 != 6,
    })
}

/// What can fail once the addresses are known: a malformed IP header, or an
/// IPv6 extension-header chain we cannot walk (too long, truncated).
#[inline(always)]
pub fn complete(ctx: &XdpContext, l3: &mut L3) -> Result<(), ()> {
    if l3.bad_header {
        return Err(());
    }
    if !l3.v6 {
        return Ok(());
    }
    let mut next = l3.proto;
    let mut l4_off = l3.l4_off;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
        ) {
            break;
        }
        // Every extension header we walk is at least 8 bytes.
        let ext = header::<8>(ctx, l4_off)?;
        let len = if next == IPPROTO_FRAGMENT {
            let frag = be16(ext, 2);
            l3.later_fragment = frag >> 3 != 0;
            l3.first_fragment = frag == 1;
            8
        } else {
            (byte(ext, 1) as usize + 1) * 8
        };
        next = byte(ext, 0);
        l4_off += len;
        if l4_off > MAX_L4_OFFSET {
            return Err(());
        }
        if l3.later_fragment {
            break;
        }
    }
    if !l3.later_fragment
        && matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
        )
    {
        return Err(());
    }
    l3.proto = next;
    l3.l4_off = l4_off;
    Ok(())
}
