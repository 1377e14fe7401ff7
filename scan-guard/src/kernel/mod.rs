//! The kernel side: loading the XDP program, attaching it to every configured
//! interface, pinning and re-adopting, typed access to its maps, and what the
//! program needs to know of the host (listening sockets, NAT-published ports).

pub mod attachments;
pub mod bpffs;
pub mod generation;
pub mod ifaces;
pub mod instance;
pub mod listeners;
pub mod loader;
pub mod mapped;
pub mod maps;
pub mod nat_watch;
pub mod published;
