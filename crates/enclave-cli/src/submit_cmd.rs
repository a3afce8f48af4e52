//! `enclave submit`: the institution's tool that seals files for the vault and pushes them to
//! ingress, once or following a folder (`--watch`). A thin driver over the `submit` crate.

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::progress::human_bytes;
use crate::ContentTypeArg;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Ingress address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    ingress: String,
    /// Name in ingress's certificate (default: the HOST part of --ingress).
    #[arg(long)]
    server_name: Option<String>,
    /// The operator's CA certificate (PEM).
    #[arg(long, value_name = "PEM")]
    ca: PathBuf,
    /// This institution's client certificate (PEM, from `enclave ca issue --institution`).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// The vault's encryption public key: files are sealed to it.
    #[arg(long, value_name = "PUB")]
    vault: PathBuf,
    /// This institution's signing key (owner = the institution id in the certificate).
    #[arg(long, value_name = "KEY")]
    sign_with: PathBuf,
    /// Ingress's receipt public key: every receipt is verified with it.
    #[arg(long, value_name = "PUB")]
    ingress_key: PathBuf,
    /// What the files are.
    #[arg(long = "type", value_enum)]
    content_type: ContentTypeArg,
    /// State directory: journal, envelopes waiting for a receipt, receipts.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Attempts per file before giving up on a retryable error.
    #[arg(long, default_value_t = 8)]
    max_attempts: u32,
    /// Keep following the folders: send new and changed files as they settle.
    #[arg(long)]
    watch: bool,
    /// Seconds between looks at the folders in --watch mode (a file is sent once its size
    /// and modification time stayed the same over one interval).
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Files or folders to send (folders recursively; names starting with '.' are skipped).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn run(a: SubmitArgs) -> Result<()> {
    let addr = a
        .ingress
        .to_socket_addrs()
        .with_context(|| format!("--ingress {}: cannot resolve", a.ingress))?
        .next()
        .with_context(|| format!("--ingress {}: no address", a.ingress))?;
    let server_name = match a.server_name {
        Some(n) => n,
        None => a
            .ingress
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_owned())
            .unwrap_or_default(),
    };
    let signer = keystore::load_signing_key(&a.sign_with)?;
    let job = Arc::new(submit::Job {
        target: submit::Target {
            addr,
            server_name,
            ca: a.ca,
            cert: a.cert,
            key: a.key,
        },
        vault: keystore::load_recipient_public(&a.vault)?,
        signer,
        ingress_key: keystore::load_verifying_key(&a.ingress_key)?,
        content_type: a.content_type.into(),
        state: a.state,
        parallel: a.parallel,
        max_attempts: a.max_attempts.max(1),
        backoff: Duration::from_millis(500),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let mut failed_total = 0usize;
        loop {
            let files = if a.watch {
                submit::settled_files(&a.inputs, Duration::from_secs(a.interval)).await?
            } else {
                submit::list_files(&a.inputs)?
            };
            let progress = Arc::new(submit::Progress::default());
            let reporter = tokio::spawn(report(progress.clone()));
            let started = Instant::now();
            let summary = submit::run(job.clone(), files, progress.clone()).await;
            reporter.abort();
            if std::io::stderr().is_terminal() {
                eprint!("\r{:72}\r", "");
            }
            let summary = summary?;
            let secs = started.elapsed().as_secs_f64();
            let bytes = progress.bytes_done.load(Ordering::Relaxed);
            if summary.sent > 0 || !summary.failed.is_empty() || !a.watch {
                println!(
                    "sent {} file(s) ({} already at ingress), {} unchanged, {} failed; {} in {secs:.1} s; receipts in {}",
                    summary.sent,
                    summary.duplicates,
                    summary.unchanged,
                    summary.failed.len(),
                    human_bytes(bytes),
                    job.state.join("receipts").display()
                );
            }
            for (path, why) in &summary.failed {
                eprintln!("enclave: {}: {why}", path.display());
            }
            failed_total += summary.failed.len();
            if !a.watch {
                break;
            }
        }
        if failed_total > 0 {
            bail!("{failed_total} file(s) not accepted (see above)");
        }
        Ok(())
    })
}

async fn report(p: Arc<submit::Progress>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprint!(
            "\rsubmit: {}/{} files, {} of {}, {} retries   ",
            p.files_done.load(Ordering::Relaxed),
            p.files_total.load(Ordering::Relaxed),
            human_bytes(p.bytes_done.load(Ordering::Relaxed)),
            human_bytes(p.bytes_total.load(Ordering::Relaxed)),
            p.retries.load(Ordering::Relaxed)
        );
    }
}
