//! `egress` (出口サーバ): the send-only server that pushes approved, sealed releases to
//! researchers. A thin driver; the diode receiver and the QUIC client arrive with issue #10.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "egress",
    version,
    about = "Exit server (出口サーバ): pushes approved, sealed releases to researchers",
    long_about = "Exit server (出口サーバ) of the enclave appliance.\n\n\
Receives approved release packages from the vault over a one-way link (R-GW-5) — packages \
already signed by the vault and sealed to each researcher's key — and pushes them to the \
researchers' receive servers over QUIC with TLS 1.3 mutual authentication.\n\n\
It refuses: to listen for any connection from outside (R-GW-3; it only connects out, and only \
to registered recipients), to send a single packet back to the vault, and to forward anything \
that is not a signed release for a registered recipient."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (diode receiver + QUIC push) — not in this build yet (issue #10)
    Serve,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("egress: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve => {
            bail!("`egress serve` is not part of this build yet (tracked in issue #10)")
        }
    }
}
