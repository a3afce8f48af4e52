//! The operator service: one request in, one response out, every request audited. Login
//! takes both factors in one request and gives one verdict (two factors, not two steps); every
//! other command needs a live session whose role the command table permits (least privilege,
//! R-OP-1, R-OP-2); refusals are audited like successes (R-OP-3) and the abnormal ones raise
//! alerts (R-OP-4).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use accounts::{Command, LockoutPolicy, PasswordPolicy, Role, Session, SessionPolicy, Totp};
use audit::{AuditLog, Record, Stamp};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::alerts::{self, Alert, Alerts};
use super::register;
use super::state::{
    save_head, Account, BuildInfo, Disposal, Institution, Onward, Recipient, Software, State,
};
use crate::releases;
use release::{Event, State as Stage};

/// One request on the operator socket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    /// `login`, or a command name of [`accounts::Command`].
    pub command: String,
    /// The session token (every command but `login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The command's arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// The answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the command ran.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it gave.
    #[serde(default)]
    pub result: Value,
    /// For lists: the columns in their natural order (JSON objects do not keep one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

impl Response {
    fn ok(result: Value, columns: &[&str]) -> Self {
        Self {
            ok: true,
            error: None,
            result,
            columns: columns.iter().map(|c| (*c).to_string()).collect(),
        }
    }

    /// A refusal with its reason.
    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            result: Value::Null,
            columns: Vec::new(),
        }
    }
}

/// The rules the service applies.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// Password rules.
    pub password: PasswordPolicy,
    /// Lockout rules.
    pub lockout: LockoutPolicy,
    /// Session lengths.
    pub session: SessionPolicy,
}

/// What a command did, for the audit entry.
struct Done {
    result: Value,
    columns: &'static [&'static str],
    target: String,
    records: u64,
    /// Extra fields of the audit entry.
    detail: BTreeMap<String, String>,
}

impl Done {
    fn new(result: Value) -> Self {
        Self {
            result,
            columns: &[],
            target: String::new(),
            records: 0,
            detail: BTreeMap::new(),
        }
    }

    fn list(result: Value, columns: &'static [&'static str]) -> Self {
        Self {
            result,
            columns,
            target: String::new(),
            records: 0,
            detail: BTreeMap::new(),
        }
    }

    fn on(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }
}

/// The running store, for opt-outs: shared with intake (one writer), with the runtime it
/// runs on and the pseudonyms' key (to find a person by an institution's patient id).
pub struct StoreAccess {
    /// The store, opened as its writer.
    pub store: std::sync::Arc<vault_store::Store>,
    /// The runtime the store's database pool lives on.
    pub runtime: tokio::runtime::Handle,
    /// A linker with the pseudonyms' HMAC key (only its `local_tag` is used).
    pub linker: linkage::Linker,
}

/// The operator service of one store.
pub struct Service {
    access: Option<StoreAccess>,
    store: PathBuf,
    master: vault_store::MasterKey,
    state: State,
    audit: AuditLog,
    alerts: Alerts,
    sessions: HashMap<[u8; 32], Session>,
    failures: Vec<u64>,
    policies: Policies,
    clock: Box<dyn Stamp>,
    rng: SystemRandom,
    /// A password hash made at start with the policy's cost, checked for unknown user ids.
    decoy: accounts::StoredPassword,
    /// Where confirmed release packages go: the outbox of the one-way link to egress.
    egress_outbox: Option<PathBuf>,
    /// The register kept apart from the store ([`register`]).
    register: Option<register::Register>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Service({}, {} sessions)",
            self.store.display(),
            self.sessions.len()
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// The audit log's file, its archive folder and its signing key of a store.
pub fn audit_paths(store: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        store.join("admin/audit.log"),
        store.join("admin/audit-archive"),
        store.join("keys/audit"),
    )
}

/// How long an enrolment token works, in hours.
pub const ENROLMENT_HOURS: u64 = 72;

/// Checkpoint interval of the audit log, in entries.
pub const CHECKPOINT_EVERY: u64 = 64;

/// Opens the store's audit log, creating its signing key the first time (stores made before
/// the log existed get one then). A log that fails verification raises an alert and gets an
/// entry saying so; the service goes on, so the damage stays visible and is not written over.
///
/// Before anything is appended, the log must still hold the last entry the vault wrote (the
/// head sealed after every entry) and the one the sealed state was saved with: a log cut
/// back, emptied or deleted, or a state newer than its log, raises `audit.truncated` and
/// refuses to start (R-OP-3; issue #31, item 2).
pub fn open_audit(
    store: &Path,
    master: &vault_store::MasterKey,
    state: &State,
    alerts: &Alerts,
    clock: &dyn Stamp,
) -> anyhow::Result<AuditLog> {
    let (log, _, key_prefix) = audit_paths(store);
    std::fs::create_dir_all(store.join("admin"))?;
    let key_file = key_prefix.with_extension("key");
    if !key_file.exists() {
        keystore::generate_pair(
            keystore::PairKind::Signing,
            "vault-audit",
            &key_prefix,
            &SystemRandom::new(),
        )?;
    }
    let key = keystore::load_signing_key(&key_file)?;
    if let Some(Err(why)) = check_log(store, master, state)? {
        let (time, _) = clock.now();
        alerts.raise(&Alert {
            time,
            kind: "audit.truncated".into(),
            user: String::new(),
            detail: why.clone(),
        });
        anyhow::bail!(
            "the audit log does not hold what the vault wrote: {why}. The vault does not \
             start on it; restore the log from its archive or backup and check it with \
             `vault audit verify --anchor` (docs/operations.md, \"Audit log\")"
        );
    }
    let opened = AuditLog::open(&log, key, CHECKPOINT_EVERY)?;
    let mut audit = opened.log;
    let (time, clock_status) = clock.now();
    if opened.torn_bytes > 0 {
        audit.append(
            Record::new(&time, clock_status, "vault", "audit.recovered", "ok")
                .detail("torn_bytes", opened.torn_bytes.to_string()),
        )?;
    }
    if let Some(first) = opened.report.problems.first() {
        alerts.raise(&Alert {
            time: time.clone(),
            kind: "audit.verify_failed".into(),
            user: String::new(),
            detail: format!(
                "{} problem(s) in {}; first: {first}",
                opened.report.problems.len(),
                log.display()
            ),
        });
        audit.append(
            Record::new(&time, clock_status, "vault", "audit.verify", "failed")
                .detail("problems", opened.report.problems.len().to_string())
                .detail("first", first.to_string()),
        )?;
    }
    save_head(store, master, &audit.head())?;
    Ok(audit)
}

/// Whether the store's audit log (archives and live log) still holds the heads the vault
/// recorded: the one sealed after the last entry and the one the sealed state was saved with.
/// `None` when the store records none yet (a new store, or one from before heads were
/// kept); else the highest seq recorded, or what is wrong. A state that records a head while
/// the head file is gone, or a live log that is gone, is wrong in itself. A torn last line
/// (a crash mid-write) is not an entry and is skipped: a head is sealed only after its line.
fn check_log(
    store: &Path,
    master: &vault_store::MasterKey,
    state: &State,
) -> anyhow::Result<Option<Result<u64, String>>> {
    let file = super::state::load_head(store, master)?;
    let heads: Vec<(&str, &audit::Head)> = [
        ("head file", file.as_ref()),
        ("state", state.audit_head.as_ref()),
    ]
    .into_iter()
    .filter_map(|(which, h)| h.map(|h| (which, h)))
    .filter(|(_, h)| h.seq > 0)
    .collect();
    let Some(top) = heads.iter().map(|(_, h)| h.seq).max() else {
        return Ok(None);
    };
    if file.is_none() {
        return Ok(Some(Err(format!(
            "{} is missing while the sealed state records audit entry {top}",
            super::state::head_path(store).display()
        ))));
    }
    let (log, _, _) = audit_paths(store);
    if !log.exists() {
        return Ok(Some(Err(format!(
            "{} is missing, but the vault wrote {top} entries to it",
            log.display()
        ))));
    }
    let files = read_series(store)?;
    let series: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_slice()))
        .collect();
    for (which, head) in heads {
        if let Err(why) = audit::holds_head(&series, head) {
            return Ok(Some(Err(format!("{why} (per the {which})"))));
        }
    }
    Ok(Some(Ok(top)))
}

/// Checks a store's audit log against the heads the vault sealed (for `vault audit verify`
/// with the master key at hand). `Ok(None)` when the store records none yet.
pub fn verify_heads(
    store: &Path,
    master: &vault_store::MasterKey,
) -> anyhow::Result<Option<Result<u64, String>>> {
    check_log(store, master, &State::load(store, master)?)
}

impl Service {
    /// Opens the service of the store at `store`.
    pub fn open(
        store: &Path,
        master: vault_store::MasterKey,
        policies: Policies,
        clock: Box<dyn Stamp>,
        access: Option<StoreAccess>,
    ) -> anyhow::Result<Self> {
        let state = State::load(store, &master)?;
        let alerts = Alerts::new(store);
        let audit = open_audit(store, &master, &state, &alerts, clock.as_ref())?;
        let rng = SystemRandom::new();
        let decoy = policies
            .password
            .accept("", "Decoy-Kiri-0x7Q", &[], &rng)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|v| anyhow::anyhow!("decoy password refused: {v:?}"))?;
        let mut svc = Self {
            decoy,
            egress_outbox: None,
            register: None,
            access,
            store: store.to_owned(),
            master,
            state,
            audit,
            alerts,
            sessions: HashMap::new(),
            failures: Vec::new(),
            policies,
            clock,
            rng,
        };
        svc.record("vault", "", "service.start", "ok", "", 0, BTreeMap::new())?;
        Ok(svc)
    }

    /// Sets the outbox of the one-way link to egress (R-GW-5); without one, releases can be
    /// requested and reviewed but not confirmed.
    pub fn set_egress_outbox(&mut self, dir: PathBuf) {
        self.egress_outbox = Some(dir);
    }

    /// Signs a checkpoint (at shutdown) so that the log's tail is covered.
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.record("vault", "", "service.stop", "ok", "", 0, BTreeMap::new())?;
        self.audit.checkpoint(self.clock.as_ref())?;
        save_head(&self.store, &self.master, &self.audit.head())?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        actor: &str,
        session: &str,
        action: &str,
        outcome: &str,
        target: &str,
        records: u64,
        detail: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let (time, clock) = self.clock.now();
        let mut r = Record::new(&time, clock, actor, action, outcome)
            .session(session)
            .target(target)
            .records(records);
        r.detail = detail;
        self.audit.append(r)?;
        save_head(&self.store, &self.master, &self.audit.head())?;
        Ok(())
    }

    fn alert(&self, kind: &str, user: &str, detail: String) {
        let (time, _) = self.clock.now();
        self.alerts.raise(&Alert {
            time,
            kind: kind.into(),
            user: user.into(),
            detail,
        });
    }

    /// Records a committed intake pass (the software's own action, R-OP-3).
    pub fn record_intake(&mut self, stored: u64, records: u64, quarantined: u64, duplicates: u64) {
        let detail = BTreeMap::from([
            ("envelopes".to_string(), stored.to_string()),
            ("quarantined".to_string(), quarantined.to_string()),
            ("duplicates".to_string(), duplicates.to_string()),
        ]);
        if let Err(e) = self.record("vault", "", "intake.batch", "ok", "", records, detail) {
            eprintln!("vault: audit: {e:#}");
        }
    }

    /// Records that the service loaded a key (R-OP-5: a trail of key use), by file and key id,
    /// never by content.
    pub fn record_key_use(&mut self, file: &str, key_id: &str) {
        let detail = BTreeMap::from([("key_id".to_string(), key_id.to_string())]);
        if let Err(e) = self.record("vault", "", "key.load", "ok", file, 0, detail) {
            eprintln!("vault: audit: {e:#}");
        }
    }

    /// Records a connection refused because of its peer's credentials.
    pub fn peer_refused(&mut self, uid: Option<u32>) {
        let who = uid.map_or("unknown".to_string(), |u| u.to_string());
        self.alert(
            "peer.refused",
            "",
            format!("operator socket refused a peer with uid {who}"),
        );
        let detail = BTreeMap::from([("uid".to_string(), who)]);
        if let Err(e) = self.record("?", "", "socket.connect", "refused", "", 0, detail) {
            eprintln!("vault: audit: {e:#}");
        }
    }

    /// Handles one request. An audit write that fails fails the request: nothing is done
    /// that is not recorded.
    pub fn handle(&mut self, req: Request) -> Response {
        let now = unix_now();
        match self.dispatch(req, now) {
            Ok(r) => r,
            Err(e) => Response::refused(format!("internal error: {e:#}")),
        }
    }

    fn dispatch(&mut self, req: Request, now: u64) -> anyhow::Result<Response> {
        if req.command == "login" {
            return self.login(&req.args, now);
        }
        if req.command == "enrol" {
            return self.enrol(&req.args, now);
        }
        let token_hash = req.token.as_deref().map(|t| sha256(t.as_bytes()));
        let Some(session) = token_hash.and_then(|h| self.sessions.get(&h)).cloned() else {
            let detail = BTreeMap::from([("reason".to_string(), "no session".to_string())]);
            self.record("?", "", &req.command, "refused", "", 0, detail)?;
            return Ok(Response::refused("not logged in (run `vault admin login`)"));
        };
        let key = token_hash.unwrap_or_default();
        let mut touched = session.clone();
        if let Err(why) = touched.touch(now, &self.policies.session) {
            self.sessions.remove(&key);
            let detail = BTreeMap::from([
                ("reason".to_string(), format!("{why:?}").to_lowercase()),
                ("duration_s".to_string(), session.duration(now).to_string()),
                ("records".to_string(), session.records.to_string()),
            ]);
            self.record(
                &session.user,
                &session.id,
                "session.expired",
                "ok",
                "",
                0,
                detail,
            )?;
            return Ok(Response::refused(why.to_string()));
        }
        let Some(cmd) = Command::parse(&req.command) else {
            self.record(
                &session.user,
                &session.id,
                &req.command,
                "refused",
                "",
                0,
                reason("unknown command"),
            )?;
            return Ok(Response::refused(format!(
                "unknown command {:?}",
                req.command
            )));
        };
        if !cmd.permits(session.role) {
            self.record(
                &session.user,
                &session.id,
                cmd.name(),
                "refused",
                "",
                0,
                reason("role"),
            )?;
            return Ok(Response::refused(format!(
                "the {} role may not run {}",
                session.role.name(),
                cmd.name()
            )));
        }
        let must_change = self
            .state
            .accounts
            .get(&session.user)
            .is_some_and(|a| a.must_change);
        if must_change && !matches!(cmd, Command::Password | Command::Logout | Command::WhoAmI) {
            self.record(
                &session.user,
                &session.id,
                cmd.name(),
                "refused",
                "",
                0,
                reason("must change password"),
            )?;
            return Ok(Response::refused(
                "change your password first (`vault admin password`)",
            ));
        }
        self.sessions.insert(key, touched.clone());
        let outcome = self.run(cmd, &touched, &req.args, now);
        match outcome {
            Ok(done) => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.records += done.records;
                }
                let mut detail = done.detail.clone();
                if cmd == Command::Logout {
                    self.sessions.remove(&key);
                    detail.insert("duration_s".into(), touched.duration(now).to_string());
                    detail.insert("records".into(), touched.records.to_string());
                }
                self.record(
                    &touched.user,
                    &touched.id,
                    cmd.name(),
                    "ok",
                    &done.target,
                    done.records,
                    detail,
                )?;
                if alerts::off_hours_bulk(now, done.records) {
                    self.alert(
                        "bulk.off_hours",
                        &touched.user,
                        format!(
                            "{} touched {} records outside working hours",
                            cmd.name(),
                            done.records
                        ),
                    );
                }
                Ok(Response::ok(done.result, done.columns))
            }
            Err(why) => {
                self.record(
                    &touched.user,
                    &touched.id,
                    cmd.name(),
                    "failed",
                    "",
                    0,
                    reason(&why),
                )?;
                Ok(Response::refused(why))
            }
        }
    }

    fn login(&mut self, args: &BTreeMap<String, String>, now: u64) -> anyhow::Result<Response> {
        const REFUSED: &str = "login refused: wrong user id, password or code";
        let user = arg(args, "user").unwrap_or_default().to_owned();
        let password = arg(args, "password").unwrap_or_default();
        let code = arg(args, "totp").unwrap_or_default();
        let Some(account) = self.state.accounts.get(&user).cloned() else {
            // As long as a real check, so the time taken does not tell which ids exist.
            let _ = self.decoy.verify(password);
            self.login_refused(&user, "unknown user", now)?;
            return Ok(Response::refused(REFUSED));
        };
        if account.disabled {
            self.login_refused(&user, "disabled", now)?;
            return Ok(Response::refused("login refused: the account is disabled"));
        }
        if account.enrolment.is_some() || account.totp.is_empty() {
            let _ = self.decoy.verify(password);
            self.login_refused(&user, "not enrolled", now)?;
            return Ok(Response::refused(
                "login refused: the account is not enrolled yet (`vault admin enrol` with the one-time token)",
            ));
        }
        if let Err(why) = account.lockout.check(now) {
            self.login_refused(&user, &why.to_string(), now)?;
            return Ok(Response::refused(format!("login refused: {why}")));
        }
        // Both factors are always checked, so the answer and its timing do not say which
        // one was wrong.
        let password_ok = account
            .passwords
            .first()
            .is_some_and(|p| p.verify(password));
        let secret = hex::decode(&account.totp).unwrap_or_default();
        let totp = Totp::new(&secret).verify(code, now, account.totp_last);
        if !password_ok || totp.is_err() {
            let why = match (password_ok, totp) {
                (false, Err(_)) => "password and code".to_string(),
                (false, Ok(_)) => "password".to_string(),
                (true, Err(e)) => format!("code ({e})"),
                (true, Ok(_)) => String::new(),
            };
            let mut account = account;
            // The delay runs from the verdict, not from the request: hashing takes time.
            let failure = account.lockout.fail(unix_now(), &self.policies.lockout);
            self.state.accounts.insert(user.clone(), account);
            self.save().map_err(anyhow::Error::msg)?;
            self.login_refused(&user, &format!("wrong {why}"), now)?;
            if failure.locked_now {
                self.alert(
                    "login.locked",
                    &user,
                    format!(
                        "account locked after {} failed logins in a row",
                        failure.failures
                    ),
                );
            }
            return Ok(Response::refused(REFUSED));
        }
        let mut account = account;
        account.lockout.succeed();
        account.totp_last = totp.ok();
        let (time, _) = self.clock.now();
        account.last_login = Some(time);
        let mut token = [0u8; 32];
        let mut id = [0u8; 8];
        self.rng
            .fill(&mut token)
            .map_err(|_| anyhow::anyhow!("random source failed"))?;
        self.rng
            .fill(&mut id)
            .map_err(|_| anyhow::anyhow!("random source failed"))?;
        let token = hex::encode(token);
        let session = Session {
            id: hex::encode(id),
            user: user.clone(),
            role: account.role,
            break_glass: account.break_glass,
            started: now,
            last_seen: now,
            records: 0,
        };
        self.sessions
            .insert(sha256(token.as_bytes()), session.clone());
        let (break_glass, must_change, role) =
            (account.break_glass, account.must_change, account.role);
        self.state.accounts.insert(user.clone(), account);
        self.save().map_err(anyhow::Error::msg)?;
        let mut detail = BTreeMap::from([("role".to_string(), role.name().to_string())]);
        if break_glass {
            detail.insert("break_glass".into(), "true".into());
            self.alert(
                "break_glass.login",
                &user,
                "break-glass account logged in".into(),
            );
        }
        self.record(&user, &session.id, "login", "ok", "", 0, detail)?;
        Ok(Response::ok(
            json!({
                "token": token,
                "session": session.id,
                "role": role.name(),
                "must_change_password": must_change,
                "break_glass": break_glass,
                "idle_timeout_s": self.policies.session.idle,
            }),
            &[],
        ))
    }

    /// Gives `account` a fresh one-time enrolment token (valid [`ENROLMENT_HOURS`]) and
    /// returns what the administrator hands to the person: the token, never a password or a
    /// TOTP secret.
    fn issue_enrolment(&self, account: &mut Account, by: &str, now: u64) -> Result<Value, String> {
        let mut raw = [0u8; 20];
        self.rng
            .fill(&mut raw)
            .map_err(|_| "random source failed")?;
        let token = accounts::totp::base32(&raw);
        let expires = now + ENROLMENT_HOURS * 3600;
        account.enrolment = Some(super::state::Enrolment {
            token_sha256: hex::encode(sha256(token.as_bytes())),
            expires,
            issued_by: by.to_owned(),
        });
        Ok(json!({
            "user": account.user,
            "enrolment_token": token,
            "expires_unix": expires,
            "note": format!(
                "hand this one-time token to {} in person; they run `vault admin enrol --user {}` \
                 within {ENROLMENT_HOURS} hours to set their own password and receive their own \
                 TOTP secret. Nobody else ever sees either.",
                account.name, account.user
            ),
        }))
    }

    /// The person redeems their enrolment token: sets their own password (the policy's
    /// rules) and receives their TOTP secret, which only they see. One use; every redemption
    /// and every refused one is audited, so a token redeemed by someone else shows (the
    /// person then finds theirs refused).
    fn enrol(&mut self, args: &BTreeMap<String, String>, now: u64) -> anyhow::Result<Response> {
        const REFUSED: &str = "enrolment refused: wrong user id or token, or the token expired";
        let user = arg(args, "user").unwrap_or_default().to_owned();
        let token = arg(args, "token").unwrap_or_default().trim().to_uppercase();
        let password = arg(args, "password").unwrap_or_default();
        let Some(mut account) = self.state.accounts.get(&user).cloned() else {
            self.record(
                &user,
                "",
                "enrol",
                "refused",
                &user,
                0,
                reason("unknown user"),
            )?;
            return Ok(Response::refused(REFUSED));
        };
        // Compared as hashes: timing says nothing about the token itself.
        let offered = hex::encode(sha256(token.as_bytes()));
        let valid = account
            .enrolment
            .as_ref()
            .is_some_and(|e| e.expires >= now && e.token_sha256 == offered);
        if !valid || account.disabled {
            self.record(&user, "", "enrol", "refused", &user, 0, reason("token"))?;
            return Ok(Response::refused(REFUSED));
        }
        let stored = match self
            .policies
            .password
            .accept(&user, password, &account.passwords, &self.rng)
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            Ok(stored) => stored,
            Err(violations) => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                self.record(
                    &user,
                    "",
                    "enrol",
                    "failed",
                    &user,
                    0,
                    reason("password policy"),
                )?;
                return Ok(Response::refused(format!(
                    "the password {}",
                    list.join("; ")
                )));
            }
        };
        let mut secret = [0u8; 20];
        self.rng
            .fill(&mut secret)
            .map_err(|_| anyhow::anyhow!("random source failed"))?;
        account.passwords.insert(0, stored);
        account
            .passwords
            .truncate(self.policies.password.history + 1);
        account.totp = hex::encode(secret);
        account.totp_last = None;
        account.must_change = false;
        account.enrolment = None;
        let totp = Totp::new(&secret);
        self.state.accounts.insert(user.clone(), account);
        self.save().map_err(anyhow::Error::msg)?;
        self.record(&user, "", "enrol", "ok", &user, 0, BTreeMap::new())?;
        Ok(Response::ok(
            json!({
                "user": user,
                "totp_secret": accounts::totp::base32(&secret),
                "totp_uri": totp.uri("Enclave vault", &user),
                "note": "add this secret to your authenticator now; it is not shown again. Then log in.",
            }),
            &[],
        ))
    }

    /// Whether user `a` and user `b` are one person (R-RL-2, R-OP-1: the rules that need
    /// two people compare persons, not accounts).
    fn one_person(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        match (self.state.accounts.get(a), self.state.accounts.get(b)) {
            (Some(x), Some(y)) => x.same_person(y),
            _ => false,
        }
    }

    /// Refuses `user` taking a second-person step on work done by any of `others`.
    fn second_person(&self, user: &str, others: &[Option<&str>], what: &str) -> Result<(), String> {
        for o in others.iter().flatten() {
            if *o != user && self.one_person(user, o) {
                return Err(format!(
                    "{what} must come from another person: accounts {user:?} and {o:?} belong to \
                     the same person (staff number or name)"
                ));
            }
        }
        Ok(())
    }

    fn login_refused(&mut self, user: &str, why: &str, now: u64) -> anyhow::Result<()> {
        self.record(user, "", "login", "refused", "", 0, reason(why))?;
        self.failures.push(now);
        self.failures
            .retain(|&t| now.saturating_sub(t) < alerts::FAILURE_WINDOW);
        if alerts::failure_burst(&self.failures, now) {
            self.alert(
                "login.failures",
                user,
                format!(
                    "{} refused logins in the last {} s",
                    self.failures.len(),
                    alerts::FAILURE_WINDOW
                ),
            );
            self.failures.clear();
        }
        Ok(())
    }

    fn run(
        &mut self,
        cmd: Command,
        s: &Session,
        args: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<Done, String> {
        let (time, _) = self.clock.now();
        let done = match cmd {
            Command::WhoAmI => Done::new(json!({
                "user": s.user, "role": s.role.name(), "session": s.id,
                "break_glass": s.break_glass,
                "logged_in_s": s.duration(now), "records": s.records,
            })),
            Command::Logout => Done::new(json!({"session": s.id, "duration_s": s.duration(now)})),
            Command::Password => self.change_password(s, args)?,
            Command::UserList => {
                let rows: Vec<Value> = self
                    .state
                    .accounts
                    .values()
                    .map(|a| {
                        json!({
                            "user": a.user, "name": a.name, "role": a.role.name(),
                            "break_glass": a.break_glass, "disabled": a.disabled,
                            "locked": a.lockout.locked, "failures": a.lockout.failures,
                            "must_change": a.must_change, "created": a.created,
                            "staff_number": a.staff_number, "enrolled": a.enrolment.is_none(),
                            "created_by": a.created_by, "last_login": a.last_login,
                        })
                    })
                    .collect();
                Done::list(Value::Array(rows), USER_COLUMNS)
            }
            Command::UserAdd => {
                let user = need(args, "user")?;
                if !valid_user_id(user) {
                    return Err(
                        "a user id is 2–32 of a-z, 0-9, '.', '_', '-', starting with a letter"
                            .into(),
                    );
                }
                if self.state.accounts.contains_key(user) {
                    return Err(format!("user {user:?} exists"));
                }
                let role = Role::parse(need(args, "role")?)
                    .ok_or("role must be administrator, operator, reviewer or auditor")?;
                let name = need(args, "name")?.to_owned();
                let staff_number = need(args, "staff_number")?.trim().to_owned();
                let break_glass = flag(args, "break_glass");
                let mut account = Account {
                    user: user.to_owned(),
                    name,
                    role,
                    break_glass,
                    disabled: false,
                    must_change: false,
                    passwords: Vec::new(),
                    totp: String::new(),
                    totp_last: None,
                    lockout: accounts::Lockout::default(),
                    created: time.clone(),
                    created_by: s.user.clone(),
                    last_login: None,
                    staff_number,
                    enrolment: None,
                };
                // One person, one active account (R-OP-1): the rules that need two people
                // would mean nothing if one person could hold two.
                if let Some(other) = self
                    .state
                    .accounts
                    .values()
                    .find(|a| !a.disabled && a.same_person(&account))
                {
                    return Err(format!(
                        "{} (staff number {}) already holds the active account {:?}; one \
                         person holds one active account (disable that one first)",
                        account.name, account.staff_number, other.user
                    ));
                }
                let first = self.issue_enrolment(&mut account, &s.user, now)?;
                self.state.accounts.insert(user.to_owned(), account);
                self.save()?;
                Done::new(first).on(user)
            }
            Command::UserDisable | Command::UserUnlock | Command::UserReset => {
                let user = need(args, "user")?.to_owned();
                if user == s.user {
                    return Err("an administrator cannot do this to their own account".into());
                }
                let Some(mut account) = self.state.accounts.get(&user).cloned() else {
                    return Err(format!("no user {user:?}"));
                };
                let result = match cmd {
                    Command::UserDisable => {
                        account.disabled = true;
                        self.sessions.retain(|_, x| x.user != user);
                        json!({"user": user, "disabled": true})
                    }
                    Command::UserUnlock => {
                        account.lockout.unlock();
                        json!({"user": user, "locked": false})
                    }
                    _ => {
                        if let Some(other) = self.state.accounts.values().find(|a| {
                            a.user != account.user && !a.disabled && a.same_person(&account)
                        }) {
                            return Err(format!(
                                "{} already holds the active account {:?}; one person holds \
                                 one active account",
                                account.name, other.user
                            ));
                        }
                        // The old password stays in the history (no reuse); the person sets
                        // a new one and gets a new TOTP secret by redeeming the token.
                        let first = self.issue_enrolment(&mut account, &s.user, now)?;
                        account.totp = String::new();
                        account.totp_last = None;
                        account.must_change = false;
                        account.lockout.unlock();
                        account.disabled = false;
                        self.sessions.retain(|_, x| x.user != user);
                        first
                    }
                };
                self.state.accounts.insert(user.clone(), account);
                self.save()?;
                Done::new(result).on(&user)
            }
            Command::InstitutionAdd => {
                let id = need(args, "id")?.to_owned();
                let row = Institution {
                    id: id.clone(),
                    name: need(args, "name")?.into(),
                    address: need(args, "address")?.into(),
                    representative: need(args, "representative")?.into(),
                    obtained: need(args, "obtained")?.into(),
                    certificate: need(args, "certificate")?.into(),
                    signing_key: need(args, "signing_key")?.into(),
                    registered: time.clone(),
                    registered_by: s.user.clone(),
                };
                if self.state.institutions.contains_key(&id) {
                    return Err(format!("institution {id:?} is registered"));
                }
                self.state.institutions.insert(id.clone(), row);
                self.save()?;
                Done::new(json!({"id": id})).on(&id)
            }
            Command::InstitutionList => Done::list(
                to_rows(self.state.institutions.values()),
                &[
                    "id",
                    "name",
                    "address",
                    "representative",
                    "obtained",
                    "certificate",
                    "signing_key",
                    "registered",
                    "registered_by",
                ],
            ),
            Command::DisposalAdd => {
                let id = self.state.disposals.len() as u64 + 1;
                self.state.disposals.push(Disposal {
                    id,
                    medium: need(args, "medium")?.into(),
                    method: need(args, "method")?.into(),
                    witness: need(args, "witness")?.into(),
                    reference: arg(args, "reference").unwrap_or_default().into(),
                    recorded: time.clone(),
                    recorded_by: s.user.clone(),
                });
                self.save()?;
                Done::new(json!({"id": id})).on(&format!("disposal-{id}"))
            }
            Command::DisposalList => Done::list(
                to_rows(self.state.disposals.iter()),
                &[
                    "id",
                    "medium",
                    "method",
                    "witness",
                    "reference",
                    "recorded",
                    "recorded_by",
                ],
            ),
            Command::InventoryScan => {
                let paths = need(args, "paths")?;
                let mut rows = Vec::new();
                for p in paths.split(',').filter(|p| !p.is_empty()) {
                    rows.push(scan(Path::new(p), &time, &s.user)?);
                }
                let n = rows.len();
                self.state.inventory.extend(rows);
                self.save()?;
                Done::new(json!({"recorded": n}))
            }
            Command::InventoryList => Done::list(
                to_rows(self.state.inventory.iter()),
                &[
                    "path",
                    "version",
                    "sha256",
                    "size",
                    "recorded",
                    "recorded_by",
                ],
            ),
            Command::AuditShow => self.audit_show(args)?,
            Command::AuditVerify => {
                let reports = verify_store(&self.store, self.audit.public().clone())
                    .map_err(|e| e.to_string())?;
                let ok = reports.iter().all(|(_, r)| r.ok());
                if !ok {
                    self.alert(
                        "audit.verify_failed",
                        &s.user,
                        "audit verification found problems".into(),
                    );
                }
                Done::new(
                    json!({"ok": ok, "files": reports.iter().map(|(n, r)| json!({"file": n, "report": r})).collect::<Vec<_>>()}),
                )
            }
            Command::AuditArchive => {
                let (_, dir, _) = audit_paths(&self.store);
                let path = self
                    .audit
                    .archive(&dir, self.clock.as_ref())
                    .map_err(|e| e.to_string())?;
                save_head(&self.store, &self.master, &self.audit.head())
                    .map_err(|e| e.to_string())?;
                Done::new(json!({"archive": path.display().to_string()}))
            }
            Command::AuditAnchor => {
                let cp = self
                    .audit
                    .anchor(self.clock.as_ref())
                    .map_err(|e| e.to_string())?;
                save_head(&self.store, &self.master, &self.audit.head())
                    .map_err(|e| e.to_string())?;
                let mut done = Done::new(json!({
                    "line": cp.to_line(), "seq": cp.seq, "hash": cp.hash, "time": cp.time,
                }));
                done.detail.insert("seq".into(), cp.seq.to_string());
                done.detail.insert("hash".into(), cp.hash.clone());
                done
            }
            Command::Report => Done::new(self.report(now)),
            Command::OptOutAdd => self.opt_out(s, args, &time)?,
            Command::OptOutList => Done::list(
                to_rows(self.state.optouts.iter()),
                &[
                    "id",
                    "institution",
                    "tag",
                    "pseudonyms",
                    "source",
                    "received",
                    "entered_by",
                    "records_deleted",
                    "identities_deleted",
                    "batches_rewritten",
                    "deleted",
                    "releases_rebuild",
                    "releases_provided",
                ],
            ),
            Command::Backup => {
                return Err(
                    "backups are taken with `vault backup` while the service is stopped".into(),
                )
            }
            Command::MethodPropose => self.propose_method(s, args, &time)?,
            Command::MethodApprove => {
                let id = need(args, "id")?;
                let proposer = self
                    .state
                    .methods
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| m.proposed_by.clone());
                self.second_person(&s.user, &[proposer.as_deref()], "the approval of a method")?;
                let Some(m) = self.state.methods.iter_mut().find(|m| m.id == id) else {
                    return Err(format!("no method {id}"));
                };
                m.approve(&s.user, &time).map_err(|e| e.to_string())?;
                let name = m.name.clone();
                self.save()?;
                Done::new(json!({"id": id, "name": name, "state": "approved"})).on(id)
            }
            Command::MethodList => {
                let rows: Vec<Value> = self
                    .state
                    .methods
                    .iter()
                    .map(|m| {
                        json!({
                            "id": m.id, "name": m.name, "state": m.state,
                            "files": m.files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" "),
                            "proposed_by": m.proposed_by, "proposed_at": m.proposed_at,
                            "approved_by": m.approved_by, "approved_at": m.approved_at,
                        })
                    })
                    .collect();
                Done::list(
                    Value::Array(rows),
                    &[
                        "id",
                        "name",
                        "state",
                        "files",
                        "proposed_by",
                        "proposed_at",
                        "approved_by",
                        "approved_at",
                    ],
                )
            }
            Command::ReleaseRequest => self.request_release(s, args, &time)?,
            Command::ReleaseApprove => {
                let id = need(args, "id")?;
                let r = self.release(id)?;
                self.second_person(&s.user, &[Some(&r.requester)], "the approval of a release")?;
                self.step(id, Event::Approve { by: s.user.clone() }, &time)?
            }
            Command::ReleaseConfirm => self.confirm_release(s, args, &time)?,
            Command::ReleaseRebuild => self.rebuild_release(s, args, &time)?,
            Command::ReleaseOverride => {
                let id = need(args, "id")?;
                let r = self.release(id)?;
                self.second_person(&s.user, &[Some(&r.requester)], "an override")?;
                let reason = need(args, "reason")?.to_owned();
                let mut done = self.step(
                    id,
                    Event::Override {
                        by: s.user.clone(),
                        reason: reason.clone(),
                    },
                    &time,
                )?;
                let findings = self.release(id)?.findings.len();
                done.detail.insert("reason".into(), reason);
                done.detail.insert("findings".into(), findings.to_string());
                done
            }
            Command::ReleaseReject => {
                let id = need(args, "id")?;
                let reason = need(args, "reason")?.to_owned();
                self.step(
                    id,
                    Event::Reject {
                        by: s.user.clone(),
                        reason,
                    },
                    &time,
                )?
            }
            Command::ReleaseCancel => {
                let id = need(args, "id")?;
                self.step(id, Event::Cancel { by: s.user.clone() }, &time)?
            }
            Command::ReleaseList => {
                let rows: Vec<Value> = self
                    .state
                    .releases
                    .iter()
                    .map(|r| {
                        let b = self.state.builds.get(&r.id);
                        json!({
                            "id": r.id, "state": r.state, "requester": r.requester,
                            "requested": r.history.first().map(|h| h.0.as_str()),
                            "recipient": r.request.recipient,
                            "method": b.map(|b| b.method_name.as_str()),
                            "committee_decision": r.request.committee_decision,
                            "rows": b.map(|b| b.rows),
                            "approved_by": r.approved_by, "confirmed_by": r.confirmed_by,
                            "sent": b.and_then(|b| b.sent.as_deref()),
                        })
                    })
                    .collect();
                Done::list(
                    Value::Array(rows),
                    &[
                        "id",
                        "state",
                        "requester",
                        "requested",
                        "recipient",
                        "method",
                        "committee_decision",
                        "rows",
                        "approved_by",
                        "confirmed_by",
                        "sent",
                    ],
                )
            }
            Command::ReleaseShow => {
                let id = need(args, "id")?;
                let r = self.release(id)?;
                let names = self
                    .state
                    .builds
                    .get(id)
                    .map(|b| b.files.clone())
                    .unwrap_or_default();
                let report = if names.iter().any(|n| n == "report.json") {
                    releases::kept(&self.store, id, &self.master, &["report.json".into()])?
                        .first()
                        .and_then(|(_, b)| serde_json::from_slice::<Value>(b).ok())
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                // Opt-outs that came after this release was provided: the operator tells
                // the recipient (R-IN-6), and this list says whom to tell about which.
                let after: Vec<Value> = self
                    .state
                    .optouts
                    .iter()
                    .filter(|o| o.releases_provided.iter().any(|x| x == id))
                    .map(|o| json!({"optout": o.id, "received": o.received, "deleted": o.deleted}))
                    .collect();
                Done::new(json!({
                    "release": r,
                    "build": self.state.builds.get(id),
                    "report": report,
                    "optouts_after_provision": after,
                }))
                .on(id)
            }
            Command::RecipientAdd => {
                let id = need(args, "id")?.to_owned();
                envelope::validate_party_id(&id).map_err(|e| format!("recipient id: {e}"))?;
                let key = need(args, "key")?.trim().to_owned();
                let public = envelope::RecipientPublicKey::from_text(&key)
                    .map_err(|e| format!("--key is not an encryption public key: {e}"))?;
                if public.owner() != id {
                    return Err(format!(
                        "the key belongs to {:?}, not to recipient {id:?}",
                        public.owner()
                    ));
                }
                if self.state.recipients.contains_key(&id) {
                    return Err(format!("recipient {id:?} is registered"));
                }
                // One key, one recipient: the owner line of a key file is only text, so the
                // key itself is compared (by key id, the SHA-256 of its bytes).
                if let Some(other) = self.state.recipients.values().find(|r| {
                    envelope::RecipientPublicKey::from_text(&r.key)
                        .is_ok_and(|k| k.key_id() == public.key_id())
                }) {
                    return Err(format!(
                        "this encryption key (key id {}) is already registered for recipient \
                         {:?}; every recipient has a key of its own",
                        public.key_id(),
                        other.id
                    ));
                }
                let row = Recipient {
                    id: id.clone(),
                    name: need(args, "name")?.into(),
                    organisation: need(args, "organisation")?.into(),
                    key,
                    contact: need(args, "contact")?.into(),
                    registered: time.clone(),
                    registered_by: s.user.clone(),
                    certified_user: match args.get("certified_user").map(|c| c.trim()) {
                        None => None,
                        Some("") => return Err("certified_user: empty".into()),
                        Some(c) => Some(c.to_owned()),
                    },
                };
                self.state.recipients.insert(id.clone(), row);
                self.save()?;
                Done::new(json!({"id": id, "key_id": public.key_id().to_string()})).on(&id)
            }
            Command::RecipientList => Done::list(
                to_rows(self.state.recipients.values()),
                &[
                    "id",
                    "name",
                    "organisation",
                    "key",
                    "contact",
                    "registered",
                    "registered_by",
                    "certified_user",
                ],
            ),
            Command::LedgerList => {
                let rows: Vec<Value> = self
                    .state
                    .releases
                    .iter()
                    .filter(|r| r.state == Stage::Sent)
                    .map(|r| {
                        let b = self.state.builds.get(&r.id);
                        let who = self.state.recipients.get(&r.request.recipient);
                        json!({
                            "release": r.id,
                            "sent": b.and_then(|b| b.sent.as_deref()),
                            "recipient": r.request.recipient,
                            "recipient_name": who.map(|w| w.name.as_str()),
                            "organisation": who.map(|w| w.organisation.as_str()),
                            "purpose": r.request.purpose,
                            "committee_decision": r.request.committee_decision,
                            "committee_date": r.request.committee_date,
                            "conditions": r.request.conditions,
                            "method": r.request.method,
                            "method_name": b.map(|b| b.method_name.as_str()),
                            "rows": b.map(|b| b.rows),
                            "columns": b.map(|b| b.columns.join(" ")),
                            "package_sha256": r.package,
                            "approved_by": r.approved_by,
                            "confirmed_by": r.confirmed_by,
                        })
                    })
                    .collect();
                Done::list(Value::Array(rows), LEDGER_COLUMNS)
            }
            Command::LedgerOnwardAdd => {
                let release_id = need(args, "release")?.to_owned();
                let r = self.release(&release_id)?;
                if r.state != Stage::Sent {
                    return Err(format!(
                        "release {release_id} was not provided (it is {:?})",
                        r.state
                    ));
                }
                let from = r.request.recipient.clone();
                let id = self.state.onward.len() as u64 + 1;
                self.state.onward.push(Onward {
                    id,
                    release: release_id.clone(),
                    from,
                    to: need(args, "to")?.into(),
                    purpose: need(args, "purpose")?.into(),
                    permission: need(args, "permission")?.into(),
                    reported: day(args, "reported")?,
                    entered_by: s.user.clone(),
                });
                self.save()?;
                Done::new(json!({"id": id, "release": release_id})).on(&release_id)
            }
            Command::LedgerOnwardList => Done::list(
                to_rows(self.state.onward.iter()),
                &[
                    "id",
                    "release",
                    "from",
                    "to",
                    "purpose",
                    "permission",
                    "reported",
                    "entered_by",
                ],
            ),
        };
        Ok(done)
    }

    fn release(&self, id: &str) -> Result<&release::Release, String> {
        self.state
            .releases
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| format!("no release {id:?}"))
    }

    /// Applies a reviewer's or the requester's step; a refused step changes nothing.
    fn step(&mut self, id: &str, event: Event, time: &str) -> Result<Done, String> {
        let Some(r) = self.state.releases.iter_mut().find(|r| r.id == id) else {
            return Err(format!("no release {id:?}"));
        };
        r.apply(event, time).map_err(|e| e.to_string())?;
        let state = r.state;
        self.save()?;
        Ok(Done::new(json!({"id": id, "state": state})).on(id))
    }

    /// A release request: checked, then built at once (dataset from the store without
    /// opted-out persons, the approved method run over it), so the reviewers have the report.
    fn request_release(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
        time: &str,
    ) -> Result<Done, String> {
        let request = release::Request {
            recipient: need(args, "recipient")?.into(),
            purpose: need(args, "purpose")?.into(),
            committee_decision: need(args, "committee_decision")?.into(),
            committee_date: day(args, "committee_date")?,
            conditions: need(args, "conditions")?.into(),
            cohort: need(args, "cohort")?.into(),
            method: need(args, "method")?.into(),
        };
        let id = format!("R{:04}", self.state.releases.len() + 1);
        let mut r = release::Release::request(&id, &s.user, request, &self.state.methods, time)
            .map_err(|e| e.to_string())?;
        let (info, findings, report_sha) = self.build_release(&id, &r.request)?;
        r.findings = findings;
        r.apply(
            Event::Build {
                report: report_sha.clone(),
            },
            time,
        )
        .map_err(|e| e.to_string())?;
        self.keep_build(r, info, &report_sha, BTreeMap::new())
    }

    /// Records a build: the release (new or replacing its earlier self) and its build
    /// information go into the state, which is saved; the answer and audit entry say what
    /// was built.
    fn keep_build(
        &mut self,
        r: release::Release,
        info: BuildInfo,
        report_sha: &str,
        detail: BTreeMap<String, String>,
    ) -> Result<Done, String> {
        let mut done = Done::new(build_result(&r, &info, report_sha)).on(&r.id);
        done.records = info.rows;
        done.detail = detail;
        self.state.builds.insert(r.id.clone(), info);
        match self.state.releases.iter_mut().find(|x| x.id == r.id) {
            Some(slot) => *slot = r,
            None => self.state.releases.push(r),
        }
        self.save()?;
        Ok(done)
    }

    /// Builds release `id` again from the store as it is now, under its approved method
    /// (after an opt-out removed persons of the earlier build, R-IN-6). The new build needs
    /// a first approval and a confirmation again; the history and the audit entry say so.
    fn rebuild_release(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
        time: &str,
    ) -> Result<Done, String> {
        let id = need(args, "id")?.to_owned();
        let r = self.release(&id)?.clone();
        if !matches!(r.state, Stage::Built | Stage::Approved) {
            return Err(format!(
                "release {id} is {:?}; only a built or approved release is rebuilt",
                r.state
            ));
        }
        if !self
            .state
            .methods
            .iter()
            .any(|m| m.id == r.request.method && m.state == release::MethodState::Approved)
        {
            return Err(format!(
                "method {} of release {id} is no longer approved",
                r.request.method
            ));
        }
        let optouts: Vec<String> = r.stale.iter().map(u64::to_string).collect();
        let rows_before = self.state.builds.get(&id).map(|b| b.rows.to_string());
        let (info, findings, report_sha) = self.build_release(&id, &r.request)?;
        let mut next = r;
        next.findings = findings;
        next.apply(
            Event::Rebuild {
                by: s.user.clone(),
                report: report_sha.clone(),
            },
            time,
        )
        .map_err(|e| e.to_string())?;
        let detail = BTreeMap::from([
            ("optouts".to_string(), optouts.join(" ")),
            ("rows_before".to_string(), rows_before.unwrap_or_default()),
            ("rows".to_string(), info.rows.to_string()),
        ]);
        self.keep_build(next, info, &report_sha, detail)
    }

    /// Builds the data of release `id` for `request`: checks the method's files against its
    /// approval, the recipient, runs the method over the store, compares with every earlier
    /// release still standing, and seals the files and the member list beside the state.
    fn build_release(
        &mut self,
        id: &str,
        request: &release::Request,
    ) -> Result<(BuildInfo, Vec<release::cumulative::Finding>, String), String> {
        let Some(access) = &self.access else {
            return Err("this vault runs without a store; releases need `vault serve`".into());
        };
        let Some(recipient) = self.state.recipients.get(&request.recipient) else {
            return Err(format!(
                "no recipient {:?}; an administrator registers it with `vault admin recipient add`",
                request.recipient
            ));
        };
        let cohort = release::cohort::Cohort::parse(&request.cohort)?;
        let method_dir = self.store.join("admin/methods").join(&request.method);
        let method = self.state.methods.iter().find(|m| m.id == request.method);
        if let Some(m) = method {
            verify_method_files(m, &method_dir)?;
        }
        if let Ok(plan) = releases::MethodPlan::read(&method_dir) {
            certified_for(plan.profile(), recipient)?;
        }
        let method_name = method.map(|m| m.name.clone()).unwrap_or_default();
        let home = releases::home(&self.store, id);
        let built = releases::build(
            &access.store,
            &access.runtime,
            &method_dir,
            &cohort,
            &request.committee_date,
            &home.join("work"),
        )
        .map_err(|e| format!("building release data: {e}"))?;
        // Cumulative-release checks against every earlier release still standing.
        struct Earlier {
            id: String,
            recipient: String,
            method: String,
            quasi: Vec<String>,
            members: Vec<String>,
        }
        let mut earlier: Vec<Earlier> = Vec::new();
        for e in &self.state.releases {
            if e.id == id
                || matches!(
                    e.state,
                    release::State::Rejected | release::State::Cancelled
                )
            {
                continue;
            }
            let Some(members) = releases::members(&self.store, &e.id, &self.master)? else {
                continue;
            };
            let quasi = self
                .state
                .builds
                .get(&e.id)
                .map(|b| b.quasi.clone())
                .unwrap_or_default();
            earlier.push(Earlier {
                id: e.id.clone(),
                recipient: e.request.recipient.clone(),
                method: e.request.method.clone(),
                quasi,
                members,
            });
        }
        let footprints: Vec<release::cumulative::Footprint<'_>> = earlier
            .iter()
            .map(|e| release::cumulative::Footprint {
                release: &e.id,
                recipient: &e.recipient,
                method: &e.method,
                quasi: &e.quasi,
                members: &e.members,
            })
            .collect();
        let findings = release::cumulative::check(
            &release::cumulative::Footprint {
                release: id,
                recipient: &request.recipient,
                method: &request.method,
                quasi: &built.quasi,
                members: &built.members,
            },
            &footprints,
            built.k,
        );
        let mut files = built.files.clone();
        for (name, bytes) in files.iter_mut() {
            if name == "report.json" {
                let mut report: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                if let Some(obj) = report.as_object_mut() {
                    obj.insert(
                        "cumulative_checks".into(),
                        json!({
                            "compared_with": footprints.len(),
                            "findings": findings,
                            "aggregate_tables": "none shipped with this release",
                        }),
                    );
                }
                *bytes = serde_json::to_vec_pretty(&report).unwrap_or_default();
            }
        }
        releases::keep(&self.store, id, &self.master, &files)?;
        releases::keep_members(&self.store, id, &self.master, &built.members)?;
        let report_sha = files
            .iter()
            .find(|(n, _)| n == "report.json")
            .map(|(_, b)| hex::encode(sha256(b)))
            .unwrap_or_default();
        let info = BuildInfo {
            rows: built.rows,
            columns: built.columns,
            selection: built.selection,
            levels: built.levels,
            suppressed: built.suppressed,
            min_class: built.min_class,
            quasi: built.quasi.clone(),
            method_name,
            sent: None,
            outbox_file: None,
            profile: built.profile.clone(),
            files: built.files.iter().map(|(n, _)| n.clone()).collect(),
            erased_by: Vec::new(),
        };
        Ok((info, findings, report_sha))
    }

    /// The second reviewer's confirmation: only when it is accepted is the package built,
    /// signed, sealed to the recipient and put into the egress outbox (R-RL-2, R-GW-5).
    fn confirm_release(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
        time: &str,
    ) -> Result<Done, String> {
        let id = need(args, "id")?.to_owned();
        let mut next = self.release(&id)?.clone();
        self.second_person(
            &s.user,
            &[Some(&next.requester), next.approved_by.as_deref()],
            "the confirmation of a release",
        )?;
        next.apply(Event::Confirm { by: s.user.clone() }, time)
            .map_err(|e| e.to_string())?;
        // The register is read again here, whatever the release's flags say: nothing of a
        // person who opted out leaves, however the build came to hold them (R-IN-6).
        self.refuse_opted_out(&id)?;
        let Some(outbox) = self.egress_outbox.clone() else {
            return Err(
                "this vault has no egress outbox (vault serve --egress-outbox DIR); nothing can \
                 be sent"
                    .into(),
            );
        };
        let recipient = self
            .state
            .recipients
            .get(&next.request.recipient)
            .ok_or_else(|| {
                format!(
                    "recipient {:?} is no longer registered",
                    next.request.recipient
                )
            })?;
        let public = envelope::RecipientPublicKey::from_text(&recipient.key)
            .map_err(|e| format!("the recipient's key: {e}"))?;
        let key_path = self.store.join("keys/release.key");
        let key = keystore::load_signing_key(&key_path)
            .map_err(|e| format!("the vault's release key: {e}"))?;
        let info = self
            .state
            .builds
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("release {id} has no build"))?;
        // Checked again at sending: pseudonymized data goes only to a certified user.
        certified_for(&info.profile, recipient)?;
        let files = releases::kept(&self.store, &id, &self.master, &info.files)?;
        let manifest = release::package::Manifest {
            format: String::new(),
            release: id.clone(),
            recipient: next.request.recipient.clone(),
            purpose: next.request.purpose.clone(),
            committee_decision: next.request.committee_decision.clone(),
            committee_date: next.request.committee_date.clone(),
            conditions: next.request.conditions.clone(),
            method: next.request.method.clone(),
            method_name: info.method_name.clone(),
            created: time.to_owned(),
            rows: info.rows,
            columns: info.columns.clone(),
            profile: info.profile.clone(),
            statement: String::new(),
            files: Vec::new(),
        };
        let archive = release::package::build(manifest, &files, &key).map_err(|e| e.to_string())?;
        let sealed = releases::seal_package(&self.store, &id, &archive, &public, &key)?;
        next.apply(
            Event::Package {
                package: hex::encode(sha256(&sealed)),
            },
            time,
        )
        .map_err(|e| e.to_string())?;
        let name = format!("{id}.{}.release", next.request.recipient);
        next.apply(Event::Send, time).map_err(|e| e.to_string())?;
        let (sent_at, _) = self.clock.now();
        let mut sent_build = info.clone();
        sent_build.sent = Some(sent_at);
        sent_build.outbox_file = Some(name.clone());
        // Kept apart before the package is handed over: a restore never brings a provided
        // release back to an earlier state, and the ledger keeps it (R-RL-3).
        self.keep_fact(register::Fact::Provided {
            release: Box::new(next.clone()),
            build: Box::new(sent_build.clone()),
        })?;
        releases::enqueue(&outbox, &name, &sealed)?;
        self.state.builds.insert(id.clone(), sent_build);
        let package = next.package.clone();
        if let Some(slot) = self.state.releases.iter_mut().find(|r| r.id == id) {
            *slot = next;
        }
        self.save()?;
        let mut done = Done::new(json!({
            "id": id, "state": Stage::Sent, "package_sha256": package,
            "bytes": sealed.len(), "outbox_file": name, "key_id": public.key_id().to_string(),
        }))
        .on(&id);
        done.records = info.rows;
        Ok(done)
    }

    /// Refuses when release `id`'s build holds a person of the opt-out register.
    fn refuse_opted_out(&self, id: &str) -> Result<(), String> {
        let Some(members) = releases::members(&self.store, id, &self.master)? else {
            return Ok(());
        };
        let out = opted_out(&self.state);
        let hit: Vec<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|m| out.contains(m))
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        let registers: Vec<String> = self
            .state
            .optouts
            .iter()
            .filter(|o| o.pseudonyms.split_whitespace().any(|p| hit.contains(&p)))
            .map(|o| format!("#{}", o.id))
            .collect();
        Err(format!(
            "release {id} holds {} person(s) of the opt-out register ({}: {}); nothing of \
             theirs may leave: rebuild it (release rebuild --id {id}) and have the new build \
             approved and confirmed",
            hit.len(),
            registers.join(", "),
            hit.join(" ")
        ))
    }

    fn save(&mut self) -> Result<(), String> {
        self.state.audit_head = Some(self.audit.head());
        self.state
            .save(&self.store, &self.master)
            .map_err(|e| format!("saving the operator state: {e:#}"))
    }

    /// Registers a proposed method: the files of a folder on the vault host, copied into
    /// `STORE/admin/methods/ID/` so that the approved bytes are the ones used.
    fn propose_method(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
        time: &str,
    ) -> Result<Done, String> {
        let name = need(args, "name")?.to_owned();
        let dir = PathBuf::from(need(args, "dir")?);
        let mut files = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let file = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((file, bytes));
        }
        if files.is_empty() {
            return Err(format!("{} holds no files", dir.display()));
        }
        let method = release::Method::propose(&name, &files, &s.user, time);
        if self.state.methods.iter().any(|m| m.id == method.id) {
            return Err(format!("method {} is already registered", method.id));
        }
        let home = self.store.join("admin/methods").join(&method.id);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        for (file, bytes) in &files {
            std::fs::write(home.join(file), bytes)
                .map_err(|e| format!("{}: {e}", home.display()))?;
        }
        let id = method.id.clone();
        self.state.methods.push(method);
        self.save()?;
        Ok(
            Done::new(json!({"id": id, "name": name, "files": files.len(), "state": "proposed"}))
                .on(&id),
        )
    }

    /// Registers an opt-out and deletes the person's data from the store (R-IN-6, R-OP-6).
    fn opt_out(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
        time: &str,
    ) -> Result<Done, String> {
        let source = need(args, "source")?.to_owned();
        let Some(access) = &self.access else {
            return Err("this vault runs without a store; opt-outs need `vault serve`".into());
        };
        let (institution, tag, pseudonym) = match (
            arg(args, "institution"),
            arg(args, "patient_id"),
            arg(args, "pseudonym"),
        ) {
            (Some(inst), Some(pid), None) if !inst.is_empty() && !pid.is_empty() => (
                inst.to_owned(),
                Some(access.linker.local_tag(inst, pid).0),
                None,
            ),
            (None, None, Some(p)) if !p.is_empty() => (String::new(), None, Some(p.to_owned())),
            _ => {
                return Err(
                    "name the person by --institution and --patient-id, or by --pseudonym".into(),
                )
            }
        };
        let id = self.state.optouts.len() as u64 + 1;
        let mut row = super::state::OptOut {
            id,
            institution,
            tag: tag.clone().unwrap_or_default(),
            pseudonyms: pseudonym.clone().unwrap_or_default(),
            source,
            received: time.to_owned(),
            entered_by: s.user.clone(),
            records_deleted: 0,
            identities_deleted: 0,
            batches_rewritten: 0,
            deleted: String::new(),
            releases_rebuild: Vec::new(),
            releases_provided: Vec::new(),
        };
        // Into the register kept apart first: from here on no restore can bring the person
        // back, even if the deletion below is interrupted (it is then applied again).
        self.keep_fact(register::Fact::OptOut {
            optout: Box::new(row.clone()),
        })?;
        let access = self
            .access
            .as_ref()
            .ok_or("this vault runs without a store; opt-outs need `vault serve`")?;
        let forgotten = access
            .runtime
            .block_on(access.store.forget(tag.as_deref(), pseudonym.as_deref()))
            .map_err(|e| format!("deleting from the store: {e}"))?;
        let (done_time, _) = self.clock.now();
        let (marked, provided) = purge_builds(
            &self.store,
            &self.master,
            &mut self.state,
            &forgotten.pseudonyms,
            id,
            &done_time,
        )?;
        row.pseudonyms = forgotten.pseudonyms.join(" ");
        row.records_deleted = forgotten.records;
        row.identities_deleted = forgotten.identities;
        row.batches_rewritten = forgotten.batches;
        row.deleted = done_time;
        row.releases_rebuild = marked;
        row.releases_provided = provided;
        self.state.optouts.push(row.clone());
        self.save()?;
        let target = forgotten
            .pseudonyms
            .first()
            .cloned()
            .unwrap_or_else(|| format!("optout-{id}"));
        let mut done = Done::new(serde_json::to_value(&row).unwrap_or_default()).on(&target);
        done.records = forgotten.records;
        done.detail
            .insert("register".into(), self.state.register_seq.to_string());
        Ok(done)
    }

    /// Appends a fact to the register kept apart and counts it in the state (saved by the
    /// caller with the change the fact records).
    fn keep_fact(&mut self, fact: register::Fact) -> Result<(), String> {
        let (time, _) = self.clock.now();
        let Some(reg) = self.register.as_mut() else {
            return Err(
                "this vault runs without its register (vault serve opens STORE.register or \
                 --register FILE); opt-outs and releases need it"
                    .into(),
            );
        };
        let seq = reg
            .append(fact, &time, &self.master)
            .map_err(|e| format!("writing the register: {e}"))?;
        self.state.register_seq = seq;
        Ok(())
    }

    /// Opens the register kept apart at `path` (R-IN-6; issue #31, item 3). A register
    /// shorter than the state says, or missing while the state counts lines in it, refuses
    /// the start; lines the state has not applied yet (a crash between the two, or a store
    /// restored from an older backup) are applied now, and audited.
    pub fn attach_register(&mut self, path: &Path) -> anyhow::Result<()> {
        let store_id = std::fs::read_to_string(self.store.join("store.id"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !path.exists() && self.state.register_seq == 0 {
            // A store made before the register existed, or one whose init made none.
            vault_store::write_synced(path, b"")?;
        }
        let reg = register::Register::open(path, &store_id, &self.master)?;
        let have = reg.lines().len() as u64;
        if have < self.state.register_seq {
            let why = format!(
                "{} holds {have} line(s), but this store applied {}: the register was cut \
                 short, replaced or deleted",
                path.display(),
                self.state.register_seq
            );
            self.alert("register.truncated", "", why.clone());
            anyhow::bail!(
                "{why}; the vault does not start on it (docs/operations.md, \"Register\")"
            );
        }
        if have > self.state.register_seq {
            let pending: Vec<register::Line> =
                reg.lines()[self.state.register_seq as usize..].to_vec();
            let access = self
                .access
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("re-applying the register needs the store"))?;
            let (time, _) = self.clock.now();
            let summary = access
                .runtime
                .block_on(reapply(
                    &access.store,
                    &self.store,
                    &self.master,
                    &mut self.state,
                    &pending,
                    &time,
                ))
                .map_err(anyhow::Error::msg)?;
            self.register = Some(reg);
            self.save().map_err(anyhow::Error::msg)?;
            self.record(
                "vault",
                "",
                "register.reapply",
                "ok",
                "",
                summary.records,
                summary.detail(),
            )?;
        } else {
            self.register = Some(reg);
        }
        Ok(())
    }

    fn change_password(
        &mut self,
        s: &Session,
        args: &BTreeMap<String, String>,
    ) -> Result<Done, String> {
        let old = need(args, "old")?;
        let new = need(args, "new")?;
        let Some(mut account) = self.state.accounts.get(&s.user).cloned() else {
            return Err("the account is gone".into());
        };
        if !account.passwords.first().is_some_and(|p| p.verify(old)) {
            return Err("the current password is wrong".into());
        }
        let stored = match self
            .policies
            .password
            .accept(&s.user, new, &account.passwords, &self.rng)
            .map_err(|e| e.to_string())?
        {
            Ok(stored) => stored,
            Err(violations) => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                return Err(format!("the new password {}", list.join("; ")));
            }
        };
        account.passwords.insert(0, stored);
        account
            .passwords
            .truncate(self.policies.password.history + 1);
        account.must_change = false;
        self.state.accounts.insert(s.user.clone(), account);
        self.save()?;
        Ok(Done::new(json!({"changed": true})).on(&s.user))
    }

    fn audit_show(&self, args: &BTreeMap<String, String>) -> Result<Done, String> {
        let (log, _, _) = audit_paths(&self.store);
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let last: usize = arg(args, "last")
            .unwrap_or("50")
            .parse()
            .map_err(|_| "last must be a number")?;
        let user = arg(args, "user");
        let rows: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| user.is_none_or(|u| v["actor"] == u))
            .collect();
        let skip = rows.len().saturating_sub(last);
        Ok(Done::list(
            Value::Array(rows.into_iter().skip(skip).collect()),
            &[
                "seq", "time", "clock", "actor", "session", "action", "target", "records",
                "outcome", "detail", "prev", "hash", "sig",
            ],
        ))
    }

    fn report(&self, now: u64) -> Value {
        let accounts = &self.state.accounts;
        json!({
            "accounts": accounts.len(),
            "locked": accounts.values().filter(|a| a.lockout.locked).count(),
            "disabled": accounts.values().filter(|a| a.disabled).count(),
            "break_glass": accounts.values().filter(|a| a.break_glass).count(),
            "sessions": self.sessions.values().map(|s| json!({
                "user": s.user, "session": s.id, "role": s.role.name(),
                "logged_in_s": s.duration(now), "records": s.records,
            })).collect::<Vec<_>>(),
            "institutions": self.state.institutions.len(),
            "optouts": self.state.optouts.len(),
            "disposals": self.state.disposals.len(),
            "inventory": self.state.inventory.len(),
            "audit_next_seq": self.audit.next_seq(),
            "clock": audit::SystemClock::status(),
        })
    }
}

const LEDGER_COLUMNS: &[&str] = &[
    "release",
    "sent",
    "recipient",
    "recipient_name",
    "organisation",
    "purpose",
    "committee_decision",
    "committee_date",
    "conditions",
    "method",
    "method_name",
    "rows",
    "columns",
    "package_sha256",
    "approved_by",
    "confirmed_by",
];

const USER_COLUMNS: &[&str] = &[
    "user",
    "name",
    "role",
    "break_glass",
    "disabled",
    "locked",
    "failures",
    "must_change",
    "staff_number",
    "enrolled",
    "created",
    "created_by",
    "last_login",
];

/// Verifies a store's archives (oldest first) and live log, with `key` trusted.
pub fn verify_store(
    store: &Path,
    key: envelope::VerifyingKey,
) -> anyhow::Result<Vec<(String, audit::Report)>> {
    let files = read_series(store)?;
    let series: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_slice()))
        .collect();
    let reports = audit::verify_series(&series, &[key]);
    Ok(files.iter().map(|(n, _)| n.clone()).zip(reports).collect())
}

/// A store's archives (oldest first) and live log, by file name with their text.
pub fn read_series(store: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (log, dir, _) = audit_paths(store);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if dir.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        names.sort();
        for p in names {
            let text = std::fs::read(&p)?;
            files.push((p.display().to_string(), text));
        }
    }
    let live = match std::fs::read(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", log.display())),
    };
    files.push((log.display().to_string(), live));
    Ok(files)
}

/// Who a new account is for.
struct Who<'a> {
    user: &'a str,
    name: &'a str,
    role: Role,
    break_glass: bool,
}

/// A new account with a generated first password and TOTP secret, and those credentials
/// (shown once, to be handed over in person).
fn new_credentials(
    policy: &PasswordPolicy,
    rng: &SystemRandom,
    who: Who<'_>,
    by: &str,
    time: &str,
) -> Result<(Account, Value), String> {
    let password = generate_password(policy, rng, who.user)?;
    let stored = policy
        .accept(who.user, &password, &[], rng)
        .map_err(|e| e.to_string())?
        .map_err(|v| format!("generated password refused: {v:?}"))?;
    let mut secret = [0u8; 20];
    rng.fill(&mut secret).map_err(|_| "random source failed")?;
    let totp = Totp::new(&secret);
    let first = json!({
        "user": who.user,
        "first_password": password,
        "totp_secret": accounts::totp::base32(&secret),
        "totp_uri": totp.uri("Enclave vault", who.user),
        "note": "hand these over in person; they are not shown again. The password must be changed at first login.",
    });
    let account = Account {
        user: who.user.into(),
        name: who.name.into(),
        role: who.role,
        break_glass: who.break_glass,
        disabled: false,
        must_change: true,
        passwords: vec![stored],
        totp: hex::encode(secret),
        totp_last: None,
        lockout: accounts::Lockout::default(),
        created: time.into(),
        created_by: by.into(),
        last_login: None,
        staff_number: String::new(),
        enrolment: None,
    };
    Ok((account, first))
}

/// 16 characters, at least one of each class, drawn until the policy accepts one.
fn generate_password(
    policy: &PasswordPolicy,
    rng: &SystemRandom,
    user: &str,
) -> Result<String, String> {
    const SETS: [&[u8]; 4] = [
        b"abcdefghijkmnopqrstuvwxyz",
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"23456789",
        b"-_.+=%#@",
    ];
    for _ in 0..100 {
        let mut raw = [0u8; 16];
        rng.fill(&mut raw).map_err(|_| "random source failed")?;
        let pw: String = raw
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let set = SETS[if i < 4 { i } else { usize::from(b) % 4 }];
                char::from(set[usize::from(b) % set.len()])
            })
            .collect();
        if policy.check_shape(user, &pw).is_empty() {
            return Ok(pw);
        }
    }
    Err("could not draw a password".into())
}

fn scan(path: &Path, time: &str, by: &str) -> Result<Software, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ours = path.file_name().is_some_and(|n| {
        ["vault", "ingress", "egress", "enclave", "diode"].contains(&n.to_string_lossy().as_ref())
    });
    Ok(Software {
        path: path.display().to_string(),
        version: if ours {
            env!("CARGO_PKG_VERSION").to_string()
        } else {
            String::new()
        },
        sha256: hex::encode(sha256(&bytes)),
        size: bytes.len() as u64,
        recorded: time.into(),
        recorded_by: by.into(),
    })
}

fn to_rows<'a, T: Serialize + 'a>(rows: impl Iterator<Item = &'a T>) -> Value {
    Value::Array(rows.filter_map(|r| serde_json::to_value(r).ok()).collect())
}

fn reason(why: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("reason".to_string(), why.to_string())])
}

fn arg<'a>(args: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    args.get(key).map(String::as_str)
}

fn need<'a>(args: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, String> {
    match arg(args, key) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("missing {key}")),
    }
}

/// A calendar day argument (R-RL-3 registers keep real dates), as `YYYY-MM-DD`.
fn day(args: &BTreeMap<String, String>, key: &str) -> Result<String, String> {
    let text = need(args, key)?.trim();
    release::day::parse(text)
        .map(release::day::format)
        .map_err(|e| format!("{key}: {e}"))
}

fn flag(args: &BTreeMap<String, String>, key: &str) -> bool {
    arg(args, key) == Some("true")
}

/// Whether `user` is a valid user id: 2–32 of `a-z0-9._-`, starting with a letter.
pub fn valid_user_id(user: &str) -> bool {
    (2..=32).contains(&user.len())
        && user.starts_with(|c: char| c.is_ascii_lowercase())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Creates the first administrator of a store that has no accounts (run offline, with the
/// service stopped). Returns the one-time credentials.
pub fn bootstrap(
    store: &Path,
    master: &vault_store::MasterKey,
    user: &str,
    name: &str,
    staff_number: &str,
    clock: &dyn Stamp,
) -> anyhow::Result<Value> {
    let mut state = State::load(store, master)?;
    if !state.accounts.is_empty() {
        anyhow::bail!("the store already has accounts; an administrator adds more with `vault admin user add`");
    }
    if !valid_user_id(user) {
        anyhow::bail!("a user id is 2–32 of a-z, 0-9, '.', '_', '-', starting with a letter");
    }
    let alerts = Alerts::new(store);
    let mut audit = open_audit(store, master, &state, &alerts, clock)?;
    let (time, status) = clock.now();
    let (account, first) = new_credentials(
        &PasswordPolicy::default(),
        &SystemRandom::new(),
        Who {
            user,
            name,
            role: Role::Administrator,
            break_glass: false,
        },
        "vault",
        &time,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut account = account;
    staff_number.trim().clone_into(&mut account.staff_number);
    state.accounts.insert(user.to_owned(), account);
    state.audit_head = Some(audit.head());
    state.save(store, master)?;
    audit.append(
        Record::new(&time, status, "vault", "user.bootstrap", "ok")
            .target(user)
            .detail("role", "administrator"),
    )?;
    audit.checkpoint(clock)?;
    save_head(store, master, &audit.head())?;
    Ok(first)
}

/// What `release.request` and `release.rebuild` answer.
fn build_result(r: &release::Release, info: &BuildInfo, report_sha: &str) -> Value {
    json!({
        "id": r.id, "state": r.state, "rows": info.rows, "levels": info.levels,
        "suppressed": info.suppressed, "smallest_class": info.min_class,
        "selection": info.selection, "report_sha256": report_sha,
        "profile": info.profile, "files": info.files,
        "findings": r.findings,
    })
}

/// The pseudonyms every opt-out of the register deleted.
fn opted_out(state: &State) -> std::collections::BTreeSet<&str> {
    state
        .optouts
        .iter()
        .flat_map(|o| o.pseudonyms.split_whitespace())
        .collect()
}

/// After an opt-out deleted `gone` from the store: removes them from every kept build
/// (R-IN-6, R-OP-6). A pending build's data files are erased, its member list rewritten
/// without them, and the release marked so that it cannot be approved or confirmed until
/// rebuilt; a cancelled or rejected one loses its data files likewise; a release already
/// provided loses the vault's copies of its data (its member list stays for the
/// cumulative checks) and is returned, so the operator can tell its recipient. Returns
/// (pending releases marked, releases already provided). Run by an opt-out and by
/// re-applying the register.
pub fn purge_builds(
    store: &Path,
    master: &vault_store::MasterKey,
    state: &mut State,
    gone: &[String],
    register: u64,
    time: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let gone: std::collections::BTreeSet<&str> = gone.iter().map(String::as_str).collect();
    let (mut marked, mut provided) = (Vec::new(), Vec::new());
    if gone.is_empty() {
        return Ok((marked, provided));
    }
    for r in state.releases.iter_mut() {
        let Some(members) = releases::members(store, &r.id, master)? else {
            continue;
        };
        if !members.iter().any(|m| gone.contains(m.as_str())) {
            continue;
        }
        let names = state
            .builds
            .get(&r.id)
            .map(|b| b.files.clone())
            .unwrap_or_default();
        releases::erase_data(store, &r.id, &names)?;
        let provided_already = matches!(r.state, Stage::Confirmed | Stage::Packaged | Stage::Sent);
        if !provided_already {
            // A provided release keeps its member list: its recipient still holds those
            // rows, and the cumulative checks must keep seeing them so that no later
            // release isolates the persons who left by difference.
            let rest: Vec<String> = members
                .into_iter()
                .filter(|m| !gone.contains(m.as_str()))
                .collect();
            releases::keep_members(store, &r.id, master, &rest)?;
        }
        if let Some(b) = state.builds.get_mut(&r.id) {
            b.erased_by.push(register);
        }
        match r.state {
            Stage::Requested | Stage::Built | Stage::Approved => {
                r.apply(Event::OptedOut { register }, time)
                    .map_err(|e| e.to_string())?;
                marked.push(r.id.clone());
            }
            Stage::Confirmed | Stage::Packaged | Stage::Sent => provided.push(r.id.clone()),
            Stage::Rejected | Stage::Cancelled => {}
        }
    }
    Ok((marked, provided))
}

/// What re-applying register lines did.
#[derive(Debug, Default)]
pub struct Reapplied {
    /// Opt-outs applied again (their register numbers).
    pub optouts: Vec<u64>,
    /// Releases set back to provided (their ids).
    pub provided: Vec<String>,
    /// Records deleted from the store meanwhile.
    pub records: u64,
}

impl Reapplied {
    /// The audit entry's details.
    pub fn detail(&self) -> BTreeMap<String, String> {
        let ids: Vec<String> = self.optouts.iter().map(u64::to_string).collect();
        BTreeMap::from([
            ("optouts".to_string(), ids.join(" ")),
            ("provided".to_string(), self.provided.join(" ")),
        ])
    }
}

/// Applies register lines that `state` does not reflect yet: each opt-out is deleted from
/// the store again (and from every kept build), each provided release is put back as
/// provided. Lines already reflected are left as they are. Used at start-up and by
/// `vault restore`.
pub async fn reapply(
    store: &vault_store::Store,
    dir: &Path,
    master: &vault_store::MasterKey,
    state: &mut State,
    lines: &[register::Line],
    time: &str,
) -> Result<Reapplied, String> {
    let mut out = Reapplied::default();
    for line in lines {
        match &line.fact {
            register::Fact::OptOut { optout } => {
                if state.optouts.iter().any(|o| o.id == optout.id) {
                    continue;
                }
                let mut gone: Vec<String> = Vec::new();
                let (mut records, mut identities, mut batches) = (0, 0, 0);
                let tag = Some(optout.tag.as_str()).filter(|t| !t.is_empty());
                let named: Vec<&str> = optout.pseudonyms.split_whitespace().collect();
                let mut asks: Vec<(Option<&str>, Option<&str>)> = Vec::new();
                if tag.is_some() {
                    asks.push((tag, None));
                }
                asks.extend(named.iter().map(|p| (None, Some(*p))));
                for (t, p) in asks {
                    let f = store
                        .forget(t, p)
                        .await
                        .map_err(|e| format!("deleting opt-out #{} again: {e}", optout.id))?;
                    records += f.records;
                    identities += f.identities;
                    batches += f.batches;
                    for p in f.pseudonyms {
                        if !gone.contains(&p) {
                            gone.push(p);
                        }
                    }
                }
                let (marked, provided) = purge_builds(dir, master, state, &gone, optout.id, time)?;
                let mut row = (**optout).clone();
                row.pseudonyms = gone.join(" ");
                row.records_deleted += records;
                row.identities_deleted += identities;
                row.batches_rewritten += batches;
                row.deleted = time.to_owned();
                row.releases_rebuild = marked;
                row.releases_provided.extend(provided);
                state.optouts.push(row);
                state.optouts.sort_by_key(|o| o.id);
                out.records += records;
                out.optouts.push(optout.id);
            }
            register::Fact::Provided { release, build } => {
                match state.releases.iter_mut().find(|r| r.id == release.id) {
                    Some(r) if r.state == Stage::Sent => continue,
                    Some(r) => *r = (**release).clone(),
                    None => state.releases.push((**release).clone()),
                }
                state.builds.insert(release.id.clone(), (**build).clone());
                out.provided.push(release.id.clone());
            }
        }
        state.register_seq = state.register_seq.max(line.seq);
    }
    Ok(out)
}

/// Checks the store's copy of a method against the hashes its approval recorded, at every
/// use (R-AN-3): an approved id must mean the approved bytes. Names the first file that was
/// changed, added or removed.
fn verify_method_files(m: &release::Method, dir: &Path) -> Result<(), String> {
    let refuse = |what: String| {
        Err(format!(
            "method {} ({}): {what}; the store's copy differs from what was approved, so \
             nothing was built (propose the changed files as a new method)",
            m.name, m.id
        ))
    };
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("method {}: {}: {e}", m.name, dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    for name in &present {
        if !m.files.iter().any(|(n, _)| n == name) {
            return refuse(format!("file {name} was added"));
        }
    }
    for (name, approved) in &m.files {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => return refuse(format!("file {name} is missing")),
        };
        let got = hex::encode(sha256(&bytes));
        if &got != approved {
            return refuse(format!(
                "file {name} has SHA-256 {got}, approved {approved}"
            ));
        }
    }
    Ok(())
}

/// Refuses a pseudonymized release (仮名加工医療情報) to a recipient not registered as a
/// certified user (認定利用事業者): the Act as amended in 2024 allows it to no one else.
fn certified_for(profile: &str, recipient: &Recipient) -> Result<(), String> {
    if profile == "pseudonymized" && recipient.certified_user.is_none() {
        return Err(format!(
            "recipient {:?} is not registered as a certified user (認定利用事業者); a \
             pseudonymized release (仮名加工医療情報) goes only to one (`vault admin recipient \
             add --certified-user NUMBER`)",
            recipient.id
        ));
    }
    Ok(())
}
