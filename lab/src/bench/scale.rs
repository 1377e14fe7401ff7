//! Part 4: the real controller attached to the lab's target veth while a million
//! distinct spoofed sources (10.64.0.0/12, addresses that exist only inside the
//! lab) each send a SYN, injected with BPF_PROG_TEST_RUN into the controller's own
//! attached program (same maps, same ring buffers); meanwhile a real nmap SYN scan
//! runs from the client namespace over the veth. Reports map memory (memlock from
//! /proc/<pid>/fdinfo of the controller), kernel counters (events and first
//! contacts lost), controller CPU time, and whether the scan was still blocked.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use aya::{maps::MapInfo, programs::Xdp};
use scan_guard_common::{addr::from_v4, stats::NAMED};

use aya_obj::programs::XdpAttachType;

use super::cost;
use super::{
    controller::Controller,
    machine::have,
    netns::BenchLab,
    results::{MapMemory, Scale},
    sizes::Sizes,
    sys,
};
use crate::packet::Pkt;

fn attacker_blocked(ctl: &Controller, attacker: [u8; 4]) -> bool {
    let a = from_v4(attacker);
    let Ok(blocks) = ctl.maps().blocks() else {
        return false;
    };
    blocks.iter().any(|(k, plen, _)| {
        scan_guard_common::addr::mask(&a, *plen) == scan_guard_common::addr::mask(k, *plen)
    })
}

pub fn run(sizes: &Sizes, controller_bin: &std::path::Path) -> Scale {
    let mut notes = Vec::new();
    let lab = BenchLab::new();
    // UDP/ICMP answers to nmap are not rate limited (as in the lab tests).
    lab.sysctl(&lab.t.ns, &["net.ipv4.icmp_ratelimit=0"]);
    let ctl = Controller::start(&lab, controller_bin, Duration::from_secs(600));
    let id = lab
        .xdp_prog_id(&lab.t)
        .expect("the controller attached no XDP program");
    let fd = sys::prog_fd_by_id(id).expect("opening the controller's program by id");
    let pin = lab.bpffs.join("bench-controller-prog");
    sys::pin(&fd, &pin).expect("pinning the controller's program");
    let prog = Xdp::from_pin(&pin, XdpAttachType::Interface).expect("controller's program");

    let stats_before = ctl.maps().stats_total().expect("stats");
    let cpu_before = sys::cpu_seconds(ctl.pid).unwrap_or(0.0);
    let window = Instant::now();
    let sent = AtomicU64::new(0);
    let dropped = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let target = lab.t.v4.to_string();
    let attacker = lab.a.v4.octets();
    let sources = sizes.scale_sources;

    let (flood_secs, nmap_secs, nmap_out, blocked_at) = thread::scope(|s| {
        let flood = s.spawn(|| {
            sys::pin_thread_to_cpu(sys::bench_cpu()).expect("pinning the flood thread");
            let mut frame = Pkt::tcp("10.64.0.0", &target, 80, 0x02).build();
            let started = Instant::now();
            for i in 0..sources {
                // 10.64.0.0 + i: distinct sources inside 10.64.0.0/12.
                let a = (u32::from_be_bytes([10, 64, 0, 0]) + i).to_be_bytes();
                frame[26..30].copy_from_slice(&a);
                let (v, _) = cost::repeat_cost(&prog, &frame, 1);
                if v == crate::harness::XDP_DROP {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let secs = started.elapsed().as_secs_f64();
            done.store(true, Ordering::SeqCst);
            secs
        });
        // The scan starts once the flood is under way.
        while sent.load(Ordering::Relaxed) < u64::from(sources / 20).max(1)
            && !done.load(Ordering::SeqCst)
        {
            thread::sleep(Duration::from_millis(2));
        }
        let ports = format!("1-{}", sizes.nmap_ports);
        let nmap_started = Instant::now();
        let nmap = lab.spawn(
            &lab.a.ns,
            Duration::from_secs(120),
            &[
                "nmap",
                "-Pn",
                "-n",
                "-sS",
                "--max-retries",
                "0",
                "--min-rate",
                "2000",
                "--host-timeout",
                "60s",
                "-p",
                &ports,
                &target,
            ],
            &[],
            &lab.file("nmap.log"),
        );
        let mut blocked_at = None;
        let mut nmap_secs = None;
        let deadline = Instant::now() + Duration::from_secs(130);
        while Instant::now() < deadline {
            if blocked_at.is_none() && attacker_blocked(&ctl, attacker) {
                blocked_at = Some(nmap_started.elapsed().as_secs_f64());
            }
            if nmap_secs.is_none() && lab.try_wait(nmap).is_some() {
                nmap_secs = Some(nmap_started.elapsed().as_secs_f64());
            }
            if nmap_secs.is_some() && (blocked_at.is_some() || done.load(Ordering::SeqCst)) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if nmap_secs.is_none() {
            lab.stop(nmap, Duration::from_secs(5));
        }
        let flood_secs = flood.join().expect("flood thread");
        // A last look: the controller may block a moment after the scan ended.
        if blocked_at.is_none() {
            for _ in 0..100 {
                if attacker_blocked(&ctl, attacker) {
                    blocked_at = Some(nmap_started.elapsed().as_secs_f64());
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let out = std::fs::read_to_string(lab.file("nmap.log")).unwrap_or_default();
        (flood_secs, nmap_secs.unwrap_or(f64::NAN), out, blocked_at)
    });
    let cpu_after = sys::cpu_seconds(ctl.pid).unwrap_or(cpu_before);
    let window = window.elapsed().as_secs_f64();
    let maps = ctl.maps();
    let stats_after = maps.stats_total().expect("stats");
    let tracked = maps.tracked_sources();
    drop(maps);

    let mut stats_delta = BTreeMap::new();
    for (stat, name) in NAMED {
        let i = stat as usize;
        stats_delta.insert(
            name.to_string(),
            stats_after[i].saturating_sub(stats_before[i]),
        );
    }
    let mut mem = Vec::new();
    for m in sys::maps_of_pid(ctl.pid) {
        let name = MapInfo::from_id(m.map_id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("map {}", m.map_id));
        mem.push(MapMemory {
            name,
            map_type: m.map_type,
            max_entries: m.max_entries,
            memlock_bytes: m.memlock,
        });
    }
    mem.sort_by_key(|m| std::cmp::Reverse(m.memlock_bytes));
    let memlock_total = mem.iter().map(|m| m.memlock_bytes).sum();

    let events = std::fs::read_to_string(&ctl.events).unwrap_or_default();
    let attacker_text = lab.a.v4.to_string();
    let attacker_events = events
        .lines()
        .filter(|l| l.contains(&format!("\"{attacker_text}")))
        .count();
    let nmap_summary = nmap_out
        .lines()
        .filter(|l| l.contains("Nmap done") || l.contains("ports") || l.contains("open"))
        .take(4)
        .collect::<Vec<_>>()
        .join(" | ");
    let caught = blocked_at.is_some();
    let nmap_detail = match blocked_at {
        Some(t) => format!(
            "scanner {attacker_text} blocked {t:.2} s after nmap started; {attacker_events} \
             event line(s) name it; nmap: {nmap_summary}"
        ),
        None => format!(
            "scanner {attacker_text} NOT blocked; {attacker_events} event line(s) name it; \
             nmap: {nmap_summary}"
        ),
    };
    if !have("nmap") {
        notes.push("nmap is not installed: the scan did not run".into());
    }
    notes.push(format!(
        "spoofed sources 10.64.0.0 + i, one SYN each to {target}:80, injected with \
         BPF_PROG_TEST_RUN (one run per source) into program {id}, the one the controller \
         attached; nmap -sS -p 1-{} --min-rate 2000 from {attacker_text} over the veth",
        sizes.nmap_ports
    ));
    ctl.stop(&lab);
    drop(prog);
    drop(fd);
    drop(lab);

    let cpu = (cpu_after - cpu_before).max(0.0);
    Scale {
        sources,
        flood_secs,
        flood_pps: f64::from(sources) / flood_secs,
        passed: u64::from(sources) - dropped.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        maps: mem,
        memlock_total_bytes: memlock_total,
        stats_delta,
        tracked_sources_after: tracked,
        controller_cpu_secs: cpu,
        controller_cpu_window_secs: window,
        controller_cpu_percent: 100.0 * cpu / window.max(1e-9),
        nmap_ports: sizes.nmap_ports,
        nmap_secs,
        nmap_caught: caught,
        nmap_detail,
        notes,
    }
}
