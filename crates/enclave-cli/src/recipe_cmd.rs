//! `enclave apply-recipe`: applies a recipe written by `enclave anonymize --recipe-out` or
//! `enclave anonymize-persons --recipe-out` to a new delivery of data (R-AN-3; issue #12).
//! No search: the levels and hierarchies are the recipe's, so every value maps to what it
//! mapped to before; a delivery on which the model does not hold at those levels is refused
//! with the reason, and nothing is written.

use std::path::{Path, PathBuf};

use anonymize::recipe::{Plan, Recipe, Signature, SIGNATURE_FORMAT};
use anonymize::table;
use anyhow::{bail, Context, Result};
use clap::Args;
use envelope::{SigningKey, VerifyingKey};

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
    /// Refuse the recipe unless it is signed by one of these Ed25519 public keys (file, or a
    /// directory of .pub files; repeatable): the approvers' keys.
    #[arg(long, value_name = "PUB")]
    trust: Vec<PathBuf>,
    /// The recipe's signature (default: RECIPE.sig).
    #[arg(long, requires = "trust")]
    signature: Option<PathBuf>,
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
    let (recipe, id) = read_recipe(&a.recipe, a.expect_id.as_deref())?;
    let signature = if a.trust.is_empty() {
        eprintln!(
            "warning: the recipe's signature is not checked (no --trust); give the approvers' \
             keys to refuse a recipe nobody approved"
        );
        serde_json::json!("not checked")
    } else {
        let trusted = keystore::load_trusted(&a.trust)?;
        let path = a
            .signature
            .clone()
            .unwrap_or_else(|| signature_path(&a.recipe));
        let sig = verify(&id, &path, &trusted)?;
        println!("recipe signed by {} (key {})", sig.signer, sig.key_id);
        serde_json::json!({"verified": true, "signer": sig.signer, "key_id": sig.key_id})
    };
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
                    sign_recipe: None,
                    mapping_out: a.mapping_out.as_deref(),
                },
                RecipeSource::Applied(&recipe, signature.clone()),
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
                    sign_recipe: None,
                    mapping_out: a.mapping_out.as_deref(),
                },
                RecipeSource::Applied(&recipe, signature.clone()),
            )
        }
    }
}

/// Reads and parses a recipe; its id, refused unless it is `expected` (when given).
fn read_recipe(path: &Path, expected: Option<&str>) -> Result<(Recipe, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let recipe = Recipe::parse(&bytes).with_context(|| format!("{}", path.display()))?;
    let id = recipe.id();
    if let Some(expected) = expected {
        if !expected.eq_ignore_ascii_case(&id) {
            bail!(
                "{}: the recipe's id is {id}, not {expected}: it is not the approved version \
                 (changed, or another recipe)",
                path.display()
            );
        }
    }
    Ok((recipe, id))
}

/// Where a recipe's signature is kept by default: beside it, `.sig` added to its name.
pub fn signature_path(recipe: &Path) -> PathBuf {
    let mut name = recipe.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs the recipe with id `recipe_id` and writes the signature to `path` (never over an
/// existing file).
pub fn sign(key: &SigningKey, recipe_id: &str, path: &Path) -> Result<Signature> {
    if path.exists() {
        bail!("{} exists; not overwriting a signature", path.display());
    }
    let public = key.public();
    let sig = Signature {
        format: SIGNATURE_FORMAT.into(),
        recipe_id: recipe_id.to_owned(),
        signer: public.owner().to_owned(),
        key_id: public.key_id().to_string(),
        signature: hex::encode(key.sign(&Signature::message(recipe_id))),
    };
    table::write_atomically(path, &sig.to_json())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(sig)
}

/// Checks that the signature at `path` is over `recipe_id` and by one of `trusted`.
pub fn verify(recipe_id: &str, path: &Path, trusted: &[VerifyingKey]) -> Result<Signature> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the recipe's signature {} (sign it with `enclave sign-recipe`)",
            path.display()
        )
    })?;
    let sig = Signature::parse(&bytes).with_context(|| path.display().to_string())?;
    if !sig.recipe_id.eq_ignore_ascii_case(recipe_id) {
        bail!(
            "{}: the signature is for recipe {}, not for this one ({recipe_id}): the recipe was \
             changed after it was signed, or the signature belongs to another",
            path.display(),
            sig.recipe_id
        );
    }
    let Some(key) = trusted
        .iter()
        .find(|k| k.key_id().to_string().eq_ignore_ascii_case(&sig.key_id))
    else {
        bail!(
            "{}: signed by {} with key {}, which is not among the trusted keys",
            path.display(),
            sig.signer,
            sig.key_id
        );
    };
    key.verify(&Signature::message(recipe_id), &sig.bytes()?)
        .with_context(|| format!("{}: the signature does not verify", path.display()))?;
    Ok(Signature {
        signer: key.owner().to_owned(),
        ..sig
    })
}

/// Arguments of `enclave sign-recipe`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The approver's Ed25519 signing key (`enclave keygen --kind signing`).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the signature (default: RECIPE.sig).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Only sign a recipe with this id (the one that was reviewed).
    #[arg(long, value_name = "SHA256")]
    expect_id: Option<String>,
    /// The recipe to sign.
    recipe: PathBuf,
}

/// Runs `enclave sign-recipe`.
pub fn run_sign(a: SignArgs) -> Result<()> {
    let key = keystore::load_signing_key(&a.key)?;
    let (_, id) = read_recipe(&a.recipe, a.expect_id.as_deref())?;
    let path = a
        .output
        .clone()
        .unwrap_or_else(|| signature_path(&a.recipe));
    let sig = sign(&key, &id, &path)?;
    println!(
        "recipe {id} signed by {} (key {}): {}",
        sig.signer,
        sig.key_id,
        path.display()
    );
    Ok(())
}
