//! The flat person-level table for anonymization benchmarks: one row per person with direct
//! identifiers (on purpose: the anonymizer must be shown to remove them), quasi-identifiers
//! and sensitive attributes. Written twice from the same typed rows — `persons.csv` and
//! `persons.parquet` (Polars, zstd, typed columns, row groups of 65 536) — so the two always
//! agree value for value.

use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use columnar::ParquetOut;
use polars::prelude::*;

use crate::date::Date;
use crate::model::{Params, Person};
use crate::tables::{DISEASES, PREFECTURES};
use crate::text::{csv_field, fixed};

/// Columns, in order (CSV header and Parquet schema).
pub const COLUMNS: [&str; 29] = [
    "person_id",
    "family_name",
    "given_name",
    "family_kana",
    "given_kana",
    "sex",
    "birth_date",
    "age",
    "postal_code",
    "prefecture",
    "city",
    "phone",
    "insurer_number",
    "insured_symbol",
    "insured_number",
    "height_cm",
    "weight_kg",
    "bmi",
    "sbp",
    "dbp",
    "hba1c",
    "ldl",
    "hdl",
    "tg",
    "egfr",
    "primary_icd10",
    "conditions",
    "encounters",
    "institutions",
];

/// Rows per Parquet row group.
const ROW_GROUP: usize = 65_536;

/// One row.
#[derive(Clone, Debug)]
pub struct FlatRow {
    person_id: u64,
    text_a: [String; 5], // family_name, given_name, family_kana, given_kana, sex
    birth_date: Date,
    age: u32,
    text_b: [String; 7],        // postal_code … insured_number
    numbers: [Option<f64>; 10], // height … egfr, rounded as printed
    primary_icd10: Option<String>,
    conditions: String,
    encounters: u32,
    institutions: u32,
}

/// Decimals of the numeric columns, height_cm … egfr.
const DECIMALS: [usize; 10] = [1, 1, 1, 0, 0, 1, 0, 0, 0, 1];
const KEYS: [&str; 10] = [
    "height", "weight", "bmi", "sbp", "dbp", "hba1c", "ldl", "hdl", "tg", "egfr",
];
/// Lab values are only given for adults (no panel is drawn for children).
const ADULT_ONLY: [bool; 10] = [
    false, false, false, false, false, true, true, true, true, true,
];

fn round(v: f64, decimals: usize) -> f64 {
    // Through the printed form, so CSV and Parquet hold the same number.
    fixed(v, decimals).parse().unwrap_or(v)
}

impl FlatRow {
    /// The row of `p`.
    pub fn of(params: &Params, p: &Person) -> Self {
        let age = p.age(params);
        let mut numbers = [None; 10];
        for i in 0..10 {
            if !ADULT_ONLY[i] || age >= 18 {
                numbers[i] = p.value(KEYS[i]).map(|v| round(v, DECIMALS[i]));
            }
        }
        let mut all: Vec<&str> = p
            .conditions
            .iter()
            .map(|c| DISEASES[c.disease].icd10)
            .collect();
        all.dedup();
        Self {
            person_id: p.index,
            text_a: [
                p.family.kanji.into(),
                p.given.kanji.into(),
                p.family.kata.into(),
                p.given.kata.into(),
                p.sex.hl7().into(),
            ],
            birth_date: p.birth,
            age,
            text_b: [
                p.postal.code.into(),
                PREFECTURES[p.postal.pref].0.into(),
                p.postal.city.into(),
                p.phone.clone(),
                p.insurance.insurer.clone(),
                p.insurance.symbol.clone(),
                p.insurance.number.clone(),
            ],
            numbers,
            primary_icd10: p
                .conditions
                .iter()
                .map(|c| &DISEASES[c.disease])
                .find(|d| d.chronic)
                .map(|d| d.icd10.to_string()),
            conditions: all.join(";"),
            encounters: p.encounters.len() as u32,
            institutions: p.links.len() as u32,
        }
    }

    /// The CSV line (with its newline).
    pub fn csv(&self) -> String {
        let mut f: Vec<String> = Vec::with_capacity(COLUMNS.len());
        f.push(self.person_id.to_string());
        f.extend(self.text_a.iter().map(|s| csv_field(s).into_owned()));
        f.push(self.birth_date.to_string());
        f.push(self.age.to_string());
        f.extend(self.text_b.iter().map(|s| csv_field(s).into_owned()));
        for (v, d) in self.numbers.iter().zip(DECIMALS) {
            f.push(v.map(|v| fixed(v, d)).unwrap_or_default());
        }
        f.push(self.primary_icd10.clone().unwrap_or_default());
        f.push(csv_field(&self.conditions).into_owned());
        f.push(self.encounters.to_string());
        f.push(self.institutions.to_string());
        let mut line = f.join(",");
        line.push('\n');
        line
    }
}

/// The CSV header line.
pub fn csv_header() -> String {
    COLUMNS.join(",") + "\n"
}

/// Writes the Parquet file in row groups as rows arrive. Row groups are built and
/// compressed on a thread of their own: the run loop, which writes every ordered output,
/// is what a flat-only run waits on, and this is most of its work.
pub struct ParquetSink {
    rows: Vec<FlatRow>,
    started: bool,
    /// Full row groups to the writer thread (at most two waiting, so memory stays bounded).
    tx: Option<SyncSender<Vec<FlatRow>>>,
    writer: Option<JoinHandle<PolarsResult<()>>>,
}

impl ParquetSink {
    /// Creates `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = ParquetOut::create(path)?;
        let (tx, rx) = sync_channel::<Vec<FlatRow>>(2);
        let writer = std::thread::spawn(move || -> PolarsResult<()> {
            for rows in rx {
                out.write(&frame(&rows)?)?;
            }
            out.finish()
        });
        Ok(Self {
            rows: Vec::with_capacity(ROW_GROUP),
            started: false,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Adds a row; hands a row group to the writer when enough have gathered.
    pub fn push(&mut self, row: FlatRow) -> PolarsResult<()> {
        self.rows.push(row);
        if self.rows.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PolarsResult<()> {
        // An empty first group still fixes the schema, so a table of no rows is valid.
        if self.rows.is_empty() && self.started {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(ROW_GROUP));
        self.started = true;
        let sent = self.tx.as_ref().map(|tx| tx.send(rows).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.tx = None;
        self.join()
    }

    fn join(&mut self) -> PolarsResult<()> {
        match self.writer.take() {
            Some(w) => w.join().unwrap_or_else(|_| {
                Err(PolarsError::ComputeError(
                    "the Parquet writer thread panicked".into(),
                ))
            }),
            None => Err(PolarsError::ComputeError(
                "the Parquet writer has already stopped".into(),
            )),
        }
    }

    /// Writes the last row group and the footer, and flushes the file.
    pub fn finish(mut self) -> PolarsResult<()> {
        self.flush()?;
        self.tx = None;
        self.join()
    }
}

fn frame(rows: &[FlatRow]) -> PolarsResult<DataFrame> {
    let mut cols: Vec<Column> = Vec::with_capacity(COLUMNS.len());
    cols.push(Column::new(
        COLUMNS[0].into(),
        rows.iter().map(|r| r.person_id).collect::<Vec<u64>>(),
    ));
    for i in 0..5 {
        cols.push(Column::new(
            COLUMNS[1 + i].into(),
            rows.iter()
                .map(|r| r.text_a[i].as_str())
                .collect::<Vec<&str>>(),
        ));
    }
    let days: Vec<i32> = rows.iter().map(|r| r.birth_date.to_days() as i32).collect();
    cols.push(Column::new(COLUMNS[6].into(), days).cast(&DataType::Date)?);
    cols.push(Column::new(
        COLUMNS[7].into(),
        rows.iter().map(|r| r.age).collect::<Vec<u32>>(),
    ));
    for i in 0..7 {
        cols.push(Column::new(
            COLUMNS[8 + i].into(),
            rows.iter()
                .map(|r| r.text_b[i].as_str())
                .collect::<Vec<&str>>(),
        ));
    }
    for i in 0..10 {
        let v: Vec<Option<f64>> = rows.iter().map(|r| r.numbers[i]).collect();
        let col = Column::new(COLUMNS[15 + i].into(), v);
        // Whole-number measurements are integers in the table.
        cols.push(if DECIMALS[i] == 0 {
            col.cast(&DataType::Int32)?
        } else {
            col
        });
    }
    cols.push(Column::new(
        COLUMNS[25].into(),
        rows.iter()
            .map(|r| r.primary_icd10.as_deref())
            .collect::<Vec<Option<&str>>>(),
    ));
    cols.push(Column::new(
        COLUMNS[26].into(),
        rows.iter()
            .map(|r| r.conditions.as_str())
            .collect::<Vec<&str>>(),
    ));
    cols.push(Column::new(
        COLUMNS[27].into(),
        rows.iter().map(|r| r.encounters).collect::<Vec<u32>>(),
    ));
    cols.push(Column::new(
        COLUMNS[28].into(),
        rows.iter().map(|r| r.institutions).collect::<Vec<u32>>(),
    ));
    DataFrame::new(rows.len(), cols)
}
