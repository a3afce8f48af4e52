//! `vault` (管理サーバ): the isolated management server. A thin driver over the `vault`
//! library; intake over the link, storage, operators and releases arrive with issues #7–#10.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use clinical::{Format, Limits};

mod admin_cmd;

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
    /// Run the vault: the ingress link's receiver and intake in one service
    #[command(
        long_about = "Run the vault's receiving side as one service: the one-way link \
receiver (as `diode recv`: it only ever reads its socket, R-GW-4) writes complete objects into \
INBOX, and intake (as `vault intake run`) takes them into the store. Stops on SIGINT/SIGTERM \
after the batch in hand; killing it loses nothing (the receiver's state and the store are \
both crash-safe). The operator socket and releases arrive with issues #8 and #10."
    )]
    Serve {
        /// Address the link receiver binds (the vault's link interface)
        #[arg(long)]
        bind: std::net::SocketAddr,
        /// The ingress → vault link key file
        #[arg(long, value_name = "FILE")]
        link_key: PathBuf,
        /// Receiver event log (JSON lines)
        #[arg(long, value_name = "FILE")]
        events: PathBuf,
        /// Inbox folder (the receiver writes, intake empties)
        #[arg(long, value_name = "DIR")]
        inbox: PathBuf,
        /// Store folder (made by `vault init`)
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Metadata database: `sqlite` (STORE/meta.sqlite) or a postgres:// URL (its
        /// password in ~/.pgpass or PGPASSWORD, not in the URL)
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
        /// The vault's secret key (envelopes are sealed to it)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Folder of registered institutions' public signing keys (*.pub)
        #[arg(long, value_name = "DIR")]
        institutions: PathBuf,
        /// Most envelopes per committed batch
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Serve the operator socket (`vault admin …`) at this path
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// A uid allowed to connect to the operator socket (repeat for several; default: the
        /// vault's own uid). Everyone must still log in with password and TOTP code
        #[arg(long = "operator-uid", value_name = "UID")]
        operator_uids: Vec<u32>,
        /// Seconds without a command that end an operator session
        #[arg(long, value_name = "SECS", default_value_t = 900)]
        session_idle: u64,
        /// Longest operator session, in seconds (break-glass sessions: at most one hour)
        #[arg(long, value_name = "SECS", default_value_t = 28_800)]
        session_max: u64,
        /// Wait after a failed login, in seconds; it doubles with each further failure, and
        /// the fifth in a row locks the account
        #[arg(long, value_name = "SECS", default_value_t = 1)]
        login_delay: u64,
        /// Outbox of the one-way link to egress (R-GW-5): confirmed release packages are
        /// put into DIR/incoming for `diode send` to carry. Without it releases can be
        /// requested and reviewed but not confirmed
        #[arg(long, value_name = "DIR")]
        egress_outbox: Option<PathBuf>,
        /// The register kept apart from the store (every opt-out and every release
        /// provided, authenticated under the master key): what a restore of an older backup
        /// must apply again. Default: STORE.register beside the store folder; keep it out of
        /// the store folder and back it up on its own (docs/operations.md)
        #[arg(long, value_name = "FILE")]
        register: Option<PathBuf>,
        #[command(flatten)]
        sandbox: sandbox::SandboxArgs,
    },
    /// Operators: log in with two factors and run commands on the running vault (accounts,
    /// institutions, disposal, inventory, audit, reports)
    #[command(
        long_about = "The operator's client of the running vault (`vault serve --admin-socket`). \
`vault admin login --user ID` asks for the password and the TOTP code (both factors in one \
request, R-OP-2) and saves a session token readable only by you; every other command sends it. \
Sessions end after 15 minutes without a command and after 8 hours (break-glass: 1 hour).\n\n\
What each role may run is fixed (least privilege): administrator — user, institution add, \
disposal, inventory, method propose, recipient add; operator — opt-outs, release request and \
cancel, ledger onward, institution and method lists, report; reviewer — method approval, \
release approve/confirm/reject (never their own request; the confirmer is not the approver), \
report; auditor — audit show/verify/archive and every list, report. Refusals are audited like \
everything else (R-OP-3). Releases: docs/releases.md.\n\n\
Exit status: 0 done, 3 refused (the reason on standard error), 1 on a usage or connection error."
    )]
    Admin(admin_cmd::AdminArgs),
    /// The ledger (帳簿, R-RL-3): releases provided, or with --onward the onward recipients
    /// reported (operator, reviewer, auditor; same as `vault admin ledger list`)
    Ledger(admin_cmd::LedgerArgs),
    /// The audit log, offline: verify the chain and signed checkpoints of a store's log and
    /// archives
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Back up the whole encrypted state to a folder (offline media), verified after writing
    #[command(
        long_about = "Back up the store at STORE into the new folder TO: every encrypted \
record batch, the sealed quarantine, the sealed operator state (accounts and registers), the \
audit log and its archives, public keys and the metadata tables as data (R-OP-8). Everything \
is read back and checked against manifest.json, which is written last and holds each file's \
SHA-256 and the state digest.\n\n\
The secret keys (keys/*.key) stay out unless --include-keys: keep them on separate offline \
media, since whoever has both can read everything. Run it with `vault serve` stopped: it opens \
the store as its only writer and waits up to 30 s for one."
    )]
    Backup {
        /// Store folder
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// New or empty folder to write the backup into
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Metadata database: `sqlite` (STORE/meta.sqlite) or a postgres:// URL
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
        /// Put the secret keys in the backup too
        #[arg(long)]
        include_keys: bool,
    },
    /// Restore a backup into a new store folder and an empty database; checks the state digest
    #[command(
        long_about = "Restore the backup FROM into STORE (a new folder, or one holding only \
keys/ put back from the key backup) and an empty metadata database (SQLite or PostgreSQL, \
whichever the backup came from). Every file is checked against the manifest first; afterwards \
the restored store's state digest must equal the one the backup recorded, else it fails. \
The backup must be authentic (manifest.mac verifies under the store's master key).\n\n\
Then the register kept apart (--register, STORE.register of the original store) is applied \
again: every opt-out registered since the backup is deleted again, every release provided \
since is back as provided; a restore never brings an opted-out person back. A restore that \
fails removes what it wrote."
    )]
    Restore {
        /// The backup folder
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Store folder to restore into
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Metadata database to restore into (must be empty)
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
        /// The store's register kept apart (STORE.register of the store backed up): every
        /// opt-out and release provided since the backup is applied again. Required: without
        /// it an old backup would bring opted-out persons back
        #[arg(long, value_name = "FILE")]
        register: PathBuf,
    },
    /// Print the state digest of a store (SHA-256 over its tables and files, keys aside)
    Digest {
        /// Store folder
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Metadata database
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
    },
    /// Create a store: its folder and its master, link and audit keys (secrets 0600, never overwritten)
    #[command(
        long_about = "Create a store folder with keys/master.key (encrypts every record \
batch and identity at rest, R-OP-5), keys/link.key (the HMAC key of the pseudonyms, R-IN-5) \
and keys/audit.key with audit.pub (signs the audit log's checkpoints, R-OP-3). \
The first two are secrets: back them up offline; without master.key the store cannot be read, and a \
different link.key gives every person a new pseudonym. Refuses a folder that already has keys."
    )]
    Init {
        /// Store folder to create
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
    },
    /// Intake: take envelopes from the ingress link's inbox into the store; show its status
    Intake {
        #[command(subcommand)]
        cmd: IntakeCmd,
    },
    /// Check files offline exactly as intake would: one JSON line per file
    #[command(
        long_about = "Check files offline with the intake's own strict parsers \
(R-IN-1, R-IN-2): SS-MIX2 HL7 v2.5 (ISO-2022-JP, Shift_JIS or UTF-8 as MSH-18 declares; one message, or an HL7 batch file of messages), \
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

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify a store's audit archives and live log; report every edited, missing, inserted
    /// or reordered entry and every checkpoint whose signature fails, by file and line
    #[command(
        long_about = "Verify STORE/admin/audit-archive/*.log (oldest first) and \
STORE/admin/audit.log as one history: every entry's SHA-256 chain link, every checkpoint's \
Ed25519 signature, and that each file begins where the one before ended. Works on a copy too \
(give --store the copy). The public key is STORE/keys/audit.pub unless --key names a copy kept \
elsewhere, which is better: whoever can rewrite the log could replace the key beside it.\n\n\
Exit status: 0 when everything verifies, 3 when anything does not."
    )]
    Verify {
        /// Store folder (or a copy of it)
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The audit public key to trust (default STORE/keys/audit.pub)
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Print the reports as JSON
        #[arg(long)]
        json: bool,
        /// Checkpoints kept on write-once media (`vault admin audit anchor` lines): each must
        /// verify with the key and be held by the log, so a log cut back to an earlier
        /// checkpoint or replaced is caught even by someone without the vault's keys
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum IntakeCmd {
    /// Take envelopes from INBOX: open, check, parse, link, store; quarantine what fails
    #[command(
        long_about = "Take every envelope in the diode receiver's inbox: open it with \
the vault key, accept only signers in the institution registry, parse it strictly as its \
declared content type, link its persons by keyed pseudonym, and commit it to the encrypted \
store in batches. A refused envelope is kept sealed in STORE/quarantine with its reason; \
nothing is dropped. An inbox file is removed only after its envelope is committed, so the \
command can be killed at any point and restarted: nothing is lost or stored twice.\n\n\
Runs until SIGINT/SIGTERM (finishing the batch in hand), or with --once until the inbox is \
empty."
    )]
    Run {
        /// The diode receiver's inbox folder
        #[arg(long, value_name = "DIR")]
        inbox: PathBuf,
        /// Store folder (made by `vault init`)
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Metadata database: `sqlite` (STORE/meta.sqlite) or a postgres:// URL (its
        /// password in ~/.pgpass or PGPASSWORD, not in the URL)
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
        /// The vault's secret key (envelopes are sealed to it)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Folder of registered institutions' public signing keys (*.pub)
        #[arg(long, value_name = "DIR")]
        institutions: PathBuf,
        /// Stop when the inbox is empty instead of waiting for more
        #[arg(long)]
        once: bool,
        /// Most envelopes per committed batch
        #[arg(long, default_value_t = 2000)]
        batch: usize,
    },
    /// Counts per institution and format, the quarantine list with reasons, throughput
    Status {
        /// Store folder
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Metadata database: `sqlite` (STORE/meta.sqlite) or a postgres:// URL (its
        /// password in ~/.pgpass or PGPASSWORD, not in the URL)
        #[arg(long, value_name = "URL", env = "VAULT_DATABASE", hide_env_values = true, default_value = "sqlite", value_parser = parse_database)]
        database: vault_store::Database,
        /// Print one JSON object instead of tables
        #[arg(long)]
        json: bool,
    },
}

fn parse_database(s: &str) -> Result<vault_store::Database, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown format {s:?}; one of {}", names.join(", "))
    })
}

// Parsing builds and drops many small trees (JSON values, segments): glibc's allocator spent
// about a quarter of the FHIR parse time consolidating and unlinking chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Serve {
            bind,
            link_key,
            events,
            inbox,
            store,
            database,
            key,
            institutions,
            batch,
            admin_socket,
            operator_uids,
            session_idle,
            session_max,
            login_delay,
            egress_outbox,
            register,
            sandbox,
        } => {
            let register = register.unwrap_or_else(|| vault::admin::register::default_path(&store));
            if egress_outbox.is_some() && admin_socket.is_none() {
                bail!("--egress-outbox needs --admin-socket: releases are confirmed by operators");
            }
            std::fs::create_dir_all(&inbox)
                .with_context(|| format!("creating {}", inbox.display()))?;
            // Confined before any thread starts. It reads anywhere (operators propose
            // methods from folders of their choosing on this host) but writes only its
            // store, inbox, events, operator socket folder and egress outbox, opens no TCP
            // except to a PostgreSQL server it was given, and runs no program.
            if let Some(dir) = &egress_outbox {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut policy = sandbox::Policy {
                read: vec!["/".into()],
                write: vec![store.clone(), inbox.clone()],
                tcp_connect: match &database {
                    vault_store::Database::Postgres(url) => {
                        sandbox::postgres_port(url).into_iter().collect()
                    }
                    vault_store::Database::Sqlite => Vec::new(),
                },
            }
            .write_beside(&events);
            if let Some(s) = &admin_socket {
                policy = policy.write_beside(s);
            }
            policy = policy.write_beside(&register);
            policy.write.extend(egress_outbox.iter().cloned());
            sandbox
                .confine("vault", policy)
                .context("confining the process (--no-sandbox to diagnose)")?;
            let link = keystore::load_link_key(&link_key).context("loading the link key")?;
            let opts = diode_io::RecvOptions {
                bind,
                inbox: inbox.clone(),
                events,
                key: *link.key,
                config: diode::ReceiverConfig::default(),
                stats_interval: std::time::Duration::from_secs(10),
            };
            // The receiver gets its own thread and runtime, so intake's parsing never delays
            // the socket loop.
            let receiver =
                diode_io::ReceiverThread::spawn(opts).context("starting the link receiver")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            // The store may be dropped last by the operator service; a PostgreSQL connection
            // needs a runtime around it when it is dropped.
            let _in_runtime = rt.enter();
            let stop = stop_on_signal()?;
            // One writer of the store, shared by intake and the operators' opt-outs.
            let opened = Arc::new(rt.block_on(open_store(&store, &database, false))?);
            let operators = match &admin_socket {
                Some(path) => {
                    let mut policies = vault::admin::service::Policies::default();
                    policies.session.idle = session_idle;
                    policies.session.absolute = session_max;
                    policies.lockout.base_delay = login_delay;
                    let access = vault::admin::service::StoreAccess {
                        store: Arc::clone(&opened),
                        runtime: rt.handle().clone(),
                        linker: linkage::Linker::new(load_link(&store)?),
                    };
                    let ops = start_operators(
                        &rt,
                        &store,
                        path,
                        operator_uids,
                        policies,
                        Some(access),
                        &register,
                    )?;
                    if let Some(dir) = egress_outbox {
                        std::fs::create_dir_all(dir.join("incoming"))
                            .with_context(|| format!("creating {}/incoming", dir.display()))?;
                        ops.service
                            .lock()
                            .map_err(|_| anyhow::anyhow!("operator service lock poisoned"))?
                            .set_egress_outbox(dir);
                    }
                    let symmetric = [
                        store.join("keys/master.key"),
                        store.join("keys/link.key"),
                        link_key.clone(),
                    ];
                    record_keys(&ops, &symmetric, &key)?;
                    Some(ops)
                }
                None => None,
            };
            let cmd = IntakeCmd::Run {
                inbox,
                store,
                database,
                key,
                institutions,
                once: false,
                batch,
            };
            let svc = operators.as_ref().map(|o| &o.service);
            let intake_result = rt.block_on(intake_until(
                cmd,
                Some(&receiver),
                svc,
                Some(opened),
                Some(stop),
            ));
            let recv_result = receiver.stop();
            if let Some(o) = operators {
                o.stop(&rt)?;
            }
            recv_result.context("link receiver")?;
            intake_result.map(|()| ExitCode::SUCCESS)
        }
        Command::Check { files, format } => check(&files, format),
        Command::Admin(args) => admin_cmd::run(args),
        Command::Ledger(args) => admin_cmd::ledger(args),
        Command::Audit {
            cmd:
                AuditCmd::Verify {
                    store,
                    key,
                    json,
                    anchor,
                },
        } => audit_verify(&store, key.as_deref(), anchor.as_deref(), json),
        Command::Init { store } => init(&store).map(|()| ExitCode::SUCCESS),
        Command::Backup {
            store,
            to,
            database,
            include_keys,
        } => block_on(async {
            let st = open_store(&store, &database, false).await?;
            // It also authenticates the backup (manifest.mac).
            let master = load_master(&store)?;
            let m = vault::backup::backup(&store, &st, &master, &to, include_keys).await?;
            let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
            println!(
                "backup of store {} in {}: {} files ({bytes} bytes), tables {}, keys {}; verified; state digest {}",
                m.store_id,
                to.display(),
                m.files.len(),
                m.tables.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "),
                if m.keys_included { "included" } else { "not included" },
                m.state_digest
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Restore {
            from,
            store,
            database,
            register,
        } => block_on(async {
            let r = vault::backup::restore(&from, &store, &database, &register).await?;
            println!(
                "restored store {} into {}: {} files; state digest {} equals the backup's",
                r.manifest.store_id,
                store.display(),
                r.manifest.files.len(),
                r.digest
            );
            let ids: Vec<String> = r
                .reapplied
                .optouts
                .iter()
                .map(|n| format!("#{n}"))
                .collect();
            println!(
                "register {}: re-applied {} opt-out(s) registered since the backup ({}; {} records deleted again) and {} release(s) provided since ({})",
                register.display(),
                r.reapplied.optouts.len(),
                if ids.is_empty() { "none".into() } else { ids.join(", ") },
                r.reapplied.records,
                r.reapplied.provided.len(),
                if r.reapplied.provided.is_empty() { "none".into() } else { r.reapplied.provided.join(", ") },
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Digest { store, database } => block_on(async {
            let st = open_store(&store, &database, true).await?;
            println!("{}", vault::backup::digest(&store, &st).await?);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Intake { cmd } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(intake(cmd)).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn init(store: &Path) -> Result<()> {
    let keys = store.join("keys");
    if keys.join("master.key").exists() || keys.join("link.key").exists() {
        bail!(
            "{} already has keys; refusing to overwrite them",
            keys.display()
        );
    }
    std::fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    let rng = ring::rand::SystemRandom::new();
    let master = keystore::generate_link_key("vault-master", &keys.join("master.key"), &rng)?;
    let link = keystore::generate_link_key("vault-link", &keys.join("link.key"), &rng)?;
    let audit = keystore::generate_pair(
        keystore::PairKind::Signing,
        "vault-audit",
        &keys.join("audit"),
        &rng,
    )?;
    let release = keystore::generate_pair(
        keystore::PairKind::Signing,
        "vault",
        &keys.join("release"),
        &rng,
    )?;
    println!(
        "store {}: master key id {master}, link key id {link}, audit key id {}, release key id {}",
        store.display(),
        audit.key_id,
        release.key_id
    );
    // The register kept apart starts empty beside the store, so that every restore has one
    // to apply (even a store that never had an opt-out).
    let register = vault::admin::register::default_path(store);
    if !register.exists() {
        vault_store::write_synced(&register, b"")
            .with_context(|| format!("creating {}", register.display()))?;
    }
    println!("back up {}/master.key and link.key offline now: without them the store cannot be read or linked", keys.display());
    println!(
        "the register {} is kept apart from the store: back it up on its own; `vault restore --register` needs it",
        register.display()
    );
    println!("keep a copy of {} away from the vault: `vault audit verify --key` checks the log against it", audit.public_path.display());
    println!(
        "give {} to egress and to every recipient: release packages are signed with it",
        release.public_path.display()
    );
    Ok(())
}

fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(f: F) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(f)
}

/// The pseudonyms' HMAC key of a store.
/// The store's master key (`STORE/keys/master.key`).
fn load_master(store: &Path) -> Result<vault_store::MasterKey> {
    let master = keystore::load_link_key(&store.join("keys/master.key"))
        .context("loading the master key (run `vault init` first)")?;
    vault_store::MasterKey::new(*master.key).context("master key")
}

fn load_link(store: &Path) -> Result<linkage::LinkKey> {
    let link =
        keystore::load_link_key(&store.join("keys/link.key")).context("loading the link key")?;
    Ok(linkage::LinkKey::new(*link.key))
}

/// Opens the store as its writer (`reader` false: intake, serve) or as a reader (status).
async fn open_store(
    store: &Path,
    database: &vault_store::Database,
    reader: bool,
) -> Result<vault_store::Store> {
    let master = load_master(store)?;
    let opened = if reader {
        vault_store::Store::open_reader(store, master, database).await
    } else {
        vault_store::Store::open_with(store, master, database).await
    };
    opened.with_context(|| format!("opening store {} ({database:?})", store.display()))
}

async fn intake(cmd: IntakeCmd) -> Result<()> {
    intake_until(cmd, None, None, None, None).await
}

/// The operator service and its socket task, running beside intake in `vault serve`.
struct Operators {
    service: Arc<Mutex<vault::admin::service::Service>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Operators {
    fn stop(self, rt: &tokio::runtime::Runtime) -> Result<()> {
        let _ = self.stop.send(());
        rt.block_on(self.task).context("operator socket task")??;
        let mut svc = self
            .service
            .lock()
            .map_err(|_| anyhow::anyhow!("the operator service panicked"))?;
        svc.close()
    }
}

fn start_operators(
    rt: &tokio::runtime::Runtime,
    store: &Path,
    socket: &Path,
    mut uids: Vec<u32>,
    policies: vault::admin::service::Policies,
    access: Option<vault::admin::service::StoreAccess>,
    register: &Path,
) -> Result<Operators> {
    let master = load_master(store)?;
    let service = vault::admin::service::Service::open(
        store,
        master,
        policies,
        Box::new(audit::SystemClock),
        access,
    )
    .context("starting the operator service")?;
    // Before the socket answers anyone: no opt-out or release without the register.
    let mut service = service;
    service
        .attach_register(register)
        .context("opening the register kept apart")?;
    if uids.is_empty() {
        uids.push(nix::unistd::geteuid().as_raw());
    }
    let service = Arc::new(Mutex::new(service));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = socket.to_owned();
    let svc = Arc::clone(&service);
    let task = rt.spawn(async move {
        vault::admin::socket::serve(&path, uids, svc, async {
            let _ = stop_rx.await;
        })
        .await
    });
    eprintln!("vault: operator socket at {}", socket.display());
    Ok(Operators {
        service,
        stop,
        task,
    })
}

/// Audits which keys `vault serve` loaded (symmetric key files and the vault's envelope key),
/// by key id.
fn record_keys(ops: &Operators, symmetric: &[PathBuf], envelope_key: &Path) -> Result<()> {
    let mut svc = ops
        .service
        .lock()
        .map_err(|_| anyhow::anyhow!("the operator service panicked"))?;
    for file in symmetric {
        let k =
            keystore::load_link_key(file).with_context(|| format!("loading {}", file.display()))?;
        svc.record_key_use(&file.display().to_string(), &keystore::link_key_id(&k.key));
    }
    let k = keystore::load_recipient_secret(envelope_key)
        .with_context(|| format!("loading {}", envelope_key.display()))?;
    svc.record_key_use(
        &envelope_key.display().to_string(),
        &k.public().key_id().to_string(),
    );
    Ok(())
}

fn audit_verify(
    store: &Path,
    key: Option<&Path>,
    anchor: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let key_path = key.map_or_else(|| store.join("keys/audit.pub"), Path::to_owned);
    let key = keystore::load_verifying_key(&key_path)
        .with_context(|| format!("loading the audit key {}", key_path.display()))?;
    let reports = vault::admin::service::verify_store(store, key.clone())
        .with_context(|| format!("reading the audit log of {}", store.display()))?;
    // Beyond the chain: does the log still hold what was written? Against the head the vault
    // sealed (when this host has the master key) and the anchors an auditor kept.
    let mut beyond: Vec<(String, Result<String, String>)> = Vec::new();
    if store.join("keys/master.key").exists() {
        let master = load_master(store)?;
        let got = vault::admin::service::verify_heads(store, &master)?;
        beyond.push((
            "head".into(),
            match got {
                None => Ok(
                    "none recorded yet (a new store, or one from before heads were kept)".into(),
                ),
                Some(Ok(seq)) => Ok(format!("holds entry {seq}, the last the vault recorded")),
                Some(Err(why)) => Err(why),
            },
        ));
    } else {
        beyond.push((
            "head".into(),
            Ok("not checked: no keys/master.key here (check a copy with --anchor)".into()),
        ));
    }
    if let Some(anchor) = anchor {
        let anchors = std::fs::read(anchor)
            .with_context(|| format!("reading the anchors {}", anchor.display()))?;
        let files = vault::admin::service::read_series(store)?;
        let series: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_slice()))
            .collect();
        let count = anchors
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        let problems = audit::check_anchors(&series, &anchors, &[key]);
        beyond.push((
            format!("anchors {}", anchor.display()),
            if problems.is_empty() {
                Ok(format!("{count} anchored checkpoint(s) held by the log"))
            } else {
                Err(problems.join("; "))
            },
        ));
    }
    let ok = reports.iter().all(|(_, r)| r.ok()) && beyond.iter().all(|(_, r)| r.is_ok());
    if json {
        let v: Vec<serde_json::Value> = reports
            .iter()
            .map(|(f, r)| serde_json::json!({"file": f, "report": r}))
            .collect();
        let checks: Vec<serde_json::Value> = beyond
            .iter()
            .map(|(what, r)| match r {
                Ok(m) => serde_json::json!({"check": what, "ok": true, "message": m}),
                Err(m) => serde_json::json!({"check": what, "ok": false, "message": m}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"ok": ok, "files": v, "checks": checks})
            )?
        );
    } else {
        for (file, r) in &reports {
            println!(
                "{file}: {} entries ({}–{}), {} signed checkpoint(s), {} entries after the last one, {}",
                r.entries,
                r.first_seq.unwrap_or(0),
                r.last_seq.unwrap_or(0),
                r.checkpoints,
                r.unsigned_tail,
                if r.ok() { "OK".to_string() } else { format!("{} PROBLEM(S)", r.problems.len()) }
            );
            for p in &r.problems {
                println!("  {file}:{p}");
            }
        }
        for (what, r) in &beyond {
            match r {
                Ok(m) => println!("{what}: {m}, OK"),
                Err(m) => println!("{what}: PROBLEM: {m}"),
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// A flag set on SIGTERM or SIGINT. The handlers are registered before this returns (it
/// must run inside the runtime), so a signal at any later point of start-up — even before the
/// operator socket has answered anyone — stops the vault cleanly instead of killing it.
fn stop_on_signal() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = Arc::clone(&flag);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        set.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(flag)
}

/// Runs an intake command; with `receiver`, also stops when that thread has ended (a
/// receiver that failed to bind must not leave intake running on an inbox nobody fills).
async fn intake_until(
    cmd: IntakeCmd,
    receiver: Option<&diode_io::ReceiverThread>,
    operators: Option<&Arc<Mutex<vault::admin::service::Service>>>,
    opened: Option<Arc<vault_store::Store>>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Result<()> {
    match cmd {
        IntakeCmd::Run {
            inbox,
            store,
            database,
            key,
            institutions,
            once,
            batch,
        } => {
            let st = match opened {
                Some(st) => st,
                None => Arc::new(open_store(&store, &database, false).await?),
            };
            let mut linker = vault::intake::linker_from(&st, load_link(&store)?).await?;
            let cfg = vault::intake::IntakeConfig {
                inbox,
                vault_key: keystore::load_recipient_secret(&key)?,
                institutions: keystore::load_trusted(&[institutions])?,
                batch_envelopes: batch,
                max_envelope_bytes: 300 << 20,
            };
            let stop = match stop {
                Some(flag) => flag,
                None => stop_on_signal()?,
            };
            let started = Instant::now();
            let total = vault::intake::run(&cfg, &st, &mut linker, std::time::Duration::from_millis(500), |p| {
                if p.stored + p.quarantined + p.duplicates > 0 {
                    eprintln!(
                        "vault intake: stored {} envelopes ({} records), quarantined {}, duplicates {}",
                        p.stored, p.records, p.quarantined, p.duplicates
                    );
                    if let Some(svc) = operators {
                        if let Ok(mut svc) = svc.lock() {
                            svc.record_intake(p.stored, p.records, p.quarantined, p.duplicates);
                        }
                    }
                }
                stop.load(std::sync::atomic::Ordering::SeqCst)
                    || (once && *p == vault::intake::Pass::default())
                    || receiver.is_some_and(|r| r.is_finished())
            })
            .await?;
            eprintln!(
                "vault intake: done: stored {} envelopes ({} records), quarantined {}, duplicates {} in {:.1} s",
                total.stored,
                total.records,
                total.quarantined,
                total.duplicates,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        IntakeCmd::Status {
            store,
            database,
            json,
        } => {
            let st = open_store(&store, &database, true).await?;
            let s = st.status().await?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
                return Ok(());
            }
            println!(
                "{:<14} {:<12} {:<12} {:>10} {:>12}",
                "institution", "format", "status", "envelopes", "records"
            );
            for (i, f, st, n, r) in &s.by_institution {
                println!("{i:<14} {f:<12} {st:<12} {n:>10} {r:>12}");
            }
            println!(
                "batches {}, records {}, persons {}, {:.0} records/s while taking",
                s.batches, s.records, s.persons, s.records_per_s
            );
            println!("quarantine: {} envelopes", s.quarantine.len());
            for (id, inst, code, reason) in &s.quarantine {
                println!("  {id} from {inst}: {code}: {reason}");
            }
            Ok(())
        }
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
