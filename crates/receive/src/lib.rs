//! The researcher's side of a release (`enclave receive`): a QUIC server that accepts only
//! the operator's egress client certificate (TLS 1.3, operator CA, current CRL), takes one
//! sealed package per stream with the submit protocol's frames (ALPN `jmed-release/1`),
//! opens it with the researcher's key, checks that the vault signed it and that every file
//! matches the signed manifest, writes the release atomically into `OUT/RELEASE/`, and
//! answers with a receipt signed by the researcher's receipt key. Anything tampered with,
//! sealed to another key or signed by another vault is refused, and nothing of it is written.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use envelope::{RecipientSecretKey, SigningKey, VerifyingKey};
use intake_proto::{Offer, ReceiptBody, Refusal, RefusalCode, Reply, SignedReceipt, OFFER_LEN};
use release::package;

/// What the receiver needs.
pub struct Receiver {
    /// The researcher's X25519 secret key (packages are sealed to it).
    pub key: RecipientSecretKey,
    /// The vault's release verifying key.
    pub vault: VerifyingKey,
    /// The researcher's receipt signing key.
    pub receipt_key: SigningKey,
    /// Where releases are written.
    pub out: PathBuf,
    /// Largest package accepted, bytes.
    pub max_bytes: u64,
}

/// A release written to disk.
#[derive(Debug)]
pub struct Received {
    /// Where.
    pub dir: PathBuf,
    /// Its verified manifest.
    pub manifest: package::Manifest,
    /// It was there already (the same package sent again).
    pub duplicate: bool,
}

fn refusal(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

impl Receiver {
    /// Opens, verifies and writes one sealed package (`sealed` is the whole envelope).
    pub fn accept(&self, sealed: &[u8]) -> std::result::Result<Received, Refusal> {
        let mut archive = Vec::new();
        let opened = envelope::open(
            &self.key,
            std::slice::from_ref(&self.vault),
            sealed,
            &mut archive,
        )
        .map_err(|e| {
            refusal(
                RefusalCode::BadSignature,
                format!("the package does not open: {e}"),
            )
        })?;
        if opened.header().content_type != envelope::ContentType::Release {
            return Err(refusal(
                RefusalCode::ContentType,
                format!("content type {}, not release", opened.header().content_type),
            ));
        }
        let v = package::verify(&archive, &self.vault)
            .map_err(|e| refusal(RefusalCode::HashMismatch, e.to_string()))?;
        let me = self.key.public().owner();
        if v.manifest.recipient != me {
            return Err(refusal(
                RefusalCode::SignerMismatch,
                format!(
                    "the package is for recipient {}, this receiver is {me}",
                    v.manifest.recipient
                ),
            ));
        }
        let id = &v.manifest.release;
        if envelope::validate_party_id(id).is_err() || id.starts_with('.') {
            return Err(refusal(
                RefusalCode::Protocol,
                format!("release id {id:?} is not usable as a folder name"),
            ));
        }
        self.write(&v)
            .map_err(|e| refusal(RefusalCode::Internal, format!("{e:#}")))
    }

    fn write(&self, v: &package::Verified) -> Result<Received> {
        let id = &v.manifest.release;
        let dir = self.out.join(id);
        if dir.exists() {
            let existing = std::fs::read(dir.join(package::MANIFEST)).unwrap_or_default();
            if existing == v.manifest_bytes {
                return Ok(Received {
                    dir,
                    manifest: v.manifest.clone(),
                    duplicate: true,
                });
            }
            anyhow::bail!(
                "{} exists and holds another package; move it away first",
                dir.display()
            );
        }
        let tmp = self.out.join(format!(".{id}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut all: Vec<(&str, &[u8])> = vec![
            (package::MANIFEST, &v.manifest_bytes),
            (package::SIGNATURE, v.signature.as_bytes()),
        ];
        for (name, bytes) in &v.files {
            all.push((name, bytes));
        }
        for (name, bytes) in all {
            let p = tmp.join(name);
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            std::fs::File::open(&p)?.sync_all()?;
        }
        std::fs::rename(&tmp, &dir).with_context(|| format!("renaming to {}", dir.display()))?;
        std::fs::File::open(&self.out)?.sync_all()?;
        Ok(Received {
            dir,
            manifest: v.manifest.clone(),
            duplicate: false,
        })
    }

    fn receipt(&self, offer: &Offer, sender: &str) -> SignedReceipt {
        let body = ReceiptBody {
            version: 1,
            envelope_id: offer.envelope_id.to_string(),
            institution: sender.to_owned(),
            sha256: hex::encode(offer.sha256),
            size: offer.size,
            content_type: "release".into(),
            received_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            ingress_key_id: self.receipt_key.public().key_id().to_string(),
        };
        SignedReceipt::sign(&body, &self.receipt_key)
    }
}

/// One line of the receiver's log.
pub fn summary(r: &Received) -> String {
    let m = &r.manifest;
    let files: Vec<String> = m
        .files
        .iter()
        .map(|f| format!("{} ({} bytes)", f.name, f.size))
        .collect();
    format!(
        "{} release {} from the vault: {} rows, columns {}; method {} ({}); files {}; in {}",
        if r.duplicate {
            "already had"
        } else {
            "received"
        },
        m.release,
        m.rows,
        m.columns.join(" "),
        m.method_name,
        m.method,
        files.join(", "),
        r.dir.display()
    )
}

/// TLS files and who may connect.
pub struct Listen<'a> {
    /// Address to listen on.
    pub bind: std::net::SocketAddr,
    /// Operator CA, its CRL, this server's certificate and key.
    pub tls: ingress::tls::TlsFiles<'a>,
    /// Subject (CN) the client certificate must have: the operator's egress.
    pub egress_name: String,
}

/// Runs the server until `shutdown`, or after the first stream when `once`.
pub async fn serve(
    listen: Listen<'_>,
    receiver: Arc<Receiver>,
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut config = ingress::tls::server_config_for(&listen.tls, intake_proto::RELEASE_ALPN)?;
    config.transport_config(Arc::new(ingress::tls::transport()?));
    let endpoint = quinn::Endpoint::server(config, listen.bind)
        .with_context(|| format!("listening on {}", listen.bind))?;
    eprintln!("enclave receive: listening on {}", endpoint.local_addr()?);
    let egress = Arc::new(listen.egress_name);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(4);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // Validate the source address first (one extra round trip), so a spoofed
                // source cannot make the receiver send its certificate to a victim.
                if !incoming.remote_address_validated() {
                    let _ = incoming.retry();
                    continue;
                }
                let r = Arc::clone(&receiver);
                let egress = Arc::clone(&egress);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(incoming, &egress, r, done).await {
                        eprintln!("enclave receive: connection refused: {e:#}");
                    }
                });
            }
            Some(()) = done_rx.recv(), if once => break,
            () = &mut shutdown => break,
        }
    }
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(())
}

async fn connection(
    incoming: quinn::Incoming,
    egress: &str,
    receiver: Arc<Receiver>,
    done: tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    let conn = incoming.await.context("TLS handshake")?;
    let cn = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().and_then(|c| pki::subject_cn(c).ok()))
        .unwrap_or_default();
    if cn != egress {
        conn.close(1u32.into(), b"only the operator's egress may deliver here");
        anyhow::bail!("client certificate {cn:?} is not the operator's egress ({egress})");
    }
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let reply = stream(&receiver, &mut recv, &mut send).await;
        let _ = send.write_all(&reply.encode()).await;
        let _ = send.finish();
        let _ = send.stopped().await;
        let _ = done.send(()).await;
    }
    Ok(())
}

async fn stream(
    receiver: &Receiver,
    recv: &mut quinn::RecvStream,
    send: &mut quinn::SendStream,
) -> Reply {
    let mut offer = [0u8; OFFER_LEN];
    if recv.read_exact(&mut offer).await.is_err() {
        return refused(RefusalCode::Protocol, "no offer");
    }
    let Ok(offer) = Offer::decode(&offer) else {
        return refused(RefusalCode::Protocol, "not an offer");
    };
    if offer.size > receiver.max_bytes {
        return refused(
            RefusalCode::TooLarge,
            format!(
                "{} bytes, more than the {} accepted",
                offer.size, receiver.max_bytes
            ),
        );
    }
    // No partial resume: a package is small next to what ingress takes, and is sent whole.
    if send
        .write_all(&Reply::Resume { offset: 0 }.encode())
        .await
        .is_err()
    {
        return refused(RefusalCode::Protocol, "the sender went away");
    }
    let limit = usize::try_from(offer.size + 1).unwrap_or(usize::MAX);
    let bytes = match recv.read_to_end(limit).await {
        Ok(b) => b,
        Err(e) => {
            return refused(
                RefusalCode::SizeMismatch,
                format!("reading the package: {e}"),
            )
        }
    };
    if bytes.len() as u64 != offer.size {
        return refused(
            RefusalCode::SizeMismatch,
            format!("{} bytes arrived, {} were offered", bytes.len(), offer.size),
        );
    }
    if ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref() != offer.sha256 {
        return refused(
            RefusalCode::HashMismatch,
            "the bytes do not match the offer's SHA-256",
        );
    }
    let sender = envelope::SignedHeader::read_from(&mut &bytes[..])
        .map(|h| h.header().sender_id.clone())
        .unwrap_or_default();
    match receiver.accept(&bytes) {
        Ok(r) => {
            println!("{}", summary(&r));
            Reply::Receipt {
                receipt: receiver.receipt(&offer, &sender),
                duplicate: r.duplicate,
            }
        }
        Err(refusal) => {
            eprintln!("enclave receive: refused a package: {refusal}");
            Reply::Refused { refusal }
        }
    }
}

fn refused(code: RefusalCode, message: impl Into<String>) -> Reply {
    let refusal = refusal(code, message);
    eprintln!("enclave receive: refused: {refusal}");
    Reply::Refused { refusal }
}

/// Checks and opens a package file offline (one that arrived another way), writing it as
/// the server would.
pub fn accept_file(receiver: &Receiver, path: &Path) -> Result<Received> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    receiver.accept(&bytes).map_err(|r| anyhow::anyhow!("{r}"))
}
