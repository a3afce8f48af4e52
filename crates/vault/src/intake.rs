//! Intake: envelopes from the ingress link's inbox → opened with the vault key, signer
//! checked against the registered institutions → parsed strictly as the declared content
//! type (R-IN-1, R-IN-2) → persons linked by keyed pseudonym (R-IN-5) → committed to the
//! encrypted store in batches (R-OP-5). Refused envelopes go to quarantine with a reason.
//!
//! An inbox file is deleted only after the store has committed (or quarantined) its
//! envelope, and the store knows every envelope id it holds, so a crash anywhere re-takes at
//! most the batch in flight and stores nothing twice.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clinical::{Format, Limits};
use envelope::{ContentType, RecipientSecretKey, VerifyingKey};
use linkage::{LinkKey, Linker, Pseudonym};
use vault_store::{Batch, EnvelopeRow, Quarantined, RecordRow, Store, StoreError};

/// What intake needs.
pub struct IntakeConfig {
    /// The diode receiver's inbox (complete objects named `{id:020}-NAME`).
    pub inbox: PathBuf,
    /// The vault's secret key (envelopes are sealed to it).
    pub vault_key: RecipientSecretKey,
    /// Registered institutions' signing keys.
    pub institutions: Vec<VerifyingKey>,
    /// Most envelopes per committed batch.
    pub batch_envelopes: usize,
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: u64,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Envelopes stored.
    pub stored: u64,
    /// Envelopes quarantined.
    pub quarantined: u64,
    /// Inbox files that were already in the store (a re-delivery), removed.
    pub duplicates: u64,
    /// Records stored.
    pub records: u64,
}

/// Errors that stop intake (a bad envelope never does: it is quarantined).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The inbox.
    #[error("inbox {path}: {source}")]
    Inbox {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn inbox_err(path: &Path) -> impl FnOnce(std::io::Error) -> IntakeError + '_ {
    move |source| IntakeError::Inbox {
        path: path.to_path_buf(),
        source,
    }
}

/// The format intake parses a content type as; `None` for types intake does not take.
pub fn format_of(ct: ContentType) -> Option<Format> {
    match ct {
        ContentType::Ssmix2 => Some(Format::Ssmix2),
        ContentType::FhirJp => Some(Format::FhirJp),
        ContentType::CdaTokutei => Some(Format::CdaTokutei),
        ContentType::Uke => Some(Format::Uke),
        ContentType::Csv => Some(Format::Csv),
        // DPC and Parquet are not parsed yet; releases never come in (non_exhaustive).
        _ => None,
    }
}

/// Restores a linker from the store's link map.
pub async fn linker_from(store: &Store, key: LinkKey) -> Result<Linker, StoreError> {
    let mut linker = Linker::new(key);
    for (tag, p, basis) in store.link_map().await? {
        let basis = match basis.as_str() {
            "insurance" => linkage::Basis::Insurance,
            "demographic" => linkage::Basis::Demographic,
            "local" => linkage::Basis::Local,
            _ => linkage::Basis::Provisional,
        };
        linker.remember(Pseudonym(tag), Pseudonym(p), basis);
    }
    Ok(linker)
}

/// Inbox entries in id order (hidden files and folders — the receiver's parts and state —
/// skipped).
pub fn inbox_files(inbox: &Path) -> Result<Vec<PathBuf>, IntakeError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(inbox).map_err(inbox_err(inbox))? {
        let e = e.map_err(inbox_err(inbox))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !e.file_type().map_err(inbox_err(inbox))?.is_file() {
            continue;
        }
        v.push(e.path());
    }
    v.sort();
    Ok(v)
}

enum Outcome {
    Stored(EnvelopeRow, clinical::Extract),
    Refused(Quarantined),
}

fn refused(
    id: String,
    institution: String,
    ct: &str,
    sha: String,
    bytes: u64,
    code: &str,
    reason: String,
) -> Outcome {
    Outcome::Refused(Quarantined {
        envelope: EnvelopeRow {
            id,
            institution,
            content_type: ct.to_owned(),
            sha256: sha,
            bytes,
            records: 0,
            doc_type: String::new(),
        },
        code: code.to_owned(),
        reason,
    })
}

/// Opens and parses one envelope. Never fails: every problem is a refusal.
fn take(cfg: &IntakeConfig, name: &str, sealed: &[u8], limits: &Limits) -> Outcome {
    let file_id = format!("file:{name}");
    let header = match envelope::SignedHeader::read_from(&mut &sealed[..]) {
        Ok(h) => h,
        Err(e) => {
            return refused(
                file_id,
                "?".into(),
                "?",
                String::new(),
                sealed.len() as u64,
                "envelope.header",
                e.to_string(),
            )
        }
    };
    let h = header.header();
    let id = h.envelope_id.to_string();
    let ct = h.content_type.as_str();
    let sha = hex::encode(h.plaintext_sha256);
    let size = h.plaintext_size;
    if size > limits.max_file_bytes as u64 {
        return refused(
            id,
            h.sender_id.clone(),
            ct,
            sha,
            size,
            "size",
            format!(
                "plaintext of {size} bytes is over the limit of {}",
                limits.max_file_bytes
            ),
        );
    }
    let mut plain = Vec::with_capacity(size as usize);
    let opened = match envelope::open(&cfg.vault_key, &cfg.institutions, sealed, &mut plain) {
        Ok(o) => o,
        Err(e) => {
            return refused(
                id,
                h.sender_id.clone(),
                ct,
                sha,
                size,
                "envelope.open",
                e.to_string(),
            )
        }
    };
    let institution = opened.sender().owner().to_owned();
    let Some(format) = format_of(h.content_type) else {
        return refused(
            id,
            institution,
            ct,
            sha,
            size,
            "intake.content-type",
            format!("content type {ct} is not taken by intake"),
        );
    };
    match clinical::parse(format, &plain, None, limits) {
        Ok(x) => Outcome::Stored(
            EnvelopeRow {
                id,
                institution,
                content_type: ct.to_owned(),
                sha256: sha,
                bytes: size,
                records: x.records.len() as u64,
                doc_type: x.doc_type.clone(),
            },
            x,
        ),
        Err(r) => refused(id, institution, ct, sha, size, r.code, r.reason),
    }
}

/// Links an accepted extract into `batch`.
fn link_into(linker: &mut Linker, env: &EnvelopeRow, x: &clinical::Extract, batch: &mut Batch) {
    let mut pseudonyms = Vec::with_capacity(x.identities.len());
    for id in &x.identities {
        let res = linker.resolve(&env.institution, id);
        let p = res
            .as_ref()
            .map(|r| r.pseudonym.0.clone())
            .unwrap_or_else(|| "unlinked".to_owned());
        if let Some(r) = &res {
            if let Some(from) = &r.merged_from {
                batch.merges.push((from.0.clone(), r.pseudonym.0.clone()));
            }
            if let Some(local) = &id.local_id {
                let tag = linker.local_tag(&env.institution, local);
                if let Some((q, b)) = linker.local_map().get(&tag) {
                    batch
                        .links
                        .push((tag.0, q.0.clone(), b.as_str().to_owned()));
                }
            }
            if !id.is_empty() {
                let json = serde_json::to_vec(id).unwrap_or_default();
                let tag = linker.tag("identity", &[&String::from_utf8_lossy(&json)]);
                batch
                    .identities
                    .push((p.clone(), env.institution.clone(), tag.0, json));
            }
        }
        pseudonyms.push(p);
    }
    for r in &x.records {
        batch.rows.push(RecordRow {
            envelope: env.id.clone(),
            institution: env.institution.clone(),
            pseudonym: pseudonyms
                .get(r.subject)
                .cloned()
                .unwrap_or_else(|| "unlinked".to_owned()),
            kind: r.kind.map(|k| k.as_str()).unwrap_or("row"),
            date: r.date.clone(),
            code: r.code.clone(),
            system: r.system.clone(),
            display: r.display.clone(),
            value: r.value.clone(),
            unit: r.unit.clone(),
        });
    }
}

/// Takes everything now in the inbox, in batches; returns what it did.
pub async fn pass(
    cfg: &IntakeConfig,
    store: &Store,
    linker: &mut Linker,
) -> Result<Pass, IntakeError> {
    let limits = Limits::default();
    let mut out = Pass::default();
    let files = inbox_files(&cfg.inbox)?;
    for chunk in files.chunks(cfg.batch_envelopes.max(1)) {
        let started = Instant::now();
        let mut batch = Batch::default();
        let mut done: Vec<&PathBuf> = Vec::new();
        let mut in_batch = std::collections::HashSet::new();
        // One query for the whole chunk: which envelope ids the store already has. Only the
        // signed headers are read here; a file whose header does not parse is handled below.
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|p| std::fs::File::open(p).ok())
            .filter_map(|mut f| envelope::SignedHeader::read_from(&mut f).ok())
            .map(|h| h.header().envelope_id.to_string())
            .collect();
        let known = store.known_among(&ids).await?;
        // One read buffer for the whole chunk: a fresh one per envelope made the kernel zero
        // new pages for every bulk envelope (a tenth of intake's time).
        let mut sealed = Vec::new();
        for path in chunk {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            sealed.clear();
            std::fs::File::open(path)
                .and_then(|f| f.take(cfg.max_envelope_bytes + 1).read_to_end(&mut sealed))
                .map_err(inbox_err(path))?;
            if sealed.len() as u64 > cfg.max_envelope_bytes {
                let q = Quarantined {
                    envelope: EnvelopeRow {
                        id: format!("file:{name}"),
                        institution: "?".into(),
                        content_type: "?".into(),
                        sha256: String::new(),
                        bytes: sealed.len() as u64,
                        records: 0,
                        doc_type: String::new(),
                    },
                    code: "size".into(),
                    reason: format!("envelope over {} bytes", cfg.max_envelope_bytes),
                };
                store.quarantine(&q, &sealed[..0]).await?;
                out.quarantined += 1;
                done.push(path);
                continue;
            }
            match take(cfg, &name, &sealed, &limits) {
                Outcome::Stored(env, x) => {
                    if known.contains(&env.id) || !in_batch.insert(env.id.clone()) {
                        out.duplicates += 1;
                    } else {
                        out.records += x.records.len() as u64;
                        out.stored += 1;
                        link_into(linker, &env, &x, &mut batch);
                        batch.envelopes.push(env);
                    }
                }
                Outcome::Refused(q) => {
                    if known.contains(&q.envelope.id) || store.known(&q.envelope.id).await? {
                        out.duplicates += 1;
                    } else {
                        store.quarantine(&q, &sealed).await?;
                        out.quarantined += 1;
                    }
                }
            }
            done.push(path);
        }
        store
            .commit(batch, started.elapsed().as_millis() as i64)
            .await?;
        for p in done {
            std::fs::remove_file(p).map_err(inbox_err(p))?;
        }
    }
    Ok(out)
}

/// Runs passes until `stop` says so, polling the inbox every `poll`.
pub async fn run(
    cfg: &IntakeConfig,
    store: &Store,
    linker: &mut Linker,
    poll: Duration,
    mut stop: impl FnMut(&Pass) -> bool,
) -> Result<Pass, IntakeError> {
    let mut total = Pass::default();
    loop {
        let p = pass(cfg, store, linker).await?;
        total.stored += p.stored;
        total.quarantined += p.quarantined;
        total.duplicates += p.duplicates;
        total.records += p.records;
        if stop(&p) {
            return Ok(total);
        }
        if p == Pass::default() {
            tokio::time::sleep(poll).await;
        }
    }
}
