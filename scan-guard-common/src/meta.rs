//! The controller's record of each block (value of the userspace-only `BLOCK_META`
//! map, pinned beside the kernel maps): why, since when, until when. Control
//! commands in other processes write it too, so it is the shared desired state the
//! controller reconciles the kernel blocklist against.

/// Key of `BLOCK_META`: the blocklist key it describes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetaKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// Bytes of reason text kept per block.
pub const REASON_LEN: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    /// Unix time (s) the block started.
    pub since_unix_s: u64,
    /// Unix time (s) it ends; 0 = never.
    pub expires_unix_s: u64,
    /// How many times this source has been blocked (escalation step).
    pub offences: u32,
    /// `BlockOrigin`.
    pub origin: u8,
    /// `vocab::ScanKind` code, or `KIND_NONE`.
    pub kind: u8,
    pub _pad: [u8; 2],
    /// UTF-8 reason, NUL-padded.
    pub reason: [u8; REASON_LEN],
}

const _: () = assert!(core::mem::size_of::<MetaKey>() == 20);
const _: () = assert!(core::mem::size_of::<BlockMeta>() == 88);

impl BlockMeta {
    /// The reason text (up to the first NUL; invalid UTF-8 is cut at the error).
    pub fn reason(&self) -> &str {
        let end = self
            .reason
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(REASON_LEN);
        match core::str::from_utf8(&self.reason[..end]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.reason[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Stores `text`, truncated to `REASON_LEN` bytes on a character boundary.
    pub fn set_reason(&mut self, text: &str) {
        self.reason = [0; REASON_LEN];
        let mut end = text.len().min(REASON_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.reason[..end].copy_from_slice(&text.as_bytes()[..end]);
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for MetaKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for BlockMeta {}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BlockMeta {
        BlockMeta {
            since_unix_s: 0,
            expires_unix_s: 0,
            offences: 1,
            origin: 2,
            kind: 0xff,
            _pad: [0; 2],
            reason: [0; REASON_LEN],
        }
    }

    #[test]
    fn reason_round_trips_and_truncates_on_char_boundary() {
        let mut m = meta();
        m.set_reason("manual: noisy neighbour");
        assert_eq!(m.reason(), "manual: noisy neighbour");
        let long = "é".repeat(40); // 80 bytes
        m.set_reason(&long);
        assert_eq!(m.reason().len(), 64);
        assert!(m.reason().chars().all(|c| c == 'é'));
        m.set_reason("");
        assert_eq!(m.reason(), "");
    }
}
