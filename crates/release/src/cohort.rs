//! The dataset a release starts from: one row per linked person in the cohort, with the
//! columns a method may generalize (age at the committee's decision date, sex, the first three
//! digits of the postal code) and the sensitive attribute (the ICD-10 category of the
//! person's earliest diagnosis). No pseudonym, name or id ever enters a row (R-AN-4). Pure:
//! the vault reads the store and hands the facts in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Column names of a release dataset, in order.
pub const COLUMNS: [&str; 4] = ["age", "sex", "postal3", "diagnosis"];

/// What the vault knows of one person (from the sealed identities and the records).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Person {
    /// Birth date `YYYYMMDD`.
    pub birth: Option<String>,
    /// `M`, `F`, `O` or `U`.
    pub sex: Option<char>,
    /// Postal code, digits.
    pub postal: Option<String>,
    /// Institutions that sent records of the person.
    pub institutions: BTreeSet<String>,
    /// Diagnoses: (date `YYYYMMDD` if known, code).
    pub diagnoses: Vec<(Option<String>, String)>,
}

/// One term of a cohort selection; a person is in the cohort when every term holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Diagnosis(String),
    Sex(char),
    Age(u32, u32),
    Institution(String),
}

/// A cohort selection: `all`, or terms joined by `,` — `diagnosis=E11` (any diagnosis code
/// starting so), `sex=F`, `age=40-74`, `institution=1312345678`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cohort {
    terms: Vec<Term>,
}

impl Cohort {
    /// Parses a selection, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "all" {
            return Ok(Self { terms: Vec::new() });
        }
        let mut terms = Vec::new();
        for part in text.split(',') {
            let Some((key, value)) = part.trim().split_once('=') else {
                return Err(format!(
                    "cohort term {part:?} is not KEY=VALUE (use all, diagnosis=E11, sex=F, \
                     age=40-74, institution=ID, joined by commas)"
                ));
            };
            let value = value.trim();
            let term = match key.trim() {
                "diagnosis" if !value.is_empty() => Term::Diagnosis(value.to_uppercase()),
                "sex" => match value {
                    "M" | "F" | "O" | "U" => Term::Sex(value.chars().next().unwrap_or('U')),
                    _ => return Err(format!("cohort sex={value}: expected M, F, O or U")),
                },
                "age" => {
                    let parsed = value
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                    match parsed {
                        Some((lo, hi)) if lo <= hi => Term::Age(lo, hi),
                        _ => return Err(format!("cohort age={value}: expected LOW-HIGH")),
                    }
                }
                "institution" if !value.is_empty() => Term::Institution(value.to_owned()),
                other => return Err(format!("cohort term {other:?} is not known or empty")),
            };
            terms.push(term);
        }
        Ok(Self { terms })
    }

    fn holds(&self, p: &Person, age: u32) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Diagnosis(prefix) => p.diagnoses.iter().any(|(_, c)| c.starts_with(prefix)),
            Term::Sex(s) => p.sex == Some(*s),
            Term::Age(lo, hi) => (*lo..=*hi).contains(&age),
            Term::Institution(i) => p.institutions.contains(i),
        })
    }
}

/// Year, month and day of a strict `YYYY-MM-DD` or `YYYYMMDD` calendar day ([`crate::day`]).
fn ymd(s: &str) -> Option<(u32, u32, u32)> {
    let d = crate::day::parse(s).ok()?;
    Some((
        u32::try_from(d.year()).ok()?,
        u32::from(u8::from(d.month())),
        u32::from(d.day()),
    ))
}

/// Whether `s` is a date as a release request gives one (`YYYY-MM-DD` or `YYYYMMDD`, a day
/// of the calendar between 1900 and 2100).
pub fn is_date(s: &str) -> bool {
    ymd(s).is_some()
}

/// Age in whole years on `date` (`YYYY-MM-DD` or `YYYYMMDD`) of a person born on `birth`
/// (`YYYYMMDD`); `None` for malformed dates or a birth after the date.
pub fn age_at(birth: &str, date: &str) -> Option<u32> {
    let (by, bm, bd) = ymd(birth)?;
    let (y, m, d) = ymd(date)?;
    let before_birthday = (m, d) < (bm, bd);
    y.checked_sub(by)?.checked_sub(u32::from(before_birthday))
}

/// The ICD-10 category (letter and two digits) of a code, if it is one.
fn icd10_category(code: &str) -> Option<String> {
    let b = code.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit())
        .then(|| code[..3].to_owned())
}

/// Why persons in the store were left out of a dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Persons considered.
    pub persons: u64,
    /// Persons in the cohort and in the dataset.
    pub selected: u64,
    /// Persons outside the cohort selection.
    pub outside: u64,
    /// Persons who opted out (R-IN-6): never in a dataset.
    pub opted_out: u64,
    /// Persons without a usable birth date, sex or postal code.
    pub incomplete: u64,
}

/// Builds the dataset rows (in [`COLUMNS`] order) of the persons in `cohort`, ages taken on
/// `as_of`; persons in `opted_out` are never included. Rows come in pseudonym order, which
/// the output does not reveal.
pub fn dataset(
    persons: &BTreeMap<String, Person>,
    opted_out: &BTreeSet<String>,
    cohort: &Cohort,
    as_of: &str,
) -> (Vec<[String; 4]>, Selection) {
    let (rows, sel, _) = dataset_with_members(persons, opted_out, cohort, as_of);
    (rows, sel)
}

/// [`dataset`], and the pseudonyms of the persons in it (sorted), which stay in the vault
/// for the cumulative-release checks.
pub fn dataset_with_members(
    persons: &BTreeMap<String, Person>,
    opted_out: &BTreeSet<String>,
    cohort: &Cohort,
    as_of: &str,
) -> (Vec<[String; 4]>, Selection, Vec<String>) {
    let mut sel = Selection::default();
    let mut rows = Vec::new();
    let mut members = Vec::new();
    for (pseudonym, p) in persons {
        sel.persons += 1;
        if opted_out.contains(pseudonym) {
            sel.opted_out += 1;
            continue;
        }
        let age = p.birth.as_deref().and_then(|b| age_at(b, as_of));
        let postal3 = p
            .postal
            .as_deref()
            .filter(|s| s.len() >= 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .map(|s| s[..3].to_owned());
        let (Some(age), Some(sex), Some(postal3)) = (age, p.sex, postal3) else {
            sel.incomplete += 1;
            continue;
        };
        if !cohort.holds(p, age) {
            sel.outside += 1;
            continue;
        }
        let mut dx: Vec<&(Option<String>, String)> = p
            .diagnoses
            .iter()
            .filter(|(_, c)| icd10_category(c).is_some())
            .collect();
        dx.sort();
        let diagnosis = dx
            .first()
            .and_then(|(_, c)| icd10_category(c))
            .unwrap_or_else(|| "none".into());
        sel.selected += 1;
        rows.push([age.to_string(), sex.to_string(), postal3, diagnosis]);
        members.push(pseudonym.clone());
    }
    (rows, sel, members)
}

/// Columns of the person table of a person-level release.
pub const PERSON_COLUMNS: [&str; 4] = ["person", "age", "sex", "postal3"];
/// Columns of its event table: one row per diagnosis, kind `dx`.
pub const EVENT_COLUMNS: [&str; 4] = ["person", "date", "kind", "code"];

/// The tables of a person-level release, and who is in them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonTables {
    /// [`PERSON_COLUMNS`] rows.
    pub persons: Vec<[String; 4]>,
    /// [`EVENT_COLUMNS`] rows.
    pub events: Vec<[String; 4]>,
    /// Who was selected and who was left out.
    pub selection: Selection,
    /// Pseudonyms of the persons, in row order (they stay in the vault).
    pub members: Vec<String>,
}

/// The tables of a person-level release (issue #12): one row per person of the cohort
/// ([`PERSON_COLUMNS`]) and one row per diagnosis of theirs with an ICD-10 code
/// ([`EVENT_COLUMNS`], dates `YYYY-MM-DD` or empty when unknown), the same selection as
/// [`dataset_with_members`]. Person ids are row numbers of this build (`p1`, `p2`, …), never
/// pseudonyms; the anonymizer replaces them with release keys in any case.
pub fn person_tables(
    persons: &BTreeMap<String, Person>,
    opted_out: &BTreeSet<String>,
    cohort: &Cohort,
    as_of: &str,
) -> PersonTables {
    let (rows, sel, members) = dataset_with_members(persons, opted_out, cohort, as_of);
    let mut people = Vec::with_capacity(rows.len());
    let mut events = Vec::new();
    for (i, (row, pseudonym)) in rows.into_iter().zip(&members).enumerate() {
        let [age, sex, postal3, _] = row;
        let id = format!("p{}", i + 1);
        let mut dx: Vec<&(Option<String>, String)> = persons
            .get(pseudonym)
            .map(|p| p.diagnoses.iter().collect())
            .unwrap_or_default();
        dx.retain(|(_, c)| icd10_category(c).is_some());
        dx.sort();
        for (date, code) in dx {
            let date = date
                .as_deref()
                .filter(|d| d.len() == 8)
                .and_then(|d| crate::day::parse(d).ok())
                .map(crate::day::format)
                .unwrap_or_default();
            events.push([id.clone(), date, "dx".to_owned(), code.trim().to_owned()]);
        }
        people.push([id, age, sex, postal3]);
    }
    PersonTables {
        persons: people,
        events,
        selection: sel,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ages_count_birthdays() {
        assert_eq!(age_at("19800615", "2026-06-14"), Some(45));
        assert_eq!(age_at("19800615", "2026-06-15"), Some(46));
        assert_eq!(age_at("19800615", "20260101"), Some(45));
        assert_eq!(age_at("20300101", "2026-01-01"), None);
        assert_eq!(age_at("1980", "2026-01-01"), None);
    }

    #[test]
    fn selections_parse_or_say_why_not() {
        assert!(Cohort::parse("all").is_ok());
        assert!(Cohort::parse("diagnosis=E11, sex=F, age=40-74").is_ok());
        assert!(Cohort::parse("age=74-40").is_err());
        assert!(Cohort::parse("colour=red").is_err());
        assert!(Cohort::parse("sex=X").is_err());
        assert!(Cohort::parse("E11").is_err());
    }

    fn person() -> impl Strategy<Value = Person> {
        (
            proptest::option::of(1930u32..2020),
            proptest::option::of(prop::sample::select(vec!['M', 'F'])),
            proptest::option::of("[0-9]{7}"),
            prop::collection::vec(
                ("[A-Z][0-9]{2}", proptest::option::of("20[0-2][0-9]0101")),
                0..3,
            ),
            prop::collection::btree_set("I[0-3]", 1..3),
        )
            .prop_map(|(year, sex, postal, dx, institutions)| Person {
                birth: year.map(|y| format!("{y}0401")),
                sex,
                postal,
                institutions,
                diagnoses: dx.into_iter().map(|(c, d)| (d, c)).collect(),
            })
    }

    proptest! {
        #[test]
        fn person_tables_carry_no_pseudonym_and_every_coded_diagnosis(
            persons in prop::collection::btree_map("p[0-9]{3}", person(), 0..40),
            opted in prop::collection::btree_set("p[0-9]{3}", 0..10),
        ) {
            let c = Cohort::parse("all").expect("cohort");
            let PersonTables { persons: people, events, selection: sel, members } =
                person_tables(&persons, &opted, &c, "2026-11-01");
            prop_assert_eq!(people.len() as u64, sel.selected);
            prop_assert_eq!(people.len(), members.len());
            let ids: BTreeSet<&str> = people.iter().map(|p| p[0].as_str()).collect();
            prop_assert_eq!(ids.len(), people.len());
            for m in &members {
                prop_assert!(!opted.contains(m));
                prop_assert!(!ids.contains(m.as_str()), "a pseudonym is an id");
            }
            let coded: usize = members
                .iter()
                .map(|m| persons[m].diagnoses.iter().filter(|(_, c)| icd10_category(c).is_some()).count())
                .sum();
            prop_assert_eq!(events.len(), coded);
            for e in &events {
                prop_assert!(ids.contains(e[0].as_str()));
                prop_assert!(e[1].is_empty() || is_date(&e[1]), "date {:?}", e[1]);
            }
        }

        #[test]
        fn every_person_is_counted_once_and_no_opted_out_person_is_selected(
            persons in prop::collection::btree_map("p[0-9]{3}", person(), 0..40),
            opted in prop::collection::btree_set("p[0-9]{3}", 0..10),
            cohort in prop::sample::select(vec!["all", "sex=F", "age=40-74", "diagnosis=E", "institution=I1,sex=M"]),
        ) {
            let c = Cohort::parse(cohort).expect("cohort");
            let (rows, sel) = dataset(&persons, &opted, &c, "2026-11-01");
            prop_assert_eq!(sel.persons, persons.len() as u64);
            prop_assert_eq!(sel.selected + sel.outside + sel.opted_out + sel.incomplete, sel.persons);
            prop_assert_eq!(rows.len() as u64, sel.selected);
            let opted_in_store = persons.keys().filter(|p| opted.contains(*p)).count() as u64;
            prop_assert_eq!(sel.opted_out, opted_in_store);
            for r in &rows {
                let age: u32 = r[0].parse().expect("age");
                if cohort == "sex=F" { prop_assert_eq!(&r[1], "F"); }
                if cohort == "age=40-74" { prop_assert!((40..=74).contains(&age)); }
                prop_assert_eq!(r[2].len(), 3);
            }
        }
    }
}
