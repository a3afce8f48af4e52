//! Where envelopes wait on ingress's disk: partial uploads, and the hand-over into the diode
//! outbox towards the vault.
//!
//! ```text
//! SPOOL/partial/INSTITUTION/ENVELOPE_ID.part   bytes received so far (resumable)
//! OUTBOX/incoming/.INSTITUTION_ENVELOPE_ID.env.pending
//!                                              complete, fsynced, not yet in the ledger
//! OUTBOX/incoming/INSTITUTION_ENVELOPE_ID.env  accepted: the diode sender takes it from here
//! ```
//!
//! An envelope becomes visible to the diode sender only after its ledger row is durable, so
//! the outbox never holds an envelope without a receipt, and a crash between the two steps is
//! finished at the next start ([`Spool::recover`]). Partial files never enter the outbox.
//! Spool and outbox must be on one filesystem, because the hand-over is a rename.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

/// Spool and outbox directories.
#[derive(Clone, Debug)]
pub struct Spool {
    partial: PathBuf,
    incoming: PathBuf,
}

/// What [`Spool::recover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Pending envelopes whose ledger row existed: published.
    pub published: usize,
    /// Pending envelopes without a ledger row: removed (the client never got a receipt and
    /// will send again).
    pub removed: usize,
    /// Partial uploads older than the retention: removed.
    pub expired_partials: usize,
}

fn outbox_name(institution: &str, envelope_id: &str) -> String {
    format!("{institution}_{envelope_id}.env")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

impl Spool {
    /// Opens the spool in `spool` and the outbox's `incoming/` in `outbox`.
    pub fn open(spool: &Path, outbox: &Path) -> Result<Self> {
        let partial = spool.join("partial");
        let incoming = outbox.join("incoming");
        for d in [&partial, &incoming] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let a = fs::metadata(&partial)?.dev();
        let b = fs::metadata(&incoming)?.dev();
        if a != b {
            bail!(
                "spool {} and outbox {} are on different filesystems; the hand-over must be an atomic rename",
                spool.display(),
                outbox.display()
            );
        }
        Ok(Self { partial, incoming })
    }

    /// The partial file of an upload (its directory is created).
    pub fn partial_path(&self, institution: &str, envelope_id: &str) -> Result<PathBuf> {
        // Both parts come from a verified certificate and a parsed id, but they become path
        // components here, so check again: one plain name each, no separators, no dots.
        for part in [institution, envelope_id] {
            let plain = part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
            if !plain {
                bail!("{part:?} cannot be used as a file name");
            }
        }
        let dir = self.partial.join(institution);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir.join(format!("{envelope_id}.part")))
    }

    /// Moves a complete, fsynced partial file next to the outbox, still hidden.
    pub fn stage(&self, part: &Path, institution: &str, envelope_id: &str) -> Result<PathBuf> {
        let pending = self.incoming.join(format!(
            ".{}.pending",
            outbox_name(institution, envelope_id)
        ));
        fs::rename(part, &pending)
            .with_context(|| format!("moving {} to {}", part.display(), pending.display()))?;
        Ok(pending)
    }

    /// Makes a staged envelope visible to the diode sender, durably.
    pub fn publish(&self, pending: &Path) -> Result<PathBuf> {
        let name = pending
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.strip_suffix(".pending"))
            .with_context(|| format!("{} is not a staged envelope", pending.display()))?;
        let visible = self.incoming.join(name);
        fs::rename(pending, &visible)
            .with_context(|| format!("publishing {}", visible.display()))?;
        fsync_dir(&self.incoming)?;
        Ok(visible)
    }

    /// Removes a staged envelope whose ledger write failed.
    pub fn unstage(&self, pending: &Path) {
        let _ = fs::remove_file(pending);
    }

    /// Finishes what a crash interrupted: staged envelopes are published if the ledger has
    /// them (`is_accepted(institution, envelope_id)`), removed otherwise; partial uploads
    /// untouched for longer than `partial_ttl` are removed.
    pub fn recover(
        &self,
        now: SystemTime,
        partial_ttl: Duration,
        mut is_accepted: impl FnMut(&str, &str) -> Result<bool>,
    ) -> Result<Recovered> {
        let mut out = Recovered::default();
        for entry in fs::read_dir(&self.incoming)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(inner) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".env.pending"))
            else {
                continue;
            };
            let Some((inst, id)) = inner.rsplit_once('_') else {
                continue;
            };
            if is_accepted(inst, id)? {
                self.publish(&path)?;
                out.published += 1;
            } else {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                out.removed += 1;
            }
        }
        for inst in fs::read_dir(&self.partial)? {
            let dir = inst?.path();
            if !dir.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                let modified = fs::metadata(&path)?.modified()?;
                if now.duration_since(modified).unwrap_or_default() > partial_ttl {
                    fs::remove_file(&path)?;
                    out.expired_partials += 1;
                }
            }
        }
        Ok(out)
    }
}
