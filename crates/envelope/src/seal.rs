//! Sealing: encrypt a plaintext stream to a recipient and sign it as the sender.
//!
//! The header carries the plaintext's size and SHA-256, signed. Two ways to get them there:
//! - [`seal_seekable`]: one pass; the header is written over a placeholder at the end. For
//!   files (the CLI writes to a temporary file and renames it only on success).
//! - [`measure`] then [`seal`]: two passes over the input, for outputs that cannot seek
//!   (pipes). The second pass re-hashes what it encrypts and fails with
//!   [`EnvelopeError::InputChanged`] if the input changed in between; the caller must then
//!   discard the output.
//!
//! Both write identical envelopes for identical inputs and randomness.

use std::io::{Read, Seek, SeekFrom, Write};

use ring::aead::LessSafeKey;
use ring::agreement;
use ring::rand::SecureRandom;

use crate::error::{EnvelopeError, Result};
use crate::header::{ContentType, EnvelopeId, Header, SignedHeader, SIGNATURE_LEN};
use crate::keys::{RecipientPublicKey, SigningKey};
use crate::stream::{
    derive_payload_key, read_full, with_background_sha256, SegmentSealer, TAG_LEN,
};

/// Size and SHA-256 of a plaintext, from the first pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Plaintext length in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
}

/// Reads `input` to its end and returns its size and SHA-256 (first sealing pass).
pub fn measure<R: Read>(mut input: R) -> Result<Measured> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(ctx.finish().as_ref());
    Ok(Measured { size, sha256 })
}

/// Who seals what for whom.
#[derive(Clone, Copy, Debug)]
pub struct SealParams<'a> {
    /// The recipient's public encryption key (the vault's, or a researcher's).
    pub recipient: &'a RecipientPublicKey,
    /// The sender's signing key; its owner becomes the header's sender id.
    pub signer: &'a SigningKey,
    /// What the plaintext is.
    pub content_type: ContentType,
    /// Plaintext bytes per segment (normally [`crate::DEFAULT_SEGMENT_SIZE`]).
    pub segment_size: u32,
}

/// What [`seal`] wrote.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The signed header as written.
    pub header: SignedHeader,
    /// Total bytes written.
    pub sealed_size: u64,
}

impl Sealed {
    /// The new envelope's id.
    pub fn envelope_id(&self) -> EnvelopeId {
        self.header.header().envelope_id
    }
}

/// Seals `input`, whose size and digest `measured` gives, into `output` (two passes: the
/// header with size and digest is written first). Use this when `output` cannot seek, such
/// as a pipe; otherwise [`seal_seekable`] needs only one pass.
///
/// Randomness (envelope id, then the ephemeral key) comes from `rng`, so a test can pin
/// it; production passes `ring::rand::SystemRandom`.
pub fn seal<R: Read, W: Write>(
    params: SealParams<'_>,
    measured: Measured,
    rng: &dyn SecureRandom,
    input: R,
    mut output: W,
) -> Result<Sealed> {
    let Prepared { mut header, key } = prepare(params, rng)?;
    header.plaintext_size = measured.size;
    header.plaintext_sha256 = measured.sha256;
    let (encoded, signature) = sign(&header, params.signer);
    output.write_all(&encoded)?;
    output.write_all(&signature)?;
    // One byte more than measured is enough to tell that the input grew.
    let bounded = input.take(measured.size.saturating_add(1));
    let body = encrypt_stream(
        key,
        header.segment_size,
        measured.size,
        bounded,
        &mut output,
    )?;
    if body.plaintext != measured {
        return Err(EnvelopeError::InputChanged {
            expected_size: measured.size,
        });
    }
    output.flush()?;
    Ok(Sealed {
        sealed_size: (encoded.len() + signature.len()) as u64 + body.written,
        header: SignedHeader::new(header, encoded, signature),
    })
}

/// Seals `input` into `output` in a single pass: a placeholder header is written, the
/// segments follow, and the real header (with size, digest and signature) is written over
/// the placeholder at the end. `output` must be positioned at the start of the envelope.
pub fn seal_seekable<R: Read, W: Write + Seek>(
    params: SealParams<'_>,
    rng: &dyn SecureRandom,
    input: R,
    mut output: W,
) -> Result<Sealed> {
    let start = output.stream_position()?;
    let Prepared { mut header, key } = prepare(params, rng)?;
    let placeholder = vec![0u8; header.encode().len() + SIGNATURE_LEN];
    output.write_all(&placeholder)?;
    // The size is learnt only at the end: hash in the background.
    let body = encrypt_stream(key, header.segment_size, u64::MAX, input, &mut output)?;
    header.plaintext_size = body.plaintext.size;
    header.plaintext_sha256 = body.plaintext.sha256;
    let (encoded, signature) = sign(&header, params.signer);
    let end = output.stream_position()?;
    output.seek(SeekFrom::Start(start))?;
    output.write_all(&encoded)?;
    output.write_all(&signature)?;
    output.seek(SeekFrom::Start(end))?;
    output.flush()?;
    Ok(Sealed {
        sealed_size: (encoded.len() + signature.len()) as u64 + body.written,
        header: SignedHeader::new(header, encoded, signature),
    })
}

/// Header fields and payload key of an envelope being sealed.
struct Prepared {
    header: Header,
    key: LessSafeKey,
}

fn sign(header: &Header, signer: &SigningKey) -> (Vec<u8>, [u8; SIGNATURE_LEN]) {
    let encoded = header.encode();
    let signature = signer.sign(&Header::signing_message(&encoded));
    (encoded, signature)
}

/// Draws the envelope id and ephemeral key, fills the header (size and digest still zero:
/// they are not part of the key binding) and derives the payload key.
fn prepare(params: SealParams<'_>, rng: &dyn SecureRandom) -> Result<Prepared> {
    let mut id = [0u8; 16];
    rng.fill(&mut id)
        .map_err(|_| EnvelopeError::Crypto("random source failed"))?;
    let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::X25519, rng)
        .map_err(|_| EnvelopeError::Crypto("ephemeral key generation"))?;
    let ephemeral_public: [u8; 32] = ephemeral
        .compute_public_key()
        .map_err(|_| EnvelopeError::Crypto("ephemeral public key"))?
        .as_ref()
        .try_into()
        .map_err(|_| EnvelopeError::Crypto("X25519 public key length"))?;
    let header = Header {
        envelope_id: EnvelopeId(id),
        recipient_key_id: params.recipient.key_id(),
        ephemeral_public,
        sender_key_id: params.signer.public().key_id(),
        sender_id: params.signer.public().owner().to_owned(),
        content_type: params.content_type,
        segment_size: params.segment_size,
        plaintext_size: 0,
        plaintext_sha256: [0; 32],
    };
    header.validate()?;
    let bound = header.key_binding();
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, params.recipient.bytes());
    let key = agreement::agree_ephemeral(ephemeral, &peer, |shared| {
        derive_payload_key(shared, &ephemeral_public, params.recipient.bytes(), &bound)
    })
    // ring refuses a low-order recipient point (all-zero shared secret).
    .map_err(|_| EnvelopeError::BadKey("recipient public key is degenerate".into()))??;
    Ok(Prepared { header, key })
}

struct Body {
    plaintext: Measured,
    written: u64,
}

/// Encrypts `input` to its end in segments of `segment_size`, marking the last one.
///
/// The end is found by reading one segment ahead, so the input's length need not be known.
fn encrypt_stream<R: Read, W: Write>(
    key: LessSafeKey,
    segment_size: u32,
    size_hint: u64,
    mut input: R,
    output: &mut W,
) -> Result<Body> {
    let seg = segment_size as usize;
    let (written, size, sha256) = with_background_sha256(size_hint, |hash| {
        let mut sealer = SegmentSealer::new(key);
        let mut written = 0u64;
        let mut current = Vec::with_capacity(seg + TAG_LEN);
        let mut next = Vec::with_capacity(seg + TAG_LEN);
        read_segment(&mut input, &mut current, seg)?;
        loop {
            next.clear();
            if current.len() == seg {
                read_segment(&mut input, &mut next, seg)?;
            }
            let last = next.is_empty();
            hash(&current)?;
            sealer.seal_next(&mut current, last)?;
            output.write_all(&current)?;
            written += current.len() as u64;
            if last {
                return Ok(written);
            }
            std::mem::swap(&mut current, &mut next);
        }
    })?;
    Ok(Body {
        plaintext: Measured { size, sha256 },
        written,
    })
}

/// Fills `buf` with up to `len` bytes of input (fewer only at the end of input).
fn read_segment<R: Read>(input: &mut R, buf: &mut Vec<u8>, len: usize) -> Result<()> {
    buf.resize(len, 0);
    let got = read_full(input, buf)?;
    buf.truncate(got);
    Ok(())
}
