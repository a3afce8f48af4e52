//! `enclave-bench intake`: the vault's content check and linking on a synthetic population
//! (issue #7): records per second per core of the strict parsers for each format, beside a
//! baseline of SHA-256 over the same bytes in the same run (every received file is hashed
//! anyway, so the ratio says what the parse costs on top), then read + parse + link of the
//! whole tree and the linking's pairwise recall and precision against the generator's truth;
//! `vault intake run` end to end on one-file and bulk envelopes; with `--whole-store`, the
//! whole tree through intake into one store, scored from the store's own link map.

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
pub fn intake_bench(dir: &Path, persons: u64, e2e_files: usize, whole: bool) -> Result<()> {
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
                layout: synth::Layout::Tree,
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
    println!("linking vs truth: {}", describe(&s));
    if whole {
        whole_store(&out)?;
    }
    Ok(())
}

/// A linking score as one line: counts, then pairwise recall and precision.
fn describe(s: &linkage::eval::Score) -> String {
    format!(
        "{} local ids ({} unseen), {} true pairs, {} found, {} correct: recall {:.5}, precision {:.5}",
        s.local_ids,
        s.unseen,
        s.true_pairs,
        s.found_pairs,
        s.correct_pairs,
        s.recall(),
        s.precision()
    )
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

/// Seals plaintexts to a fresh vault key as registered institutions, into an inbox, the way
/// the ingress link would deliver them.
struct Sealer {
    scratch: std::path::PathBuf,
    inbox: std::path::PathBuf,
    insts: std::path::PathBuf,
    rng: ring::rand::SystemRandom,
    vault_pub: envelope::RecipientPublicKey,
    signers: std::collections::BTreeMap<String, envelope::SigningKey>,
    next: usize,
    records: usize,
    bytes: usize,
}

impl Sealer {
    fn new(scratch: &Path) -> Result<Sealer> {
        if scratch.exists() {
            std::fs::remove_dir_all(scratch)?;
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
        Ok(Sealer {
            scratch: scratch.to_path_buf(),
            inbox,
            insts,
            rng,
            vault_pub,
            signers: Default::default(),
            next: 0,
            records: 0,
            bytes: 0,
        })
    }

    /// Parses `plain` (to count its records), seals it as `inst` and drops it in the inbox.
    fn seal(&mut self, inst: &str, ct: envelope::ContentType, plain: &[u8]) -> Result<()> {
        use envelope::{measure, seal, SealParams};
        if !self.signers.contains_key(inst) {
            let prefix = self.scratch.join(format!("key-{inst}"));
            keystore::generate_pair(keystore::PairKind::Signing, inst, &prefix, &self.rng)?;
            std::fs::copy(
                prefix.with_extension("pub"),
                self.insts.join(format!("{inst}.pub")),
            )?;
            self.signers.insert(
                inst.to_owned(),
                keystore::load_signing_key(&prefix.with_extension("key"))?,
            );
        }
        let signer = self.signers.get(inst).context("signer")?;
        let fmt = vault::intake::format_of(ct).context("format")?;
        self.records += clinical::parse(fmt, plain, None, &Limits::default())
            .map_err(|r| anyhow::anyhow!("{r}"))?
            .records
            .len();
        self.bytes += plain.len();
        let mut sealed = Vec::new();
        seal(
            SealParams {
                recipient: &self.vault_pub,
                signer,
                content_type: ct,
                segment_size: envelope::DEFAULT_SEGMENT_SIZE,
            },
            measure(plain)?,
            &self.rng,
            plain,
            &mut sealed,
        )?;
        std::fs::write(self.inbox.join(format!("{:020}-x", self.next)), sealed)?;
        self.next += 1;
        Ok(())
    }

    /// `vault init`, then `vault intake run --once [--batch N]` on the inbox, measured.
    fn intake(&self, vault_bin: &Path, batch: Option<usize>) -> Result<crate::Measurement> {
        let store = self.scratch.join("store");
        let init = std::process::Command::new(vault_bin)
            .args(["init", "--store"])
            .arg(&store)
            .output()?;
        if !init.status.success() {
            bail!("vault init: {}", String::from_utf8_lossy(&init.stderr));
        }
        let batch = batch.map(|b| b.to_string());
        let key = self.scratch.join("vault.key");
        let batch_args: Vec<&dyn AsRef<std::ffi::OsStr>> = match &batch {
            Some(b) => vec![&"--batch", b],
            None => Vec::new(),
        };
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&vault_bin, &"intake", &"run", &"--once"];
        args.extend(batch_args);
        args.extend([
            &"--inbox" as &dyn AsRef<std::ffi::OsStr>,
            &self.inbox,
            &"--store",
            &store,
            &"--key",
            &key,
            &"--institutions",
            &self.insts,
        ]);
        crate::measured_once(&args)
    }
}

/// The institution a file of the synthetic tree belongs to: its first folder under `sub`,
/// or for a file directly under `sub` (the checkup packages, named `CODE_DATE_SEQ.zip`) the
/// code its name starts with.
fn institution_of(tree: &Path, sub: &str, f: &Path) -> Result<String> {
    let rel = f.strip_prefix(tree.join(sub))?;
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .unwrap_or_default();
    if rel.components().count() > 1 {
        return Ok(first);
    }
    Ok(first.split('_').next().unwrap_or_default().to_owned())
}

/// Seals the files of `sub` (all, or the first `limit`) `per` files of one institution to an
/// envelope (see [`bulk`]).
fn seal_sub(
    sealer: &mut Sealer,
    tree: &Path,
    sub: &str,
    ct: envelope::ContentType,
    limit: usize,
    per: usize,
) -> Result<usize> {
    let all = testkit::files_under(&tree.join(sub));
    let mut by_inst: std::collections::BTreeMap<String, Vec<&std::path::PathBuf>> =
        Default::default();
    for f in all.iter().take(limit) {
        by_inst
            .entry(institution_of(tree, sub, f)?)
            .or_default()
            .push(f);
    }
    for (inst, files) in by_inst {
        for group in files.chunks(per.max(1)) {
            let blobs: Vec<Vec<u8>> = group
                .iter()
                .map(std::fs::read)
                .collect::<std::io::Result<_>>()?;
            let plain = if per <= 1 {
                blobs.into_iter().next().unwrap_or_default()
            } else {
                bulk(sub, &blobs)?
            };
            sealer.seal(&inst, ct, &plain)?;
        }
    }
    Ok(all.len().min(limit))
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
    let vault_bin = crate::sibling_binary("vault")?;
    let scratch = tree.with_file_name(format!("intake-e2e-{}-{}", sub, std::process::id()));
    let mut sealer = Sealer::new(&scratch)?;
    let source_files = seal_sub(&mut sealer, tree, sub, ct, files, per)?;
    let (n, records, bytes) = (sealer.next, sealer.records, sealer.bytes);
    let inbox = sealer.inbox.clone();
    if std::env::var_os("ENCLAVE_BENCH_KEEP").is_some() {
        let copy = scratch.join("inbox-copy");
        std::fs::create_dir_all(&copy)?;
        for f in testkit::files_under(&inbox) {
            if let Some(name) = f.file_name() {
                std::fs::copy(&f, copy.join(name))?;
            }
        }
    }
    let m = sealer.intake(&vault_bin, None)?;
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

/// The whole synthetic tree through one `vault intake run` into one store (issue #7: "all
/// records stored, linking recall and precision against the generator's truth"): every
/// format, SS-MIX2 as HL7 batch files of 500 messages, FHIR as Bundles of 100 persons, claims
/// and checkup packages one file per envelope; then the store is read back, its record count
/// compared with what the parsers take from the same files, and the store's own link map
/// scored against `truth/links.csv`.
pub fn whole_store(out: &Path) -> Result<()> {
    use envelope::ContentType as Ct;
    let vault_bin = crate::sibling_binary("vault")?;
    let scratch = out.with_file_name(format!("intake-store-{}", std::process::id()));
    let mut sealer = Sealer::new(&scratch)?;
    let t = Instant::now();
    let mut files = 0;
    for (sub, ct, per) in [
        ("ssmix2", Ct::Ssmix2, 500),
        ("fhir", Ct::FhirJp, 100),
        ("claims", Ct::Uke, 1),
        ("cda", Ct::CdaTokutei, 1),
    ] {
        files += seal_sub(&mut sealer, out, sub, ct, usize::MAX, per)?;
        eprintln!(
            "intake: sealed {sub}: {} envelopes so far ({:.0} s)",
            sealer.next,
            t.elapsed().as_secs_f64()
        );
    }
    let m = sealer.intake(&vault_bin, Some(100))?;
    let store_dir = scratch.join("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, linker) = rt.block_on(async {
        let master = keystore::load_link_key(&store_dir.join("keys/master.key"))?;
        let st = vault_store::Store::open_reader(
            &store_dir,
            vault_store::MasterKey::new(*master.key)?,
            &vault_store::Database::Sqlite,
        )
        .await?;
        let status = st.status().await?;
        let link = keystore::load_link_key(&store_dir.join("keys/link.key"))?;
        let linker = vault::intake::linker_from(&st, LinkKey::new(*link.key)).await?;
        anyhow::Ok((status, linker))
    })?;
    let truth = read_truth(&std::fs::read_to_string(out.join("truth/links.csv"))?)
        .map_err(anyhow::Error::msg)?;
    let s = score(&linker, &truth);
    let cpu = m.user + m.sys;
    println!(
        "whole tree through the store: {files} files in {} envelopes ({:.0} MB, {} records parsed): vault intake run {:.1} s wall, {cpu:.1} s CPU = {:.0} records/s per core, peak RSS {:.0} MiB",
        sealer.next,
        sealer.bytes as f64 / 1e6,
        sealer.records,
        m.wall,
        sealer.records as f64 / cpu.max(1e-9),
        m.maxrss_kib as f64 / 1024.0
    );
    println!(
        "store: {} batches, {} records stored ({} parsed), {} quarantined, {} persons",
        status.batches,
        status.records,
        sealer.records,
        status.quarantine.len(),
        status.persons
    );
    println!("store's link map vs truth: {}", describe(&s));
    if status.records as usize != sealer.records || !status.quarantine.is_empty() {
        bail!("the store does not hold every record the parsers took");
    }
    if std::env::var_os("ENCLAVE_BENCH_KEEP").is_none() {
        std::fs::remove_dir_all(&scratch)?;
    }
    Ok(())
}
