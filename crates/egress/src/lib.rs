//! Egress (出口サーバ) as a library: which recipient a package from the vault goes to, the
//! push loop that delivers it over QUIC with mutual TLS 1.3, and the delivery records.
//!
//! Egress is send-only towards the outside (R-GW-3): it opens connections to registered
//! recipients and binds no listening socket there; its only receiving socket is the one-way
//! link's, on the internal interface, whose receiver never transmits (R-GW-5). It cannot open
//! a package (it has no recipient's key): it forwards only files whose envelope header is
//! signed by the vault's release key, is a release, and is sealed to the key registered for
//! the recipient the file is named for. Nothing goes back to the vault; delivery status is
//! kept in `STATE/deliveries.jsonl` for operators to read out of band.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use envelope::{ContentType, RecipientPublicKey, SignedHeader, VerifyingKey};
use serde::{Deserialize, Serialize};

/// One registered recipient endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Recipient id (as the vault names it).
    pub id: String,
    /// Address of its `enclave receive`.
    pub address: SocketAddr,
    /// Name in its server certificate.
    pub server_name: String,
    /// Its encryption public key (envelope text form): packages must be sealed to it.
    pub key: String,
    /// Its receipt verifying key (envelope text form): receipts must be signed with it.
    pub receipt_key: String,
}

/// The recipients file: `{"recipients": [...]}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// Every recipient egress may deliver to.
    pub recipients: Vec<Recipient>,
}

/// A recipient with its keys parsed.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// As registered.
    pub recipient: Recipient,
    /// Its encryption key.
    pub key: RecipientPublicKey,
    /// Its receipt key.
    pub receipt_key: VerifyingKey,
}

/// Reads and checks the recipients file.
pub fn load_recipients(path: &Path) -> Result<BTreeMap<String, Endpoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: Recipients =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let mut out = BTreeMap::new();
    for r in file.recipients {
        let key = RecipientPublicKey::from_text(&r.key)
            .with_context(|| format!("{}: recipient {}: key", path.display(), r.id))?;
        let receipt_key = VerifyingKey::from_text(&r.receipt_key)
            .with_context(|| format!("{}: recipient {}: receipt_key", path.display(), r.id))?;
        if key.owner() != r.id {
            anyhow::bail!(
                "{}: recipient {}: its key belongs to {}",
                path.display(),
                r.id,
                key.owner()
            );
        }
        let id = r.id.clone();
        if out
            .insert(
                id.clone(),
                Endpoint {
                    recipient: r,
                    key,
                    receipt_key,
                },
            )
            .is_some()
        {
            anyhow::bail!("{}: recipient {id} is listed twice", path.display());
        }
    }
    Ok(out)
}

/// Splits a package's file name as the vault writes it, `RELEASE.RECIPIENT.release`, after
/// the link's `{id:020}-` prefix.
pub fn parse_name(file_name: &str) -> Option<(&str, &str)> {
    let name = diode_io::parse_entry_name(file_name)
        .map(|(_, n)| n)
        .unwrap_or(file_name);
    let stem = name.strip_suffix(".release")?;
    let (release, recipient) = stem.split_once('.')?;
    (!release.is_empty() && !recipient.is_empty()).then_some((release, recipient))
}

/// Decides where a package goes, from its name and its envelope header alone: the header
/// must be signed by the vault's release key, be a release, and be sealed to the key of the
/// recipient named in the file name. Pure.
pub fn route<'a>(
    file_name: &str,
    header: &SignedHeader,
    vault: &VerifyingKey,
    recipients: &'a BTreeMap<String, Endpoint>,
) -> std::result::Result<(&'a Endpoint, String), String> {
    let (release, recipient) =
        parse_name(file_name).ok_or_else(|| format!("{file_name}: not a release package name"))?;
    header
        .verify(vault)
        .map_err(|e| format!("{file_name}: not signed by the vault's release key ({e})"))?;
    let h = header.header();
    if h.content_type != ContentType::Release {
        return Err(format!(
            "{file_name}: content type {}, not release",
            h.content_type
        ));
    }
    let endpoint = recipients
        .get(recipient)
        .ok_or_else(|| format!("{file_name}: recipient {recipient} is not registered here"))?;
    if h.recipient_key_id != endpoint.key.key_id() {
        return Err(format!(
            "{file_name}: sealed to key {}, but recipient {recipient}'s key is {}",
            h.recipient_key_id,
            endpoint.key.key_id()
        ));
    }
    Ok((endpoint, release.to_owned()))
}

/// Wait before attempt `n + 1` after `n` failed attempts: 1 s doubling, at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

/// One line of `deliveries.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The file as the link delivered it.
    pub file: String,
    /// Release id.
    pub release: String,
    /// Recipient id.
    pub recipient: String,
    /// `delivered`, `refused` (given up) or `retry`.
    pub outcome: String,
    /// Attempt number.
    pub attempt: u32,
    /// Bytes of the package.
    pub bytes: u64,
    /// SHA-256 of the package.
    pub sha256: String,
    /// The recipient's signed receipt (JSON), when delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<serde_json::Value>,
    /// Why not, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the push loop needs.
pub struct Config {
    /// Where the link's receiver puts packages.
    pub inbox: PathBuf,
    /// Egress's own records: `deliveries.jsonl`, `delivered/`, `refused/`.
    pub state: PathBuf,
    /// Recipients by id.
    pub recipients: BTreeMap<String, Endpoint>,
    /// The vault's release verifying key.
    pub vault: VerifyingKey,
    /// Operator CA (researchers' server certificates are issued by it).
    pub ca: PathBuf,
    /// Egress's client certificate and key.
    pub cert: PathBuf,
    /// See `cert`.
    pub key: PathBuf,
}

/// Per-file retry state.
#[derive(Default)]
pub struct Pending {
    failures: BTreeMap<String, (u32, std::time::Instant)>,
}

fn record(state: &Path, d: &Delivery) -> Result<()> {
    let path = state.join("deliveries.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut line = serde_json::to_vec(d)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()?;
    Ok(())
}

fn move_to(state: &Path, sub: &str, file: &Path) -> Result<()> {
    let dir = state.join(sub);
    std::fs::create_dir_all(&dir)?;
    let name = file.file_name().context("file name")?;
    std::fs::rename(file, dir.join(name))
        .with_context(|| format!("moving {} to {}", file.display(), dir.display()))
}

/// Complete packages in the inbox, oldest link id first.
pub fn inbox_packages(inbox: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(inbox).with_context(|| format!("reading {}", inbox.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type()?.is_file() {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Tries every package in the inbox whose backoff has passed; returns how many are still
/// waiting for another attempt.
pub async fn push_once(cfg: &Config, pending: &mut Pending) -> Result<usize> {
    std::fs::create_dir_all(&cfg.state)?;
    let mut waiting = 0;
    for path in inbox_packages(&cfg.inbox)? {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((n, last)) = pending.failures.get(&file) {
            if last.elapsed() < backoff(*n - 1) {
                waiting += 1;
                continue;
            }
        }
        let attempt = pending.failures.get(&file).map_or(1, |(n, _)| n + 1);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut d = Delivery {
            at_ms: 0,
            file: file.clone(),
            release: String::new(),
            recipient: String::new(),
            outcome: String::new(),
            attempt,
            bytes: bytes.len() as u64,
            sha256: hex::encode(sha256.as_ref()),
            receipt: None,
            error: None,
        };
        if let Some((release, recipient)) = parse_name(&file) {
            d.release = release.into();
            d.recipient = recipient.into();
        }
        let routed = SignedHeader::read_from(&mut &bytes[..])
            .map_err(|e| format!("{file}: not an envelope ({e})"))
            .and_then(|h| {
                let (endpoint, _) = route(&file, &h, &cfg.vault, &cfg.recipients)?;
                Ok((endpoint, h))
            });
        let (endpoint, header) = match routed {
            Ok(x) => x,
            Err(why) => {
                log_line("refused", &why);
                d.at_ms = now_ms();
                d.outcome = "refused".into();
                d.error = Some(why);
                record(&cfg.state, &d)?;
                move_to(&cfg.state, "refused", &path)?;
                pending.failures.remove(&file);
                continue;
            }
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(sha256.as_ref());
        let offer = intake_proto::Offer {
            envelope_id: header.header().envelope_id,
            size: bytes.len() as u64,
            sha256: digest,
        };
        let sender = header.header().sender_id.clone();
        let result = deliver(cfg, endpoint, &path, &offer, &sender).await;
        d.at_ms = now_ms();
        match result {
            Ok(receipt) => {
                d.outcome = "delivered".into();
                d.receipt = serde_json::to_value(&receipt.signed).ok();
                record(&cfg.state, &d)?;
                move_to(&cfg.state, "delivered", &path)?;
                pending.failures.remove(&file);
                log_line(
                    "delivered",
                    &format!("{file} to {} ({} bytes)", endpoint.recipient.id, d.bytes),
                );
            }
            Err(e) if e.retryable() => {
                d.outcome = "retry".into();
                d.error = Some(e.to_string());
                record(&cfg.state, &d)?;
                log_line("retry", &format!("{file}: {e}"));
                pending
                    .failures
                    .insert(file.clone(), (attempt, std::time::Instant::now()));
                waiting += 1;
            }
            Err(e) => {
                d.outcome = "refused".into();
                d.error = Some(e.to_string());
                record(&cfg.state, &d)?;
                log_line("refused", &format!("{file}: {e}"));
                move_to(&cfg.state, "refused", &path)?;
                pending.failures.remove(&file);
            }
        }
    }
    Ok(waiting)
}

fn log_line(what: &str, detail: &str) {
    eprintln!("egress: {what}: {detail}");
}

async fn deliver(
    cfg: &Config,
    endpoint: &Endpoint,
    path: &Path,
    offer: &intake_proto::Offer,
    sender: &str,
) -> std::result::Result<submit::client::Receipt, submit::client::UploadError> {
    use submit::client::{Connection, Target, UploadError};
    let target = Target {
        addr: endpoint.recipient.address,
        server_name: endpoint.recipient.server_name.clone(),
        ca: cfg.ca.clone(),
        cert: cfg.cert.clone(),
        key: cfg.key.clone(),
    };
    let config = submit::client::client_config_for(&target, intake_proto::RELEASE_ALPN)
        .map_err(|e| UploadError::Local(format!("{e:#}")))?;
    let conn = Connection::open(&target, config).await?;
    let result = conn
        .upload(path, offer, sender, &endpoint.receipt_key)
        .await;
    conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_with_and_without_the_link_prefix() {
        assert_eq!(
            parse_name("00000000000000000007-R0001.lab-1.release"),
            Some(("R0001", "lab-1"))
        );
        assert_eq!(parse_name("R0001.lab-1.release"), Some(("R0001", "lab-1")));
        assert_eq!(parse_name("R0001.release"), None);
        assert_eq!(parse_name("R0001.lab-1.zip"), None);
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(
            backoff(30),
            Duration::from_secs(256).min(Duration::from_secs(300))
        );
        assert!(backoff(100) <= Duration::from_secs(300));
    }
}
