//! `enclave-bench intake`: the vault's content check and linking on a synthetic population
//! (issue #7): records per second per core of the strict parsers for each format, beside a
//! baseline of SHA-256 over the same bytes in the same run (every received file is hashed
//! anyway, so the ratio says what the parse costs on top), then read + parse + link of the
//! whole tree and the linking's pairwise recall and precision against the generator's truth.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clinical::{Format, Limits};
use linkage::eval::{link_tree, read_truth, score};
use linkage::{LinkKey, Linker};

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    u.map(|u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
    .unwrap_or(0.0)
}

/// Runs the intake benchmark on `persons` synthetic persons from 5 institutions under `dir`.
pub fn intake_bench(dir: &Path, persons: u64, e2e_files: usize) -> Result<()> {
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
        let files = testkit::files_under(&out.join(sub));
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
    for (sub, ct) in [
        ("ssmix2", envelope::ContentType::Ssmix2),
        ("fhir", envelope::ContentType::FhirJp),
    ] {
        // One file per envelope (how SS-MIX2 storage files or per-person Bundles arrive when
        // sent one by one), then bulk envelopes: an HL7 batch file of up to 500 messages, a
        // collection Bundle of up to 100 persons' resources.
        end_to_end(&out, sub, ct, e2e_files, 1)?;
        let per = if sub == "ssmix2" { 500 } else { 100 };
        end_to_end(&out, sub, ct, e2e_files, per)?;
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

/// Joins files of one institution into one bulk plaintext: SS-MIX2 messages into an HL7 v2.5
/// batch file (FHS/BHS … BTS/FTS), FHIR Bundles into one collection Bundle of their entries.
fn bulk(sub: &str, parts: &[Vec<u8>]) -> Result<Vec<u8>> {
    if sub == "ssmix2" {
        let mut b = b"FHS|^~\\&|BENCH\rBHS|^~\\&|BENCH\r".to_vec();
        for m in parts {
            let keep = m.len()
                - m.iter()
                    .rev()
                    .take_while(|c| matches!(c, 0x1c | b'\r' | b'\n'))
                    .count();
            b.extend_from_slice(&m[..keep]);
            b.push(b'\r');
        }
        b.extend_from_slice(format!("BTS|{}\rFTS|1\r", parts.len()).as_bytes());
        return Ok(b);
    }
    let mut entries = Vec::new();
    for p in parts {
        let v: serde_json::Value = serde_json::from_slice(p)?;
        if let Some(e) = v.get("entry").and_then(|e| e.as_array()) {
            entries.extend(e.iter().cloned());
        }
    }
    Ok(serde_json::to_vec(&serde_json::json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": entries,
    }))?)
}

/// `vault intake run` on envelopes sealed from the first `files` files of `sub`, `per` files
/// of one institution to an envelope (see [`bulk`]): records per second per core of the whole
/// intake (open, check, parse, link, encrypt, commit) and its peak RSS.
fn end_to_end(
    tree: &Path,
    sub: &str,
    ct: envelope::ContentType,
    files: usize,
    per: usize,
) -> Result<()> {
    use envelope::{measure, seal, SealParams};
    let vault_bin = crate::sibling_binary("vault")?;
    let scratch = tree.with_file_name(format!("intake-e2e-{}-{}", sub, std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let inbox = scratch.join("inbox");
    let insts = scratch.join("institutions");
    std::fs::create_dir_all(&inbox)?;
    std::fs::create_dir_all(&insts)?;
    let rng = ring::rand::SystemRandom::new();
    keystore::generate_pair(
        keystore::PairKind::Encryption,
        "vault",
        &scratch.join("vault"),
        &rng,
    )?;
    let vault_pub = keystore::load_recipient_public(&scratch.join("vault.pub"))?;
    let mut signers = std::collections::BTreeMap::new();
    let all = testkit::files_under(&tree.join(sub));
    // (institution, plaintext) per envelope, files of one institution grouped `per` at a time.
    let mut by_inst: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
    for f in all.iter().take(files) {
        let rel = f.strip_prefix(tree.join(sub))?;
        let inst = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        by_inst.entry(inst).or_default().push(std::fs::read(f)?);
    }
    let mut plains: Vec<(String, Vec<u8>)> = Vec::new();
    for (inst, blobs) in by_inst {
        for group in blobs.chunks(per.max(1)) {
            let plain = if per <= 1 {
                group[0].clone()
            } else {
                bulk(sub, group)?
            };
            plains.push((inst.clone(), plain));
        }
    }
    let (mut records, mut bytes) = (0usize, 0usize);
    for (i, (inst, plain)) in plains.iter().enumerate() {
        if !signers.contains_key(inst) {
            let prefix = scratch.join(format!("key-{inst}"));
            keystore::generate_pair(keystore::PairKind::Signing, inst, &prefix, &rng)?;
            std::fs::copy(
                prefix.with_extension("pub"),
                insts.join(format!("{inst}.pub")),
            )?;
            signers.insert(
                inst.clone(),
                keystore::load_signing_key(&prefix.with_extension("key"))?,
            );
        }
        let signer = signers.get(inst).context("signer")?;
        let fmt = vault::intake::format_of(ct).context("format")?;
        records += clinical::parse(fmt, plain, None, &Limits::default())
            .map_err(|r| anyhow::anyhow!("{r}"))?
            .records
            .len();
        bytes += plain.len();
        let mut sealed = Vec::new();
        seal(
            SealParams {
                recipient: &vault_pub,
                signer,
                content_type: ct,
                segment_size: envelope::DEFAULT_SEGMENT_SIZE,
            },
            measure(&plain[..])?,
            &rng,
            &plain[..],
            &mut sealed,
        )?;
        std::fs::write(inbox.join(format!("{i:020}-x")), sealed)?;
    }
    let n = plains.len();
    let source_files = all.len().min(files);
    let store = scratch.join("store");
    let init = std::process::Command::new(&vault_bin)
        .args(["init", "--store"])
        .arg(&store)
        .output()?;
    if !init.status.success() {
        bail!("vault init: {}", String::from_utf8_lossy(&init.stderr));
    }
    if std::env::var_os("ENCLAVE_BENCH_KEEP").is_some() {
        let copy = scratch.join("inbox-copy");
        std::fs::create_dir_all(&copy)?;
        for f in testkit::files_under(&inbox) {
            if let Some(name) = f.file_name() {
                std::fs::copy(&f, copy.join(name))?;
            }
        }
    }
    let m = crate::measured_once(&[
        &vault_bin,
        &"intake",
        &"run",
        &"--once",
        &"--inbox",
        &inbox,
        &"--store",
        &store,
        &"--key",
        &scratch.join("vault.key"),
        &"--institutions",
        &insts,
    ])?;
    let cpu = m.user + m.sys;
    println!(
        "end to end ({sub}, {per} file(s) per envelope): vault intake run on {n} envelopes from {source_files} files ({:.0} MB, {records} records): {:.1} s wall, {cpu:.1} s CPU = {:.0} records/s per core, peak RSS {:.0} MiB",
        bytes as f64 / 1e6,
        m.wall,
        records as f64 / cpu.max(1e-9),
        m.maxrss_kib as f64 / 1024.0
    );
    // ENCLAVE_BENCH_KEEP=1 keeps the sealed envelopes (in a copy of the inbox) and the
    // store, to profile `vault intake run` on them by hand.
    if std::env::var_os("ENCLAVE_BENCH_KEEP").is_some() {
        eprintln!("intake: kept {}", scratch.display());
    } else {
        std::fs::remove_dir_all(&scratch)?;
    }
    Ok(())
}
