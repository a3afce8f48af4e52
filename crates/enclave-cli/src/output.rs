//! Where command output goes: a file that appears under its final name only when complete,
//! or standard output.
//!
//! Files are written to a temporary file in the destination directory (mode 0600), synced,
//! and renamed into place on success; on any error the temporary file is removed, so a final
//! name never holds partial plaintext or a partial envelope.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A destination being written.
pub enum Output {
    /// A temporary file that becomes `path` on [`Output::commit`].
    File {
        temp: BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
        overwrite: bool,
    },
    /// Standard output.
    Stdout(BufWriter<io::Stdout>),
}

impl Output {
    /// Opens `target` (`-` means standard output). Refuses an existing file unless
    /// `overwrite`, and refuses to pour binary data onto a terminal.
    pub fn create(target: &Path, overwrite: bool, binary: bool) -> Result<Self> {
        if target == Path::new("-") {
            let stdout = io::stdout();
            if binary && stdout.is_terminal() {
                bail!("refusing to write binary data to a terminal; use -o FILE or redirect");
            }
            return Ok(Output::Stdout(BufWriter::with_capacity(1 << 20, stdout)));
        }
        if target.exists() && !overwrite {
            bail!(
                "{} already exists; pass --force to replace it",
                target.display()
            );
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".enclave-")
            .suffix(".part")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(Output::File {
            temp: BufWriter::with_capacity(1 << 20, temp),
            path: target.to_owned(),
            overwrite,
        })
    }

    /// The temporary file, when the output is a file: it can seek, so sealing needs one pass.
    pub fn seekable(&mut self) -> Option<&mut BufWriter<tempfile::NamedTempFile>> {
        match self {
            Output::File { temp, .. } => Some(temp),
            Output::Stdout(_) => None,
        }
    }

    /// Finishes the output: syncs and renames a file into place, flushes standard output.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush().context("writing standard output"),
            Output::File {
                temp,
                path,
                overwrite,
            } => {
                let temp = temp
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("flushing output")?;
                temp.as_file().sync_all().context("syncing output")?;
                let persisted = if overwrite {
                    temp.persist(&path).map_err(|e| e.error)
                } else {
                    temp.persist_noclobber(&path).map_err(|e| e.error)
                };
                persisted.with_context(|| format!("cannot move output into {}", path.display()))?;
                if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    File::open(dir).and_then(|d| d.sync_all()).ok();
                }
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File { temp, .. } => temp.write(buf),
            Output::Stdout(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::File { temp, .. } => temp.write_all(buf),
            Output::Stdout(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File { temp, .. } => temp.flush(),
            Output::Stdout(w) => w.flush(),
        }
    }
}
