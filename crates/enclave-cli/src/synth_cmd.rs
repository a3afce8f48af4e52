//! `enclave synth`: drives the `synth` crate — parses the arguments, shows progress on a
//! terminal, and prints what was written.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use synth::date::Date;
use synth::{Format, Layout, Options};

use crate::progress::human_bytes;

/// Arguments of `enclave synth`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Number of persons to generate.
    #[arg(long, default_value_t = 1000)]
    persons: u64,
    /// Seed: the same seed and arguments give byte-identical output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of medical institutions; each person visits one to three of them.
    #[arg(long, default_value_t = 5)]
    institutions: u32,
    /// Comma-separated formats: ssmix2, fhir, cda, claims, flat, events, or all.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    formats: Vec<String>,
    /// Last day of the two-year observation window (YYYY-MM-DD).
    #[arg(long, default_value = "2025-03-31")]
    as_of: String,
    /// Worker threads (default: all cores). Output does not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Output folder; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// `tree`: SS-MIX2 messages and FHIR Bundles as one file each, in the SS-MIX2 folder
    /// tree (about 12 files and 8 folders per person). `tar`: the same paths and bytes as
    /// members of OUT/ssmix2.tar and OUT/fhir.tar (`tar -xf` there gives the tree); use it
    /// for runs whose tree would not fit the file system's inodes (1M persons ≈ 18M inodes)
    /// or would spend most of the time creating files.
    #[arg(long, value_enum, default_value = "tree")]
    layout: LayoutArg,
}

/// `--layout` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LayoutArg {
    Tree,
    Tar,
}

fn parse_date(s: &str) -> Result<Date> {
    let parts: Vec<&str> = s.split('-').collect();
    if let [y, m, d] = parts[..] {
        if let (Ok(y), Ok(m), Ok(d)) = (y.parse(), m.parse(), d.parse()) {
            if let Some(date) = Date::new(y, m, d) {
                return Ok(date);
            }
        }
    }
    bail!("--as-of {s:?} is not a date of the form YYYY-MM-DD")
}

/// Runs `enclave synth`.
pub fn run(a: SynthArgs) -> Result<()> {
    let mut formats = Vec::new();
    for f in &a.formats {
        match f.as_str() {
            "all" => formats.extend(Format::ALL),
            name => match Format::parse(name) {
                Some(f) => formats.push(f),
                None => bail!(
                    "unknown format {name:?}; choose from ssmix2, fhir, cda, claims, flat, events, all"
                ),
            },
        }
    }
    formats.sort();
    formats.dedup();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = Options {
        persons: a.persons,
        seed: a.seed,
        institutions: a.institutions,
        formats,
        out: a.out,
        as_of: parse_date(&a.as_of)?,
        threads,
        layout: match a.layout {
            LayoutArg::Tree => Layout::Tree,
            LayoutArg::Tar => Layout::Tar,
        },
    };
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let summary = synth::generate(&opts, |done| {
        if tty && (last.elapsed().as_millis() >= 500 || done == opts.persons) {
            last = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\rsynth: {done} of {} persons ({:.0}%), {rate:.0} persons/s   ",
                opts.persons,
                done as f64 * 100.0 / opts.persons.max(1) as f64
            );
            std::io::stderr().flush().ok();
        }
    })
    .with_context(|| format!("generating into {}", opts.out.display()))?;
    if tty {
        eprint!("\r{:70}\r", "");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("wrote {} synthetic persons ({} institution links) to {} in {secs:.1} s ({:.0} persons/s), seed {}", summary.persons, summary.links, opts.out.display(), summary.persons as f64 / secs.max(1e-6), opts.seed);
    for (name, (files, bytes, records)) in &summary.formats {
        println!(
            "  {name:<7} {files:>9} files {:>10} {records:>10} records",
            human_bytes(*bytes)
        );
    }
    println!("  truth/links.csv maps every local patient id to its person; summary.json lists the above.");
    Ok(())
}
