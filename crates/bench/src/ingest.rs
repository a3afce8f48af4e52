//! `enclave-bench ingest`: how fast ingress takes envelopes over QUIC + mutual TLS 1.3 on
//! loopback — large-envelope throughput (goal ≥ 1 Gbit/s) and small envelopes per second
//! (goal ≥ 2,000 of 10 KB), with ingress's peak RSS (issue #6).
//!
//! Envelopes are sealed before the clock starts (sealing is the institution's cost, measured
//! by `enclave-bench envelope`). Client and server share this machine's two cores, so the
//! figures are lower bounds for two machines. The baseline is `cp` of the same large
//! envelope into the same directory: what ingress does at least (receive and write the
//! bytes), without the network, TLS or hashing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use envelope::{ContentType, SealParams};
use time::OffsetDateTime;

const INSTITUTION: &str = "1310000001";

struct Ingress(Child);

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn setup(root: &Path) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::days(1);
    let rng = ring::rand::SystemRandom::new();
    let ca = pki::Ca::init(&root.join("ca"), "bench CA", now, 2)?;
    let server = ca.issue(
        "ingress",
        pki::Role::Server,
        &["ingress.bench".into()],
        now,
        later,
    )?;
    pki::write_issued(&root.join("tls"), "ingress", &server)?;
    let client = ca.issue(INSTITUTION, pki::Role::Client, &[], now, later)?;
    pki::write_issued(&root.join("tls"), INSTITUTION, &client)?;
    use keystore::PairKind;
    keystore::generate_pair(PairKind::Encryption, "vault", &root.join("vault"), &rng)?;
    keystore::generate_pair(PairKind::Signing, "ingress", &root.join("receipts"), &rng)?;
    keystore::generate_pair(PairKind::Signing, INSTITUTION, &root.join("inst"), &rng)?;
    fs::create_dir_all(root.join("registry"))?;
    fs::copy(
        root.join("inst.pub"),
        root.join(format!("registry/{INSTITUTION}.pub")),
    )?;
    Ok(())
}

fn start(root: &Path) -> Result<(Ingress, SocketAddr)> {
    let bin = crate::sibling_binary("ingress")?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--ca")
        .arg(root.join("ca/ca.crt.pem"))
        .arg("--crl")
        .arg(root.join("ca/crl.pem"))
        .arg("--cert")
        .arg(root.join("tls/ingress.crt.pem"))
        .arg("--key")
        .arg(root.join("tls/ingress.key.pem"))
        .arg("--receipt-key")
        .arg(root.join("receipts.key"))
        .arg("--institutions")
        .arg(root.join("registry"))
        .arg("--spool")
        .arg(root.join("spool"))
        .arg("--outbox")
        .arg(root.join("outbox"))
        .arg("--ledger")
        .arg(root.join("ledger.db"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ingress")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("ingress stdout")?).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .with_context(|| format!("ingress did not start: {line:?}"))?;
    Ok((Ingress(child), addr))
}

/// Seals `count` random plaintexts of `size` bytes into `dir`; returns (path, offer) pairs.
fn seal_many(
    root: &Path,
    dir: &Path,
    count: usize,
    size: u64,
    seed: u64,
) -> Result<Vec<(PathBuf, intake_proto::Offer)>> {
    fs::create_dir_all(dir)?;
    let rng = ring::rand::SystemRandom::new();
    let vault = keystore::load_recipient_public(&root.join("vault.pub"))?;
    let signer = keystore::load_signing_key(&root.join("inst.key"))?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let plain = dir.join(format!("p{i}"));
        crate::write_data_bytes(&plain, size, seed + i as u64)?;
        let env = dir.join(format!("e{i}.env"));
        let mut w = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&env)?);
        let sealed = envelope::seal_seekable(
            SealParams {
                recipient: &vault,
                signer: &signer,
                content_type: ContentType::Ssmix2,
                segment_size: envelope::DEFAULT_SEGMENT_SIZE,
            },
            &rng,
            std::io::BufReader::with_capacity(1 << 20, fs::File::open(&plain)?),
            &mut w,
        )?;
        drop(w);
        fs::remove_file(&plain)?;
        let sha = testkit::sha256_file(&env)?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(sha, &mut sha256)?;
        out.push((
            env,
            intake_proto::Offer {
                envelope_id: sealed.envelope_id(),
                size: sealed.sealed_size,
                sha256,
            },
        ));
    }
    Ok(out)
}

async fn push_all(
    root: &Path,
    addr: SocketAddr,
    items: Vec<(PathBuf, intake_proto::Offer)>,
    parallel: usize,
) -> Result<Duration> {
    let target = submit::Target {
        addr,
        server_name: "ingress.bench".into(),
        ca: root.join("ca/ca.crt.pem"),
        cert: root.join(format!("tls/{INSTITUTION}.crt.pem")),
        key: root.join(format!("tls/{INSTITUTION}.key.pem")),
    };
    let key = Arc::new(keystore::load_verifying_key(&root.join("receipts.pub"))?);
    let conn = Arc::new(
        submit::Connection::open(&target, submit::client::client_config(&target)?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (path, offer) in items {
        let permit = sem.clone().acquire_owned().await?;
        let (conn, key) = (conn.clone(), key.clone());
        set.spawn(async move {
            let _p = permit;
            conn.upload(&path, &offer, INSTITUTION, &key).await
        });
    }
    while let Some(r) = set.join_next().await {
        let receipt = r?.map_err(|e| anyhow::anyhow!("{e}"))?;
        if receipt.duplicate {
            bail!("unexpected duplicate");
        }
    }
    let took = started.elapsed();
    if let Ok(c) = Arc::try_unwrap(conn) {
        c.close().await;
    }
    Ok(took)
}

/// Runs the benchmark in `dir` (removed afterwards).
pub fn ingest_bench(dir: &Path, large_mib: u64, small_count: usize) -> Result<()> {
    let root = dir.join(format!("enclave-bench-ingest-{}", std::process::id()));
    if root.exists() {
        bail!("{} exists", root.display());
    }
    fs::create_dir_all(&root)?;
    let result = run(&root, large_mib, small_count);
    let _ = fs::remove_dir_all(&root);
    result
}

fn run(root: &Path, large_mib: u64, small_count: usize) -> Result<()> {
    setup(root)?;
    println!(
        "ingest (QUIC + mutual TLS 1.3 on loopback, scratch in {}):",
        root.display()
    );
    let large = seal_many(root, &root.join("large"), 1, large_mib << 20, 1)?;
    let small = seal_many(root, &root.join("small"), small_count, 10_000, 1000)?;
    let large_bytes = large[0].1.size;

    // Baseline: cp of the large envelope in the same directory.
    let copy = root.join("copy.env");
    let t = Instant::now();
    let status = Command::new("cp").arg(&large[0].0).arg(&copy).status()?;
    if !status.success() {
        bail!("cp failed");
    }
    let cp_s = t.elapsed().as_secs_f64();
    fs::remove_file(&copy)?;
    let gbit = |bytes: u64, s: f64| bytes as f64 * 8.0 / s / 1e9;

    let (ingress, addr) = start(root)?;
    let pid = ingress.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let large_s = rt.block_on(push_all(root, addr, large, 1))?.as_secs_f64();
    let small_s = rt.block_on(push_all(root, addr, small, 64))?.as_secs_f64();
    let rss = peak_rss_kib(pid);
    drop(ingress);

    let large_gbit = gbit(large_bytes, large_s);
    let cp_gbit = gbit(large_bytes, cp_s);
    let per_s = small_count as f64 / small_s;
    println!(
        "  large envelope {} MiB: {large_s:.2} s = {large_gbit:.2} Gbit/s (goal >= 1); baseline cp {cp_gbit:.2} Gbit/s; ratio {:.2}",
        large_bytes >> 20,
        large_gbit / cp_gbit
    );
    println!(
        "  {small_count} envelopes of 10 KB, 64 streams: {small_s:.2} s = {per_s:.0} envelopes/s (goal >= 2000)"
    );
    println!("  ingress peak RSS: {:.0} MiB", rss as f64 / 1024.0);
    Ok(())
}
