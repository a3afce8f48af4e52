//! Typed errors of the envelope format. Each variant names what is wrong precisely enough
//! to become a refusal or quarantine reason (R-IN-2) without anyone reading a stack trace.

use crate::keys::KeyId;

/// Everything that can go wrong while sealing, inspecting or opening an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input does not start with the envelope magic bytes.
    #[error("not a sealed envelope (magic bytes missing)")]
    NotAnEnvelope,
    /// The envelope was written by a format version this build does not understand.
    #[error("unknown envelope format version {found} (this build reads version {supported})")]
    UnknownVersion {
        /// Version found in the input.
        found: u16,
        /// Version this build supports.
        supported: u16,
    },
    /// A header field is out of range or badly formed.
    #[error("malformed envelope header: {0}")]
    MalformedHeader(String),
    /// The header names a content type this build does not know.
    #[error("unknown content type {0:?}")]
    UnknownContentType(String),
    /// The envelope is sealed to a different recipient key.
    #[error("envelope is sealed to key {envelope}, not to this key {ours}")]
    WrongRecipient {
        /// Recipient key id written in the envelope.
        envelope: KeyId,
        /// Key id of the key that tried to open it.
        ours: KeyId,
    },
    /// No trusted sender key has the key id named in the header.
    #[error("envelope is signed by key {key_id} of sender {sender_id:?}, which is not a trusted sender key")]
    UnknownSender {
        /// Sender id written in the header.
        sender_id: String,
        /// Sender key id written in the header.
        key_id: KeyId,
    },
    /// The key with that id belongs to a different owner than the sender the header claims.
    #[error("header claims sender {claimed:?} but key {key_id} belongs to {owner:?}")]
    SenderMismatch {
        /// Sender id in the header.
        claimed: String,
        /// Owner recorded with the trusted key.
        owner: String,
        /// The key id.
        key_id: KeyId,
    },
    /// The Ed25519 signature over the header does not verify.
    #[error("bad signature: the header was not signed by sender key {key_id}")]
    BadSignature {
        /// Key the signature was checked against.
        key_id: KeyId,
    },
    /// The input ended before the header was complete.
    #[error("truncated envelope: input ends inside the header")]
    TruncatedHeader,
    /// The input ended before segment `segment` was complete (or before it began).
    #[error("truncated envelope: input ends at segment {segment} of {total}")]
    Truncated {
        /// Index of the first missing or incomplete segment.
        segment: u64,
        /// Number of segments the header announces.
        total: u64,
    },
    /// Segment `segment` failed authentication: modified, reordered, duplicated or from
    /// another envelope.
    #[error(
        "segment {segment} failed authentication (modified, reordered, duplicated or foreign)"
    )]
    SegmentTampered {
        /// Index of the segment that failed.
        segment: u64,
    },
    /// Bytes follow the final segment.
    #[error("unexpected data after the final segment")]
    TrailingData,
    /// Every segment authenticated but the plaintext does not match the signed digest.
    #[error("plaintext does not match the signed SHA-256 digest")]
    DigestMismatch,
    /// While sealing, the input differed from what was measured in the first pass.
    #[error("input changed while it was being sealed (expected {expected_size} bytes with the measured SHA-256)")]
    InputChanged {
        /// Size measured in the first pass.
        expected_size: u64,
    },
    /// The ephemeral public key is a low-order point (the shared secret would be all zeros).
    #[error("envelope uses a degenerate ephemeral key")]
    DegenerateKey,
    /// A key file or key text is malformed.
    #[error("bad key: {0}")]
    BadKey(String),
    /// The cryptographic library refused an operation (should not happen with valid keys).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl EnvelopeError {
    /// True when the error is about the envelope's bytes (bad input from outside), false
    /// when it is about local keys, configuration or I/O. Binaries map the two to different
    /// exit codes and refusal records.
    pub fn is_rejection(&self) -> bool {
        !matches!(
            self,
            EnvelopeError::Io(_) | EnvelopeError::BadKey(_) | EnvelopeError::Crypto(_)
        )
    }
}

/// Result alias for this crate.
pub type Result<T, E = EnvelopeError> = std::result::Result<T, E>;
