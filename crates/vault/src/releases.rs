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
use anonymize::person::{self, PersonFiles, PersonSettings, ReleaseKey};
use release::cohort::{self, Cohort, Person, Selection};
use serde_json::Value;
use vault_store::{MasterKey, Store};

/// Names of the built files, in package order.
pub const FILES: [&str; 3] = ["data.csv", "data.parquet", "report.json"];
/// The same for a person-level release.
pub const PERSON_FILES: [&str; 3] = ["persons.csv", "events.csv", "report.json"];

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
    /// `anonymized` or `pseudonymized`.
    pub profile: String,
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

/// What a method's `method.json` asks for: a table of one row per person (the
/// `anonymize` settings), or a person table with its diagnoses as events (the
/// `anonymize-persons` settings, recognised by their `model` field).
pub enum MethodPlan {
    /// Row-level: [`cohort::COLUMNS`].
    Rows(Box<job::Settings>),
    /// Person-level: [`cohort::PERSON_COLUMNS`] and [`cohort::EVENT_COLUMNS`].
    Persons(Box<PersonSettings>),
}

impl MethodPlan {
    /// Reads `method_dir/method.json`.
    pub fn read(method_dir: &Path) -> Result<Self, String> {
        let path = method_dir.join("method.json");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("the method's method.json: {e}"))?;
        if value.get("model").is_some() {
            let settings: PersonSettings = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the method's method.json (person-level): {e}"))?;
            Ok(Self::Persons(Box::new(settings)))
        } else {
            let settings: job::Settings = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the method's method.json: {e}"))?;
            Ok(Self::Rows(Box::new(settings)))
        }
    }

    /// `anonymized` or `pseudonymized`.
    pub fn profile(&self) -> &'static str {
        match self {
            Self::Rows(_) => "anonymized",
            Self::Persons(p) => p.profile.name(),
        }
    }
}

/// Reads a file of the method's own folder (and nothing outside it).
fn method_file(method_dir: &Path) -> impl FnMut(&str) -> Result<Vec<u8>, String> + '_ {
    move |file| {
        if file.contains('/') || file.starts_with('.') {
            return Err(format!(
                "{file}: a method names files of its own folder only"
            ));
        }
        std::fs::read(method_dir.join(file)).map_err(|e| format!("{file}: {e}"))
    }
}

fn write_rows<const N: usize>(
    path: &Path,
    header: [&str; N],
    rows: &[[String; N]],
) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| e.to_string())?;
    w.write_record(header).map_err(|e| e.to_string())?;
    for r in rows {
        w.write_record(r).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

fn empty_cohort(selection: &Selection) -> String {
    format!(
        "the cohort is empty ({} persons in the store: {} outside the selection, {} opted \
         out, {} without birth date, sex or postal code)",
        selection.persons, selection.outside, selection.opted_out, selection.incomplete
    )
}

fn build_in(
    store: &Store,
    runtime: &tokio::runtime::Handle,
    method_dir: &Path,
    cohort: &Cohort,
    as_of: &str,
    work: &Path,
) -> Result<Built, String> {
    let plan = MethodPlan::read(method_dir)?;
    let (persons, opted) = runtime.block_on(async {
        let persons = persons(store).await?;
        let opted = store.opted_out().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((persons, opted))
    })?;
    let settings = match plan {
        MethodPlan::Rows(settings) => settings,
        MethodPlan::Persons(settings) => {
            return build_persons(&settings, method_dir, &persons, &opted, cohort, as_of, work)
        }
    };
    let parsed = job::hierarchies(&settings, method_file(method_dir)).map_err(|e| e.to_string())?;
    let (rows, selection, members) = cohort::dataset_with_members(&persons, &opted, cohort, as_of);
    if rows.is_empty() {
        return Err(empty_cohort(&selection));
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let input = work.join("dataset.csv");
    let output = work.join("released.csv");
    write_rows(&input, cohort::COLUMNS, &rows)?;
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
    let (columns, table) = read_table(&csv_bytes)?;
    let parquet = vault_store::strings_to_parquet(&columns, &table).map_err(|e| e.to_string())?;
    let report = serde_json::to_vec_pretty(&outcome.report).unwrap_or_default();
    Ok(Built {
        files: vec![
            (FILES[0].into(), csv_bytes),
            (FILES[1].into(), parquet),
            (FILES[2].into(), report),
        ],
        rows: outcome.written_rows,
        columns,
        selection,
        levels: levels_text(&outcome),
        suppressed: outcome.best.suppressed,
        min_class: outcome.best.min_class,
        members,
        quasi: outcome.columns.clone(),
        k: settings.k,
        profile: "anonymized".into(),
    })
}

fn headers(reader: &mut csv::Reader<&[u8]>) -> Result<Vec<String>, String> {
    Ok(reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect())
}

fn read_table(csv_bytes: &[u8]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut reader = csv::Reader::from_reader(csv_bytes);
    let columns = headers(&mut reader)?;
    let mut table = Vec::new();
    for r in reader.records() {
        table.push(
            r.map_err(|e| e.to_string())?
                .iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    Ok((columns, table))
}

fn levels_text(outcome: &job::Outcome) -> String {
    outcome
        .columns
        .iter()
        .zip(&outcome.best.levels)
        .map(|(c, l)| format!("{c}={l}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A person-level release (issue #12): the cohort's person table and its diagnoses as
/// events, anonymized per person (or, under the pseudonymized profile, only re-keyed). The
/// release keys' secret is drawn here and never stored, so no two releases share keys.
fn build_persons(
    settings: &PersonSettings,
    method_dir: &Path,
    persons: &BTreeMap<String, Person>,
    opted: &std::collections::BTreeSet<String>,
    cohort: &Cohort,
    as_of: &str,
    work: &Path,
) -> Result<Built, String> {
    let [id, _, _, _] = cohort::EVENT_COLUMNS;
    if settings.id != id || settings.kind_column != "kind" || settings.code_column != "code" {
        return Err(format!(
            "a person-level method in the vault names the columns of its tables: id {id:?}, \
             kind \"kind\", code \"code\" (person table {:?}, event table {:?})",
            cohort::PERSON_COLUMNS,
            cohort::EVENT_COLUMNS
        ));
    }
    if let Some(s) = settings.event_sets.iter().find(|s| s.kind != "dx") {
        return Err(format!(
            "event set {:?}: the vault's event table holds diagnoses only (kind \"dx\")",
            s.kind
        ));
    }
    let (parsed, codes) =
        person::hierarchies(settings, &mut method_file(method_dir)).map_err(|e| e.to_string())?;
    let cohort::PersonTables {
        persons: people,
        events,
        selection,
        members,
    } = cohort::person_tables(persons, opted, cohort, as_of);
    if people.is_empty() {
        return Err(empty_cohort(&selection));
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let (in_p, in_e) = (work.join("persons.csv"), work.join("events.csv"));
    let (out_p, out_e) = (work.join("persons-out.csv"), work.join("events-out.csv"));
    write_rows(&in_p, cohort::PERSON_COLUMNS, &people)?;
    write_rows(&in_e, cohort::EVENT_COLUMNS, &events)?;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), secret.as_mut())
        .map_err(|_| "the random source failed".to_owned())?;
    let key = ReleaseKey::new(&secret);
    let files = PersonFiles {
        persons: &in_p,
        events: &in_e,
        output_persons: &out_p,
        output_events: &out_e,
        delimiter: b',',
    };
    let mut r = person::run(settings, &parsed, &codes, &files, &key, &mut job::Quiet)
        .map_err(|e| e.to_string())?;
    if let Some(cfg) = r.outcome.report.get_mut("config") {
        cfg["input"] = Value::String("cohort person table".into());
        cfg["events"] = Value::String("cohort diagnoses".into());
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (persons_bytes, events_bytes) = (read(&out_p)?, read(&out_e)?);
    let columns = headers(&mut csv::Reader::from_reader(&persons_bytes[..]))?;
    let report = serde_json::to_vec_pretty(&r.outcome.report).unwrap_or_default();
    Ok(Built {
        files: vec![
            (PERSON_FILES[0].into(), persons_bytes),
            (PERSON_FILES[1].into(), events_bytes),
            (PERSON_FILES[2].into(), report),
        ],
        rows: r.persons - r.persons_suppressed,
        columns,
        selection,
        levels: levels_text(&r.outcome),
        suppressed: r.persons_suppressed,
        min_class: r.outcome.best.min_class,
        members,
        quasi: r.outcome.columns.clone(),
        k: settings.model.k,
        profile: settings.profile.name().into(),
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

/// Erases release `id`'s data files (every name but `report.json`, which holds no row) and
/// its sealed package, after an opt-out removed a person in them (R-IN-6, R-OP-6). The files
/// are sealed under the master key; removing them leaves the ciphertext unreachable.
pub fn erase_data(store: &Path, id: &str, names: &[String]) -> Result<(), String> {
    let dir = home(store, id);
    let mut doomed: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.as_str() != "report.json")
        .map(|n| dir.join(format!("{n}.sealed")))
        .collect();
    doomed.push(dir.join("package.envelope"));
    for p in doomed {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    if dir.is_dir() {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Opens the built files of release `id`.
pub fn kept(
    store: &Path,
    id: &str,
    master: &MasterKey,
    names: &[String],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = home(store, id);
    let mut out = Vec::new();
    for name in names {
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
