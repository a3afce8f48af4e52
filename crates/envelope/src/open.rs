//! Opening: check who sealed an envelope, decrypt it, and prove the plaintext is complete.
//!
//! Order of checks: magic and version, recipient key id, sender key and owner, header
//! signature, then each segment in turn, then end of input, then the signed digest. The
//! header is fully authenticated before any plaintext is produced. Segments are written to
//! `output` as they authenticate, so a truncated envelope leaves a prefix in `output`: only an
//! `Ok` return says the plaintext is complete. Callers that name files write to a temporary
//! file and rename it on `Ok` (the CLI and the vault do).

use std::io::{Read, Write};

use crate::error::{EnvelopeError, Result};
use crate::header::{Header, SignedHeader};
use crate::keys::{RecipientSecretKey, VerifyingKey};
use crate::stream::{
    derive_payload_key, read_full, with_background_sha256, SegmentOpener, TAG_LEN,
};

/// Proof that an envelope was opened completely: every segment authenticated, the signature
/// verified with a trusted key, and the plaintext matched the signed size and SHA-256.
/// Only [`open`] can make one.
#[derive(Debug)]
pub struct Opened {
    header: Header,
    sender: VerifyingKey,
    sealed_size: u64,
}

impl Opened {
    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The trusted key that signed the envelope.
    pub fn sender(&self) -> &VerifyingKey {
        &self.sender
    }
    /// Bytes of envelope consumed.
    pub fn sealed_size(&self) -> u64 {
        self.sealed_size
    }
}

/// Opens the envelope in `input` with `recipient`, accepting only senders in `trusted`, and
/// streams the plaintext to `output` in constant memory.
pub fn open<R: Read, W: Write>(
    recipient: &RecipientSecretKey,
    trusted: &[VerifyingKey],
    mut input: R,
    mut output: W,
) -> Result<Opened> {
    let signed = SignedHeader::read_from(&mut input)?;
    let header = signed.header();
    let ours = recipient.public().key_id();
    if header.recipient_key_id != ours {
        return Err(EnvelopeError::WrongRecipient {
            envelope: header.recipient_key_id,
            ours,
        });
    }
    let sender = signed.verify_with(trusted)?.clone();

    let shared = recipient
        .agree(&header.ephemeral_public)
        .ok_or(EnvelopeError::DegenerateKey)?;
    let key = derive_payload_key(
        shared.as_bytes(),
        &header.ephemeral_public,
        recipient.public().bytes(),
        &header.key_binding(),
    )?;
    drop(shared);

    let total = header.segment_count();
    let mut consumed = (signed.encoded().len() + signed.signature().len()) as u64;
    let ((), _, sha256) = with_background_sha256(header.plaintext_size, |hash| {
        let mut opener = SegmentOpener::new(key);
        let mut buf = vec![0u8; header.segment_size as usize + TAG_LEN];
        for index in 0..total {
            let len = header.segment_plaintext_len(index) + TAG_LEN;
            let chunk = &mut buf[..len];
            if read_full(&mut input, chunk)? < len {
                return Err(EnvelopeError::Truncated {
                    segment: index,
                    total,
                });
            }
            consumed += len as u64;
            let plain = opener.open_next(chunk, index + 1 == total)?;
            hash(plain)?;
            output.write_all(plain)?;
        }
        Ok(())
    })?;
    let mut probe = [0u8; 1];
    if read_full(&mut input, &mut probe)? != 0 {
        return Err(EnvelopeError::TrailingData);
    }
    if sha256 != header.plaintext_sha256 {
        return Err(EnvelopeError::DigestMismatch);
    }
    output.flush()?;
    Ok(Opened {
        header: header.clone(),
        sender,
        sealed_size: consumed,
    })
}
