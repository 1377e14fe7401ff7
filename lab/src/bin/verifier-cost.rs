//! Loads the XDP program and prints how many instructions the kernel's
//! verifier processed to accept it (the limit is 1,000,000).
fn main() {
    let mut ebpf = match scan_guard::kernel::loader::load_with(None, None) {
        Ok(e) => e,
        Err(e) => {
            let text = format!("{e:#}");
            let tail: String = text
                .lines()
                .rev()
                .take(
                    std::env::args()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(6),
                )
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("verifier-cost: the program does not load:\n{tail}");
            std::process::exit(1);
        }
    };
    let Some(prog) = ebpf.program_mut(scan_guard_common::PROGRAM_NAME) else {
        eprintln!(
            "verifier-cost: no program {}",
            scan_guard_common::PROGRAM_NAME
        );
        std::process::exit(1);
    };
    match prog.info() {
        Ok(info) => println!("{}", info.verified_instruction_count().unwrap_or(0)),
        Err(e) => {
            eprintln!("verifier-cost: reading the program's info: {e}");
            std::process::exit(1);
        }
    }
}
