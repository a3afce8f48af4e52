//! The receiver's inbox and the thread that writes it, so that disk latency (an `fsync` of a
//! large object, writeback pressure) never stalls the socket loop.
//!
//! ```text
//! INBOX/.parts/{id:020}.part        objects being received (deleted at start-up: a restarted
//!                                   receiver cannot resume them; they become gaps)
//! INBOX/{id:020}-NAME               complete, verified objects (renamed in atomically)
//! INBOX/.diode-state                delivered ids and floor (JSON), rewritten atomically
//! INBOX/.gap-report                 ids to re-send, one range per line (`diode resend --ids`)
//! ```
//!
//! The state file is written only after the object's rename, so it never claims an object
//! that is not on disk.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver as ChanReceiver, SyncSender};
use std::thread::JoinHandle;

use diode::{RangeSet, ReceiverStats};
use serde_json::json;

use crate::error::{io_at, IoError, LinkError};
use crate::events::EventLog;
use crate::outbox::sync_dir;

/// Commands from the socket loop to the writer thread.
#[derive(Debug)]
pub enum WriterCmd {
    /// Create the part file.
    Start {
        /// Object id.
        id: u64,
        /// Announced size.
        size: u64,
    },
    /// Append bytes.
    Write {
        /// Object id.
        id: u64,
        /// Offset (must equal the bytes written so far).
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Sync, rename into place, persist state, log.
    Complete {
        /// Object id.
        id: u64,
        /// Name from the sender.
        name: String,
        /// Size.
        size: u64,
        /// SHA-256 (hex).
        sha256: String,
        /// Floor of the receiver now.
        floor: Option<u64>,
    },
    /// Delete the part file and log why.
    Failed {
        /// Object id.
        id: u64,
        /// Reason.
        reason: String,
    },
    /// Rewrite the gap report and log it.
    Gaps {
        /// Missing id ranges.
        missing: Vec<(u64, u64)>,
        /// Floor of the receiver now.
        floor: Option<u64>,
    },
    /// Log counters.
    Stats(ReceiverStats),
}

/// Persisted receiver state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxState {
    /// Ids delivered.
    pub delivered: RangeSet,
    /// Lowest id of interest.
    pub floor: Option<u64>,
}

/// The inbox directory.
pub struct Inbox {
    dir: PathBuf,
    parts: HashMap<u64, (File, u64)>,
}

impl Inbox {
    /// Opens the inbox, deleting part files left by a previous run (listed in the log as
    /// discarded: they will show up in the gap report).
    pub fn open(dir: &Path, log: &mut EventLog) -> Result<Self, IoError> {
        let parts = dir.join(".parts");
        fs::create_dir_all(&parts).map_err(io_at(&parts))?;
        for entry in fs::read_dir(&parts).map_err(io_at(&parts))? {
            let entry = entry.map_err(io_at(&parts))?;
            fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
            log.write(
                "part_discarded",
                json!({ "file": entry.file_name().to_string_lossy() }),
            )?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            parts: HashMap::new(),
        })
    }

    /// Loads `.diode-state`, or the empty state if there is none.
    pub fn load_state(dir: &Path) -> Result<InboxState, LinkError> {
        let path = dir.join(".diode-state");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(InboxState::default()),
            Err(e) => return Err(io_at(&path)(e).into()),
        };
        let bad = |why: String| LinkError::State {
            path: path.clone(),
            why,
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let ranges = v["delivered"]
            .as_array()
            .ok_or_else(|| bad("no delivered list".into()))?
            .iter()
            .map(|r| Some((r.get(0)?.as_u64()?, r.get(1)?.as_u64()?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("delivered ranges must be [first, last] pairs".into()))?;
        Ok(InboxState {
            delivered: RangeSet::from_ranges(ranges),
            floor: v["floor"].as_u64(),
        })
    }

    fn part_path(&self, id: u64) -> PathBuf {
        self.dir.join(".parts").join(format!("{id:020}.part"))
    }

    fn start(&mut self, id: u64) -> Result<(), IoError> {
        let path = self.part_path(id);
        let file = File::create(&path).map_err(io_at(&path))?;
        self.parts.insert(id, (file, 0));
        Ok(())
    }

    fn write(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let path = self.part_path(id);
        let Some((file, len)) = self.parts.get_mut(&id) else {
            return Ok(());
        };
        if *len != offset {
            return Err(io_at(&path)(std::io::Error::other(format!(
                "write at {offset} but {len} bytes written"
            ))));
        }
        file.write_all(data).map_err(io_at(&path))?;
        *len += data.len() as u64;
        Ok(())
    }

    fn complete(&mut self, id: u64, name: &str) -> Result<PathBuf, IoError> {
        let part = self.part_path(id);
        let (file, _) = match self.parts.remove(&id) {
            Some(f) => f,
            // An empty object has no writes; its part file exists since `start`.
            None => (File::create(&part).map_err(io_at(&part))?, 0),
        };
        file.sync_all().map_err(io_at(&part))?;
        let target = self
            .dir
            .join(crate::outbox::entry_name(id, &safe_name(name)));
        fs::rename(&part, &target).map_err(io_at(&target))?;
        sync_dir(&self.dir)?;
        Ok(target)
    }

    fn discard(&mut self, id: u64) -> Result<(), IoError> {
        self.parts.remove(&id);
        let part = self.part_path(id);
        match fs::remove_file(&part) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_at(&part)(e)),
            _ => Ok(()),
        }
    }

    fn save_state(&self, delivered: &[(u64, u64)], floor: Option<u64>) -> Result<(), IoError> {
        let text = json!({ "delivered": delivered, "floor": floor }).to_string();
        write_atomic(&self.dir.join(".diode-state"), text.as_bytes())
    }

    fn save_gaps(&self, missing: &[(u64, u64)]) -> Result<(), IoError> {
        let mut text = String::new();
        for &(a, b) in missing {
            if a == b {
                text.push_str(&format!("{a}\n"));
            } else {
                text.push_str(&format!("{a}-{b}\n"));
            }
        }
        write_atomic(&self.dir.join(".gap-report"), text.as_bytes())
    }
}

/// Keeps a sender-given name inside the inbox: no path separators, no leading dot.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\0' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "object".to_owned()
    } else {
        trimmed.chars().take(200).collect()
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(bytes).map_err(io_at(&tmp))?;
    f.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, path).map_err(io_at(path))
}

/// Starts the writer thread. At most `depth` commands wait in its queue: beyond that the
/// socket loop blocks, which is the only way a slow disk can make the receiver drop data.
///
/// The writer keeps its own copy of the persisted state and adds an id to it only after
/// that object's rename, so `.diode-state` never runs ahead of the disk.
pub fn spawn_writer(
    mut inbox: Inbox,
    mut log: EventLog,
    state: InboxState,
    depth: usize,
) -> (SyncSender<WriterCmd>, JoinHandle<Result<(), IoError>>) {
    let (tx, rx) = sync_channel(depth);
    let handle = std::thread::spawn(move || writer_loop(&mut inbox, &mut log, state, rx));
    (tx, handle)
}

fn writer_loop(
    inbox: &mut Inbox,
    log: &mut EventLog,
    mut state: InboxState,
    rx: ChanReceiver<WriterCmd>,
) -> Result<(), IoError> {
    for cmd in rx {
        match cmd {
            WriterCmd::Start { id, size } => {
                inbox.start(id)?;
                log.write("object_started", json!({ "id": id, "size": size }))?;
            }
            WriterCmd::Write { id, offset, data } => inbox.write(id, offset, &data)?,
            WriterCmd::Complete {
                id,
                name,
                size,
                sha256,
                floor,
            } => {
                let path = inbox.complete(id, &name)?;
                state.delivered.insert(id);
                state.floor = floor.or(state.floor);
                inbox.save_state(state.delivered.ranges(), state.floor)?;
                log.write(
                    "object_complete",
                    json!({ "id": id, "name": name, "size": size, "sha256": sha256,
                            "file": path.file_name().map(|f| f.to_string_lossy().into_owned()) }),
                )?;
            }
            WriterCmd::Failed { id, reason } => {
                inbox.discard(id)?;
                log.write("object_failed", json!({ "id": id, "reason": reason }))?;
            }
            WriterCmd::Gaps { missing, floor } => {
                inbox.save_gaps(&missing)?;
                state.floor = floor.or(state.floor);
                inbox.save_state(state.delivered.ranges(), state.floor)?;
                log.write("gaps", json!({ "missing": missing }))?;
            }
            WriterCmd::Stats(s) => log.write(
                "stats",
                json!({
                    "datagrams": s.datagrams, "bad_auth": s.bad_auth, "malformed": s.malformed,
                    "surplus_shards": s.surplus_shards, "blocks": s.blocks,
                    "blocks_recovered": s.blocks_recovered, "objects_complete": s.objects_complete,
                    "objects_failed": s.objects_failed, "datagrams_lost": s.datagrams_lost,
                }),
            )?,
        }
    }
    Ok(())
}
