//! Sealed envelopes: how a medical institution hands data to the vault so that nothing in
//! between — ingress included — ever sees plaintext (R-GW-8).
//!
//! An envelope is encrypted to a recipient's X25519 public key (ephemeral-static ECDH,
//! HKDF-SHA256, AES-256-GCM in fixed-size segments with STREAM nonces) and signed by the
//! sender's Ed25519 key over a header that carries the plaintext's size and SHA-256. Files of
//! any size seal and open in memory proportional to one segment; truncation, reordering,
//! duplication and modification of any segment are detected. See `header` for the wire
//! layout and `docs/envelope.md` for the rationale.
//!
//! This crate does no I/O of its own: it reads and writes through `Read`/`Write` handed in by
//! the caller, and takes randomness as a `ring::rand::SecureRandom`. Key *files* (with their
//! 0600 permissions) are the `keystore` crate's job.
//!
//! ```
//! use envelope::{measure, open, seal, ContentType, RecipientSecretKey, SealParams, SigningKey};
//! let rng = ring::rand::SystemRandom::new();
//! let vault = RecipientSecretKey::generate("vault", &rng).unwrap();
//! let hospital = SigningKey::generate("1312345678", &rng).unwrap();
//! let plaintext = b"MSH|^~\\&|...".to_vec();
//! let params = SealParams {
//!     recipient: vault.public(),
//!     signer: &hospital,
//!     content_type: ContentType::Ssmix2,
//!     segment_size: envelope::DEFAULT_SEGMENT_SIZE,
//! };
//! let mut sealed = Vec::new();
//! seal(params, measure(&plaintext[..]).unwrap(), &rng, &plaintext[..], &mut sealed).unwrap();
//! let mut opened = Vec::new();
//! let proof = open(&vault, &[hospital.public().clone()], &sealed[..], &mut opened).unwrap();
//! assert_eq!(opened, plaintext);
//! assert_eq!(proof.sender().owner(), "1312345678");
//! ```

#![forbid(unsafe_code)]

mod error;
mod header;
mod keys;
mod open;
mod seal;
mod stream;

pub use error::{EnvelopeError, Result};
pub use header::{
    ContentType, EnvelopeId, Header, SignedHeader, DEFAULT_SEGMENT_SIZE, MAGIC, MAX_HEADER_LEN,
    MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, SIGNATURE_CONTEXT, VERSION,
};
pub use keys::{
    key_kind_of, validate_party_id, KeyId, KeyKind, RecipientPublicKey, RecipientSecretKey,
    SigningKey, VerifyingKey, MAX_PARTY_ID_LEN,
};
pub use open::{open, Opened};
pub use seal::{measure, seal, seal_seekable, Measured, SealParams, Sealed};
pub use stream::{read_full, TAG_LEN};
