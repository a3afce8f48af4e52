//! The JSON-lines event log: one object per line, flushed as written, so an operator (or a
//! monitoring agent, R-OP-4) can follow it with `tail -f` and a crash loses at most a line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::error::{io_at, IoError};

/// Appends events to a file.
pub struct EventLog {
    out: Option<BufWriter<File>>,
    what: String,
}

impl EventLog {
    /// Opens `path` for appending (created 0640 if missing).
    pub fn open(path: &Path) -> Result<Self, IoError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(io_at(path))?;
        Ok(Self {
            out: Some(BufWriter::new(file)),
            what: path.display().to_string(),
        })
    }

    /// A log that discards everything (no `--events` given).
    pub fn none() -> Self {
        Self {
            out: None,
            what: String::new(),
        }
    }

    /// Writes one event: `{"ts_ms": …, "event": kind, …fields}`.
    pub fn write(&mut self, kind: &str, fields: Value) -> Result<(), IoError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut line = json!({ "ts_ms": ts_ms as u64, "event": kind });
        if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let err = |source| IoError {
            what: self.what.clone(),
            source,
        };
        serde_json::to_writer(&mut *out, &line).map_err(|e| err(std::io::Error::other(e)))?;
        out.write_all(b"\n").and_then(|()| out.flush()).map_err(err)
    }
}
