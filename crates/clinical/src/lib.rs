//! Strict, bounded parsing of the medical exchange formats the vault receives (R-IN-1) into
//! one normalised record model.
//!
//! Parsing *is* the content check of R-IN-2 (無害化): a file is accepted only if it parses
//! completely as its format within the [`Limits`], and what the vault keeps is re-encoded
//! from the parsed model ([`Extract`]), never the bytes as they arrived. A file that fails
//! gets a [`Refusal`] with a stable code and a reason a person can act on; nothing here
//! panics, loops without bound or allocates more than the limits allow, whatever the input
//! (the fuzz test in `tests/fuzz.rs` holds this to account).
//!
//! Formats: [`hl7`] (SS-MIX2 HL7 v2.5 in ISO-2022-JP, Shift_JIS or UTF-8 as MSH-18 declares),
//! [`fhir`] (JP Core FHIR R4 JSON), [`cda`] (特定健診 CDA R2 submission ZIP), [`uke`]
//! (レセプト UKE, Shift_JIS), [`csvfile`] (plain UTF-8 CSV with a header).
//!
//! No I/O: callers hand in bytes (and, for SS-MIX2, the storage path, whose naming rules are
//! checked by [`ssmix2_path`]).

#![forbid(unsafe_code)]

pub mod cda;
pub mod csvfile;
pub mod fhir;
pub mod hl7;
pub mod json;
pub mod model;
pub mod ssmix2_path;
pub mod uke;

use serde::Serialize;

pub use model::{Extract, Identity, Kind, Record};

/// Formats this crate parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// SS-MIX2 standardized storage: one HL7 v2.5 message per file.
    Ssmix2,
    /// JP Core FHIR R4 JSON (a Bundle or a single resource).
    FhirJp,
    /// 特定健診 HL7 CDA R2 submission package (ZIP of index, summary and DATA/*.xml).
    CdaTokutei,
    /// レセプト電算処理システム claims (UKE, Shift_JIS CSV).
    Uke,
    /// Plain UTF-8 CSV with a header row.
    Csv,
}

impl Format {
    /// Every format, in detection order.
    pub const ALL: [Format; 5] = [
        Format::Ssmix2,
        Format::FhirJp,
        Format::CdaTokutei,
        Format::Uke,
        Format::Csv,
    ];

    /// Name used on the command line, in JSON output and by the envelope content type.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ssmix2 => "ssmix2",
            Format::FhirJp => "fhir-jp",
            Format::CdaTokutei => "cda-tokutei",
            Format::Uke => "uke",
            Format::Csv => "csv",
        }
    }

    /// Parses a name given by [`Format::as_str`].
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what one file may contain. The defaults are generous for real exports and
/// still small enough that a hostile file cannot exhaust the vault.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: usize,
    /// Most HL7 segments in one message.
    pub max_segments: usize,
    /// Most fields in one HL7 segment.
    pub max_fields: usize,
    /// Longest single HL7 segment or CSV/UKE line, in bytes of decoded text.
    pub max_line_bytes: usize,
    /// Deepest JSON or XML nesting.
    pub max_depth: usize,
    /// Most entries in a ZIP package.
    pub max_zip_entries: usize,
    /// Largest uncompressed size of one ZIP entry.
    pub max_zip_entry_bytes: u64,
    /// Largest uncompressed/compressed ratio of a ZIP entry (zip bombs).
    pub max_zip_ratio: u64,
    /// Most records one file may produce.
    pub max_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_segments: 100_000,
            max_fields: 500,
            max_line_bytes: 1 << 20,
            max_depth: 64,
            max_zip_entries: 100_000,
            max_zip_entry_bytes: 16 << 20,
            max_zip_ratio: 200,
            max_records: 5_000_000,
        }
    }
}

/// Why a file was refused: a stable machine-readable code and a reason for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refusal {
    /// Stable code, e.g. `hl7.encoding`, `fhir.json`, `zip.bomb`.
    pub code: &'static str,
    /// What is wrong, specific enough to find and fix it in the file.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// Guesses the format from the first bytes, then from `name` (a path: an SS-MIX2 storage
/// file name, or an extension); `None` when nothing fits. Detection is only a
/// convenience for `vault check`: the vault itself parses as the envelope's declared content
/// type and refuses a mismatch.
pub fn detect(bytes: &[u8], name: Option<&str>) -> Option<Format> {
    let trimmed = trim_ascii_start(bytes);
    let head = trimmed.strip_prefix(&[0x0b]).unwrap_or(trimmed);
    if head.starts_with(b"MSH") {
        return Some(Format::Ssmix2);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some(Format::CdaTokutei);
    }
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    if head.starts_with(b"{") {
        return Some(Format::FhirJp);
    }
    if head.starts_with(b"IR,") || head.starts_with(b"MN,") {
        return Some(Format::Uke);
    }
    if name.and_then(ssmix2_path::parse).is_some() {
        return Some(Format::Ssmix2);
    }
    let lower = name.map(|n| n.to_ascii_lowercase());
    match lower.as_deref() {
        Some(n) if n.ends_with(".uke") => Some(Format::Uke),
        Some(n) if n.ends_with(".csv") => Some(Format::Csv),
        Some(n) if n.ends_with(".json") => Some(Format::FhirJp),
        Some(n) if n.ends_with(".zip") => Some(Format::CdaTokutei),
        // SS-MIX2 storage files have no extension; their content starts with MSH (above).
        _ => None,
    }
}

/// Parses `bytes` as `format` within `limits`. `path` is the file's storage path when it has
/// one (SS-MIX2 file names carry the patient id, date and data type, which must agree with
/// the message).
pub fn parse(
    format: Format,
    bytes: &[u8],
    path: Option<&str>,
    limits: &Limits,
) -> Result<Extract, Refusal> {
    if bytes.len() > limits.max_file_bytes {
        return Err(Refusal::new(
            "size",
            format!(
                "file is {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_file_bytes
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(Refusal::new("empty", "file is empty"));
    }
    let extract = match format {
        Format::Ssmix2 => hl7::parse(bytes, path, limits),
        Format::FhirJp => fhir::parse(bytes, limits),
        Format::CdaTokutei => cda::parse(bytes, limits),
        Format::Uke => uke::parse(bytes, limits),
        Format::Csv => csvfile::parse(bytes, limits),
    }?;
    if extract.records.len() > limits.max_records {
        return Err(Refusal::new(
            "records",
            format!(
                "{} records, over the limit of {}",
                extract.records.len(),
                limits.max_records
            ),
        ));
    }
    Ok(extract)
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &b[n..]
}

/// Checks a date written `YYYYMMDD` (or `YYYY-MM-DD` when `dashed`) and returns it as
/// `YYYYMMDD`.
pub(crate) fn valid_date(s: &str, dashed: bool) -> Option<String> {
    let compact: String = if dashed {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        format!("{}{}{}", &s[0..4], &s[5..7], &s[8..10])
    } else {
        s.to_owned()
    };
    if compact.len() != 8 || !compact.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let y: u32 = compact[0..4].parse().ok()?;
    let m: u32 = compact[4..6].parse().ok()?;
    let d: u32 = compact[6..8].parse().ok()?;
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1800..=2200).contains(&y) || d == 0 || d > days {
        return None;
    }
    Some(compact)
}

/// A decimal number as medical systems write it: optional sign, digits, optional fraction.
pub(crate) fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_for_real_calendar_days() {
        assert_eq!(valid_date("20240229", false).as_deref(), Some("20240229"));
        assert_eq!(valid_date("20230229", false), None);
        assert_eq!(valid_date("1958-07-22", true).as_deref(), Some("19580722"));
        assert_eq!(valid_date("19581322", false), None);
        assert_eq!(valid_date("1958722", false), None);
    }

    #[test]
    fn decimals() {
        for ok in ["1", "-1.5", "0.95", ".5", "5."] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".", "ccc", "1e5", "1.2.3", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn detection_by_content_then_name() {
        assert_eq!(detect(b"MSH|^~\\&|", None), Some(Format::Ssmix2));
        assert_eq!(detect(b"\x0bMSH|", None), Some(Format::Ssmix2));
        assert_eq!(detect(b"  {\"resourceType\"", None), Some(Format::FhirJp));
        assert_eq!(detect(b"PK\x03\x04", None), Some(Format::CdaTokutei));
        assert_eq!(detect(b"IR,1,13", None), Some(Format::Uke));
        assert_eq!(detect(b"a,b\n1,2\n", Some("x.CSV")), Some(Format::Csv));
        assert_eq!(detect(b"\xfb\xfc", None), None);
    }
}
