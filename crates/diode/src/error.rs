//! Errors of the diode core. Datagram errors are never fatal: the receiver drops the datagram
//! and counts the reason; object failures become events and gap-report entries.

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than header and tag.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// Longer than any datagram we send.
    #[error("datagram of {0} bytes is too long")]
    TooLong(usize),
    /// Not our protocol.
    #[error("bad magic")]
    BadMagic,
    /// A protocol version this build does not speak.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    /// Authentication failed: corrupted, injected, or sealed with another link key.
    #[error("authentication tag does not verify")]
    BadTag,
    /// Authenticated but of a kind this build does not know.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// Authenticated but inconsistent.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
}

/// Why an object could not be delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectFailure {
    /// No datagram for the object arrived for the idle timeout before it was complete
    /// (too much loss for the FEC overhead, or the receiver joined mid-object).
    #[error(
        "incomplete after {blocks_missing} of {blocks_total} blocks went missing or undecodable"
    )]
    Incomplete {
        /// Blocks not delivered.
        blocks_missing: u64,
        /// Blocks in the object.
        blocks_total: u64,
    },
    /// All bytes arrived but the keyed hash did not match.
    #[error("keyed hash mismatch")]
    HashMismatch,
    /// The sender restarted while the object was in flight; it will come again or be a gap.
    #[error("sender session changed mid-object")]
    SessionChanged,
    /// Bigger than the receiver accepts.
    #[error("object of {size} bytes exceeds the receiver's limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A block's shards did not decode (cannot happen with authenticated shards of one
    /// encoding; reported rather than assumed).
    #[error("block {0} did not decode")]
    Undecodable(u64),
    /// More bytes of blocks in flight than the receiver's memory bound allows (MiB).
    #[error("more than {0} MiB of blocks in flight")]
    TooManyBytesInFlight(u64),
}

/// Misuse of the sender by its driver, or a configuration it cannot work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderError {
    /// A configuration value is out of range.
    #[error("bad sender configuration: {0}")]
    Config(&'static str),
    /// Object names are 1..=255 bytes.
    #[error("object name {0:?} is empty or longer than 255 bytes")]
    BadName(String),
    /// `handle_read` was called with something other than the requested range.
    #[error("read of object {object_id} at offset {offset} was not the one requested")]
    UnexpectedRead {
        /// Object.
        object_id: u64,
        /// Offset.
        offset: u64,
    },
    /// The erasure codec refused the block.
    #[error("erasure coding failed: {0}")]
    Codec(String),
}
