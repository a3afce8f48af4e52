//! `enclave anonymize-persons`: person-level anonymization of a person table and an event
//! table (issue #12; R-AN-1, R-AN-2) — drives `anonymize::person`. Both outputs and the
//! report are written only if the whole run succeeds.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anonymize::person::{self, EventSet, PersonFiles, PersonSettings, ReleaseKey};
use anonymize::{job, Hierarchy};
use anyhow::{bail, Context, Result};
use clap::Args;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::anonymize_cmd::{delimiter_byte, read_file, write_reports, ModelArgs, Terminal};

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
    /// Secret behind the release keys and date offsets: a file of 64 hex digits. Without
    /// it a fresh random secret is drawn and never stored, so the keys of two releases
    /// cannot be linked. Give one only to reproduce a release; keep it in the vault.
    #[arg(long)]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
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

fn secret(file: Option<&PathBuf>) -> Result<Zeroizing<[u8; 32]>> {
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
    let started = Instant::now();
    let delimiter = delimiter_byte(a.delimiter)?;
    let model = a.model.settings()?;
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
    let settings = PersonSettings {
        model,
        id: a.id.clone(),
        kind_column: a.kind_column.clone(),
        code_column: a.code_column.clone(),
        event_sets,
        shift_dates: a.shift_dates.clone(),
        max_shift_days: a.max_shift_days,
        drop_events: a.drop_events.clone(),
    };
    settings.check()?;
    let parsed = job::hierarchies(&settings.model, read_file)?;
    let mut codes = Vec::with_capacity(settings.event_sets.len());
    for s in &settings.event_sets {
        let bytes = read_file(&s.hierarchy).map_err(anyhow::Error::msg)?;
        let text =
            std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8", s.hierarchy))?;
        codes.push(Hierarchy::parse_arx(&a.code_column, text, ';')?);
    }
    let secret = secret(a.key_file.as_ref())?;
    let key = ReleaseKey::new(&secret);
    let files = PersonFiles {
        persons: &a.persons,
        events: &a.events,
        output_persons: &a.output_persons,
        output_events: &a.output_events,
        delimiter,
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = Terminal::new(tty);
    let result = person::run(&settings, &parsed, &codes, &files, &key, &mut progress);
    if tty {
        eprint!("\r{:80}\r", "");
    }
    let r = result?;
    let html = write_reports(
        &a.report,
        &r.outcome.report,
        &[&a.output_persons, &a.output_events],
    )?;
    let best = &r.outcome.best;
    let levels: Vec<String> = r
        .outcome
        .columns
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
        a.output_persons.display(),
        r.persons - r.persons_suppressed,
        a.output_events.display(),
        r.events_written,
        r.events,
        a.report.display(),
        html.display()
    );
    Ok(())
}
