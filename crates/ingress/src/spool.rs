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
    /// Staged envelopes (or spooled ones whose move did not survive a power loss) whose
    /// ledger row existed: published.
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
            let institution = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                // Accepted, but the rename out of the spool did not survive a power loss:
                // the bytes were fsynced before the ledger row, so publish them now.
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".part"))
                    .map(str::to_owned);
                if let Some(id) = id {
                    if is_accepted(&institution, &id)? {
                        let staged = self.stage(&path, &institution, &id)?;
                        self.publish(&staged)?;
                        out.published += 1;
                        continue;
                    }
                }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn recovery_publishes_what_the_ledger_accepted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), &dir.path().join("outbox")).unwrap();
        let write = |p: &Path| fs::write(p, b"envelope").unwrap();
        // Staged and in the ledger; staged without a ledger row; accepted but still in the
        // spool (power loss undid the move); a plain partial upload.
        let a = spool.partial_path("1300000001", "aa").unwrap();
        write(&a);
        spool.stage(&a, "1300000001", "aa").unwrap();
        let b = spool.partial_path("1300000001", "bb").unwrap();
        write(&b);
        spool.stage(&b, "1300000001", "bb").unwrap();
        write(&spool.partial_path("1300000001", "cc").unwrap());
        let d = spool.partial_path("1300000001", "dd").unwrap();
        write(&d);
        let accepted = ["aa", "cc"];
        let rec = spool
            .recover(SystemTime::now(), Duration::from_secs(3600), |i, e| {
                Ok(i == "1300000001" && accepted.contains(&e))
            })
            .unwrap();
        assert_eq!(
            rec,
            Recovered {
                published: 2,
                removed: 1,
                expired_partials: 0
            }
        );
        let mut names: Vec<String> = fs::read_dir(dir.path().join("outbox/incoming"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["1300000001_aa.env", "1300000001_cc.env"]);
        assert!(d.exists(), "a partial upload must stay for resumption");
        // Expired partials go.
        let rec = spool
            .recover(
                SystemTime::now() + Duration::from_secs(7200),
                Duration::from_secs(3600),
                |_, _| Ok(false),
            )
            .unwrap();
        assert_eq!(rec.expired_partials, 1);
        assert!(!d.exists());
        assert!(spool.partial_path("..", "x").is_err());
        assert!(spool.partial_path("1300000001", "../x").is_err());
    }
}
