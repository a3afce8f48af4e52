//! The envelope header: what is sealed, by whom, for whom, and how big it is.
//!
//! Wire layout (all integers big-endian; sizes in bytes):
//!
//! | field | size | notes |
//! |---|---|---|
//! | magic | 8 | `JMEDENV` + 0x1A |
//! | version | 2 | 1 |
//! | envelope id | 16 | random |
//! | recipient key id | 32 | SHA-256 of the recipient's X25519 public key |
//! | ephemeral public key | 32 | X25519, fresh per envelope |
//! | sender key id | 32 | SHA-256 of the sender's Ed25519 public key |
//! | sender id length | 1 | 1..=64 |
//! | sender id | n | `A-Z a-z 0-9 . _ : -` |
//! | content type length | 1 | 1..=32 |
//! | content type | n | one of [`ContentType`] |
//! | segment size | 4 | plaintext bytes per segment, 1 KiB..=16 MiB |
//! | plaintext size | 8 | |
//! | plaintext SHA-256 | 32 | |
//! | signature | 64 | Ed25519 over `SIGNATURE_CONTEXT` ‖ all fields above |
//!
//! The header is authenticated twice: the sender signs all of it (so the plaintext digest and
//! size are the sender's word), and the SHA-256 of every field but size and digest is bound
//! into the payload key derivation (so no segment opens under a header naming another sender,
//! recipient, content type or segment size). Parsing is bounded: no length in the header can make
//! a reader allocate more than [`MAX_HEADER_LEN`] bytes.

use std::fmt;
use std::io::Read;

use crate::error::{EnvelopeError, Result};
use crate::keys::{validate_party_id, KeyId, VerifyingKey, MAX_PARTY_ID_LEN};

/// First eight bytes of every envelope.
pub const MAGIC: [u8; 8] = *b"JMEDENV\x1a";
/// Format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Default plaintext bytes per segment.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u32 = 1024;
/// Largest segment size accepted: bounds the opener's buffer.
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Longest content-type name.
pub const MAX_CONTENT_TYPE_LEN: usize = 32;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Upper bound of an encoded header, signature included.
pub const MAX_HEADER_LEN: usize =
    FIXED_PREFIX_LEN + 1 + MAX_PARTY_ID_LEN + 1 + MAX_CONTENT_TYPE_LEN + 4 + 8 + 32 + SIGNATURE_LEN;

/// Domain separation for the header signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"jp-med-enclave/envelope/v1/header-signature\0";

const FIXED_PREFIX_LEN: usize = 8 + 2 + 16 + 32 + 32 + 32;

/// What the sealed plaintext is; receivers route on it (R-IN-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentType {
    /// SS-MIX2 standardized storage (HL7 v2.5 messages).
    Ssmix2,
    /// JP Core FHIR R4 JSON bundle.
    FhirJp,
    /// 特定健診 HL7 CDA R2 submission package (ZIP).
    CdaTokutei,
    /// Claims (レセプト) in UKE format.
    Uke,
    /// DPC survey data.
    Dpc,
    /// Plain CSV.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// An approved anonymized release package (vault → researcher).
    Release,
}

impl ContentType {
    /// Every content type, in wire-name order of the docs.
    pub const ALL: [ContentType; 8] = [
        ContentType::Ssmix2,
        ContentType::FhirJp,
        ContentType::CdaTokutei,
        ContentType::Uke,
        ContentType::Dpc,
        ContentType::Csv,
        ContentType::Parquet,
        ContentType::Release,
    ];

    /// Name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Ssmix2 => "ssmix2",
            ContentType::FhirJp => "fhir-jp",
            ContentType::CdaTokutei => "cda-tokutei",
            ContentType::Uke => "uke",
            ContentType::Dpc => "dpc",
            ContentType::Csv => "csv",
            ContentType::Parquet => "parquet",
            ContentType::Release => "release",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ContentType {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self> {
        ContentType::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownContentType(s.to_owned()))
    }
}

/// Random 128-bit envelope id: names an envelope in receipts, ledgers and quarantine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeId(pub [u8; 16]);

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({self})")
    }
}

/// The header fields, without the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Random id of this envelope.
    pub envelope_id: EnvelopeId,
    /// Key id of the recipient's X25519 key.
    pub recipient_key_id: KeyId,
    /// Ephemeral X25519 public key of this envelope.
    pub ephemeral_public: [u8; 32],
    /// Key id of the sender's Ed25519 key.
    pub sender_key_id: KeyId,
    /// Sender id (institution code, `vault`, …).
    pub sender_id: String,
    /// What the plaintext is.
    pub content_type: ContentType,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    /// Plaintext length.
    pub plaintext_size: u64,
    /// SHA-256 of the plaintext.
    pub plaintext_sha256: [u8; 32],
}

impl Header {
    /// Encodes the header fields (everything the signature covers).
    pub fn encode(&self) -> Vec<u8> {
        let sender = self.sender_id.as_bytes();
        let ctype = self.content_type.as_str().as_bytes();
        let mut out = Vec::with_capacity(MAX_HEADER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.envelope_id.0);
        out.extend_from_slice(&self.recipient_key_id.0);
        out.extend_from_slice(&self.ephemeral_public);
        out.extend_from_slice(&self.sender_key_id.0);
        // Lengths were validated when the header was built or parsed; both fit in a u8.
        out.push(u8::try_from(sender.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(sender);
        out.push(u8::try_from(ctype.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(ctype);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.plaintext_size.to_be_bytes());
        out.extend_from_slice(&self.plaintext_sha256);
        out
    }

    /// Checks field ranges that the type system does not.
    pub fn validate(&self) -> Result<()> {
        validate_party_id(&self.sender_id)
            .map_err(|e| EnvelopeError::MalformedHeader(format!("sender id: {e}")))?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(EnvelopeError::MalformedHeader(format!(
                "segment size {} outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        Ok(())
    }

    /// Number of segments the payload is cut into (at least one, even when empty, so that
    /// the final-segment flag always authenticates the end).
    pub fn segment_count(&self) -> u64 {
        let seg = u64::from(self.segment_size.max(1));
        self.plaintext_size.div_ceil(seg).max(1)
    }

    /// Plaintext length of segment `index` (the last one may be short or empty).
    pub fn segment_plaintext_len(&self, index: u64) -> usize {
        let seg = u64::from(self.segment_size);
        let start = index.saturating_mul(seg);
        let len = self.plaintext_size.saturating_sub(start).min(seg);
        // len <= segment_size <= MAX_SEGMENT_SIZE, which fits a usize.
        usize::try_from(len).unwrap_or(0)
    }

    /// Total envelope size on the wire for this header (header, signature and segments).
    pub fn sealed_size(&self) -> u64 {
        let header = (self.encode().len() + SIGNATURE_LEN) as u64;
        header + self.plaintext_size + self.segment_count() * crate::stream::TAG_LEN as u64
    }

    /// The header bytes the payload key is bound to: everything except the plaintext size
    /// and digest (the last 40 bytes), which a one-pass sealer learns only at the end. Those
    /// two are covered by the signature instead.
    pub(crate) fn key_binding(&self) -> Vec<u8> {
        let mut encoded = self.encode();
        encoded.truncate(encoded.len() - (8 + 32));
        encoded
    }

    /// The bytes the sender signs.
    pub(crate) fn signing_message(encoded: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + encoded.len());
        msg.extend_from_slice(SIGNATURE_CONTEXT);
        msg.extend_from_slice(encoded);
        msg
    }
}

/// A parsed header together with its signature and exact encoded bytes. The signature is
/// *not yet checked*: call [`SignedHeader::verify`] (ingress does this without ever being
/// able to open the payload).
#[derive(Clone, Debug)]
pub struct SignedHeader {
    header: Header,
    encoded: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedHeader {
    pub(crate) fn new(header: Header, encoded: Vec<u8>, signature: [u8; SIGNATURE_LEN]) -> Self {
        Self {
            header,
            encoded,
            signature,
        }
    }

    /// The header fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Encoded header fields (without signature), as read.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Checks that `key` is the key the header names, that its owner is the sender the
    /// header names, and that the signature verifies.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        if key.key_id() != self.header.sender_key_id {
            return Err(EnvelopeError::UnknownSender {
                sender_id: self.header.sender_id.clone(),
                key_id: self.header.sender_key_id,
            });
        }
        if key.owner() != self.header.sender_id {
            return Err(EnvelopeError::SenderMismatch {
                claimed: self.header.sender_id.clone(),
                owner: key.owner().to_owned(),
                key_id: key.key_id(),
            });
        }
        key.verify(&Header::signing_message(&self.encoded), &self.signature)
    }

    /// Finds the sender's key among `trusted` and verifies the signature with it.
    pub fn verify_with<'k>(&self, trusted: &'k [VerifyingKey]) -> Result<&'k VerifyingKey> {
        let key = trusted
            .iter()
            .find(|k| k.key_id() == self.header.sender_key_id)
            .ok_or_else(|| EnvelopeError::UnknownSender {
                sender_id: self.header.sender_id.clone(),
                key_id: self.header.sender_key_id,
            })?;
        self.verify(key)?;
        Ok(key)
    }

    /// Parses a header from the start of `input`, reading exactly the header's bytes.
    pub fn read_from<R: Read>(input: &mut R) -> Result<Self> {
        let mut prefix = [0u8; FIXED_PREFIX_LEN];
        let got = crate::stream::read_full(input, &mut prefix)?;
        if got < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC {
            // A short input that is a prefix of the magic is still "not an envelope": there
            // is nothing to tell it apart from any other short file.
            return Err(EnvelopeError::NotAnEnvelope);
        }
        if got < FIXED_PREFIX_LEN {
            if got >= 10 {
                check_version(&prefix)?;
            }
            return Err(EnvelopeError::TruncatedHeader);
        }
        check_version(&prefix)?;
        let mut encoded = Vec::with_capacity(MAX_HEADER_LEN);
        encoded.extend_from_slice(&prefix);
        let mut cursor = Cursor {
            bytes: &prefix,
            pos: 10,
        };
        let envelope_id = EnvelopeId(cursor.array()?);
        let recipient_key_id = KeyId(cursor.array()?);
        let ephemeral_public = cursor.array()?;
        let sender_key_id = KeyId(cursor.array()?);

        let sender_id = read_short_string(input, &mut encoded, MAX_PARTY_ID_LEN, "sender id")?;
        let ctype = read_short_string(input, &mut encoded, MAX_CONTENT_TYPE_LEN, "content type")?;
        let content_type: ContentType = ctype.parse()?;

        let mut tail = [0u8; 4 + 8 + 32];
        if crate::stream::read_full(input, &mut tail)? < tail.len() {
            return Err(EnvelopeError::TruncatedHeader);
        }
        encoded.extend_from_slice(&tail);
        let mut cursor = Cursor {
            bytes: &tail,
            pos: 0,
        };
        let segment_size = u32::from_be_bytes(cursor.array()?);
        let plaintext_size = u64::from_be_bytes(cursor.array()?);
        let plaintext_sha256 = cursor.array()?;

        let mut signature = [0u8; SIGNATURE_LEN];
        if crate::stream::read_full(input, &mut signature)? < SIGNATURE_LEN {
            return Err(EnvelopeError::TruncatedHeader);
        }
        let header = Header {
            envelope_id,
            recipient_key_id,
            ephemeral_public,
            sender_key_id,
            sender_id,
            content_type,
            segment_size,
            plaintext_size,
            plaintext_sha256,
        };
        header.validate()?;
        Ok(Self::new(header, encoded, signature))
    }
}

fn check_version(prefix: &[u8]) -> Result<()> {
    let found = u16::from_be_bytes([prefix[8], prefix[9]]);
    if found == VERSION {
        Ok(())
    } else {
        Err(EnvelopeError::UnknownVersion {
            found,
            supported: VERSION,
        })
    }
}

fn read_short_string<R: Read>(
    input: &mut R,
    encoded: &mut Vec<u8>,
    max: usize,
    what: &str,
) -> Result<String> {
    let mut len = [0u8; 1];
    if crate::stream::read_full(input, &mut len)? < 1 {
        return Err(EnvelopeError::TruncatedHeader);
    }
    let n = usize::from(len[0]);
    if n == 0 || n > max {
        return Err(EnvelopeError::MalformedHeader(format!(
            "{what} length {n} outside 1..={max}"
        )));
    }
    let mut buf = vec![0u8; n];
    if crate::stream::read_full(input, &mut buf)? < n {
        return Err(EnvelopeError::TruncatedHeader);
    }
    encoded.push(len[0]);
    encoded.extend_from_slice(&buf);
    String::from_utf8(buf)
        .map_err(|_| EnvelopeError::MalformedHeader(format!("{what} is not UTF-8")))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos + N;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(EnvelopeError::TruncatedHeader)?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            envelope_id: EnvelopeId([1; 16]),
            recipient_key_id: KeyId([2; 32]),
            ephemeral_public: [3; 32],
            sender_key_id: KeyId([4; 32]),
            sender_id: "1312345678".into(),
            content_type: ContentType::Ssmix2,
            segment_size: DEFAULT_SEGMENT_SIZE,
            plaintext_size: 200_000,
            plaintext_sha256: [5; 32],
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let h = sample();
        let mut bytes = h.encode();
        bytes.extend_from_slice(&[9u8; SIGNATURE_LEN]);
        assert!(bytes.len() <= MAX_HEADER_LEN);
        let parsed = SignedHeader::read_from(&mut bytes.as_slice()).expect("parse");
        assert_eq!(parsed.header(), &h);
        assert_eq!(parsed.signature(), &[9u8; SIGNATURE_LEN]);
        assert_eq!(h.segment_count(), 4);
        assert_eq!(h.segment_plaintext_len(3), 200_000 - 3 * 65_536);
    }

    #[test]
    fn every_header_prefix_is_refused_cleanly() {
        let mut bytes = sample().encode();
        bytes.extend_from_slice(&[0u8; SIGNATURE_LEN]);
        for cut in 0..bytes.len() {
            let err = SignedHeader::read_from(&mut &bytes[..cut]).expect_err("short");
            assert!(
                matches!(
                    err,
                    EnvelopeError::NotAnEnvelope | EnvelopeError::TruncatedHeader
                ),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn unknown_version_and_content_type_are_named() {
        let mut bytes = sample().encode();
        bytes[9] = 2;
        let err = SignedHeader::read_from(&mut bytes.as_slice()).expect_err("version");
        assert!(matches!(
            err,
            EnvelopeError::UnknownVersion { found: 2, .. }
        ));

        let mut h = sample().encode();
        let at = FIXED_PREFIX_LEN + 1 + 10 + 1;
        h[at..at + 6].copy_from_slice(b"zzmix2");
        h.extend_from_slice(&[0u8; SIGNATURE_LEN]);
        let err = SignedHeader::read_from(&mut h.as_slice()).expect_err("ctype");
        assert!(matches!(err, EnvelopeError::UnknownContentType(ref s) if s == "zzmix2"));
    }

    #[test]
    fn empty_payload_still_has_one_segment() {
        let mut h = sample();
        h.plaintext_size = 0;
        assert_eq!(h.segment_count(), 1);
        assert_eq!(h.segment_plaintext_len(0), 0);
    }
}
