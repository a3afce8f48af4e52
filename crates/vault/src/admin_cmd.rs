//! `vault admin …`: the operator's client of the running vault's operator socket, plus the
//! two things done with the service stopped (`bootstrap`, and `vault audit verify` in
//! main.rs). Every command but `login` and `bootstrap` sends the session token saved by
//! `login` (a 0600 file only its owner can read).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use vault::admin::service::Request;
use vault::admin::socket;
use zeroize::Zeroizing;

/// Where the running vault is and where the session token is kept (`vault admin`, `vault ledger`).
#[derive(Args, Debug)]
pub struct Connect {
    /// The vault's operator socket
    #[arg(
        long,
        value_name = "PATH",
        env = "VAULT_ADMIN_SOCKET",
        default_value = "/run/vault/admin.sock"
    )]
    socket: PathBuf,
    /// Where `login` keeps the session token (default: $XDG_RUNTIME_DIR/vault-admin.session,
    /// else ~/.vault-admin.session)
    #[arg(long, value_name = "FILE", env = "VAULT_ADMIN_SESSION")]
    session_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    connect: Connect,
    /// Print lists as CSV (with a header row) instead of JSON
    #[arg(long, global = true)]
    csv: bool,
    #[command(subcommand)]
    cmd: AdminCmd,
}

/// `vault ledger`: the ledger through the operator socket, as `vault admin ledger`.
#[derive(Args, Debug)]
pub struct LedgerArgs {
    #[command(flatten)]
    connect: Connect,
    /// Print as CSV (with a header row) instead of JSON
    #[arg(long)]
    csv: bool,
    /// The onward recipients instead of the releases
    #[arg(long)]
    onward: bool,
}

/// Runs `vault ledger`.
pub fn ledger(a: LedgerArgs) -> Result<ExitCode> {
    run(AdminArgs {
        connect: a.connect,
        csv: a.csv,
        cmd: AdminCmd::Ledger {
            cmd: if a.onward {
                LedgerCmd::OnwardList
            } else {
                LedgerCmd::List
            },
        },
    })
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Enrol your new account: give the one-time token your administrator handed you and
    /// choose your password (asked for twice, without echo); you receive your TOTP secret,
    /// which only you see. Then log in
    Enrol {
        /// Your user id
        #[arg(long)]
        user: String,
    },
    /// Log in with password and TOTP code (both asked for; typed without echo on a terminal,
    /// else read as two lines from standard input)
    Login {
        /// Your user id
        #[arg(long)]
        user: String,
    },
    /// End the session
    Logout,
    /// Show the session's user, role and times
    Whoami,
    /// Change your password (asks for the current one and the new one twice)
    Password,
    /// Accounts (administrator; list also auditor)
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Institution registry, R-IN-3 (add: administrator; list: administrator, operator, auditor)
    Institution {
        #[command(subcommand)]
        cmd: InstitutionCmd,
    },
    /// Media disposal records, R-OP-6 (administrator; list also auditor)
    Disposal {
        #[command(subcommand)]
        cmd: DisposalCmd,
    },
    /// Installed software with versions and hashes, R-OP-7 (administrator; list also auditor)
    Inventory {
        #[command(subcommand)]
        cmd: InventoryCmd,
    },
    /// The audit log, R-OP-3 (auditor)
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Opt-outs, R-IN-6: record one and delete the person's data at once (operator; list
    /// also auditor)
    Optout {
        #[command(subcommand)]
        cmd: OptoutCmd,
    },
    /// Anonymization methods, R-AN-3 (propose: administrator; approve: reviewer, not the
    /// proposer; list: everyone)
    Method {
        #[command(subcommand)]
        cmd: MethodCmd,
    },
    /// Releases, R-RL-1/R-RL-2 (request, cancel: operator; approve, confirm, reject:
    /// reviewers — neither the requester, and the confirmer not the approver; list, show:
    /// operator, reviewer, auditor)
    Release {
        #[command(subcommand)]
        cmd: ReleaseCmd,
    },
    /// Recipients of releases and their encryption keys (add: administrator; list: everyone)
    Recipient {
        #[command(subcommand)]
        cmd: RecipientCmd,
    },
    /// The ledger (帳簿) of releases provided and of onward recipients, R-RL-3
    Ledger {
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
    /// Accounts, sessions, registers and the audit log in figures (operator, reviewer, auditor)
    Report,
    /// Create the first administrator of a store without accounts. Run on the vault host with
    /// the service stopped; prints the one-time password and TOTP secret
    Bootstrap {
        /// Store folder
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The administrator's user id
        #[arg(long)]
        user: String,
        /// The administrator's full name
        #[arg(long)]
        name: String,
        /// The administrator's staff number (the person the account belongs to)
        #[arg(long, default_value = "")]
        staff_number: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// List accounts
    List,
    /// Create an account for a person; prints a one-time enrolment token (valid 72 hours) to
    /// hand to them in person. They set their own password and receive their own TOTP secret
    /// with `vault admin enrol`: no administrator sees either. One person holds one active
    /// account
    Add {
        /// User id: 2–32 of a-z, 0-9, '.', '_', '-'
        #[arg(long)]
        user: String,
        /// Full name
        #[arg(long)]
        name: String,
        /// The person's staff number
        #[arg(long)]
        staff_number: String,
        /// administrator, operator, reviewer or auditor
        #[arg(long)]
        role: String,
        /// A break-glass account: every login alerts, sessions last one hour
        #[arg(long)]
        break_glass: bool,
    },
    /// Disable an account (its sessions end)
    Disable {
        #[arg(long)]
        user: String,
    },
    /// Unlock an account locked by failed logins
    Unlock {
        #[arg(long)]
        user: String,
    },
    /// A new enrolment token (lost authenticator, forgotten password): the account cannot log
    /// in until its person enrols again
    Reset {
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum InstitutionCmd {
    /// Register an institution
    Add {
        /// Party id (its certificate subject and signing-key owner)
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        representative: String,
        /// How the data is obtained (agreement, notice to patients …)
        #[arg(long)]
        obtained: String,
        /// SHA-256 fingerprint of its client certificate
        #[arg(long)]
        certificate: String,
        /// Key id of its Ed25519 signing key
        #[arg(long)]
        signing_key: String,
    },
    /// List institutions
    List,
}

#[derive(Subcommand, Debug)]
enum DisposalCmd {
    /// Record the disposal of a storage medium
    Add {
        /// The medium (kind and serial number)
        #[arg(long)]
        medium: String,
        /// How (degaussed, shredded, crypto-erased …)
        #[arg(long)]
        method: String,
        /// Who witnessed it
        #[arg(long)]
        witness: String,
        /// Contractor's certificate or other reference
        #[arg(long, default_value = "")]
        reference: String,
    },
    /// List disposal records
    List,
}

#[derive(Subcommand, Debug)]
enum InventoryCmd {
    /// Record files (programs, libraries) with their SHA-256
    Scan {
        /// Files to record (on the vault host)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the inventory
    List,
}

#[derive(Subcommand, Debug)]
enum OptoutCmd {
    /// Record an opt-out: the person's records and identities are deleted from the store now,
    /// and none of theirs is stored again. Name the person by --institution and their patient
    /// id there (asked for without echo, or read from --patient-id-file; never on the command
    /// line, where it would stay in the shell's history; the vault keeps only its keyed tag),
    /// or by --pseudonym
    Add {
        /// The institution whose patient id names the person (the id is then asked for)
        #[arg(long, conflicts_with = "pseudonym")]
        institution: Option<String>,
        /// A file whose first line is the person's patient id at that institution (e.g. on
        /// removable media handed over with the request); else it is asked for
        #[arg(long, value_name = "FILE", requires = "institution")]
        patient_id_file: Option<PathBuf>,
        /// The person's pseudonym in the store
        #[arg(long, required_unless_present = "institution")]
        pseudonym: Option<String>,
        /// Who asked, and how (the institution's notice, the person at the desk …)
        #[arg(long)]
        source: String,
    },
    /// List opt-outs with their deletion records
    List,
}

#[derive(Subcommand, Debug)]
enum MethodCmd {
    /// Propose the files of a folder on the vault host (anonymization settings and
    /// hierarchies) as a method; its id is the SHA-256 over the files' names and contents
    Propose {
        /// A name people use
        #[arg(long)]
        name: String,
        /// Folder with the method's files
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Approve a proposed method (a second person)
    Approve {
        /// The method's id
        #[arg(long)]
        id: String,
    },
    /// List methods
    List,
}

#[derive(Subcommand, Debug)]
enum ReleaseCmd {
    /// Ask for a release. The vault builds the cohort's dataset from the store (opted-out
    /// persons never in it), runs the approved method and keeps the report for the reviewers
    Request {
        /// Registered recipient id
        #[arg(long)]
        recipient: String,
        /// Purpose of use
        #[arg(long)]
        purpose: String,
        /// The committee's decision id (R-RL-1)
        #[arg(long)]
        committee_decision: String,
        /// The decision's date, YYYY-MM-DD (ages in the dataset are taken on this day)
        #[arg(long)]
        committee_date: String,
        /// Conditions of use the recipient accepted
        #[arg(long)]
        conditions: String,
        /// Cohort: all, or terms joined by commas: diagnosis=E11, sex=F, age=40-74,
        /// institution=ID
        #[arg(long, default_value = "all")]
        cohort: String,
        /// Id of an approved method
        #[arg(long)]
        method: String,
    },
    /// First reviewer: approve after reading the report (`release show`)
    Approve {
        #[arg(long)]
        id: String,
    },
    /// Second reviewer: confirm; the package is then signed, sealed to the recipient and
    /// put into the egress outbox
    Confirm {
        #[arg(long)]
        id: String,
    },
    /// Operator: build a release again from the store as it is now, under its approved
    /// method — after an opt-out removed persons of its build (R-IN-6). Approval and
    /// confirmation start over
    Rebuild {
        #[arg(long)]
        id: String,
    },
    /// Reviewer: accept a release's cumulative-release findings (differencing, overlap)
    /// with the reason, which the audit log keeps; approval is refused until then
    Override {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Refuse a release
    Reject {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw your own request
    Cancel {
        #[arg(long)]
        id: String,
    },
    /// List releases
    List,
    /// Show a release, its build and its anonymization report
    Show {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum RecipientCmd {
    /// Register a recipient
    Add {
        /// Recipient id: the owner named in its encryption key
        #[arg(long)]
        id: String,
        /// The person responsible
        #[arg(long)]
        name: String,
        /// Organisation
        #[arg(long)]
        organisation: String,
        /// Its encryption public key file (`enclave keygen --kind encryption`)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Address, e-mail
        #[arg(long)]
        contact: String,
        /// Its registration number as a certified user (認定利用事業者): only such
        /// recipients may receive pseudonymized releases (仮名加工医療情報)
        #[arg(long, value_name = "NUMBER")]
        certified_user: Option<String>,
    },
    /// List recipients
    List,
}

#[derive(Subcommand, Debug)]
enum LedgerCmd {
    /// Releases provided: recipient, date, method, contents
    List,
    /// Record an onward recipient a recipient reported, with the operator's permission
    Onward {
        /// The release passed on
        #[arg(long)]
        release: String,
        /// Who received it
        #[arg(long)]
        to: String,
        /// For what
        #[arg(long)]
        purpose: String,
        /// Reference of the written permission (R-RL-4)
        #[arg(long)]
        permission: String,
        /// When the recipient reported it (YYYY-MM-DD)
        #[arg(long)]
        reported: String,
    },
    /// List onward recipients
    OnwardList,
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Show the last entries
    Show {
        /// How many
        #[arg(long, default_value_t = 50)]
        last: usize,
        /// Only this actor's
        #[arg(long)]
        user: Option<String>,
    },
    /// Verify the chain and checkpoints of the archives and the live log
    Verify,
    /// Move the log up to now into an archive file (kept; never deleted by the vault)
    Archive,
    /// Sign a checkpoint now and print it as one line, to be appended to write-once media
    /// (`vault admin audit anchor >> /media/worm/anchors.jsonl`) or printed for the
    /// auditor; `vault audit verify --anchor FILE` then catches a log cut back before it
    Anchor,
}

fn session_file(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("vault-admin.session"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vault-admin.session"))
            })
            .unwrap_or_else(|| PathBuf::from(".vault-admin.session"))
    })
}

/// Reads a secret: without echo from a terminal, else one line of standard input.
fn secret(prompt: &str) -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut line = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        eprint!("{prompt}: ");
        std::io::stderr().flush()?;
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
        let read = stdin.lock().read_line(&mut line);
        tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
        eprintln!();
        read?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    Ok(trimmed)
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

pub fn run(a: AdminArgs) -> Result<ExitCode> {
    let session = session_file(a.connect.session_file);
    let (command, map) = match a.cmd {
        AdminCmd::Bootstrap {
            store,
            user,
            name,
            staff_number,
        } => return bootstrap(&store, &user, &name, &staff_number),
        AdminCmd::Enrol { user } => {
            let token = secret("enrolment token")?;
            let password = secret("new password")?;
            let again = secret("new password again")?;
            if *password != *again {
                bail!("the two passwords differ");
            }
            let req = Request {
                command: "enrol".into(),
                token: None,
                args: args(&[("user", &user), ("token", &token), ("password", &password)]),
            };
            let resp = socket::call(&a.connect.socket, &req)?;
            if !resp.ok {
                eprintln!("vault admin: {}", resp.error.unwrap_or_default());
                return Ok(ExitCode::from(3));
            }
            println!("{}", serde_json::to_string_pretty(&resp.result)?);
            eprintln!("enrolled {user}: add the TOTP secret to your authenticator, then `vault admin login --user {user}`");
            return Ok(ExitCode::SUCCESS);
        }
        AdminCmd::Login { user } => {
            let password = secret("password")?;
            let code = secret("TOTP code")?;
            let req = Request {
                command: "login".into(),
                token: None,
                args: args(&[("user", &user), ("password", &password), ("totp", &code)]),
            };
            let resp = socket::call(&a.connect.socket, &req)?;
            if !resp.ok {
                eprintln!("vault admin: {}", resp.error.unwrap_or_default());
                return Ok(ExitCode::from(3));
            }
            let token = resp.result["token"].as_str().unwrap_or_default();
            save_token(&session, token)?;
            eprintln!(
                "logged in as {user} ({}), session {}; it ends after {} s without a command",
                resp.result["role"].as_str().unwrap_or("?"),
                resp.result["session"].as_str().unwrap_or("?"),
                resp.result["idle_timeout_s"]
            );
            if resp.result["must_change_password"] == Value::Bool(true) {
                eprintln!("change your password now: vault admin password");
            }
            return Ok(ExitCode::SUCCESS);
        }
        AdminCmd::Logout => ("logout", BTreeMap::new()),
        AdminCmd::Whoami => ("whoami", BTreeMap::new()),
        AdminCmd::Password => {
            let old = secret("current password")?;
            let new = secret("new password")?;
            let again = secret("new password again")?;
            if *new != *again {
                bail!("the two new passwords differ");
            }
            ("password", args(&[("old", &old), ("new", &new)]))
        }
        AdminCmd::User { cmd } => match cmd {
            UserCmd::List => ("user.list", BTreeMap::new()),
            UserCmd::Add {
                user,
                name,
                staff_number,
                role,
                break_glass,
            } => (
                "user.add",
                args(&[
                    ("user", &user),
                    ("name", &name),
                    ("staff_number", &staff_number),
                    ("role", &role),
                    ("break_glass", if break_glass { "true" } else { "false" }),
                ]),
            ),
            UserCmd::Disable { user } => ("user.disable", args(&[("user", &user)])),
            UserCmd::Unlock { user } => ("user.unlock", args(&[("user", &user)])),
            UserCmd::Reset { user } => ("user.reset", args(&[("user", &user)])),
        },
        AdminCmd::Institution { cmd } => match cmd {
            InstitutionCmd::Add {
                id,
                name,
                address,
                representative,
                obtained,
                certificate,
                signing_key,
            } => (
                "institution.add",
                args(&[
                    ("id", &id),
                    ("name", &name),
                    ("address", &address),
                    ("representative", &representative),
                    ("obtained", &obtained),
                    ("certificate", &certificate),
                    ("signing_key", &signing_key),
                ]),
            ),
            InstitutionCmd::List => ("institution.list", BTreeMap::new()),
        },
        AdminCmd::Disposal { cmd } => match cmd {
            DisposalCmd::Add {
                medium,
                method,
                witness,
                reference,
            } => (
                "disposal.add",
                args(&[
                    ("medium", &medium),
                    ("method", &method),
                    ("witness", &witness),
                    ("reference", &reference),
                ]),
            ),
            DisposalCmd::List => ("disposal.list", BTreeMap::new()),
        },
        AdminCmd::Release { cmd } => match cmd {
            ReleaseCmd::Request {
                recipient,
                purpose,
                committee_decision,
                committee_date,
                conditions,
                cohort,
                method,
            } => (
                "release.request",
                args(&[
                    ("recipient", &recipient),
                    ("purpose", &purpose),
                    ("committee_decision", &committee_decision),
                    ("committee_date", &committee_date),
                    ("conditions", &conditions),
                    ("cohort", &cohort),
                    ("method", &method),
                ]),
            ),
            ReleaseCmd::Approve { id } => ("release.approve", args(&[("id", &id)])),
            ReleaseCmd::Confirm { id } => ("release.confirm", args(&[("id", &id)])),
            ReleaseCmd::Rebuild { id } => ("release.rebuild", args(&[("id", &id)])),
            ReleaseCmd::Override { id, reason } => (
                "release.override",
                args(&[("id", &id), ("reason", &reason)]),
            ),
            ReleaseCmd::Reject { id, reason } => {
                ("release.reject", args(&[("id", &id), ("reason", &reason)]))
            }
            ReleaseCmd::Cancel { id } => ("release.cancel", args(&[("id", &id)])),
            ReleaseCmd::List => ("release.list", BTreeMap::new()),
            ReleaseCmd::Show { id } => ("release.show", args(&[("id", &id)])),
        },
        AdminCmd::Recipient { cmd } => match cmd {
            RecipientCmd::Add {
                id,
                name,
                organisation,
                key,
                contact,
                certified_user,
            } => {
                let text = std::fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?;
                let mut a = args(&[
                    ("id", &id),
                    ("name", &name),
                    ("organisation", &organisation),
                    ("key", text.trim()),
                    ("contact", &contact),
                ]);
                if let Some(c) = certified_user {
                    a.insert("certified_user".into(), c);
                }
                ("recipient.add", a)
            }
            RecipientCmd::List => ("recipient.list", BTreeMap::new()),
        },
        AdminCmd::Ledger { cmd } => match cmd {
            LedgerCmd::List => ("ledger.list", BTreeMap::new()),
            LedgerCmd::Onward {
                release,
                to,
                purpose,
                permission,
                reported,
            } => (
                "ledger.onward.add",
                args(&[
                    ("release", &release),
                    ("to", &to),
                    ("purpose", &purpose),
                    ("permission", &permission),
                    ("reported", &reported),
                ]),
            ),
            LedgerCmd::OnwardList => ("ledger.onward.list", BTreeMap::new()),
        },
        AdminCmd::Inventory { cmd } => match cmd {
            InventoryCmd::Scan { paths } => {
                let mut list = Vec::new();
                for p in paths {
                    let abs =
                        std::fs::canonicalize(&p).with_context(|| format!("{}", p.display()))?;
                    list.push(abs.display().to_string());
                }
                ("inventory.scan", args(&[("paths", &list.join(","))]))
            }
            InventoryCmd::List => ("inventory.list", BTreeMap::new()),
        },
        AdminCmd::Audit { cmd } => match cmd {
            AuditCmd::Show { last, user } => {
                let mut m = args(&[("last", &last.to_string())]);
                if let Some(u) = user {
                    m.insert("user".into(), u);
                }
                ("audit.show", m)
            }
            AuditCmd::Verify => ("audit.verify", BTreeMap::new()),
            AuditCmd::Archive => ("audit.archive", BTreeMap::new()),
            AuditCmd::Anchor => ("audit.anchor", BTreeMap::new()),
        },
        AdminCmd::Report => ("report", BTreeMap::new()),
        AdminCmd::Optout { cmd } => match cmd {
            OptoutCmd::Add {
                institution,
                patient_id_file,
                pseudonym,
                source,
            } => {
                let mut m = args(&[("source", &source)]);
                let patient_id = match (&institution, patient_id_file) {
                    (None, _) => None,
                    (Some(_), Some(file)) => {
                        let text = Zeroizing::new(
                            std::fs::read_to_string(&file)
                                .with_context(|| format!("reading {}", file.display()))?,
                        );
                        let id = text.lines().next().unwrap_or_default().trim().to_owned();
                        if id.is_empty() {
                            bail!("{}: the first line holds no patient id", file.display());
                        }
                        Some(id)
                    }
                    (Some(inst), None) => {
                        let id = secret(&format!("patient id at {inst}"))?;
                        let id = id.trim().to_owned();
                        if id.is_empty() {
                            bail!("no patient id given");
                        }
                        Some(id)
                    }
                };
                for (k, v) in [
                    ("institution", institution),
                    ("patient_id", patient_id),
                    ("pseudonym", pseudonym),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                ("optout.add", m)
            }
            OptoutCmd::List => ("optout.list", BTreeMap::new()),
        },
        AdminCmd::Method { cmd } => match cmd {
            MethodCmd::Propose { name, dir } => {
                let abs =
                    std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
                (
                    "method.propose",
                    args(&[("name", &name), ("dir", &abs.display().to_string())]),
                )
            }
            MethodCmd::Approve { id } => ("method.approve", args(&[("id", &id)])),
            MethodCmd::List => ("method.list", BTreeMap::new()),
        },
    };
    let token = std::fs::read_to_string(&session)
        .ok()
        .map(|t| t.trim().to_string());
    let resp = socket::call(
        &a.connect.socket,
        &Request {
            command: command.into(),
            token,
            args: map,
        },
    )?;
    if !resp.ok {
        eprintln!("vault admin: {command}: {}", resp.error.unwrap_or_default());
        return Ok(ExitCode::from(3));
    }
    if command == "logout" {
        let _ = std::fs::remove_file(&session);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match (&resp.result, a.csv) {
        // One line, as it goes onto write-once media.
        (v, _) if command == "audit.anchor" => {
            writeln!(out, "{}", v["line"].as_str().unwrap_or_default())?
        }
        (Value::Array(rows), true) => write_csv(&mut out, &resp.columns, rows)?,
        (v, _) => writeln!(out, "{}", serde_json::to_string_pretty(v)?)?,
    }
    if command == "audit.verify" && resp.result["ok"] != Value::Bool(true) {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn save_token(path: &Path, token: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("saving the session token in {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(())
}

/// A text cell made safe for spreadsheet programs: a cell starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return would be read as a formula (CSV injection: a recipient named
/// `=HYPERLINK(…)` in a ledger an auditor opens), so it gets a leading `'`, which spreadsheet
/// programs show as text and do not evaluate (issue #31, item 7; OWASP's CSV-injection rule).
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes rows of JSON objects as CSV (RFC 4180 quoting, text cells [`neutralise`]d): the
/// given columns, or the first row's keys when none are given.
pub fn write_csv(out: &mut dyn Write, columns: &[String], rows: &[Value]) -> Result<()> {
    let Some(Value::Object(first)) = rows.first() else {
        return Ok(());
    };
    let cols: Vec<&String> = if columns.is_empty() {
        first.keys().collect()
    } else {
        columns.iter().collect()
    };
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let header: Vec<String> = cols.iter().map(|c| quote(&neutralise(c))).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &row[c.as_str()] {
                Value::String(s) => quote(&neutralise(s)),
                Value::Null => String::new(),
                v => quote(&v.to_string()),
            })
            .collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

fn bootstrap(store: &Path, user: &str, name: &str, staff_number: &str) -> Result<ExitCode> {
    let master = crate::load_master(store)?;
    let first = vault::admin::service::bootstrap(
        store,
        &master,
        user,
        name,
        staff_number,
        &audit::SystemClock,
    )?;
    println!("{}", serde_json::to_string_pretty(&first)?);
    eprintln!("first administrator {user} created: hand the password and TOTP secret over in person; they are not shown again");
    Ok(ExitCode::SUCCESS)
}
