//! Plain CSV tables (UTF-8, RFC 4180 quoting, a header row): every row must have as many
//! fields as the header, header names must be present and distinct.
//!
//! A plain table names no patient the vault could link, so rows are kept as [`Kind::Row`]
//! records (re-encoded as a JSON array of the cell values) under one unlinked identity.

use crate::model::{Extract, Identity, Kind, Record};
use crate::{Format, Limits, Refusal};

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::new(code, reason)
}

/// Parses one CSV file.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Extract, Refusal> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| refuse("csv.encoding", format!("not UTF-8: {e}")))?;
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = rd
        .headers()
        .map_err(|e| refuse("csv.format", format!("header: {e}")))?
        .clone();
    if header.len() > limits.max_fields {
        return Err(refuse(
            "csv.limits",
            format!(
                "{} columns, over the limit of {}",
                header.len(),
                limits.max_fields
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, h) in header.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(refuse(
                "csv.header",
                format!("column {} has no name", i + 1),
            ));
        }
        if !seen.insert(h) {
            return Err(refuse(
                "csv.header",
                format!("column name {h:?} appears twice"),
            ));
        }
    }
    let mut x = Extract::new(Format::Csv, format!("table/{}", header.len()));
    let who = x.identity(Identity::default());
    for row in rd.records() {
        let row = row.map_err(|e| refuse("csv.format", e.to_string()))?;
        if row.as_slice().len() > limits.max_line_bytes {
            return Err(refuse(
                "csv.limits",
                format!("a row over {} bytes", limits.max_line_bytes),
            ));
        }
        if x.records.len() >= limits.max_records {
            return Err(refuse(
                "csv.limits",
                format!("over {} rows", limits.max_records),
            ));
        }
        let mut r = Record::new(Kind::Row, who);
        r.value = serde_json::to_string(&row.iter().collect::<Vec<_>>()).ok();
        x.records.push(r);
    }
    Ok(x)
}
