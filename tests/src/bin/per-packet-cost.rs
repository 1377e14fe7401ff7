//! Prints the per-packet cost of each XDP path next to an empty XDP_PASS program,
//! measured in the same run. Usage: per-packet-cost [REPEAT] (default 1000000).

fn main() {
    let repeat = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000u32);
    let costs = scan_guard_tests::cost::measure(repeat);
    let floor = costs
        .iter()
        .find(|c| c.name == "empty_xdp_pass")
        .map_or(1.0, |c| c.ns_per_packet);
    let single_floor = costs
        .iter()
        .find(|c| c.name == "empty_xdp_pass_single_runs")
        .map_or(1.0, |c| c.ns_per_packet);
    println!(
        "{:<28} {:>10} {:>8} {:>8}",
        "path", "ns/packet", "x empty", "verdict"
    );
    for c in &costs {
        let base = if c.name == "syn_new_source" || c.name == "empty_xdp_pass_single_runs" {
            single_floor
        } else {
            floor
        };
        let verdict = match c.verdict {
            1 => "drop",
            2 => "pass",
            _ => "other",
        };
        println!(
            "{:<28} {:>10.1} {:>8.2} {:>8}",
            c.name,
            c.ns_per_packet,
            c.ns_per_packet / base,
            verdict
        );
    }
}
