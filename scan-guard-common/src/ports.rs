//! Layout of the `LISTENING` map: one bit per (protocol, port), 1024 u64 words
//! per protocol, so a lookup is one array access.

pub const WORDS_PER_PROTO: u32 = 1024;
/// Protocol slot for TCP listeners.
pub const PROTO_TCP: u32 = 0;
/// Protocol slot for bound UDP sockets.
pub const PROTO_UDP: u32 = 1;
/// Entries of the `LISTENING` array.
pub const LISTENING_WORDS: u32 = 2 * WORDS_PER_PROTO;

/// Array index holding the bit of `port` for protocol slot `proto`.
#[inline(always)]
pub const fn word_index(proto: u32, port: u16) -> u32 {
    proto * WORDS_PER_PROTO + (port as u32 >> 6)
}

/// Bit of `port` inside its word.
#[inline(always)]
pub const fn bit(port: u16) -> u64 {
    1u64 << (port & 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_has_a_unique_slot() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            for port in [0u16, 1, 63, 64, 443, 65535] {
                assert!(word_index(proto, port) < LISTENING_WORDS);
            }
        }
        assert_ne!(word_index(PROTO_TCP, 80), word_index(PROTO_UDP, 80));
        assert_eq!(word_index(PROTO_TCP, 64), 1);
        assert_eq!(bit(65), 2);
    }
}
