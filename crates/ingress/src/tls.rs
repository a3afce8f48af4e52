//! The TLS side of ingress: TLS 1.3 only, ring only, and a client certificate from the
//! operator's CA that is neither expired nor on the CA's revocation list (R-GW-7).
//!
//! QUIC cannot carry TLS 1.2 at all, and the rustls config is built for TLS 1.3 alone, so a
//! downgrade has nothing to negotiate. The CRL must itself be current: a stale CRL refuses
//! every client, because "we do not know what is revoked" must not mean "accept everyone".

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// Files ingress needs for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles<'a> {
    /// The operator CA certificate (trusted for client certificates).
    pub ca_cert: &'a Path,
    /// The CA's current revocation list.
    pub crl: &'a Path,
    /// Ingress's server certificate (chain), issued by the same CA.
    pub cert: &'a Path,
    /// Its private key (mode 0600).
    pub key: &'a Path,
}

/// The ring provider, the only one this appliance uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings shared by ingress: streams per connection and timeouts.
pub fn transport() -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(
        Duration::from_secs(20).try_into().context("idle timeout")?,
    ));
    // Windows sized for ≥ 1 Gbit/s on a LAN-scale round trip (a few ms).
    t.stream_receive_window((8u32 << 20).into());
    t.receive_window((32u32 << 20).into());
    t.send_window(32 << 20);
    Ok(t)
}

/// Builds the QUIC server configuration.
pub fn server_config(files: &TlsFiles<'_>) -> Result<quinn::ServerConfig> {
    server_config_for(files, intake_proto::ALPN)
}

/// As [`server_config`] for another protocol id (a researcher's `enclave receive` takes
/// [`intake_proto::RELEASE_ALPN`] from egress under the same TLS rules).
pub fn server_config_for(files: &TlsFiles<'_>, alpn: &[u8]) -> Result<quinn::ServerConfig> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in pki::load_certs(files.ca_cert)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", files.ca_cert.display()))?;
    }
    let crls = pki::load_crls(files.crl)?;
    if crls.is_empty() {
        anyhow::bail!(
            "{}: no CRL in it; run `enclave ca crl` and copy crl.pem here",
            files.crl.display()
        );
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .enforce_revocation_expiration()
        .build()
        .context("building the client-certificate verifier")?;
    let certs = pki::load_certs(files.cert)?;
    let key = pki::load_key(files.key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| format!("{}: server certificate and key", files.cert.display()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("QUIC needs a TLS 1.3 cipher suite")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport()?));
    Ok(config)
}
