//! `scan-guard`: XDP port-scan detector and blocker.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use scan_guard::{
    base::cidr::{Cidr, parse_duration},
    base::error::{exit_code, usage},
    cli::control,
    config::Config,
    kernel::bpffs,
    kernel::loader::AttachMode,
    runner::{self, Overrides, RunOptions},
};

#[derive(Parser)]
#[command(
    name = "scan-guard",
    version,
    about = "Detect and block port scans at the NIC with XDP",
    long_about = "Detect and block port scans at the NIC with XDP.\n\n\
        `run` attaches an XDP program that drops invalid TCP flag combinations and \
        traffic from blocked sources, and counts per-source probes. A source that \
        crosses the threshold is blocked in the kernel at once; the controller adds \
        slow-scan detection, escalation and reporting as JSON lines. The other \
        commands inspect and steer a running instance from another shell.\n\n\
        Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct PinDir {
    /// Pin directory of the instance [default: /sys/fs/bpf/scan-guard/IFACE when only
    /// one instance exists].
    #[arg(long, env = "SCAN_GUARD_PIN_DIR", value_name = "DIR")]
    pin_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Query {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pin: PinDir,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to an interface and protect it until SIGINT/SIGTERM (SIGHUP reloads
    /// the config file).
    #[command(after_long_help = "Signals:\n  \
        SIGINT, SIGTERM  detach, save the state file and exit\n  \
        SIGHUP           re-read --config (a bad file changes nothing) and reopen the events files\n  \
        SIGUSR1          reopen the events files (log rotation)\n  \
        SIGUSR2          sent by block/unblock/allow/disallow: re-read the blocklist maps now\n  \
        SIGKILL          the program stays attached; the next run re-adopts it\n\n\
        Exit status: 0 after a clean stop, 2 for a usage or configuration error, 1 for other failures.")]
    Run(RunArgs),
    /// Is an instance attached, is its controller running, and headline counts.
    Status(Query),
    /// Kernel counters: packets, drops by reason, tracked and blocked sources.
    Stats(Query),
    /// Blocked sources: address or prefix, kind, reason, since, expires.
    List(Query),
    /// Block an address or prefix now. The rules of every other block apply:
    /// a prefix overlapping the never-block set (the host's own addresses,
    /// gateways, resolvers, blocking.never_block) or past the blocklist's
    /// capacity is refused (exit 1).
    Block {
        /// ADDR or ADDR/LEN (IPv4 or IPv6).
        target: String,
        /// How long: 90s, 10m, 1h, 7d; 0 = until unblocked [default: the first
        /// escalation step, 10m].
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Why (shown by `list` and in events).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        pin: PinDir,
    },
    /// Lift a block.
    Unblock {
        /// ADDR or ADDR/LEN, as listed by `scan-guard list`.
        target: String,
        #[command(flatten)]
        pin: PinDir,
    },
    /// Never inspect or block an address or prefix.
    Allow {
        target: String,
        #[command(flatten)]
        pin: PinDir,
    },
    /// Remove an address or prefix from the allowlist.
    Disallow {
        target: String,
        #[command(flatten)]
        pin: PinDir,
    },
    /// Print the complete configuration with every default filled in (TOML).
    DefaultConfig,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Internal: the NAT-rule watcher `run` starts (keeps only CAP_NET_ADMIN,
    /// prints the NAT-published ports as JSON lines when they change).
    #[command(name = "nat-watch", hide = true)]
    NatWatch {
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
    },
    /// Print the man page (roff) for scan-guard or one of its commands.
    Manpage {
        /// A command name (run, status, block, ...) for its own page.
        command: Option<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Interface to protect (e.g. eth0); repeat it or separate with commas for
    /// several (`-i eth0 -i eth1`, `--iface eth0,eth1`).
    /// A glob (`'eth*'`) also takes interfaces that appear later; globs never
    /// match `lo`. One program and one set of maps serve every interface: one
    /// blocklist, one per-source state, one event stream. A bond takes the program
    /// itself where its slaves' drivers allow, otherwise its slaves do. Replaces
    /// the config's `ifaces` (an empty value: use them).
    #[arg(long, short = 'i', value_name = "IFACE", value_delimiter = ',')]
    iface: Vec<String>,
    /// TOML configuration file (see docs/config.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// XDP attach mode: auto tries native (driver) XDP and falls back to skb.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Detect and report (`would_block`) without blocking anything for scanning.
    #[arg(long)]
    dry_run: bool,
    /// Where JSON-line events go: a file (appended), - for standard output, syslog
    /// for the system log (/dev/log) or syslog:SOCKET, journal for journald with
    /// fields of its own (SCAN_GUARD_EVENT, SCAN_GUARD_SRC, ...). Give it more
    /// than once to write every event to each (e.g. a file and the journal)
    /// [default: output.events, else -].
    #[arg(long, value_name = "PATH|-|syslog|journal")]
    events: Vec<PathBuf>,
    /// State file for blocks and offence history
    /// [default: /var/lib/scan-guard/IFACE.state.json].
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Directory on a bpffs for the pinned link and maps
    /// [default: /sys/fs/bpf/scan-guard/IFACE].
    #[arg(long, env = "SCAN_GUARD_PIN_DIR", value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// On exit, leave the program attached and its maps pinned (it keeps enforcing).
    #[arg(long)]
    keep_attached: bool,
    /// Serve Prometheus/OpenMetrics at http://ADDR/metrics: PORT or :PORT (loopback)
    /// or HOST:PORT [default: output.metrics from the config, else off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    if let Err(err) = dispatch(cli) {
        eprintln!("scan-guard: {err:#}");
        std::process::exit(exit_code(&err));
    }
}

/// Logs go to stderr: coloured only on a terminal (journald and files get plain
/// text; `NO_COLOR` turns colour off), and without a timestamp when stderr is the
/// journal, which stamps every line itself.
fn init_logging() {
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCAN_GUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    if stderr_is_journal() {
        logs.without_time().init();
    } else {
        logs.init();
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr is the
/// journal; it only counts if stderr still is that stream (not redirected by a
/// child's own caller).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

fn target(text: &str) -> Result<Cidr> {
    text.parse::<Cidr>().map_err(usage)
}

/// The pin directory a control command talks to: the flag, or the only instance
/// under the default location.
fn resolve_pin_dir(p: &PinDir) -> Result<PathBuf> {
    if let Some(d) = &p.pin_dir {
        return Ok(d.clone());
    }
    let root = PathBuf::from(bpffs::DEFAULT_BPFFS).join("scan-guard");
    let found: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(usage(format!(
            "no scan-guard instance under {} (start one with `scan-guard run --iface IFACE`, or pass --pin-dir)",
            root.display()
        ))),
        many => Err(usage(format!(
            "several instances under {}: pass --pin-dir (one of {})",
            root.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::NatWatch { interval_ms } => {
            scan_guard::kernel::nat_watch::run_child(Duration::from_millis(interval_ms.max(100)))
        }
        Command::Status(q) => control::status(&resolve_pin_dir(&q.pin)?, q.json),
        Command::Stats(q) => control::stats(&resolve_pin_dir(&q.pin)?, q.json),
        Command::List(q) => control::list(&resolve_pin_dir(&q.pin)?, q.json),
        Command::Block {
            target: t,
            ttl,
            reason,
            pin,
        } => {
            let c = target(&t)?;
            let ttl: Option<Duration> = ttl
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(usage)?;
            control::block(&resolve_pin_dir(&pin)?, &c, ttl, reason.as_deref())
        }
        Command::Unblock { target: t, pin } => {
            control::unblock(&resolve_pin_dir(&pin)?, &target(&t)?)
        }
        Command::Allow { target: t, pin } => control::allow(&resolve_pin_dir(&pin)?, &target(&t)?),
        Command::Disallow { target: t, pin } => {
            control::disallow(&resolve_pin_dir(&pin)?, &target(&t)?)
        }
        Command::DefaultConfig => {
            print!("{}", Config::default().to_toml()?);
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "scan-guard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage { command } => manpage(command.as_deref()),
    }
}

fn manpage(command: Option<&str>) -> Result<()> {
    let root = Cli::command();
    let cmd = match command {
        None => root,
        Some(name) => root
            .find_subcommand(name)
            .cloned()
            .map(|c| c.name(format!("scan-guard-{name}")))
            .ok_or_else(|| {
                usage(format!(
                    "no command named {name:?} (see `scan-guard --help`)"
                ))
            })?,
    };
    clap_mangen::Man::new(cmd)
        .render(&mut std::io::stdout())
        .map_err(Into::into)
}

fn run(args: RunArgs) -> Result<()> {
    let overrides = Overrides {
        dry_run: args.dry_run,
    };
    let file_cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let config = runner::apply_overrides(file_cfg, &overrides);
    // `--iface ""` (an empty SCAN_GUARD_IFACE in the packaged service) means
    // "the config file's list".
    let cli_ifaces: Vec<String> = args.iface.into_iter().filter(|s| !s.is_empty()).collect();
    let ifaces_from_cli = !cli_ifaces.is_empty();
    let names = if ifaces_from_cli {
        &cli_ifaces
    } else {
        &config.ifaces
    };
    let ifaces = scan_guard::kernel::ifaces::parse_all(names).map_err(|e| usage(e.to_string()))?;
    // An empty list is refused by `runner::run` before anything is touched.
    let instance = scan_guard::kernel::ifaces::instance_name(&ifaces);
    let pin_dir = args
        .pin_dir
        .unwrap_or_else(|| bpffs::default_pin_dir(&instance));
    let events = if args.events.is_empty() {
        config.output.events.0.iter().map(PathBuf::from).collect()
    } else {
        args.events
    };
    let state_file = runner::state_file_for(args.state_file.as_deref(), &config, &instance);
    let metrics_text = args
        .metrics
        .clone()
        .or_else(|| (!config.output.metrics.is_empty()).then(|| config.output.metrics.clone()));
    let metrics = metrics_text
        .as_deref()
        .map(scan_guard::export::metrics::parse_listen)
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(runner::run(RunOptions {
        ifaces,
        ifaces_from_cli,
        mode: args.xdp_mode,
        pin_dir,
        config_path: args.config,
        config,
        overrides,
        events,
        state_file,
        keep_attached: args.keep_attached,
        metrics,
    }))
}
