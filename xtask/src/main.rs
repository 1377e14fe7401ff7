//! `cargo xtask`: the scan-guard developer workflow.
//!
//! Every subcommand lives in its own module and starts from the same two building
//! blocks, so new ones (`demo`, `bench`) are a variant here plus a module:
//! - [`workspace::Workspace`]: repository root, and `Command`s whose PATH finds the
//!   cargo-installed `bpf-linker`;
//! - [`setup::ensure`]: the idempotent toolchain bootstrap (fast when already done).
//!
//! Further shared pieces: [`build::scan_guard`] (build the controller, get its path),
//! [`apt::ensure`] with [`apt::LAB_PACKAGES`] (the scanners and load tools of the
//! network-namespace lab), [`privilege::require_root`].

mod apt;
mod bench;
mod bpf_linker;
mod build;
mod demo;
mod elf;
mod fuzz;
mod package;
mod privilege;
mod process;
mod run;
mod setup;
mod test;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{build::Profile, workspace::Workspace};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "scan-guard developer workflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain: the pinned nightly with rust-src, and bpf-linker
    /// built for that nightly's LLVM. Idempotent; every other subcommand runs it.
    Setup,
    /// Set up, then build the scan-guard controller (with its embedded XDP program).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build scan-guard (release unless --debug) and run it with ARGS,
    /// e.g. `cargo xtask run -- run --iface eth0`.
    Run {
        /// Build and run the release binary (the default).
        #[arg(long, conflicts_with = "debug")]
        release: bool,
        /// Build and run the debug binary instead.
        #[arg(long)]
        debug: bool,
        /// Arguments for scan-guard (after `--`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Set up, install the lab packages, build the binaries and run the whole test
    /// suite (real kernel, network namespaces: needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. `-- -p scan-guard-common`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
    /// Build the Debian package (cargo-deb): binary, systemd unit, default config,
    /// man pages and shell completions, into target/package/.
    Package,
    /// Run the benchmarks (ns/packet, flood Mpps, HTTP throughput, scale, blocklist
    /// operations) next to baselines measured in the same run; regenerate
    /// BENCHMARKS.md and the charts in bench/ (needs root; about 4 minutes).
    Bench {
        /// Every part with tiny sizes (seconds, for CI); writes under
        /// target/bench/smoke/ and leaves BENCHMARKS.md alone.
        #[arg(long)]
        smoke: bool,
        /// Only these parts, comma-separated: per-packet, flood, throughput, scale,
        /// blocklist-ops.
        #[arg(long, value_name = "PARTS")]
        only: Option<String>,
    },
    /// Fuzz: the differential test (XDP program vs reference model, --frames N,
    /// release build, needs root) and the cargo-fuzz targets of fuzz/ (--seconds S
    /// each, pinned nightly, cargo-fuzz installed if missing).
    Fuzz(fuzz::Args),
    /// The README's first command: set up, install the lab packages, build in
    /// release mode, then play the scripted story in a network-namespace lab (legit
    /// load, real scans detected and blocked, a final table); exit 0 only if every
    /// attack was blocked and the legitimate client never was (needs root).
    Demo,
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = dispatch(cli) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let ws = Workspace::new()?;
    match cli.command {
        Command::Setup => setup::ensure(&ws),
        Command::Build { release } => {
            setup::ensure(&ws)?;
            let exe = build::scan_guard(&ws, Profile::from_release(release))?;
            eprintln!("built {}", ws.display(&exe));
            Ok(())
        }
        Command::Run { debug, args, .. } => run::run(&ws, Profile::from_release(!debug), &args),
        Command::Test { args } => test::run(&ws, &args),
        Command::Package => package::run(&ws),
        Command::Bench { smoke, only } => bench::run(&ws, smoke, only.as_deref()),
        Command::Fuzz(args) => fuzz::run(&ws, &args),
        Command::Demo => demo::run(&ws),
    }
}
