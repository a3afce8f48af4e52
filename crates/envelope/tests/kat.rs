//! Known-answer tests: a committed envelope (`tests/data/envelope-kat-v1/`) must open to the
//! committed plaintext, and sealing the same plaintext with the same keys and the same
//! recorded randomness must reproduce it byte for byte. Any change to the wire format, the
//! key schedule or the nonce layout breaks these, which is the point: envelopes sealed by
//! institutions in the field must keep opening.
//!
//! Also checks ring's ephemeral X25519 (sender side) against x25519-dalek's static X25519
//! (recipient side) on the RFC 7748 §6.1 keys.

// ring's fixed-output test RNGs are the only way to pin its sealed `SecureRandom` trait;
// ring marks them as internal (deprecated), and we use them in tests only.
#![allow(deprecated)]

use std::cell::UnsafeCell;
use std::path::PathBuf;

use envelope::{measure, open, seal, ContentType, RecipientSecretKey, SealParams, SigningKey};
use ring::test::rand::{FixedSliceRandom, FixedSliceSequenceRandom};

fn kat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/envelope-kat-v1")
}

fn read(name: &str) -> Vec<u8> {
    let path = kat_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_text(name: &str) -> String {
    String::from_utf8(read(name)).expect("utf-8")
}

fn hex32(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).expect("hex");
    out
}

struct Vector {
    recipient: RecipientSecretKey,
    sender: SigningKey,
    envelope_id: Vec<u8>,
    ephemeral: Vec<u8>,
    plaintext: Vec<u8>,
}

fn vector() -> Vector {
    let randomness = read_text("randomness.txt");
    let field = |name: &str| -> Vec<u8> {
        let line = randomness
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("randomness.txt lacks {name}"));
        hex::decode(line.trim()).expect("hex")
    };
    Vector {
        recipient: RecipientSecretKey::from_text(&read_text("recipient-x25519.key"))
            .expect("recipient key"),
        sender: SigningKey::from_text(&read_text("sender-ed25519.key")).expect("sender key"),
        envelope_id: field("envelope-id"),
        ephemeral: field("ephemeral-secret"),
        plaintext: read("plaintext.hl7"),
    }
}

fn seal_vector(v: &Vector) -> Vec<u8> {
    let slices: [&[u8]; 2] = [&v.envelope_id, &v.ephemeral];
    let rng = FixedSliceSequenceRandom {
        bytes: &slices,
        current: UnsafeCell::new(0),
    };
    let params = SealParams {
        recipient: v.recipient.public(),
        signer: &v.sender,
        content_type: ContentType::Ssmix2,
        segment_size: 1024,
    };
    let mut out = Vec::new();
    seal(
        params,
        measure(&v.plaintext[..]).expect("measure"),
        &rng,
        &v.plaintext[..],
        &mut out,
    )
    .expect("seal");
    out
}

#[test]
fn committed_envelope_opens_to_committed_plaintext() {
    let v = vector();
    let sealed = read("envelope.bin");
    let mut out = Vec::new();
    let opened = open(
        &v.recipient,
        &[v.sender.public().clone()],
        &sealed[..],
        &mut out,
    )
    .expect("KAT envelope must open");
    assert_eq!(out, v.plaintext);
    assert_eq!(opened.header().segment_count(), 3);
    assert_eq!(
        hex::encode(opened.header().envelope_id.0),
        hex::encode(&v.envelope_id)
    );
}

#[test]
fn sealing_with_recorded_randomness_reproduces_committed_bytes() {
    let v = vector();
    assert_eq!(
        hex::encode(seal_vector(&v)),
        hex::encode(read("envelope.bin")),
        "wire format changed: envelopes already in the field would no longer open"
    );
    // The one-pass sealer writes the very same bytes.
    let slices: [&[u8]; 2] = [&v.envelope_id, &v.ephemeral];
    let rng = FixedSliceSequenceRandom {
        bytes: &slices,
        current: UnsafeCell::new(0),
    };
    let params = SealParams {
        recipient: v.recipient.public(),
        signer: &v.sender,
        content_type: ContentType::Ssmix2,
        segment_size: 1024,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    envelope::seal_seekable(params, &rng, &v.plaintext[..], &mut out).expect("seal");
    assert_eq!(
        hex::encode(out.into_inner()),
        hex::encode(read("envelope.bin"))
    );
}

/// RFC 7748 §6.1: ring (ephemeral, sender side) and x25519-dalek (static, recipient side)
/// compute the same public keys and the same shared secret.
#[test]
fn ring_and_dalek_agree_on_rfc7748_keys() {
    let alice_secret = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_secret = hex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_public = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");

    let bob = RecipientSecretKey::from_secret_bytes("bob", &bob_secret).expect("bob");
    assert_eq!(bob.public().bytes(), &bob_public);

    let rng = FixedSliceRandom {
        bytes: &alice_secret,
    };
    let alice =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).expect("a");
    assert_eq!(
        alice.compute_public_key().expect("pub").as_ref(),
        &alice_public
    );
    let peer = ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, bob_public);
    let ring_shared =
        ring::agreement::agree_ephemeral(alice, &peer, |s| s.to_vec()).expect("agree");

    let dalek_secret = x25519_dalek::StaticSecret::from(bob_secret);
    let dalek_shared = dalek_secret.diffie_hellman(&x25519_dalek::PublicKey::from(alice_public));
    assert_eq!(ring_shared, dalek_shared.as_bytes());
}

/// Writes the vector files. Run once, on purpose, when the format version changes:
/// `cargo test -p envelope --test kat -- --ignored regenerate`.
#[test]
#[ignore = "writes tests/data/envelope-kat-v1; only when deliberately changing the format"]
fn regenerate() {
    use ring::test::rand::FixedByteRandom;
    let dir = kat_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let recipient =
        RecipientSecretKey::generate("vault-kat", &FixedByteRandom { byte: 0xa1 }).expect("r");
    let sender = SigningKey::generate("1399999999", &FixedByteRandom { byte: 0xb2 }).expect("s");
    std::fs::write(
        dir.join("recipient-x25519.key"),
        recipient.to_text().as_bytes(),
    )
    .expect("w");
    std::fs::write(dir.join("sender-ed25519.key"), sender.to_text().as_bytes()).expect("w");
    std::fs::write(
        dir.join("randomness.txt"),
        format!(
            "envelope-id: {}\nephemeral-secret: {}\n",
            hex::encode([0xc3u8; 16]),
            hex::encode([0xd4u8; 32])
        ),
    )
    .expect("w");
    let v = vector();
    std::fs::write(dir.join("envelope.bin"), seal_vector(&v)).expect("w");
}
