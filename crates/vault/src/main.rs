//! `vault` (管理サーバ): the isolated management server. A thin driver; intake, storage,
//! operators, audit and anonymization arrive with issues #7, #8, #9 and #10.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vault",
    version,
    about = "Management server (管理サーバ): opens, checks, links, stores and anonymizes records",
    long_about = "Management server (管理サーバ) of the enclave appliance.\n\n\
Receives envelopes from ingress over a one-way link (R-GW-4), opens them with the vault's \
secret key, strictly parses and re-encodes their content (R-IN-1, R-IN-2), links persons by \
keyed pseudonym (R-IN-5), stores everything encrypted (R-OP-5), and runs the anonymization \
core. Operators approve releases here; approved extracts leave only through egress over the \
second one-way link (R-GW-5).\n\n\
It refuses: any network path other than the two links and the operator network (R-GW-6), \
envelopes not signed by a registered institution, content that does not parse completely as \
its declared format (it is quarantined with a reason, never dropped), and releases without \
committee approval and two-person confirmation (R-RL-1, R-RL-2)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the vault (diode receiver, intake, operator socket) — not in this build yet (issue #7)
    Serve,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vault: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve => {
            bail!("`vault serve` is not part of this build yet (tracked in issue #7)")
        }
    }
}
