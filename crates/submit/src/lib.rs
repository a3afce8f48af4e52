//! The institution's side of submission (`enclave submit`): seal files for the vault, push
//! them to ingress over QUIC with mutual TLS 1.3, verify the signed receipts, and remember
//! what was sent so that a restart, a dropped connection or `--watch` never sends a file
//! twice and never forgets one.
//!
//! State lives in one directory:
//!
//! ```text
//! STATE/journal.jsonl        append-only: each source sealed (path, size, mtime, envelope),
//!                            each receipt, each final refusal
//! STATE/pending/ID.env       sealed envelopes without a receipt yet (resent as they are, so
//!                            an interrupted upload resumes with the same envelope id)
//! STATE/receipts/ID.json     verified receipts, as ingress signed them
//! ```
//!
//! A file is sealed once per (path, size, modification time); a changed file is sealed and
//! sent again as a new envelope.

#![forbid(unsafe_code)]

pub mod client;
mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use envelope::{ContentType, RecipientPublicKey, SigningKey, VerifyingKey};
use intake_proto::Offer;

pub use client::{Connection, Receipt, Target, UploadError};
pub use journal::{Journal, Source};

/// What to send and with which keys.
pub struct Job {
    /// Where ingress is.
    pub target: Target,
    /// The vault's encryption key (envelopes are sealed to it).
    pub vault: RecipientPublicKey,
    /// This institution's signing key; its owner must equal the certificate's name.
    pub signer: SigningKey,
    /// Ingress's receipt-verification key.
    pub ingress_key: VerifyingKey,
    /// Content type of every file.
    pub content_type: ContentType,
    /// State directory.
    pub state: PathBuf,
    /// Uploads in flight at once.
    pub parallel: usize,
    /// Give up on a file after this many failed attempts (retryable errors only).
    pub max_attempts: u32,
    /// First retry delay (doubles up to 60 s).
    pub backoff: Duration,
}

/// Progress counters, readable while a run is going.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files to send in this run.
    pub files_total: AtomicU64,
    /// Files with a receipt.
    pub files_done: AtomicU64,
    /// Files refused for good.
    pub files_failed: AtomicU64,
    /// Bytes of envelopes to send in this run.
    pub bytes_total: AtomicU64,
    /// Envelope bytes that have a receipt.
    pub bytes_done: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
}

/// How a run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files that got a receipt in this run.
    pub sent: usize,
    /// Of those, ones ingress already had.
    pub duplicates: usize,
    /// Files skipped because they already had a receipt.
    pub unchanged: usize,
    /// Files refused for good, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Lists regular files under `inputs` (files or directories, recursively), sorted, skipping
/// hidden names (editors and SS-MIX2 writers use them for files being written).
pub fn list_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = inputs.to_vec();
    while let Some(p) = stack.pop() {
        let meta =
            std::fs::metadata(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        if meta.is_dir() {
            for e in
                std::fs::read_dir(&p).with_context(|| format!("{}: cannot list", p.display()))?
            {
                let e = e?;
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                stack.push(e.path());
            }
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn seal_file(job: &Job, source: &Path, pending_dir: &Path) -> Result<(Offer, PathBuf)> {
    let rng = ring::rand::SystemRandom::new();
    let input = std::fs::File::open(source)
        .with_context(|| format!("{}: cannot open", source.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(pending_dir)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let sealed = envelope::seal_seekable(
        envelope::SealParams {
            recipient: &job.vault,
            signer: &job.signer,
            content_type: job.content_type,
            segment_size: envelope::DEFAULT_SEGMENT_SIZE,
        },
        &rng,
        std::io::BufReader::with_capacity(1 << 20, input),
        &mut out,
    )
    .with_context(|| format!("{}: sealing failed", source.display()))?;
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    let id = sealed.envelope_id().to_string();
    let path = pending_dir.join(format!("{id}.env"));
    let sha = hash_file(tmp.path())?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok((
        Offer {
            envelope_id: sealed.envelope_id(),
            size: sealed.sealed_size,
            sha256: sha,
        },
        path,
    ))
}

fn hash_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// Sends every file in `files` that has no receipt yet for its current contents. Returns
/// when each has a receipt or has failed for good.
pub async fn run(job: Arc<Job>, files: Vec<PathBuf>, progress: Arc<Progress>) -> Result<Summary> {
    let mut journal = Journal::open(&job.state)?;
    let mut summary = Summary::default();
    let mut todo: Vec<(PathBuf, Source)> = Vec::new();
    for path in files {
        // A file that vanished or cannot be read fails alone; the others still go.
        let source = match Source::of(&path) {
            Ok(s) => s,
            Err(e) => {
                summary.failed.push((path, format!("{e:#}")));
                continue;
            }
        };
        if journal.has_receipt(&source) {
            summary.unchanged += 1;
            continue;
        }
        todo.push((path, source));
    }
    progress
        .files_total
        .fetch_add(todo.len() as u64, Ordering::Relaxed);

    // Seal what is not sealed yet (reusing envelopes sealed by an interrupted run).
    let pending_dir = journal.pending_dir();
    let mut work: Vec<(PathBuf, Source, Offer, PathBuf)> = Vec::new();
    for (path, source) in todo {
        let (offer, env) = match journal.sealed(&source) {
            Some(x) => x,
            None => {
                let job2 = job.clone();
                let (p, d) = (path.clone(), pending_dir.clone());
                match tokio::task::spawn_blocking(move || seal_file(&job2, &p, &d)).await? {
                    Ok((offer, env)) => {
                        journal.record_sealed(&source, &offer, &env)?;
                        (offer, env)
                    }
                    Err(e) => {
                        progress.files_failed.fetch_add(1, Ordering::Relaxed);
                        summary.failed.push((path, format!("{e:#}")));
                        continue;
                    }
                }
            }
        };
        progress
            .bytes_total
            .fetch_add(offer.size, Ordering::Relaxed);
        work.push((path, source, offer, env));
    }

    let journal = Arc::new(tokio::sync::Mutex::new(journal));
    let config = client::client_config(&job.target)?;
    let conn: Arc<tokio::sync::Mutex<Option<Arc<Connection>>>> =
        Arc::new(tokio::sync::Mutex::new(None));
    let sem = Arc::new(tokio::sync::Semaphore::new(job.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (path, source, offer, env) in work {
        let permit = sem.clone().acquire_owned().await?;
        let (job, journal, conn, config, progress) = (
            job.clone(),
            journal.clone(),
            conn.clone(),
            config.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let r = send_one(&job, &conn, &config, &env, &offer, &progress).await;
            let mut j = journal.lock().await;
            let out = match r {
                Ok(receipt) => {
                    j.record_receipt(&source, &offer, &receipt)?;
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                    progress.bytes_done.fetch_add(offer.size, Ordering::Relaxed);
                    Ok(receipt.duplicate)
                }
                Err(e) => {
                    j.record_failure(&source, &offer, &e.to_string())?;
                    progress.files_failed.fetch_add(1, Ordering::Relaxed);
                    Err(e.to_string())
                }
            };
            anyhow::Ok((path, out))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (path, out) = r??;
        match out {
            Ok(dup) => {
                summary.sent += 1;
                summary.duplicates += usize::from(dup);
            }
            Err(why) => summary.failed.push((path, why)),
        }
    }
    if let Some(c) = conn.lock().await.take() {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
    summary.failed.sort();
    Ok(summary)
}

async fn connection(
    job: &Job,
    slot: &tokio::sync::Mutex<Option<Arc<Connection>>>,
    config: &quinn::ClientConfig,
) -> Result<Arc<Connection>, UploadError> {
    let mut guard = slot.lock().await;
    if let Some(c) = guard.as_ref() {
        if !c.is_closed() {
            return Ok(c.clone());
        }
    }
    let c = Arc::new(Connection::open(&job.target, config.clone()).await?);
    *guard = Some(c.clone());
    Ok(c)
}

async fn send_one(
    job: &Job,
    slot: &tokio::sync::Mutex<Option<Arc<Connection>>>,
    config: &quinn::ClientConfig,
    env: &Path,
    offer: &Offer,
    progress: &Progress,
) -> Result<Receipt, UploadError> {
    let mut delay = job.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match connection(job, slot, config).await {
            Ok(c) => {
                c.upload(env, offer, job.signer.public().owner(), &job.ingress_key)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => return Ok(r),
            Err(e) if e.retryable() && attempt < job.max_attempts => {
                progress.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sources under `inputs` whose size and modification time did not change between two
/// looks `settle` apart: files still being written are left for the next round.
pub async fn settled_files(inputs: &[PathBuf], settle: Duration) -> Result<Vec<PathBuf>> {
    let first: HashMap<PathBuf, Source> = list_files(inputs)?
        .into_iter()
        .filter_map(|p| Source::of(&p).ok().map(|s| (p, s)))
        .collect();
    tokio::time::sleep(settle).await;
    let mut out = Vec::new();
    for p in list_files(inputs)? {
        if let (Some(a), Ok(b)) = (first.get(&p), Source::of(&p)) {
            if *a == b {
                out.push(p);
            }
        }
    }
    Ok(out)
}
