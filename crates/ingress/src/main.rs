//! `ingress` (一次受信サーバ): the receive-only server that institutions push sealed envelopes
//! to. A thin driver over the `ingress` library: `serve` runs the QUIC/mTLS listener,
//! `ledger` prints the receipt ledger, `check-envelope` applies the header check offline.
//! The diode sender towards the vault runs beside it (`diode send` on the same outbox).

#![forbid(unsafe_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use envelope::SignedHeader;

#[derive(Parser, Debug)]
#[command(
    name = "ingress",
    version,
    about = "Primary receive server (一次受信サーバ): accepts sealed envelopes from institutions",
    long_about = "Primary receive server (一次受信サーバ) of the enclave appliance.\n\n\
Institutions push envelopes sealed to the vault's key over QUIC with TLS 1.3 mutual \
authentication (R-GW-7). Ingress checks each envelope's header — signer is the institution \
named in its client certificate, size limits, known content type — but holds no key that could \
open it (R-GW-8). Accepted envelopes go one way to the vault over the diode link (R-GW-4).\n\n\
It refuses: to open any outgoing connection (R-GW-2; its only output is UDP datagrams to the \
vault's link address), envelopes whose signature does not verify against the registered \
institution keys, and any TLS version below 1.3."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check an envelope's header and signature as ingress does, without opening it
    CheckEnvelope {
        /// The envelope file.
        envelope: PathBuf,
        /// Registered institution signing keys (.pub files or a directory of them).
        #[arg(long, value_name = "PUB|DIR", required = true)]
        trust: Vec<PathBuf>,
    },
    /// Run the server: accept envelopes from institutions over QUIC with mutual TLS 1.3
    #[command(
        long_about = "Run the server: accept envelopes from institutions over QUIC with \
mutual TLS 1.3 (R-GW-7) and write each accepted one into the diode outbox towards the vault \
(OUTBOX/incoming), answering with a receipt signed by --receipt-key. Every exchange, refusals \
included, is recorded in the ledger (R-IN-3).\n\n\
A client must present a certificate issued by --ca, not expired and not on --crl (which must \
itself be current: re-sign it monthly with `enclave ca crl`), whose common name is an \
institution registered in --institutions (INSTITUTION.pub signing key, optional \
INSTITUTION.limits.json). Its envelopes must be signed by that same institution.\n\n\
Interrupted uploads are kept in --spool and resumed; an envelope already accepted is answered \
with its first receipt and not stored again. SIGINT/SIGTERM stop accepting and let uploads in \
progress end."
    )]
    Serve(Box<ServeArgs>),
    /// Print the receipt ledger (one JSON object per exchange)
    Ledger {
        /// The ledger database.
        #[arg(long, value_name = "FILE")]
        ledger: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address and UDP port to listen on.
    #[arg(long, default_value = "0.0.0.0:4433")]
    listen: SocketAddr,
    /// Operator CA certificate (PEM) that issues institution client certificates.
    #[arg(long, value_name = "PEM")]
    ca: PathBuf,
    /// The CA's current certificate revocation list (PEM).
    #[arg(long, value_name = "PEM")]
    crl: PathBuf,
    /// Ingress's TLS server certificate (PEM), issued by the same CA.
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Ed25519 key that signs receipts (`enclave keygen --kind signing --owner ingress`).
    #[arg(long, value_name = "KEY")]
    receipt_key: PathBuf,
    /// Directory of registered institutions.
    #[arg(long, value_name = "DIR")]
    institutions: PathBuf,
    /// Directory for uploads in progress (same filesystem as --outbox).
    #[arg(long, value_name = "DIR")]
    spool: PathBuf,
    /// The diode outbox towards the vault; envelopes land in OUTBOX/incoming.
    #[arg(long, value_name = "DIR")]
    outbox: PathBuf,
    /// Receipt ledger (SQLite).
    #[arg(long, value_name = "FILE")]
    ledger: PathBuf,
    /// Default largest envelope, bytes (per-institution limits files override it).
    #[arg(long, default_value_t = intake_proto::Limits::default().max_envelope_bytes)]
    max_envelope_bytes: u64,
    /// Interrupted uploads untouched this long are removed at start.
    #[arg(long, default_value_t = 72, value_name = "HOURS")]
    partial_ttl_hours: u64,
    #[command(flatten)]
    sandbox: sandbox::SandboxArgs,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ingress: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::CheckEnvelope { envelope, trust } => {
            let trusted = keystore::load_trusted(&trust)?;
            let mut file = File::open(&envelope)
                .with_context(|| format!("cannot open {}", envelope.display()))?;
            let signed = SignedHeader::read_from(&mut file)
                .with_context(|| format!("{}: refused", envelope.display()))?;
            let key = signed
                .verify_with(&trusted)
                .with_context(|| format!("{}: refused", envelope.display()))?;
            let h = signed.header();
            let actual = file.metadata()?.len();
            if actual != h.sealed_size() {
                bail!(
                    "{}: refused: file is {actual} bytes but its header announces {}",
                    envelope.display(),
                    h.sealed_size()
                );
            }
            println!(
                "accepted: envelope {} from {} (key {}), {} of {} bytes, sealed to key {}",
                h.envelope_id,
                key.owner(),
                key.key_id(),
                h.content_type,
                h.plaintext_size,
                h.recipient_key_id
            );
            Ok(())
        }
        Command::Serve(args) => {
            confine(&args)?;
            runtime()?.block_on(serve(*args))
        }
        Command::Ledger { ledger } => runtime()?.block_on(print_ledger(ledger)),
    }
}

/// Confines `ingress serve` before its runtime starts threads: it reads its certificates,
/// keys and register, writes only its spool, outbox and ledger, and may neither bind nor
/// open TCP (R-GW-2: it never initiates anything).
fn confine(a: &ServeArgs) -> Result<()> {
    for dir in [&a.spool, &a.outbox] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let policy = sandbox::Policy {
        read: vec![
            a.ca.clone(),
            a.crl.clone(),
            a.cert.clone(),
            a.key.clone(),
            a.receipt_key.clone(),
            a.institutions.clone(),
        ],
        write: vec![a.spool.clone(), a.outbox.clone()],
        tcp_connect: Vec::new(),
    }
    .write_beside(&a.ledger);
    a.sandbox
        .confine("ingress", policy)
        .context("confining the process (--no-sandbox to diagnose)")?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(a: ServeArgs) -> Result<()> {
    let defaults = intake_proto::Limits {
        max_envelope_bytes: a.max_envelope_bytes,
        ..Default::default()
    };
    let registry = ingress::Registry::load(&a.institutions, defaults)?;
    let key = keystore::load_signing_key(&a.receipt_key)?;
    let config = ingress::tls::server_config(&ingress::tls::TlsFiles {
        ca_cert: &a.ca,
        crl: &a.crl,
        cert: &a.cert,
        key: &a.key,
    })?;
    let ledger = ingress::Ledger::open(&a.ledger).await?;
    let spool = ingress::Spool::open(&a.spool, &a.outbox)?;
    let server = ingress::Server::bind(
        a.listen,
        config,
        registry.clone(),
        ledger.clone(),
        spool,
        key,
        Duration::from_secs(a.partial_ttl_hours * 3600),
    )
    .await?;
    let mut names: Vec<&str> = registry.institutions().collect();
    names.sort_unstable();
    // The one line tests and operators wait for.
    println!(
        "ingress: listening on {} for {} institution(s): {}",
        server.local_addr()?,
        names.len(),
        names.join(", ")
    );
    server.run(shutdown_signal()).await?;
    ledger.close().await;
    eprintln!("ingress: stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn print_ledger(path: PathBuf) -> Result<()> {
    if !path.exists() {
        bail!("{}: no such ledger", path.display());
    }
    let ledger = ingress::Ledger::open(&path).await?;
    for e in ledger.exchanges().await? {
        let line = serde_json::json!({
            "at_ms": e.at_ms, "started_ms": e.started_ms, "remote": e.remote,
            "institution": e.institution, "cert_serial": e.cert_serial,
            "envelope_id": e.envelope_id, "sha256": e.sha256, "size": e.size,
            "bytes_received": e.bytes_received, "outcome": e.outcome,
            "reason_code": e.reason_code, "reason": e.reason,
        });
        println!("{line}");
    }
    ledger.close().await;
    Ok(())
}
