//! `enclave-bench synth`: how fast `enclave synth` makes persons in all formats, and the
//! 10M-row flat table, beside a baseline of the same run: `cp -r` of the generated tree
//! (the same files and bytes, with no generation work), so the ratio shows how much of the
//! time is the generator and how much the file system's cost of creating SS-MIX2's many
//! small files. The same run with `--layout tar` (SS-MIX2 and FHIR as members of two tar
//! archives) shows the generator without that cost, and a 1M-person run in that layout
//! measures the issue's goal directly instead of extrapolating it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{measured_once, sibling_binary, Measurement};

fn row(name: &str, persons: u64, m: &Measurement, base: Option<&Measurement>) {
    let ratio = base
        .map(|b| format!("{:.2}", m.wall / b.wall))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<34} {:>10} {:>8.1} {:>10.0} {:>8.1} {:>8.1} {:>9.0} {:>9}",
        name,
        persons,
        m.wall,
        persons as f64 / m.wall,
        m.user,
        m.sys,
        m.maxrss_kib as f64 / 1024.0,
        ratio
    );
}

fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// Generates the flat person table alone (`enclave synth --formats flat`, seed 1) into
/// `out`; returns the measurement and the CSV's path.
pub fn flat_table(enclave: &Path, persons: u64, out: &Path) -> Result<(Measurement, PathBuf)> {
    let n = persons.to_string();
    let m = measured_once(&[
        &enclave,
        &"synth",
        &"--persons",
        &n,
        &"--formats",
        &"flat",
        &"--out",
        &out,
    ])?;
    Ok((m, out.join("flat/persons.csv")))
}

/// Runs the synth benchmark in a scratch folder under `dir`, removed afterwards.
pub fn synth_bench(persons: u64, tar_persons: u64, flat_persons: u64, dir: &Path) -> Result<()> {
    let enclave = sibling_binary("enclave")?;
    let scratch = dir.join(format!("synth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = run_in(&enclave, persons, tar_persons, flat_persons, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    result
}

/// `enclave synth` in all formats, seed 1, 5 institutions, in the given layout.
fn all_formats(enclave: &Path, persons: u64, layout: &str, out: &Path) -> Result<Measurement> {
    let n = persons.to_string();
    measured_once(&[
        &enclave,
        &"synth",
        &"--persons",
        &n,
        &"--institutions",
        &"5",
        &"--layout",
        &layout,
        &"--out",
        &out,
    ])
}

/// One layout at `persons`, beside `cp -r` of what it wrote.
fn layout_rows(enclave: &Path, persons: u64, layout: &str, dir: &Path) -> Result<()> {
    let all = dir.join(layout);
    let gen = all_formats(enclave, persons, layout, &all)?;
    let (files, bytes) = tree_size(&all)?;
    let copy = dir.join("copy");
    let cp = measured_once(&[&"cp", &"-r", &all, &copy])?;
    row(&format!("cp -r of the {layout} output"), persons, &cp, None);
    row(
        &format!("all formats, --layout {layout}"),
        persons,
        &gen,
        Some(&cp),
    );
    println!(
        "  output: {files} files, {:.2} GiB; at this rate 1M persons take {:.1} min",
        bytes as f64 / (1u64 << 30) as f64,
        1e6 / (persons as f64 / gen.wall) / 60.0
    );
    std::fs::remove_dir_all(&all).ok();
    std::fs::remove_dir_all(&copy).ok();
    Ok(())
}

/// Bytes free for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let st =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

fn run_in(
    enclave: &Path,
    persons: u64,
    tar_persons: u64,
    flat_persons: u64,
    dir: &Path,
) -> Result<()> {
    println!(
        "== synth: synthetic persons with `enclave synth` (seed 1, 5 institutions) in {} ==",
        dir.display()
    );
    println!(
        "{:<34} {:>10} {:>8} {:>10} {:>8} {:>8} {:>9} {:>9}",
        "step", "persons", "wall s", "persons/s", "user s", "sys s", "RSS MiB", "÷ cp -r"
    );
    // The tar layout first: on an ext4 without a journal (as here) the inode allocator
    // skips inodes freed in the last minutes, so a tree made just after another was deleted
    // is slower than it would be on its own.
    if persons > 0 {
        layout_rows(enclave, persons, "tar", dir)?;
        layout_rows(enclave, persons, "tree", dir)?;
    }
    if tar_persons > 0 {
        // 1M persons took 43 GiB on disk (2026-12-03): 45 KiB a person, and a margin.
        let need = tar_persons * 48 * 1024;
        let free = free_bytes(dir)?;
        if free < need {
            println!(
                "  skipped --tar-persons {tar_persons}: it needs about {:.0} GiB, {} has {:.0} GiB free",
                need as f64 / (1u64 << 30) as f64,
                dir.display(),
                free as f64 / (1u64 << 30) as f64
            );
        } else {
            let out = dir.join("tar-big");
            let m = all_formats(enclave, tar_persons, "tar", &out)?;
            row("all formats, --layout tar", tar_persons, &m, None);
            let (_, bytes) = tree_size(&out)?;
            println!(
                "  output: {:.1} GiB; {:.1} min",
                bytes as f64 / (1u64 << 30) as f64,
                m.wall / 60.0
            );
            std::fs::remove_dir_all(&out).ok();
        }
    }
    if flat_persons > 0 {
        let (m, csv) = flat_table(enclave, flat_persons, &dir.join("flat"))?;
        let copied = dir.join("persons-copy.csv");
        let cp = measured_once(&[&"cp", &csv, &copied])?;
        row("cp of persons.csv (baseline)", flat_persons, &cp, None);
        row("flat table only", flat_persons, &m, Some(&cp));
        println!(
            "  persons.csv: {:.2} GiB",
            std::fs::metadata(&csv)?.len() as f64 / (1u64 << 30) as f64
        );
    }
    println!("Goals (issue #4): 1M persons in all formats ≤ 10 min, memory < 2 GB; 10M-row flat table ≤ 2 min.");
    Ok(())
}
