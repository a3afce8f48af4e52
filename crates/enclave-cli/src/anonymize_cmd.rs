//! `enclave anonymize`: drives the `anonymize` crate — reads the hierarchies and the table,
//! searches for the optimal transformation, writes the transformed table and the report.
//! Nothing is written unless the whole run succeeds (R-AN-1..4).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anonymize::mondrian::mondrian;
use anonymize::report::{self, ReportInput};
use anonymize::{optimal, table, Diversity, Evaluator, Hierarchy, Metric, NodeResult, Privacy};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

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
    /// Input table (CSV with a header row).
    #[arg(long)]
    input: PathBuf,
    /// Field delimiter of the input and output (hierarchy files are always `;`).
    #[arg(long, default_value = ";")]
    delimiter: char,
    /// A quasi-identifier and its hierarchy file (ARX format): COLUMN=HIERARCHY.csv. Repeat.
    #[arg(long = "qi", value_name = "COLUMN=HIERARCHY.csv", required = true)]
    qi: Vec<String>,
    /// Sensitive attribute for l-diversity and t-closeness (one in this version).
    #[arg(long)]
    sensitive: Vec<String>,
    /// Columns to leave out of the output (direct identifiers, linking codes): repeat or
    /// separate with commas.
    #[arg(long, value_delimiter = ',')]
    drop: Vec<String>,
    /// Minimum equivalence class size.
    #[arg(long)]
    k: u64,
    /// l for l-diversity of the sensitive attribute.
    #[arg(long)]
    l: Option<f64>,
    /// l-diversity variant.
    #[arg(long, value_enum, default_value_t = LVariant::Distinct)]
    l_variant: LVariant,
    /// t for t-closeness of the sensitive attribute (equal ground distance).
    #[arg(long)]
    t: Option<f64>,
    /// Largest fraction of records that may be suppressed, 0 to 1.
    #[arg(long)]
    suppression_limit: f64,
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
    /// Output table (CSV); written only if the run succeeds.
    #[arg(long)]
    output: PathBuf,
    /// Report (JSON); an HTML page with plots is written beside it (same name, .html).
    #[arg(long)]
    report: PathBuf,
}

fn not_yet(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} is not available in this version; k-anonymity, l-diversity and t-closeness \
         (equal distance) on one sensitive attribute, with suppression, every --metric and \
         every --mode are (see docs/anonymization.md)"
    )
}

fn delimiter_byte(c: char) -> Result<u8> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .with_context(|| format!("--delimiter {c:?} must be a single ASCII character"))
}

fn extension_is(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// What either mode produced.
struct Outcome {
    best: NodeResult,
    released: Vec<u64>,
    search: serde_json::Value,
    ties: Vec<Vec<usize>>,
    summary: String,
}

/// Runs `enclave anonymize`.
pub fn run(a: AnonymizeArgs) -> Result<()> {
    let started = Instant::now();
    let metric = match a.metric {
        MetricArg::Loss => Metric::Loss,
        MetricArg::Entropy => Metric::EntropyMono,
        MetricArg::EntropyNonmono => Metric::EntropyNonMono,
        MetricArg::Discernibility => Metric::Discernibility,
        MetricArg::Aecs => Metric::Aecs,
    };
    if a.sensitive.len() > 1 {
        return Err(not_yet("more than one --sensitive attribute"));
    }
    let sensitive = a.sensitive.first().map(String::as_str);
    if (a.l.is_some() || a.t.is_some()) && sensitive.is_none() {
        bail!("--l and --t need the sensitive attribute: add --sensitive COLUMN");
    }
    if sensitive.is_some() && a.l.is_none() && a.t.is_none() {
        bail!(
            "--sensitive {} is given but neither --l nor --t",
            a.sensitive[0]
        );
    }
    for p in [&a.input, &a.output] {
        if extension_is(p, "parquet") {
            return Err(not_yet("Parquet input/output"));
        }
    }
    if a.output == a.input {
        bail!("--output must not be the input file");
    }
    let delimiter = delimiter_byte(a.delimiter)?;
    let mode_name = match a.mode {
        ModeArg::Mondrian => "mondrian",
        ModeArg::Heuristic => "heuristic",
        ModeArg::Optimal => "optimal",
    };

    // Hierarchies.
    let mut hierarchies = Vec::with_capacity(a.qi.len());
    let mut hierarchy_hashes = serde_json::Map::new();
    for spec in &a.qi {
        let Some((column, file)) = spec.split_once('=') else {
            bail!("--qi {spec:?}: expected COLUMN=HIERARCHY.csv");
        };
        if hierarchies.iter().any(|h: &Hierarchy| h.column() == column) {
            bail!("--qi {column}: the column is given twice");
        }
        let bytes =
            std::fs::read(file).with_context(|| format!("--qi {column}: reading {file}"))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| anyhow::anyhow!("--qi {column}: {file} is not UTF-8 ({e})"))?;
        // ARX hierarchy files are `;`-separated whatever the data delimiter is.
        let h = Hierarchy::parse_arx(column, text, ';')
            .with_context(|| format!("--qi {column}: {file}"))?;
        hierarchy_hashes.insert(
            column.to_owned(),
            json!(hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                &bytes
            ))),
        );
        hierarchies.push(h);
    }
    for d in &a.drop {
        if hierarchies.iter().any(|h| h.column() == d) {
            bail!("--drop {d}: the column is also a quasi-identifier");
        }
    }

    // Load.
    let tty = std::io::stderr().is_terminal();
    let loaded = table::load_with(&a.input, delimiter, &hierarchies, sensitive, |rows| {
        if tty {
            eprint!("\rreading: {rows} rows");
        }
    })
    .with_context(|| format!("reading {}", a.input.display()))?;
    if tty {
        eprint!("\r{:40}\r", "");
    }
    let rows = loaded.dataset.rows();
    let load_secs = started.elapsed().as_secs_f64();
    let mut privacy = Privacy::k_anonymity(a.k, a.suppression_limit, rows)?;
    if let Some(l) = a.l {
        let d = match a.l_variant {
            LVariant::Distinct => {
                if l.fract() != 0.0 || l < 1.0 {
                    bail!("--l {l}: distinct l-diversity needs a whole number ≥ 1");
                }
                Diversity::Distinct(l as u64)
            }
            LVariant::Entropy => Diversity::Entropy(l),
        };
        privacy = privacy.with_diversity(d)?;
    }
    if let Some(t) = a.t {
        privacy = privacy.with_closeness(t)?;
    }
    let ev = Evaluator::new(&hierarchies, &loaded.dataset)?;

    let drop: Vec<&str> = a.drop.iter().map(String::as_str).collect();
    let (outcome, written) = match a.mode {
        ModeArg::Mondrian => {
            let res = mondrian(&ev, &hierarchies, &loaded.dataset, &privacy, metric)?;
            let mut partition_of: HashMap<Vec<u32>, usize> = HashMap::new();
            for (i, p) in res.partitions.iter().enumerate() {
                for &t in &p.tuples {
                    partition_of.insert(loaded.dataset.tuple(t as usize).to_vec(), i);
                }
            }
            let all_suppressed = res.suppressed > 0;
            let written = table::write_with(
                &a.input,
                &a.output,
                delimiter,
                &hierarchies,
                &drop,
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
            .with_context(|| format!("writing {}", a.output.display()))?;
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
            (
                Outcome {
                    best,
                    released,
                    search,
                    ties: Vec::new(),
                    summary: format!("{} partitions (Mondrian, not proven optimal)", res.classes),
                },
                written,
            )
        }
        ModeArg::Optimal | ModeArg::Heuristic => {
            let res = if let ModeArg::Heuristic = a.mode {
                anonymize::heuristic::heuristic(&ev, metric, &privacy, a.budget)
            } else {
                // Search, with progress on a terminal at most every 200 ms.
                let mut last = Instant::now();
                optimal(&ev, metric, &privacy, |done, total| {
                    if tty && last.elapsed() > Duration::from_millis(200) {
                        last = Instant::now();
                        eprint!("\rsearch: {done} of {total} transformations");
                        let _ = std::io::stderr().flush();
                    }
                })?
            };
            if tty {
                eprint!("\r{:60}\r", "");
            }
            let Some(best) = res.best else {
                bail!(
                    "no transformation satisfies k = {} with at most {} of {} records \
                     suppressed; raise --suppression-limit, lower --k, or use higher \
                     hierarchies",
                    a.k,
                    privacy.max_suppressed,
                    rows
                );
            };
            let release = ev.release(&privacy, &best.levels);
            let written = table::write(
                &a.input,
                &a.output,
                delimiter,
                &hierarchies,
                &best.levels,
                |leaves| {
                    release
                        .suppressed_keys
                        .contains(&ev.qi_key(leaves, &best.levels))
                },
                &drop,
            )
            .with_context(|| format!("writing {}", a.output.display()))?;
            let released = release.released_sizes;
            let summary = format!(
                "{} of {} transformations evaluated{}",
                res.stats.evaluated,
                res.stats.lattice_nodes,
                if let ModeArg::Heuristic = a.mode {
                    " (heuristic, not proven optimal)"
                } else {
                    ""
                }
            );
            (
                Outcome {
                    best,
                    released,
                    search: serde_json::to_value(&res.stats).unwrap_or_default(),
                    ties: res.ties,
                    summary,
                },
                written,
            )
        }
    };
    let search_secs = started.elapsed().as_secs_f64() - load_secs;
    let best = &outcome.best;
    if written.suppressed != best.suppressed {
        let _ = std::fs::remove_file(&a.output);
        bail!(
            "internal check failed: the output has {} suppressed records, the search counted {}",
            written.suppressed,
            best.suppressed
        );
    }
    let columns: Vec<String> = hierarchies.iter().map(|h| h.column().to_owned()).collect();
    let config = json!({
        "input": a.input.display().to_string(),
        "delimiter": a.delimiter.to_string(),
        "quasi_identifiers": columns,
        "hierarchy_sha256": hierarchy_hashes,
        "drop": a.drop,
        "k": a.k,
        "sensitive": sensitive,
        "l": a.l,
        "l_variant": a.l.map(|_| format!("{:?}", a.l_variant).to_lowercase()),
        "t": a.t,
        "t_distance": a.t.map(|_| "equal"),
        "suppression_limit": a.suppression_limit,
        "metric": metric.name(),
        "mode": mode_name,
    });
    let report = report::build(&ReportInput {
        config,
        columns: &columns,
        best,
        released: &outcome.released,
        metric,
        k: a.k,
        rows,
        distinct: loaded.dataset.len() as u64,
        search: outcome.search.clone(),
        mode: mode_name,
        ties: &outcome.ties,
        seconds: started.elapsed().as_secs_f64(),
        risk_threshold: a.risk_threshold,
    });
    let html_path = a.report.with_extension("html");
    let written_reports = table::write_atomically(
        &a.report,
        &serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .and_then(|()| table::write_atomically(&html_path, report::html(&report).as_bytes()));
    if let Err(e) = written_reports {
        let _ = std::fs::remove_file(&a.output);
        let _ = std::fs::remove_file(&a.report);
        return Err(e).context("writing the report");
    }
    let levels: Vec<String> = columns
        .iter()
        .zip(&best.levels)
        .map(|(c, l)| format!("{c}={l}"))
        .collect();
    println!(
        "levels {}; {} {:.6}; {} classes (smallest {}); {} of {} records suppressed; \
         {}; {:.2} s (read {:.2} s, search and write {:.2} s)",
        levels.join(" "),
        metric.name(),
        best.score,
        best.classes,
        best.min_class,
        best.suppressed,
        rows,
        outcome.summary,
        started.elapsed().as_secs_f64(),
        load_secs,
        search_secs,
    );
    if !outcome.ties.is_empty() {
        println!(
            "{} other transformations have the same score (listed in the report)",
            outcome.ties.len()
        );
    }
    println!(
        "wrote {} ({} rows) and {} (+ {})",
        a.output.display(),
        written.rows,
        a.report.display(),
        html_path.display()
    );
    Ok(())
}
