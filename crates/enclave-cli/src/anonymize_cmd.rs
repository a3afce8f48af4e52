//! `enclave anonymize`: drives the `anonymize` crate — reads the hierarchies and the table,
//! searches for the optimal transformation, writes the transformed table and the report.
//! Nothing is written unless the whole run succeeds (R-AN-1..4).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anonymize::recipe::{self, Plan, Recipe};
use anonymize::{job, report, table};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use envelope::SigningKey;

/// Quality metric choices on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MetricArg {
    /// ARX's Loss (default in ARX): generalization and suppression weighted equally.
    Loss,
    /// ARX's monotone non-uniform entropy.
    Entropy,
    /// ARX's non-monotone non-uniform entropy (suppressed records cost their entropy).
    EntropyNonmono,
    /// ARX's discernibility: Σ class size², rows × size for suppressed classes.
    Discernibility,
    /// ARX's average equivalence class size.
    Aecs,
}

/// Search modes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Proven optimal full-domain generalization over the whole lattice.
    Optimal,
    /// Local recoding by multidimensional partitioning (Mondrian): classes may use
    /// different levels; greedy, not proven optimal; no suppression unless the whole table
    /// fails.
    Mondrian,
    /// Heuristic search for lattices too large to search exhaustively (many
    /// quasi-identifiers): climb, then steepest descent; anonymous, not proven optimal.
    Heuristic,
}

/// l-diversity variants.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LVariant {
    /// At least l distinct sensitive values per class.
    Distinct,
    /// Entropy of the sensitive values per class at least log(l).
    Entropy,
}

/// Arguments of `enclave anonymize`.
#[derive(Args, Debug)]
pub struct AnonymizeArgs {
    /// Input table: CSV with a header row, or Parquet if the name ends in .parquet (or
    /// .pq). Parquet values are read as their text (numbers in full, dates as YYYY-MM-DD).
    #[arg(long)]
    input: PathBuf,
    /// Field delimiter of the input and output (hierarchy files are always `;`).
    #[arg(long, default_value = ";")]
    delimiter: char,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    extras: Extras,
    /// Output table: CSV, or Parquet if the name ends in .parquet (or .pq); written only if
    /// the run succeeds. Parquet output keeps the types of a Parquet input's passed-through
    /// columns; generalized quasi-identifiers are text.
    #[arg(long)]
    output: PathBuf,
    /// Report (JSON); an HTML page with plots is written beside it (same name, .html).
    #[arg(long)]
    report: PathBuf,
}

/// The privacy model and search, shared by `enclave anonymize` and `enclave
/// anonymize-persons`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A quasi-identifier and its hierarchy file (ARX format): COLUMN=HIERARCHY.csv. Repeat.
    #[arg(long = "qi", value_name = "COLUMN=HIERARCHY.csv", required = true)]
    qi: Vec<String>,
    /// Sensitive attribute for l-diversity and t-closeness; repeat for several (l and t
    /// then hold on each). COLUMN=HIERARCHY.csv gives t-closeness on it the hierarchical
    /// ground distance over that hierarchy (ARX format) instead of the equal distance.
    #[arg(long, value_name = "COLUMN[=HIERARCHY.csv]")]
    sensitive: Vec<String>,
    /// Columns to leave out of the output (direct identifiers, linking codes): repeat or
    /// separate with commas.
    #[arg(long, value_delimiter = ',')]
    drop: Vec<String>,
    /// Minimum equivalence class size (required, except for the pseudonymized profile of
    /// `anonymize-persons`, which applies no privacy model).
    #[arg(long)]
    k: Option<u64>,
    /// l for l-diversity of the sensitive attribute.
    #[arg(long)]
    l: Option<f64>,
    /// l-diversity variant.
    #[arg(long, value_enum, default_value_t = LVariant::Distinct)]
    l_variant: LVariant,
    /// t for t-closeness of each sensitive attribute (equal ground distance, or
    /// hierarchical for a --sensitive given with a hierarchy).
    #[arg(long)]
    t: Option<f64>,
    /// Largest fraction of records that may be suppressed, 0 to 1 (required with --k).
    #[arg(long)]
    suppression_limit: Option<f64>,
    /// Quality metric to minimise.
    #[arg(long, value_enum, default_value_t = MetricArg::Loss)]
    metric: MetricArg,
    /// Search mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Optimal)]
    mode: ModeArg,
    /// Most transformations the heuristic mode evaluates.
    #[arg(long, default_value_t = 5000)]
    budget: u64,
    /// Records with a prosecutor risk above this count as "at risk" in the report.
    #[arg(long, default_value_t = 0.2)]
    risk_threshold: f64,
}

impl ModelArgs {
    /// The settings these arguments say, checked.
    pub fn settings(&self) -> Result<job::Settings> {
        self.settings_or(None)
    }

    /// [`Self::settings`], with `k` and the suppression limit taken from `unset` when they
    /// are not given.
    pub fn settings_or(&self, unset: Option<(u64, f64)>) -> Result<job::Settings> {
        let a = self;
        let (k, suppression_limit) = match (a.k, a.suppression_limit, unset) {
            (Some(k), Some(limit), _) => (k, limit),
            (None, None, Some(defaults)) => defaults,
            (None, _, _) => bail!("--k is required (the minimum class size)"),
            (Some(_), None, _) => {
                bail!("--suppression-limit is required (0 to 1; 0 suppresses nothing)")
            }
        };
        if (a.l.is_some() || a.t.is_some()) && a.sensitive.is_empty() {
            bail!("--l and --t need a sensitive attribute: add --sensitive COLUMN");
        }
        if !a.sensitive.is_empty() && a.l.is_none() && a.t.is_none() {
            bail!(
                "--sensitive {} is given but neither --l nor --t",
                a.sensitive[0]
            );
        }
        let mut sensitive = Vec::with_capacity(a.sensitive.len());
        let mut sensitive_hierarchies = std::collections::BTreeMap::new();
        for spec in &a.sensitive {
            match spec.split_once('=') {
                Some((column, file)) => {
                    if a.t.is_none() {
                        bail!(
                            "--sensitive {spec}: a hierarchy is for t-closeness with \
                             hierarchical distance; add --t"
                        );
                    }
                    sensitive.push(column.to_owned());
                    sensitive_hierarchies.insert(column.to_owned(), file.to_owned());
                }
                None => sensitive.push(spec.clone()),
            }
        }
        let mut quasi_identifiers = Vec::with_capacity(a.qi.len());
        for spec in &a.qi {
            let Some((column, file)) = spec.split_once('=') else {
                bail!("--qi {spec:?}: expected COLUMN=HIERARCHY.csv");
            };
            quasi_identifiers.push(job::Qi {
                column: column.to_owned(),
                hierarchy: file.to_owned(),
            });
        }
        let settings = job::Settings {
            quasi_identifiers,
            sensitive,
            sensitive_hierarchies,
            drop: a.drop.clone(),
            k,
            l: a.l,
            l_variant: match a.l_variant {
                LVariant::Distinct => job::LVariant::Distinct,
                LVariant::Entropy => job::LVariant::Entropy,
            },
            t: a.t,
            suppression_limit,
            metric: match a.metric {
                MetricArg::Loss => "loss",
                MetricArg::Entropy => "entropy",
                MetricArg::EntropyNonmono => "entropy-nonmono",
                MetricArg::Discernibility => "discernibility",
                MetricArg::Aecs => "aecs",
            }
            .into(),
            mode: match a.mode {
                ModeArg::Optimal => job::Mode::Optimal,
                ModeArg::Mondrian => job::Mode::Mondrian,
                ModeArg::Heuristic => job::Mode::Heuristic,
            },
            budget: a.budget,
            risk_threshold: a.risk_threshold,
            levels: None,
        };
        settings.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(settings)
    }
}

/// Reads a hierarchy file named on the command line.
pub fn read_file(file: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("reading {file}: {e}"))
}

/// Writes the JSON report and its HTML page; on failure removes `outputs` and the report.
pub fn write_reports(
    report_path: &std::path::Path,
    report: &serde_json::Value,
    outputs: &[&std::path::Path],
) -> Result<PathBuf> {
    let html_path = report_path.with_extension("html");
    let written = table::write_atomically(
        report_path,
        &serde_json::to_vec_pretty(report).unwrap_or_default(),
    )
    .and_then(|()| table::write_atomically(&html_path, report::html(report).as_bytes()));
    if let Err(e) = written {
        for o in outputs {
            let _ = std::fs::remove_file(o);
        }
        let _ = std::fs::remove_file(report_path);
        return Err(e).context("writing the report");
    }
    Ok(html_path)
}

pub fn delimiter_byte(c: char) -> Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .with_context(|| format!("--delimiter {c:?} must be a single ASCII character"))
}

/// Runs `enclave anonymize`.
pub fn run(a: AnonymizeArgs) -> Result<()> {
    let settings = a.model.settings()?;
    let signer = a.extras.signer()?;
    let mut files = BTreeMap::new();
    let parsed = job::hierarchies(&settings, recording(&mut files))?;
    run_rows(
        &settings,
        &parsed,
        &RowPaths {
            input: &a.input,
            output: &a.output,
            delimiter: delimiter_byte(a.delimiter)?,
            report: &a.report,
            recipe_out: a.extras.recipe_out.as_deref(),
            sign_recipe: signer.as_ref(),
            mapping_out: a.extras.mapping_out.as_deref(),
        },
        RecipeSource::Files(files),
    )
}

/// Options for keeping what a run did, shared by the anonymizing commands.
#[derive(Args, Debug)]
pub struct Extras {
    /// Also write the recipe of this run (R-AN-3): the settings with the chosen levels and
    /// every hierarchy, as one JSON document identified by its SHA-256, for `enclave
    /// apply-recipe` on the next delivery. Not for Mondrian.
    #[arg(long)]
    pub recipe_out: Option<PathBuf>,
    /// Sign the recipe with this Ed25519 signing key (`enclave keygen --kind signing`): the
    /// signature goes to RECIPE.sig, and `enclave apply-recipe --trust` checks it.
    #[arg(long, value_name = "KEY", requires = "recipe_out")]
    pub sign_recipe: Option<PathBuf>,
    /// Also write the applied value mapping (column;original;released) for the operators'
    /// records. It reveals what each released value stands for: never release it.
    #[arg(long)]
    pub mapping_out: Option<PathBuf>,
}

impl Extras {
    /// The recipe signing key, loaded before the run so that a wrong key costs no run.
    pub fn signer(&self) -> Result<Option<SigningKey>> {
        self.sign_recipe
            .as_deref()
            .map(|p| {
                keystore::load_signing_key(p)
                    .with_context(|| format!("--sign-recipe {}", p.display()))
            })
            .transpose()
    }
}

/// A hierarchy reader that also keeps each file's text (for a recipe).
pub fn recording(
    files: &mut BTreeMap<String, String>,
) -> impl FnMut(&str) -> std::result::Result<Vec<u8>, String> + '_ {
    move |name| {
        let bytes = read_file(name)?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| format!("{name}: {e}"))?;
        files.insert(name.to_owned(), text);
        Ok(bytes)
    }
}

/// Where the hierarchies of a run came from: files read now (a recipe can be made), or an
/// applied recipe (whose id the report carries).
pub enum RecipeSource<'a> {
    /// Files read from disk, by name.
    Files(BTreeMap<String, String>),
    /// A recipe being applied, and what its signature check found (for the report).
    Applied(&'a Recipe, serde_json::Value),
}

impl RecipeSource<'_> {
    /// The recipe of a finished run with `levels`, written to `path`; its id.
    pub fn write_recipe(
        &self,
        plan: Plan,
        levels: &[usize],
        derived_from: serde_json::Value,
        path: &std::path::Path,
    ) -> Result<String> {
        let files = match self {
            RecipeSource::Files(f) => f.clone(),
            RecipeSource::Applied(r, _) => r.files.clone(),
        };
        let recipe = Recipe::new(plan, levels.to_vec(), files, derived_from)?;
        if path.exists() {
            bail!("{} exists; not overwriting a recipe", path.display());
        }
        table::write_atomically(path, &recipe.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(recipe.id())
    }

    /// Adds `recipe: {id, applied}` to a report when a recipe is applied.
    pub fn annotate(&self, report: &mut serde_json::Value) {
        if let (RecipeSource::Applied(r, signature), Some(obj)) = (self, report.as_object_mut()) {
            obj.insert(
                "recipe".into(),
                serde_json::json!({"id": r.id(), "applied": true, "derived_from": r.derived_from,
                                   "signature": signature}),
            );
        }
    }
}

/// Refuses `--recipe-out` with Mondrian before the run rather than after it.
pub fn recipe_possible(recipe_out: Option<&std::path::Path>, mode: job::Mode) -> Result<()> {
    if recipe_out.is_some() && mode == job::Mode::Mondrian {
        bail!(
            "--recipe-out: a Mondrian result cannot be replayed (its cuts are medians of this \
             data); use --mode optimal or heuristic"
        );
    }
    Ok(())
}

/// What a finished run writes beside its outputs.
pub struct Extra<'a> {
    /// Recipe to write.
    pub recipe_out: Option<&'a std::path::Path>,
    /// Key to sign it with.
    pub sign_recipe: Option<&'a SigningKey>,
    /// Value mapping to write.
    pub mapping_out: Option<&'a std::path::Path>,
    /// Report (JSON; the HTML page goes beside it).
    pub report: &'a std::path::Path,
}

/// Writes the recipe (`plan` at `levels`) and the value mapping asked for, then the
/// report; if any of it fails, removes `outputs` and whatever of these was written. Returns
/// the HTML page's path.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    source: &RecipeSource<'_>,
    report: &mut serde_json::Value,
    extra: &Extra<'_>,
    plan: impl FnOnce() -> Plan,
    levels: &[usize],
    derived_from: serde_json::Value,
    mapping: impl FnOnce() -> String,
    outputs: &[&std::path::Path],
) -> Result<PathBuf> {
    let mut written: Vec<PathBuf> = outputs.iter().map(|p| p.to_path_buf()).collect();
    let result = (|| -> Result<()> {
        if let Some(path) = extra.recipe_out {
            let id = source.write_recipe(plan(), levels, derived_from, path)?;
            written.push(path.to_path_buf());
            report["recipe_written"] =
                serde_json::json!({"id": id, "file": path.display().to_string()});
            println!("recipe {id} written to {}", path.display());
            if let Some(key) = extra.sign_recipe {
                let sig_path = crate::recipe_cmd::signature_path(path);
                let sig = crate::recipe_cmd::sign(key, &id, &sig_path)?;
                written.push(sig_path.clone());
                report["recipe_written"]["signature"] = serde_json::json!({
                    "file": sig_path.display().to_string(), "signer": sig.signer,
                    "key_id": sig.key_id});
                println!(
                    "signed by {} (key {}): {}",
                    sig.signer,
                    sig.key_id,
                    sig_path.display()
                );
            }
        }
        if let Some(path) = extra.mapping_out {
            table::write_atomically(path, mapping().as_bytes())?;
            written.push(path.to_path_buf());
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    let written: Vec<&std::path::Path> = written.iter().map(PathBuf::as_path).collect();
    write_reports(extra.report, report, &written)
}

/// Files of a row-level run.
pub struct RowPaths<'a> {
    /// Input table.
    pub input: &'a std::path::Path,
    /// Output table.
    pub output: &'a std::path::Path,
    /// Delimiter.
    pub delimiter: u8,
    /// Report.
    pub report: &'a std::path::Path,
    /// Recipe to write.
    pub recipe_out: Option<&'a std::path::Path>,
    /// Key to sign the recipe with.
    pub sign_recipe: Option<&'a SigningKey>,
    /// Mapping to write.
    pub mapping_out: Option<&'a std::path::Path>,
}

/// A row-level run (`enclave anonymize`, or `enclave apply-recipe` of a rows recipe).
pub fn run_rows(
    settings: &job::Settings,
    parsed: &job::Parsed,
    paths: &RowPaths<'_>,
    source: RecipeSource<'_>,
) -> Result<()> {
    let started = Instant::now();
    if paths.output == paths.input {
        bail!("--output must not be the input file");
    }
    recipe_possible(paths.recipe_out, settings.mode)?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = Terminal::new(tty);
    let files = job::Files {
        input: paths.input,
        output: paths.output,
        delimiter: paths.delimiter,
        suppressed_column: None,
    };
    let outcome = job::run(settings, parsed, &files, &mut progress);
    if tty {
        eprint!("\r{:80}\r", "");
    }
    let outcome = outcome?;
    let mut report = outcome.report;
    source.annotate(&mut report);
    let best = &outcome.best;
    let html_path = finish(
        &source,
        &mut report,
        &Extra {
            recipe_out: paths.recipe_out,
            sign_recipe: paths.sign_recipe,
            mapping_out: paths.mapping_out,
            report: paths.report,
        },
        || Plan::Rows {
            settings: Box::new(settings.clone()),
        },
        &best.levels,
        serde_json::json!({"input": paths.input.display().to_string(), "rows": outcome.rows}),
        || recipe::mapping_csv(&parsed.quasi, &best.levels, &[]),
        &[paths.output],
    )?;
    let levels: Vec<String> = outcome
        .columns
        .iter()
        .zip(&best.levels)
        .map(|(c, l)| format!("{c}={l}"))
        .collect();
    let total = started.elapsed().as_secs_f64();
    println!(
        "levels {}; {} {:.6}; {} classes (smallest {}); {} of {} records suppressed; \
         {}; {:.2} s (read {:.2} s, search and write {:.2} s)",
        levels.join(" "),
        outcome.metric.name(),
        best.score,
        best.classes,
        best.min_class,
        best.suppressed,
        outcome.rows,
        outcome.summary,
        total,
        outcome.load_secs,
        total - outcome.load_secs,
    );
    if !outcome.ties.is_empty() {
        println!(
            "{} other transformations have the same score (listed in the report)",
            outcome.ties.len()
        );
    }
    println!(
        "wrote {} ({} rows) and {} (+ {})",
        paths.output.display(),
        outcome.written_rows,
        paths.report.display(),
        html_path.display()
    );
    Ok(())
}

/// Progress on a terminal, at most every 200 ms: rows read (with the rate), then a bar of
/// the lattice covered (transformations evaluated or ruled out by pruning).
pub struct Terminal {
    tty: bool,
    last: Instant,
    started: Instant,
}

impl Terminal {
    /// Progress on stderr if it is a terminal (`tty`), else silent.
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            last: Instant::now(),
            started: Instant::now(),
        }
    }
}

/// `[#####-----]` of `width` cells for `done` of `total`.
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

impl job::Progress for Terminal {
    fn rows(&mut self, rows: u64) {
        if self.tty {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\rreading: {rows} rows, {:.1} s, {:.0} rows/s   ",
                secs,
                rows as f64 / secs
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn search(&mut self, done: u64, total: u64) {
        if self.tty && self.last.elapsed() > Duration::from_millis(200) {
            self.last = Instant::now();
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            eprint!(
                "\rsearch {} {pct:5.1}% {done} of {total} transformations   ",
                bar(done, total, 30)
            );
            let _ = std::io::stderr().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(super::bar(0, 10, 10), "[----------]");
        assert_eq!(super::bar(5, 10, 10), "[#####-----]");
        assert_eq!(super::bar(12, 10, 10), "[##########]");
        assert_eq!(super::bar(0, 0, 4), "[####]");
    }
}
