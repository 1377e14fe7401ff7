//! Prints the per-packet cost of each XDP path next to an empty XDP_PASS program,
//! measured in the same run. Usage: per-packet-cost [REPEAT] (default 1000000).
//! `cargo xtask bench` runs the complete benchmark set (with baselines such as
//! xdp-filter and blocklists up to a million entries) and writes BENCHMARKS.md.

fn main() {
    let repeat = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000u32);
    let costs = scan_guard_lab::bench::cost::measure(repeat);
    let floor = costs
        .iter()
        .find(|c| c.name == scan_guard_lab::bench::cost::EMPTY_PASS)
        .map_or(1.0, |c| c.ns_per_packet);
    println!(
        "{:<34} {:>10} {:>8} {:>8}",
        "path", "ns/packet", "x empty", "verdict"
    );
    for c in &costs {
        let verdict = match c.verdict {
            1 => "drop",
            2 => "pass",
            _ => "other",
        };
        println!(
            "{:<34} {:>10.1} {:>8.2} {:>8}",
            c.name,
            c.ns_per_packet,
            c.ns_per_packet / floor,
            verdict
        );
    }
}
