//! `enclave anonymize-persons`: person-level anonymization of a person table and an event
//! table (issue #12; R-AN-1, R-AN-2) — drives `anonymize::person`. Both outputs and the
//! report are written only if the whole run succeeds.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anonymize::person::{self, EventSet, PersonFiles, PersonSettings, Profile, ReleaseKey};
use anonymize::recipe::{self, Plan};
use anonymize::{job, Hierarchy};
use anyhow::{bail, Context, Result};
use clap::Args;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::anonymize_cmd::{
    delimiter_byte, finish, recipe_possible, recording, Extra, Extras, ModelArgs, RecipeSource,
    Terminal,
};

/// Output profiles.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProfileArg {
    /// 匿名加工医療情報: privacy model per person.
    Anonymized,
    /// 仮名加工医療情報: values kept, identifiers replaced.
    Pseudonymized,
}

/// Arguments of `enclave anonymize-persons`.
#[derive(Args, Debug)]
pub struct PersonsArgs {
    /// Person table, one row per person (CSV with a header row, or Parquet).
    #[arg(long)]
    persons: PathBuf,
    /// Event table, any number of rows per person (CSV with a header row, or Parquet).
    #[arg(long)]
    events: PathBuf,
    /// Field delimiter of the CSV inputs and of the outputs.
    #[arg(long, default_value = ",")]
    delimiter: char,
    /// Person id column, in both tables; the release carries a release key instead.
    #[arg(long, default_value = "person_id")]
    id: String,
    /// Column of the event table naming the kind of event.
    #[arg(long, default_value = "kind")]
    kind_column: String,
    /// Column of the event table holding the code.
    #[arg(long, default_value = "code")]
    code_column: String,
    /// An event kind whose codes form a set-valued quasi-identifier, and the code hierarchy
    /// (ARX format; `enclave hierarchy --icd10 --where kind=dx` builds one for ICD-10):
    /// KIND=HIERARCHY.csv. Repeat. Rows of kinds not given here are left out of the release.
    #[arg(long = "event-set", value_name = "KIND=HIERARCHY.csv", required = true)]
    event_set: Vec<String>,
    /// Date columns (YYYY-MM-DD) of the event table to shift by a per-person offset, which
    /// keeps every interval between a person's events. Repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    shift_dates: Vec<String>,
    /// Offsets are drawn uniformly from −N … +N days.
    #[arg(long, default_value_t = 0)]
    max_shift_days: u32,
    /// Event columns to leave out of the release (e.g. institution). Repeat or commas.
    #[arg(long, value_delimiter = ',')]
    drop_events: Vec<String>,
    /// Person-table columns released as they are (reviewed as not identifying, e.g. lab
    /// values). Every column must be a quasi-identifier, sensitive, dropped or kept.
    #[arg(long, value_delimiter = ',')]
    keep: Vec<String>,
    /// Event-table columns released as they are (e.g. value). Every column must be the id,
    /// kind or code, a shifted date, dropped or kept.
    #[arg(long, value_delimiter = ',')]
    keep_events: Vec<String>,
    /// Top/bottom coding of a kept numeric column: COLUMN=LOW:HIGH writes values below LOW
    /// as `<LOW` and above HIGH as `>HIGH` (extreme lab values single people out). Repeat.
    #[arg(long = "top-bottom", value_name = "COLUMN=LOW:HIGH")]
    top_bottom: Vec<String>,
    /// Top/bottom coding of a kept event column in the rows of one code (lab values differ
    /// in scale per test): COLUMN@CODE=LOW:HIGH, e.g. value@3D046000001906202=5:10 for
    /// HbA1c. Repeat.
    #[arg(long = "top-bottom-events", value_name = "COLUMN@CODE=LOW:HIGH")]
    top_bottom_events: Vec<String>,
    /// The number of a person's rows of KIND as a quasi-identifier (`KIND_count`), in
    /// intervals of these widths (each dividing the next): dx=5,10,20. The kind's rows are
    /// then summarized in the person table, not released (their number would show the
    /// count). Repeat per kind.
    #[arg(long = "event-count", value_name = "KIND=WIDTHS")]
    event_count: Vec<String>,
    /// The first date of a person's rows of KIND (the earliest value of COLUMN,
    /// YYYY-MM-DD) as a quasi-identifier (`KIND_first`: day, month, year, decade). The
    /// kind's rows are then summarized, not released. Repeat per kind.
    #[arg(long = "first-date", value_name = "KIND=COLUMN")]
    first_date: Vec<String>,
    /// anonymized (匿名加工医療情報, default): the privacy model holds per person.
    /// pseudonymized (仮名加工医療情報): values kept, ids replaced by release keys; only for
    /// certified users; --k, --l, --t and --suppression-limit do not apply.
    #[arg(long, value_enum, default_value_t = ProfileArg::Anonymized)]
    profile: ProfileArg,
    /// Secret behind the release keys and date offsets: a file of 64 hex digits. Without
    /// it a fresh random secret is drawn and never stored, so the keys of two releases
    /// cannot be linked. Give one only to reproduce a release; keep it in the vault.
    #[arg(long)]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    extras: Extras,
    /// Released person table (CSV): generalized quasi-identifiers, one column per event
    /// set (KIND_codes), the release key in the id column.
    #[arg(long)]
    output_persons: PathBuf,
    /// Released event table (CSV): codes generalized to their person's level, dates shifted.
    #[arg(long)]
    output_events: PathBuf,
    /// Report (JSON, with a `persons` section); an HTML page is written beside it.
    #[arg(long)]
    report: PathBuf,
}

fn secret(file: Option<&Path>) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    match file {
        Some(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
            hex::decode_to_slice(text.trim(), &mut key[..]).with_context(|| {
                format!("{}: expected 64 hex digits (32 bytes)", path.display())
            })?;
        }
        None => SystemRandom::new()
            .fill(&mut key[..])
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?,
    }
    Ok(key)
}

/// Runs `enclave anonymize-persons`.
pub fn run(a: PersonsArgs) -> Result<()> {
    let profile = match a.profile {
        ProfileArg::Anonymized => Profile::Anonymized,
        ProfileArg::Pseudonymized => Profile::Pseudonymized,
    };
    let model = match profile {
        Profile::Anonymized => a.model.settings()?,
        Profile::Pseudonymized => a.model.settings_or(Some((1, 0.0)))?,
    };
    let mut event_sets = Vec::with_capacity(a.event_set.len());
    for spec in &a.event_set {
        let Some((kind, file)) = spec.split_once('=') else {
            bail!("--event-set {spec:?}: expected KIND=HIERARCHY.csv");
        };
        event_sets.push(EventSet {
            kind: kind.to_owned(),
            hierarchy: file.to_owned(),
        });
    }
    let top_bottom = top_bottom_specs(&a.top_bottom, "--top-bottom", "COLUMN")?;
    let top_bottom_events =
        top_bottom_specs(&a.top_bottom_events, "--top-bottom-events", "COLUMN@CODE")?;
    let mut event_counts = std::collections::BTreeMap::new();
    for spec in &a.event_count {
        let parsed = spec.split_once('=').and_then(|(kind, widths)| {
            let w: Option<Vec<f64>> = widths.split(',').map(|x| x.trim().parse().ok()).collect();
            Some((kind, w?))
        });
        let Some((kind, widths)) = parsed else {
            bail!("--event-count {spec:?}: expected KIND=WIDTHS (numbers, e.g. dx=5,10,20)");
        };
        if event_counts.insert(kind.to_owned(), widths).is_some() {
            bail!("--event-count: kind {kind} given twice");
        }
    }
    let mut first_dates = std::collections::BTreeMap::new();
    for spec in &a.first_date {
        let Some((kind, column)) = spec.split_once('=') else {
            bail!("--first-date {spec:?}: expected KIND=COLUMN");
        };
        if first_dates
            .insert(kind.to_owned(), column.to_owned())
            .is_some()
        {
            bail!("--first-date: kind {kind} given twice");
        }
    }
    let settings = PersonSettings {
        model,
        id: a.id.clone(),
        kind_column: a.kind_column.clone(),
        code_column: a.code_column.clone(),
        event_sets,
        shift_dates: a.shift_dates.clone(),
        max_shift_days: a.max_shift_days,
        drop_events: a.drop_events.clone(),
        profile,
        keep: a.keep.clone(),
        keep_events: a.keep_events.clone(),
        top_bottom,
        top_bottom_events,
        event_counts,
        first_dates,
    };
    let signer = a.extras.signer()?;
    let mut files = BTreeMap::new();
    let (parsed, codes) = hierarchies(&settings, &mut recording(&mut files))?;
    run_persons(
        &settings,
        &parsed,
        &codes,
        &PersonPaths {
            persons: &a.persons,
            events: &a.events,
            output_persons: &a.output_persons,
            output_events: &a.output_events,
            delimiter: delimiter_byte(a.delimiter)?,
            report: &a.report,
            key_file: a.key_file.as_deref(),
            recipe_out: a.extras.recipe_out.as_deref(),
            sign_recipe: signer.as_ref(),
            mapping_out: a.extras.mapping_out.as_deref(),
        },
        RecipeSource::Files(files),
    )
}

/// The person table's hierarchies and the code hierarchy of each event set, read by `read`.
pub fn hierarchies(
    settings: &PersonSettings,
    read: &mut dyn FnMut(&str) -> std::result::Result<Vec<u8>, String>,
) -> Result<(job::Parsed, Vec<Hierarchy>)> {
    Ok(person::hierarchies(settings, read)?)
}

/// Files of a person-level run.
pub struct PersonPaths<'a> {
    /// Person table.
    pub persons: &'a Path,
    /// Event table.
    pub events: &'a Path,
    /// Released person table.
    pub output_persons: &'a Path,
    /// Released event table.
    pub output_events: &'a Path,
    /// Delimiter.
    pub delimiter: u8,
    /// Report.
    pub report: &'a Path,
    /// Secret of the release keys, if not fresh.
    pub key_file: Option<&'a Path>,
    /// Recipe to write.
    pub recipe_out: Option<&'a Path>,
    /// Key to sign the recipe with.
    pub sign_recipe: Option<&'a envelope::SigningKey>,
    /// Mapping to write.
    pub mapping_out: Option<&'a Path>,
}

/// A person-level run (`enclave anonymize-persons`, or `enclave apply-recipe` of a persons
/// recipe).
pub fn run_persons(
    settings: &PersonSettings,
    parsed: &job::Parsed,
    codes: &[Hierarchy],
    paths: &PersonPaths<'_>,
    source: RecipeSource<'_>,
) -> Result<()> {
    let started = Instant::now();
    recipe_possible(paths.recipe_out, settings.model.mode)?;
    let secret = secret(paths.key_file)?;
    let key = ReleaseKey::new(&secret);
    let files = PersonFiles {
        persons: paths.persons,
        events: paths.events,
        output_persons: paths.output_persons,
        output_events: paths.output_events,
        delimiter: paths.delimiter,
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = Terminal::new(tty);
    let result = person::run(settings, parsed, codes, &files, &key, &mut progress);
    if tty {
        eprint!("\r{:80}\r", "");
    }
    let r = result?;
    let mut report = r.outcome.report;
    source.annotate(&mut report);
    let best = &r.outcome.best;
    let n = parsed.quasi.len();
    let html = finish(
        &source,
        &mut report,
        &Extra {
            recipe_out: paths.recipe_out,
            sign_recipe: paths.sign_recipe,
            mapping_out: paths.mapping_out,
            report: paths.report,
        },
        || Plan::Persons {
            settings: Box::new(settings.clone()),
        },
        &best.levels,
        serde_json::json!({"persons": paths.persons.display().to_string(),
                           "events": paths.events.display().to_string(),
                           "rows": r.persons, "event_rows": r.events}),
        || {
            let code_levels: Vec<(String, &Hierarchy, usize)> = settings
                .event_sets
                .iter()
                .zip(codes)
                .zip(&best.levels[n..])
                .map(|((s, h), &l)| (format!("{} codes", s.kind), h, l))
                .collect();
            recipe::mapping_csv(&parsed.quasi, &best.levels[..n], &code_levels)
        },
        &[paths.output_persons, paths.output_events],
    )?;
    let columns: Vec<&str> = r.outcome.columns.iter().map(String::as_str).collect();
    let levels: Vec<String> = columns
        .iter()
        .zip(&best.levels)
        .map(|(c, l)| format!("{c}={l}"))
        .collect();
    println!(
        "levels {}; {} {:.6}; {} classes of persons (smallest {}); {} of {} persons suppressed \
         with their {} events; {}; {:.2} s",
        levels.join(" "),
        r.outcome.metric.name(),
        best.score,
        best.classes,
        best.min_class,
        r.persons_suppressed,
        r.persons,
        r.events_suppressed,
        r.outcome.summary,
        started.elapsed().as_secs_f64(),
    );
    if r.events_undeclared > 0 {
        println!(
            "{} event rows of kinds not declared with --event-set were left out",
            r.events_undeclared
        );
    }
    println!(
        "wrote {} ({} persons), {} ({} of {} events) and {} (+ {})",
        paths.output_persons.display(),
        r.persons - r.persons_suppressed,
        paths.output_events.display(),
        r.events_written,
        r.events,
        paths.report.display(),
        html.display()
    );
    Ok(())
}

/// `KEY=LOW:HIGH` specs (`--top-bottom`, `--top-bottom-events`) by key.
fn top_bottom_specs(
    specs: &[String],
    option: &str,
    key: &str,
) -> Result<BTreeMap<String, (f64, f64)>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let parsed = spec.split_once('=').and_then(|(k, range)| {
            let (low, high) = range.split_once(':')?;
            Some((
                k,
                low.trim().parse::<f64>().ok()?,
                high.trim().parse::<f64>().ok()?,
            ))
        });
        let Some((k, low, high)) = parsed else {
            bail!("{option} {spec:?}: expected {key}=LOW:HIGH (numbers)");
        };
        out.insert(k.to_owned(), (low, high));
    }
    Ok(out)
}
