//! Reading a table into the quasi-identifier dataset, and writing the transformed table.
//! CSV or Parquet, chosen by the file's extension (`.parquet`/`.pq` is Parquet, anything
//! else CSV), in and out independently. The input is read twice (once to find the
//! transformation, once to write it), in chunks, so a table never has to fit in memory —
//! only its distinct quasi-identifier tuples do.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use columnar::polars::prelude::{
    Column, DataFrame, IntoColumn, NamedFrom, PolarsError, Series, StringChunked,
};
use columnar::{is_parquet, ParquetIn, ParquetOut};

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
    /// A Parquet file that cannot be read or written.
    #[error("{path}: {message}")]
    Parquet {
        /// File.
        path: String,
        /// What Polars said.
        message: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TableError + '_ {
    move |source| TableError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn pq_err(path: &Path) -> impl Fn(PolarsError) -> TableError + '_ {
    move |e| match e {
        PolarsError::IO { error, .. } => TableError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(error.kind(), error.to_string()),
        },
        other => TableError::Parquet {
            path: path.display().to_string(),
            message: other.to_string(),
        },
    }
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

pub(crate) fn find_columns(header: &[String], names: &[&str]) -> Result<Vec<usize>, AnonError> {
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

/// Rows per chunk: large enough that per-chunk work is noise, small enough that a chunk of
/// a wide table stays a few hundred MB at most.
const CHUNK_ROWS: usize = 65_536;

/// A table being read, CSV or Parquet.
pub(crate) struct Reader<'p> {
    path: &'p Path,
    pub(crate) header: Vec<String>,
    kind: ReaderKind,
    /// Rows handed out so far.
    rows: usize,
    /// CSV records of chunks already processed, reused so reading allocates little per row.
    spare: Vec<Vec<csv::StringRecord>>,
}

enum ReaderKind {
    Csv(csv::Reader<Box<dyn Read + Send>>),
    Parquet(ParquetIn),
}

/// Rows of one chunk, each field readable as text; with Parquet input the columns also keep
/// their types (see [`Chunk::typed`]).
pub(crate) struct Chunk {
    /// 1-based data row number of the first row.
    pub(crate) first_row: usize,
    pub(crate) len: usize,
    body: ChunkBody,
}

enum ChunkBody {
    Csv(Vec<csv::StringRecord>),
    Parquet {
        frame: DataFrame,
        /// Text of the columns asked for, by header position.
        text: Vec<Option<StringChunked>>,
    },
}

impl Chunk {
    /// The text of row `i` (0-based in the chunk), column `c` (header position, one of the
    /// columns asked for). A Parquet null reads as the empty string.
    pub(crate) fn field(&self, i: usize, c: usize) -> &str {
        match &self.body {
            ChunkBody::Csv(records) => records[i].get(c).unwrap_or(""),
            ChunkBody::Parquet { text, .. } => text
                .get(c)
                .and_then(Option::as_ref)
                .and_then(|t| t.get(i))
                .unwrap_or(""),
        }
    }

    /// The column as stored in a Parquet input, with its type (None for CSV input).
    fn typed(&self, name: &str) -> Option<&Column> {
        match &self.body {
            ChunkBody::Parquet { frame, .. } => frame.column(name).ok(),
            ChunkBody::Csv(_) => None,
        }
    }
}

impl<'p> Reader<'p> {
    pub(crate) fn open(path: &'p Path, delimiter: u8) -> Result<Self, TableError> {
        let (header, kind) = if is_parquet(path) {
            let input = ParquetIn::open(path).map_err(pq_err(path))?;
            (input.columns().to_vec(), ReaderKind::Parquet(input))
        } else {
            let file = File::open(path).map_err(io_err(path))?;
            let mut r = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(true)
                .flexible(true)
                .from_reader(
                    Box::new(BufReader::with_capacity(1 << 20, file)) as Box<dyn Read + Send>
                );
            let h = r.headers().map_err(|e| csv_err(path, &e))?;
            if h.len() == 1 && h.get(0) == Some("") {
                return Err(AnonError::EmptyInput.into());
            }
            (h.iter().map(str::to_owned).collect(), ReaderKind::Csv(r))
        };
        if header.is_empty() {
            return Err(AnonError::EmptyInput.into());
        }
        Ok(Self {
            path,
            header,
            kind,
            rows: 0,
            spare: Vec::new(),
        })
    }

    /// Takes back a processed chunk's buffers for the next one.
    pub(crate) fn recycle(&mut self, chunk: Chunk) {
        if let ChunkBody::Csv(records) = chunk.body {
            self.spare.push(records);
        }
    }

    /// The next chunk with (at least) the columns at `columns` readable (a Parquet input's
    /// chunk also keeps those columns typed). `None` at the end of the table.
    pub(crate) fn next_chunk(&mut self, columns: &[usize]) -> Result<Option<Chunk>, TableError> {
        let first_row = self.rows + 1;
        let body = match &mut self.kind {
            ReaderKind::Csv(r) => {
                let mut records = self.spare.pop().unwrap_or_default();
                records.resize_with(CHUNK_ROWS, csv::StringRecord::new);
                let mut n = 0;
                while n < CHUNK_ROWS
                    && r.read_record(&mut records[n])
                        .map_err(|e| csv_err(self.path, &e))?
                {
                    check_width(&records[n], first_row + n, self.header.len())?;
                    n += 1;
                }
                records.truncate(n);
                if records.is_empty() {
                    return Ok(None);
                }
                ChunkBody::Csv(records)
            }
            ReaderKind::Parquet(input) => {
                let Some(frame) = input
                    .next_chunk(columns, CHUNK_ROWS)
                    .map_err(pq_err(self.path))?
                else {
                    return Ok(None);
                };
                let mut text = vec![None; self.header.len()];
                for &c in columns {
                    text[c] =
                        Some(columnar::text(&frame, &self.header[c]).map_err(pq_err(self.path))?);
                }
                ChunkBody::Parquet { frame, text }
            }
        };
        let len = match &body {
            ChunkBody::Csv(r) => r.len(),
            ChunkBody::Parquet { frame, .. } => frame.height(),
        };
        self.rows += len;
        Ok(Some(Chunk {
            first_row,
            len,
            body,
        }))
    }
}

impl Reader<'_> {
    /// Calls `each` with every chunk in order, while a second thread parses the chunks
    /// ahead (at most [`CHUNKS_AHEAD`] waiting): parsing and what is done with the rows
    /// take about as long each, and this way they overlap. Stops at the first error,
    /// the reader's or `each`'s.
    pub(crate) fn for_each_chunk(
        &mut self,
        columns: &[usize],
        mut each: impl FnMut(&Chunk) -> Result<(), TableError>,
    ) -> Result<(), TableError> {
        use std::sync::mpsc::{channel, sync_channel};
        std::thread::scope(|scope| {
            let (full, parsed) = sync_channel::<Result<Chunk, TableError>>(CHUNKS_AHEAD);
            let (done, used) = channel::<Chunk>();
            let parser = scope.spawn(move || loop {
                while let Ok(chunk) = used.try_recv() {
                    self.recycle(chunk);
                }
                let next = self.next_chunk(columns).transpose();
                let last = !matches!(next, Some(Ok(_)));
                // A closed channel: the consumer stopped on an error of its own.
                if next.is_some_and(|n| full.send(n).is_err()) || last {
                    return;
                }
            });
            let mut result = Ok(());
            for chunk in parsed.iter() {
                match chunk.and_then(|c| each(&c).map(|()| c)) {
                    Ok(c) => {
                        let _ = done.send(c);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            drop(parsed);
            parser
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            result
        })
    }
}

/// Parsed chunks waiting for [`Reader::for_each_chunk`]'s consumer.
const CHUNKS_AHEAD: usize = 2;

/// A sensitive attribute to load: its column and, for t-closeness with hierarchical
/// distance, its hierarchy.
#[derive(Clone, Debug)]
pub struct SensitiveColumn {
    /// Column name.
    pub column: String,
    /// Hierarchy of its values (ARX format), if the hierarchical distance is wanted.
    pub hierarchy: Option<Hierarchy>,
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

/// Reads `path` and reduces its quasi-identifier columns (named by the hierarchies) to
/// distinct tuples. `progress` gets the rows read so far, every million rows or so.
pub fn load(
    path: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    progress: impl FnMut(u64),
) -> Result<Loaded, TableError> {
    load_with(path, delimiter, hierarchies, &[], progress)
}

/// As [`load`], with sensitive attributes whose values are kept per tuple.
pub fn load_with(
    path: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    sensitive: &[SensitiveColumn],
    mut progress: impl FnMut(u64),
) -> Result<Loaded, TableError> {
    let mut r = Reader::open(path, delimiter)?;
    let header = r.header.clone();
    let names: Vec<&str> = hierarchies.iter().map(Hierarchy::column).collect();
    let qi_columns = find_columns(&header, &names)?;
    let mut sensitive_columns = Vec::with_capacity(sensitive.len());
    let mut dataset = Dataset::for_hierarchies(hierarchies, sensitive.len());
    for (j, s) in sensitive.iter().enumerate() {
        if names.contains(&s.column.as_str()) {
            return Err(AnonError::Config(format!(
                "{} cannot be both a quasi-identifier and a sensitive attribute",
                s.column
            ))
            .into());
        }
        if sensitive[..j].iter().any(|p| p.column == s.column) {
            return Err(AnonError::Config(format!(
                "sensitive attribute {} is given twice",
                s.column
            ))
            .into());
        }
        sensitive_columns.push(find_columns(&header, &[s.column.as_str()])?[0]);
        if let Some(h) = &s.hierarchy {
            dataset = dataset.with_sensitive_hierarchy(j, h.clone())?;
        }
    }
    let wanted: Vec<usize> = qi_columns
        .iter()
        .chain(&sensitive_columns)
        .copied()
        .collect();
    let mut next_report = 1_000_000;
    let mut rows = 0;
    r.for_each_chunk(&wanted, |chunk| {
        let mut values: Vec<&str> = Vec::with_capacity(qi_columns.len());
        let mut svalues: Vec<&str> = Vec::with_capacity(sensitive_columns.len());
        for i in 0..chunk.len {
            values.clear();
            values.extend(qi_columns.iter().map(|&c| chunk.field(i, c)));
            svalues.clear();
            svalues.extend(sensitive_columns.iter().map(|&c| chunk.field(i, c)));
            dataset.add_row(chunk.first_row + i, &values, hierarchies, &svalues)?;
        }
        rows = chunk.first_row - 1 + chunk.len;
        if rows >= next_report {
            progress(rows as u64);
            next_report = (rows / 1_000_000 + 1) * 1_000_000;
        }
        Ok(())
    })?;
    if rows == 0 {
        return Err(AnonError::EmptyInput.into());
    }
    dataset.seal();
    Ok(Loaded {
        header,
        qi_columns,
        dataset,
    })
}

/// The distinct values of one column, sorted (for building a hierarchy from the data); with
/// `only = Some((column, value))`, of the rows where that column holds that value.
pub fn distinct_values(
    path: &Path,
    delimiter: u8,
    column: &str,
    only: Option<(&str, &str)>,
) -> Result<Vec<String>, TableError> {
    let mut r = Reader::open(path, delimiter)?;
    let c = find_columns(&r.header, &[column])?[0];
    let filter = match only {
        Some((col, value)) => Some((find_columns(&r.header, &[col])?[0], value)),
        None => None,
    };
    let wanted: Vec<usize> = std::iter::once(c).chain(filter.map(|f| f.0)).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(chunk) = r.next_chunk(&wanted)? {
        for i in 0..chunk.len {
            if let Some((fc, fv)) = filter {
                if chunk.field(i, fc) != fv {
                    continue;
                }
            }
            let v = chunk.field(i, c);
            if !seen.contains(v) {
                seen.insert(v.to_owned());
            }
        }
        r.recycle(chunk);
    }
    if seen.is_empty() {
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

/// Where the transformed rows go (one per run: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Sink {
    Csv(csv::Writer<BufWriter<File>>),
    Parquet(ParquetOut),
}

/// As [`write`], with the levels chosen per row (local recoding): `levels_for(leaves)` gives
/// the level of each quasi-identifier for that row, or `None` to suppress it.
///
/// A Parquet output keeps the types of a Parquet input's columns that are passed through;
/// quasi-identifiers (generalized values are text) and every column of a CSV input are text.
pub fn write_with(
    input: &Path,
    output: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    drop: &[&str],
    levels_for: impl Fn(&[u32]) -> Option<Vec<usize>>,
) -> Result<Written, TableError> {
    write_flagged(
        input,
        output,
        delimiter,
        hierarchies,
        drop,
        None,
        levels_for,
    )
}

/// [`write_with`], and with `flag` a last column of that name saying `1` for a suppressed row
/// and `0` for the others. Person-level anonymization needs it to tell a suppressed person
/// from one whose every quasi-identifier was generalized to `*`; it never reaches a release.
pub fn write_flagged(
    input: &Path,
    output: &Path,
    delimiter: u8,
    hierarchies: &[Hierarchy],
    drop: &[&str],
    flag: Option<&str>,
    levels_for: impl Fn(&[u32]) -> Option<Vec<usize>>,
) -> Result<Written, TableError> {
    let mut r = Reader::open(input, delimiter)?;
    let head = r.header.clone();
    if let Some(f) = flag.filter(|f| head.iter().any(|h| h == f)) {
        return Err(AnonError::Config(format!("the table already has a column named {f}")).into());
    }
    let names: Vec<&str> = hierarchies.iter().map(Hierarchy::column).collect();
    let qi = find_columns(&head, &names)?;
    let dropped = find_columns(&head, drop)?;
    let keep: Vec<usize> = (0..head.len()).filter(|c| !dropped.contains(c)).collect();
    // Position of each kept column among the quasi-identifiers, if it is one.
    let qi_of: Vec<Option<usize>> = keep
        .iter()
        .map(|c| qi.iter().position(|q| q == c))
        .collect();

    let parent = output.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = parent.unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir, output)?;
    let result = (|| -> Result<Written, TableError> {
        let mut sink = if is_parquet(output) {
            Sink::Parquet(ParquetOut::create(&tmp).map_err(io_err(&tmp))?)
        } else {
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut w = csv::WriterBuilder::new()
                .delimiter(delimiter)
                .from_writer(BufWriter::with_capacity(1 << 20, file));
            w.write_record(keep.iter().map(|&c| head[c].as_str()).chain(flag))
                .map_err(csv_io(&tmp))?;
            Sink::Csv(w)
        };
        let mut out = Written::default();
        let mut leaves: Vec<u32> = Vec::with_capacity(qi.len());
        let mut first = true;
        let wanted: Vec<usize> = keep.iter().chain(&qi).copied().collect();
        r.for_each_chunk(&wanted, |chunk| {
            // The generalized text of every quasi-identifier, per row of the chunk.
            let mut general: Vec<Vec<&str>> = vec![Vec::with_capacity(chunk.len); qi.len()];
            let mut flags: Vec<&str> =
                Vec::with_capacity(if flag.is_some() { chunk.len } else { 0 });
            for i in 0..chunk.len {
                let row = chunk.first_row + i;
                leaves.clear();
                for (&c, h) in qi.iter().zip(hierarchies) {
                    // Checked again here: the file is read a second time.
                    leaves.push(h.leaf_in_row(chunk.field(i, c), row)?);
                }
                let levels = levels_for(&leaves);
                out.suppressed += u64::from(levels.is_none());
                if flag.is_some() {
                    flags.push(if levels.is_none() { "1" } else { "0" });
                }
                for (d, g) in general.iter_mut().enumerate() {
                    g.push(match &levels {
                        None => "*",
                        Some(levels) => {
                            let h = &hierarchies[d];
                            h.value(levels[d], h.code(leaves[d], levels[d]))
                        }
                    });
                }
            }
            match &mut sink {
                Sink::Csv(w) => {
                    let mut fields: Vec<&str> = Vec::with_capacity(keep.len());
                    // `i` indexes the chunk's rows and every generalized column alike.
                    #[allow(clippy::needless_range_loop)]
                    for i in 0..chunk.len {
                        fields.clear();
                        for (&c, q) in keep.iter().zip(&qi_of) {
                            fields.push(match q {
                                Some(d) => general[*d][i],
                                None => chunk.field(i, c),
                            });
                        }
                        if flag.is_some() {
                            fields.push(flags[i]);
                        }
                        w.write_record(&fields).map_err(csv_io(&tmp))?;
                    }
                }
                Sink::Parquet(p) => {
                    let mut general = general.into_iter().map(Some).collect::<Vec<_>>();
                    let mut columns = Vec::with_capacity(keep.len());
                    for (&c, q) in keep.iter().zip(&qi_of) {
                        let name = head[c].as_str();
                        let column = match (q, chunk.typed(name)) {
                            (Some(d), _) => {
                                let values = general[*d].take().unwrap_or_default();
                                Series::new(name.into(), values).into_column()
                            }
                            (None, Some(typed)) => typed.clone(),
                            (None, None) => {
                                let values: Vec<&str> =
                                    (0..chunk.len).map(|i| chunk.field(i, c)).collect();
                                Series::new(name.into(), values).into_column()
                            }
                        };
                        columns.push(column);
                    }
                    if let Some(f) = flag {
                        columns.push(Series::new(f.into(), &flags).into_column());
                    }
                    let frame = DataFrame::new(chunk.len, columns).map_err(pq_err(&tmp))?;
                    // A CSV input's empty table still needs the schema: the first chunk
                    // fixes it (every chunk has the same columns).
                    p.write(&frame).map_err(pq_err(&tmp))?;
                }
            }
            first = false;
            out.rows += chunk.len as u64;
            Ok(())
        })?;
        if first {
            return Err(AnonError::EmptyInput.into());
        }
        match sink {
            Sink::Csv(w) => {
                let inner = w.into_inner().map_err(|e| TableError::Io {
                    path: tmp.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let file = inner.into_inner().map_err(|e| TableError::Io {
                    path: tmp.display().to_string(),
                    source: e.into_error(),
                })?;
                file.sync_all().map_err(io_err(&tmp))?;
            }
            Sink::Parquet(p) => p.finish().map_err(pq_err(&tmp))?,
        }
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

pub(crate) fn csv_io(path: &Path) -> impl Fn(csv::Error) -> TableError + '_ {
    move |e| TableError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    }
}

pub(crate) fn tempfile_in(dir: &Path, output: &Path) -> Result<std::path::PathBuf, TableError> {
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
