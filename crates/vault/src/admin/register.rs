//! The register kept apart (issue #31, item 3): the facts a restore must never roll back —
//! every opt-out (R-IN-6) and every release provided (R-RL-3) — written outside the store
//! folder, so that a backup of the store neither holds nor replaces it.
//!
//! One JSON line per fact, numbered from 1, each linked to the one before by its SHA-256 and
//! authenticated with an HMAC under a key derived from the master key and bound to the
//! store's id: whoever lacks the master key cannot add, edit or reorder a line unnoticed.
//! The sealed state records how many lines it has applied, so a register cut short is
//! refused; lines beyond that count (a crash between the register and the state, or a
//! restored older store) are applied again ([`super::service::reapply`]) before anything else.
//! A register deleted or cut back to an earlier length along with the state is what the
//! audit log's anchors catch (docs/operations.md).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::digest;
use serde::{Deserialize, Serialize};

use super::state::{BuildInfo, OptOut};

/// A fact that must survive any restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    /// An opt-out, written before the person's data is deleted: who (by keyed tag and/or
    /// pseudonym), when, from whom. A restore deletes them again.
    OptOut {
        /// The register row as far as it is known before the deletion.
        optout: Box<OptOut>,
    },
    /// A release handed to the egress link (written before the package is enqueued): it
    /// never returns to an earlier state and stays in the ledger.
    Provided {
        /// The release as sent.
        release: Box<release::Release>,
        /// Its build record.
        build: Box<BuildInfo>,
    },
}

/// One line of the register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Position, from 1.
    pub seq: u64,
    /// When it was written (RFC 3339 UTC).
    pub time: String,
    /// The fact.
    pub fact: Fact,
    /// Hex SHA-256 of the previous line's bytes (zeros for the first).
    pub prev: String,
    /// Hex HMAC-SHA256 over the line without this field (see the module comment).
    #[serde(default)]
    pub mac: String,
}

/// The register's file of a store at `store`: `STORE.register`, beside the store folder.
pub fn default_path(store: &Path) -> PathBuf {
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    store.with_file_name(format!("{name}.register"))
}

fn place(store_id: &str) -> String {
    format!("register/{store_id}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// What reading a register found.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not what was written.
    #[error("{path}: line {line}: {why}")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Its line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// An open register.
pub struct Register {
    path: PathBuf,
    store_id: String,
    lines: Vec<Line>,
    head: String,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Register({}, {} lines)",
            self.path.display(),
            self.lines.len()
        )
    }
}

impl Register {
    /// Reads and checks the register at `path` (an absent file is an empty register).
    pub fn open(
        path: &Path,
        store_id: &str,
        master: &vault_store::MasterKey,
    ) -> Result<Self, RegisterError> {
        let io = |source| RegisterError::Io {
            path: path.to_owned(),
            source,
        };
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut lines = Vec::new();
        let mut head = hex::encode([0u8; 32]);
        let tampered = |line: usize, why: String| RegisterError::Tampered {
            path: path.to_owned(),
            line,
            why,
        };
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        if !body.is_empty() {
            for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
                let n = i + 1;
                let line: Line = serde_json::from_slice(raw)
                    .map_err(|e| tampered(n, format!("not a register line: {e}")))?;
                if line.seq != n as u64 {
                    return Err(tampered(n, format!("numbered {}, expected {n}", line.seq)));
                }
                if line.prev != head {
                    return Err(tampered(n, "does not follow the line before it".into()));
                }
                let tag = hex::decode(&line.mac).unwrap_or_default();
                if !master.check_mac(&place(store_id), &unsigned(&line), &tag) {
                    return Err(tampered(
                        n,
                        "its authenticator does not verify under this store's master key".into(),
                    ));
                }
                head = sha256_hex(raw);
                lines.push(line);
            }
        }
        Ok(Self {
            path: path.to_owned(),
            store_id: store_id.to_owned(),
            lines,
            head,
        })
    }

    /// The lines, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `fact` and makes it durable before returning.
    pub fn append(
        &mut self,
        fact: Fact,
        time: &str,
        master: &vault_store::MasterKey,
    ) -> Result<u64, RegisterError> {
        let io = |source| RegisterError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = Line {
            seq: self.lines.len() as u64 + 1,
            time: time.to_owned(),
            fact,
            prev: self.head.clone(),
            mac: String::new(),
        };
        line.mac = hex::encode(master.mac(&place(&self.store_id), &unsigned(&line)));
        let text = serde_json::to_vec(&line).unwrap_or_default();
        let new = !self.path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let mut bytes = text.clone();
        bytes.push(b'\n');
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        if new {
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.head = sha256_hex(&text);
        self.lines.push(line);
        Ok(self.lines.len() as u64)
    }

    /// Copies the register to `to` (a restore into a new folder takes it along).
    pub fn copy_to(&self, to: &Path) -> Result<(), RegisterError> {
        let bytes = fs::read(&self.path).unwrap_or_default();
        vault_store::write_synced(to, &bytes).map_err(|e| RegisterError::Io {
            path: to.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// The bytes a line's authenticator covers: its JSON with an empty `mac`.
fn unsigned(line: &Line) -> Vec<u8> {
    let mut l = line.clone();
    l.mac = String::new();
    serde_json::to_vec(&l).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> OptOut {
        OptOut {
            id,
            institution: "1312345678".into(),
            tag: format!("tag{id}"),
            pseudonyms: String::new(),
            source: "本人".into(),
            received: "2026-12-08T00:00:00.000Z".into(),
            entered_by: "op1".into(),
            records_deleted: 0,
            identities_deleted: 0,
            batches_rewritten: 0,
            deleted: String::new(),
            releases_rebuild: Vec::new(),
            releases_provided: Vec::new(),
        }
    }

    #[test]
    fn lines_verify_and_any_edit_reorder_or_foreign_key_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.register");
        let master = vault_store::MasterKey::new([9; 32]).expect("key");
        let mut r = Register::open(&path, "S1", &master).expect("empty");
        for id in 1..=3 {
            r.append(
                Fact::OptOut {
                    optout: Box::new(row(id)),
                },
                "2026-12-08T00:00:00.000Z",
                &master,
            )
            .expect("append");
        }
        let back = Register::open(&path, "S1", &master).expect("reads");
        assert_eq!(back.lines().len(), 3);
        // Another store's id, or another master key: refused.
        assert!(Register::open(&path, "S2", &master).is_err());
        let other = vault_store::MasterKey::new([8; 32]).expect("key");
        assert!(Register::open(&path, "S1", &other).is_err());
        let text = fs::read_to_string(&path).expect("text");
        // An edited line.
        fs::write(&path, text.replace("tag2", "tagX")).expect("write");
        assert!(Register::open(&path, "S1", &master).is_err());
        // A line removed from the middle.
        let lines: Vec<&str> = text.lines().collect();
        fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
        assert!(Register::open(&path, "S1", &master).is_err());
        // Cut at the end: reads (the state's count catches it), two lines.
        fs::write(&path, format!("{}\n{}\n", lines[0], lines[1])).expect("write");
        assert_eq!(
            Register::open(&path, "S1", &master)
                .expect("prefix")
                .lines()
                .len(),
            2
        );
    }
}
