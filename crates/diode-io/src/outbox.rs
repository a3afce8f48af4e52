//! The sender's durable outbox: where objects wait, get their 64-bit ids, and stay after
//! sending until the retention policy removes them.
//!
//! ```text
//! OUTBOX/incoming/NAME              writers rename complete files in here (same filesystem)
//! OUTBOX/queue/{id:020}-NAME        id assigned; waiting or being sent
//! OUTBOX/sent/{id:020}-NAME         sent at least once; kept for re-sending
//! OUTBOX/next-id                    next id to assign (also recoverable from the names)
//! ```
//!
//! An id is assigned by renaming into `queue/`, and only then recorded in `next-id`, so a
//! crash can never skip an id (a skipped id would look like a lost object to the receiver
//! forever). A file moves to `sent/` only after its last datagram left, so a restarted sender
//! sends again whatever it had not finished.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_at, IoError};

/// Longest object name accepted (the wire limit).
const MAX_NAME: usize = 255;

/// One object in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: u64,
    /// Name as delivered (without the id prefix).
    pub name: String,
    /// Current path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// A durable outbox directory.
pub struct Outbox {
    dir: PathBuf,
    /// Next id to assign, read from disk once at `open` (listing `sent/` per object would
    /// cost quadratic time with a large retention).
    next: std::cell::Cell<u64>,
}

impl Outbox {
    /// Opens (creating if needed) an outbox.
    pub fn open(dir: &Path) -> Result<Self, IoError> {
        for sub in ["incoming", "queue", "sent"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let outbox = Self {
            dir: dir.to_owned(),
            next: std::cell::Cell::new(0),
        };
        outbox.next.set(outbox.next_id_on_disk()?);
        Ok(outbox)
    }

    /// Where writers drop files.
    pub fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    fn list(&self, sub: &str) -> Result<Vec<Entry>, IoError> {
        let dir = self.dir.join(sub);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some((id, name)) = parse_entry_name(&file_name) else {
                continue;
            };
            let meta = entry.metadata().map_err(io_at(&entry.path()))?;
            if meta.is_file() {
                out.push(Entry {
                    id,
                    name: name.to_owned(),
                    path: entry.path(),
                    size: meta.len(),
                });
            }
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// Objects waiting to be sent, by id.
    pub fn queued(&self) -> Result<Vec<Entry>, IoError> {
        self.list("queue")
    }

    /// Objects sent and still retained, by id.
    pub fn sent(&self) -> Result<Vec<Entry>, IoError> {
        self.list("sent")
    }

    /// The next id to assign.
    pub fn next_id(&self) -> u64 {
        self.next.get()
    }

    /// The next id to assign as the disk says: the larger of the recorded value and one past
    /// every id present.
    fn next_id_on_disk(&self) -> Result<u64, IoError> {
        let path = self.dir.join("next-id");
        let recorded = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_at(&path)(e)),
        };
        let present = self
            .queued()?
            .iter()
            .chain(self.sent()?.iter())
            .map(|e| e.id.saturating_add(1))
            .max()
            .unwrap_or(0);
        Ok(recorded.max(present))
    }

    /// Lowest id still retained (queue or sent).
    pub fn oldest_retained(&self) -> Result<Option<u64>, IoError> {
        let q = self.queued()?.first().map(|e| e.id);
        let s = self.sent()?.first().map(|e| e.id);
        Ok(match (q, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Gives every complete file in `incoming/` an id (oldest file first) and moves it into
    /// the queue. Files whose names start with `.` are being written and are left alone;
    /// names too long for the wire are refused and left in place.
    pub fn admit_incoming(&self) -> Result<Vec<Entry>, IoError> {
        let dir = self.incoming_dir();
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.len() > MAX_NAME {
                continue;
            }
            let meta = entry.metadata().map_err(io_at(&entry.path()))?;
            if meta.is_file() {
                let modified = meta.modified().ok();
                files.push((modified, name, entry.path()));
            }
        }
        files.sort();
        let mut next = self.next_id();
        let mut admitted = Vec::new();
        for (_, name, path) in files {
            let target = self.dir.join("queue").join(entry_name(next, &name));
            fs::rename(&path, &target).map_err(io_at(&path))?;
            let size = fs::metadata(&target).map_err(io_at(&target))?.len();
            admitted.push(Entry {
                id: next,
                name,
                path: target,
                size,
            });
            next += 1;
            self.next.set(next);
            self.record_next_id(next)?;
        }
        if !admitted.is_empty() {
            sync_dir(&self.dir.join("queue"))?;
        }
        Ok(admitted)
    }

    fn record_next_id(&self, next: u64) -> Result<(), IoError> {
        let path = self.dir.join("next-id");
        let tmp = self.dir.join(".next-id.tmp");
        let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
        writeln!(f, "{next}").map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        Ok(())
    }

    /// Moves a sent object from the queue to `sent/`.
    pub fn mark_sent(&self, e: &Entry) -> Result<(), IoError> {
        let target = self.dir.join("sent").join(entry_name(e.id, &e.name));
        match fs::rename(&e.path, &target) {
            // Already moved (or re-queued and sent twice): nothing to do.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io_at(&e.path)),
        }
    }

    /// Moves retained objects with ids in `lo..=hi` back into the queue; returns the ids
    /// moved and the ids in the range that are no longer retained.
    pub fn resend(&self, lo: u64, hi: u64) -> Result<(Vec<u64>, Vec<u64>), IoError> {
        let mut moved = Vec::new();
        for e in self
            .sent()?
            .into_iter()
            .filter(|e| (lo..=hi).contains(&e.id))
        {
            let target = self.dir.join("queue").join(entry_name(e.id, &e.name));
            fs::rename(&e.path, &target).map_err(io_at(&e.path))?;
            moved.push(e.id);
        }
        let queued: Vec<u64> = self.queued()?.iter().map(|e| e.id).collect();
        let gone = if hi.saturating_sub(lo) > 1_000_000 {
            Vec::new()
        } else {
            (lo..=hi).filter(|id| !queued.contains(id)).collect()
        };
        Ok((moved, gone))
    }

    /// Deletes sent objects beyond the retention policy: older than `max_age`, or beyond the
    /// newest `max_count`. Returns the ids deleted.
    pub fn prune(
        &self,
        max_age: std::time::Duration,
        max_count: usize,
        now: std::time::SystemTime,
    ) -> Result<Vec<u64>, IoError> {
        let sent = self.sent()?;
        let keep_from = sent.len().saturating_sub(max_count);
        let mut deleted = Vec::new();
        for (i, e) in sent.iter().enumerate() {
            let modified = fs::metadata(&e.path)
                .and_then(|m| m.modified())
                .map_err(io_at(&e.path))?;
            let old = now.duration_since(modified).unwrap_or_default() > max_age;
            if i < keep_from || old {
                fs::remove_file(&e.path).map_err(io_at(&e.path))?;
                deleted.push(e.id);
            }
        }
        Ok(deleted)
    }
}

/// `{id:020}-{name}`: sorts by id, and the id survives any rename.
pub fn entry_name(id: u64, name: &str) -> String {
    format!("{id:020}-{name}")
}

/// Splits `{id:020}-{name}`.
pub fn parse_entry_name(file_name: &str) -> Option<(u64, &str)> {
    let (id, name) = file_name.split_at_checked(20)?;
    let name = name.strip_prefix('-')?;
    if name.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id.parse().ok()?, name))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), IoError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_assigned_in_order_survive_reopen_and_never_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path()).expect("open");
        for name in ["a.env", "b.env", ".partial"] {
            fs::write(outbox.incoming_dir().join(name), name).expect("write");
        }
        let admitted = outbox.admit_incoming().expect("admit");
        let ids: Vec<u64> = admitted.iter().map(|e| e.id).collect();
        assert_eq!(ids, [0, 1]);
        assert!(outbox.incoming_dir().join(".partial").exists());
        for e in &admitted {
            outbox.mark_sent(e).expect("sent");
        }
        // Retention removed everything: the recorded next id still prevents reuse.
        outbox
            .prune(std::time::Duration::ZERO, 0, std::time::SystemTime::now())
            .expect("prune");
        let outbox = Outbox::open(dir.path()).expect("reopen");
        fs::write(outbox.incoming_dir().join("c.env"), "c").expect("write");
        assert_eq!(outbox.admit_incoming().expect("admit")[0].id, 2);
    }

    #[test]
    fn resend_moves_retained_ids_back_and_names_the_gone_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path()).expect("open");
        for i in 0..4 {
            fs::write(outbox.incoming_dir().join(format!("f{i}")), "x").expect("write");
            for e in outbox.admit_incoming().expect("admit") {
                outbox.mark_sent(&e).expect("sent");
            }
        }
        fs::remove_file(outbox.sent().expect("sent")[0].path.clone()).expect("rm");
        let (moved, gone) = outbox.resend(0, 2).expect("resend");
        assert_eq!(moved, [1, 2]);
        assert_eq!(gone, [0]);
        assert_eq!(
            parse_entry_name("00000000000000000042-x.env"),
            Some((42, "x.env"))
        );
        assert_eq!(parse_entry_name("42-x.env"), None);
    }
}
