//! tcpdump on a lab interface ([`Capture`]) and what it saw: the TCP segments
//! ([`TcpSeen`]) or the pcap file's bytes for [`crate::pcap`].

use std::{fs, path::PathBuf, thread, time::Duration};

use crate::pcap::{TcpSeen, tcp_segments};

use super::{
    cmd::{path_str, read_lossy},
    process::Proc,
    topology::{Lab, Side},
};

/// A tcpdump writing a pcap file in the lab directory.
#[derive(Debug)]
pub struct Capture {
    pub proc: Proc,
    pub file: PathBuf,
    pub log: PathBuf,
}

impl Lab {
    /// Starts tcpdump on `side`'s veth writing TCP segments to a pcap file, and
    /// waits (bounded) until it is capturing.
    pub fn start_capture(&self, side: &Side) -> Capture {
        self.start_tcpdump(&side.ns, &side.iface, &[], "tcp")
    }

    /// Stops the capture and returns the TCP segments it saw.
    pub fn stop_capture(&self, cap: &Capture) -> Vec<TcpSeen> {
        // Packets still in flight to the interface get a moment to be captured.
        let (bytes, _) = self.stop_capture_raw(cap, Duration::from_millis(200));
        tcp_segments(&bytes).unwrap_or_else(|e| {
            panic!(
                "[lab {}] capture {} is not a readable pcap: {e}",
                self.tag,
                cap.file.display()
            )
        })
    }

    /// Starts tcpdump on `iface` in `ns` with the capture filter `filter`, the
    /// first 160 bytes of each packet, at most `max_packets` packets, written to a
    /// pcap file in the lab directory; waits (bounded) until it is capturing.
    /// Read it with [`stop_capture_raw`](Self::stop_capture_raw).
    pub fn start_capture_where(
        &self,
        ns: &str,
        iface: &str,
        filter: &str,
        max_packets: u32,
    ) -> Capture {
        let count = max_packets.to_string();
        // --immediate-mode: every packet hits the file at once (else the kernel
        // holds them for up to a second, and a SIGTERM loses them); -B: a 16 MiB
        // kernel buffer so floods are not lost before the file.
        self.start_tcpdump(
            ns,
            iface,
            &["--immediate-mode", "-s", "160", "-B", "16384", "-c", &count],
            filter,
        )
    }

    /// Stops a capture (after `settle` for packets still in flight) and returns the
    /// pcap file's bytes and what tcpdump said (its drop counts).
    pub fn stop_capture_raw(&self, cap: &Capture, settle: Duration) -> (Vec<u8>, String) {
        thread::sleep(settle);
        let status = self.terminate(cap.proc, Duration::from_secs(5));
        assert!(
            status.code() != Some(124),
            "[lab {}] tcpdump ran into its timeout: {}",
            self.tag,
            read_lossy(&cap.log)
        );
        let bytes = fs::read(&cap.file).unwrap_or_else(|e| {
            panic!(
                "[lab {}] reading capture {}: {e}\n--- tcpdump log ---\n{}",
                self.tag,
                cap.file.display(),
                read_lossy(&cap.log)
            )
        });
        (bytes, read_lossy(&cap.log))
    }

    /// Starts tcpdump on `iface` in `ns` writing the packets `filter` passes to a
    /// pcap file in the lab directory, with `opts` added, and waits (bounded) until
    /// it is capturing.
    fn start_tcpdump(&self, ns: &str, iface: &str, opts: &[&str], filter: &str) -> Capture {
        let file = self.file("capture", "pcap");
        let log = self.file("tcpdump", "log");
        // -Z root: the lab directory is root's; tcpdump would otherwise drop to its
        // own user and silently write nothing. -U: every packet hits the file.
        let mut argv = vec![
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "-Z",
            "root",
            "-w",
            path_str(&file),
        ];
        argv.extend_from_slice(opts);
        argv.push(filter);
        let proc = self.spawn_in(ns, &argv, &log);
        self.wait_started(
            proc,
            "tcpdump",
            "start capturing",
            &[&log],
            Duration::from_secs(10),
            || read_lossy(&log).contains("listening on"),
        );
        Capture { proc, file, log }
    }
}
