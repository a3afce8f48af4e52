//! `enclave receive`: the researcher's receive server for release packages (a thin driver
//! over the `receive` crate), or, with `--file`, the same checks on a package that arrived
//! another way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

/// Arguments of `enclave receive`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Your encryption secret key (`enclave keygen --kind encryption --owner YOUR-ID`); its
    /// owner must be the recipient id the operator registered
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The vault's release verifying key (release.pub, handed over by the operator)
    #[arg(long, value_name = "FILE")]
    vault_key: PathBuf,
    /// Your receipt signing key (`enclave keygen --kind signing`); give its .pub to the
    /// operator for egress
    #[arg(long, value_name = "FILE")]
    receipt_key: PathBuf,
    /// Where releases are written: OUT/RELEASE-ID/ (manifest.json, manifest.sig, data.csv,
    /// data.parquet, report.json)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Largest package accepted, in bytes
    #[arg(long, default_value_t = 8 << 30)]
    max_bytes: u64,
    /// Check and write one package file instead of serving (no network)
    #[arg(long, value_name = "PACKAGE", conflicts_with = "bind")]
    file: Option<PathBuf>,
    /// Address to listen on (QUIC, UDP)
    #[arg(long, required_unless_present = "file")]
    bind: Option<SocketAddr>,
    /// The operator's CA certificate: egress's client certificate must chain to it
    #[arg(long, value_name = "FILE", required_unless_present = "file")]
    ca: Option<PathBuf>,
    /// The CA's current revocation list (from the operator)
    #[arg(long, value_name = "FILE", required_unless_present = "file")]
    crl: Option<PathBuf>,
    /// This server's certificate (issued by the operator's CA under your host name)
    #[arg(long, value_name = "FILE", required_unless_present = "file")]
    cert: Option<PathBuf>,
    /// Its private key (mode 0600)
    #[arg(
        long = "tls-key",
        value_name = "FILE",
        required_unless_present = "file"
    )]
    tls_key: Option<PathBuf>,
    /// Subject of the only client certificate accepted: the operator's egress
    #[arg(long, default_value = "egress")]
    egress_name: String,
    /// Exit after the first package (accepted or refused)
    #[arg(long)]
    once: bool,
}

/// A package refused by the checks (signature, recipient, hashes): `enclave` exits 3 for it,
/// as for a rejected envelope, and 1 for local errors.
#[derive(Debug)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "package refused: {}", self.0)
    }
}

impl std::error::Error for Rejected {}

/// Runs `enclave receive`.
pub fn run(a: ReceiveArgs) -> Result<()> {
    let receiver = receive::Receiver {
        key: keystore::load_recipient_secret(&a.key).context("loading --key")?,
        vault: keystore::load_verifying_key(&a.vault_key).context("loading --vault-key")?,
        receipt_key: keystore::load_signing_key(&a.receipt_key).context("loading --receipt-key")?,
        out: a.out.clone(),
        max_bytes: a.max_bytes,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let Some(file) = &a.file {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let r = receiver
            .accept(&bytes)
            .map_err(|r| Rejected(format!("{}: {r}", file.display())))?;
        println!("{}", receive::summary(&r));
        return Ok(());
    }
    let need = |v: &Option<PathBuf>, name: &str| {
        v.clone()
            .with_context(|| format!("--{name} is needed to serve"))
    };
    let (ca, crl, cert, key) = (
        need(&a.ca, "ca")?,
        need(&a.crl, "crl")?,
        need(&a.cert, "cert")?,
        need(&a.tls_key, "tls-key")?,
    );
    let bind = a.bind.context("--bind is needed to serve")?;
    let listen = receive::Listen {
        bind,
        tls: ingress::tls::TlsFiles {
            ca_cert: &ca,
            crl: &crl,
            cert: &cert,
            key: &key,
        },
        egress_name: a.egress_name.clone(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(receive::serve(
            listen,
            Arc::new(receiver),
            a.once,
            diode_io::shutdown_signal(),
        ))
}
