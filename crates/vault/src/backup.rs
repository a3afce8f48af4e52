//! Backups of the whole encrypted state (R-OP-8) to a folder on offline media, verified after
//! writing, and restores that end with the same state digest the backup recorded.
//!
//! A backup is authenticated: `manifest.mac` is an HMAC of `manifest.json` under a key
//! derived from the master key, which a backup without `--include-keys` does not hold, so a
//! backup edited after the fact (a log truncated and its hash in the manifest fixed) is
//! refused at restore (issue #31, item 4). A restore re-applies the register kept apart
//! (`admin::register`): every opt-out and provided release since the backup was taken, and
//! a restore that fails removes what it wrote.
//!
//! What a backup holds: every file of the store folder (encrypted record batches, sealed
//! quarantine, the sealed operator state, the audit log and its archives, alerts, public
//! keys, `store.id`) and the metadata tables as data (so a SQLite store can be restored into
//! PostgreSQL and back). Secret keys are left out unless asked for: they belong on separate
//! offline media (docs/operations.md), since whoever holds both can read everything.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ring::digest;
use serde::{Deserialize, Serialize};
use vault_store::{Store, TableDump};

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the store folder.
    pub path: String,
    /// Size.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// `manifest.json` of a backup, written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The store's id.
    pub store_id: String,
    /// Files, by relative path.
    pub files: Vec<FileEntry>,
    /// Rows per table.
    pub tables: Vec<(String, u64)>,
    /// SHA-256 of `tables.json`.
    pub tables_sha256: String,
    /// Whether the secret keys are in it.
    pub keys_included: bool,
    /// The state digest (see [`digest`]).
    pub state_digest: String,
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Whether a path of the store folder is state (backed up and digested). The database file,
/// locks and temporary files are not; secret keys are state but are backed up only on request.
fn is_state(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    !(rel.starts_with("meta.sqlite")
        || name.ends_with(".lock")
        || name.ends_with(".tmp")
        || name.starts_with('.')
        || rel.ends_with(".sock"))
}

fn is_secret(rel: &str) -> bool {
    rel.starts_with("keys/") && rel.ends_with(".key")
}

/// Every state file under `dir`, as sorted relative paths.
fn state_files(dir: &Path) -> Result<Vec<String>> {
    let (files, _) = walk(dir)?;
    let mut out: Vec<String> = files
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok())
        .map(|r| r.to_string_lossy().replace('\\', "/"))
        .filter(|rel| is_state(rel))
        .collect();
    out.sort();
    Ok(out)
}

/// The regular files and the folders below `dir` (nothing when it does not exist).
fn walk(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    if !dir.exists() {
        return Ok((files, dirs));
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                stack.push(e.path());
                dirs.push(e.path());
            } else if kind.is_file() {
                files.push(e.path());
            }
        }
    }
    Ok((files, dirs))
}

/// The state digest: SHA-256 over the metadata tables and every state file but the secret
/// keys (path and content). Two stores with the same digest hold the same state.
pub async fn digest(dir: &Path, store: &Store) -> Result<String> {
    let tables = store.dump_tables().await?;
    let mut files = Vec::new();
    for rel in state_files(dir)? {
        let bytes = fs::read(dir.join(&rel)).with_context(|| format!("reading {rel}"))?;
        files.push((rel, sha256(&bytes)));
    }
    Ok(digest_of(
        &tables,
        files.iter().map(|(r, h)| (r.as_str(), h.as_str())),
    ))
}

/// The digest of tables and of (relative path, SHA-256) pairs in path order; secret keys
/// are left out.
fn digest_of<'a>(tables: &[TableDump], files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(vault_store::tables_digest(tables).as_bytes());
    for (rel, hash) in files.filter(|(r, _)| !is_secret(r)) {
        ctx.update(format!("\n{rel}\t{hash}").as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Backs up the store at `dir` (opened as its writer, so nothing changes meanwhile) into the
/// empty or new folder `to`, then reads everything back and checks it against the manifest.
pub async fn backup(
    dir: &Path,
    store: &Store,
    master: &vault_store::MasterKey,
    to: &Path,
    include_keys: bool,
) -> Result<Manifest> {
    if to.exists() && fs::read_dir(to)?.next().is_some() {
        bail!("{} is not empty; back up into a new folder", to.display());
    }
    fs::create_dir_all(to)?;
    let mut files = Vec::new();
    for rel in state_files(dir)? {
        if is_secret(&rel) && !include_keys {
            continue;
        }
        let bytes = fs::read(dir.join(&rel)).with_context(|| format!("reading {rel}"))?;
        write_file(&to.join("files").join(&rel), &bytes)?;
        files.push(FileEntry {
            path: rel,
            bytes: bytes.len() as u64,
            sha256: sha256(&bytes),
        });
    }
    let tables = store.dump_tables().await?;
    let json = serde_json::to_vec(&tables)?;
    write_file(&to.join("tables.json"), &json)?;
    let store_id = fs::read_to_string(dir.join("store.id"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    // From what was just read: this process is the store's only writer, so nothing
    // changed meanwhile, and reading every file a second time would only cost. Secret
    // keys are not in the digest, so leaving them out above does not change it.
    let state_digest = digest_of(
        &tables,
        files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())),
    );
    let manifest = Manifest {
        version: 1,
        store_id,
        files,
        tables: tables
            .iter()
            .map(|t| (t.table.clone(), t.rows.len() as u64))
            .collect(),
        tables_sha256: sha256(&json),
        keys_included: include_keys,
        state_digest,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    write_file(&to.join("manifest.json"), &manifest_bytes)?;
    let tag = master.mac(&mac_place(&manifest.store_id), &manifest_bytes);
    write_file(
        &to.join(MAC_FILE),
        format!("{}\n", hex::encode(tag)).as_bytes(),
    )?;
    fs::File::open(to)?.sync_all()?;
    verify(to, master).context("the backup does not read back as written")?;
    Ok(manifest)
}

/// The file beside `manifest.json` that authenticates it.
pub const MAC_FILE: &str = "manifest.mac";

fn mac_place(store_id: &str) -> String {
    format!("backup-manifest/{store_id}")
}

/// Reads a backup's manifest, checks its authenticator under `master`, then every file and
/// the tables against it.
pub fn verify(from: &Path, master: &vault_store::MasterKey) -> Result<(Manifest, Vec<TableDump>)> {
    let checked = check_files(from)?;
    authenticate(from, master, &checked.0)?;
    Ok(checked)
}

/// Checks `manifest.json` against its authenticator `manifest.mac` under `master`.
fn authenticate(from: &Path, master: &vault_store::MasterKey, manifest: &Manifest) -> Result<()> {
    let path = from.join("manifest.json");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mac_path = from.join(MAC_FILE);
    let tag = fs::read_to_string(&mac_path).with_context(|| {
        format!(
            "reading {}: a backup without its authenticator is not restored",
            mac_path.display()
        )
    })?;
    let tag = hex::decode(tag.trim()).unwrap_or_default();
    if !master.check_mac(&mac_place(&manifest.store_id), &bytes, &tag) {
        bail!(
            "backup not authentic: {} does not verify under this store's master key (the \
             manifest was changed after the backup was written, or the backup is of another \
             store)",
            path.display()
        );
    }
    Ok(())
}

/// Reads a backup's manifest and checks every file and the tables against it (damage, not
/// authenticity: that needs the master key, see [`verify`]).
fn check_files(from: &Path) -> Result<(Manifest, Vec<TableDump>)> {
    let path = from.join("manifest.json");
    let bytes = fs::read(&path)
        .with_context(|| format!("reading {} (not a complete backup?)", path.display()))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?;
    for f in &manifest.files {
        let p = from.join("files").join(&f.path);
        let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        if sha256(&bytes) != f.sha256 || bytes.len() as u64 != f.bytes {
            bail!("backup damaged: {} differs from its manifest entry", f.path);
        }
    }
    let json = fs::read(from.join("tables.json")).context("reading tables.json")?;
    if sha256(&json) != manifest.tables_sha256 {
        bail!("backup damaged: tables.json differs from its manifest entry");
    }
    let tables: Vec<TableDump> = serde_json::from_slice(&json).context("tables.json")?;
    Ok((manifest, tables))
}

/// Where a restore put things.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The restored store's digest (equal to the manifest's, else the restore fails),
    /// before the register was re-applied.
    pub digest: String,
    /// What re-applying the register did.
    pub reapplied: crate::admin::service::Reapplied,
}

/// Restores the backup at `from` into the store folder `dir` (new, or holding only the keys
/// put back from their own backup) and the empty database `database`, then re-applies the
/// register at `register` (every opt-out and provided release since the backup). A restore
/// that fails removes every file it wrote (files that were there before stay).
pub async fn restore(
    from: &Path,
    dir: &Path,
    database: &vault_store::Database,
    register: &Path,
) -> Result<Restored> {
    let before: BTreeSet<PathBuf> = walk(dir)?.0.into_iter().collect();
    let existed = dir.exists();
    let result = restore_in(from, dir, database, register).await;
    if result.is_err() {
        clean_up(dir, existed, &before);
    }
    result
}

/// Removes what a failed restore wrote under `dir`: every file not in `before`, then the
/// folders left empty (deepest first), or the whole folder when the restore made it.
fn clean_up(dir: &Path, existed: bool, before: &BTreeSet<PathBuf>) {
    if !existed {
        let _ = fs::remove_dir_all(dir);
        return;
    }
    let Ok((files, dirs)) = walk(dir) else {
        return;
    };
    for f in files.iter().filter(|f| !before.contains(*f)) {
        let _ = fs::remove_file(f);
    }
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// The master key a restore uses: the one put back into `dir/keys/`, else the backup's own
/// copy when it was made with `--include-keys`.
fn restore_master(from: &Path, dir: &Path) -> Result<keystore::LinkSecret> {
    let put_back = dir.join("keys/master.key");
    let in_backup = from.join("files/keys/master.key");
    let file = if put_back.exists() {
        put_back
    } else if in_backup.exists() {
        in_backup
    } else {
        bail!(
            "no master key in {}: put keys/master.key and keys/link.key back from their offline \
             backup first",
            dir.display()
        );
    };
    keystore::load_link_key(&file)
        .with_context(|| format!("loading the master key {}", file.display()))
}

async fn restore_in(
    from: &Path,
    dir: &Path,
    database: &vault_store::Database,
    register_path: &Path,
) -> Result<Restored> {
    // Damage first (no key needed, so a bad copy is named as such), then authenticity.
    let (manifest, tables) = check_files(from)?;
    let secret = restore_master(from, dir)?;
    let master = || vault_store::MasterKey::new(*secret.key).context("master key");
    let checking = master()?;
    authenticate(from, &checking, &manifest)?;
    if !register_path.exists() {
        bail!(
            "no register at {}: a restore needs the register kept apart from the store (every \
             opt-out and release provided since the backup), or it would bring opted-out \
             persons back (docs/operations.md, \"Backup and restore\")",
            register_path.display()
        );
    }
    let register =
        crate::admin::register::Register::open(register_path, &manifest.store_id, &checking)
            .context("reading the register")?;
    if dir.join("records").exists() && fs::read_dir(dir.join("records"))?.next().is_some() {
        bail!(
            "{} already holds record batches; restore into a new or wiped store folder",
            dir.display()
        );
    }
    // Everything but the batches first, so that the store opens (and binds its id) before
    // any batch exists; then the tables; then the batches.
    let (batches, rest): (Vec<&FileEntry>, Vec<&FileEntry>) = manifest
        .files
        .iter()
        .partition(|f| f.path.starts_with("records/"));
    for f in &rest {
        let target = dir.join(&f.path);
        let bytes = fs::read(from.join("files").join(&f.path))?;
        if is_secret(&f.path) && target.exists() {
            if fs::read(&target)? != bytes {
                bail!(
                    "{} exists and differs from the backup's copy",
                    target.display()
                );
            }
            continue;
        }
        write_file(&target, &bytes)?;
        if is_secret(&f.path) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600))?;
        }
    }
    for d in ["records", "quarantine"] {
        fs::create_dir_all(dir.join(d))?;
    }
    {
        let store = Store::open_with(dir, master()?, database).await?;
        if !store.tables_empty().await? {
            bail!("the metadata database ({database:?}) is not empty; restore into an empty one");
        }
        store.load_tables(&tables).await?;
    }
    for f in &batches {
        write_file(
            &dir.join(&f.path),
            &fs::read(from.join("files").join(&f.path))?,
        )?;
    }
    fs::File::open(dir.join("records"))?.sync_all()?;
    let store = Store::open_with(dir, master()?, database).await?;
    let got = digest(dir, &store).await?;
    if got != manifest.state_digest {
        bail!(
            "the restored store's digest {got} differs from the backup's {}",
            manifest.state_digest
        );
    }
    let reapplied = reapply_register(dir, &store, &checking, &register).await?;
    let target = crate::admin::register::default_path(dir);
    if target != register_path && !target.exists() {
        register
            .copy_to(&target)
            .context("copying the register beside the restored store")?;
    }
    Ok(Restored {
        manifest,
        digest: got,
        reapplied,
    })
}

/// Applies the register lines the restored state does not reflect, and audits it.
async fn reapply_register(
    dir: &Path,
    store: &Store,
    master: &vault_store::MasterKey,
    register: &crate::admin::register::Register,
) -> Result<crate::admin::service::Reapplied> {
    use crate::admin::state::State;
    let mut state = State::load(dir, master)?;
    let (time, clock) = audit::Stamp::now(&audit::SystemClock);
    let have = register.lines().len() as u64;
    if have < state.register_seq {
        bail!(
            "the register {} holds {have} line(s), but the backup's state applied {}: it is \
             not this store's register, or it was cut short",
            register.path().display(),
            state.register_seq
        );
    }
    let pending = &register.lines()[state.register_seq as usize..];
    if pending.is_empty() {
        // Nothing happened since the backup: the store stays exactly the backup's state.
        return Ok(crate::admin::service::Reapplied::default());
    }
    let summary = crate::admin::service::reapply(store, dir, master, &mut state, pending, &time)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let alerts = crate::admin::alerts::Alerts::new(dir);
    let mut log =
        crate::admin::service::open_audit(dir, master, &state, &alerts, &audit::SystemClock)?;
    let mut record = audit::Record::new(&time, clock, "vault", "backup.restore", "ok")
        .records(summary.records)
        .detail("register_lines", have.to_string());
    for (k, v) in summary.detail() {
        record = record.detail(&k, v);
    }
    log.append(record)?;
    log.checkpoint(&audit::SystemClock)?;
    state.audit_head = Some(log.head());
    state.save(dir, master)?;
    crate::admin::state::save_head(dir, master, &log.head())?;
    Ok(summary)
}
