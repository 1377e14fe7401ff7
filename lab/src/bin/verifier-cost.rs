//! Loads the XDP program and prints how many instructions the kernel's
//! verifier processed to accept it (the limit is 1,000,000). When it does not
//! load, prints the last lines of the verifier's log (`verifier-cost N`: N
//! lines, 6 by default).
fn main() {
    let ebpf = match scan_guard::kernel::loader::load_with(None, None) {
        Ok(e) => e,
        Err(e) => {
            let lines = std::env::args()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(6);
            let text = format!("{e:#}");
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            eprintln!(
                "verifier-cost: the program does not load:\n{}",
                tail.join("\n")
            );
            std::process::exit(1);
        }
    };
    match scan_guard_lab::bench::cost::verified_instructions(&ebpf) {
        Some(n) => println!("{n}"),
        None => {
            eprintln!("verifier-cost: the kernel did not say how many instructions it verified");
            std::process::exit(1);
        }
    }
}
