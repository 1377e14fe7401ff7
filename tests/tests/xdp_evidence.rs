//! BPF_PROG_TEST_RUN: what counts as evidence and what never does.
//! - a blocked source is dropped whatever follows its address (an IPv6 chain too
//!   long to walk, a malformed IPv4 header);
//! - only traffic to the host's own addresses is scored (`POLICY_LOCAL_ONLY`);
//! - a socket of the host (a listener newer than the bitmap, a resolver's query
//!   port, a privileged client port) explains a packet: real sockets, opened in the
//!   test's own network namespace, which the program's lookups see;
//! - contacts with open ports never add up to a block;
//! - tiny first fragments are scored, and a source's later fragments dropped;
//! - SCTP INIT / COOKIE ECHO and IP protocol scans are scored and blocked; ICMP
//!   timestamp and address-mask requests are reported as discovery, never blocked;
//! - the port sketch is keyed: ports that share a bucket with the open ports
//!   under the public hash no longer hide a scan.

use std::net::{TcpListener, TcpStream, UdpSocket};

use scan_guard_common::{
    config::{KernelConfig, POLICY_AUTO_BLOCK},
    flags::{ACK, FIN, ProbeKind, SYN},
    sketch::port_bucket,
    stats::Stat,
};
use scan_guard_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, addr},
    packet::{EXT_HOP_BY_HOP, Frag, L4, Pkt, UNWALKABLE_IPV6_CHAIN},
};

const HOST4: &str = "10.60.0.1";
const HOST6: &str = "2001:db8:60::1";

fn guard() -> Harness {
    let mut h = Harness::new(KernelConfig {
        policy: POLICY_AUTO_BLOCK,
        max_auto_blocks_per_sec: 0,
        ..KernelConfig::default()
    });
    h.set_local(&[HOST4, HOST6, "127.0.0.1"]);
    h
}

fn stat(h: &Harness, s: Stat) -> u64 {
    h.stats()[s as usize]
}

#[test]
fn a_blocked_source_is_dropped_whatever_follows_its_address() {
    let mut h = guard();
    h.block("2001:db8:66::6", 128, 0);
    h.block("10.66.0.6", 32, 0);
    let chain = UNWALKABLE_IPV6_CHAIN;
    let long = |src| Pkt::tcp(src, HOST6, 22, SYN).ipv6_ext(&chain).build();
    assert_eq!(
        h.run(&long("2001:db8:66::6")),
        XDP_DROP,
        "blocked, unparseable chain"
    );
    assert_eq!(
        h.run(&long("2001:db8:66::7")),
        XDP_PASS,
        "not blocked: fail open"
    );
    assert_eq!(stat(&h, Stat::ParseFailed), 1);
    // A truncated chain: the fixed header is there, the first extension is cut.
    let mut cut = Pkt::tcp("2001:db8:66::6", HOST6, 22, SYN)
        .ipv6_ext(&[EXT_HOP_BY_HOP])
        .build();
    cut.truncate(14 + 40 + 4);
    assert_eq!(h.run(&cut), XDP_DROP, "blocked, truncated extension header");
    // IPv4 with a bad IHL (and a bad version): the addresses are still read.
    for byte0 in [0x42u8, 0x65] {
        let mut f = Pkt::tcp("10.66.0.6", HOST4, 22, SYN).build();
        f[14] = byte0;
        assert_eq!(h.run(&f), XDP_DROP, "blocked, IPv4 first byte {byte0:#x}");
        let mut g = Pkt::tcp("10.66.0.7", HOST4, 22, SYN).build();
        g[14] = byte0;
        assert_eq!(
            h.run(&g),
            XDP_PASS,
            "not blocked, IPv4 first byte {byte0:#x}"
        );
    }
    assert_eq!(stat(&h, Stat::DroppedBlocked), 4);
}

#[test]
fn only_the_hosts_own_addresses_are_scored() {
    let mut h = guard();
    // A scan of another host (forwarded), of the broadcast address and of a
    // multicast group: passed, never scored, whatever the volume.
    for (src, dst) in [
        ("10.61.0.2", "10.60.0.99"),
        ("10.61.0.3", "10.60.0.255"),
        ("10.61.0.4", "224.0.0.251"),
        ("2001:db8:61::2", "2001:db8:60::99"),
        ("2001:db8:61::3", "ff02::1"),
    ] {
        for port in 1..=200 {
            assert_eq!(h.run(&Pkt::tcp(src, dst, port, SYN).build()), XDP_PASS);
            assert_eq!(h.run(&Pkt::udp(src, dst, port).build()), XDP_PASS);
        }
        assert!(
            h.maps.source(&addr(src)).is_none(),
            "{src} -> {dst} tracked"
        );
    }
    assert_eq!(stat(&h, Stat::Probes), 0);
    assert_eq!(stat(&h, Stat::NotLocal), 5 * 400);
    // Invalid flags are dropped wherever they go (no stack sends them), unscored.
    assert_eq!(
        h.run(&Pkt::tcp("10.61.0.5", "10.60.0.99", 80, 0).build()),
        XDP_DROP
    );
    assert!(h.maps.source(&addr("10.61.0.5")).is_none());
    // The same scan of the host itself is caught.
    let verdicts: Vec<u32> = (1..=20)
        .map(|p| h.run(&Pkt::tcp("10.61.0.2", HOST4, p, SYN).build()))
        .collect();
    assert!(
        verdicts.contains(&XDP_DROP),
        "scan of the host not blocked: {verdicts:?}"
    );
    assert_eq!(h.drain_events().len(), 1);
}

#[test]
fn sockets_of_the_host_explain_replies_and_new_listeners() {
    let mut h = guard();
    h.set_listening(&[], &[]);
    // Loopback up in the test's own namespace, for a real TCP connection.
    let lo = std::process::Command::new("timeout")
        .args(["10", "ip", "link", "set", "lo", "up"])
        .status()
        .expect("ip link set lo up");
    assert!(lo.success());
    // A resolver's query socket (random port below the ephemeral range) and a
    // collector that bound after the last bitmap refresh.
    let query = UdpSocket::bind("0.0.0.0:20053").expect("udp bind 20053");
    let query_port = query.local_addr().expect("addr").port();
    let collector = UdpSocket::bind("0.0.0.0:1514").expect("udp bind 1514");
    // A listener the bitmap does not know yet (passive FTP data port).
    let data = TcpListener::bind("0.0.0.0:2121").expect("tcp bind 2121");
    // A client bound to a privileged port, connected to a local server.
    let server = TcpListener::bind("127.0.0.1:7000").expect("tcp bind 7000");
    let client = {
        let s = socket2_bind_connect(600, 7000);
        let _ = server.accept().expect("accept");
        s
    };
    let upstream = "10.62.0.53";
    let udp_from = |sport, dport| Pkt::new(upstream, HOST4, L4::Udp { sport, dport }).build();
    // Hundreds of answers to the resolver's port and syslog to the collector.
    for _ in 0..300 {
        assert_eq!(h.run(&udp_from(53, query_port)), XDP_PASS);
        assert_eq!(h.run(&udp_from(40_000, 1514)), XDP_PASS);
    }
    // SYNs to the new listener count as contacts with an open port.
    for sport in 41_000..41_050 {
        let f = Pkt::new(
            "10.62.0.21",
            HOST4,
            L4::Tcp {
                sport,
                dport: 2121,
                flags: SYN,
            },
        )
        .build();
        assert_eq!(h.run(&f), XDP_PASS);
    }
    // The server's ACK and FIN+ACK to the privileged client port.
    for flags in [ACK, FIN | ACK] {
        let f = Pkt::new(
            "127.0.0.1",
            "127.0.0.1",
            L4::Tcp {
                sport: 7000,
                dport: 600,
                flags,
            },
        )
        .build();
        assert_eq!(h.run(&f), XDP_PASS);
    }
    assert!(
        h.drain_events().is_empty(),
        "a socket-explained packet raised an event"
    );
    assert!(
        h.maps.source(&addr("127.0.0.1")).is_none(),
        "replies to the client scored"
    );
    let st = h.maps.source(&addr("10.62.0.21")).expect("SYNs tracked");
    assert_eq!(st.score, 0, "a listener's contacts weigh nothing");
    // The port sockets are for, and not one port more: a closed neighbour counts.
    assert_eq!(h.run(&udp_from(53, 1515)), XDP_PASS);
    let up = h.maps.source(&addr(upstream)).expect("closed port scored");
    assert_eq!(up.probes[ProbeKind::Udp as usize], 1);
    let f = Pkt::new(
        "127.0.0.1",
        "127.0.0.1",
        L4::Tcp {
            sport: 7000,
            dport: 601,
            flags: ACK,
        },
    )
    .build();
    assert_eq!(h.run(&f), XDP_PASS);
    assert_eq!(
        h.maps
            .source(&addr("127.0.0.1"))
            .expect("stray ACK scored")
            .probes[ProbeKind::Ack as usize],
        1
    );
    assert!(stat(&h, Stat::SocketExplained) >= 600 + 50 + 2);
    drop((query, collector, data, client));
}

/// A TCP client bound to local port `local` connected to 127.0.0.1:`port`.
fn socket2_bind_connect(local: u16, port: u16) -> TcpStream {
    // SAFETY: plain socket/bind/connect on a descriptor we own and hand to TcpStream.
    unsafe {
        use std::os::fd::FromRawFd as _;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |p: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: p.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let a = sin(local);
        assert_eq!(
            libc::bind(fd, (&raw const a).cast(), len),
            0,
            "bind :{local}: {}",
            std::io::Error::last_os_error()
        );
        let b = sin(port);
        assert_eq!(
            libc::connect(fd, (&raw const b).cast(), len),
            0,
            "connect :{port}: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}

#[test]
fn a_client_of_twenty_open_ports_is_never_scored_to_a_block() {
    let mut h = guard();
    let open: Vec<u16> = (1..=20).map(|i| i * 11).collect();
    h.set_listening(&open, &[]);
    for round in 0..5 {
        for port in &open {
            let f = Pkt::new(
                "10.63.0.2",
                HOST4,
                L4::Tcp {
                    sport: 42_000 + round,
                    dport: *port,
                    flags: SYN,
                },
            )
            .build();
            assert_eq!(h.run(&f), XDP_PASS);
        }
    }
    assert!(h.drain_events().is_empty());
    let st = h.maps.source(&addr("10.63.0.2")).expect("tracked");
    assert_eq!((st.score, st.distinct_ports), (0, 20));
}

/// An nmap -f style first fragment: the IP header and 8 bytes of TCP (ports and
/// sequence number), no flags.
fn tiny_first_fragment(src: &str, port: u16) -> Vec<u8> {
    let mut f = Pkt::tcp(src, HOST4, port, SYN).frag(Frag::First).build();
    f.truncate(14 + 20 + 8);
    // Total length follows the cut, as a real fragment's does.
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    f
}

#[test]
fn tiny_first_fragments_are_scored_and_their_later_fragments_dropped() {
    let mut h = Harness::new(KernelConfig {
        policy: 0, // report only, so the fragment rule itself is what drops
        ..KernelConfig::default()
    });
    h.set_local(&[HOST4]);
    let later = |src| Pkt::new(src, HOST4, L4::Other(6)).frag(Frag::Later).build();
    assert_eq!(
        h.run(&later("10.64.0.3")),
        XDP_PASS,
        "an ordinary later fragment"
    );
    for port in [21u16, 22, 23, 25, 80, 110] {
        assert_eq!(h.run(&tiny_first_fragment("10.64.0.2", port)), XDP_DROP);
        assert_eq!(
            h.run(&later("10.64.0.2")),
            XDP_DROP,
            "later fragment after a tiny first"
        );
    }
    assert_eq!(
        h.run(&later("10.64.0.3")),
        XDP_PASS,
        "other sources unaffected"
    );
    let events = h.drain_events();
    assert_eq!(events.len(), 1, "one event for the fragment scan");
    assert_eq!(events[0].last_kind, ProbeKind::Fragment as u8);
    assert_eq!(stat(&h, Stat::DroppedTinyFragment), 6);
    assert_eq!(stat(&h, Stat::DroppedFragment), 6);
    assert_eq!(stat(&h, Stat::Fragments), 2);
    // With auto-block on, the same scan blocks its source within the probe goal.
    let mut g = guard();
    let verdicts: Vec<u32> = [21u16, 22, 23, 25, 80, 110]
        .iter()
        .map(|p| g.run(&tiny_first_fragment("10.64.0.2", *p)))
        .collect();
    assert!(
        g.maps.block_for_host(&addr("10.64.0.2")).is_some(),
        "not blocked: {verdicts:?}"
    );
}

#[test]
fn a_keyed_port_sketch_leaves_no_ports_to_hide_behind() {
    let open = [22u16, 80, 443];
    // What a scanner who knows the unkeyed hash would scan: closed ports that
    // share a bucket with an open port, so each looks like a port already seen.
    let hidden: Vec<u16> = (1..=u16::MAX)
        .filter(|p| !open.contains(p))
        .filter(|p| {
            open.iter()
                .any(|o| port_bucket(*o, 0) == port_bucket(*p, 0))
        })
        .take(200)
        .collect();
    assert_eq!(hidden.len(), 200);
    let scan = |key: u32| {
        let mut h = Harness::new(KernelConfig {
            policy: POLICY_AUTO_BLOCK,
            sketch_key: key,
            ..KernelConfig::default()
        });
        h.set_local(&[HOST4]);
        h.set_listening(&open, &[]);
        let src = "10.65.0.2";
        for p in open.iter().chain(&hidden) {
            h.run(&Pkt::tcp(src, HOST4, *p, SYN).build());
        }
        h.maps.block_for_host(&addr(src)).is_some()
    };
    assert!(
        !scan(0),
        "with the public hash the 200 ports hide (the attack this closes)"
    );
    for key in [0x6d2f_91a7u32, 0x0000_beef, 0xffff_0001] {
        assert!(scan(key), "key {key:#x}: the hidden ports were not counted");
    }
}

/// An IPv4 SCTP packet with one chunk of type `chunk` to `port`.
fn sctp(src: &str, port: u16, chunk: u8) -> Vec<u8> {
    let mut f = Pkt::new(src, HOST4, L4::Other(132)).payload(8).build();
    f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&port.to_be_bytes());
    f[14 + 20 + 12] = chunk;
    f
}

fn icmp_type(src: &str, t: u8) -> Vec<u8> {
    let mut f = Pkt::icmp_echo(src, HOST4).build();
    f[14 + 20] = t;
    f
}

#[test]
fn sctp_and_ip_protocol_scans_are_blocked_and_icmp_discovery_reported() {
    let mut h = guard();
    let blocked_after = |h: &mut Harness, src: &str, frames: &[Vec<u8>]| {
        frames
            .iter()
            .position(|f| h.run(f) == XDP_DROP)
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{src} never blocked"))
    };
    // nmap -sY (INIT) and -sZ (COOKIE ECHO) over closed SCTP ports.
    let init: Vec<Vec<u8>> = (1..=50).map(|p| sctp("10.67.0.2", p, 1)).collect();
    let cookie: Vec<Vec<u8>> = (1..=50).map(|p| sctp("10.67.0.3", p, 10)).collect();
    // nmap -sO: one packet per IP protocol number.
    let protos: Vec<Vec<u8>> = [2u8, 4, 41, 47, 50, 51, 89, 103, 112, 115, 136, 255]
        .iter()
        .map(|p| Pkt::new("10.67.0.4", HOST4, L4::Other(*p)).build())
        .collect();
    for (src, frames, kind) in [
        ("10.67.0.2", &init, ProbeKind::Sctp),
        ("10.67.0.3", &cookie, ProbeKind::Sctp),
        ("10.67.0.4", &protos, ProbeKind::Protocol),
    ] {
        let n = blocked_after(&mut h, src, frames);
        assert!(n <= 8, "{src}: blocked after {n} probes");
        let ev = h.drain_events();
        assert_eq!(ev.len(), 1, "{src}");
        assert_eq!(ev[0].last_kind, kind as u8, "{src}");
    }
    // A tunnel peer (GRE and ESP all day) and an SCTP client of one port: never.
    for _ in 0..500 {
        for f in [
            Pkt::new("10.67.0.5", HOST4, L4::Other(47)).build(),
            Pkt::new("10.67.0.5", HOST4, L4::Other(50)).build(),
            sctp("10.67.0.6", 3868, 1),
        ] {
            assert_eq!(h.run(&f), XDP_PASS);
        }
    }
    assert!(h.drain_events().is_empty());
    // nmap -PP and -PM: reported once as discovery, never blocked.
    for t in [13u8, 17, 13, 17] {
        assert_eq!(h.run(&icmp_type("10.67.0.7", t)), XDP_PASS);
    }
    let ev = h.drain_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].trigger,
        scan_guard_common::state::Trigger::Discovery as u8
    );
    assert_eq!(ev[0].blocked, 0);
    assert!(h.maps.block_for_host(&addr("10.67.0.7")).is_none());
    // Echo replies and other ICMP types are not discovery.
    for t in [0u8, 3, 11, 14, 18] {
        assert_eq!(h.run(&icmp_type("10.67.0.8", t)), XDP_PASS);
    }
    assert!(h.maps.source(&addr("10.67.0.8")).is_none());
}

#[test]
fn every_map_of_the_program_is_pinned_by_name() {
    // A map missing from `map_names::ALL` would not be pinned, and control
    // commands (which open every map by its pin) would fail against a running
    // instance.
    let ebpf = scan_guard::kernel::loader::load_with(None, None).expect("load");
    let mut in_object: Vec<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        .filter(|n| !n.starts_with('.') && !n.starts_with("AYA_"))
        .collect();
    in_object.sort_unstable();
    let mut all = scan_guard_common::map_names::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(in_object, all);
}
