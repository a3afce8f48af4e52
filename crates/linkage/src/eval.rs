//! Scoring linkage against ground truth (the synthetic generator's `truth/links.csv`):
//! pairwise precision and recall over the institution-local ids that name the same person.

use std::collections::HashMap;

use crate::Linker;

/// Pair counts; a pair is two local ids (at any institutions) of one person.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score {
    /// Local ids in the truth.
    pub local_ids: u64,
    /// Of them, how many the linker never saw.
    pub unseen: u64,
    /// Pairs that are truly the same person.
    pub true_pairs: u64,
    /// Pairs the linker put under one pseudonym.
    pub found_pairs: u64,
    /// Pairs that are both.
    pub correct_pairs: u64,
}

impl Score {
    /// Share of true pairs found (1.0 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(self.correct_pairs, self.true_pairs)
    }

    /// Share of found pairs that are true (1.0 when none were found).
    pub fn precision(&self) -> f64 {
        ratio(self.correct_pairs, self.found_pairs)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Scores what `linker` remembers against `truth`: (institution, local id) → person.
pub fn score(linker: &Linker, truth: &HashMap<(String, String), u64>) -> Score {
    let map = linker.local_map();
    let mut s = Score::default();
    let mut by_person: HashMap<u64, u64> = HashMap::new();
    let mut by_pseudonym: HashMap<String, u64> = HashMap::new();
    let mut by_both: HashMap<(u64, String), u64> = HashMap::new();
    for ((inst, local), person) in truth {
        s.local_ids += 1;
        *by_person.entry(*person).or_default() += 1;
        let Some((p, _)) = map.get(&linker.local_tag(inst, local)) else {
            s.unseen += 1;
            continue;
        };
        *by_pseudonym.entry(p.0.clone()).or_default() += 1;
        *by_both.entry((*person, p.0.clone())).or_default() += 1;
    }
    s.true_pairs = by_person.values().map(|&n| pairs(n)).sum();
    s.found_pairs = by_pseudonym.values().map(|&n| pairs(n)).sum();
    s.correct_pairs = by_both.values().map(|&n| pairs(n)).sum();
    s
}

/// Reads `truth/links.csv` (`person_id,institution_code,local_patient_id`).
pub fn read_truth(csv: &str) -> Result<HashMap<(String, String), u64>, String> {
    let mut out = HashMap::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [person, inst, local] = f.as_slice() else {
            return Err(format!("line {}: expected 3 fields", n + 1));
        };
        let person: u64 = person
            .parse()
            .map_err(|_| format!("line {}: person id {person:?}", n + 1))?;
        out.insert(((*inst).to_owned(), (*local).to_owned()), person);
    }
    Ok(out)
}

/// What [`link_tree`] did.
#[derive(Clone, Debug, Default)]
pub struct TreeStats {
    /// Files read.
    pub files: u64,
    /// Files refused by the parsers (with their first reason).
    pub refused: Vec<(String, String)>,
    /// Records taken.
    pub records: u64,
    /// Identities linked, per basis name.
    pub by_basis: std::collections::BTreeMap<&'static str, u64>,
    /// Records per format name.
    pub records_by_format: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes read.
    pub bytes: u64,
}

/// Parses every file of a synthetic output folder (`enclave synth`) and links every identity
/// in it, the institution taken from the path as the envelope's signer would give it.
pub fn link_tree(root: &std::path::Path, linker: &mut Linker) -> Result<TreeStats, String> {
    let limits = clinical::Limits::default();
    let mut st = TreeStats::default();
    for sub in ["ssmix2", "fhir", "claims", "cda"] {
        let mut files = Vec::new();
        walk(&root.join(sub), &mut files).map_err(|e| format!("{sub}: {e}"))?;
        for f in files {
            let rel = f.strip_prefix(root.join(sub)).map_err(|e| e.to_string())?;
            let first = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .unwrap_or_default();
            // cda/{inst}_{date}_{n}.zip; the others have a folder per institution.
            let inst = first.split('_').next().unwrap_or("").to_owned();
            let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            st.files += 1;
            st.bytes += bytes.len() as u64;
            let name = f.to_string_lossy().to_string();
            let Some(format) = clinical::detect(&bytes, Some(&name)) else {
                st.refused.push((name, "format not recognised".to_owned()));
                continue;
            };
            match clinical::parse(format, &bytes, Some(&name), &limits) {
                Ok(x) => {
                    st.records += x.records.len() as u64;
                    *st.records_by_format.entry(format.as_str()).or_default() +=
                        x.records.len() as u64;
                    for id in &x.identities {
                        if let Some(r) = linker.resolve(&inst, id) {
                            *st.by_basis.entry(r.basis.as_str()).or_default() += 1;
                        }
                    }
                }
                Err(r) => st.refused.push((name, r.to_string())),
            }
        }
    }
    Ok(st)
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut v: Vec<(std::path::PathBuf, bool)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        v.push((e.path(), e.file_type()?.is_dir()));
    }
    v.sort();
    for (p, d) in v {
        if d {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
