//! The submit journal: what was sealed from which source, and what ingress acknowledged.
//! Append-only JSON lines, fsynced per line, so a crash loses at most the line being
//! written — and a lost "sealed" line only means the file is sealed again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use envelope::EnvelopeId;
use intake_proto::Offer;
use serde::{Deserialize, Serialize};

use crate::client::Receipt;

/// A source file's identity for "already sent?": path, size and modification time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Source {
    /// Looks at `path` now.
    pub fn of(path: &Path) -> Result<Self> {
        let meta =
            fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let abs = fs::canonicalize(path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
        Ok(Self {
            path: abs,
            size: meta.len(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Sealed {
        source: Source,
        envelope_id: String,
        size: u64,
        sha256: String,
        file: PathBuf,
    },
    Receipt {
        source: Source,
        envelope_id: String,
        duplicate: bool,
    },
    Failed {
        source: Source,
        envelope_id: String,
        reason: String,
    },
}

/// The open journal.
pub struct Journal {
    dir: PathBuf,
    file: File,
    sealed: HashMap<Source, (Offer, PathBuf)>,
    done: HashMap<Source, String>,
}

fn parse_id(hex_id: &str) -> Option<EnvelopeId> {
    let v = hex::decode(hex_id).ok()?;
    Some(EnvelopeId(v.try_into().ok()?))
}

impl Journal {
    /// Opens (creating) the state directory and replays its journal.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["pending", "receipts"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("{}: cannot create state directory", dir.display()))?;
        }
        let path = dir.join("journal.jsonl");
        let mut sealed = HashMap::new();
        let mut done = HashMap::new();
        if path.exists() {
            // A line torn by a crash is cut off, so the next append starts a clean line.
            let bytes = fs::read(&path)?;
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(keep as u64)?;
            }
            let reader = BufReader::new(File::open(&path)?);
            let lines: Vec<String> = reader.lines().collect::<std::io::Result<_>>()?;
            let last = lines.len().saturating_sub(1);
            for (n, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                // A torn last line (crash while appending) is ignored; anything else damaged
                // is an error worth stopping for, not a reason to send everything again.
                let parsed: Line = match serde_json::from_str(line) {
                    Ok(l) => l,
                    Err(_) if n == last => continue,
                    Err(e) => anyhow::bail!("{}: line {}: {e}", path.display(), n + 1),
                };
                match parsed {
                    Line::Sealed {
                        source,
                        envelope_id,
                        size,
                        sha256,
                        file,
                    } => {
                        let (Some(id), Ok(sha)) = (parse_id(&envelope_id), hex::decode(&sha256))
                        else {
                            continue;
                        };
                        let Ok(sha) = <[u8; 32]>::try_from(sha) else {
                            continue;
                        };
                        if file.exists() {
                            sealed.insert(
                                source,
                                (
                                    Offer {
                                        envelope_id: id,
                                        size,
                                        sha256: sha,
                                    },
                                    file,
                                ),
                            );
                        }
                    }
                    Line::Receipt {
                        source,
                        envelope_id,
                        ..
                    } => {
                        sealed.remove(&source);
                        done.insert(source, envelope_id);
                    }
                    Line::Failed { source, .. } => {
                        sealed.remove(&source);
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            sealed,
            done,
        })
    }

    /// Where sealed envelopes wait.
    pub fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    /// Whether this exact source already has a receipt.
    pub fn has_receipt(&self, s: &Source) -> bool {
        self.done.contains_key(s)
    }

    /// Sources with receipts.
    pub fn receipts(&self) -> usize {
        self.done.len()
    }

    /// The envelope sealed earlier for this exact source, if it still waits.
    pub fn sealed(&self, s: &Source) -> Option<(Offer, PathBuf)> {
        self.sealed.get(s).cloned()
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Records that `source` was sealed into `file`.
    pub fn record_sealed(&mut self, source: &Source, offer: &Offer, file: &Path) -> Result<()> {
        self.append(&Line::Sealed {
            source: source.clone(),
            envelope_id: offer.envelope_id.to_string(),
            size: offer.size,
            sha256: hex::encode(offer.sha256),
            file: file.to_owned(),
        })?;
        self.sealed
            .insert(source.clone(), (*offer, file.to_owned()));
        Ok(())
    }

    /// Stores a verified receipt, records it, and removes the sent envelope.
    pub fn record_receipt(&mut self, source: &Source, offer: &Offer, r: &Receipt) -> Result<()> {
        let id = offer.envelope_id.to_string();
        let path = self.dir.join("receipts").join(format!("{id}.json"));
        let text = serde_json::to_string_pretty(&r.signed)?;
        let mut f = File::create(&path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        self.append(&Line::Receipt {
            source: source.clone(),
            envelope_id: id,
            duplicate: r.duplicate,
        })?;
        if let Some((_, file)) = self.sealed.remove(source) {
            let _ = fs::remove_file(file);
        }
        self.done
            .insert(source.clone(), offer.envelope_id.to_string());
        Ok(())
    }

    /// Records a final refusal; the envelope is removed (a later run seals afresh).
    pub fn record_failure(&mut self, source: &Source, offer: &Offer, reason: &str) -> Result<()> {
        self.append(&Line::Failed {
            source: source.clone(),
            envelope_id: offer.envelope_id.to_string(),
            reason: reason.to_owned(),
        })?;
        if let Some((_, file)) = self.sealed.remove(source) {
            let _ = fs::remove_file(file);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replay_remembers_receipts_and_sealed_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.txt");
        fs::write(&src, b"x").unwrap();
        let source = Source::of(&src).unwrap();
        let offer = Offer {
            envelope_id: EnvelopeId([1; 16]),
            size: 10,
            sha256: [2; 32],
        };
        let env = dir.path().join("a.env");
        fs::write(&env, b"0123456789").unwrap();
        {
            let mut j = Journal::open(&dir.path().join("state")).unwrap();
            j.record_sealed(&source, &offer, &env).unwrap();
        }
        let j = Journal::open(&dir.path().join("state")).unwrap();
        assert_eq!(j.sealed(&source).unwrap().0, offer);
        assert!(!j.has_receipt(&source));
        // A torn last line is ignored; a damaged line before it is an error.
        let path = dir.path().join("state/journal.jsonl");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"kind\":\"rece");
        fs::write(&path, &text).unwrap();
        assert!(Journal::open(&dir.path().join("state")).is_ok());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "torn line not cut off");
        let mut text = text;
        text.push_str("{}\n{}\n");
        fs::write(&path, &text).unwrap();
        assert!(Journal::open(&dir.path().join("state")).is_err());
    }
}
