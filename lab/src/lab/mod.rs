//! The network-namespace lab: a few guards that each undo themselves on drop
//! (also while a test unwinds), and [`Lab`], the scene built from them.
//!
//! Guards, one job each:
//! - [`netns::Netns`]: a network namespace;
//! - [`veth::Veth`]: a veth pair between two namespaces;
//! - [`bpffs::Bpffs`]: a private bpffs mount (`ip netns exec` hides /sys/fs/bpf);
//! - [`run_dir::RunDir`]: the lab's directory under /run;
//! - [`process::Processes`]: every process the lab started, each under `timeout`.
//!
//! The scene and what tests do in it:
//! - [`topology`]: [`Lab`] itself: attacker and target (and a second client
//!   behind a switch, a far host behind the target), addresses, no default route;
//! - [`exec`]: commands and background processes in its namespaces, files in its
//!   directory;
//! - [`interfaces`]: addresses added later, XDP programs attached;
//! - [`controller`] and [`controller_lifecycle`]: the real `scan-guard run` on the
//!   target's veth, its CLI, maps and events;
//! - [`scans`], [`services`], [`capture`], [`daemon`]: nmap, HTTP servers and
//!   clients, tcpdump, daemons a helper started.
//!
//! Every packet stays inside the lab's namespaces; every external command runs
//! under `timeout` ([`cmd`]).

pub mod bpffs;
pub mod capture;
pub mod cmd;
pub mod controller;
pub mod controller_lifecycle;
pub mod daemon;
pub mod exec;
pub mod interfaces;
pub mod netns;
pub mod process;
pub mod run_dir;
pub mod scans;
pub mod services;
pub mod topology;
pub mod veth;

// The names tests use, at `lab::` as before the split.
pub use crate::pcap::TcpSeen;
pub use capture::Capture;
pub use cmd::{CMD_TIMEOUT, describe, ip_ok, read_lossy, run_bounded};
pub use controller::{
    ATTACH_TIMEOUT, Controller, ControllerOptions, XdpMode, controller_bin, event_name, is_event,
    scan_guard_cli,
};
pub use daemon::DaemonGuard;
pub use netns::netns_list;
pub use process::{Proc, SPAWN_TIMEOUT};
pub use scans::{Background, quick_scan_args, quick_sweep_args};
pub use topology::{Lab, LabOptions, Side, address_side};
pub use veth::add_veth_pair;
