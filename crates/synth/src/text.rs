//! Text encodings the formats demand: ISO-2022-JP for SS-MIX2 HL7, Shift_JIS for UKE claims,
//! XML escaping for CDA, HL7 v2 escaping for message fields. Encoding never substitutes
//! silently: a character the target cannot carry is an error (the reference data are
//! filtered to encodable names at load, and a test encodes every table string).

use thiserror::Error;

/// A string could not be represented in the target encoding.
#[derive(Debug, Error)]
#[error("{encoding} cannot represent {text:?}")]
pub struct EncodeError {
    /// Target encoding.
    pub encoding: &'static str,
    /// The offending text (synthetic data only, never real patient data).
    pub text: String,
}

/// ISO-2022-JP bytes of `s`.
pub fn iso2022jp(s: &str) -> Result<Vec<u8>, EncodeError> {
    encode(encoding_rs::ISO_2022_JP, s)
}

/// Shift_JIS bytes of `s`.
pub fn shift_jis(s: &str) -> Result<Vec<u8>, EncodeError> {
    encode(encoding_rs::SHIFT_JIS, s)
}

fn encode(enc: &'static encoding_rs::Encoding, s: &str) -> Result<Vec<u8>, EncodeError> {
    let (bytes, _, had_errors) = enc.encode(s);
    if had_errors {
        return Err(EncodeError {
            encoding: enc.name(),
            text: s.to_string(),
        });
    }
    Ok(bytes.into_owned())
}

/// True if `s` survives both Japanese legacy encodings.
pub fn encodable(s: &str) -> bool {
    iso2022jp(s).is_ok() && shift_jis(s).is_ok()
}

/// HL7 v2 escaping of a field value (separators `|^~\&` become escape sequences).
pub fn hl7_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['|', '^', '~', '\\', '&', '\r', '\n']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' => out.push_str("\\.br\\"),
            c => out.push(c),
        }
    }
    out.into()
}

/// XML text/attribute escaping.
pub fn xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['<', '>', '&', '"', '\'']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out.into()
}

/// CSV field quoting (RFC 4180) when needed.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains([',', '"', '\r', '\n']) {
        return s.into();
    }
    format!("\"{}\"", s.replace('"', "\"\"")).into()
}

/// A number with a fixed count of decimals.
pub fn fixed(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{CHECKUP_ITEMS, DISEASES, DRUGS, LABS, PREFECTURES};

    #[test]
    fn every_table_string_encodes() {
        let mut all: Vec<&str> = Vec::new();
        all.extend(PREFECTURES.iter().flat_map(|p| [p.0, p.1]));
        all.extend(DISEASES.iter().map(|d| d.name));
        all.extend(
            DRUGS
                .iter()
                .flat_map(|d| [d.name, d.usage, d.unit.1, d.route.1]),
        );
        all.extend(LABS.iter().flat_map(|l| [l.name, l.unit]));
        all.extend(CHECKUP_ITEMS.iter().flat_map(|c| [c.name, c.unit]));
        for s in all {
            assert!(encodable(s), "{s}");
        }
    }

    #[test]
    fn unencodable_is_an_error_not_a_substitute() {
        assert!(iso2022jp("𠮷").is_err());
        assert!(shift_jis("😀").is_err());
        assert_eq!(hl7_escape("a|b^c"), "a\\F\\b\\S\\c");
    }
}
