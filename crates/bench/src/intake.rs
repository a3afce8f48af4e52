//! `enclave-bench intake`: the vault's content check and linking on a synthetic population
//! (issue #7): records per second per core of the strict parsers for each format, beside a
//! baseline of SHA-256 over the same bytes in the same run (every received file is hashed
//! anyway, so the ratio says what the parse costs on top), then read + parse + link of the
//! whole tree and the linking's pairwise recall and precision against the generator's truth.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clinical::{Format, Limits};
use linkage::eval::{link_tree, read_truth, score};
use linkage::{LinkKey, Linker};

fn files_of(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            files_of(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    u.map(|u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
    .unwrap_or(0.0)
}

/// Runs the intake benchmark on `persons` synthetic persons from 5 institutions under `dir`.
pub fn intake_bench(dir: &Path, persons: u64) -> Result<()> {
    let out = dir.join(format!("intake-bench-{persons}"));
    if !out.join("summary.json").exists() {
        if out.exists() {
            std::fs::remove_dir_all(&out).context("removing an interrupted run")?;
        }
        eprintln!(
            "intake: generating {persons} persons into {} …",
            out.display()
        );
        let t = Instant::now();
        synth::generate(
            &synth::Options {
                persons,
                seed: 1,
                institutions: 5,
                formats: synth::Format::ALL.to_vec(),
                out: out.clone(),
                as_of: synth::date::Date::new(2025, 3, 31).context("date")?,
                threads: 2,
            },
            |_| {},
        )
        .context("generating")?;
        eprintln!("intake: generated in {:.0} s", t.elapsed().as_secs_f64());
    }
    let limits = Limits::default();
    println!("# enclave-bench intake: {persons} persons, 5 institutions (seed 1), one thread");
    println!(
        "{:<12} {:>9} {:>10} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "format", "files", "MB", "records", "parse_s", "records/s", "sha256_s", "ratio"
    );
    for (sub, format) in [
        ("ssmix2", Format::Ssmix2),
        ("fhir", Format::FhirJp),
        ("claims", Format::Uke),
        ("cda", Format::CdaTokutei),
    ] {
        let mut files = Vec::new();
        files_of(&out.join(sub), &mut files)?;
        files.sort();
        let blobs: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|f| Ok((f.to_string_lossy().to_string(), std::fs::read(f)?)))
            .collect::<std::io::Result<_>>()?;
        let bytes: usize = blobs.iter().map(|(_, b)| b.len()).sum();
        let c0 = cpu_seconds();
        for (_, b) in &blobs {
            std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, b));
        }
        let hash_s = cpu_seconds() - c0;
        let c0 = cpu_seconds();
        let mut records = 0usize;
        for (name, b) in &blobs {
            match clinical::parse(format, b, Some(name), &limits) {
                Ok(x) => records += x.records.len(),
                Err(r) => bail!("{name} refused: {r}"),
            }
        }
        let parse_s = cpu_seconds() - c0;
        println!(
            "{:<12} {:>9} {:>10.1} {:>8} {:>10.2} {:>12.0} {:>12.2} {:>8.1}",
            format.as_str(),
            blobs.len(),
            bytes as f64 / 1e6,
            records,
            parse_s,
            records as f64 / parse_s.max(1e-9),
            hash_s,
            parse_s / hash_s.max(1e-9)
        );
    }
    let t = Instant::now();
    let c0 = cpu_seconds();
    let mut linker = Linker::new(LinkKey::new([42; 32]));
    let st = link_tree(&out, &mut linker).map_err(anyhow::Error::msg)?;
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let truth = read_truth(&std::fs::read_to_string(out.join("truth/links.csv"))?)
        .map_err(anyhow::Error::msg)?;
    let s = score(&linker, &truth);
    println!(
        "read+parse+link: {} files, {:.0} MB, {} records in {wall:.1} s wall / {cpu:.1} s CPU = {:.0} records/s per core; refused {}",
        st.files,
        st.bytes as f64 / 1e6,
        st.records,
        st.records as f64 / cpu.max(1e-9),
        st.refused.len()
    );
    println!("linking bases: {:?}", st.by_basis);
    println!(
        "linking vs truth: {} local ids ({} unseen), {} true pairs, {} found, {} correct: recall {:.5}, precision {:.5}",
        s.local_ids,
        s.unseen,
        s.true_pairs,
        s.found_pairs,
        s.correct_pairs,
        s.recall(),
        s.precision()
    );
    Ok(())
}
