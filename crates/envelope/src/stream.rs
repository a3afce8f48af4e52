//! Segmented AEAD ("STREAM" construction, Hoang–Reyhanitabar–Rogaway–Vizár 2015) over
//! AES-256-GCM, and the key schedule that feeds it.
//!
//! Each segment of up to `segment_size` plaintext bytes is sealed separately with the nonce
//! `counter (8 bytes BE) ‖ 0x000000 ‖ last-flag (1 byte)`. Because the counter is part of the
//! nonce, a segment moved, dropped or repeated fails to authenticate; because the final
//! segment carries the flag, cutting the stream at a segment boundary is caught too. Memory
//! use is one segment, whatever the payload size.
//!
//! The payload key is unique per envelope (fresh ephemeral X25519 key), so the counter nonce
//! never repeats under one key. We use `LessSafeKey` because ring's `NonceSequence` cannot
//! express the last-segment flag; the counter below is the only nonce source.

use std::io::{self, Read};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

use crate::error::{EnvelopeError, Result};

/// AES-GCM tag length appended to every segment.
pub const TAG_LEN: usize = 16;

const PAYLOAD_KEY_INFO: &[u8] = b"jp-med-enclave/envelope/v1/payload-key\0";

/// Derives the AES-256-GCM payload key from the X25519 shared secret.
///
/// HKDF-SHA256 with salt = ephemeral public ‖ recipient public (the pair names the exchange)
/// and info = label ‖ SHA-256(header key binding), so a key exists only for this sender,
/// recipient, envelope id, content type and segment size.
pub(crate) fn derive_payload_key(
    shared_secret: &[u8],
    ephemeral_public: &[u8; 32],
    recipient_public: &[u8; 32],
    header_binding: &[u8],
) -> Result<LessSafeKey> {
    let mut salt_bytes = [0u8; 64];
    salt_bytes[..32].copy_from_slice(ephemeral_public);
    salt_bytes[32..].copy_from_slice(recipient_public);
    let header_hash = ring::digest::digest(&ring::digest::SHA256, header_binding);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes).extract(shared_secret);
    let info = [PAYLOAD_KEY_INFO, header_hash.as_ref()];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| EnvelopeError::Crypto("HKDF expand"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Seals segments in order. Owns the only nonce counter for its key.
pub(crate) struct SegmentSealer {
    key: LessSafeKey,
    next: u64,
    finished: bool,
}

impl SegmentSealer {
    pub(crate) fn new(key: LessSafeKey) -> Self {
        Self {
            key,
            next: 0,
            finished: false,
        }
    }

    /// Encrypts `buf` in place and appends the tag.
    pub(crate) fn seal_next(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<()> {
        if self.finished {
            return Err(EnvelopeError::Crypto("segment sealed after the final one"));
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.next, last), Aad::empty(), buf)
            .map_err(|_| EnvelopeError::Crypto("AES-GCM seal"))?;
        buf.extend_from_slice(tag.as_ref());
        self.next = self
            .next
            .checked_add(1)
            .ok_or(EnvelopeError::Crypto("segment counter overflow"))?;
        self.finished = last;
        Ok(())
    }
}

/// Opens segments in order.
pub(crate) struct SegmentOpener {
    key: LessSafeKey,
    next: u64,
}

impl SegmentOpener {
    pub(crate) fn new(key: LessSafeKey) -> Self {
        Self { key, next: 0 }
    }

    /// Decrypts `buf` (ciphertext ‖ tag) in place; returns the plaintext part.
    pub(crate) fn open_next<'b>(&mut self, buf: &'b mut [u8], last: bool) -> Result<&'b [u8]> {
        let index = self.next;
        let plain = self
            .key
            .open_in_place(nonce(index, last), Aad::empty(), buf)
            .map_err(|_| EnvelopeError::SegmentTampered { segment: index })?;
        self.next = index
            .checked_add(1)
            .ok_or(EnvelopeError::Crypto("segment counter overflow"))?;
        Ok(plain)
    }
}

/// Below this many bytes the digest is computed inline: starting and joining a thread costs
/// more than hashing a small envelope (the vault opens millions of one-message envelopes).
pub(crate) const BACKGROUND_HASH_MIN: u64 = 1 << 20;

/// Runs `work` while a second thread computes the SHA-256 of every chunk `work` feeds it,
/// and returns `work`'s result with the byte count and digest of what was fed. When
/// `size_hint` (the expected byte count; `u64::MAX` when unknown) is under
/// [`BACKGROUND_HASH_MIN`], the hash is computed inline instead.
///
/// SHA-256 costs about twice what AES-GCM does per byte; on the appliance's two-core machines
/// running it beside the cipher nearly halves the wall time of sealing and opening. At most
/// eight chunks are in flight, so memory stays bounded.
pub(crate) fn with_background_sha256<T>(
    size_hint: u64,
    work: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<T>,
) -> Result<(T, u64, [u8; 32])> {
    if size_hint < BACKGROUND_HASH_MIN {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        let result = work(&mut |chunk: &[u8]| {
            ctx.update(chunk);
            size += chunk.len() as u64;
            Ok(())
        });
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(ctx.finish().as_ref());
        return Ok((result?, size, sha256));
    }
    std::thread::scope(|scope| {
        let (to_hasher, from_worker) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let hasher = scope.spawn(move || {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut size = 0u64;
            for chunk in from_worker {
                ctx.update(&chunk);
                size += chunk.len() as u64;
            }
            (size, ctx.finish())
        });
        let mut feed = |chunk: &[u8]| {
            to_hasher
                .send(chunk.to_vec())
                .map_err(|_| EnvelopeError::Crypto("hash thread stopped"))
        };
        let result = work(&mut feed);
        drop(to_hasher);
        let (size, digest) = hasher
            .join()
            .map_err(|_| EnvelopeError::Crypto("hash thread panicked"))?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Ok((result?, size, sha256))
    })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
pub fn read_full<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LessSafeKey {
        derive_payload_key(&[1; 32], &[2; 32], &[3; 32], b"header").expect("key")
    }

    #[test]
    fn inline_and_background_hashing_agree() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let run = |hint: u64| {
            with_background_sha256(hint, |hash| {
                for chunk in data.chunks(65_536) {
                    hash(chunk)?;
                }
                Ok(())
            })
            .expect("hash")
        };
        let ((), n1, d1) = run(10);
        let ((), n2, d2) = run(u64::MAX);
        assert_eq!((n1, d1), (n2, d2));
        assert_eq!(n1, data.len() as u64);
        assert_eq!(
            d1.as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );
    }

    #[test]
    fn segments_only_open_in_their_place() {
        let mut sealer = SegmentSealer::new(key());
        let mut a = b"first".to_vec();
        let mut b = b"second".to_vec();
        sealer.seal_next(&mut a, false).expect("seal");
        sealer.seal_next(&mut b, true).expect("seal");
        assert!(sealer.seal_next(&mut Vec::new(), true).is_err());

        // In order: fine.
        let mut opener = SegmentOpener::new(key());
        assert_eq!(
            opener.open_next(&mut a.clone(), false).expect("a"),
            b"first"
        );
        assert_eq!(
            opener.open_next(&mut b.clone(), true).expect("b"),
            b"second"
        );
        // Swapped: the first position refuses the second segment.
        let mut opener = SegmentOpener::new(key());
        assert!(opener.open_next(&mut b.clone(), false).is_err());
        // Final flag missing: a stream cut after `a` cannot pass `a` off as the end.
        let mut opener = SegmentOpener::new(key());
        assert!(opener.open_next(&mut a.clone(), true).is_err());
    }

    #[test]
    fn key_depends_on_every_input() {
        let mut base = b"x".to_vec();
        SegmentSealer::new(key())
            .seal_next(&mut base, true)
            .expect("seal");
        for other in [
            derive_payload_key(&[9; 32], &[2; 32], &[3; 32], b"header"),
            derive_payload_key(&[1; 32], &[9; 32], &[3; 32], b"header"),
            derive_payload_key(&[1; 32], &[2; 32], &[9; 32], b"header"),
            derive_payload_key(&[1; 32], &[2; 32], &[3; 32], b"headex"),
        ] {
            let mut opener = SegmentOpener::new(other.expect("key"));
            assert!(opener.open_next(&mut base.clone(), true).is_err());
        }
    }
}
