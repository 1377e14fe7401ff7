//! Record the kernel writes into the `EVENTS` ring buffer when a source crosses a
//! threshold (at most one per source per window).

use crate::{
    addr::Addr,
    flags::PROBE_KINDS,
    state::{PORT_SAMPLES, SourceState, Trigger},
};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanEvent {
    pub ts_ns: u64,
    pub first_seen_ns: u64,
    pub window_start_ns: u64,
    pub src: Addr,
    /// Destination of the probe that crossed the threshold.
    pub dst: Addr,
    pub probes: [u32; PROBE_KINDS],
    pub score: u32,
    pub distinct_ports: u16,
    pub distinct_addrs: u16,
    pub port_samples: [u16; PORT_SAMPLES],
    pub sample_count: u8,
    /// `Trigger`.
    pub trigger: u8,
    /// 1 when the kernel inserted a block for this source.
    pub blocked: u8,
    pub flags_or: u8,
    pub flags_and: u8,
    /// `ProbeKind` of the crossing probe.
    pub last_kind: u8,
    /// SYNs with an OS-stack option set (connect scans).
    pub os_syns: u16,
    /// Why the kernel did not block although auto-block is on (`Suppression`), or 0.
    pub suppressed: u8,
    /// Prefix length (128-bit form) of `src`: the source is scored and blocked
    /// as this prefix (128: one address).
    pub src_prefix: u8,
    pub _pad: [u8; 2],
}

/// Why a crossing did not lead to a kernel block.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suppression {
    /// The source is in the never-block set (`PROTECTED`).
    Protected = 1,
    /// The per-second cap on new kernel blocks was reached.
    RateLimited = 2,
    /// The blocklist is full.
    BlocklistFull = 3,
    /// The controller's cap on blocks (`blocking.max_blocks`) was reached
    /// (the kernel never reports this one).
    BlocklistCap = 4,
}

impl Suppression {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Protected),
            2 => Some(Self::RateLimited),
            3 => Some(Self::BlocklistFull),
            4 => Some(Self::BlocklistCap),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Protected => "never_block",
            Self::RateLimited => "block_rate_cap",
            Self::BlocklistFull => "blocklist_full",
            Self::BlocklistCap => "blocklist_cap",
        }
    }
}

pub const SCAN_EVENT_SIZE: usize = core::mem::size_of::<ScanEvent>();
const _: () = assert!(SCAN_EVENT_SIZE == 144);

/// A first contact: a source touched a destination port it had not touched in its
/// window. Written to the `CONTACTS` ring buffer for the slow-scan test (TRW), so at
/// most one record per (source, port bucket) per window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    pub ts_ns: u64,
    pub src: Addr,
    pub dst: Addr,
    pub port: u16,
    /// `ProbeKind`.
    pub kind: u8,
    /// 1 when the port has a listener (a TRW success).
    pub listening: u8,
    /// 1 for a SYN with an OS stack's option set (a connect() scan).
    pub os_stack: u8,
    /// Prefix length (128-bit form) of `src`: evidence is kept per prefix.
    pub src_prefix: u8,
    pub _pad: [u8; 2],
}

pub const CONTACT_SIZE: usize = core::mem::size_of::<Contact>();
const _: () = assert!(CONTACT_SIZE == 48);

impl Contact {
    /// The prefix `src` stands for (128 for one address).
    pub fn src_prefix_len(&self) -> u32 {
        match self.src_prefix {
            0 => 128,
            p => u32::from(p),
        }
    }

    /// Parses a ring-buffer record; `None` when it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < CONTACT_SIZE {
            return None;
        }
        // SAFETY: length checked; plain old data, unaligned read.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Contact>()) })
    }
}

impl ScanEvent {
    /// Snapshot of `state` at the crossing.
    #[allow(clippy::too_many_arguments)]
    pub fn from_state(
        now: u64,
        src: &Addr,
        dst: &Addr,
        state: &SourceState,
        trigger: Trigger,
        last_kind: u8,
        blocked: bool,
        suppressed: u8,
    ) -> Self {
        Self {
            ts_ns: now,
            first_seen_ns: state.first_seen_ns,
            window_start_ns: state.window_start_ns,
            src: *src,
            dst: *dst,
            probes: state.probes,
            score: state.score,
            distinct_ports: state.distinct_ports,
            distinct_addrs: state.distinct_addrs,
            port_samples: state.port_samples,
            sample_count: state.sample_count,
            trigger: trigger as u8,
            blocked: blocked as u8,
            flags_or: state.flags_or,
            flags_and: state.flags_and,
            last_kind,
            os_syns: state.os_syns,
            suppressed,
            src_prefix: 128,
            _pad: [0; 2],
        }
    }

    /// Writes the snapshot straight into `dst` (a ring-buffer slot), field by field,
    /// so the kernel side never holds a whole event on its 512-byte stack.
    ///
    /// # Safety
    /// `dst` must be valid for writes of one `ScanEvent`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn write_from_state(
        dst: *mut ScanEvent,
        now: u64,
        src: &Addr,
        dst_addr: &Addr,
        state: &SourceState,
        trigger: Trigger,
        last_kind: u8,
        blocked: bool,
        suppressed: u8,
        src_prefix: u8,
    ) {
        // SAFETY: caller guarantees dst is writable; raw field pointers avoid
        // creating references to uninitialised memory.
        unsafe {
            (&raw mut (*dst).ts_ns).write(now);
            (&raw mut (*dst).first_seen_ns).write(state.first_seen_ns);
            (&raw mut (*dst).window_start_ns).write(state.window_start_ns);
            (&raw mut (*dst).src).write(*src);
            (&raw mut (*dst).dst).write(*dst_addr);
            (&raw mut (*dst).probes).write(state.probes);
            (&raw mut (*dst).score).write(state.score);
            (&raw mut (*dst).distinct_ports).write(state.distinct_ports);
            (&raw mut (*dst).distinct_addrs).write(state.distinct_addrs);
            (&raw mut (*dst).port_samples).write(state.port_samples);
            (&raw mut (*dst).sample_count).write(state.sample_count);
            (&raw mut (*dst).trigger).write(trigger as u8);
            (&raw mut (*dst).blocked).write(blocked as u8);
            (&raw mut (*dst).flags_or).write(state.flags_or);
            (&raw mut (*dst).flags_and).write(state.flags_and);
            (&raw mut (*dst).last_kind).write(last_kind);
            (&raw mut (*dst).os_syns).write(state.os_syns);
            (&raw mut (*dst).suppressed).write(suppressed);
            (&raw mut (*dst).src_prefix).write(src_prefix);
            (&raw mut (*dst)._pad).write([0; 2]);
        }
    }

    /// The prefix `src` stands for (128 for one address; records without the
    /// field read as 128).
    pub fn src_prefix_len(&self) -> u32 {
        match self.src_prefix {
            0 => 128,
            p => u32::from(p),
        }
    }

    /// Parses a ring-buffer record; `None` when it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < SCAN_EVENT_SIZE {
            return None;
        }
        // SAFETY: length checked; ScanEvent is plain old data with no invalid bit
        // patterns, and read_unaligned copes with any alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<ScanEvent>()) })
    }

    /// The sampled distinct ports.
    pub fn ports(&self) -> &[u16] {
        let n = (self.sample_count as usize).min(PORT_SAMPLES);
        &self.port_samples[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::from_v4;

    #[test]
    fn round_trips_through_bytes() {
        let mut st = SourceState::new(5);
        st.port_samples[0] = 22;
        st.port_samples[1] = 80;
        st.sample_count = 2;
        st.score = 30;
        let ev = ScanEvent::from_state(
            9,
            &from_v4([1, 2, 3, 4]),
            &from_v4([5, 6, 7, 8]),
            &st,
            Trigger::Score,
            0,
            true,
            0,
        );
        // SAFETY: ScanEvent is repr(C) plain data.
        let bytes: [u8; SCAN_EVENT_SIZE] = unsafe { core::mem::transmute(ev) };
        let back = ScanEvent::from_bytes(&bytes).expect("parse");
        assert_eq!(back, ev);
        assert_eq!(back.ports(), &[22, 80]);
        assert!(ScanEvent::from_bytes(&bytes[..SCAN_EVENT_SIZE - 1]).is_none());
    }
}
