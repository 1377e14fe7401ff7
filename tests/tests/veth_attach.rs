//! The real controller attached to a veth between two network namespaces, in
//! native and in skb mode:
//! - ordinary HTTP over IPv4 and IPv6 goes through;
//! - segments with invalid TCP flag combinations (one batch per class, hping3 over
//!   IPv4 and raw sockets over IPv6) are dropped before the stack: the per-class
//!   drop counters rise by exactly what was sent, and a tcpdump on the protected
//!   interface sees none of them (while it does see them once the program is gone);
//! - SIGTERM detaches: exit status 0, link pin gone, no XDP program left;
//! - the lab leaves no namespace, mount or directory behind.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use scan_guard_common::{
    flags::{INVALID_CLASSES, InvalidClass, classify_invalid},
    stats::{Stat, StatBlock},
};
use scan_guard_tests::{
    is_root,
    lab::{Controller, Lab, TcpSeen, XdpMode, describe, netns_list, read_lossy},
};

const PORT: u16 = 8080;
/// Segments sent per invalid class and address family.
const PER_CLASS: u64 = 5;

/// Every invalid class with the hping3 flags that produce it and its flag byte.
const CLASSES: [(InvalidClass, &[&str], u8); INVALID_CLASSES] = [
    (InvalidClass::Null, &[], 0x00),
    (InvalidClass::SynFin, &["-S", "-F"], 0x03),
    (InvalidClass::SynRst, &["-S", "-R"], 0x06),
    (InvalidClass::FinRst, &["-F", "-R"], 0x05),
    (InvalidClass::Xmas, &["-F", "-P", "-U"], 0x29),
    (InvalidClass::NoAck, &["-F"], 0x01),
];

/// Sends `count` TCP segments with each given flag byte over IPv6 through a raw
/// socket (hping3 speaks IPv4 only). argv: dst dport count flags...
const SEND_V6: &str = r#"
import socket, struct, sys
dst, dport, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IPV6, 7, 16)  # IPV6_CHECKSUM: kernel fills the TCP checksum
sent = 0
for flags in (int(f, 0) for f in sys.argv[4:]):
    for i in range(count):
        seg = struct.pack("!HHIIBBHHH", 41000 + sent, dport, 1000 + i, 0, 5 << 4, flags, 1024, 0, 0)
        s.sendto(seg, (dst, 0))
        sent += 1
print("sent", sent)
"#;

#[test]
fn native_xdp_on_veth_passes_http_drops_invalid_flags_and_detaches() {
    attach_enforce_detach(XdpMode::Native);
}

#[test]
fn skb_xdp_on_veth_passes_http_drops_invalid_flags_and_detaches() {
    attach_enforce_detach(XdpMode::Skb);
}

fn delta(after: &StatBlock, before: &StatBlock, i: usize) -> u64 {
    after[i].wrapping_sub(before[i])
}

fn url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}:{PORT}/"),
        IpAddr::V6(a) => format!("http://[{a}]:{PORT}/"),
    }
}

/// One HTTP GET from the attacker namespace; panics unless the answer is 200.
fn http_get_ok(lab: &Lab, ip: IpAddr, when: &str) {
    let u = url(ip);
    let out = lab.exec_in_for(
        &lab.att.ns,
        Duration::from_secs(10),
        &[
            "curl",
            "-sS",
            "-g",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &u,
        ],
    );
    let code = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && code.trim() == "200",
        "[{}] {when}: GET {u} from the attacker namespace: {}",
        lab.tag,
        describe(&out)
    );
}

fn hping3(lab: &Lab, count: u64, flags: &[&str]) {
    let (count_s, port_s, dst) = (count.to_string(), PORT.to_string(), lab.tgt.v4.to_string());
    let mut args = vec!["hping3", "-n", "-c", &count_s, "-i", "u1000", "-p", &port_s];
    args.extend_from_slice(flags);
    args.push(&dst);
    let out = lab.exec_in_for(&lab.att.ns, Duration::from_secs(10), &args);
    // hping3 exits 1 when nothing answered (expected: everything is dropped), so
    // its own statistics line is what proves the packets left.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.code() != Some(124) && text.contains(&format!("{count} packets transmitted")),
        "[{}] hping3 {flags:?}: {}",
        lab.tag,
        describe(&out)
    );
}

fn send_v6(lab: &Lab, count: u64, flag_bytes: &[u8]) {
    let (dst, port_s, count_s) = (lab.tgt.v6.to_string(), PORT.to_string(), count.to_string());
    let flags: Vec<String> = flag_bytes.iter().map(|f| format!("{f:#04x}")).collect();
    let mut args = vec!["python3", "-c", SEND_V6, &dst, &port_s, &count_s];
    args.extend(flags.iter().map(String::as_str));
    let out = lab.exec_in(&lab.att.ns, &args);
    let want = format!("sent {}", count * flag_bytes.len() as u64);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&want),
        "[{}] raw IPv6 sender: {}",
        lab.tag,
        describe(&out)
    );
}

/// Polls the kernel counters until every invalid class has dropped `want` more
/// segments than in `before` (or 3 s pass), then returns them.
fn stats_when_dropped(c: &Controller, before: &StatBlock, want: u64) -> StatBlock {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = c.stats();
        let done = InvalidClass::ALL
            .iter()
            .all(|&k| delta(&now, before, Stat::dropped_invalid(k)) >= want);
        if done || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn from_attacker(lab: &Lab, s: &TcpSeen) -> bool {
    s.src == IpAddr::V4(lab.att.v4) || s.src == IpAddr::V6(lab.att.v6)
}

fn attach_enforce_detach(mode: XdpMode) {
    assert!(
        is_root(),
        "the veth tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new(&format!("veth-{}", mode.as_str()));
    let id = lab.id.clone();
    let lab_dir = lab.dir.clone();
    let tgt_v4 = IpAddr::V4(lab.tgt.v4);
    let tgt_v6 = IpAddr::V6(lab.tgt.v6);

    // A real TCP service in the target namespace (dual-stack on ::).
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).expect("www dir");
    std::fs::write(www.join("index.html"), "scan-guard lab\n").expect("index.html");
    let server_log = lab.file("http-server", "log");
    lab.spawn_in(
        &lab.tgt.ns,
        &[
            "python3",
            "-m",
            "http.server",
            &PORT.to_string(),
            "--bind",
            "::",
            "--directory",
            www.to_str().expect("utf-8 path"),
        ],
        &server_log,
    );
    lab.wait_listening(&lab.tgt.ns, PORT, Duration::from_secs(10));
    // Sanity before anything is attached.
    let link = lab.link_show(&lab.tgt);
    assert!(
        !link.contains("xdp"),
        "[{}] an XDP program is on {} before the controller started:\n{link}",
        lab.tag,
        lab.tgt.iface
    );

    let c = lab.start_controller(mode);
    let ctl_log = || read_lossy(&c.log);
    // `ip link` names the attach mode on its first line ("xdp" or "xdpgeneric").
    let link = lab.link_show(&lab.tgt);
    let word = mode.ip_link_word();
    assert!(
        link.lines()
            .next()
            .is_some_and(|l| l.split_whitespace().any(|w| w == word)),
        "[{}] after attaching in {} mode `ip -d link show` does not say {word:?}:\n{link}\n--- controller log ---\n{}",
        lab.tag,
        mode.as_str(),
        ctl_log()
    );
    assert!(
        link.contains("name scan_guard"),
        "[{}] the attached program is not scan_guard:\n{link}",
        lab.tag
    );

    let cap = lab.start_capture(&lab.tgt);
    let s0 = c.stats();

    // (a) Ordinary traffic passes, over both families.
    http_get_ok(&lab, tgt_v4, "with the program attached");
    http_get_ok(&lab, tgt_v6, "with the program attached");
    let s1 = c.stats();
    assert!(
        delta(&s1, &s0, Stat::Packets as usize) >= 6 && delta(&s1, &s0, Stat::Passed as usize) >= 6,
        "[{}] the program saw too little of two HTTP exchanges (packets +{}, passed +{}): is it on the receive path?",
        lab.tag,
        delta(&s1, &s0, Stat::Packets as usize),
        delta(&s1, &s0, Stat::Passed as usize)
    );
    for k in InvalidClass::ALL {
        assert_eq!(
            delta(&s1, &s0, Stat::dropped_invalid(k)),
            0,
            "[{}] HTTP traffic counted as invalid {k:?}",
            lab.tag
        );
    }

    // (b) Invalid flag combinations, PER_CLASS of each class per family.
    for (_, flags, _) in CLASSES {
        hping3(&lab, PER_CLASS, flags);
    }
    let bytes: Vec<u8> = CLASSES.iter().map(|(_, _, b)| *b).collect();
    send_v6(&lab, PER_CLASS, &bytes);
    let s2 = stats_when_dropped(&c, &s1, 2 * PER_CLASS);
    for (class, flags, byte) in CLASSES {
        assert_eq!(
            classify_invalid(byte),
            Some(class),
            "test table: flag byte {byte:#04x} is not {class:?}"
        );
        let got = delta(&s2, &s1, Stat::dropped_invalid(class));
        assert_eq!(
            got,
            2 * PER_CLASS,
            "[{}] {} mode: dropped_invalid({}) rose by {got}, want {} ({PER_CLASS} via hping3 {flags:?} over IPv4 + {PER_CLASS} flags {byte:#04x} over IPv6)\n--- controller log ---\n{}",
            lab.tag,
            mode.as_str(),
            class.name(),
            2 * PER_CLASS,
            ctl_log()
        );
        assert_eq!(
            delta(&s2, &s1, Stat::counted_invalid(class)),
            0,
            "[{}] {class:?} counted-and-passed instead of dropped",
            lab.tag
        );
    }
    assert!(
        delta(&s2, &s1, Stat::Packets as usize) >= 2 * PER_CLASS * INVALID_CLASSES as u64,
        "[{}] packet counter did not see the invalid segments",
        lab.tag
    );

    // A few invalid segments to one open port are not a scan: the attacker is not
    // blocked and still gets its page.
    http_get_ok(&lab, tgt_v4, "after the invalid segments");
    http_get_ok(&lab, tgt_v6, "after the invalid segments");
    let s3 = c.stats();
    assert_eq!(
        delta(&s3, &s0, Stat::AutoBlocks as usize),
        0,
        "[{}] attacker got auto-blocked",
        lab.tag
    );
    assert_eq!(
        delta(&s3, &s0, Stat::DroppedBlocked as usize),
        0,
        "[{}]",
        lab.tag
    );

    let seen = lab.stop_capture(&cap);
    for dst in [tgt_v4, tgt_v6] {
        assert!(
            seen.iter().any(|s| from_attacker(&lab, s)
                && s.dst == dst
                && s.dport == PORT
                && s.flags & 0x3f == 0x02),
            "[{}] the capture on {} missed the HTTP client's SYN to {dst}: the 'nothing got through' check below would be vacuous ({} TCP segments captured)",
            lab.tag,
            lab.tgt.iface,
            seen.len()
        );
    }
    let leaked: Vec<&TcpSeen> = seen
        .iter()
        .filter(|s| from_attacker(&lab, s) && classify_invalid(s.flags).is_some())
        .collect();
    assert!(
        leaked.is_empty(),
        "[{}] {} mode: {} invalid-flag segments reached the stack past XDP: {leaked:?}",
        lab.tag,
        mode.as_str(),
        leaked.len()
    );

    // (c) SIGTERM: clean exit, link pin gone, program detached.
    let status = lab.stop_controller(&c);
    assert!(
        status.success(),
        "[{}] controller exit on SIGTERM: {status:?}\n--- controller log ---\n{}",
        lab.tag,
        ctl_log()
    );
    assert!(
        !c.link_pin().exists(),
        "[{}] link pin {} survived a clean stop",
        lab.tag,
        c.link_pin().display()
    );
    for name in scan_guard_common::map_names::ALL {
        assert!(
            !c.pin_dir.join(name).exists(),
            "[{}] map pin {name} survived a clean stop",
            lab.tag
        );
    }
    let link = lab.link_show(&lab.tgt);
    assert!(
        !link.contains("xdp"),
        "[{}] XDP program still attached to {} after the controller stopped:\n{link}",
        lab.tag,
        lab.tgt.iface
    );
    assert!(
        std::fs::read_to_string(&c.events)
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "[{}] unexpected scan events: {}",
        lab.tag,
        read_lossy(&c.events)
    );

    // Control: with no program the same kind of segment does reach the capture.
    let cap = lab.start_capture(&lab.tgt);
    hping3(&lab, 2, &["-F", "-P", "-U"]);
    let seen = lab.stop_capture(&cap);
    let xmas = seen
        .iter()
        .filter(|s| from_attacker(&lab, s) && s.flags & 0x3f == 0x29)
        .count();
    assert_eq!(
        xmas, 2,
        "[{}] without the program the capture should see both XMAS segments",
        lab.tag
    );

    drop(lab);
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("sg-{id}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left after the lab: {left:?}");
    assert!(
        !lab_dir.exists(),
        "lab directory {} left behind",
        lab_dir.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(lab_dir.to_str().expect("utf-8")),
        "bpffs under {} still mounted",
        lab_dir.display()
    );
    assert!(!Path::new(&lab_dir).join("bpffs").exists());
    eprintln!(
        "veth {} mode: passed in {:.1} s",
        mode.as_str(),
        t0.elapsed().as_secs_f64()
    );
}
