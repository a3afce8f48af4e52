//! Errors of the link driver: each names the file or socket it is about.

use std::path::{Path, PathBuf};

/// An I/O failure, with the path or address it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct IoError {
    /// The file, directory or socket.
    pub what: String,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError {
        what: path.display().to_string(),
        source,
    }
}

pub(crate) fn io_on(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
    let what = what.into();
    move |source| IoError { what, source }
}

/// Errors that stop a sender or receiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// File or socket I/O failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The protocol core refused the configuration.
    #[error(transparent)]
    Sender(#[from] diode::SenderError),
    /// The inbox writer thread stopped.
    #[error("inbox writer stopped: {0}")]
    Writer(String),
    /// A thread of the link panicked.
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// A state file could not be parsed.
    #[error("{path}: {why}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}
