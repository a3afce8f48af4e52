//! Reading a delimited table into the quasi-identifier dataset, and writing the transformed
//! table. The input is read twice (once to find the transformation, once to write it), so a
//! table never has to fit in memory — only its distinct quasi-identifier tuples do.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::dataset::Dataset;
use crate::error::AnonError;
use crate::hierarchy::Hierarchy;

/// Errors of reading and writing tables: the data errors of [`AnonError`] plus I/O.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Data or configuration.
    #[error(transparent)]
    Anon(#[from] AnonError),
    /// Reading or writing a file.
    // The cause is the error's source, so callers that print the chain show it once.
    #[error("{path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Malformed CSV, including bytes that are not UTF-8.
    #[error("{path}: row {row}: {message}")]
    Csv {
        /// File.
        path: String,
        /// 1-based data row (0 = header).
        row: u64,
        /// What the parser said.
        message: String,
    },
}

/// A table's header and its quasi-identifier tuples.
pub struct Loaded {
    /// Column names.
    pub header: Vec<String>,
    /// Position of each quasi-identifier in the header, in hierarchy order.
    pub qi_columns: Vec<usize>,
    /// Distinct quasi-identifier tuples.
    pub dataset: Dataset,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TableError + '_ {
    move |source| TableError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn reader(path: &Path, delimiter: u8) -> Result<csv::Reader<Box<dyn Read>>, TableError> {
    let file = File::open(path).map_err(io_err(path))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(Box::new(BufReader::with_capacity(1 << 20, file))))
}

fn csv_err(path: &Path, e: &csv::Error) -> TableError {
    // The reader counts records from 0 with the header as record 0: data row numbers.
    let row = e.position().map_or(0, |p| p.record());
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not UTF-8 (convert the file to UTF-8 first, e.g. from Shift_JIS)",
            err.field() + 1
        ),
        _ => e.to_string(),
    };
    TableError::Csv {
        path: path.display().to_string(),
        row,
        message,
    }
}

fn header(path: &Path, r: &mut csv::Reader<Box<dyn Read>>) -> Result<Vec<String>, TableError> {
    let h = r.headers().map_err(|e| csv_err(path, &e))?;
    if h.is_empty() || (h.len() == 1 && h.get(0) == Some("")) {
        return Err(AnonError::EmptyInput.into());
    }
    Ok(h.iter().map(str::to_owned).collect())
}

fn find_columns(header: &[String], names: &[&str]) -> Result<Vec<usize>, AnonError> {
    names
        .iter()
        .map(|n| {
            header.iter().position(|h| h == n).ok_or_else(|| {
                let mut available = header.join(", ");
                // One column holding separators: most likely the wrong --delimiter.
                if header.len() == 1 && header[0].contains([',', ';', '\t', '|']) {
                    available.push_str("; only one column was found: check the delimiter");
                }
                AnonError::MissingColumn {
                    column: (*n).to_owned(),
                    available,
                }
            })
        })
        .collect()
}

/// A data row must have as many fields as the header (a short row would be read past).
fn check_width(record: &csv::StringRecord, row: usize, expected: usize) -> Result<(), AnonError> {
    if record.len() == expected {
        return Ok(());
    }
    Err(AnonError::RaggedRow {
        row,
        got: record.len(),
        expected,
    })
}

/// Reads `path` and reduces its quasi-identifier columns (named by the hierarchies) to
/// distinct tuples. `progress` gets the rows read so far every million rows.
pub fn load(
    path: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    progress: impl FnMut(u64),
) -> Result<Loaded, TableError> {
    load_with(path, delimiter, hierarchies, None, progress)
}

/// As [`load`], with a sensitive attribute whose values are kept per tuple.
pub fn load_with(
    path: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    sensitive: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<Loaded, TableError> {
    let mut r = reader(path, delimiter)?;
    let header = header(path, &mut r)?;
    let names: Vec<&str> = hierarchies.iter().map(Hierarchy::column).collect();
    let qi_columns = find_columns(&header, &names)?;
    let sensitive_column = match sensitive {
        Some(s) => {
            if names.contains(&s) {
                return Err(AnonError::Config(format!(
                    "{s} cannot be both a quasi-identifier and the sensitive attribute"
                ))
                .into());
            }
            Some(find_columns(&header, &[s])?[0])
        }
        None => None,
    };
    let mut dataset = Dataset::for_hierarchies(hierarchies, sensitive_column.is_some());
    let mut record = csv::StringRecord::new();
    let mut row = 0usize;
    loop {
        match r.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(path, &e)),
        }
        row += 1;
        check_width(&record, row, header.len())?;
        let values: Vec<&str> = qi_columns.iter().map(|&c| &record[c]).collect();
        let s = sensitive_column.map(|c| &record[c]);
        dataset.push_row_with(row, &values, hierarchies, s)?;
        if row.is_multiple_of(1_000_000) {
            progress(row as u64);
        }
    }
    if row == 0 {
        return Err(AnonError::EmptyInput.into());
    }
    dataset.seal();
    Ok(Loaded {
        header,
        qi_columns,
        dataset,
    })
}

/// The distinct values of one column, sorted (for building a hierarchy from the data).
pub fn distinct_values(
    path: &Path,
    delimiter: u8,
    column: &str,
) -> Result<Vec<String>, TableError> {
    let mut r = reader(path, delimiter)?;
    let head = header(path, &mut r)?;
    let c = find_columns(&head, &[column])?[0];
    let mut seen = std::collections::BTreeSet::new();
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    while r.read_record(&mut record).map_err(|e| csv_err(path, &e))? {
        rows += 1;
        if let Some(v) = record.get(c) {
            if !seen.contains(v) {
                seen.insert(v.to_owned());
            }
        }
    }
    if rows == 0 {
        return Err(AnonError::EmptyInput.into());
    }
    Ok(seen.into_iter().collect())
}

/// Rows written and suppressed by [`write`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Rows whose quasi-identifiers were suppressed (written as `*`).
    pub suppressed: u64,
}

/// Writes the transformed table: quasi-identifiers generalized to `levels`, the records for
/// which `suppressed(leaves)` holds written with every quasi-identifier `*` (as ARX writes
/// them), `drop` columns left out. Written to a temporary file beside `output` and renamed,
/// so a failure leaves no output behind.
pub fn write(
    input: &Path,
    output: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    levels: &[usize],
    suppressed: impl Fn(&[u32]) -> bool,
    drop: &[&str],
) -> Result<Written, TableError> {
    write_with(input, output, delimiter, hierarchies, drop, |leaves| {
        (!suppressed(leaves)).then(|| levels.to_vec())
    })
}

/// As [`write`], with the levels chosen per row (local recoding): `levels_for(leaves)` gives
/// the level of each quasi-identifier for that row, or `None` to suppress it.
pub fn write_with(
    input: &Path,
    output: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    drop: &[&str],
    levels_for: impl Fn(&[u32]) -> Option<Vec<usize>>,
) -> Result<Written, TableError> {
    let mut r = reader(input, delimiter)?;
    let head = header(input, &mut r)?;
    let names: Vec<&str> = hierarchies.iter().map(Hierarchy::column).collect();
    let qi = find_columns(&head, &names)?;
    let dropped = find_columns(&head, drop)?;
    let mut record = csv::StringRecord::new();
    let leaves_of = |record: &csv::StringRecord, row: usize| -> Result<Vec<u32>, AnonError> {
        qi.iter()
            .zip(hierarchies)
            .map(|(&c, h)| h.leaf_in_row(&record[c], row))
            .collect()
    };

    // Pass 2: write.
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = parent.unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir, output)?;
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(BufWriter::with_capacity(1 << 20, file));
    let keep: Vec<usize> = (0..head.len()).filter(|c| !dropped.contains(c)).collect();
    let result = (|| -> Result<Written, TableError> {
        let wr = |e: csv::Error| TableError::Io {
            path: tmp.display().to_string(),
            source: std::io::Error::other(e),
        };
        w.write_record(keep.iter().map(|&c| head[c].as_str()))
            .map_err(wr)?;
        let mut out = Written::default();
        let mut fields: Vec<String> = Vec::with_capacity(keep.len());
        let mut row = 0usize;
        while r.read_record(&mut record).map_err(|e| csv_err(input, &e))? {
            row += 1;
            // Checked again here: the file is read a second time.
            check_width(&record, row, head.len())?;
            let leaves = leaves_of(&record, row)?;
            let levels = levels_for(&leaves);
            out.suppressed += u64::from(levels.is_none());
            fields.clear();
            for &c in &keep {
                match (qi.iter().position(|&q| q == c), &levels) {
                    (Some(_), None) => fields.push("*".to_owned()),
                    (Some(d), Some(levels)) => {
                        let h = &hierarchies[d];
                        fields.push(h.value(levels[d], h.code(leaves[d], levels[d])).to_owned());
                    }
                    (None, _) => fields.push(record[c].to_owned()),
                }
            }
            w.write_record(&fields).map_err(wr)?;
            out.rows += 1;
        }
        let inner = w.into_inner().map_err(|e| TableError::Io {
            path: tmp.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let file = inner.into_inner().map_err(|e| TableError::Io {
            path: tmp.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&tmp))?;
        Ok(out)
    })();
    match result {
        Ok(out) => {
            std::fs::rename(&tmp, output).map_err(io_err(output))?;
            Ok(out)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn tempfile_in(dir: &Path, output: &Path) -> Result<std::path::PathBuf, TableError> {
    let name = output
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
    // Fail early if the directory is not writable.
    File::create(&tmp).map_err(io_err(&tmp))?;
    Ok(tmp)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TableError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir, path)?;
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
