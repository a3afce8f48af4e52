//! The release package: one ZIP archive holding the released files, the anonymization
//! report, a manifest (file hashes, method, release id, recipient, conditions of use and the
//! R-RL-4 statement) and the vault's Ed25519 signature over the manifest. The vault then seals
//! the archive to the recipient's key with the envelope crate; the researcher's receiver opens
//! it and calls [`verify`], which refuses any archive whose signature, hashes or file list do
//! not match. Pure: bytes in, bytes out.

use std::io::{Cursor, Read, Write};

use envelope::{SigningKey, VerifyingKey};
use ring::digest;
use serde::{Deserialize, Serialize};

/// Format tag of a manifest.
pub const FORMAT: &str = "jp-med-enclave/release/v1";
/// Domain separation of the manifest signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"jp-med-enclave/vault/v1/release-manifest\0";
/// Name of the manifest inside the archive.
pub const MANIFEST: &str = "manifest.json";
/// Name of the manifest's signature inside the archive.
pub const SIGNATURE: &str = "manifest.sig";
/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 64;
/// Largest total of uncompressed bytes accepted (guards against ZIP bombs).
pub const MAX_TOTAL_BYTES: u64 = 8 << 30;

/// What recipients are told about the data (R-RL-4), in Japanese and English.
pub const STATEMENT: &str = "本データは次世代医療基盤法に基づく匿名加工医療情報です。\
再識別を試みること、及び認定匿名加工医療情報作成事業者の許可なく第三者に提供することを禁じます。 \
This data is anonymized medical information (匿名加工医療情報) under the Next-Generation \
Medical Infrastructure Act. Any attempt to re-identify a person is forbidden, and it may not \
be passed on to anyone else without the operator's written permission.";

/// What recipients of a pseudonymized release (仮名加工医療情報, issue #12) are told: values
/// are kept and only the identifiers replaced, so the rules are stricter than for
/// anonymized data.
pub const PSEUDONYMIZED_STATEMENT: &str =
    "本データは次世代医療基盤法に基づく仮名加工医療情報です。\
認定利用事業者として登録された提供先のみが、承認された目的にのみ利用できます。\
本人を識別すること、他の情報と照合すること、及び第三者に提供することを禁じます。 \
This data is pseudonymized medical information (仮名加工医療情報) under the Next-Generation \
Medical Infrastructure Act, provided only to a recipient registered as a certified user, for \
the approved purpose only. Identifying a person, linking it with any other information, and \
passing it on to anyone else are forbidden.";

/// The two kinds of release data (the `anonymize` profiles).
pub const PROFILES: [&str; 2] = ["anonymized", "pseudonymized"];

fn anonymized() -> String {
    PROFILES[0].into()
}

/// Why a package is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// Not a readable archive, or one outside the limits.
    #[error("not a release package: {0}")]
    Format(String),
    /// The manifest's signature does not verify with the vault's key.
    #[error("the manifest's signature does not verify with the vault's key {0}")]
    Signature(String),
    /// A file differs from what the manifest says, is missing, or is not listed.
    #[error("{0}")]
    Contents(String),
}

/// One released file as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Name inside the archive.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The manifest: what was released, to whom, under which method and conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Release id.
    pub release: String,
    /// Recipient id.
    pub recipient: String,
    /// Purpose of use.
    pub purpose: String,
    /// Committee decision id and date (R-RL-1).
    pub committee_decision: String,
    /// See `committee_decision`.
    pub committee_date: String,
    /// Conditions of use (R-RL-4).
    pub conditions: String,
    /// Method id (SHA-256 of its files, R-AN-3) and name.
    pub method: String,
    /// See `method`.
    pub method_name: String,
    /// When the package was built (RFC 3339).
    pub created: String,
    /// Rows released.
    pub rows: u64,
    /// Columns released.
    pub columns: Vec<String>,
    /// `anonymized` (匿名加工医療情報) or `pseudonymized` (仮名加工医療情報).
    #[serde(default = "anonymized")]
    pub profile: String,
    /// [`STATEMENT`] or [`PSEUDONYMIZED_STATEMENT`], as the profile says.
    pub statement: String,
    /// Every file in the archive but the manifest and its signature.
    pub files: Vec<FileEntry>,
}

/// A package that verified.
#[derive(Debug)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// The manifest's bytes as signed.
    pub manifest_bytes: Vec<u8>,
    /// The signature file's text.
    pub signature: String,
    /// The files, in manifest order.
    pub files: Vec<(String, Vec<u8>)>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(manifest);
    m
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.')
}

/// Builds the archive: `manifest` gets its file list from `files`; the signature is the
/// vault's over the manifest bytes. Entry order and timestamps are fixed, so the same inputs
/// give the same bytes.
pub fn build(
    mut manifest: Manifest,
    files: &[(String, Vec<u8>)],
    key: &SigningKey,
) -> Result<Vec<u8>, PackageError> {
    for (name, _) in files {
        if !safe_name(name) || name == MANIFEST || name == SIGNATURE {
            return Err(PackageError::Format(format!(
                "file name {name:?} is not allowed"
            )));
        }
    }
    manifest.format = FORMAT.into();
    if manifest.profile.is_empty() {
        manifest.profile = anonymized();
    }
    manifest.statement = match manifest.profile.as_str() {
        "anonymized" => STATEMENT.into(),
        "pseudonymized" => PSEUDONYMIZED_STATEMENT.into(),
        other => {
            return Err(PackageError::Format(format!(
                "profile {other:?}; a release is one of {PROFILES:?}"
            )))
        }
    };
    manifest.files = files
        .iter()
        .map(|(name, bytes)| FileEntry {
            name: name.clone(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
        .collect();
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| PackageError::Format(format!("manifest: {e}")))?;
    let signature = format!(
        "ed25519 {} {}\n",
        key.public().key_id(),
        hex::encode(key.sign(&signed_message(&manifest_bytes)))
    );
    let zip_err = |e: zip::result::ZipError| PackageError::Format(e.to_string());
    let io_err = |e: std::io::Error| PackageError::Format(e.to_string());
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644)
        .large_file(true);
    z.start_file(MANIFEST, opts).map_err(zip_err)?;
    z.write_all(&manifest_bytes).map_err(io_err)?;
    z.start_file(SIGNATURE, opts).map_err(zip_err)?;
    z.write_all(signature.as_bytes()).map_err(io_err)?;
    for (name, bytes) in files {
        z.start_file(name.as_str(), opts).map_err(zip_err)?;
        z.write_all(bytes).map_err(io_err)?;
    }
    Ok(z.finish().map_err(zip_err)?.into_inner())
}

/// Reads and checks an archive against the vault's release key: the signature over the
/// manifest, then every file's size and SHA-256, and that nothing else is in it.
pub fn verify(archive: &[u8], vault: &VerifyingKey) -> Result<Verified, PackageError> {
    let fmt = |e: zip::result::ZipError| PackageError::Format(e.to_string());
    let mut z = zip::ZipArchive::new(Cursor::new(archive)).map_err(fmt)?;
    if z.len() > MAX_ENTRIES {
        return Err(PackageError::Format(format!(
            "{} entries, more than {MAX_ENTRIES}",
            z.len()
        )));
    }
    let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(z.len());
    let mut total = 0u64;
    for i in 0..z.len() {
        let entry = z.by_index(i).map_err(fmt)?;
        let name = entry.name().to_owned();
        if !safe_name(&name) {
            return Err(PackageError::Format(format!(
                "entry name {name:?} is not allowed"
            )));
        }
        if entries.iter().any(|(n, _)| *n == name) {
            return Err(PackageError::Format(format!("entry {name} appears twice")));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_TOTAL_BYTES {
            return Err(PackageError::Format(format!(
                "more than {MAX_TOTAL_BYTES} bytes uncompressed"
            )));
        }
        let declared = entry.size();
        let mut bytes = Vec::new();
        // Read at most what the header claims plus one byte, so a lying header (a ZIP bomb)
        // is caught after one byte too many, not after gigabytes.
        entry
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| PackageError::Format(format!("{name}: {e}")))?;
        if bytes.len() as u64 != declared {
            return Err(PackageError::Format(format!(
                "{name}: {} bytes, the archive says {declared}",
                bytes.len()
            )));
        }
        entries.push((name, bytes));
    }
    let take = |entries: &mut Vec<(String, Vec<u8>)>, name: &str| {
        entries
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| entries.remove(i).1)
            .ok_or_else(|| PackageError::Format(format!("no {name} in the archive")))
    };
    let manifest_bytes = take(&mut entries, MANIFEST)?;
    let sig_bytes = take(&mut entries, SIGNATURE)?;
    let signature = String::from_utf8(sig_bytes)
        .map_err(|_| PackageError::Format(format!("{SIGNATURE} is not text")))?;
    let mut parts = signature.split_whitespace();
    let (Some("ed25519"), Some(key_id), Some(sig_hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PackageError::Format(format!(
            "{SIGNATURE} is not `ed25519 KEY-ID SIGNATURE`"
        )));
    };
    let expected = vault.key_id().to_string();
    if key_id != expected {
        return Err(PackageError::Signature(format!(
            "{expected} (the package names key {key_id})"
        )));
    }
    let sig = hex::decode(sig_hex).map_err(|_| PackageError::Signature(expected.clone()))?;
    vault
        .verify(&signed_message(&manifest_bytes), &sig)
        .map_err(|_| PackageError::Signature(expected.clone()))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| PackageError::Format(format!("manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(PackageError::Format(format!(
            "manifest format {:?}, expected {FORMAT}",
            manifest.format
        )));
    }
    let mut files = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let bytes = take(&mut entries, &f.name)
            .map_err(|_| PackageError::Contents(format!("{} is listed but missing", f.name)))?;
        if bytes.len() as u64 != f.size || sha256_hex(&bytes) != f.sha256 {
            return Err(PackageError::Contents(format!(
                "{} does not match the manifest ({} bytes, sha256 {}; manifest says {} bytes, {})",
                f.name,
                bytes.len(),
                sha256_hex(&bytes),
                f.size,
                f.sha256
            )));
        }
        files.push((f.name.clone(), bytes));
    }
    if let Some((extra, _)) = entries.first() {
        return Err(PackageError::Contents(format!(
            "{extra} is in the archive but not in the manifest"
        )));
    }
    Ok(Verified {
        manifest,
        manifest_bytes,
        signature,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed("vault", &[seed; 32]).expect("key")
    }

    fn manifest() -> Manifest {
        Manifest {
            format: String::new(),
            release: "R1".into(),
            recipient: "lab-1".into(),
            purpose: "study".into(),
            committee_decision: "C-1".into(),
            committee_date: "2026-11-01".into(),
            conditions: "no onward provision".into(),
            method: "ab".repeat(32),
            method_name: "m".into(),
            created: "2026-11-27T00:00:00Z".into(),
            rows: 2,
            columns: vec!["age".into()],
            profile: String::new(),
            statement: String::new(),
            files: Vec::new(),
        }
    }

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("data.csv".into(), b"age\n30-39\n30-39\n".to_vec()),
            ("report.json".into(), b"{}".to_vec()),
        ]
    }

    #[test]
    fn a_built_package_verifies_and_is_deterministic() {
        let k = key(1);
        let a = build(manifest(), &files(), &k).expect("build");
        let b = build(manifest(), &files(), &k).expect("build");
        assert_eq!(a, b);
        let v = verify(&a, k.public()).expect("verify");
        assert_eq!(v.files, files());
        assert_eq!(v.manifest.statement, STATEMENT);
        assert_eq!(v.manifest.files.len(), 2);
    }

    #[test]
    fn another_key_or_any_changed_byte_is_refused() {
        let k = key(1);
        let a = build(manifest(), &files(), &k).expect("build");
        assert!(matches!(
            verify(&a, key(2).public()),
            Err(PackageError::Signature(_))
        ));
        // Flip each byte in turn: either the package is refused, or the flip hit ZIP
        // bookkeeping the contents do not depend on (flags, timestamps) and exactly the
        // signed contents come out. No flip yields different accepted contents.
        let mut refused = 0;
        for i in 0..a.len() {
            let mut t = a.clone();
            t[i] ^= 0x01;
            match verify(&t, k.public()) {
                Err(_) => refused += 1,
                Ok(v) => assert_eq!(v.files, files(), "byte {i} changed the contents"),
            }
        }
        assert!(
            refused > a.len() / 2,
            "{refused} of {} flips refused",
            a.len()
        );
    }

    #[test]
    fn a_file_swapped_for_another_is_refused_even_with_a_valid_signature() {
        let k = key(1);
        // A package whose manifest lists other contents than the archive holds.
        let mut other = files();
        other[0].1 = b"age\n31\n".to_vec();
        let good = build(manifest(), &files(), &k).expect("build");
        let v = verify(&good, k.public()).expect("verify");
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for (name, bytes) in [
            (MANIFEST, v.manifest_bytes.as_slice()),
            (SIGNATURE, v.signature.as_bytes()),
            ("data.csv", other[0].1.as_slice()),
            ("report.json", other[1].1.as_slice()),
        ] {
            z.start_file(name, opts).expect("entry");
            z.write_all(bytes).expect("write");
        }
        let forged = z.finish().expect("zip").into_inner();
        assert!(matches!(
            verify(&forged, k.public()),
            Err(PackageError::Contents(_))
        ));
    }

    #[test]
    fn unsafe_names_are_refused() {
        let k = key(1);
        for bad in ["../x", "a/b", ".hidden", "manifest.json", ""] {
            assert!(
                build(manifest(), &[(bad.into(), vec![1])], &k).is_err(),
                "{bad}"
            );
        }
    }
}
