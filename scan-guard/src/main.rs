//! `scan-guard`: XDP port-scan detector and blocker.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use scan_guard::{
    bpffs,
    error::exit_code,
    loader::AttachMode,
    runner::{self, RunOptions},
};
use scan_guard_common::config::KernelConfig;

#[derive(Parser)]
#[command(
    name = "scan-guard",
    version,
    about = "Detect and block port scans at the NIC with XDP",
    long_about = "Detect and block port scans at the NIC with XDP.\n\n\
        An XDP program drops invalid TCP flag combinations and traffic from blocked \
        sources, and counts per-source probes; a source that crosses the threshold is \
        blocked in the kernel at once and reported as a JSON event."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to an interface and protect it until SIGINT/SIGTERM.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to protect (e.g. eth0).
    #[arg(long, short = 'i', value_name = "IFACE")]
    iface: String,
    /// XDP attach mode: auto tries native (driver) XDP and falls back to skb.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Directory on a bpffs for the pinned link and maps
    /// [default: /sys/fs/bpf/scan-guard/IFACE].
    #[arg(long, env = "SCAN_GUARD_PIN_DIR", value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Where JSON-line events go: a file (appended) or - for standard output.
    #[arg(long, default_value = "-", value_name = "PATH|-")]
    events: PathBuf,
    /// On exit, leave the program attached and its maps pinned (it keeps enforcing).
    #[arg(long)]
    keep_attached: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCAN_GUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Err(err) = dispatch(cli) {
        eprintln!("scan-guard: {err:#}");
        std::process::exit(exit_code(&err));
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => {
            let pin_dir = args
                .pin_dir
                .unwrap_or_else(|| bpffs::default_pin_dir(&args.iface));
            rt.block_on(runner::run(RunOptions {
                iface: args.iface,
                mode: args.xdp_mode,
                pin_dir,
                events: args.events,
                keep_attached: args.keep_attached,
                config: KernelConfig::default(),
            }))
        }
    }
}
