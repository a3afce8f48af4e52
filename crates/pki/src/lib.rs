//! The operator's certificate authority: the client certificates institutions present to
//! ingress and the server certificate ingress presents to them (mutual TLS 1.3, R-GW-7).
//!
//! The CA lives in one directory on the operator's offline machine:
//!
//! ```text
//! CA/ca.key.pem      ECDSA P-256 key, PKCS#8, mode 0600 — never leaves this directory
//! CA/ca.crt.pem      self-signed CA certificate (what ingress and institutions trust)
//! CA/issued.jsonl    one line per certificate issued: serial, subject, role, validity, SHA-256
//! CA/revoked.jsonl   one line per revocation: serial, reason, time
//! CA/crl.pem         the current revocation list, signed by the CA (copied to ingress)
//! CA/state.json      next serial and CRL number
//! ```
//!
//! An institution's identity is the certificate's subject common name, which must be a
//! party id (the same id that signs its envelopes, `envelope::validate_party_id`), and its
//! role is fixed by the extended key usage: client certificates cannot serve and the server
//! certificate cannot log in. Time is always passed in, so tests can issue certificates
//! that are already expired without touching the clock.
//!
//! What this crate must never do: write the CA key anywhere but `ca.key.pem`, print it, or
//! overwrite an existing CA.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Longest a CRL is valid before ingress treats it as stale and the operator must re-sign.
pub const CRL_VALIDITY_DAYS: i64 = 30;

/// Errors of the CA; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// `init` on a directory that already holds a CA.
    #[error("{0}: a CA already exists here; refusing to overwrite it")]
    Exists(PathBuf),
    /// The CA key file is readable by group or others.
    #[error("{path}: CA key has mode {mode:04o}; it must not be accessible to group or others (chmod 600)")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// A subject name that is not a party id.
    #[error("subject {0:?} is not a valid party id (1..=64 of A-Z a-z 0-9 . _ : -, starting with a letter or digit)")]
    BadSubject(String),
    /// A serial that was never issued.
    #[error("serial {0} was not issued by this CA")]
    UnknownSerial(String),
    /// The CA's records are damaged.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Bad validity period.
    #[error("validity: {0}")]
    Validity(String),
}

/// Result alias for this crate.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |reason| PkiError::Io {
        path: path.to_owned(),
        reason,
    }
}

fn cert_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// What a certificate may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An institution logging in to ingress (TLS client authentication).
    Client,
    /// Ingress itself (TLS server authentication).
    Server,
}

/// One line of `issued.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, hex.
    pub serial: String,
    /// Subject common name (party id).
    pub subject: String,
    /// Client or server.
    pub role: Role,
    /// DNS names (server certificates).
    pub dns_names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the certificate DER, hex.
    pub sha256: String,
}

/// One line of `revoked.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedRecord {
    /// Serial number, hex.
    pub serial: String,
    /// Why (free text from the operator).
    pub reason: String,
    /// When, Unix seconds.
    pub revoked_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    next_serial: u64,
    crl_number: u64,
}

/// A freshly issued certificate and its private key.
pub struct Issued {
    /// The record appended to `issued.jsonl`.
    pub record: IssuedRecord,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM (zeroized on drop).
    pub key_pem: Zeroizing<String>,
}

/// An open CA directory.
pub struct Ca {
    dir: PathBuf,
    key: KeyPair,
    cert_pem: String,
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_unix(s: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(s).map_err(|e| PkiError::Validity(e.to_string()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

/// Replaces `path` atomically (temp file, fsync, rename), so a crash leaves old or new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_at(path))
}

fn append_line<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut line = serde_json::to_string(value).map_err(|e| PkiError::Corrupt {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(line.as_bytes()).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(path)(e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| PkiError::Corrupt {
                path: path.to_owned(),
                problem: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

fn check_subject(subject: &str) -> Result<()> {
    // The subject becomes a directory name on ingress: it must start with a letter or digit,
    // so `.` and `..` can never be one.
    let ok = subject
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && subject.len() <= 64
        && subject
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadSubject(subject.to_owned()))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn ca_params(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "jp-med-enclave operator CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

impl Ca {
    /// Creates a new CA in `dir` (created if missing; refused if a CA is already there).
    pub fn init(dir: &Path, name: &str, now: OffsetDateTime, valid_days: i64) -> Result<Self> {
        if valid_days <= 0 {
            return Err(PkiError::Validity(
                "CA validity must be at least one day".into(),
            ));
        }
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let key_path = dir.join("ca.key.pem");
        if key_path.exists() || dir.join("ca.crt.pem").exists() {
            return Err(PkiError::Exists(dir.to_owned()));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let params = ca_params(name, now, now + time::Duration::days(valid_days));
        let cert = params.self_signed(&key).map_err(cert_err)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_new(&key_path, key_pem.as_bytes(), 0o600)?;
        write_new(&dir.join("ca.crt.pem"), cert.pem().as_bytes(), 0o644)?;
        let state = State {
            next_serial: 1,
            crl_number: 1,
        };
        let ca = Self {
            dir: dir.to_owned(),
            key,
            cert_pem: cert.pem(),
        };
        ca.save_state(&state)?;
        ca.write_crl(now)?;
        Ok(ca)
    }

    /// Opens an existing CA directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let key_path = dir.join("ca.key.pem");
        let meta = fs::metadata(&key_path).map_err(io_at(&key_path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PkiError::TooOpen {
                path: key_path,
                mode,
            });
        }
        let key_pem = Zeroizing::new(fs::read_to_string(&key_path).map_err(io_at(&key_path))?);
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let cert_path = dir.join("ca.crt.pem");
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_at(&cert_path))?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_err)
    }

    fn load_state(&self) -> Result<State> {
        let path = self.dir.join("state.json");
        let text = fs::read_to_string(&path).map_err(io_at(&path))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Corrupt {
            path,
            problem: e.to_string(),
        })
    }

    fn save_state(&self, state: &State) -> Result<()> {
        let path = self.dir.join("state.json");
        let text = serde_json::to_string_pretty(state).map_err(cert_err)?;
        write_atomically(&path, text.as_bytes())
    }

    /// Issues a certificate for `subject` with a fresh key.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        dns_names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued> {
        check_subject(subject)?;
        if not_after <= not_before {
            return Err(PkiError::Validity(
                "not_after must be after not_before".into(),
            ));
        }
        let mut state = self.load_state()?;
        let serial_bytes = state.next_serial.to_be_bytes();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject);
        dn.push(
            DnType::OrganizationalUnitName,
            match role {
                Role::Client => "institution",
                Role::Server => "ingress",
            },
        );
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&serial_bytes));
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![match role {
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        for name in dns_names {
            let san = name
                .clone()
                .try_into()
                .map_err(|e| PkiError::Cert(format!("DNS name {name:?}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(san));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let cert = params.signed_by(&key, &self.issuer()?).map_err(cert_err)?;
        // The serial is consumed before the record is written: a crash in between wastes a
        // serial, never reuses one.
        state.next_serial += 1;
        self.save_state(&state)?;
        let record = IssuedRecord {
            serial: hex::encode(serial_bytes),
            subject: subject.to_owned(),
            role,
            dns_names: dns_names.to_vec(),
            not_before: unix(not_before),
            not_after: unix(not_after),
            sha256: sha256_hex(cert.der()),
        };
        append_line(&self.dir.join("issued.jsonl"), &record)?;
        Ok(Issued {
            record,
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Everything issued, in order.
    pub fn issued(&self) -> Result<Vec<IssuedRecord>> {
        read_lines(&self.dir.join("issued.jsonl"))
    }

    /// Everything revoked, in order.
    pub fn revoked(&self) -> Result<Vec<RevokedRecord>> {
        read_lines(&self.dir.join("revoked.jsonl"))
    }

    /// Revokes `serial` (hex, as `issued.jsonl` lists it) and re-signs the CRL. Revoking
    /// twice is harmless.
    pub fn revoke(&self, serial: &str, reason: &str, now: OffsetDateTime) -> Result<()> {
        let serial = serial.trim().to_ascii_lowercase();
        if !self.issued()?.iter().any(|r| r.serial == serial) {
            return Err(PkiError::UnknownSerial(serial));
        }
        if !self.revoked()?.iter().any(|r| r.serial == serial) {
            append_line(
                &self.dir.join("revoked.jsonl"),
                &RevokedRecord {
                    serial,
                    reason: reason.to_owned(),
                    revoked_at: unix(now),
                },
            )?;
        }
        self.write_crl(now).map(|_| ())
    }

    /// Signs a new CRL listing every revoked serial, valid for [`CRL_VALIDITY_DAYS`], and
    /// writes it to `crl.pem`. Returns its path.
    pub fn write_crl(&self, now: OffsetDateTime) -> Result<PathBuf> {
        let mut state = self.load_state()?;
        let mut revoked_certs = Vec::new();
        for r in self.revoked()? {
            let bytes = hex::decode(&r.serial).map_err(|e| PkiError::Corrupt {
                path: self.dir.join("revoked.jsonl"),
                problem: format!("serial {}: {e}", r.serial),
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: from_unix(r.revoked_at)?,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(CRL_VALIDITY_DAYS),
            crl_number: SerialNumber::from_slice(&state.crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?).map_err(cert_err)?;
        state.crl_number += 1;
        self.save_state(&state)?;
        let path = self.dir.join("crl.pem");
        write_atomically(&path, crl.pem().map_err(cert_err)?.as_bytes())?;
        Ok(path)
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| PkiError::Cert(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Cert(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(PkiError::Cert(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the private key in a PEM file (refused when group or others can read it).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    let meta = fs::metadata(path).map_err(io_at(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| PkiError::Cert(format!("{}: {e}", path.display())))
}

/// Reads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| PkiError::Cert(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Cert(format!("{}: {e}", path.display())))
}

/// Writes an issued certificate and key as `DIR/NAME.crt.pem` and `DIR/NAME.key.pem`
/// (0600), refusing to overwrite either.
pub fn write_issued(dir: &Path, name: &str, issued: &Issued) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let crt = dir.join(format!("{name}.crt.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    if crt.exists() || key.exists() {
        return Err(PkiError::Exists(crt));
    }
    write_new(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_new(&crt, issued.cert_pem.as_bytes(), 0o644)?;
    Ok((crt, key))
}

/// The subject common name of a certificate (the party id a client certificate names).
pub fn subject_cn(cert: &CertificateDer<'_>) -> Result<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(cert_err)?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| PkiError::Cert("certificate has no common name".into()))?
        .as_str()
        .map_err(cert_err)?
        .to_owned();
    check_subject(&cn)?;
    Ok(cn)
}

/// Serial number (hex) and SHA-256 (hex) of a certificate, for the ledger.
pub fn describe(cert: &CertificateDer<'_>) -> Result<(String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(cert_err)?;
    // Our serials are 8 bytes, written as `issued.jsonl` lists them; DER drops leading
    // zeros (or adds one), so normalise to 8 bytes when the value fits.
    let raw: Vec<u8> = parsed
        .raw_serial()
        .iter()
        .copied()
        .skip_while(|&b| b == 0)
        .collect();
    let serial = if raw.len() <= 8 {
        let mut padded = vec![0u8; 8 - raw.len()];
        padded.extend_from_slice(&raw);
        padded
    } else {
        raw
    };
    Ok((hex::encode(serial), sha256_hex(cert.as_ref())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(y: i32) -> OffsetDateTime {
        rcgen::date_time_ymd(y, 1, 1)
    }

    #[test]
    fn init_issue_revoke_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "test CA", t(2026), 3650).unwrap();
        assert!(matches!(
            Ca::init(dir.path(), "again", t(2026), 10),
            Err(PkiError::Exists(_))
        ));
        let issued = ca
            .issue("1312345678", Role::Client, &[], t(2026), t(2027))
            .unwrap();
        assert_eq!(issued.record.serial, "0000000000000001");
        let certs = {
            let p = dir.path().join("c.pem");
            fs::write(&p, &issued.cert_pem).unwrap();
            load_certs(&p).unwrap()
        };
        assert_eq!(subject_cn(&certs[0]).unwrap(), "1312345678");
        assert_eq!(describe(&certs[0]).unwrap().0, issued.record.serial);
        let ca = Ca::open(dir.path()).unwrap();
        let second = ca
            .issue(
                "ingress",
                Role::Server,
                &["ingress.test".into()],
                t(2026),
                t(2027),
            )
            .unwrap();
        assert_eq!(second.record.serial, "0000000000000002");
        assert!(matches!(
            ca.revoke("ff", "x", t(2026)),
            Err(PkiError::UnknownSerial(_))
        ));
        ca.revoke("0000000000000001", "laptop lost", t(2026))
            .unwrap();
        ca.revoke("0000000000000001", "again", t(2026)).unwrap();
        assert_eq!(ca.revoked().unwrap().len(), 1);
        assert_eq!(load_crls(&dir.path().join("crl.pem")).unwrap().len(), 1);
        assert!(ca
            .issue("bad name", Role::Client, &[], t(2026), t(2027))
            .is_err());
    }

    #[test]
    fn open_refuses_a_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        Ca::init(dir.path(), "test CA", t(2026), 10).unwrap();
        let key = dir.path().join("ca.key.pem");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Ca::open(dir.path()),
            Err(PkiError::TooOpen { .. })
        ));
    }
}
