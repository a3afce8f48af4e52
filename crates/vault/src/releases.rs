//! Building and packaging releases inside the vault (issue #10): the cohort dataset from the
//! store (opted-out persons never included, R-IN-6), the approved method run over it
//! (R-AN-3), and — after the two reviewers — the signed package sealed to the recipient and
//! put into the outbox of the one-way link to egress (R-GW-5). The rules themselves (who may
//! do what, what a package holds) are the pure `release` crate; this is the I/O around them.
//!
//! Files: `STORE/admin/releases/ID/{data.csv,data.parquet,report.json}.sealed` (sealed under
//! the master key, like the operator state) and `package.envelope` (already sealed to the
//! recipient). The dataset exists in clear only in a work folder inside the store while the
//! method runs, and is removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anonymize::job;
use release::cohort::{self, Cohort, Person, Selection};
use serde_json::Value;
use vault_store::{MasterKey, Store};

/// Names of the built files, in package order.
pub const FILES: [&str; 3] = ["data.csv", "data.parquet", "report.json"];

/// What a build produced.
pub struct Built {
    /// The files of [`FILES`], in order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Rows released (suppressed rows included, their quasi-identifiers `*`).
    pub rows: u64,
    /// Released columns.
    pub columns: Vec<String>,
    /// Who was in the dataset.
    pub selection: Selection,
    /// `column=level` per quasi-identifier.
    pub levels: String,
    /// Records suppressed.
    pub suppressed: u64,
    /// Smallest class.
    pub min_class: u64,
    /// Pseudonyms of the persons in the dataset, sorted (kept sealed, never released).
    pub members: Vec<String>,
    /// The method's quasi-identifier columns.
    pub quasi: Vec<String>,
    /// The method's k.
    pub k: u64,
}

/// The folder of release `id`.
pub fn home(store: &Path, id: &str) -> PathBuf {
    store.join("admin/releases").join(id)
}

/// Reads what the store knows of each linked person.
pub async fn persons(store: &Store) -> Result<BTreeMap<String, Person>, String> {
    let mut out: BTreeMap<String, Person> = BTreeMap::new();
    for (pseudonym, json) in store.identities().await.map_err(|e| e.to_string())? {
        let v: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
        let p = out.entry(pseudonym).or_default();
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        p.birth = p.birth.take().or_else(|| text("birth"));
        p.sex = p.sex.or_else(|| text("sex").and_then(|s| s.chars().next()));
        p.postal = p.postal.take().or_else(|| text("postal"));
    }
    let frame = store.records().await.map_err(|e| e.to_string())?;
    let col = |name: &str| {
        frame
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(|e| format!("records column {name}: {e}"))
    };
    let (inst, pseud, kind, date, code) = (
        col("institution")?,
        col("pseudonym")?,
        col("kind")?,
        col("date")?,
        col("code")?,
    );
    for i in 0..frame.height() {
        let Some(p) = pseud.get(i).filter(|p| *p != "unlinked") else {
            continue;
        };
        // Records of persons without an identity cannot be placed in a dataset.
        let Some(person) = out.get_mut(p) else {
            continue;
        };
        if let Some(inst) = inst.get(i) {
            person.institutions.insert(inst.to_owned());
        }
        if kind.get(i) == Some("diagnosis") {
            if let Some(c) = code.get(i) {
                person
                    .diagnoses
                    .push((date.get(i).map(str::to_owned), c.to_owned()));
            }
        }
    }
    Ok(out)
}

/// Builds release data: the dataset of `cohort` (ages on `as_of`), the method in
/// `method_dir` run over it in `work` (removed afterwards, whatever happens).
pub fn build(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    method_dir: &Path,
    cohort: &Cohort,
    as_of: &str,
    work: &Path,
) -> Result<Built, String> {
    let result = build_in(store, runtime, method_dir, cohort, as_of, work);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn build_in(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    method_dir: &Path,
    cohort: &Cohort,
    as_of: &str,
    work: &Path,
) -> Result<Built, String> {
    let settings_path = method_dir.join("method.json");
    let settings: job::Settings = serde_json::from_slice(
        &std::fs::read(&settings_path).map_err(|e| format!("{}: {e}", settings_path.display()))?,
    )
    .map_err(|e| format!("the method's method.json: {e}"))?;
    let parsed = job::hierarchies(&settings, |file| {
        if file.contains('/') || file.starts_with('.') {
            return Err(format!(
                "{file}: a method names files of its own folder only"
            ));
        }
        std::fs::read(method_dir.join(file)).map_err(|e| format!("{file}: {e}"))
    })
    .map_err(|e| e.to_string())?;
    let (persons, opted) = runtime.block_on(async {
        let persons = persons(store).await?;
        let opted = store.opted_out().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((persons, opted))
    })?;
    let (rows, selection, members) = cohort::dataset_with_members(&persons, &opted, cohort, as_of);
    if rows.is_empty() {
        return Err(format!(
            "the cohort is empty ({} persons in the store: {} outside the selection, {} opted \
             out, {} without birth date, sex or postal code)",
            selection.persons, selection.outside, selection.opted_out, selection.incomplete
        ));
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let input = work.join("dataset.csv");
    let output = work.join("released.csv");
    let mut w = csv::Writer::from_path(&input).map_err(|e| e.to_string())?;
    w.write_record(cohort::COLUMNS).map_err(|e| e.to_string())?;
    for r in &rows {
        w.write_record(r).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    drop(w);
    let files = job::Files {
        input: &input,
        output: &output,
        delimiter: b',',
        suppressed_column: None,
    };
    let mut outcome =
        job::run(&settings, &parsed, &files, &mut job::Quiet).map_err(|e| e.to_string())?;
    // The work folder's path means nothing to a reader of the report.
    if let Some(cfg) = outcome.report.get_mut("config") {
        cfg["input"] = Value::String("cohort dataset".into());
    }
    let csv_bytes = std::fs::read(&output).map_err(|e| format!("{}: {e}", output.display()))?;
    let mut reader = csv::Reader::from_reader(&csv_bytes[..]);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut table = Vec::new();
    for r in reader.records() {
        table.push(
            r.map_err(|e| e.to_string())?
                .iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    let parquet = vault_store::strings_to_parquet(&columns, &table).map_err(|e| e.to_string())?;
    let report = serde_json::to_vec_pretty(&outcome.report).unwrap_or_default();
    let levels = outcome
        .columns
        .iter()
        .zip(&outcome.best.levels)
        .map(|(c, l)| format!("{c}={l}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Built {
        files: vec![
            (FILES[0].into(), csv_bytes),
            (FILES[1].into(), parquet),
            (FILES[2].into(), report),
        ],
        rows: outcome.written_rows,
        columns,
        selection,
        levels,
        suppressed: outcome.best.suppressed,
        min_class: outcome.best.min_class,
        members,
        quasi: outcome.columns.clone(),
        k: settings.k,
    })
}

/// Name of the sealed list of a release's persons.
const MEMBERS: &str = "members.txt";

/// Seals the pseudonyms of a release's persons beside its files, for later comparisons.
pub fn keep_members(
    store: &Path,
    id: &str,
    master: &MasterKey,
    members: &[String],
) -> Result<(), String> {
    let mut text = members.join("\n");
    text.push('\n');
    keep(
        store,
        id,
        master,
        &[(MEMBERS.to_owned(), text.into_bytes())],
    )
}

/// The persons of release `id` (sorted), or `None` for a release built before they were
/// kept.
pub fn members(store: &Path, id: &str, master: &MasterKey) -> Result<Option<Vec<String>>, String> {
    let path = home(store, id).join(format!("{MEMBERS}.sealed"));
    let sealed = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let plain = master
        .open_state(&format!("release/{id}/{MEMBERS}"), &sealed)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(plain).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(text.lines().map(str::to_owned).collect()))
}

/// Seals the built files under the master key into the release's folder.
pub fn keep(
    store: &Path,
    id: &str,
    master: &MasterKey,
    files: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let dir = home(store, id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, bytes) in files {
        let sealed = master
            .seal_state(&format!("release/{id}/{name}"), bytes)
            .map_err(|e| e.to_string())?;
        vault_store::write_synced(&dir.join(format!("{name}.sealed")), &sealed)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Opens the built files of release `id`.
pub fn kept(store: &Path, id: &str, master: &MasterKey) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = home(store, id);
    let mut out = Vec::new();
    for name in FILES {
        let path = dir.join(format!("{name}.sealed"));
        let sealed = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let plain = master
            .open_state(&format!("release/{id}/{name}"), &sealed)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        out.push((name.to_owned(), plain));
    }
    Ok(out)
}

/// Seals `archive` to the recipient and signs it with the vault's release key; writes it as
/// `package.envelope` in the release's folder and returns its bytes.
pub fn seal_package(
    store: &Path,
    id: &str,
    archive: &[u8],
    recipient: &envelope::RecipientPublicKey,
    key: &envelope::SigningKey,
) -> Result<Vec<u8>, String> {
    let rng = ring::rand::SystemRandom::new();
    let params = envelope::SealParams {
        recipient,
        signer: key,
        content_type: envelope::ContentType::Release,
        segment_size: envelope::DEFAULT_SEGMENT_SIZE,
    };
    let measured = envelope::measure(archive).map_err(|e| e.to_string())?;
    let mut sealed = Vec::new();
    envelope::seal(params, measured, &rng, archive, &mut sealed).map_err(|e| e.to_string())?;
    vault_store::write_synced(&home(store, id).join("package.envelope"), &sealed)
        .map_err(|e| e.to_string())?;
    Ok(sealed)
}

/// Puts a sealed package into the egress outbox's `incoming/` under `name` (written under a
/// dot name, synced, then renamed: the link's sender never sees half a file).
pub fn enqueue(outbox: &Path, name: &str, sealed: &[u8]) -> Result<(), String> {
    let incoming = outbox.join("incoming");
    std::fs::create_dir_all(&incoming).map_err(|e| format!("{}: {e}", incoming.display()))?;
    let tmp = incoming.join(format!(".{name}.part"));
    vault_store::write_synced(&tmp, sealed).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, incoming.join(name)).map_err(|e| format!("{}: {e}", incoming.display()))
}
