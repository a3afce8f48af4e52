//! The vault's audit log (R-OP-3, R-OP-4): who did what to which data, when, by whose session,
//! how many records it touched, and whether the clock was synchronised at the time.
//!
//! Every entry carries the SHA-256 of the one before it, so editing, deleting, inserting or
//! reordering an entry breaks the chain at that place. A chain alone can be rewritten from the
//! edit onwards by whoever can write the file, so the vault also appends **checkpoints** signed
//! with its Ed25519 audit key; a rewrite then fails at the next checkpoint's signature.
//!
//! [`chain`] and [`verify`] are pure (entries and bytes in, entries and reports out);
//! [`file`] is the thin layer that appends with fsync, recovers a torn last line and writes
//! archive files that verify on their own.

#![forbid(unsafe_code)]

pub mod chain;
pub mod file;
pub mod verify;

pub use chain::{Chain, ClockStatus, Entry, Record};
pub use file::{AuditLog, Stamp, SystemClock};
pub use verify::{
    check_anchors, holds_head, verify, verify_series, Head, Problem, ProblemKind, Report,
};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing a log file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An entry could not be resumed from (the log's last line is not an entry).
    #[error("{0}")]
    Corrupt(String),
    /// The log failed verification where that is not allowed (archiving a damaged log).
    #[error("{path}: audit log fails verification: {first}")]
    Tampered {
        /// The file.
        path: std::path::PathBuf,
        /// The first problem found.
        first: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, AuditError>;
