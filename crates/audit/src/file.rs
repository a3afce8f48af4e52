//! The log on disk: one entry per line, appended and fsynced before the action it records is
//! reported done; a torn last line (a crash mid-write) cut off at open; archives written as
//! files that verify on their own, so the live log stays small while nothing is ever deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use envelope::{SigningKey, VerifyingKey};

use crate::chain::{Chain, ClockStatus, Entry, Record};
use crate::verify::{verify, Report};
use crate::{AuditError, Result};

/// Where entry times come from: the system clock and the time service's status.
pub trait Stamp: Send + Sync {
    /// The time now, RFC 3339 UTC, and whether the clock is synchronised.
    fn now(&self) -> (String, ClockStatus);
}

/// The system clock. The synchronisation status comes from systemd-timesyncd's flag file
/// or, failing that, chrony's/ntpd's presence; see [`SystemClock::status`].
#[derive(Clone, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// `synced` when systemd-timesyncd has written `/run/systemd/timesync/synchronized`,
    /// `unsynced` when timesyncd runs but has not, `unknown` otherwise.
    pub fn status() -> ClockStatus {
        if Path::new("/run/systemd/timesync/synchronized").exists() {
            ClockStatus::Synced
        } else if Path::new("/run/systemd/timesync").exists() {
            ClockStatus::Unsynced
        } else {
            ClockStatus::Unknown
        }
    }
}

impl Stamp for SystemClock {
    fn now(&self) -> (String, ClockStatus) {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (
            rfc3339(since.as_secs() as i64, since.subsec_millis()),
            Self::status(),
        )
    }
}

/// Formats seconds since 1970 (UTC) as `YYYY-MM-DDTHH:MM:SS.mmmZ` (fixed width, so the log's
/// times sort as text).
pub fn rfc3339(secs: i64, millis: u32) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An open audit log, the only writer of its file.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// `PATH.lock`, held exclusively while the log is open: one writer per log.
    _lock: File,
    chain: Chain,
    key: SigningKey,
    every: u64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuditLog({}, next {})",
            self.path.display(),
            self.chain.next_seq()
        )
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What opening a log found.
#[derive(Debug)]
pub struct Opened {
    /// The log, ready to append.
    pub log: AuditLog,
    /// Verification of what was there (the caller raises an alert when it is not clean).
    pub report: Report,
    /// Bytes of a torn last line that were cut off (a crash while writing it).
    pub torn_bytes: u64,
}

impl AuditLog {
    /// Opens or creates the log at `path`, signing checkpoints with `key` every `every`
    /// entries. What is there is verified first; a torn last line is cut off.
    pub fn open(path: &Path, key: SigningKey, every: u64) -> Result<Opened> {
        let lock_path = path.with_extension("log.lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.try_lock().map_err(|_| {
            AuditError::Corrupt(format!(
                "{}: another process has this audit log open (one writer at a time)",
                path.display()
            ))
        })?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path))?;
        let text = fs::read(path).map_err(io(path))?;
        let keep = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let torn_bytes = (text.len() - keep) as u64;
        if torn_bytes > 0 {
            file.set_len(keep as u64).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        let text = &text[..keep];
        let trusted = [key.public().clone()];
        let report = verify(text, &trusted);
        let chain = match last_entry(text) {
            None if text.is_empty() => Chain::genesis(),
            None => {
                return Err(AuditError::Corrupt(format!(
                    "{}: the last line is not an audit entry; cannot continue the chain",
                    path.display()
                )))
            }
            Some(last) => Chain::resume(&last, report.unsigned_tail)
                .map_err(|why| AuditError::Corrupt(format!("{}: {why}", path.display())))?,
        };
        Ok(Opened {
            log: Self {
                path: path.to_owned(),
                file,
                _lock: lock,
                chain,
                key,
                every: every.max(1),
            },
            report,
            torn_bytes,
        })
    }

    /// The public key checkpoints are signed with.
    pub fn public(&self) -> &VerifyingKey {
        self.key.public()
    }

    /// The seq the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.chain.next_seq()
    }

    /// The last entry written (seq and hash; seq 0 for an empty log).
    pub fn head(&self) -> crate::Head {
        let seq = self.chain.next_seq() - 1;
        crate::Head {
            seq,
            hash: if seq == 0 {
                String::new()
            } else {
                hex::encode(self.chain.head())
            },
        }
    }

    /// The last checkpoint: signs one now unless the last entry is one, and returns it.
    pub fn anchor(&mut self, stamp: &dyn Stamp) -> Result<Entry> {
        if let Some(cp) = self.checkpoint(stamp)? {
            return Ok(cp);
        }
        let text = fs::read(&self.path).map_err(io(&self.path))?;
        last_entry(&text)
            .filter(Entry::is_checkpoint)
            .ok_or_else(|| AuditError::Corrupt("the log's last entry is not a checkpoint".into()))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and makes it durable; signs a checkpoint after it when `every`
    /// entries have gone by since the last.
    pub fn append(&mut self, record: Record) -> Result<Entry> {
        let (time, clock) = (record.time.clone(), record.clock);
        let entry = self.chain.append(record);
        let mut lines = entry.to_line();
        lines.push('\n');
        if self.chain.since_checkpoint() >= self.every {
            let cp = self.chain.checkpoint(&time, clock, &self.key);
            lines.push_str(&cp.to_line());
            lines.push('\n');
        }
        self.write(lines.as_bytes())?;
        Ok(entry)
    }

    /// Signs a checkpoint now (at shutdown, before an archive, or on demand) unless the last
    /// entry already is one.
    pub fn checkpoint(&mut self, stamp: &dyn Stamp) -> Result<Option<Entry>> {
        if self.chain.since_checkpoint() == 0 && self.chain.next_seq() > 1 {
            return Ok(None);
        }
        let (time, clock) = stamp.now();
        let cp = self.chain.checkpoint(&time, clock, &self.key);
        let mut line = cp.to_line();
        line.push('\n');
        self.write(line.as_bytes())?;
        Ok(Some(cp))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Moves everything up to a fresh checkpoint into `dir` as
    /// `audit-FIRST-LAST.log` (verified after writing), and restarts the live log with that
    /// checkpoint as its first line, so the two files join. Returns the archive's path.
    ///
    /// A crash between the two steps leaves the archive and the whole live log; the next
    /// archive of the same first entry replaces that archive (it is a prefix of the new one).
    pub fn archive(&mut self, dir: &Path, stamp: &dyn Stamp) -> Result<PathBuf> {
        self.checkpoint(stamp)?;
        let text = fs::read(&self.path).map_err(io(&self.path))?;
        let trusted = [self.key.public().clone()];
        let report = verify(&text, &trusted);
        if let Some(first) = report.problems.first() {
            return Err(AuditError::Tampered {
                path: self.path.clone(),
                first: first.to_string(),
            });
        }
        let (Some(first), Some(last)) = (report.first_seq, report.last_seq) else {
            return Err(AuditError::Corrupt("nothing to archive".into()));
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let name = format!("audit-{first:012}-{last:012}.log");
        let target = dir.join(&name);
        write_atomic(&target, &text)?;
        let back = fs::read(&target).map_err(io(&target))?;
        if back != text || !verify(&back, &trusted).ok() {
            return Err(AuditError::Corrupt(format!(
                "{}: the archive does not read back as written",
                target.display()
            )));
        }
        // Earlier archives of the same first entry (left by a crash) are prefixes of this one.
        for old in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let n = old.file_name().to_string_lossy().into_owned();
            if n != name && n.starts_with(&format!("audit-{first:012}-")) && n.ends_with(".log") {
                fs::remove_file(old.path()).map_err(io(&old.path()))?;
            }
        }
        let closing = last_entry(&text)
            .ok_or_else(|| AuditError::Corrupt("archive has no closing checkpoint".into()))?;
        let mut line = closing.to_line();
        line.push('\n');
        write_atomic(&self.path, line.as_bytes())?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        Ok(target)
    }
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn last_entry(text: &[u8]) -> Option<Entry> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let line = body.rsplit(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_790_096, 250), "2026-11-27T14:34:56.250Z");
        assert_eq!(rfc3339(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }
}
