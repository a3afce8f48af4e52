//! Key types of the envelope format and their text encoding.
//!
//! Two key pairs exist: an X25519 *encryption* pair (the vault, or a researcher receiving a
//! release, publishes the public half; envelopes are sealed to it) and an Ed25519 *signing*
//! pair (an institution, or the vault, signs what it seals). Every key carries the id of its
//! owner (an institution code, `vault`, a researcher id) and a key id, the SHA-256 of the
//! public key bytes.
//!
//! This module only converts keys to and from text; reading and writing files with the right
//! permissions is the `keystore` crate's job. Secret material is zeroized on drop: the X25519
//! secret by x25519-dalek, the Ed25519 seed by `Zeroizing`. ring keeps its own expanded copy of
//! the Ed25519 key inside `Ed25519KeyPair`, which it does not zeroize (documented in
//! docs/SECURITY.md).
//!
//! Why x25519-dalek for the recipient secret: ring deliberately offers only ephemeral X25519
//! keys (ring issue #331), and a recipient key must be long-lived. Sealing still uses ring's
//! ephemeral agreement; the known-answer test proves the two interoperate.

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::error::{EnvelopeError, Result};

/// Longest owner / sender id accepted, in bytes.
pub const MAX_PARTY_ID_LEN: usize = 64;

const KEY_FILE_MAGIC: &str = "enclave-key v1";

/// SHA-256 of a public key's raw bytes; names a key without revealing anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// Key id of the given raw public key bytes.
    pub fn of_public_key(public: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        KeyId(id)
    }

    /// Parses 64 lowercase or uppercase hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = decode_hex32(text, "key id")?;
        Ok(KeyId(*bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Checks an owner or sender id: 1..=64 bytes of `A-Z a-z 0-9 . _ : -`.
///
/// The alphabet is narrow on purpose: these ids end up in file names, logs and ledgers.
pub fn validate_party_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_PARTY_ID_LEN {
        return Err(EnvelopeError::BadKey(format!(
            "owner id must be 1..={MAX_PARTY_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(EnvelopeError::BadKey(format!(
            "owner id {id:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(())
}

/// Public half of an X25519 encryption key: what envelopes are sealed to.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientPublicKey {
    owner: String,
    bytes: [u8; 32],
    key_id: KeyId,
}

impl RecipientPublicKey {
    /// Builds a public key from its owner and raw bytes.
    pub fn new(owner: &str, bytes: [u8; 32]) -> Result<Self> {
        validate_party_id(owner)?;
        Ok(Self {
            owner: owner.to_owned(),
            bytes,
            key_id: KeyId::of_public_key(&bytes),
        })
    }
    /// Owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// Raw X25519 public key.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
    /// SHA-256 of the public key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// Text form (`.pub` file contents).
    pub fn to_text(&self) -> String {
        key_text(KeyKind::X25519Public, &self.owner, self.key_id, &self.bytes)
    }
    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Self> {
        let parsed = parse_key_text(text, KeyKind::X25519Public)?;
        let key = Self::new(&parsed.owner, *parsed.key)?;
        check_key_id(parsed.key_id, key.key_id)?;
        Ok(key)
    }
}

impl fmt::Debug for RecipientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientPublicKey({}, {})", self.owner, self.key_id)
    }
}

/// Secret half of an X25519 encryption key: opens envelopes. Zeroized on drop.
pub struct RecipientSecretKey {
    secret: x25519_dalek::StaticSecret,
    public: RecipientPublicKey,
}

impl RecipientSecretKey {
    /// Generates a new key from the given random source.
    pub fn generate(owner: &str, rng: &dyn SecureRandom) -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill(bytes.as_mut())
            .map_err(|_| EnvelopeError::Crypto("random source failed"))?;
        Self::from_secret_bytes(owner, &bytes)
    }

    /// Builds the key from its 32 secret bytes (clamping happens inside X25519).
    pub fn from_secret_bytes(owner: &str, bytes: &[u8; 32]) -> Result<Self> {
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Self {
            secret,
            public: RecipientPublicKey::new(owner, public.to_bytes())?,
        })
    }

    /// The public half.
    pub fn public(&self) -> &RecipientPublicKey {
        &self.public
    }

    /// X25519 with a peer's public key; `None` for a low-order peer point.
    pub(crate) fn agree(&self, peer: &[u8; 32]) -> Option<x25519_dalek::SharedSecret> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        shared.was_contributory().then_some(shared)
    }

    /// Text form (`.key` file contents). The returned string holds the secret: it is
    /// zeroized when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.secret.to_bytes());
        Zeroizing::new(key_text(
            KeyKind::X25519Secret,
            self.public.owner(),
            self.public.key_id(),
            &bytes,
        ))
    }

    /// Parses the text form and checks that the recorded key id matches the secret.
    pub fn from_text(text: &str) -> Result<Self> {
        let parsed = parse_key_text(text, KeyKind::X25519Secret)?;
        let key = Self::from_secret_bytes(&parsed.owner, &parsed.key)?;
        check_key_id(parsed.key_id, key.public.key_id())?;
        Ok(key)
    }
}

impl fmt::Debug for RecipientSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material, even in debug output.
        write!(f, "RecipientSecretKey({:?}, <secret>)", self.public)
    }
}

/// Public half of an Ed25519 signing key: how a receiver knows who sealed an envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    owner: String,
    bytes: [u8; 32],
    key_id: KeyId,
}

impl VerifyingKey {
    /// Builds a verifying key from its owner and raw bytes.
    pub fn new(owner: &str, bytes: [u8; 32]) -> Result<Self> {
        validate_party_id(owner)?;
        Ok(Self {
            owner: owner.to_owned(),
            bytes,
            key_id: KeyId::of_public_key(&bytes),
        })
    }
    /// Owner id (for an institution: its institution code).
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// Raw Ed25519 public key.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
    /// SHA-256 of the public key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// Verifies an Ed25519 signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.bytes)
            .verify(message, signature)
            .map_err(|_| EnvelopeError::BadSignature {
                key_id: self.key_id,
            })
    }
    /// Text form (`.pub` file contents).
    pub fn to_text(&self) -> String {
        key_text(
            KeyKind::Ed25519Public,
            &self.owner,
            self.key_id,
            &self.bytes,
        )
    }
    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Self> {
        let parsed = parse_key_text(text, KeyKind::Ed25519Public)?;
        let key = Self::new(&parsed.owner, *parsed.key)?;
        check_key_id(parsed.key_id, key.key_id)?;
        Ok(key)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({}, {})", self.owner, self.key_id)
    }
}

/// Secret half of an Ed25519 signing key. The seed is zeroized on drop.
pub struct SigningKey {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
    public: VerifyingKey,
}

impl SigningKey {
    /// Generates a new key from the given random source.
    pub fn generate(owner: &str, rng: &dyn SecureRandom) -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut())
            .map_err(|_| EnvelopeError::Crypto("random source failed"))?;
        Self::from_seed(owner, &seed)
    }

    /// Builds the key from its 32-byte seed (RFC 8032 private key).
    pub fn from_seed(owner: &str, seed: &[u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| EnvelopeError::BadKey("invalid Ed25519 seed".into()))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            seed: Zeroizing::new(*seed),
            pair,
            public: VerifyingKey::new(owner, public)?,
        })
    }

    /// The public half.
    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs a message (Ed25519 is deterministic: same message, same signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// Text form (`.key` file contents), zeroized when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(key_text(
            KeyKind::Ed25519Secret,
            self.public.owner(),
            self.public.key_id(),
            &self.seed,
        ))
    }

    /// Parses the text form and checks that the recorded key id matches the seed.
    pub fn from_text(text: &str) -> Result<Self> {
        let parsed = parse_key_text(text, KeyKind::Ed25519Secret)?;
        let key = Self::from_seed(&parsed.owner, &parsed.key)?;
        check_key_id(parsed.key_id, key.public.key_id())?;
        Ok(key)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, <secret>)", self.public)
    }
}

/// The four kinds of key text, named on the `kind:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// X25519 secret (`.key` of an encryption pair).
    X25519Secret,
    /// X25519 public (`.pub` of an encryption pair).
    X25519Public,
    /// Ed25519 seed (`.key` of a signing pair).
    Ed25519Secret,
    /// Ed25519 public (`.pub` of a signing pair).
    Ed25519Public,
}

impl KeyKind {
    /// Name used on the `kind:` line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::X25519Secret => "x25519-secret",
            KeyKind::X25519Public => "x25519-public",
            KeyKind::Ed25519Secret => "ed25519-secret",
            KeyKind::Ed25519Public => "ed25519-public",
        }
    }
    /// Whether the text holds secret material.
    pub fn is_secret(self) -> bool {
        matches!(self, KeyKind::X25519Secret | KeyKind::Ed25519Secret)
    }
    fn from_name(name: &str) -> Option<Self> {
        [
            KeyKind::X25519Secret,
            KeyKind::X25519Public,
            KeyKind::Ed25519Secret,
            KeyKind::Ed25519Public,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// Reads the `kind:` line of a key text without parsing the rest, so tools can tell the
/// user which kind of key they passed where another was expected.
pub fn key_kind_of(text: &str) -> Option<KeyKind> {
    text.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .find_map(KeyKind::from_name)
}

fn key_text(kind: KeyKind, owner: &str, key_id: KeyId, key: &[u8; 32]) -> String {
    let warning = if kind.is_secret() {
        "# SECRET KEY: keep this file mode 0600; never copy it off this machine unencrypted.\n"
    } else {
        "# Public key: safe to hand out. Check its key-id out of band before trusting it.\n"
    };
    format!(
        "{KEY_FILE_MAGIC}\n{warning}kind: {}\nowner: {owner}\nkey-id: {key_id}\nkey: {}\n",
        kind.as_str(),
        hex::encode(key)
    )
}

struct ParsedKey {
    owner: String,
    key_id: KeyId,
    key: Zeroizing<[u8; 32]>,
}

fn parse_key_text(text: &str, want: KeyKind) -> Result<ParsedKey> {
    let mut lines = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut next = |label: &str| -> Result<&str> {
        let line = lines
            .next()
            .ok_or_else(|| EnvelopeError::BadKey(format!("missing `{label}` line")))?;
        if label.is_empty() {
            return Ok(line);
        }
        line.strip_prefix(label)
            .and_then(|rest| rest.strip_prefix(": "))
            .ok_or_else(|| EnvelopeError::BadKey(format!("expected `{label}: …`, found {line:?}")))
    };
    if next("")? != KEY_FILE_MAGIC {
        return Err(EnvelopeError::BadKey(format!(
            "not an enclave key (first line must be `{KEY_FILE_MAGIC}`)"
        )));
    }
    let kind = next("kind")?;
    if kind != want.as_str() {
        return Err(EnvelopeError::BadKey(format!(
            "this key is of kind {kind}, but kind {} is needed here",
            want.as_str()
        )));
    }
    let owner = next("owner")?.to_owned();
    validate_party_id(&owner)?;
    let key_id = KeyId::from_hex(next("key-id")?)?;
    let key = decode_hex32(next("key")?, "key")?;
    if let Some(extra) = lines.next() {
        return Err(EnvelopeError::BadKey(format!(
            "unexpected line after the key: {extra:?}"
        )));
    }
    Ok(ParsedKey { owner, key_id, key })
}

fn decode_hex32(text: &str, what: &str) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), out.as_mut())
        .map_err(|e| EnvelopeError::BadKey(format!("{what}: expected 64 hex digits ({e})")))?;
    Ok(out)
}

fn check_key_id(recorded: KeyId, actual: KeyId) -> Result<()> {
    if recorded == actual {
        Ok(())
    } else {
        Err(EnvelopeError::BadKey(format!(
            "key-id line says {recorded} but the key's id is {actual} (file corrupted or edited)"
        )))
    }
}

#[cfg(test)]
// ring's fixed-output test RNG is deprecated as internal; used to pin randomness in tests only.
#[allow(deprecated)]
mod tests {
    use super::*;
    use ring::test::rand::FixedByteRandom;

    #[test]
    fn text_round_trip_for_every_kind() {
        let rng = FixedByteRandom { byte: 7 };
        let enc = RecipientSecretKey::generate("vault", &rng).expect("generate");
        let back = RecipientSecretKey::from_text(&enc.to_text()).expect("parse");
        assert_eq!(back.public(), enc.public());
        let pub_back = RecipientPublicKey::from_text(&enc.public().to_text()).expect("parse");
        assert_eq!(&pub_back, enc.public());

        let sig = SigningKey::generate("1312345678", &rng).expect("generate");
        let back = SigningKey::from_text(&sig.to_text()).expect("parse");
        assert_eq!(back.public(), sig.public());
        assert_eq!(back.sign(b"m"), sig.sign(b"m"));
        let vk = VerifyingKey::from_text(&sig.public().to_text()).expect("parse");
        vk.verify(b"m", &sig.sign(b"m")).expect("verify");
    }

    #[test]
    fn wrong_kind_and_edited_key_id_are_refused() {
        let rng = FixedByteRandom { byte: 9 };
        let enc = RecipientSecretKey::generate("vault", &rng).expect("generate");
        let err = SigningKey::from_text(&enc.to_text()).expect_err("kind");
        assert!(err.to_string().contains("x25519-secret"), "{err}");
        let text = enc.public().to_text();
        let mut chars: Vec<char> = text.chars().collect();
        let pos = text.rfind("\nkey: ").expect("key line") + 6;
        chars[pos] = if chars[pos] == 'a' { 'b' } else { 'a' };
        let edited: String = chars.into_iter().collect();
        let err = RecipientPublicKey::from_text(&edited).expect_err("edited");
        assert!(err.to_string().contains("key-id line says"), "{err}");
        assert_eq!(key_kind_of(&text), Some(KeyKind::X25519Public));
    }

    #[test]
    fn party_ids_are_narrow() {
        assert!(validate_party_id("1312345678").is_ok());
        assert!(validate_party_id("vault-01").is_ok());
        assert!(validate_party_id("").is_err());
        assert!(validate_party_id("a/b").is_err());
        assert!(validate_party_id("病院").is_err());
        assert!(validate_party_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let rng = FixedByteRandom { byte: 0x42 };
        let k = SigningKey::generate("x", &rng).expect("generate");
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex::encode([0x42u8; 32])));
        assert!(shown.contains("<secret>"));
    }
}
