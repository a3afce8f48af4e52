//! `enclave-bench persons`: person-level anonymization (`enclave anonymize-persons`) of a
//! synthetic longitudinal population — a person table and its event table from `enclave
//! synth --formats flat,events` — with wall time and peak RSS, beside `cp` of the event table
//! in the same run. Issue #12's goal: 1M persons / 50M event rows in ≤ 10 min and ≤ 8 GB
//! (the generator gives about 23 event rows a person, so 50M rows take about 2.2M persons).

use std::path::Path;

use anyhow::{Context, Result};

use crate::{measured_once, sibling_binary};

fn run(enclave: &Path, dir: &Path, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(enclave)
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "enclave {args:?} failed");
    Ok(())
}

/// Generates `persons` persons with their events under `dir` and anonymizes them per person.
pub fn persons_bench(dir: &Path, persons: u64) -> Result<()> {
    let enclave = sibling_binary("enclave")?;
    let scratch = dir.join(format!("persons-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let scratch = scratch.canonicalize()?;
    let res = bench_in(&enclave, &scratch, persons);
    std::fs::remove_dir_all(&scratch).ok();
    res
}

fn bench_in(enclave: &Path, d: &Path, persons: u64) -> Result<()> {
    println!("-- person-level anonymization: generating {persons} persons with their events …");
    let n = persons.to_string();
    let synth = measured_once(&[
        &enclave,
        &"synth",
        &"--persons",
        &n,
        &"--seed",
        &"11",
        &"--formats",
        &"flat,events",
        &"--out",
        &d.join("syn"),
    ])?;
    let events = d.join("syn/events/events.csv");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("syn/summary.json"))?)
            .context("synth summary")?;
    let event_rows = summary["formats"]["events"]["records"]
        .as_u64()
        .unwrap_or(0);
    for (column, kind) in [
        ("age", "--interval=5,10,20"),
        ("sex", "--mask=1"),
        ("postal_code", "--mask=2,4,7"),
    ] {
        run(
            enclave,
            d,
            &[
                "hierarchy",
                "--input",
                "syn/flat/persons.csv",
                "--delimiter",
                ",",
                "--column",
                column,
                kind,
                "--out",
                &format!("{column}.csv"),
            ],
        )?;
    }
    run(
        enclave,
        d,
        &[
            "hierarchy",
            "--input",
            "syn/events/events.csv",
            "--delimiter",
            ",",
            "--column",
            "code",
            "--where",
            "kind=dx",
            "--icd10",
            "--out",
            "icd10.csv",
        ],
    )?;
    let arg = |s: &str| d.join(s);
    let m = measured_once(&[
        &enclave,
        &"anonymize-persons",
        &"--persons",
        &arg("syn/flat/persons.csv"),
        &"--events",
        &events,
        &"--qi",
        &format!("age={}", arg("age.csv").display()),
        &"--qi",
        &format!("sex={}", arg("sex.csv").display()),
        &"--qi",
        &format!("postal_code={}", arg("postal_code.csv").display()),
        &"--drop",
        &"family_name,given_name,family_kana,given_kana,birth_date,prefecture,city,phone,insurer_number,insured_symbol,insured_number,primary_icd10,conditions,encounters,institutions",
        &"--event-set",
        &format!("dx={}", arg("icd10.csv").display()),
        &"--shift-dates",
        &"date",
        &"--max-shift-days",
        &"30",
        &"--drop-events",
        &"institution",
        &"--keep",
        &"height_cm,weight_kg,bmi,sbp,dbp,hba1c,ldl,hdl,tg,egfr",
        &"--keep-events",
        &"value",
        &"--k",
        &"5",
        &"--suppression-limit",
        &"0.05",
        &"--output-persons",
        &arg("p.csv"),
        &"--output-events",
        &arg("e.csv"),
        &"--report",
        &arg("report.json"),
    ])?;
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(arg("report.json"))?)?;
    let cp = measured_once(&[&"cp", &events, &arg("copy.csv")])?;
    println!(
        "{:<34} {:>9} {:>11} {:>8} {:>9} {:>10}",
        "", "persons", "event rows", "wall s", "RSS MiB", "× cp events"
    );
    println!(
        "{:<34} {:>9} {:>11} {:>8.1} {:>9.0} {:>10.1}",
        "anonymize-persons, 3 QIs + dx set",
        persons,
        event_rows,
        m.wall,
        m.maxrss_kib as f64 / 1024.0,
        m.wall / cp.wall.max(1e-3)
    );
    println!(
        "   generation {:.1} s; {} persons suppressed; {} classes; event table {:.0} MiB; goal: \
         1M persons / 50M event rows ≤ 10 min, ≤ 8 GB",
        synth.wall,
        r["persons"]["persons_suppressed"],
        r["classes"],
        std::fs::metadata(&events)?.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}
