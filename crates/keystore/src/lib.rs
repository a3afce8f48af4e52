//! Key files on disk for every binary of the appliance (R-OP-5 key management).
//!
//! Secret key files are created with mode 0600 and never overwrite an existing file; a
//! secret key file that group or others can read is refused, the way ssh refuses one, so a
//! careless `chmod` or copy is noticed before the key is used. Text read from a secret file
//! is zeroized when dropped. Public key files are created 0644.
//!
//! What this crate must never do: log or print key material, or write a secret anywhere but
//! the path it was given.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use envelope::{
    key_kind_of, EnvelopeError, KeyKind, RecipientPublicKey, RecipientSecretKey, SigningKey,
    VerifyingKey,
};
use zeroize::Zeroizing;

/// Largest key file read; real ones are about 300 bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Errors reading or writing key files; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The file could not be read, created or written.
    #[error("{path}: {reason}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// Refusing to overwrite an existing key file.
    #[error("{path}: already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// A secret key file is readable or writable by group or others.
    #[error("{path}: secret key file has mode {mode:04o}; it must not be accessible to group or others (chmod 600)")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than any key file.
    #[error("{path}: {size} bytes is too large for a key file")]
    TooLarge {
        /// The key file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The contents are not a key of the needed kind.
    #[error("{path}: {problem}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: EnvelopeError,
    },
}

/// Result alias for this crate.
pub type Result<T, E = KeystoreError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |reason| KeystoreError::Io {
        path: path.to_owned(),
        reason,
    }
}

fn key_err(path: &Path) -> impl FnOnce(EnvelopeError) -> KeystoreError + '_ {
    move |problem| KeystoreError::Key {
        path: path.to_owned(),
        problem,
    }
}

/// Writes key text to a new file with the given mode, syncing file and directory so a key
/// reported as written survives a power cut.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeystoreError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_err(path)(e)
            }
        })?;
    // The umask may have narrowed the mode; it can never have widened it, but set it anyway so
    // a public key is readable whatever the umask.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

fn read_text(path: &Path, secret: bool) -> Result<Zeroizing<String>> {
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if secret && mode & 0o077 != 0 {
        return Err(KeystoreError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeystoreError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    Ok(text)
}

/// Which pair `keygen` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// X25519: envelopes are sealed to its public half.
    Encryption,
    /// Ed25519: its owner signs what it seals.
    Signing,
}

/// Paths and key id of a newly generated pair.
#[derive(Clone, Debug)]
pub struct GeneratedPair {
    /// The secret key file (mode 0600).
    pub secret_path: PathBuf,
    /// The public key file (mode 0644).
    pub public_path: PathBuf,
    /// Key id (SHA-256 of the public key), to be checked out of band.
    pub key_id: envelope::KeyId,
}

/// Generates a key pair for `owner` and writes `PREFIX.key` and `PREFIX.pub`.
///
/// Neither file is written if either exists.
pub fn generate_pair(
    kind: PairKind,
    owner: &str,
    prefix: &Path,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<GeneratedPair> {
    let secret_path = with_suffix(prefix, "key");
    let public_path = with_suffix(prefix, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(KeystoreError::Exists { path: p.clone() });
        }
    }
    let (secret_text, public_text, key_id) = match kind {
        PairKind::Encryption => {
            let key = RecipientSecretKey::generate(owner, rng).map_err(key_err(prefix))?;
            (key.to_text(), key.public().to_text(), key.public().key_id())
        }
        PairKind::Signing => {
            let key = SigningKey::generate(owner, rng).map_err(key_err(prefix))?;
            (key.to_text(), key.public().to_text(), key.public().key_id())
        }
    };
    write_new(&secret_path, &secret_text, 0o600)?;
    write_new(&public_path, &public_text, 0o644)?;
    Ok(GeneratedPair {
        secret_path,
        public_path,
        key_id,
    })
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Loads an X25519 secret key (the vault's or a researcher's).
pub fn load_recipient_secret(path: &Path) -> Result<RecipientSecretKey> {
    let text = read_text(path, true)?;
    RecipientSecretKey::from_text(&text).map_err(key_err(path))
}

/// Loads an X25519 public key to seal to.
pub fn load_recipient_public(path: &Path) -> Result<RecipientPublicKey> {
    let text = read_text(path, false)?;
    RecipientPublicKey::from_text(&text).map_err(key_err(path))
}

/// Loads an Ed25519 signing key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text = read_text(path, true)?;
    SigningKey::from_text(&text).map_err(key_err(path))
}

/// Loads an Ed25519 public key to trust as a sender.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = read_text(path, false)?;
    VerifyingKey::from_text(&text).map_err(key_err(path))
}

/// Loads trusted sender keys from files and directories. A directory contributes every
/// `*.pub` file in it that holds an Ed25519 public key (encryption public keys kept in the
/// same directory are skipped); a file named explicitly must be one.
pub fn load_trusted(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(path)
                .map_err(io_err(path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            entries.sort();
            for entry in entries {
                let text = read_text(&entry, false)?;
                if key_kind_of(&text) == Some(KeyKind::Ed25519Public) {
                    keys.push(VerifyingKey::from_text(&text).map_err(key_err(&entry))?);
                }
            }
        } else {
            keys.push(load_verifying_key(path)?);
        }
    }
    Ok(keys)
}

/// A symmetric link key (one-way link authentication), zeroized on drop.
pub struct LinkSecret {
    /// Name of the link (for example `ingress-vault`).
    pub link: String,
    /// The 32 key bytes.
    pub key: Zeroizing<[u8; 32]>,
}

const LINK_KIND: &str = "link-secret";
const LINK_MAGIC: &str = "enclave-key v1";

/// Key id of a link key: SHA-256 of a label and the key, so the id names the key without
/// revealing it (both ends print it; operators compare).
pub fn link_key_id(key: &[u8; 32]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"jp-med-enclave/link-key-id\0");
    ctx.update(key);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Generates a link key and writes it to `path` (mode 0600, never overwriting). Copy the
/// file to the other end of the link over a trusted channel (removable medium).
pub fn generate_link_key(
    link: &str,
    path: &Path,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String> {
    envelope::validate_party_id(link).map_err(key_err(path))?;
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill(key.as_mut())
        .map_err(|_| key_err(path)(EnvelopeError::Crypto("random source failed")))?;
    let id = link_key_id(&key);
    let hex: Zeroizing<String> = Zeroizing::new(key.iter().map(|b| format!("{b:02x}")).collect());
    let text = Zeroizing::new(format!(
        "{LINK_MAGIC}\n# SECRET KEY: keep this file mode 0600; copy it to the other end of the link offline.\nkind: {LINK_KIND}\nowner: {link}\nkey-id: {id}\nkey: {}\n",
        hex.as_str()
    ));
    write_new(path, &text, 0o600)?;
    Ok(id)
}

/// Loads a link key, checking permissions and the recorded key id.
pub fn load_link_key(path: &Path) -> Result<LinkSecret> {
    let text = read_text(path, true)?;
    let bad = |why: String| key_err(path)(EnvelopeError::BadKey(why));
    let mut fields = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    if fields.next() != Some(LINK_MAGIC) {
        return Err(bad(format!(
            "not an enclave key (first line must be `{LINK_MAGIC}`)"
        )));
    }
    let mut field = |name: &str| -> Result<String> {
        fields
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(": "))
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("expected `{name}: …`")))
    };
    let kind = field("kind")?;
    if kind != LINK_KIND {
        return Err(bad(format!(
            "this key is of kind {kind}, but kind {LINK_KIND} is needed here"
        )));
    }
    let link = field("owner")?;
    let recorded = field("key-id")?;
    let hex = Zeroizing::new(field("key")?);
    let mut key = Zeroizing::new([0u8; 32]);
    if hex.len() != 64 {
        return Err(bad("key: expected 64 hex digits".into()));
    }
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| bad("key: expected 64 hex digits".into()))?;
    }
    if link_key_id(&key) != recorded {
        return Err(bad(
            "key-id does not match the key (file corrupted or edited)".into(),
        ));
    }
    Ok(LinkSecret { link, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn link_key_round_trip_and_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("link.key");
        let rng = SystemRandom::new();
        let id = generate_link_key("ingress-vault", &path, &rng).expect("gen");
        let loaded = load_link_key(&path).expect("load");
        assert_eq!(link_key_id(&loaded.key), id);
        assert_eq!(loaded.link, "ingress-vault");
        assert!(matches!(
            generate_link_key("ingress-vault", &path, &rng),
            Err(KeystoreError::Exists { .. })
        ));
        let text = fs::read_to_string(&path).expect("read");
        let at = text.rfind("\nkey: ").expect("key line") + 6;
        let mut edited = text.into_bytes();
        edited[at] = if edited[at] == b'0' { b'1' } else { b'0' };
        let other = dir.path().join("edited.key");
        fs::write(&other, &edited).expect("write");
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = load_link_key(&other)
            .err()
            .expect("edited key must be refused");
        assert!(err.to_string().contains("key-id does not match"), "{err}");
    }

    #[test]
    fn generated_secret_is_0600_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("vault");
        let rng = SystemRandom::new();
        let pair = generate_pair(PairKind::Encryption, "vault", &prefix, &rng).expect("gen");
        let mode = fs::metadata(&pair.secret_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = load_recipient_secret(&pair.secret_path).expect("load");
        assert_eq!(key.public().key_id(), pair.key_id);
        let public = load_recipient_public(&pair.public_path).expect("load pub");
        assert_eq!(public.key_id(), pair.key_id);
    }

    #[test]
    fn refuses_overwrite_and_open_permissions_and_wrong_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("inst");
        let rng = SystemRandom::new();
        let pair = generate_pair(PairKind::Signing, "1312345678", &prefix, &rng).expect("gen");
        let again = generate_pair(PairKind::Signing, "1312345678", &prefix, &rng);
        assert!(matches!(again, Err(KeystoreError::Exists { .. })));

        fs::set_permissions(&pair.secret_path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_signing_key(&pair.secret_path).expect_err("too open");
        assert!(
            matches!(err, KeystoreError::TooOpen { mode: 0o640, .. }),
            "{err}"
        );

        let err = load_recipient_public(&pair.public_path).expect_err("wrong kind");
        assert!(err.to_string().contains("ed25519-public"), "{err}");
    }

    #[test]
    fn trusted_directory_takes_only_signing_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rng = SystemRandom::new();
        generate_pair(PairKind::Signing, "a", &dir.path().join("a"), &rng).expect("a");
        generate_pair(PairKind::Signing, "b", &dir.path().join("b"), &rng).expect("b");
        generate_pair(PairKind::Encryption, "vault", &dir.path().join("v"), &rng).expect("v");
        let keys = load_trusted(&[dir.path().to_owned()]).expect("load");
        let owners: Vec<&str> = keys.iter().map(|k| k.owner()).collect();
        assert_eq!(owners, ["a", "b"]);
    }
}
