//! One anonymization run from settings to files: load the table, search (optimal, heuristic
//! or Mondrian), write the transformed table and the report, check that what was written is
//! what the search counted. `enclave anonymize` and the vault's release build both drive this;
//! nothing is left behind unless the whole run succeeds (R-AN-1..4).
//!
//! The settings are what an approved method's `method.json` holds (R-AN-3), so a method
//! file and the command line mean the same thing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::mondrian::mondrian;
use crate::report::{self, ReportInput};
use crate::table::{self, SensitiveColumn, TableError};
use crate::{optimal, AnonError, Diversity, Evaluator, Hierarchy, Metric, NodeResult, Privacy};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The settings contradict themselves or the data.
    #[error("{0}")]
    Settings(String),
    /// A hierarchy or the data does not fit the privacy model.
    #[error(transparent)]
    Anon(#[from] AnonError),
    /// Reading or writing a table.
    #[error("{what}: {}", chain(.cause.as_ref()))]
    Table {
        /// Which step.
        what: String,
        /// Cause (with its own causes in the message: callers often print one line).
        cause: Box<TableError>,
    },
    /// No transformation satisfies the privacy model.
    #[error("{0}")]
    NoSolution(String),
    /// A consistency check on the output failed.
    #[error("internal check failed: {0}")]
    Internal(String),
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// l-diversity variants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LVariant {
    /// At least l distinct sensitive values per class.
    #[default]
    Distinct,
    /// Entropy of the sensitive values per class at least log(l).
    Entropy,
}

/// Search modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Proven optimal full-domain generalization over the whole lattice.
    #[default]
    Optimal,
    /// Local recoding by multidimensional partitioning; greedy.
    Mondrian,
    /// Climb then steepest descent, for lattices too large to search whole.
    Heuristic,
}

impl Mode {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Optimal => "optimal",
            Mode::Mondrian => "mondrian",
            Mode::Heuristic => "heuristic",
        }
    }
}

/// A quasi-identifier and the file of its hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qi {
    /// Column.
    pub column: String,
    /// Hierarchy file name (ARX format, `;`-separated).
    pub hierarchy: String,
}

/// `"sensitive"` in a method file: one column name (as methods approved before several
/// were supported say), a list, or null.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

fn default_metric() -> String {
    "loss".into()
}
fn default_budget() -> u64 {
    5000
}
fn default_risk() -> f64 {
    0.2
}

/// The settings of a run: the contents of a method's `method.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Quasi-identifiers in lattice order.
    pub quasi_identifiers: Vec<Qi>,
    /// Sensitive attributes; l-diversity and t-closeness hold on each.
    #[serde(default, deserialize_with = "one_or_many")]
    pub sensitive: Vec<String>,
    /// Hierarchy files of sensitive attributes whose t-closeness uses the hierarchical
    /// ground distance (column → file); the others use the equal distance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive_hierarchies: BTreeMap<String, String>,
    /// Columns left out of the output.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Minimum class size.
    pub k: u64,
    /// l of l-diversity.
    #[serde(default)]
    pub l: Option<f64>,
    /// Its variant.
    #[serde(default)]
    pub l_variant: LVariant,
    /// t of t-closeness (equal ground distance).
    #[serde(default)]
    pub t: Option<f64>,
    /// Largest fraction of records that may be suppressed.
    pub suppression_limit: f64,
    /// `loss`, `entropy`, `entropy-nonmono`, `discernibility` or `aecs`.
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Search mode.
    #[serde(default)]
    pub mode: Mode,
    /// Most transformations the heuristic evaluates.
    #[serde(default = "default_budget")]
    pub budget: u64,
    /// Prosecutor risk above which a record counts as at risk in the report.
    #[serde(default = "default_risk")]
    pub risk_threshold: f64,
    /// Levels fixed in advance, one per quasi-identifier (a recipe replayed on a new
    /// delivery, R-AN-3): no search; the run fails if the model does not hold at them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<usize>>,
}

impl Settings {
    /// The metric named by `metric`.
    pub fn metric(&self) -> Result<Metric, JobError> {
        Ok(match self.metric.as_str() {
            "loss" => Metric::Loss,
            "entropy" => Metric::EntropyMono,
            "entropy-nonmono" => Metric::EntropyNonMono,
            "discernibility" => Metric::Discernibility,
            "aecs" => Metric::Aecs,
            other => {
                return Err(JobError::Settings(format!(
                    "metric {other:?}: expected loss, entropy, entropy-nonmono, \
                     discernibility or aecs"
                )))
            }
        })
    }

    /// Checks what can be checked before reading any data.
    pub fn check(&self) -> Result<(), JobError> {
        self.metric()?;
        if (self.l.is_some() || self.t.is_some()) && self.sensitive.is_empty() {
            return Err(JobError::Settings(
                "l and t need a sensitive attribute: name it".into(),
            ));
        }
        if let (Some(s), None, None) = (self.sensitive.first(), self.l, self.t) {
            return Err(JobError::Settings(format!(
                "the sensitive attribute {s} is given but neither l nor t"
            )));
        }
        for column in self.sensitive_hierarchies.keys() {
            if !self.sensitive.contains(column) {
                return Err(JobError::Settings(format!(
                    "a hierarchy is given for {column}, which is not a sensitive attribute"
                )));
            }
            if self.t.is_none() {
                return Err(JobError::Settings(format!(
                    "the hierarchy of sensitive attribute {column} is for t-closeness with \
                     hierarchical distance, but no t is given"
                )));
            }
        }
        for s in &self.sensitive {
            if self.quasi_identifiers.iter().any(|q| q.column == *s) {
                return Err(JobError::Settings(format!(
                    "{s} cannot be both a quasi-identifier and a sensitive attribute"
                )));
            }
            if self.drop.contains(s) {
                return Err(JobError::Settings(format!(
                    "drop {s}: the column is a sensitive attribute"
                )));
            }
        }
        if let Some(levels) = &self.levels {
            if self.mode == Mode::Mondrian {
                return Err(JobError::Settings(
                    "fixed levels are for full-domain generalization; Mondrian's cuts depend on \
                     the data"
                        .into(),
                ));
            }
            if levels.len() != self.quasi_identifiers.len() {
                return Err(JobError::Settings(format!(
                    "{} fixed levels for {} quasi-identifiers",
                    levels.len(),
                    self.quasi_identifiers.len()
                )));
            }
        }
        for d in &self.drop {
            if self.quasi_identifiers.iter().any(|q| q.column == *d) {
                return Err(JobError::Settings(format!(
                    "drop {d}: the column is also a quasi-identifier"
                )));
            }
        }
        for (i, q) in self.quasi_identifiers.iter().enumerate() {
            if self.quasi_identifiers[..i]
                .iter()
                .any(|p| p.column == q.column)
            {
                return Err(JobError::Settings(format!(
                    "quasi-identifier {}: the column is given twice",
                    q.column
                )));
            }
        }
        Ok(())
    }
}

/// The parsed hierarchies of a run.
pub struct Parsed {
    /// Quasi-identifiers' hierarchies, in lattice order.
    pub quasi: Vec<Hierarchy>,
    /// Sensitive attributes, with their hierarchies where the hierarchical distance is used.
    pub sensitive: Vec<SensitiveColumn>,
    /// SHA-256 of every hierarchy file by column (for the report and the method version).
    pub sha256: serde_json::Map<String, Value>,
}

/// Parses the hierarchy of every quasi-identifier and of every sensitive attribute that has
/// one; `read(file)` gives a file's bytes.
pub fn hierarchies(
    settings: &Settings,
    mut read: impl FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Parsed, JobError> {
    let mut sha256 = serde_json::Map::new();
    let mut parse = |column: &str, file: &str, what: &str| -> Result<Hierarchy, JobError> {
        let bytes = read(file).map_err(|e| JobError::Settings(format!("{what} {column}: {e}")))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            JobError::Settings(format!("{what} {column}: {file} is not UTF-8 ({e})"))
        })?;
        // ARX hierarchy files are `;`-separated whatever the data delimiter is.
        let h = Hierarchy::parse_arx(column, text, ';')?;
        sha256.insert(
            column.to_owned(),
            json!(hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                &bytes
            ))),
        );
        Ok(h)
    };
    let mut quasi = Vec::with_capacity(settings.quasi_identifiers.len());
    for q in &settings.quasi_identifiers {
        quasi.push(parse(&q.column, &q.hierarchy, "quasi-identifier")?);
    }
    let mut sensitive = Vec::with_capacity(settings.sensitive.len());
    for s in &settings.sensitive {
        let hierarchy = match settings.sensitive_hierarchies.get(s) {
            Some(file) => Some(parse(s, file, "sensitive attribute")?),
            None => None,
        };
        sensitive.push(SensitiveColumn {
            column: s.clone(),
            hierarchy,
        });
    }
    Ok(Parsed {
        quasi,
        sensitive,
        sha256,
    })
}

/// Files of one run.
pub struct Files<'a> {
    /// Input table (CSV with a header row, or Parquet by extension).
    pub input: &'a Path,
    /// Transformed table (CSV, or Parquet by extension), written only if the run succeeds.
    pub output: &'a Path,
    /// Field delimiter of input and output.
    pub delimiter: u8,
    /// If given, the output gets a last column of this name, `1` on suppressed rows (for
    /// person-level runs, which must drop a suppressed person's events; never released).
    pub suppressed_column: Option<&'a str>,
}

/// Progress of a run.
pub trait Progress {
    /// Rows read so far.
    fn rows(&mut self, _rows: u64) {}
    /// Transformations evaluated of the lattice's total.
    fn search(&mut self, _done: u64, _total: u64) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

/// What a run produced.
pub struct Outcome {
    /// The chosen transformation.
    pub best: NodeResult,
    /// The metric used.
    pub metric: Metric,
    /// Rows in the input.
    pub rows: u64,
    /// Rows written.
    pub written_rows: u64,
    /// One line about the search.
    pub summary: String,
    /// Transformations with the same score.
    pub ties: Vec<Vec<usize>>,
    /// Quasi-identifier columns, in lattice order.
    pub columns: Vec<String>,
    /// The report (JSON).
    pub report: Value,
    /// Seconds spent reading.
    pub load_secs: f64,
}

/// Runs `settings` over `files` with the `parsed` hierarchies (from [`hierarchies`]).
pub fn run(
    settings: &Settings,
    parsed: &Parsed,
    files: &Files<'_>,
    progress: &mut dyn Progress,
) -> Result<Outcome, JobError> {
    let started = std::time::Instant::now();
    settings.check()?;
    let metric = settings.metric()?;
    if files.output == files.input {
        return Err(JobError::Settings(
            "the output must not be the input file".into(),
        ));
    }
    let hierarchies = &parsed.quasi[..];
    let loaded = table::load_with(
        files.input,
        files.delimiter,
        hierarchies,
        &parsed.sensitive,
        |r| progress.rows(r),
    )
    .map_err(|cause| JobError::Table {
        what: format!("reading {}", files.input.display()),
        cause: Box::new(cause),
    })?;
    let rows = loaded.dataset.rows();
    let load_secs = started.elapsed().as_secs_f64();
    let mut privacy = Privacy::k_anonymity(settings.k, settings.suppression_limit, rows)?;
    if let Some(l) = settings.l {
        let d = match settings.l_variant {
            LVariant::Distinct => {
                if l.fract() != 0.0 || l < 1.0 {
                    return Err(JobError::Settings(format!(
                        "l {l}: distinct l-diversity needs a whole number ≥ 1"
                    )));
                }
                Diversity::Distinct(l as u64)
            }
            LVariant::Entropy => Diversity::Entropy(l),
        };
        privacy = privacy.with_diversity(d)?;
    }
    if let Some(t) = settings.t {
        privacy = privacy.with_closeness(t)?;
    }
    let ev = Evaluator::new(hierarchies, &loaded.dataset)?;
    let drop: Vec<&str> = settings.drop.iter().map(String::as_str).collect();
    let write_err = |cause| JobError::Table {
        what: format!("writing {}", files.output.display()),
        cause: Box::new(cause),
    };
    let (best, released, search, ties, summary, written) = match settings.mode {
        Mode::Mondrian => {
            let res = mondrian(&ev, hierarchies, &loaded.dataset, &privacy, metric)?;
            let mut partition_of: HashMap<Vec<u32>, usize> = HashMap::new();
            for (i, p) in res.partitions.iter().enumerate() {
                for &t in &p.tuples {
                    partition_of.insert(loaded.dataset.tuple(t as usize), i);
                }
            }
            let all_suppressed = res.suppressed > 0;
            let written = table::write_flagged(
                files.input,
                files.output,
                files.delimiter,
                hierarchies,
                &drop,
                files.suppressed_column,
                |leaves| {
                    if all_suppressed {
                        None
                    } else {
                        partition_of
                            .get(leaves)
                            .map(|&i| res.partitions[i].levels.clone())
                    }
                },
            )
            .map_err(write_err)?;
            let max_levels: Vec<usize> = res
                .level_histogram
                .iter()
                .map(|h| h.iter().rposition(|&n| n > 0).unwrap_or(0))
                .collect();
            let released: Vec<u64> = res.partitions.iter().map(|p| p.count).collect();
            let best = NodeResult {
                levels: max_levels,
                anonymous: res.suppressed <= privacy.max_suppressed,
                suppressed: res.suppressed,
                classes: res.classes,
                min_class: res.min_class,
                min_distinct: None,
                min_entropy_l: None,
                max_distance: None,
                per_attribute: res.per_attribute.clone(),
                score: res.score,
            };
            let search = json!({
                "partitions": res.classes,
                "records_per_level": res.level_histogram,
                "note": "greedy multidimensional partitioning (Mondrian): not proven optimal; \
                         `levels` gives the highest level used per attribute",
            });
            let summary = format!("{} partitions (Mondrian, not proven optimal)", res.classes);
            (best, released, search, Vec::new(), summary, written)
        }
        Mode::Optimal | Mode::Heuristic => {
            let res = if let Some(levels) = &settings.levels {
                fixed(&ev, metric, &privacy, settings, levels, rows)?
            } else if settings.mode == Mode::Heuristic {
                crate::heuristic::heuristic(&ev, metric, &privacy, settings.budget)
            } else {
                optimal(&ev, metric, &privacy, |done, total| {
                    progress.search(done, total)
                })?
            };
            let Some(best) = res.best else {
                return Err(JobError::NoSolution(format!(
                    "no transformation satisfies k = {} with at most {} of {} records \
                     suppressed; raise the suppression limit, lower k, or use higher \
                     hierarchies",
                    settings.k, privacy.max_suppressed, rows
                )));
            };
            let release = ev.release(&privacy, &best.levels);
            let written = table::write_flagged(
                files.input,
                files.output,
                files.delimiter,
                hierarchies,
                &drop,
                files.suppressed_column,
                |leaves| {
                    (!release
                        .suppressed_keys
                        .contains(&ev.qi_key(leaves, &best.levels)))
                    .then(|| best.levels.clone())
                },
            )
            .map_err(write_err)?;
            let summary = if settings.levels.is_some() {
                "levels fixed by the recipe, no search".to_owned()
            } else {
                format!(
                    "{} of {} transformations evaluated{}",
                    res.stats.evaluated,
                    res.stats.lattice_nodes,
                    if settings.mode == Mode::Heuristic {
                        " (heuristic, not proven optimal)"
                    } else {
                        ""
                    }
                )
            };
            let search = serde_json::to_value(&res.stats).unwrap_or_default();
            (
                best,
                release.released_sizes,
                search,
                res.ties,
                summary,
                written,
            )
        }
    };
    if written.suppressed != best.suppressed {
        let _ = std::fs::remove_file(files.output);
        return Err(JobError::Internal(format!(
            "the output has {} suppressed records, the search counted {}",
            written.suppressed, best.suppressed
        )));
    }
    let columns: Vec<String> = hierarchies.iter().map(|h| h.column().to_owned()).collect();
    let config = json!({
        "input": files.input.display().to_string(),
        "delimiter": char::from(files.delimiter).to_string(),
        "quasi_identifiers": columns,
        "hierarchy_sha256": parsed.sha256,
        "drop": settings.drop,
        "k": settings.k,
        "sensitive": settings.sensitive,
        "l": settings.l,
        "l_variant": settings.l.map(|_| format!("{:?}", settings.l_variant).to_lowercase()),
        "t": settings.t,
        "t_distance": settings.t.map(|_| {
            parsed
                .sensitive
                .iter()
                .map(|s| {
                    let kind = if s.hierarchy.is_some() { "hierarchical" } else { "equal" };
                    (s.column.clone(), json!(kind))
                })
                .collect::<serde_json::Map<_, _>>()
        }),
        "suppression_limit": settings.suppression_limit,
        "metric": metric.name(),
        "mode": settings.mode.name(),
        "fixed_levels": settings.levels,
    });
    let report = report::build(&ReportInput {
        config,
        columns: &columns,
        best: &best,
        released: &released,
        metric,
        k: settings.k,
        rows,
        distinct: loaded.dataset.len() as u64,
        search,
        mode: settings.mode.name(),
        ties: &ties,
        seconds: started.elapsed().as_secs_f64(),
        risk_threshold: settings.risk_threshold,
    });
    let mut report = report;
    report["attributes"] = report::attributes(hierarchies, &best.levels, &best.per_attribute);
    Ok(Outcome {
        best,
        metric,
        rows,
        written_rows: written.rows,
        summary,
        ties,
        columns,
        report,
        load_secs,
    })
}

/// The one transformation a recipe fixes, evaluated; refused with the reason if the model
/// no longer holds there on this data (a recipe never weakens silently).
fn fixed(
    ev: &Evaluator<'_>,
    metric: Metric,
    privacy: &Privacy,
    settings: &Settings,
    levels: &[usize],
    rows: u64,
) -> Result<crate::SearchResult, JobError> {
    for ((q, &l), h) in settings
        .quasi_identifiers
        .iter()
        .zip(levels)
        .zip(ev.heights())
    {
        if l >= h {
            return Err(JobError::Settings(format!(
                "fixed level {l} of {} is above its hierarchy's top level {}",
                q.column,
                h - 1
            )));
        }
    }
    let node = ev.evaluate(metric, privacy, levels);
    if !node.anonymous {
        let mut why = format!(
            "{} of {rows} records are in classes that fail the model (k = {}",
            node.suppressed, settings.k
        );
        if let Some(l) = settings.l {
            why.push_str(&format!(", l = {l}"));
        }
        if let Some(t) = settings.t {
            why.push_str(&format!(", t = {t}"));
        }
        why.push_str(&format!(
            "); at most {} may be suppressed ({} %)",
            privacy.max_suppressed,
            settings.suppression_limit * 100.0
        ));
        let named: Vec<String> = settings
            .quasi_identifiers
            .iter()
            .zip(levels)
            .map(|(q, l)| format!("{}={l}", q.column))
            .collect();
        let levels = named.join(" ");
        return Err(JobError::NoSolution(format!(
            "this delivery does not meet the model at the recipe's levels {levels}: {why}. \
             The recipe is not weakened to fit: derive a new one (a new method version) or \
             hold the delivery back"
        )));
    }
    Ok(crate::SearchResult {
        best: Some(node),
        ties: Vec::new(),
        stats: crate::SearchStats {
            lattice_nodes: ev.heights().iter().map(|&h| h as u64).product(),
            evaluated: 1,
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::Settings;

    fn with(sensitive: &str) -> Settings {
        let text =
            format!(r#"{{"quasi_identifiers": [], "k": 2, "suppression_limit": 0{sensitive}}}"#);
        serde_json::from_str(&text).expect("settings")
    }

    /// Methods approved before several sensitive attributes were supported name one as a
    /// string; they must keep meaning the same thing.
    #[test]
    fn a_method_names_one_sensitive_attribute_or_several() {
        assert_eq!(with(r#", "sensitive": "d""#).sensitive, ["d"]);
        assert_eq!(with(r#", "sensitive": ["a", "b"]"#).sensitive, ["a", "b"]);
        assert!(with(r#", "sensitive": null"#).sensitive.is_empty());
        assert!(with("").sensitive.is_empty());
        assert!(with("").sensitive_hierarchies.is_empty());
    }
}
