//! The event table that goes with the flat person table: one row per diagnosis, prescription
//! and lab result of every encounter, keyed by the same `person_id`. It is what person-level
//! anonymization works on (issue #12): a person has many rows here, so protecting rows is not
//! protecting people.

use std::fmt::Write as _;

use crate::model::{Institution, Person};
use crate::tables::{DISEASES, DRUGS, LABS};
use crate::text::fixed;

/// Columns, in order.
pub const COLUMNS: [&str; 6] = ["person_id", "date", "institution", "kind", "code", "value"];

/// The CSV header line.
pub fn csv_header() -> String {
    COLUMNS.join(",") + "\n"
}

/// The CSV lines of `p`'s events, in encounter order, and how many there are. Kinds: `dx`
/// (ICD-10 code, no value), `rx` (formulary code, days supplied), `lab` (JLAC10 code, result).
pub fn csv(insts: &[Institution], p: &Person) -> (String, u64) {
    let mut out = String::new();
    let mut n = 0;
    for e in &p.encounters {
        let inst = p
            .links
            .get(e.link)
            .and_then(|l| insts.get(l.inst))
            .map(|i| i.code.as_str())
            .unwrap_or_default();
        let mut line = |kind: &str, code: &str, value: &str| {
            // Codes and institution codes are digits and ASCII letters: no quoting needed.
            let _ = writeln!(out, "{},{},{inst},{kind},{code},{value}", p.index, e.date);
            n += 1;
        };
        for &c in &e.diagnoses {
            line("dx", DISEASES[p.conditions[c].disease].icd10, "");
        }
        for &(drug, days) in &e.drugs {
            line("rx", DRUGS[drug].code, &days.to_string());
        }
        for &(lab, v) in &e.labs {
            let l = &LABS[lab];
            line("lab", l.jlac10, &fixed(v, l.decimals));
        }
    }
    (out, n)
}
