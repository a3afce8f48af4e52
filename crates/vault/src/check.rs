//! `vault check`: the intake's content check on plain files, offline, one JSON line per file.
//!
//! Operators and institutions run it on exports before sending them; the vault's intake
//! quarantines exactly the files this refuses, for the same reasons (R-IN-2).

use std::path::{Path, PathBuf};

use clinical::{Format, Limits};
use serde::Serialize;

/// The verdict on one file: the line `vault check` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The file as given (or found under a given directory).
    pub file: String,
    /// The format it was parsed as; `null` when none could be recognised.
    pub format: Option<Format>,
    /// Message or document type (`ADT^A08`, `Bundle/collection`, …); empty when refused.
    pub doc_type: String,
    /// Persons the file names.
    pub persons: usize,
    /// Records taken from it (0 when refused).
    pub records: usize,
    /// Whether the vault would accept it.
    pub accepted: bool,
    /// Stable refusal code, `null` when accepted.
    pub code: Option<&'static str>,
    /// Why it was refused, `null` when accepted.
    pub reason: Option<String>,
    /// What a careful reader should know about an accepted file.
    pub warnings: Vec<String>,
}

/// Checks one file. `forced` overrides format detection.
pub fn check_file(path: &Path, forced: Option<Format>, limits: &Limits) -> Verdict {
    let file = path.display().to_string();
    let mut v = Verdict {
        file: file.clone(),
        format: None,
        doc_type: String::new(),
        persons: 0,
        records: 0,
        accepted: false,
        code: None,
        reason: None,
        warnings: Vec::new(),
    };
    let bytes = match read_bounded(path, limits.max_file_bytes) {
        Ok(b) => b,
        Err(e) => {
            v.code = Some("io");
            v.reason = Some(e);
            return v;
        }
    };
    let Some(format) = forced.or_else(|| clinical::detect(&bytes, Some(&file))) else {
        v.code = Some("format");
        v.reason = Some(
            "not recognised as any accepted format (SS-MIX2 HL7 starts with MSH, FHIR JSON with {, a 特定健診 package is a ZIP, UKE starts with IR, CSV ends in .csv)"
                .to_owned(),
        );
        return v;
    };
    v.format = Some(format);
    match clinical::parse(format, &bytes, Some(&file), limits) {
        Ok(x) => {
            v.accepted = true;
            v.doc_type = x.doc_type;
            v.persons = x.identities.len();
            v.records = x.records.len();
            v.warnings = x.warnings;
        }
        Err(r) => {
            v.code = Some(r.code);
            v.reason = Some(r.reason);
        }
    }
    v
}

fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() > max {
        return Err(format!("file is over the limit of {max} bytes"));
    }
    Ok(buf)
}

/// Files under `roots`: files as given, directories walked in name order (hidden entries
/// skipped), so output order is stable.
pub fn expand(roots: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for r in roots {
        if r.is_dir() {
            walk(r, &mut out)?;
        } else {
            out.push(r.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<(PathBuf, bool)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let hidden = e.file_name().to_str().is_some_and(|n| n.starts_with('.'));
        if !hidden {
            // file_type() does not follow symlinks, so a link cannot make the walk loop.
            entries.push((e.path(), e.file_type()?.is_dir()));
        }
    }
    entries.sort();
    for (p, is_dir) in entries {
        if is_dir {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
