//! `diode`: the command an operator runs on each end of a one-way link (ingress → vault,
//! vault → egress). A thin driver over `diode-io`; the protocol is the `diode` crate's.
//! The receiving side never sends a single packet (R-GW-4, R-GW-5).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use diode::{ReceiverConfig, SenderConfig};
use diode_io::{Inbox, Outbox, RecvOptions, Retention, SendOptions};
use ring::rand::SecureRandom;

#[derive(Parser, Debug)]
#[command(
    name = "diode",
    version,
    about = "Send and receive files over a one-way UDP link (data diode)",
    long_about = "Send and receive files over a one-way UDP link: ingress → vault (R-GW-4) and \
vault → egress (R-GW-5). Nothing ever travels back, so the sender adds forward error \
correction and repeats what the receiver needs, and the receiver lists what it could not \
recover in a gap report (INBOX/.gap-report) for the operator to re-send with `diode resend`.\n\n\
It refuses: datagrams not authenticated with the link key (dropped and counted), objects \
whose keyed hash does not match, and putting any partial object under a final name. The \
receiver never transmits.",
    after_help = "Typical use:\n  \
diode keygen --link ingress-vault --out link.key     (copy link.key to both ends offline)\n  \
diode recv --bind 10.0.1.2:7000 --inbox /srv/inbox --key-file link.key --events recv.jsonl\n  \
diode send --to 10.0.1.2:7000 --outbox /srv/outbox --key-file link.key --rate-mbit 2000\n  \
cat /srv/inbox/.gap-report; diode resend --outbox /srv/outbox --ids 1200-1210"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a link key (32 random bytes, file mode 0600) for both ends of one link
    Keygen {
        /// Name of the link, e.g. ingress-vault.
        #[arg(long)]
        link: String,
        /// Key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Send every file dropped into OUTBOX/incoming/, in order, and keep them for re-sending
    #[command(
        long_about = "Send every file that appears in OUTBOX/incoming/ (rename complete \
files in; names starting with '.' are ignored). Each file gets the next 64-bit object id and \
moves to OUTBOX/queue/, then to OUTBOX/sent/ once its last datagram has left; sent files are \
kept for --retain-days / --retain-count so they can be re-sent. A restarted sender sends again \
whatever it had not finished, and never skips an id."
    )]
    Send {
        /// Receiver address (the only destination this host may send to).
        #[arg(long)]
        to: SocketAddr,
        /// Local address to send from.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// Outbox directory.
        #[arg(long)]
        outbox: PathBuf,
        /// Link key file (from `diode keygen`).
        #[arg(long)]
        key_file: PathBuf,
        /// Pacing rate in Mbit/s of datagrams (0 = unpaced; pace below what the receiver
        /// and the link can take).
        #[arg(long, default_value_t = 1000)]
        rate_mbit: u64,
        /// Recovery shards per block, in percent of its data shards (covers scattered loss).
        #[arg(long, default_value_t = 10)]
        fec_percent: u16,
        /// MTU of the link (576..=9000): every datagram fits one IPv4 packet of this size.
        /// 9000 needs jumbo frames on both interfaces and any switch between; it sends a
        /// sixth as many datagrams, which is most of the CPU either end spends. The receiver
        /// takes any size up to 9000 without being told.
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Blocks whose shards are interleaved (spreads bursts of loss).
        #[arg(long, default_value_t = 16)]
        interleave: usize,
        /// Burst of consecutive lost datagrams every group survives on top of --fec-percent.
        #[arg(long, default_value_t = 32)]
        burst: u16,
        /// Delete sent files older than this many days.
        #[arg(long, default_value_t = 30)]
        retain_days: u64,
        /// Keep at most this many sent files.
        #[arg(long, default_value_t = 1_000_000)]
        retain_count: usize,
        /// Event log (JSON lines).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Exit once everything queued has been sent.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        sandbox: sandbox::SandboxArgs,
    },
    /// Receive objects into INBOX, log events, keep the gap report
    #[command(
        long_about = "Receive objects into INBOX as {id}-{name}, each renamed in only \
after every block arrived and its keyed hash matched. Writes a JSON-lines event log \
(object_complete with name/size/sha256, also for objects a killed receiver had renamed in \
but not logged, marked recovered; object_failed, gaps, stats), INBOX/.gap-report (ids \
the sender has sent that are missing here, for `diode resend`) and INBOX/.diode-state (ids \
delivered, so a restart neither forgets nor re-delivers). Never sends anything."
    )]
    Recv {
        /// Address to receive on.
        #[arg(long)]
        bind: SocketAddr,
        /// Inbox directory.
        #[arg(long)]
        inbox: PathBuf,
        /// Link key file.
        #[arg(long)]
        key_file: PathBuf,
        /// Event log (JSON lines).
        #[arg(long)]
        events: PathBuf,
        /// An incomplete object with no datagram for this long has failed (becomes a gap).
        #[arg(long, default_value_t = 3000)]
        idle_timeout_ms: u64,
        /// Largest object accepted, in GiB.
        #[arg(long, default_value_t = 1024)]
        max_object_gib: u64,
        /// Seconds between stats events.
        #[arg(long, default_value_t = 10)]
        stats_secs: u64,
        #[command(flatten)]
        sandbox: sandbox::SandboxArgs,
    },
    /// Put sent objects back into the queue (ids from the receiver's gap report)
    Resend {
        /// Outbox directory.
        #[arg(long)]
        outbox: PathBuf,
        /// Ids: `A-B`, `A`, or a comma-separated list of them.
        #[arg(long)]
        ids: String,
    },
    /// Show an inbox's delivered ids and gap report
    Status {
        /// Inbox directory.
        #[arg(long)]
        inbox: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diode: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Confines `diode send` / `diode recv` before their runtime starts: the link key, the
/// outbox or inbox and the event log; no TCP, no programs (R-GW-4, R-GW-5).
fn confine(args: &sandbox::SandboxArgs, policy: sandbox::Policy) -> Result<()> {
    args.confine("diode", policy)
        .context("confining the process (--no-sandbox to diagnose)")?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

use diode_io::shutdown_signal;

fn load_key(path: &Path) -> Result<[u8; 32]> {
    let secret = keystore::load_link_key(path)?;
    Ok(*secret.key)
}

fn parse_ids(text: &str) -> Result<Vec<(u64, u64)>> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: u64 = a
                .parse()
                .with_context(|| format!("bad id {a:?} in --ids"))?;
            let b: u64 = b
                .parse()
                .with_context(|| format!("bad id {b:?} in --ids"))?;
            if a > b {
                bail!("range {a}-{b} is backwards");
            }
            Ok((a, b))
        })
        .collect()
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Keygen { link, out } => {
            let rng = ring::rand::SystemRandom::new();
            let id = keystore::generate_link_key(&link, &out, &rng)?;
            println!("link key:  {} (mode 0600)", out.display());
            println!("key id:    {id}");
            println!(
                "Copy the file to the other end of the link offline; both ends print this key id."
            );
            Ok(())
        }
        Cmd::Send {
            to,
            bind,
            outbox,
            key_file,
            rate_mbit,
            fec_percent,
            mtu,
            interleave,
            burst,
            retain_days,
            retain_count,
            events,
            once,
            sandbox,
        } => {
            // Bad options are refused before anything is created.
            let shard_size = diode::shard_size_for_mtu(mtu).ok_or_else(|| {
                anyhow::anyhow!(
                    "--mtu {mtu}: must be {}..={}",
                    diode::MIN_MTU,
                    diode::MAX_MTU
                )
            })?;
            let key = load_key(&key_file)?;
            std::fs::create_dir_all(&outbox)
                .with_context(|| format!("cannot create {}", outbox.display()))?;
            let mut policy = sandbox::Policy {
                read: vec![key_file.clone()],
                write: vec![outbox.clone()],
                tcp_connect: Vec::new(),
            };
            if let Some(e) = &events {
                policy = policy.write_beside(e);
            }
            confine(&sandbox, policy)?;
            let rate = rate_mbit.saturating_mul(1_000_000) / 8;
            let config = SenderConfig {
                shard_size,
                overhead_percent: fec_percent,
                interleave,
                burst_datagrams: burst,
                rate_bytes_per_sec: rate,
                // At least 2 ms of sending per refill: the timer's granularity is 1 ms.
                burst_bytes: (rate / 500).max(256 * 1024),
                ..SenderConfig::default()
            };
            config.validate()?;
            let mut session = [0u8; 8];
            ring::rand::SystemRandom::new()
                .fill(&mut session)
                .map_err(|_| anyhow::anyhow!("random source failed"))?;
            let opts = SendOptions {
                to,
                bind,
                outbox,
                key,
                config,
                scan_interval: Duration::from_millis(500),
                retention: Retention {
                    max_age: Duration::from_secs(retain_days.saturating_mul(86_400)),
                    max_count: retain_count,
                },
                exit_when_idle: once,
                events,
                session: u64::from_be_bytes(session),
            };
            let summary = runtime()?.block_on(diode_io::run_sender(opts, shutdown_signal()))?;
            eprintln!(
                "diode: sent {} objects in {} datagrams ({} bytes)",
                summary.objects, summary.datagrams, summary.bytes
            );
            Ok(())
        }
        Cmd::Recv {
            bind,
            inbox,
            key_file,
            events,
            idle_timeout_ms,
            max_object_gib,
            stats_secs,
            sandbox,
        } => {
            let key = load_key(&key_file)?;
            std::fs::create_dir_all(&inbox)
                .with_context(|| format!("cannot create {}", inbox.display()))?;
            confine(
                &sandbox,
                sandbox::Policy {
                    read: vec![key_file.clone()],
                    write: vec![inbox.clone()],
                    tcp_connect: Vec::new(),
                }
                .write_beside(&events),
            )?;
            let opts = RecvOptions {
                bind,
                inbox,
                events,
                key,
                config: ReceiverConfig {
                    idle_timeout: Duration::from_millis(idle_timeout_ms),
                    max_object_size: max_object_gib.saturating_mul(1 << 30),
                    ..ReceiverConfig::default()
                },
                stats_interval: Duration::from_secs(stats_secs.max(1)),
            };
            runtime()?.block_on(diode_io::run_receiver(opts, shutdown_signal()))?;
            Ok(())
        }
        Cmd::Resend { outbox, ids } => {
            let outbox = Outbox::open(&outbox)?;
            for (a, b) in parse_ids(&ids)? {
                let (moved, gone) = outbox.resend(a, b)?;
                println!("re-queued {} object(s) in {a}-{b}", moved.len());
                if !gone.is_empty() {
                    println!(
                        "no longer in the outbox (removed by retention), cannot re-send: {gone:?}"
                    );
                }
            }
            Ok(())
        }
        Cmd::Status { inbox } => {
            let state = Inbox::load_state(&inbox)?;
            println!("delivered: {:?}", state.delivered.ranges());
            println!("floor:     {:?}", state.floor);
            let gaps = std::fs::read_to_string(inbox.join(".gap-report")).unwrap_or_default();
            if gaps.trim().is_empty() {
                println!("gaps:      none");
            } else {
                println!("gaps (re-send these with `diode resend --ids`):\n{gaps}");
            }
            Ok(())
        }
    }
}
