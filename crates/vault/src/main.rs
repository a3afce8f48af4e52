//! `vault` (管理サーバ): the isolated management server. A thin driver over the `vault`
//! library; intake over the link, storage, operators and releases arrive with issues #7–#10.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use clinical::{Format, Limits};

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
    /// Check files offline exactly as intake would: one JSON line per file
    #[command(
        long_about = "Check files offline with the intake's own strict parsers \
(R-IN-1, R-IN-2): SS-MIX2 HL7 v2.5 (ISO-2022-JP, Shift_JIS or UTF-8 as MSH-18 declares), \
JP Core FHIR R4 JSON, 特定健診 CDA submission ZIPs, UKE claims (Shift_JIS) and plain CSV.\n\n\
Directories are walked in name order (hidden entries skipped). For every file one JSON line \
goes to standard output with: file, format, doc_type, persons, records, accepted, code, \
reason, warnings. A summary goes to standard error.\n\n\
Exit status: 0 when every file is accepted, 3 when any file is refused, 1 on a usage or \
I/O error that stopped the run.\n\n\
Nothing is written anywhere and nothing is sent: institutions can run this on an export \
before submitting it."
    )]
    Check {
        /// Files or directories to check
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Parse every file as this format instead of detecting it
        /// (ssmix2, fhir-jp, cda-tokutei, uke, csv)
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<Format>,
    },
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown format {s:?}; one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vault: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            bail!("`vault serve` is not part of this build yet (tracked in issue #7)")
        }
        Command::Check { files, format } => check(&files, format),
    }
}

fn check(roots: &[PathBuf], format: Option<Format>) -> Result<ExitCode> {
    for r in roots {
        if !r.exists() {
            bail!("{} does not exist", r.display());
        }
    }
    let files = vault::check::expand(roots).context("listing files")?;
    let limits = Limits::default();
    let started = Instant::now();
    let (mut accepted, mut refused, mut records) = (0u64, 0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, f) in files.iter().enumerate() {
        let v = vault::check::check_file(f, format, &limits);
        if v.accepted {
            accepted += 1;
            records += v.records as u64;
        } else {
            refused += 1;
        }
        serde_json::to_writer(&mut out, &v).context("writing output")?;
        out.write_all(b"\n").context("writing output")?;
        if (i + 1) % 10_000 == 0 {
            eprintln!("vault check: {} of {} files…", i + 1, files.len());
        }
    }
    out.flush().context("writing output")?;
    eprintln!(
        "vault check: {} files, {accepted} accepted ({records} records), {refused} refused, {:.2} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
