//! Parquet files a row group at a time, through Polars without its lazy engine (which would
//! bring an HTTP client into the vault: docs/anonymization.md, R-GW-6). Reading hands out
//! chunks of whole row groups with only the columns asked for; writing takes one data frame
//! per row group. So a table far larger than memory streams through in bounded memory, and
//! both the synthetic data generator and the anonymizer share one tested way of doing it.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use polars;
use polars::io::parquet::metadata::FileMetadataRef;
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

/// Whether a path names a Parquet file (by its extension, as the command lines document).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"))
}

/// A Parquet file read in chunks of whole row groups.
pub struct ParquetIn {
    path: PathBuf,
    metadata: FileMetadataRef,
    columns: Vec<String>,
    /// (first row, rows) of each row group.
    groups: Vec<(usize, usize)>,
    next: usize,
}

impl ParquetIn {
    /// Opens `path` and reads its footer.
    pub fn open(path: &Path) -> PolarsResult<Self> {
        let mut reader = ParquetReader::new(File::open(path)?);
        let schema = reader.schema()?;
        let metadata = reader.get_metadata()?.clone();
        let mut first = 0;
        let groups = metadata
            .row_groups
            .iter()
            .map(|g| {
                let at = first;
                first += g.num_rows();
                (at, g.num_rows())
            })
            .collect();
        Ok(Self {
            path: path.to_owned(),
            columns: schema.iter_names().map(|n| n.to_string()).collect(),
            metadata,
            groups,
            next: 0,
        })
    }

    /// Column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.metadata.num_rows
    }

    /// The next chunk: whole row groups adding up to at least `target_rows` rows (or the
    /// rest of the file), with the columns at `projection` (indices into
    /// [`ParquetIn::columns`], in file order in the result). `None` at the end.
    pub fn next_chunk(
        &mut self,
        projection: &[usize],
        target_rows: usize,
    ) -> PolarsResult<Option<DataFrame>> {
        let Some(&(first, _)) = self.groups.get(self.next) else {
            return Ok(None);
        };
        let mut rows = 0;
        while rows < target_rows.max(1) {
            let Some(&(_, n)) = self.groups.get(self.next) else {
                break;
            };
            rows += n;
            self.next += 1;
        }
        let mut projection = projection.to_vec();
        projection.sort_unstable();
        projection.dedup();
        let mut reader = ParquetReader::new(File::open(&self.path)?)
            .with_projection(Some(projection))
            .with_slice(Some((first, rows)));
        reader.set_metadata(self.metadata.clone());
        reader.finish().map(Some)
    }
}

/// The text of a column: every value as Polars prints it in CSV (numbers in full, dates as
/// ISO 8601), nulls as `None`.
pub fn text(df: &DataFrame, column: &str) -> PolarsResult<StringChunked> {
    let c = df.column(column)?.cast(&DataType::String)?;
    Ok(c.str()?.rechunk().into_owned())
}

/// The file handle shared with Polars' writer, so that after the footer is written the last
/// buffered bytes are flushed here and an error is seen (Polars' batched writer has no way
/// to hand its writer back).
#[derive(Clone)]
struct Shared(Arc<Mutex<BufWriter<File>>>);

impl Shared {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("parquet writer poisoned"))?;
        f(&mut guard)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.with(|w| w.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.with(|w| w.flush())
    }
}

/// A Parquet file written one row group per [`ParquetOut::write`] (zstd, sequential
/// encoding so that the same frames give the same bytes run after run).
pub struct ParquetOut {
    writer: Option<BatchedWriter<Shared>>,
    file: Shared,
}

impl ParquetOut {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        Ok(Self {
            writer: None,
            file: Shared(Arc::new(Mutex::new(file))),
        })
    }

    /// Writes `df` as one row group. The first frame fixes the schema; an empty frame
    /// writes no row group but still fixes it.
    pub fn write(&mut self, df: &DataFrame) -> PolarsResult<()> {
        if self.writer.is_none() {
            let w = ParquetWriter::new(self.file.clone())
                .with_compression(ParquetCompression::Zstd(None))
                .set_parallel(false);
            self.writer = Some(w.batched(df.schema())?);
        }
        if let Some(w) = self.writer.as_mut() {
            if df.height() > 0 {
                w.write_batch(df)?;
            }
        }
        Ok(())
    }

    /// Writes the footer, flushes, and syncs the file to disk.
    pub fn finish(mut self) -> PolarsResult<()> {
        if let Some(w) = self.writer.take() {
            w.finish()?;
        }
        self.file.with(|w| {
            w.flush()?;
            w.get_ref().sync_all()
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(from: i64, n: usize) -> DataFrame {
        let ids: Vec<i64> = (from..from + n as i64).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        DataFrame::new(
            n,
            vec![
                Column::new("id".into(), ids),
                Column::new("name".into(), names),
            ],
        )
        .expect("frame")
    }

    #[test]
    fn chunks_cover_every_row_once_in_order_with_the_projection() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.parquet");
        let mut out = ParquetOut::create(&path).expect("create");
        for g in 0..5 {
            out.write(&frame(g * 10, 10)).expect("write");
        }
        out.finish().expect("finish");

        let mut input = ParquetIn::open(&path).expect("open");
        assert_eq!(input.columns(), ["id", "name"]);
        assert_eq!(input.rows(), 50);
        let mut seen = Vec::new();
        let mut chunks = 0;
        while let Some(df) = input.next_chunk(&[1], 25).expect("chunk") {
            assert_eq!(df.width(), 1, "only the projected column");
            let names = text(&df, "name").expect("text");
            seen.extend((0..names.len()).map(|i| names.get(i).unwrap_or("").to_owned()));
            chunks += 1;
        }
        // Row groups of 10, at least 25 rows a chunk: 30 + 20.
        assert_eq!(chunks, 2);
        let expected: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn text_prints_numbers_and_dates() {
        let df = DataFrame::new(
            2,
            vec![
                Column::new("n".into(), [7i64, -3]),
                Column::new("d".into(), [0i32, 19_000])
                    .cast(&DataType::Date)
                    .expect("date"),
            ],
        )
        .expect("frame");
        let n = text(&df, "n").expect("n");
        let n: Vec<_> = (0..n.len()).map(|i| n.get(i)).collect();
        assert_eq!(n, [Some("7"), Some("-3")]);
        let d = text(&df, "d").expect("d");
        let d: Vec<_> = (0..d.len()).map(|i| d.get(i)).collect();
        assert_eq!(d, [Some("1970-01-01"), Some("2022-01-08")]);
    }
}
