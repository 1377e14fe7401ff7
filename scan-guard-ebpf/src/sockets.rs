//! The host's own sockets, asked at the moment a packet could become evidence. A
//! listener that opened since the controller's last refresh (a passive FTP data
//! port, a restarted collector), or the socket a reply is for (a resolver's query
//! port, a privileged client port), explains the packet: it is not a probe.
//! Only paths that would otherwise record a probe pay for the lookup.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple},
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};

use crate::parse::L3;

/// The lookup's netns argument: the namespace of the receiving device.
const CURRENT_NETNS: u64 = BPF_F_CURRENT_NETNS as i64 as u64;
const TUPLE_V4: u32 = 12;
const TUPLE_V6: u32 = 36;

/// The packet's 4-tuple as the lookup helpers take it (network byte order).
#[inline(always)]
fn tuple(l3: &L3, sport: u16, dport: u16) -> (bpf_sock_tuple, u32) {
    // SAFETY: an all-zero tuple is a valid value of this plain C union.
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let word = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    // SAFETY: writes to the fields of a plain C union.
    unsafe {
        if l3.v6 {
            let v6 = &mut t.__bindgen_anon_1.ipv6;
            for k in 0..4 {
                v6.saddr[k] = word(&l3.src, k * 4);
                v6.daddr[k] = word(&l3.dst, k * 4);
            }
            v6.sport = sport.to_be();
            v6.dport = dport.to_be();
        } else {
            let v4 = &mut t.__bindgen_anon_1.ipv4;
            v4.saddr = word(&l3.src, 12);
            v4.daddr = word(&l3.dst, 12);
            v4.sport = sport.to_be();
            v4.dport = dport.to_be();
        }
    }
    (t, if l3.v6 { TUPLE_V6 } else { TUPLE_V4 })
}

#[inline(always)]
fn found(sk: *mut bpf_sock) -> bool {
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is a referenced socket the lookup returned; released once.
    unsafe { bpf_sk_release(sk.cast()) };
    true
}

/// A TCP socket of any state (listener, request, established, time-wait) for the
/// packet's tuple.
#[inline(never)]
pub fn tcp(ctx: &XdpContext, l3: &L3, sport: u16, dport: u16) -> bool {
    let (mut t, size) = tuple(l3, sport, dport);
    // SAFETY: the tuple lives on our stack for the call; `size` matches its family.
    found(unsafe { bpf_skc_lookup_tcp(ctx.as_ptr(), &mut t, size, CURRENT_NETNS, 0) })
}

/// A UDP socket bound (or connected) to the packet's destination port.
#[inline(never)]
pub fn udp(ctx: &XdpContext, l3: &L3, sport: u16, dport: u16) -> bool {
    let (mut t, size) = tuple(l3, sport, dport);
    // SAFETY: as for `tcp`.
    found(unsafe { bpf_sk_lookup_udp(ctx.as_ptr(), &mut t, size, CURRENT_NETNS, 0) })
}
