//! The submit protocol between an institution's `enclave submit` and ingress, without I/O.
//!
//! One QUIC bidirectional stream carries one envelope:
//!
//! ```text
//! client → server   Offer (64 bytes): "JMEDSUB1", envelope id, sealed size, SHA-256 of the envelope
//! server → client   Reply: Resume{offset} | Receipt (already have it) | Refused
//! client → server   envelope bytes [offset, size), then FIN
//! server → client   Reply: Receipt | Refused, then FIN
//! ```
//!
//! A dropped upload is resumed from the bytes ingress already holds in its spool, so a 1 GiB
//! envelope interrupted at 900 MiB costs 100 MiB to finish, and an envelope ingress already
//! accepted is answered with its original receipt instead of being stored twice (issue #6).
//!
//! A receipt is ingress's signed statement of what it stored (R-IN-3): the signature covers the
//! exact body bytes, so a verifier never has to re-serialise JSON to check it. Admission
//! decisions (size limits, rate limits, daily byte quotas) are functions of state and a time
//! passed in, so they are property-tested without a clock (docs/STYLE.md).

#![forbid(unsafe_code)]

use std::fmt;

use envelope::{ContentType, EnvelopeId, SignedHeader, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Magic and version of an offer.
pub const OFFER_MAGIC: [u8; 8] = *b"JMEDSUB1";
/// Encoded size of an offer.
pub const OFFER_LEN: usize = 8 + 16 + 8 + 32;
/// Largest encoded reply; anything longer is a protocol violation.
pub const MAX_REPLY_LEN: usize = 16 * 1024;
/// Domain separation for receipt signatures.
pub const RECEIPT_CONTEXT: &[u8] = b"jp-med-enclave/ingress/v1/receipt\0";
/// ALPN protocol id of the submit protocol.
pub const ALPN: &[u8] = b"jmed-submit/1";
/// ALPN protocol id of release delivery: the same frames, egress pushing a sealed release
/// package to a researcher's `enclave receive`, whose receipt names the vault as sender
/// (`institution`) and is signed with the researcher's receipt key (`ingress_key_id`).
pub const RELEASE_ALPN: &[u8] = b"jmed-release/1";

/// Protocol errors (malformed frames).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The bytes are not an offer.
    #[error("not a submit offer (bad magic or length)")]
    BadOffer,
    /// A reply could not be decoded.
    #[error("malformed reply: {0}")]
    BadReply(String),
    /// A receipt's signature or contents do not check out.
    #[error("receipt does not verify: {0}")]
    BadReceipt(String),
}

/// What a client proposes to upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The envelope's id (from its header).
    pub envelope_id: EnvelopeId,
    /// Total envelope size in bytes.
    pub size: u64,
    /// SHA-256 of the whole envelope.
    pub sha256: [u8; 32],
}

impl Offer {
    /// Wire form.
    pub fn encode(&self) -> [u8; OFFER_LEN] {
        let mut out = [0u8; OFFER_LEN];
        out[..8].copy_from_slice(&OFFER_MAGIC);
        out[8..24].copy_from_slice(&self.envelope_id.0);
        out[24..32].copy_from_slice(&self.size.to_be_bytes());
        out[32..].copy_from_slice(&self.sha256);
        out
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        if bytes.len() != OFFER_LEN || bytes[..8] != OFFER_MAGIC {
            return Err(ProtoError::BadOffer);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[8..24]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[24..32]);
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&bytes[32..]);
        Ok(Self {
            envelope_id: EnvelopeId(id),
            size: u64::from_be_bytes(size),
            sha256: sha,
        })
    }
}

/// Why ingress refused something. The code is stable (ledger, client logic); the message
/// is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// The bytes are not an envelope, or its header is malformed.
    NotAnEnvelope,
    /// The header's signature does not verify with the institution's registered key.
    BadSignature,
    /// The envelope is signed by another institution than the client certificate names.
    SignerMismatch,
    /// The client certificate names no registered institution.
    UnknownInstitution,
    /// The content type is not one institutions may send.
    ContentType,
    /// Larger than the institution's per-envelope limit.
    TooLarge,
    /// The offer's size differs from what the header announces or what arrived.
    SizeMismatch,
    /// What arrived does not hash to the offer's SHA-256.
    HashMismatch,
    /// The envelope id was already used for different content.
    IdReused,
    /// Too many envelopes per minute (retry later).
    RateLimited,
    /// The institution's daily byte quota is used up (retry tomorrow).
    QuotaExceeded,
    /// Too many uploads in progress at once for this institution (retry shortly).
    Busy,
    /// Ingress could not store the envelope (disk full, …; retry later).
    Internal,
    /// The client broke the protocol.
    Protocol,
}

impl RefusalCode {
    /// Whether sending the same envelope again later can succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            RefusalCode::RateLimited
                | RefusalCode::QuotaExceeded
                | RefusalCode::Busy
                | RefusalCode::Internal
        )
    }

    /// Stable name (ledger column).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::NotAnEnvelope => "not_an_envelope",
            RefusalCode::BadSignature => "bad_signature",
            RefusalCode::SignerMismatch => "signer_mismatch",
            RefusalCode::UnknownInstitution => "unknown_institution",
            RefusalCode::ContentType => "content_type",
            RefusalCode::TooLarge => "too_large",
            RefusalCode::SizeMismatch => "size_mismatch",
            RefusalCode::HashMismatch => "hash_mismatch",
            RefusalCode::IdReused => "id_reused",
            RefusalCode::RateLimited => "rate_limited",
            RefusalCode::QuotaExceeded => "quota_exceeded",
            RefusalCode::Busy => "busy",
            RefusalCode::Internal => "internal",
            RefusalCode::Protocol => "protocol",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: code and explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// What is wrong, for the institution's operator.
    pub message: String,
}

impl Refusal {
    /// Builds a refusal.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// The body of a receipt: what ingress stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Always 1.
    pub version: u32,
    /// Envelope id, hex.
    pub envelope_id: String,
    /// Institution (client certificate common name = envelope signer).
    pub institution: String,
    /// SHA-256 of the stored envelope, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Content type from the header.
    pub content_type: String,
    /// When ingress committed it, Unix milliseconds.
    pub received_at_ms: u64,
    /// Key id of ingress's receipt-signing key, hex.
    pub ingress_key_id: String,
}

/// A signed receipt as sent and stored: the body's exact JSON bytes and an Ed25519 signature
/// over them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The body, JSON.
    pub body: String,
    /// Signature, hex.
    pub signature: String,
}

fn receipt_message(body: &str) -> Vec<u8> {
    let mut m = RECEIPT_CONTEXT.to_vec();
    m.extend_from_slice(body.as_bytes());
    m
}

impl SignedReceipt {
    /// Signs `body` with ingress's key.
    pub fn sign(body: &ReceiptBody, key: &SigningKey) -> Self {
        // Serialising a plain struct of strings and integers cannot fail.
        let body = serde_json::to_string(body).unwrap_or_default();
        let signature = hex::encode(key.sign(&receipt_message(&body)));
        Self { body, signature }
    }

    /// Checks the signature with ingress's public key and returns the body.
    pub fn verify(&self, ingress: &VerifyingKey) -> Result<ReceiptBody, ProtoError> {
        let sig =
            hex::decode(&self.signature).map_err(|e| ProtoError::BadReceipt(e.to_string()))?;
        ingress
            .verify(&receipt_message(&self.body), &sig)
            .map_err(|e| ProtoError::BadReceipt(e.to_string()))?;
        let body: ReceiptBody =
            serde_json::from_str(&self.body).map_err(|e| ProtoError::BadReceipt(e.to_string()))?;
        if body.ingress_key_id != ingress.key_id().to_string() {
            return Err(ProtoError::BadReceipt(format!(
                "receipt names ingress key {}, verified with {}",
                body.ingress_key_id,
                ingress.key_id()
            )));
        }
        Ok(body)
    }

    /// Verifies and also checks that it is the receipt for `offer` from `institution`.
    pub fn verify_for(
        &self,
        ingress: &VerifyingKey,
        offer: &Offer,
        institution: &str,
    ) -> Result<ReceiptBody, ProtoError> {
        let body = self.verify(ingress)?;
        let expect_id = offer.envelope_id.to_string();
        let expect_sha = hex::encode(offer.sha256);
        if body.envelope_id != expect_id
            || body.sha256 != expect_sha
            || body.size != offer.size
            || body.institution != institution
        {
            return Err(ProtoError::BadReceipt(format!(
                "receipt is for {} ({} bytes, sha256 {}, from {}), not for the envelope sent ({expect_id}, {} bytes, sha256 {expect_sha}, from {institution})",
                body.envelope_id, body.size, body.sha256, body.institution, offer.size
            )));
        }
        Ok(body)
    }
}

/// A server reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply")]
pub enum Reply {
    /// Send the envelope from this byte offset.
    Resume {
        /// Bytes ingress already holds.
        offset: u64,
    },
    /// Stored (now or earlier).
    Receipt {
        /// The signed receipt.
        receipt: SignedReceipt,
        /// True when the envelope had been accepted before this upload.
        duplicate: bool,
    },
    /// Refused.
    Refused {
        /// Why.
        refusal: Refusal,
    },
}

impl Reply {
    /// Wire form: 4-byte big-endian length, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = (json.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&json);
        out
    }

    /// Length of the JSON that follows a 4-byte prefix, checked against [`MAX_REPLY_LEN`].
    pub fn frame_len(prefix: [u8; 4]) -> Result<usize, ProtoError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len == 0 || len > MAX_REPLY_LEN {
            return Err(ProtoError::BadReply(format!("length {len}")));
        }
        Ok(len)
    }

    /// Parses the JSON part.
    pub fn decode(json: &[u8]) -> Result<Self, ProtoError> {
        serde_json::from_slice(json).map_err(|e| ProtoError::BadReply(e.to_string()))
    }
}

/// Per-institution limits (docs/operations.md, "Enrolling an institution").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest envelope accepted, bytes.
    pub max_envelope_bytes: u64,
    /// Bytes accepted per UTC day.
    pub max_bytes_per_day: u64,
    /// Sustained envelopes per second (token bucket refill).
    pub envelopes_per_second: u32,
    /// Burst size of the token bucket.
    pub burst: u32,
    /// Uploads in progress at once.
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 8 << 30,
            max_bytes_per_day: 2 << 40,
            envelopes_per_second: 5_000,
            burst: 10_000,
            max_concurrent: 64,
        }
    }
}

/// Token bucket in integer milli-tokens, time in milliseconds from any fixed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimiter {
    /// Milli-tokens available.
    milli: u64,
    /// Last refill time.
    at_ms: u64,
}

impl RateLimiter {
    /// A full bucket at time `now_ms`.
    pub fn new(limits: &Limits, now_ms: u64) -> Self {
        Self {
            milli: u64::from(limits.burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Takes one token if available. Time going backwards refills nothing.
    pub fn take(&mut self, limits: &Limits, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        let cap = u64::from(limits.burst) * 1000;
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(limits.envelopes_per_second)))
            .min(cap);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Bytes accepted on one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DailyBytes {
    day: u64,
    bytes: u64,
}

impl DailyBytes {
    /// Starts the count with what the ledger says was accepted on `day` already.
    pub fn new(day: u64, bytes: u64) -> Self {
        Self { day, bytes }
    }

    /// Whether `size` more bytes fit today's quota (and reserves them if so).
    pub fn reserve(&mut self, limits: &Limits, day: u64, size: u64) -> bool {
        if day != self.day {
            self.day = day;
            self.bytes = 0;
        }
        match self.bytes.checked_add(size) {
            Some(total) if total <= limits.max_bytes_per_day => {
                self.bytes = total;
                true
            }
            _ => false,
        }
    }

    /// Gives back a reservation of an upload that did not complete.
    pub fn release(&mut self, day: u64, size: u64) {
        if day == self.day {
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

/// UTC day number of a Unix millisecond time.
pub fn utc_day(unix_ms: u64) -> u64 {
    unix_ms / 86_400_000
}

/// Checks an offer against the limits before any byte is stored.
pub fn check_offer(offer: &Offer, limits: &Limits) -> Result<(), Refusal> {
    if offer.size > limits.max_envelope_bytes {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "envelope of {} bytes exceeds this institution's limit of {} bytes",
                offer.size, limits.max_envelope_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks an envelope header as ingress must (R-GW-7, R-GW-8): signed by the institution
/// the client certificate names, with that institution's registered key, announcing the
/// offered size and id, of a content type institutions send.
pub fn check_header(
    signed: &SignedHeader,
    institution: &str,
    institution_keys: &[VerifyingKey],
    offer: &Offer,
) -> Result<(), Refusal> {
    let h = signed.header();
    if h.sender_id != institution {
        return Err(Refusal::new(
            RefusalCode::SignerMismatch,
            format!(
                "envelope is signed as {:?} but the client certificate is {institution:?}",
                h.sender_id
            ),
        ));
    }
    let own: Vec<VerifyingKey> = institution_keys
        .iter()
        .filter(|k| k.owner() == institution)
        .cloned()
        .collect();
    signed.verify_with(&own).map_err(|e| {
        let code = if institution_keys
            .iter()
            .any(|k| k.key_id() == h.sender_key_id)
        {
            RefusalCode::SignerMismatch
        } else {
            RefusalCode::BadSignature
        };
        Refusal::new(code, e.to_string())
    })?;
    if h.content_type == ContentType::Release {
        return Err(Refusal::new(
            RefusalCode::ContentType,
            "institutions may not send content type \"release\"",
        ));
    }
    if h.envelope_id != offer.envelope_id {
        return Err(Refusal::new(
            RefusalCode::Protocol,
            format!(
                "offer names envelope {} but the header is envelope {}",
                offer.envelope_id, h.envelope_id
            ),
        ));
    }
    if h.sealed_size() != offer.size {
        return Err(Refusal::new(
            RefusalCode::SizeMismatch,
            format!(
                "offer announces {} bytes but the header implies {}",
                offer.size,
                h.sealed_size()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key(owner: &str, seed: u8) -> SigningKey {
        SigningKey::from_seed(owner, &[seed; 32]).unwrap()
    }

    proptest! {
        #[test]
        fn offer_round_trips(id in any::<[u8; 16]>(), size in any::<u64>(), sha in any::<[u8; 32]>()) {
            let o = Offer { envelope_id: EnvelopeId(id), size, sha256: sha };
            prop_assert_eq!(Offer::decode(&o.encode()).unwrap(), o);
        }

        #[test]
        fn offer_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Offer::decode(&bytes);
        }

        #[test]
        fn reply_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Reply::decode(&bytes);
        }

        /// Over any schedule of requests, a bucket never grants more than its burst plus
        /// the refill the elapsed time allows.
        #[test]
        fn rate_limiter_bound(rate in 1u32..100, burst in 1u32..50,
                              steps in proptest::collection::vec(0u64..200, 1..300)) {
            let limits = Limits { envelopes_per_second: rate, burst, ..Limits::default() };
            let mut rl = RateLimiter::new(&limits, 0);
            let mut now = 0;
            let mut granted = 0u64;
            for step in steps {
                now += step;
                if rl.take(&limits, now) { granted += 1; }
                prop_assert!(granted <= u64::from(burst) + now * u64::from(rate) / 1000);
            }
        }

        /// Reservations never exceed the daily quota, and a new day starts from zero.
        #[test]
        fn daily_quota_bound(quota in 0u64..10_000,
                             reqs in proptest::collection::vec((0u64..3, 0u64..3_000), 1..100)) {
            let limits = Limits { max_bytes_per_day: quota, ..Limits::default() };
            let mut d = DailyBytes::default();
            let mut per_day = std::collections::BTreeMap::<u64, u64>::new();
            let mut day = 0;
            for (advance, size) in reqs {
                day += advance;
                if d.reserve(&limits, day, size) {
                    *per_day.entry(day).or_default() += size;
                }
                prop_assert!(per_day.values().all(|&b| b <= quota));
            }
        }
    }

    #[test]
    fn receipts_verify_and_bind_to_the_offer() {
        let ingress = key("ingress", 1);
        let offer = Offer {
            envelope_id: EnvelopeId([7; 16]),
            size: 1234,
            sha256: [9; 32],
        };
        let body = ReceiptBody {
            version: 1,
            envelope_id: offer.envelope_id.to_string(),
            institution: "1312345678".into(),
            sha256: hex::encode(offer.sha256),
            size: offer.size,
            content_type: "ssmix2".into(),
            received_at_ms: 1,
            ingress_key_id: ingress.public().key_id().to_string(),
        };
        let r = SignedReceipt::sign(&body, &ingress);
        assert_eq!(
            r.verify_for(ingress.public(), &offer, "1312345678")
                .unwrap(),
            body
        );
        // Wrong institution, wrong key, tampered body: all refused.
        assert!(r
            .verify_for(ingress.public(), &offer, "9999999999")
            .is_err());
        assert!(r.verify(key("ingress", 2).public()).is_err());
        let mut t = r.clone();
        t.body = t.body.replace("1234", "1235");
        assert!(t.verify(ingress.public()).is_err());
        let other = Offer { size: 1, ..offer };
        assert!(r
            .verify_for(ingress.public(), &other, "1312345678")
            .is_err());
        // And the wire round trip.
        let reply = Reply::Receipt {
            receipt: r,
            duplicate: false,
        };
        let enc = reply.encode();
        let len = Reply::frame_len([enc[0], enc[1], enc[2], enc[3]]).unwrap();
        assert_eq!(Reply::decode(&enc[4..4 + len]).unwrap(), reply);
    }

    #[test]
    // The checks do not depend on the envelope's random values; sealing needs a ring RNG.
    #[allow(clippy::disallowed_methods)]
    fn header_checks() {
        use envelope::{measure, seal, RecipientSecretKey, SealParams};
        let rng = ring::rand::SystemRandom::new();
        let vault = RecipientSecretKey::generate("vault", &rng).unwrap();
        let a = key("1300000001", 3);
        let b = key("1300000002", 4);
        let data = b"MSH|test".to_vec();
        let mut sealed = Vec::new();
        let params = SealParams {
            recipient: vault.public(),
            signer: &a,
            content_type: ContentType::Ssmix2,
            segment_size: envelope::DEFAULT_SEGMENT_SIZE,
        };
        seal(
            params,
            measure(&data[..]).unwrap(),
            &rng,
            &data[..],
            &mut sealed,
        )
        .unwrap();
        let signed = SignedHeader::read_from(&mut &sealed[..]).unwrap();
        let offer = Offer {
            envelope_id: signed.header().envelope_id,
            size: sealed.len() as u64,
            sha256: [0; 32],
        };
        let keys = vec![a.public().clone(), b.public().clone()];
        check_header(&signed, "1300000001", &keys, &offer).unwrap();
        let e = check_header(&signed, "1300000002", &keys, &offer).unwrap_err();
        assert_eq!(e.code, RefusalCode::SignerMismatch);
        let e = check_header(&signed, "1300000001", &keys[1..], &offer).unwrap_err();
        assert_eq!(e.code, RefusalCode::BadSignature);
        let bad = Offer {
            size: offer.size + 1,
            ..offer
        };
        let e = check_header(&signed, "1300000001", &keys, &bad).unwrap_err();
        assert_eq!(e.code, RefusalCode::SizeMismatch);
        let small = Limits {
            max_envelope_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            check_offer(&offer, &small).unwrap_err().code,
            RefusalCode::TooLarge
        );
    }
}
