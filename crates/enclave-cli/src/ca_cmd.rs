//! `enclave ca`: the operator's certificate authority for institution client certificates
//! and ingress's server certificate (R-GW-7). A thin driver over the `pki` crate.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use time::OffsetDateTime;

#[derive(Args, Debug)]
pub struct CaArgs {
    /// The CA directory (ca.key.pem, ca.crt.pem, issued.jsonl, revoked.jsonl, crl.pem).
    #[arg(long, value_name = "DIR", global = true, default_value = "ca")]
    dir: PathBuf,
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a new CA (refuses if one exists in --dir)
    Init {
        /// Name in the CA certificate.
        #[arg(long, default_value = "jp-med-enclave operator CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate and key: --institution ID (client) or --server NAME (ingress)
    Issue {
        /// Institution id (医療機関コード); must equal the owner of its signing key.
        #[arg(long, conflicts_with = "server", required_unless_present = "server")]
        institution: Option<String>,
        /// Issue ingress's server certificate under this name (also its DNS name).
        #[arg(long)]
        server: Option<String>,
        /// Extra DNS names for a server certificate (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Validity in days from now.
        #[arg(long, default_value_t = 397)]
        days: i64,
        /// Start of validity instead of now (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        not_before: Option<String>,
        /// End of validity instead of now + --days (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        not_after: Option<String>,
        /// Where to write NAME.crt.pem and NAME.key.pem (0600).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Revoke a certificate by serial and re-sign the CRL (copy crl.pem to ingress)
    Revoke {
        /// Serial (hex, as `enclave ca list` shows it).
        #[arg(long)]
        serial: String,
        /// Why (recorded in revoked.jsonl).
        #[arg(long)]
        reason: String,
    },
    /// Re-sign the CRL (it is valid 30 days; ingress refuses everyone with a stale one)
    Crl,
    /// List issued certificates and their status
    List,
}

fn date(text: &str) -> Result<OffsetDateTime> {
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() != 3 {
        bail!("{text:?}: expected YYYY-MM-DD");
    }
    let y: i32 = parts[0]
        .parse()
        .with_context(|| format!("{text:?}: year"))?;
    let m: u8 = parts[1]
        .parse()
        .with_context(|| format!("{text:?}: month"))?;
    let d: u8 = parts[2].parse().with_context(|| format!("{text:?}: day"))?;
    let month = time::Month::try_from(m).with_context(|| format!("{text:?}: month"))?;
    let day = time::Date::from_calendar_date(y, month, d).with_context(|| format!("{text:?}"))?;
    Ok(day.midnight().assume_utc())
}

pub fn run(args: CaArgs) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match args.command {
        CaCommand::Init { name, days } => {
            pki::Ca::init(&args.dir, &name, now, days)?;
            println!(
                "CA created in {}: give ca.crt.pem to ingress and to every institution; ca.key.pem stays here",
                args.dir.display()
            );
        }
        CaCommand::Issue {
            institution,
            server,
            dns,
            days,
            not_before,
            not_after,
            out,
        } => {
            let ca = pki::Ca::open(&args.dir)?;
            let nb = not_before.as_deref().map(date).transpose()?.unwrap_or(now);
            let na = match not_after.as_deref() {
                Some(d) => date(d)?,
                None => nb + time::Duration::days(days),
            };
            let (subject, role, names) = match (institution, server) {
                (Some(i), None) => (i, pki::Role::Client, Vec::new()),
                (None, Some(s)) => {
                    let mut names = vec![s.clone()];
                    names.extend(dns);
                    (s, pki::Role::Server, names)
                }
                _ => bail!("give exactly one of --institution and --server"),
            };
            let issued = ca.issue(&subject, role, &names, nb, na)?;
            let (crt, key) = pki::write_issued(&out, &subject, &issued)?;
            println!(
                "issued serial {} to {subject} ({:?}): {} and {}",
                issued.record.serial,
                role,
                crt.display(),
                key.display()
            );
        }
        CaCommand::Revoke { serial, reason } => {
            let ca = pki::Ca::open(&args.dir)?;
            ca.revoke(&serial, &reason, now)?;
            println!(
                "revoked {serial}; copy {} to ingress and restart it",
                args.dir.join("crl.pem").display()
            );
        }
        CaCommand::Crl => {
            let ca = pki::Ca::open(&args.dir)?;
            let path = ca.write_crl(now)?;
            println!(
                "CRL re-signed, valid {} days: copy {} to ingress and restart it",
                pki::CRL_VALIDITY_DAYS,
                path.display()
            );
        }
        CaCommand::List => {
            let ca = pki::Ca::open(&args.dir)?;
            let revoked = ca.revoked()?;
            for r in ca.issued()? {
                let status = if revoked.iter().any(|x| x.serial == r.serial) {
                    "revoked"
                } else if r.not_after < now.unix_timestamp() {
                    "expired"
                } else {
                    "valid"
                };
                println!(
                    "{}  {:<8} {:<7} {}",
                    r.serial,
                    format!("{:?}", r.role).to_lowercase(),
                    status,
                    r.subject
                );
            }
        }
    }
    Ok(())
}
