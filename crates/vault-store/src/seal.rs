//! Encryption at rest (R-OP-5), ring only: AES-256-GCM with a fresh random key per record
//! batch, that key wrapped (AES-256-GCM) under a key derived from the master key, and
//! identities sealed under a second derived key. Every ciphertext is bound by its AAD to the
//! place it belongs (batch number, purpose), so a file moved to another name fails to open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::StoreError;

/// The master key and the keys derived from it. The master bytes are wiped on drop.
pub struct MasterKey {
    wrap: LessSafeKey,
    identity: LessSafeKey,
    state: LessSafeKey,
    mac: ring::hmac::Key,
    _bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn derive(prk: &hkdf::Prk, info: &[u8]) -> Result<LessSafeKey, StoreError> {
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [info];
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(out.as_mut_slice()))
        .map_err(|_| StoreError::Crypto("deriving a key"))?;
    aead_key(out.as_slice())
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, StoreError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| StoreError::Crypto("making an AES-256-GCM key"))
}

impl MasterKey {
    /// Derives the wrapping and identity keys (HKDF-SHA256) from 32 master-key bytes.
    pub fn new(bytes: [u8; 32]) -> Result<Self, StoreError> {
        let bytes = Zeroizing::new(bytes);
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"enclave-vault-store-v1").extract(bytes.as_slice());
        Ok(MasterKey {
            wrap: derive(&prk, b"wrap batch keys")?,
            identity: derive(&prk, b"seal identities")?,
            state: derive(&prk, b"seal operator state")?,
            mac: {
                let mut k = Zeroizing::new([0u8; 32]);
                prk.expand(&[b"authenticate records kept apart".as_slice()], Len32)
                    .and_then(|okm| okm.fill(k.as_mut_slice()))
                    .map_err(|_| StoreError::Crypto("deriving a key"))?;
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_slice())
            },
            _bytes: bytes,
        })
    }

    /// Encrypts `plain` for `place` with a new batch key; returns (sealed bytes, wrapped key).
    pub fn seal_batch(&self, place: &str, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let rng = SystemRandom::new();
        let mut dek = Zeroizing::new([0u8; 32]);
        rng.fill(dek.as_mut_slice())
            .map_err(|_| StoreError::Crypto("drawing a batch key"))?;
        let sealed = seal_with(&aead_key(dek.as_slice())?, &rng, place.as_bytes(), plain)?;
        let wrapped = seal_with(
            &self.wrap,
            &rng,
            format!("dek:{place}").as_bytes(),
            dek.as_slice(),
        )?;
        Ok((sealed, wrapped))
    }

    /// Opens a batch sealed by [`MasterKey::seal_batch`] for `place`.
    pub fn open_batch(
        &self,
        place: &str,
        sealed: &[u8],
        wrapped: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let dek = Zeroizing::new(open_with(
            &self.wrap,
            format!("dek:{place}").as_bytes(),
            wrapped,
        )?);
        open_with(&aead_key(&dek)?, place.as_bytes(), sealed)
    }

    /// Seals an identity record (direct identifiers) for storage apart from the records.
    pub fn seal_identity(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal_with(&self.identity, &SystemRandom::new(), b"identity", plain)
    }

    /// Opens an identity record.
    pub fn open_identity(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        open_with(&self.identity, b"identity", sealed)
    }

    /// Seals the operators' state (accounts with their password hashes and TOTP secrets,
    /// the governance registers) for the file named `place`.
    pub fn seal_state(&self, place: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal_with(&self.state, &SystemRandom::new(), place.as_bytes(), plain)
    }

    /// HMAC-SHA256 of `bytes` for `place` under a key derived from the master key: how
    /// files kept outside the sealed state (a backup's manifest, the opt-out register kept
    /// apart from the store) are authenticated, so that no one without the master key can
    /// edit them unnoticed.
    pub fn mac(&self, place: &str, bytes: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.mac);
        ctx.update(place.as_bytes());
        ctx.update(&[0]);
        ctx.update(bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is [`MasterKey::mac`] of `bytes` for `place` (constant time).
    pub fn check_mac(&self, place: &str, bytes: &[u8], tag: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(place.len() + 1 + bytes.len());
        msg.extend_from_slice(place.as_bytes());
        msg.push(0);
        msg.extend_from_slice(bytes);
        ring::hmac::verify(&self.mac, &msg, tag).is_ok()
    }

    /// Opens what [`MasterKey::seal_state`] sealed for `place`.
    pub fn open_state(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        open_with(&self.state, place.as_bytes(), sealed)
    }
}

fn seal_with(
    key: &LessSafeKey,
    rng: &SystemRandom,
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| StoreError::Crypto("drawing a nonce"))?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| StoreError::Crypto("sealing"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    if sealed.len() < NONCE_LEN {
        return Err(StoreError::Crypto("sealed data too short"));
    }
    let (n, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| StoreError::Crypto("nonce"))?;
    let mut buf = ct.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| {
            StoreError::Crypto("authentication failed: wrong key, or the data was altered or moved")
        })?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_open_only_in_their_place_and_under_their_key() {
        let k = MasterKey::new([1; 32]).expect("key");
        let (sealed, wrapped) = k.seal_batch("batch-1", b"rows").expect("seal");
        assert_eq!(
            k.open_batch("batch-1", &sealed, &wrapped).expect("open"),
            b"rows"
        );
        assert!(k.open_batch("batch-2", &sealed, &wrapped).is_err());
        let other = MasterKey::new([2; 32]).expect("key");
        assert!(other.open_batch("batch-1", &sealed, &wrapped).is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k.open_batch("batch-1", &bad, &wrapped).is_err());
        assert!(!sealed.windows(4).any(|w| w == b"rows"));
    }
}
