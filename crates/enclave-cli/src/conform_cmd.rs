//! `enclave conform`: the host hardening profile checked against the running host (or a
//! fixture tree), each deviation printed with its requirement id (issue #11). Meant for the
//! installation check and for monitoring (`--json`, exit status).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use conform::{Profile, RootSource, Status};

/// The host role to check.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum RoleArg {
    /// 一次受信サーバ: receive-only.
    Ingress,
    /// 管理サーバ: isolated.
    Vault,
    /// 出口サーバ: send-only.
    Egress,
}

impl RoleArg {
    fn name(self) -> &'static str {
        match self {
            RoleArg::Ingress => "ingress",
            RoleArg::Vault => "vault",
            RoleArg::Egress => "egress",
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct ConformArgs {
    /// Which host this is
    #[arg(long, value_enum)]
    role: RoleArg,
    /// A site's copy of the profile (default: firmware-config/profile.toml as built in)
    #[arg(long, value_name = "TOML")]
    profile: Option<PathBuf>,
    /// Read a host tree under DIR instead of the running host: DIR/proc/sys, DIR/sys,
    /// DIR/etc, and DIR/cmd/{nft-ruleset,ss,timesync}.out for the command outputs
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print the report as JSON (for monitoring)
    #[arg(long)]
    json: bool,
    /// Treat a check that cannot be read ("unknown") as a failure too
    #[arg(long)]
    strict: bool,
}

/// Deviations were found (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Deviations(pub String);

pub(crate) fn run(a: ConformArgs) -> Result<()> {
    let profile = match &a.profile {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the profile {}", p.display()))?;
            Profile::parse(&text).with_context(|| format!("profile {}", p.display()))?
        }
        None => Profile::parse(conform::profile::BUILT_IN).context("the built-in profile")?,
    };
    let source = match &a.root {
        Some(r) if !r.is_dir() => anyhow::bail!("--root {}: no such folder", r.display()),
        Some(r) => RootSource::fixture(r),
        None => RootSource::live(),
    };
    let report = conform::check(&profile, a.role.name(), &source)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", conform::render_text(&report));
    }
    let deviations = report.count(Status::Deviation);
    let unknown = report.count(Status::Unknown);
    if deviations > 0 || a.strict && unknown > 0 {
        return Err(Deviations(format!(
            "{deviations} deviation(s){} from the profile",
            if a.strict {
                format!(" and {unknown} unknown")
            } else {
                String::new()
            }
        ))
        .into());
    }
    Ok(())
}
