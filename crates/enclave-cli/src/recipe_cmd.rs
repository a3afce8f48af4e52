//! `enclave apply-recipe`: applies a recipe written by `enclave anonymize --recipe-out` or
//! `enclave anonymize-persons --recipe-out` to a new delivery of data (R-AN-3; issue #12).
//! No search: the levels and hierarchies are the recipe's, so every value maps to what it
//! mapped to before; a delivery on which the model does not hold at those levels is refused
//! with the reason, and nothing is written.

use std::path::PathBuf;

use anonymize::recipe::{Plan, Recipe};
use anyhow::{bail, Context, Result};
use clap::Args;

use crate::anonymize_cmd::{delimiter_byte, run_rows, RecipeSource, RowPaths};
use crate::persons_cmd::{hierarchies, run_persons, PersonPaths};

/// Arguments of `enclave apply-recipe`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The recipe (JSON). Its id (SHA-256) is printed and goes into the report.
    #[arg(long)]
    recipe: PathBuf,
    /// Refuse the recipe unless its id is this one (the id of the approved method version).
    #[arg(long, value_name = "SHA256")]
    expect_id: Option<String>,
    /// Rows recipe: the input table (CSV or Parquet).
    #[arg(long, required_unless_present = "persons", conflicts_with = "persons")]
    input: Option<PathBuf>,
    /// Rows recipe: the output table (CSV or Parquet).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Persons recipe: the person table.
    #[arg(long, requires_all = ["events", "output_persons", "output_events"])]
    persons: Option<PathBuf>,
    /// Persons recipe: the event table.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Persons recipe: the released person table (CSV).
    #[arg(long)]
    output_persons: Option<PathBuf>,
    /// Persons recipe: the released event table (CSV).
    #[arg(long)]
    output_events: Option<PathBuf>,
    /// Field delimiter of CSV inputs and outputs (default `;` for rows, `,` for persons).
    #[arg(long)]
    delimiter: Option<char>,
    /// Persons recipe: secret of the release keys (64 hex digits); fresh if not given.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Also write the applied value mapping (never release it).
    #[arg(long)]
    mapping_out: Option<PathBuf>,
    /// Report (JSON, with the recipe's id); an HTML page is written beside it.
    #[arg(long)]
    report: PathBuf,
}

/// Runs `enclave apply-recipe`.
pub fn run(a: ApplyArgs) -> Result<()> {
    let bytes =
        std::fs::read(&a.recipe).with_context(|| format!("reading {}", a.recipe.display()))?;
    let recipe = Recipe::parse(&bytes).with_context(|| format!("{}", a.recipe.display()))?;
    let id = recipe.id();
    if let Some(expected) = &a.expect_id {
        if !expected.eq_ignore_ascii_case(&id) {
            bail!(
                "{}: the recipe's id is {id}, not {expected}: it is not the approved version \
                 (changed, or another recipe)",
                a.recipe.display()
            );
        }
    }
    println!("recipe {id} ({})", a.recipe.display());
    match &recipe.plan {
        Plan::Rows { settings } => {
            let (Some(input), Some(output)) = (&a.input, &a.output) else {
                bail!("this recipe is for one table: give --input and --output");
            };
            let parsed = anonymize::job::hierarchies(settings, |f| recipe.file(f))?;
            run_rows(
                settings,
                &parsed,
                &RowPaths {
                    input,
                    output,
                    delimiter: delimiter_byte(a.delimiter.unwrap_or(';'))?,
                    report: &a.report,
                    recipe_out: None,
                    mapping_out: a.mapping_out.as_deref(),
                },
                RecipeSource::Applied(&recipe),
            )
        }
        Plan::Persons { settings } => {
            let (Some(persons), Some(events), Some(op), Some(oe)) =
                (&a.persons, &a.events, &a.output_persons, &a.output_events)
            else {
                bail!(
                    "this recipe is for persons: give --persons, --events, --output-persons and \
                     --output-events"
                );
            };
            let (parsed, codes) = hierarchies(settings, &mut |f| recipe.file(f))?;
            run_persons(
                settings,
                &parsed,
                &codes,
                &PersonPaths {
                    persons,
                    events,
                    output_persons: op,
                    output_events: oe,
                    delimiter: delimiter_byte(a.delimiter.unwrap_or(','))?,
                    report: &a.report,
                    key_file: a.key_file.as_deref(),
                    recipe_out: None,
                    mapping_out: a.mapping_out.as_deref(),
                },
                RecipeSource::Applied(&recipe),
            )
        }
    }
}
