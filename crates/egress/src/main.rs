//! `egress` (出口サーバ): the send-only server that pushes approved, sealed releases to
//! researchers. A thin driver over the `egress` library: the one-way link's receiver on the
//! internal interface, and the push loop towards registered recipients.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "egress",
    version,
    about = "Exit server (出口サーバ): pushes approved, sealed releases to researchers",
    long_about = "Exit server (出口サーバ) of the enclave appliance.\n\n\
Receives approved release packages from the vault over a one-way link (R-GW-5) — packages \
already signed by the vault and sealed to each researcher's key — and pushes them to the \
researchers' `enclave receive` servers over QUIC with TLS 1.3 mutual authentication.\n\n\
It refuses: to listen for any connection from outside (R-GW-3; it only connects out, and only \
to registered recipients), to send a single packet back to the vault, and to forward anything \
that is not a release signed by the vault and sealed to the registered recipient's key.\n\n\
Delivery records (one JSON line per attempt, with the recipient's signed receipt) are kept in \
STATE/deliveries.jsonl; delivered packages move to STATE/delivered/, refused ones to \
STATE/refused/. Operators read these on the egress host; nothing travels back to the vault."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct PushArgs {
    /// Folder the link's receiver writes packages into
    #[arg(long, value_name = "DIR")]
    inbox: PathBuf,
    /// Egress's records: deliveries.jsonl, delivered/, refused/
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Registered recipients (JSON: {"recipients": [{id, address, server_name, key,
    /// receipt_key}]})
    #[arg(long, value_name = "FILE")]
    recipients: PathBuf,
    /// The vault's release verifying key (STORE/keys/release.pub)
    #[arg(long, value_name = "FILE")]
    vault_key: PathBuf,
    /// Operator CA certificate: recipients' server certificates must chain to it
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// Egress's client certificate (PEM)
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Its private key (PEM, mode 0600)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: the link's receiver plus the push loop, until SIGTERM
    Serve {
        /// Address of the one-way link's receiver (internal interface only)
        #[arg(long)]
        bind: SocketAddr,
        /// Link key file (from `diode keygen`)
        #[arg(long, value_name = "FILE")]
        link_key: PathBuf,
        /// The link's event log (JSON lines)
        #[arg(long, value_name = "FILE")]
        events: PathBuf,
        /// How often the inbox is scanned, in milliseconds
        #[arg(long, default_value_t = 500)]
        scan_ms: u64,
        #[command(flatten)]
        push: PushArgs,
        #[command(flatten)]
        sandbox: sandbox::SandboxArgs,
    },
    /// Try every package in the inbox once (no link receiver) and exit: status 0 when
    /// nothing is left waiting for a retry
    Push {
        #[command(flatten)]
        push: PushArgs,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("egress: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(p: PushArgs) -> Result<egress::Config> {
    let recipients = egress::load_recipients(&p.recipients)?;
    let vault = keystore::load_verifying_key(&p.vault_key).context("loading --vault-key")?;
    for f in [&p.ca, &p.cert, &p.key] {
        if !f.exists() {
            anyhow::bail!("{}: no such file", f.display());
        }
    }
    std::fs::create_dir_all(&p.inbox).with_context(|| format!("creating {}", p.inbox.display()))?;
    std::fs::create_dir_all(&p.state).with_context(|| format!("creating {}", p.state.display()))?;
    Ok(egress::Config {
        inbox: p.inbox,
        state: p.state,
        recipients,
        vault,
        ca: p.ca,
        cert: p.cert,
        key: p.key,
    })
}

/// Confines `egress serve` before the runtime starts threads: it reads its keys,
/// certificates and recipient register, writes only its inbox, state and link events, and
/// may neither bind nor open TCP (its QUIC pushes are UDP; R-GW-3).
fn confine(
    sandbox: &sandbox::SandboxArgs,
    link_key: &Path,
    events: &Path,
    p: &PushArgs,
) -> Result<()> {
    for dir in [&p.inbox, &p.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let policy = sandbox::Policy {
        read: vec![
            link_key.to_path_buf(),
            p.recipients.clone(),
            p.vault_key.clone(),
            p.ca.clone(),
            p.cert.clone(),
            p.key.clone(),
        ],
        write: vec![p.inbox.clone(), p.state.clone()],
        tcp_connect: Vec::new(),
    }
    .write_beside(events);
    sandbox
        .confine("egress", policy)
        .context("confining the process (--no-sandbox to diagnose)")?;
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Serve {
        link_key,
        events,
        push,
        sandbox,
        ..
    } = &cli.command
    {
        confine(sandbox, link_key, events, push)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Push { push } => {
            let cfg = config(push)?;
            let mut pending = egress::Pending::default();
            let waiting = rt.block_on(egress::push_once(&cfg, &mut pending))?;
            if waiting > 0 {
                eprintln!("egress: {waiting} package(s) wait for another attempt");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            bind,
            link_key,
            events,
            scan_ms,
            push,
            sandbox: _,
        } => {
            let cfg = config(push)?;
            let link = keystore::load_link_key(&link_key).context("loading the link key")?;
            let opts = diode_io::RecvOptions {
                bind,
                inbox: cfg.inbox.clone(),
                events,
                key: *link.key,
                config: diode::ReceiverConfig::default(),
                stats_interval: Duration::from_secs(10),
            };
            // The receiver gets a thread and runtime of its own, as in the vault: pushing to
            // recipients never delays its socket loop, and the loop can raise its own thread's
            // priority (docs/diode.md, "Thread priorities"), which a shared worker could not.
            let receiver =
                diode_io::ReceiverThread::spawn(opts).context("starting the link receiver")?;
            rt.block_on(async {
                let mut pending = egress::Pending::default();
                let stop = diode_io::shutdown_signal();
                tokio::pin!(stop);
                eprintln!(
                    "egress: receiving on {bind}, {} recipient(s) registered",
                    cfg.recipients.len()
                );
                loop {
                    if receiver.is_finished() {
                        // Stopped by itself (its error is reported below): nothing more will
                        // arrive, so pushing on would only hide the failure.
                        break;
                    }
                    if let Err(e) = egress::push_once(&cfg, &mut pending).await {
                        eprintln!("egress: error: {e:#}");
                    }
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_millis(scan_ms)) => {}
                    }
                }
            });
            receiver.stop().context("link receiver")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
