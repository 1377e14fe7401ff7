//! Part 2: how fast each filter drops a flood from a blocked source. Frames are
//! injected with BPF_F_TEST_XDP_LIVE_FRAMES as if received on the lab's target
//! veth (`ingress_ifindex` in the xdp_md context); XDP filters drop them in the
//! program, netfilter filters get them through an XDP_PASS program and the real
//! receive path of the target namespace. Rate = frames / wall-clock time of the
//! call, which runs the whole batch loop (and the stack, for passed frames)
//! synchronously on the calling CPU.

use std::time::{Duration, Instant};

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya_obj::programs::XdpAttachType;
use scan_guard_common::stats::Stat;

use super::cost::{self, BLOCKED_EXACT, BLOCKED_EXACT_SRC, BlockInstance, median};
use super::{
    machine::have,
    netns::{BenchLab, End},
    results::{Flood, FloodRow},
    sizes::Sizes,
    sys,
    xdp_filter::XdpFilter,
};
use crate::{
    harness::{Harness, XDP_DROP, XDP_PASS},
    lab::describe,
    packet::Pkt,
};

pub const EMPTY_DROP: &str = "empty XDP_DROP";
/// Rows of the random-source SYN flood (see [`random_source_rows`]).
pub const RANDOM_OPEN: &str = "random-source SYN flood, open port";
pub const RANDOM_CLOSED: &str = "random-source SYN flood, closed port";
/// The layer of those rows: what is compared is the host's SYN handling rate.
pub const RANDOM_LAYER: &str = "random-source";
pub const VIA_EMPTY_PASS: &str = "driver -> empty XDP_PASS";
pub const VIA_SCAN_GUARD: &str = "driver -> scan-guard";
pub const IPTABLES_RAW: &str = "iptables raw PREROUTING DROP";

/// The flood frame: a 60-byte SYN from the blocked source to the target's address,
/// addressed to the target veth's MAC (so the stack takes it as its own).
pub fn flood_frame(lab: &BenchLab) -> Vec<u8> {
    let mut f = Pkt::tcp(BLOCKED_EXACT_SRC, &lab.t.v4.to_string(), 80, 0x02)
        .payload(6)
        .build();
    f[0..6].copy_from_slice(&lab.t.mac);
    f[6..12].copy_from_slice(&lab.a.mac);
    ipv4_tcp_checksums(&mut f);
    f
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn csum_add(sum: u32, bytes: &[u8]) -> u32 {
    bytes.chunks(2).fold(sum, |s, c| {
        s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
    })
}

/// Fills in the IPv4 header and TCP checksums of an untagged IPv4/TCP frame (the
/// frame builder leaves them zero; the stack drops such frames before netfilter).
pub fn ipv4_tcp_checksums(f: &mut [u8]) {
    let ip = 14;
    let ihl = usize::from(f[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
    f[ip + 10..ip + 12].fill(0);
    let c = csum_fold(csum_add(0, &f[ip..ip + ihl]));
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    let l4 = ip + ihl;
    let l4_len = total - ihl;
    f[l4 + 16..l4 + 18].fill(0);
    let mut sum = csum_add(0, &f[ip + 12..ip + 20]);
    sum += 6 + l4_len as u32;
    sum = csum_add(sum, &f[l4..l4 + l4_len]);
    let c = csum_fold(sum);
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// `struct xdp_md` for a frame of `len` bytes received on `ifindex`.
pub fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(24);
    for v in [0u32, len as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    ctx
}

/// One live-frames call: (wall seconds, kernel mean ns per frame).
pub fn live_run(prog: &Xdp, frame: &[u8], ctx: &[u8], batch: u32, frames: u32) -> (f64, f64) {
    let t = Instant::now();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN with live frames ({frames} frames): {e}"));
    (t.elapsed().as_secs_f64(), r.duration.as_nanos() as f64)
}

struct Measured {
    per_round: u64,
    mpps: Vec<f64>,
    kernel_ns: f64,
    total: u64,
}

/// How the measured program relates to the ingress veth.
enum Prog<'a> {
    /// Attach it (native XDP) to the veth for the measurement, as in production.
    Attach(&'a mut Xdp),
    /// Already attached there (xdp-filter, by its own CLI).
    Attached(&'a Xdp),
}

/// Calibrates the round size to `sizes.flood_secs`, then runs `sizes.flood_rounds`
/// rounds, all on the bench CPU inside `end`'s namespace, with the program attached
/// to `end`'s veth. Attached matters: a test run of a program the kernel's XDP
/// dispatcher does not hold yet adds it and takes it out again around every call,
/// which costs milliseconds of RCU grace periods per call.
fn measure(sizes: &Sizes, end: &End, ifindex: u32, prog: Prog<'_>, frame: &[u8]) -> Measured {
    let ctx = xdp_md(ifindex, frame.len());
    sys::in_netns(&end.ns, Some(sys::bench_cpu()), || match prog {
        Prog::Attached(p) => run_rounds(sizes, p, frame, &ctx),
        Prog::Attach(p) => {
            // Native as on a real interface; generic where the driver has none.
            let id = p
                .attach(&end.iface, XdpMode::Driver)
                .or_else(|_| p.attach(&end.iface, XdpMode::Skb))
                .unwrap_or_else(|e| panic!("attaching to {}: {e}", end.iface));
            let m = run_rounds(sizes, p, frame, &ctx);
            p.detach(id)
                .unwrap_or_else(|e| panic!("detaching from {}: {e}", end.iface));
            m
        }
    })
}

fn run_rounds(sizes: &Sizes, prog: &Xdp, frame: &[u8], ctx: &[u8]) -> Measured {
    let cal = sizes.flood_calibrate;
    // Twice: the first call also pays for setting up the page pool and caches.
    live_run(prog, frame, ctx, sizes.flood_batch, cal);
    let (w, _) = live_run(prog, frame, ctx, sizes.flood_batch, cal);
    let rate = f64::from(cal) / w.max(1e-9);
    let n = (rate * sizes.flood_secs).clamp(f64::from(cal), 2e9) as u32;
    let mut mpps = Vec::new();
    let mut kns = Vec::new();
    for _ in 0..sizes.flood_rounds.max(1) {
        let (w, k) = live_run(prog, frame, ctx, sizes.flood_batch, n);
        mpps.push(f64::from(n) / w / 1e6);
        kns.push(k);
    }
    Measured {
        per_round: u64::from(n),
        total: 2 * u64::from(cal) + u64::from(n) * u64::from(sizes.flood_rounds.max(1)),
        kernel_ns: median(&kns),
        mpps,
    }
}

fn row(name: &str, layer: &str, entries: Option<u32>, m: &Measured) -> FloodRow {
    FloodRow {
        name: name.into(),
        layer: layer.into(),
        entries,
        frames: m.per_round,
        mpps: median(&m.mpps),
        mpps_min: m.mpps.iter().copied().fold(f64::INFINITY, f64::min),
        mpps_max: m.mpps.iter().copied().fold(0.0, f64::max),
        kernel_ns_per_frame: m.kernel_ns,
        ..Default::default()
    }
}

fn verify(row: &mut FloodRow, counted: Option<u64>, expected: u64, what: &str) {
    match counted {
        Some(c) => {
            row.verified = c >= expected;
            row.verification = format!("{what}: {c} dropped of {expected} injected");
        }
        None => {
            row.verified = false;
            row.verification = format!("{what}: counter not readable");
        }
    }
}

fn verdict_of(prog: &Xdp, frame: &[u8]) -> u32 {
    cost::repeat_cost(prog, frame, 1).0
}

/// The random-source SYN flood: every frame a SYN from a new source (the
/// random-source driver rewrites the source from a per-CPU counter, fixes the
/// checksums and tail-calls the program under test), passed up to the target
/// namespace's own TCP stack, which answers it (SYN-ACK or SYN cookie on the
/// open port, RST on the closed one). Each port is measured twice in the same
/// lab: the driver tail-calling an empty XDP_PASS program (the host's own SYN
/// handling rate) and the driver tail-calling scan-guard with the product's
/// kernel configuration (the target's address as the host's own, port 80
/// listening, the shipped new-source budget). Nobody drains the first-contact
/// ring here: once it is full, a record costs a failed reserve and a counter.
fn random_source_rows(
    sizes: &Sizes,
    lab: &BenchLab,
    ifindex: u32,
    notes: &mut Vec<String>,
) -> Vec<FloodRow> {
    const OPEN: u16 = 80;
    const CLOSED: u16 = 81;
    let listener = sys::in_netns(&lab.t.ns, None, || {
        std::net::TcpListener::bind((lab.t.v4, OPEN))
    });
    let _listener = match listener {
        Ok(l) => l,
        Err(e) => {
            notes.push(format!(
                "random-source SYN flood skipped: listening on {OPEN}: {e}"
            ));
            return Vec::new();
        }
    };
    let product = scan_guard::config::Config::default().kernel_config(32_768, 0);
    let mut sg = Harness::new(product);
    sg.set_local(&[&lab.t.v4.to_string()]);
    sg.set_listening(&[OPEN], &[]);
    let empty = cost::baseline();
    let mut rows = Vec::new();
    for (name, port) in [(RANDOM_OPEN, OPEN), (RANDOM_CLOSED, CLOSED)] {
        let mut frame = Pkt::tcp("10.128.0.1", &lab.t.v4.to_string(), port, 0x02)
            .os_options()
            .build();
        frame[0..6].copy_from_slice(&lab.t.mac);
        frame[6..12].copy_from_slice(&lab.a.mac);
        ipv4_tcp_checksums(&mut frame);
        for (via, target) in [
            (VIA_EMPTY_PASS, cost::baseline_prog(&empty)),
            (VIA_SCAN_GUARD, cost::scan_guard_prog(&sg.ebpf)),
        ] {
            let mut driver = cost::random_source_driver(target);
            let prog: &mut Xdp = driver
                .program_mut(cost::RANDOM_SOURCE_DRIVER)
                .expect("driver program")
                .try_into()
                .expect("XDP program");
            assert_eq!(verdict_of(prog, &frame), XDP_PASS, "{name} {via}");
            let before = sg.stats();
            let m = measure(sizes, &lab.t, ifindex, Prog::Attach(prog), &frame);
            let after = sg.stats();
            let mut r = row(&format!("{name}: {via}"), RANDOM_LAYER, None, &m);
            if via == VIA_SCAN_GUARD {
                let d = |s: Stat| after[s as usize].saturating_sub(before[s as usize]);
                let seen = d(Stat::Packets);
                r.verified = seen >= m.total;
                r.verification = format!(
                    "STATS packets: {seen} of {} injected (new sources {}, admitted untracked {}, over budget {}, contacts {} + lost {})",
                    m.total,
                    d(Stat::NewSources),
                    d(Stat::AdmittedUntracked),
                    d(Stat::OverBudget),
                    d(Stat::Contacts),
                    d(Stat::ContactsLost),
                );
            } else {
                r.verified = true;
                r.verification = "verdict XDP_PASS (the empty program has no counter)".into();
            }
            rows.push(r);
        }
    }
    rows
}

/// The random-source rows' ratio: the host's SYN handling rate through
/// scan-guard over its rate through the empty program, per port.
pub fn random_source_ratios(rows: &[FloodRow]) -> Vec<(&'static str, f64, f64)> {
    [RANDOM_OPEN, RANDOM_CLOSED]
        .into_iter()
        .filter_map(|name| {
            let rate = |via: &str| {
                rows.iter()
                    .find(|r| r.name == format!("{name}: {via}"))
                    .map(|r| r.mpps)
            };
            Some((name, rate(VIA_SCAN_GUARD)?, rate(VIA_EMPTY_PASS)?))
        })
        .collect()
}

/// A netfilter configuration to measure: setup commands, the command that prints
/// its counters, and how to read the drop count from that output.
struct Netfilter {
    name: &'static str,
    tool: &'static str,
    setup: Vec<Vec<String>>,
    nft_file: Option<String>,
    counters: Vec<String>,
}

fn netfilter_cases() -> Vec<Netfilter> {
    let src = format!("{BLOCKED_EXACT_SRC}/32");
    vec![
        raw_prerouting_drop(IPTABLES_RAW, "iptables", &src),
        Netfilter {
            name: "nftables prerouting DROP (priority raw)",
            tool: "nft",
            setup: Vec::new(),
            nft_file: Some(format!(
                "table ip sgbench {{\n  chain pre {{\n    type filter hook prerouting priority raw; policy accept;\n    ip saddr {BLOCKED_EXACT_SRC} counter drop\n  }}\n}}\n"
            )),
            counters: strings(&["nft", "list", "table", "ip", "sgbench"]),
        },
        Netfilter {
            name: "iptables INPUT DROP + conntrack",
            tool: "iptables",
            setup: vec![
                strings(&[
                    "iptables",
                    "-w",
                    "-A",
                    "INPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ]),
                strings(&["iptables", "-w", "-A", "INPUT", "-s", &src, "-j", "DROP"]),
            ],
            nft_file: None,
            counters: strings(&["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]),
        },
        raw_prerouting_drop(
            "iptables-legacy raw PREROUTING DROP",
            "iptables-legacy",
            &src,
        ),
    ]
}

/// `tool` (iptables or iptables-legacy) dropping `src` in the raw table's
/// PREROUTING chain: before conntrack, its cheapest place.
fn raw_prerouting_drop(name: &'static str, tool: &'static str, src: &str) -> Netfilter {
    Netfilter {
        name,
        tool,
        setup: vec![strings(&[
            tool,
            "-w",
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-s",
            src,
            "-j",
            "DROP",
        ])],
        nft_file: None,
        counters: strings(&[
            tool,
            "-w",
            "-t",
            "raw",
            "-L",
            "PREROUTING",
            "-v",
            "-x",
            "-n",
        ]),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Drop count of the rule in `iptables -L -v -x` or `nft list` output.
fn parse_drop_counter(text: &str) -> Option<u64> {
    for line in text.lines() {
        let t = line.trim();
        if t.contains("counter packets") && t.ends_with("drop") {
            let mut it = t.split_whitespace();
            while let Some(w) = it.next() {
                if w == "packets" {
                    return it.next()?.parse().ok();
                }
            }
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() > 2 && f[2] == "DROP" {
            return f[0].parse().ok();
        }
    }
    None
}

pub fn run(sizes: &Sizes) -> Flood {
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let (mut pass_obj, drop_pin_note);
    {
        // XDP filters: one lab; each program is attached to the target veth while it
        // is measured (see `measure`).
        let lab = BenchLab::new();
        let ifindex = lab.ifindex(&lab.t);
        let frame = flood_frame(&lab);

        let drop_fd = sys::load_xdp_drop().expect("loading the two-instruction XDP_DROP program");
        let pin = lab.bpffs.join("bench-xdp-drop");
        sys::pin(&drop_fd, &pin).expect("pinning the XDP_DROP program");
        let mut empty_drop =
            Xdp::from_pin(&pin, XdpAttachType::Interface).expect("XDP_DROP program");
        drop_pin_note = "empty XDP_DROP: `r0 = 1; exit` loaded with bpf(BPF_PROG_LOAD)";
        assert_eq!(verdict_of(&empty_drop, &frame), XDP_DROP);
        // Live frames arrived in Linux 5.18: say so instead of failing on older kernels.
        let ctx = xdp_md(ifindex, frame.len());
        let probe = sys::in_netns(&lab.t.ns, None, || {
            empty_drop.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: 1,
                attrs: TestRunAttrs::new().xdp_live_frames(1),
                ..Default::default()
            })
        });
        if let Err(e) = probe {
            // The cause (errno) matters: an old kernel says EINVAL, a host that
            // refuses live frames to this process says EPERM.
            let cause =
                std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
            notes.push(format!(
                "skipped: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES failed ({e}{cause}); \
                 live frames need Linux 5.18 or newer and a host that allows them"
            ));
            return Flood {
                notes,
                ..Default::default()
            };
        }
        let m = measure(
            sizes,
            &lab.t,
            ifindex,
            Prog::Attach(&mut empty_drop),
            &frame,
        );
        let mut r = row(EMPTY_DROP, "xdp", None, &m);
        r.verified = true;
        r.verification = "verdict XDP_DROP (the program has no counter)".into();
        rows.push(r);

        for &n in &sizes.flood_entries {
            let mut inst = BlockInstance::new(n, BLOCKED_EXACT, 7 + u64::from(n));
            assert_eq!(verdict_of(inst.prog(), &frame), XDP_DROP);
            let before = inst.maps.stats_total().expect("stats")[Stat::DroppedBlocked as usize];
            let m = measure(
                sizes,
                &lab.t,
                ifindex,
                Prog::Attach(inst.prog_mut()),
                &frame,
            );
            let after = inst.maps.stats_total().expect("stats")[Stat::DroppedBlocked as usize];
            let name = format!("scan-guard ({})", cost::entries_label(n));
            let mut r = row(&name, "xdp", Some(n), &m);
            verify(
                &mut r,
                Some(after - before),
                m.total,
                "STATS dropped_blocked",
            );
            rows.push(r);
        }

        // Before xdp-filter, which stays attached to the veth once loaded.
        rows.extend(random_source_rows(sizes, &lab, ifindex, &mut notes));

        match XdpFilter::load(&lab, &lab.t, BLOCKED_EXACT.0) {
            Ok(mut f) => {
                for &n in &sizes.flood_entries {
                    if let Err(why) = f.rules.fill_to(n) {
                        notes.push(format!(
                            "xdp-filter with {} not measured: {why}",
                            cost::entries_label(n)
                        ));
                        continue;
                    }
                    assert_eq!(verdict_of(&f.prog, &frame), XDP_DROP);
                    let before = f.rules.dropped(&lab);
                    let m = measure(sizes, &lab.t, ifindex, Prog::Attached(&f.prog), &frame);
                    let after = f.rules.dropped(&lab);
                    let name = format!("xdp-filter ({})", cost::entries_label(n));
                    let mut r = row(&name, "xdp", Some(n), &m);
                    let counted = before.zip(after).map(|(b, a)| a.saturating_sub(b));
                    verify(&mut r, counted, m.total, "xdp-filter status XDP_DROP");
                    rows.push(r);
                }
            }
            Err(why) => notes.push(format!("xdp-filter rows skipped: {why}")),
        }
        drop(empty_drop);
        drop(drop_fd);
        pass_obj = cost::baseline();
    }
    notes.push(drop_pin_note.into());

    // Netfilter: a fresh lab per configuration, so no table or hook of one case is
    // left behind to slow down the next.
    let pass: &mut Xdp = pass_obj
        .program_mut("baseline_pass")
        .expect("baseline program")
        .try_into()
        .expect("XDP program");
    for nf in netfilter_cases() {
        if !have(nf.tool) {
            notes.push(format!(
                "{}: skipped, {} is not installed",
                nf.name, nf.tool
            ));
            continue;
        }
        let lab = BenchLab::new();
        let ifindex = lab.ifindex(&lab.t);
        let frame = flood_frame(&lab);
        assert_eq!(verdict_of(pass, &frame), XDP_PASS);
        // The blocked source is not on-link: no reverse-path filter in the way.
        let iface_rp = format!("net.ipv4.conf.{}.rp_filter=0", lab.t.iface);
        lab.sysctl(
            &lab.t.ns,
            &["net.ipv4.conf.all.rp_filter=0", iface_rp.as_str()],
        );
        let mut failed = None;
        for cmd in &nf.setup {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let out = lab.exec(&lab.t.ns, Duration::from_secs(30), &args);
            if !out.status.success() {
                failed = Some(format!("`{}`: {}", cmd.join(" "), describe(&out)));
                break;
            }
        }
        if let (None, Some(text)) = (&failed, &nf.nft_file) {
            let file = lab.file("rules.nft");
            std::fs::write(&file, text).expect("writing the nft rules");
            let out = lab.exec(
                &lab.t.ns,
                Duration::from_secs(30),
                &["nft", "-f", &file.to_string_lossy()],
            );
            if !out.status.success() {
                failed = Some(format!("nft -f: {}", describe(&out)));
            }
        }
        if let Some(why) = failed {
            notes.push(format!("{}: skipped, setup failed: {why}", nf.name));
            continue;
        }
        let m = measure(sizes, &lab.t, ifindex, Prog::Attach(&mut *pass), &frame);
        let args: Vec<&str> = nf.counters.iter().map(String::as_str).collect();
        let out = lab.exec(&lab.t.ns, Duration::from_secs(30), &args);
        let counted = parse_drop_counter(&String::from_utf8_lossy(&out.stdout));
        let mut r = row(nf.name, "netfilter", Some(1), &m);
        verify(&mut r, counted, m.total, "rule counter");
        rows.push(r);
    }
    if have("iptables") {
        let v = super::machine::version(&["iptables", "--version"]);
        notes.push(format!(
            "`iptables` here is {v}; netfilter rows include the XDP_PASS program, skb \
             allocation and the receive path up to the rule"
        ));
    }

    let base = rows
        .iter()
        .find(|r| r.name == EMPTY_DROP)
        .map(|r| r.mpps)
        .unwrap_or(f64::NAN);
    let ipt = rows.iter().find(|r| r.name == IPTABLES_RAW).map(|r| r.mpps);
    for r in &mut rows {
        r.vs_xdp_drop = r.mpps / base;
        r.vs_iptables_raw = ipt.map(|i| r.mpps / i);
    }
    Flood {
        frame_bytes: 60,
        batch: sizes.flood_batch,
        rounds: sizes.flood_rounds,
        target_secs_per_round: sizes.flood_secs,
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_are_read_from_iptables_and_nft_listings() {
        let ipt = "Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n 5298495 317909700 DROP       all  --  *      *       10.60.0.9            0.0.0.0/0\n";
        assert_eq!(parse_drop_counter(ipt), Some(5_298_495));
        let nft = "table ip sgbench {\n\tchain pre {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tip saddr 10.60.0.9 counter packets 9305475 bytes 558328500 drop\n\t}\n}\n";
        assert_eq!(parse_drop_counter(nft), Some(9_305_475));
        assert_eq!(parse_drop_counter("Chain INPUT (policy ACCEPT)\n"), None);
    }

    #[test]
    fn checksums_verify_to_zero() {
        let mut f = Pkt::tcp("10.60.0.9", "10.201.0.2", 80, 0x02)
            .payload(6)
            .build();
        ipv4_tcp_checksums(&mut f);
        // A correct ones'-complement checksum sums (with itself) to 0xffff.
        assert_eq!(csum_fold(csum_add(0, &f[14..34])), 0);
        let mut sum = csum_add(0, &f[26..34]);
        sum += 6 + (f.len() - 34) as u32;
        assert_eq!(csum_fold(csum_add(sum, &f[34..])), 0);
    }

    #[test]
    fn xdp_md_carries_length_and_ingress_device() {
        let ctx = xdp_md(7, 60);
        assert_eq!(ctx.len(), 24);
        assert_eq!(u32::from_ne_bytes(ctx[4..8].try_into().unwrap()), 60);
        assert_eq!(u32::from_ne_bytes(ctx[12..16].try_into().unwrap()), 7);
    }
}
