//! The operators' state, kept sealed under the store's master key (R-OP-5) in
//! `STORE/admin/state.sealed`: accounts (password hashes, TOTP secrets, lockout state) and the
//! governance registers — institutions (R-IN-3), opt-outs with their deletion records (R-IN-6,
//! R-OP-6), media disposal (R-OP-6), installed software (R-OP-7). Rewritten whole and
//! atomically on every change; it is small (kilobytes per account or register row).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use accounts::{Lockout, Role, StoredPassword};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One operator account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    /// The person's own user id (R-OP-1: one per person).
    pub user: String,
    /// Full name, for the registers.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// A break-glass account: every login raises an alert, sessions are short.
    pub break_glass: bool,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// Must change the password before doing anything else (after creation or reset).
    pub must_change: bool,
    /// Current password first, then the previous ones.
    pub passwords: Vec<StoredPassword>,
    /// TOTP secret, hex.
    pub totp: String,
    /// Step of the last accepted TOTP code.
    pub totp_last: Option<u64>,
    /// Failed-login state.
    pub lockout: Lockout,
    /// When created (RFC 3339) and by whom.
    pub created: String,
    /// See `created`.
    pub created_by: String,
    /// Last successful login (RFC 3339).
    pub last_login: Option<String>,
    /// The person's staff number: with the name, who the account belongs to. The two-person
    /// rules compare persons, not accounts, and one person holds one active account.
    #[serde(default)]
    pub staff_number: String,
    /// A pending enrolment: the account has no password or TOTP secret until its person
    /// redeems the one-time token (`vault admin enrol`), so no administrator ever sees them.
    #[serde(default)]
    pub enrolment: Option<Enrolment>,
}

/// A one-time enrolment token, kept only as its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// Unix time after which it no longer works.
    pub expires: u64,
    /// The administrator who issued it.
    pub issued_by: String,
}

impl Account {
    /// The name as compared between accounts: without spaces (ASCII or full-width) and in
    /// lower case, so `管理 太郎` and `管理　太郎` are one name.
    pub fn name_key(&self) -> String {
        self.name
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    }

    /// Whether two accounts belong to one person: the same staff number, or the same name.
    pub fn same_person(&self, other: &Account) -> bool {
        (!self.staff_number.is_empty() && self.staff_number == other.staff_number)
            || self.name_key() == other.name_key()
    }
}

/// A registered institution (R-IN-3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Institution {
    /// Party id (the certificate's subject and the signing key's owner).
    pub id: String,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Representative.
    pub representative: String,
    /// How the data is obtained (the agreement, notice to patients …).
    pub obtained: String,
    /// SHA-256 fingerprint of its client certificate.
    pub certificate: String,
    /// Key id of its Ed25519 signing key.
    pub signing_key: String,
    /// When registered, and by whom.
    pub registered: String,
    /// See `registered`.
    pub registered_by: String,
}

/// An opt-out (R-IN-6) and the deletion it caused (R-OP-6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// Register number.
    pub id: u64,
    /// The institution whose patient id named the person (empty when named by pseudonym).
    pub institution: String,
    /// Keyed tag of that patient id (the id itself is not kept).
    pub tag: String,
    /// The pseudonyms whose data was deleted (empty when the store held nothing yet; later
    /// records of the person are then left out at intake).
    pub pseudonyms: String,
    /// Who asked (the institution's notice, the person, …).
    pub source: String,
    /// When it was entered, and by whom.
    pub received: String,
    /// See `received`.
    pub entered_by: String,
    /// Records deleted from the store.
    pub records_deleted: u64,
    /// Sealed identity rows deleted.
    pub identities_deleted: u64,
    /// Batch files rewritten without the person.
    pub batches_rewritten: u64,
    /// When the deletion finished.
    pub deleted: String,
    /// Pending releases whose build held the person: erased, to be rebuilt before approval.
    #[serde(default)]
    pub releases_rebuild: Vec<String>,
    /// Releases already provided that held the person: the operator tells their recipients.
    #[serde(default)]
    pub releases_provided: Vec<String>,
}

/// A disposed storage medium (R-OP-6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposal {
    /// Register number.
    pub id: u64,
    /// What the medium was (serial number, kind).
    pub medium: String,
    /// How it was disposed of (degaussed, shredded, crypto-erased …).
    pub method: String,
    /// Who witnessed it.
    pub witness: String,
    /// Certificate or reference of the disposal contractor.
    pub reference: String,
    /// When, and who recorded it.
    pub recorded: String,
    /// See `recorded`.
    pub recorded_by: String,
}

/// One installed program (R-OP-7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    /// Path of the file.
    pub path: String,
    /// Version, where known.
    pub version: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was recorded, and by whom.
    pub recorded: String,
    /// See `recorded`.
    pub recorded_by: String,
}

/// Everything in `state.sealed`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Accounts by user id.
    pub accounts: BTreeMap<String, Account>,
    /// Institutions by id.
    pub institutions: BTreeMap<String, Institution>,
    /// Opt-outs, in order.
    pub optouts: Vec<OptOut>,
    /// Disposals, in order.
    pub disposals: Vec<Disposal>,
    /// Software inventory snapshots, in order.
    pub inventory: Vec<Software>,
    /// Anonymization methods, proposed and approved (R-AN-3).
    #[serde(default)]
    pub methods: Vec<release::Method>,
    /// Registered recipients of releases, by id.
    #[serde(default)]
    pub recipients: BTreeMap<String, Recipient>,
    /// Releases, in order of request (R-RL-1, R-RL-2).
    #[serde(default)]
    pub releases: Vec<release::Release>,
    /// What each release's build produced, by release id.
    #[serde(default)]
    pub builds: BTreeMap<String, BuildInfo>,
    /// Onward recipients as recipients reported them (R-RL-3).
    #[serde(default)]
    pub onward: Vec<Onward>,
    /// The audit log's last entry when this state was saved: a state newer than the log
    /// beside it (the log cut back or replaced after the fact) is refused at start.
    #[serde(default)]
    pub audit_head: Option<audit::Head>,
    /// Lines of the register kept apart ([`super::register`]) that this state reflects.
    #[serde(default)]
    pub register_seq: u64,
}

/// A researcher or organisation that may receive releases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Id (the owner of its encryption key).
    pub id: String,
    /// Name of the person responsible.
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Its X25519 public key (envelope text form): packages are sealed to it.
    pub key: String,
    /// Contact (address, e-mail) for the ledger.
    pub contact: String,
    /// When registered, and by whom.
    pub registered: String,
    /// See `registered`.
    pub registered_by: String,
    /// Registration number as a certified user (認定利用事業者) under the Act as amended in
    /// 2024; only such recipients may receive pseudonymized releases (仮名加工医療情報).
    #[serde(default)]
    pub certified_user: Option<String>,
}

/// What building a release produced (the files themselves are sealed beside the state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Rows in the released table.
    pub rows: u64,
    /// Its columns.
    pub columns: Vec<String>,
    /// Who was selected and who was left out, and why.
    pub selection: release::cohort::Selection,
    /// Generalization levels, `column=level` joined by spaces.
    pub levels: String,
    /// Records suppressed.
    pub suppressed: u64,
    /// Smallest equivalence class.
    pub min_class: u64,
    /// The method's quasi-identifier columns (for the cumulative-release checks).
    #[serde(default)]
    pub quasi: Vec<String>,
    /// Name of the method.
    pub method_name: String,
    /// When the package went into the egress outbox, and its file name there.
    pub sent: Option<String>,
    /// See `sent`.
    pub outbox_file: Option<String>,
    /// `anonymized` or `pseudonymized` (the method's profile).
    #[serde(default = "anonymized")]
    pub profile: String,
    /// Names of the built files, in package order.
    #[serde(default = "row_files")]
    pub files: Vec<String>,
    /// Opt-outs (register numbers) that erased this build's data files (the report stays).
    #[serde(default)]
    pub erased_by: Vec<u64>,
}

fn anonymized() -> String {
    "anonymized".into()
}

fn row_files() -> Vec<String> {
    crate::releases::FILES
        .iter()
        .map(|f| (*f).to_owned())
        .collect()
}

/// An onward recipient reported by a recipient (R-RL-3, R-RL-4: onward provision needs the
/// operator's permission, recorded here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onward {
    /// Register number.
    pub id: u64,
    /// The release passed on.
    pub release: String,
    /// Who passed it on (the recipient).
    pub from: String,
    /// Who received it.
    pub to: String,
    /// For what.
    pub purpose: String,
    /// The operator's permission (reference to the written record).
    pub permission: String,
    /// When it was reported.
    pub reported: String,
    /// Entered by.
    pub entered_by: String,
}

/// The file the state lives in.
pub fn path(store: &Path) -> PathBuf {
    store.join("admin/state.sealed")
}

const PLACE: &str = "admin/state";

impl State {
    /// Reads the state; a store without one has no accounts yet.
    pub fn load(store: &Path, master: &vault_store::MasterKey) -> anyhow::Result<Self> {
        let p = path(store);
        let sealed = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
        };
        let plain = Zeroizing::new(
            master
                .open_state(PLACE, &sealed)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        );
        serde_json::from_slice(&plain).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    }

    /// Writes the state atomically (temporary file, fsync, rename, folder fsync).
    pub fn save(&self, store: &Path, master: &vault_store::MasterKey) -> anyhow::Result<()> {
        let p = path(store);
        let dir = store.join("admin");
        fs::create_dir_all(&dir)?;
        let plain = Zeroizing::new(serde_json::to_vec(self)?);
        let sealed = master
            .seal_state(PLACE, &plain)
            .map_err(|e| anyhow::anyhow!("sealing the operator state: {e}"))?;
        vault_store::write_synced(&p, &sealed)?;
        Ok(())
    }
}

/// The file the audit log's head is sealed in, rewritten after every entry.
pub fn head_path(store: &Path) -> PathBuf {
    store.join("admin/audit.head.sealed")
}

const HEAD_PLACE: &str = "admin/audit-head";

/// Seals the audit log's head (after every entry, before the action is reported done).
pub fn save_head(
    store: &Path,
    master: &vault_store::MasterKey,
    head: &audit::Head,
) -> anyhow::Result<()> {
    let plain = serde_json::to_vec(head)?;
    let sealed = master
        .seal_state(HEAD_PLACE, &plain)
        .map_err(|e| anyhow::anyhow!("sealing the audit head: {e}"))?;
    vault_store::write_synced(&head_path(store), &sealed)?;
    Ok(())
}

/// The sealed audit head, if the store has one. A file that does not open under the master
/// key is an error, not an absence.
pub fn load_head(
    store: &Path,
    master: &vault_store::MasterKey,
) -> anyhow::Result<Option<audit::Head>> {
    let p = head_path(store);
    let sealed = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
    };
    let plain = master
        .open_state(HEAD_PLACE, &sealed)
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    Ok(Some(
        serde_json::from_slice(&plain).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
    ))
}
