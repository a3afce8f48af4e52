//! `enclave hierarchy`: builds an ARX-format generalization hierarchy for one column from the
//! values found in a table — intervals, dates, masked codes, ordered categories or ICD-10
//! codes — for use with `enclave anonymize --qi COLUMN=FILE` or as the code hierarchy of
//! `enclave anonymize-persons --event-set KIND=FILE`.

use std::path::PathBuf;

use anonymize::{builders, table};
use anyhow::{bail, Context, Result};
use clap::Args;

/// Arguments of `enclave hierarchy`.
#[derive(Args, Debug)]
pub struct HierarchyArgs {
    /// Table whose column's distinct values become the leaves (CSV with a header row).
    #[arg(long)]
    input: PathBuf,
    /// Field delimiter of the input.
    #[arg(long, default_value = ";")]
    delimiter: char,
    /// The column.
    #[arg(long)]
    column: String,
    /// Only the rows where this column holds this value: COLUMN=VALUE (e.g. kind=dx, for
    /// the diagnosis codes of an event table that also holds drug and lab codes).
    #[arg(long = "where", value_name = "COLUMN=VALUE")]
    only: Option<String>,
    /// Numeric intervals of these widths, one level each (each divides the next): 5,10,20.
    #[arg(long, value_delimiter = ',')]
    interval: Option<Vec<f64>>,
    /// Dates YYYY-MM-DD: month, year, decade.
    #[arg(long)]
    date: bool,
    /// Mask this many trailing characters per level (increasing): 1,3,5.
    #[arg(long, value_delimiter = ',')]
    mask: Option<Vec<usize>>,
    /// Group consecutive categories of --order in runs of these sizes (each divides the
    /// next): 2,8.
    #[arg(long, value_delimiter = ',')]
    ordered: Option<Vec<usize>>,
    /// The order for --ordered: comma-separated values, or `jis-prefectures` (the 47
    /// prefectures in JIS code order, north to south).
    #[arg(long, value_delimiter = ',')]
    order: Option<Vec<String>>,
    /// ICD-10 codes (E11.9, E119, C61): 3-character category, then chapter.
    #[arg(long)]
    icd10: bool,
    /// Output file (ARX format: `;`-separated, no header); refused if it exists.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `enclave hierarchy`.
pub fn run(a: HierarchyArgs) -> Result<()> {
    let kinds = usize::from(a.interval.is_some())
        + usize::from(a.date)
        + usize::from(a.mask.is_some())
        + usize::from(a.ordered.is_some())
        + usize::from(a.icd10);
    if kinds != 1 {
        bail!("give exactly one of --interval, --date, --mask, --ordered, --icd10");
    }
    if a.out.exists() {
        bail!("{} exists; not overwriting it", a.out.display());
    }
    let delimiter = u8::try_from(a.delimiter)
        .ok()
        .filter(u8::is_ascii)
        .context("--delimiter must be a single ASCII character")?;
    let only = match &a.only {
        Some(spec) => match spec.split_once('=') {
            Some((c, v)) => Some((c, v)),
            None => bail!("--where {spec:?}: expected COLUMN=VALUE"),
        },
        None => None,
    };
    let values = table::distinct_values(&a.input, delimiter, &a.column, only)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let h = if let Some(widths) = &a.interval {
        builders::intervals(&a.column, &values, widths)?
    } else if a.date {
        builders::dates(&a.column, &values)?
    } else if let Some(counts) = &a.mask {
        builders::masking(&a.column, &values, counts)?
    } else if let Some(sizes) = &a.ordered {
        let order: Vec<String> = match a.order.as_deref() {
            Some([one]) if one == "jis-prefectures" => synth::tables::PREFECTURES
                .iter()
                .map(|p| p.0.to_owned())
                .collect(),
            Some(list) => list.to_vec(),
            None => bail!("--ordered needs --order (values, or jis-prefectures)"),
        };
        builders::ordered(&a.column, &values, &order, sizes)?
    } else if a.icd10 {
        builders::icd10(&a.column, &values)?
    } else {
        bail!("give one of --interval, --date, --mask, --ordered, --icd10");
    };
    let text = builders::to_arx_csv(&h)?;
    table::write_atomically(&a.out, text.as_bytes())?;
    println!(
        "wrote {}: {} values, {} levels (column {})",
        a.out.display(),
        h.leaves(),
        h.height(),
        a.column
    );
    Ok(())
}
