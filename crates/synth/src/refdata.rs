//! The openly licensed reference lists (names, postal areas), embedded in the binary so the
//! generator needs no files at run time and cannot drift from what was tested. Sources and
//! licences: `data/LICENSES.md`.

use std::sync::OnceLock;

use crate::tables::PREFECTURES;

/// A name in its three written forms.
#[derive(Debug)]
pub struct Name {
    /// Kanji (漢字) form.
    pub kanji: &'static str,
    /// Hiragana reading.
    pub hira: &'static str,
    /// Katakana reading, the form HL7 and FHIR carry as the phonetic name.
    pub kata: &'static str,
}

/// A postal area: code, prefecture, city and town.
#[derive(Debug)]
pub struct Postal {
    /// Seven digits, no hyphen.
    pub code: &'static str,
    /// Index into [`PREFECTURES`] (JIS X 0401 code minus one).
    pub pref: usize,
    /// City, ward, town or village (市区町村).
    pub city: &'static str,
    /// Town area (町域).
    pub town: &'static str,
}

/// All embedded reference lists, parsed once.
#[derive(Debug)]
pub struct RefData {
    /// Family names.
    pub family: Vec<Name>,
    /// Male given names.
    pub male: Vec<Name>,
    /// Female given names.
    pub female: Vec<Name>,
    /// Postal areas of each prefecture, indexed like [`PREFECTURES`].
    pub postal_by_pref: Vec<Vec<Postal>>,
}

static NAMES_TSV: &str = include_str!("../data/names.tsv");
static POSTAL_TSV: &str = include_str!("../data/postal.tsv");
static REF: OnceLock<RefData> = OnceLock::new();

/// The parsed reference data. The files are part of the binary and checked by the tests, so
/// a malformed line is skipped rather than reported: it cannot come from user input.
pub fn refdata() -> &'static RefData {
    REF.get_or_init(|| {
        let mut r = RefData {
            family: Vec::new(),
            male: Vec::new(),
            female: Vec::new(),
            postal_by_pref: (0..PREFECTURES.len()).map(|_| Vec::new()).collect(),
        };
        for line in NAMES_TSV.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&'static str> = line.split('\t').collect();
            if let [kind, kanji, hira, kata] = f[..] {
                if !crate::text::encodable(kanji) || !crate::text::encodable(kata) {
                    continue; // JIS X 0213-only characters: the legacy formats cannot carry them
                }
                let n = Name { kanji, hira, kata };
                match kind {
                    "last" => r.family.push(n),
                    "male" => r.male.push(n),
                    "female" => r.female.push(n),
                    _ => {}
                }
            }
        }
        for line in POSTAL_TSV.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&'static str> = line.split('\t').collect();
            if let [code, pref, city, town] = f[..] {
                if !crate::text::encodable(city) || !crate::text::encodable(town) {
                    continue;
                }
                if let Some(pref) = pref.parse::<usize>().ok().and_then(|p| p.checked_sub(1)) {
                    if let Some(list) = r.postal_by_pref.get_mut(pref) {
                        list.push(Postal {
                            code,
                            pref,
                            city,
                            town,
                        });
                    }
                }
            }
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_parsed_and_every_prefecture_has_postal_areas() {
        let r = refdata();
        // Only names the legacy encodings cannot carry are dropped, and they are few.
        let name_lines = NAMES_TSV.lines().filter(|l| !l.starts_with('#')).count();
        let kept = r.family.len() + r.male.len() + r.female.len();
        assert!(
            kept <= name_lines && kept * 100 >= name_lines * 99,
            "{kept} of {name_lines}"
        );
        assert!(r.family.len() >= 500 && r.male.len() >= 2000 && r.female.len() >= 2000);
        let postal_lines = POSTAL_TSV.lines().filter(|l| !l.starts_with('#')).count();
        let kept = r.postal_by_pref.iter().map(Vec::len).sum::<usize>();
        assert!(
            kept <= postal_lines && kept * 100 >= postal_lines * 99,
            "{kept} of {postal_lines}"
        );
        for (i, list) in r.postal_by_pref.iter().enumerate() {
            assert!(
                list.len() > 20,
                "prefecture {} has {} postal areas",
                i + 1,
                list.len()
            );
            assert!(list
                .iter()
                .all(|p| p.code.len() == 7 && p.code.bytes().all(|b| b.is_ascii_digit())));
        }
        // Katakana readings are what HL7/FHIR carry: they must be katakana (and the long mark).
        for n in r.family.iter().chain(&r.male).chain(&r.female) {
            assert!(
                n.kata
                    .chars()
                    .all(|c| ('\u{30A1}'..='\u{30FC}').contains(&c)),
                "{}",
                n.kata
            );
        }
    }
}
