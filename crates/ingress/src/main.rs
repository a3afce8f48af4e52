//! `ingress` (一次受信サーバ): the receive-only server that institutions push sealed envelopes
//! to. A thin driver; the QUIC/mTLS listener and the diode sender arrive with issue #6 and
//! issue #5. What exists now is the header check ingress applies to every envelope.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Run the server (QUIC listener + diode sender) — not in this build yet (issue #6)
    Serve,
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
        Command::Serve => {
            bail!("`ingress serve` is not part of this build yet (tracked in issue #6)")
        }
    }
}
