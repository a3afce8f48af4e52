//! The QUIC client that pushes one envelope per stream to ingress and reads its receipt.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use intake_proto::{Offer, ReceiptBody, Refusal, Reply, SignedReceipt, OFFER_LEN};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Where and how to reach ingress.
#[derive(Clone, Debug)]
pub struct Target {
    /// Ingress address.
    pub addr: SocketAddr,
    /// Name in ingress's server certificate.
    pub server_name: String,
    /// Operator CA certificate (PEM).
    pub ca: PathBuf,
    /// This institution's client certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, 0600).
    pub key: PathBuf,
}

/// Why an upload did not produce a receipt.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Ingress refused the envelope.
    #[error("refused by ingress: {0}")]
    Refused(Refusal),
    /// The connection failed or dropped; sending again may work.
    #[error("{0}")]
    Connection(String),
    /// The receipt does not verify: ingress (or something posing as it) misbehaves.
    #[error("{0}")]
    BadReceipt(String),
    /// A local file problem.
    #[error("{0}")]
    Local(String),
    /// Ingress refused our certificate (revoked, expired, another CA) or the TLS handshake.
    #[error("{0}")]
    Tls(String),
}

impl UploadError {
    /// Whether trying again later can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            UploadError::Refused(r) => r.code.retryable(),
            UploadError::Connection(_) => true,
            UploadError::BadReceipt(_) | UploadError::Local(_) | UploadError::Tls(_) => false,
        }
    }
}

/// A verified receipt.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// As signed by ingress.
    pub signed: SignedReceipt,
    /// Its verified contents.
    pub body: ReceiptBody,
    /// Ingress had it already.
    pub duplicate: bool,
    /// Bytes sent on this attempt (less than the size when resumed).
    pub bytes_sent: u64,
}

/// Builds the QUIC client configuration: TLS 1.3 only, ring only, our CA only.
pub fn client_config(t: &Target) -> anyhow::Result<quinn::ClientConfig> {
    client_config_for(t, intake_proto::ALPN)
}

/// As [`client_config`] for another protocol carried the same way (egress uses
/// [`intake_proto::RELEASE_ALPN`] towards researchers).
pub fn client_config_for(t: &Target, alpn: &[u8]) -> anyhow::Result<quinn::ClientConfig> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in pki::load_certs(&t.ca)? {
        roots
            .add(c)
            .with_context(|| format!("{}: not a usable CA certificate", t.ca.display()))?;
    }
    let certs = pki::load_certs(&t.cert)?;
    let key = pki::load_key(&t.key)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .with_context(|| format!("{}: client certificate and key", t.cert.display()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .context("QUIC needs a TLS 1.3 cipher suite")?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    // A silent ingress (crashed, restarted) is noticed within 10 s and the upload resumed.
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into()?));
    transport.stream_receive_window((1u32 << 20).into());
    transport.send_window(32 << 20);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Turns a connection error into an upload error the institution's operator can act on.
pub fn classify(e: &quinn::ConnectionError) -> UploadError {
    use quinn::ConnectionError as E;
    match e {
        E::ConnectionClosed(c) if c.error_code.to_string().contains("crypto") => {
            UploadError::Tls(format!(
                "ingress refused the TLS handshake: is this institution's certificate revoked, expired or issued by another CA? ({c})"
            ))
        }
        E::TransportError(t) => UploadError::Tls(format!("TLS/QUIC handshake failed: {t}")),
        E::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(1) => UploadError::Tls(format!(
            "ingress refused this institution: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        _ => UploadError::Connection(explain(e)),
    }
}

/// Explains a connection error in the institution operator's terms.
pub fn explain(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => "ingress unreachable or stopped answering (timed out)".into(),
        E::ConnectionClosed(c) => format!("ingress closed the connection: {c}"),
        E::ApplicationClosed(c) => format!(
            "ingress closed the connection: {}",
            String::from_utf8_lossy(&c.reason)
        ),
        E::TransportError(t) => format!("TLS/QUIC handshake failed: {t}"),
        E::Reset => "ingress reset the connection (restarted?)".into(),
        other => format!("connection to ingress failed: {other}"),
    }
}

/// A connection to ingress.
pub struct Connection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// Bytes written to streams (progress).
    pub sent: Arc<AtomicU64>,
}

impl Connection {
    /// Connects and completes the handshake.
    pub async fn open(t: &Target, config: quinn::ClientConfig) -> Result<Self, UploadError> {
        let bind: SocketAddr = if t.addr.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| UploadError::Connection(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(t.addr, &t.server_name)
            .map_err(|e| UploadError::Connection(format!("cannot connect to {}: {e}", t.addr)))?;
        let conn = connecting.await.map_err(|e| classify(&e))?;
        Ok(Self {
            endpoint,
            conn,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether the connection has failed (reconnect before the next upload).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }

    /// Uploads the envelope at `path` (already sealed; `offer` describes it) and verifies
    /// the receipt against `ingress_key` and `institution`.
    pub async fn upload(
        &self,
        path: &Path,
        offer: &Offer,
        institution: &str,
        ingress_key: &envelope::VerifyingKey,
    ) -> Result<Receipt, UploadError> {
        let result = self
            .upload_inner(path, offer, institution, ingress_key)
            .await;
        // When the connection itself failed, its reason says more than the stream's.
        match (result, self.conn.close_reason()) {
            (Err(UploadError::Connection(_)), Some(reason)) => Err(classify(&reason)),
            (r, _) => r,
        }
    }

    async fn upload_inner(
        &self,
        path: &Path,
        offer: &Offer,
        institution: &str,
        ingress_key: &envelope::VerifyingKey,
    ) -> Result<Receipt, UploadError> {
        let conn_err = |e: quinn::ConnectionError| classify(&e);
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(conn_err)?;
        let offer_bytes: [u8; OFFER_LEN] = offer.encode();
        send.write_all(&offer_bytes)
            .await
            .map_err(|e| UploadError::Connection(format!("sending offer: {e}")))?;
        let offset = match read_reply(&mut recv).await? {
            Reply::Resume { offset } => offset,
            Reply::Receipt { receipt, duplicate } => {
                return verify(receipt, duplicate, 0, offer, institution, ingress_key)
            }
            Reply::Refused { refusal } => return Err(UploadError::Refused(refusal)),
        };
        if offset > offer.size {
            return Err(UploadError::Connection(format!(
                "ingress asked to resume at {offset}, past the end ({})",
                offer.size
            )));
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| UploadError::Local(format!("{}: {e}", path.display())))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| UploadError::Local(format!("{}: {e}", path.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = offer.size - offset;
        let mut sent = 0u64;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buf[..want])
                .await
                .map_err(|e| UploadError::Local(format!("{}: {e}", path.display())))?;
            if n == 0 {
                return Err(UploadError::Local(format!(
                    "{}: file shrank while being sent",
                    path.display()
                )));
            }
            if let Err(e) = send.write_all(&buf[..n]).await {
                // Ingress stops reading when it refuses mid-stream: read its reason.
                if let Ok(Reply::Refused { refusal }) = read_reply(&mut recv).await {
                    return Err(UploadError::Refused(refusal));
                }
                return Err(UploadError::Connection(format!("sending envelope: {e}")));
            }
            left -= n as u64;
            sent += n as u64;
            self.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = send.finish();
        match read_reply(&mut recv).await? {
            Reply::Receipt { receipt, duplicate } => {
                verify(receipt, duplicate, sent, offer, institution, ingress_key)
            }
            Reply::Refused { refusal } => Err(UploadError::Refused(refusal)),
            Reply::Resume { .. } => Err(UploadError::Connection(
                "ingress sent a second resume offset".into(),
            )),
        }
    }
}

fn verify(
    signed: SignedReceipt,
    duplicate: bool,
    bytes_sent: u64,
    offer: &Offer,
    institution: &str,
    ingress_key: &envelope::VerifyingKey,
) -> Result<Receipt, UploadError> {
    let body = signed
        .verify_for(ingress_key, offer, institution)
        .map_err(|e| UploadError::BadReceipt(e.to_string()))?;
    Ok(Receipt {
        signed,
        body,
        duplicate,
        bytes_sent,
    })
}

async fn read_reply(recv: &mut quinn::RecvStream) -> Result<Reply, UploadError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| UploadError::Connection(format!("waiting for ingress's reply: {e}")))?;
    let n = Reply::frame_len(len).map_err(|e| UploadError::Connection(e.to_string()))?;
    let mut json = vec![0u8; n];
    recv.read_exact(&mut json)
        .await
        .map_err(|e| UploadError::Connection(format!("reading ingress's reply: {e}")))?;
    Reply::decode(&json).map_err(|e| UploadError::Connection(e.to_string()))
}
