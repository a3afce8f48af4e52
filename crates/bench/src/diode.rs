//! `enclave-bench diode`: the one-way link between two network namespaces joined by veth,
//! as in the integration test, measured: goodput (payload bits per second, first object
//! started to last object complete, from the receiver's own event log), delivery, CPU seconds
//! per GiB on each side, and the receiver's peak RSS — at 0% loss, 1% random loss, and bursts
//! of consecutive losses, plus one large object for the memory bound.
//!
//! Both ends share this machine's two cores, so every figure is a lower bound for two
//! machines. Printed beside the same run's baseline (`cp` of the same files) and the
//! reference diode's 0.7 Gbit/s from issue #5.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{root_test_unavailable, write_mixed_files, NetnsPair};

const REFERENCE_GBIT: f64 = 0.7;
const PORT: u16 = 7100;

/// Pacing of the large-object run: one block lost beyond repair fails the whole object, so
/// it runs where the mixed set loses nothing.
const BIG_RATE_MBIT: u32 = 2000;

#[derive(Clone, Copy, Debug)]
enum Loss {
    None,
    Random(u32),
    Burst { burst: u32, every: u32 },
}

impl Loss {
    fn label(self) -> String {
        match self {
            Loss::None => "0% loss".into(),
            Loss::Random(p) => format!("{:.1}% random loss", f64::from(p) / 10.0),
            Loss::Burst { burst, every } => format!("bursts of {burst} per {every}"),
        }
    }
    fn apply(self, pair: &NetnsPair) -> Result<()> {
        match self {
            Loss::None => pair.set_loss(0),
            Loss::Random(p) => pair.set_loss(p),
            Loss::Burst { burst, every } => pair.set_burst_loss(burst, every),
        }
        .map_err(anyhow::Error::msg)
    }
}

struct RunResult {
    first_failure: Option<String>,
    /// The receiver's last counters, as a line for the table's reader.
    counters: Option<String>,
    goodput_gbit: f64,
    delivered: usize,
    failed: usize,
    sender_cpu: f64,
    receiver_cpu: f64,
    receiver_rss_kib: u64,
}

/// CPU seconds (user + system) and peak RSS of a running process, from /proc.
fn proc_usage(pid: u32) -> Result<(f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(((utime + stime) / ticks, hwm))
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct Bench<'a> {
    pair: &'a NetnsPair,
    diode: PathBuf,
    me: PathBuf,
    dir: PathBuf,
    key: PathBuf,
}

impl Bench<'_> {
    /// Moves every sent file back into `incoming/` so the next run sends them again.
    fn refill(&self, outbox: &Path) -> Result<()> {
        let sent = outbox.join("sent");
        if !sent.exists() {
            return Ok(());
        }
        for entry in fs::read_dir(&sent)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((_, original)) = diode_io::parse_entry_name(&name) {
                fs::rename(entry.path(), outbox.join("incoming").join(original))?;
            }
        }
        Ok(())
    }

    fn run(
        &self,
        outbox: &Path,
        inbox: &Path,
        expected: usize,
        rate_mbit: u32,
        loss: Loss,
        mtu: u32,
    ) -> Result<RunResult> {
        self.refill(outbox)?;
        self.pair.set_mtu(mtu).map_err(anyhow::Error::msg)?;
        if inbox.exists() {
            fs::remove_dir_all(inbox)?;
        }
        let log = self.dir.join("bench-recv.jsonl");
        let _ = fs::remove_file(&log);
        loss.apply(self.pair)?;
        let mut receiver = self
            .pair
            .command(&self.pair.receiver_ns, &self.diode.to_string_lossy())
            .args([
                "recv",
                "--bind",
                &format!("{}:{PORT}", self.pair.receiver_ip),
            ])
            .arg("--inbox")
            .arg(inbox)
            .arg("--key-file")
            .arg(&self.key)
            .arg("--events")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the receiver")?;
        std::thread::sleep(Duration::from_millis(300));
        let out = self
            .pair
            .command(&self.pair.sender_ns, &self.me.to_string_lossy())
            .arg("measure")
            .arg("--")
            .arg(&self.diode)
            .args([
                "send",
                "--once",
                "--to",
                &format!("{}:{PORT}", self.pair.receiver_ip),
            ])
            .arg("--outbox")
            .arg(outbox)
            .arg("--key-file")
            .arg(&self.key)
            .args(["--rate-mbit", &rate_mbit.to_string()])
            .args(["--mtu", &mtu.to_string()])
            .stderr(Stdio::null())
            .output()
            .context("running the sender")?;
        // Whatever is still in flight finishes or times out (3 s idle) into a failure; what
        // is neither by then is counted as not delivered.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ev = events(&log);
            let done = ev
                .iter()
                .filter(|e| e["event"] == "object_complete")
                .count();
            let failed = ev.iter().filter(|e| e["event"] == "object_failed").count();
            if done >= expected || Instant::now() > deadline || (done + failed >= expected) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (receiver_cpu, receiver_rss_kib) = proc_usage(receiver.id()).unwrap_or((0.0, 0));
        let _ = Command::new("kill").arg(receiver.id().to_string()).status();
        let _ = receiver.wait();
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<f64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let sender_cpu = match fields[..] {
            [_, user, sys, _] => user + sys,
            _ => bail!(
                "sender measurement failed: {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        let ev = events(&log);
        let started = ev
            .iter()
            .filter(|e| e["event"] == "object_started")
            .filter_map(|e| e["ts_ms"].as_u64())
            .min()
            .unwrap_or(0);
        let complete: Vec<&serde_json::Value> = ev
            .iter()
            .filter(|e| e["event"] == "object_complete")
            .collect();
        let finished = complete
            .iter()
            .filter_map(|e| e["ts_ms"].as_u64())
            .max()
            .unwrap_or(started);
        let bytes: u64 = complete.iter().filter_map(|e| e["size"].as_u64()).sum();
        let secs = (finished.saturating_sub(started)) as f64 / 1000.0;
        let first_failure = ev
            .iter()
            .find(|e| e["event"] == "object_failed")
            .map(|e| e["reason"].to_string());
        let counters = ev.iter().rfind(|e| e["event"] == "stats").map(|e| {
            format!(
                "datagrams lost {} of {}; blocks recovered {} of {} ({} from the parity shard); \
                 socket loop waited {} ms for the writer",
                e["datagrams_lost"],
                e["datagrams"],
                e["blocks_recovered"],
                e["blocks"],
                e["blocks_by_parity"],
                e["waited_for_writer_ms"]
            )
        });
        Ok(RunResult {
            first_failure,
            counters,
            goodput_gbit: if secs > 0.0 {
                bytes as f64 * 8.0 / secs / 1e9
            } else {
                0.0
            },
            delivered: complete.len(),
            failed: ev.iter().filter(|e| e["event"] == "object_failed").count(),
            sender_cpu,
            receiver_cpu,
            receiver_rss_kib,
        })
    }
}

pub fn diode_bench(
    size_mib: u64,
    big_gib: u64,
    scratch: &Path,
    big_dir: &Path,
    only: &[String],
) -> Result<()> {
    let scenarios = if only.is_empty() {
        full_table()
    } else {
        only.iter()
            .map(|s| parse_scenario(s))
            .collect::<Result<Vec<_>>>()?
    };
    if let Some(why) = root_test_unavailable(&["ip", "nft"]) {
        println!("== diode: skipped: {why}");
        return Ok(());
    }
    let me = std::env::current_exe()?;
    let diode = me.with_file_name("diode");
    if !diode.exists() {
        bail!("{} not found; build the workspace first", diode.display());
    }
    let pair = NetnsPair::create("db").map_err(anyhow::Error::msg)?;
    let dir = scratch.join(format!("enclave-bench-diode-{}", std::process::id()));
    fs::create_dir_all(dir.join("out/incoming"))?;
    let result = diode_bench_in(
        &pair, &diode, &me, &dir, size_mib, big_gib, big_dir, &scenarios,
    );
    let _ = fs::remove_dir_all(&dir);
    result
}

/// The bursts every table runs: 30 consecutive datagrams lost in every 10 000.
const BURSTS: Loss = Loss::Burst {
    burst: 30,
    every: 10_000,
};

/// Ethernet's 1500-byte MTU first (the reference diode's figures are for it), then the same
/// link with 9000-byte jumbo frames: a sixth as many datagrams for the same bytes.
fn full_table() -> Vec<(Loss, u32, u32)> {
    vec![
        (Loss::None, 2000, 1500),
        (Loss::None, 3000, 1500),
        (Loss::None, 4000, 1500),
        (Loss::Random(10), 1000, 1500),
        (Loss::Random(10), 2000, 1500),
        (BURSTS, 2000, 1500),
        (Loss::None, 4000, 9000),
        (Loss::None, 5000, 9000),
        (Loss::Random(10), 3000, 9000),
        (Loss::Random(10), 4000, 9000),
        (BURSTS, 4000, 9000),
    ]
}

/// `LOSS@MBIT/MTU`, as `--only` takes it.
fn parse_scenario(s: &str) -> Result<(Loss, u32, u32)> {
    let bad = || anyhow::anyhow!("scenario {s:?}: expected LOSS@MBIT/MTU, e.g. 1%@2000/1500");
    let (loss, rest) = s.trim().split_once('@').ok_or_else(bad)?;
    let (rate, mtu) = rest.split_once('/').ok_or_else(bad)?;
    let loss = if loss == "burst" {
        BURSTS
    } else {
        let pct: f64 = loss
            .strip_suffix('%')
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&pct) {
            bail!("scenario {s:?}: loss must be 0–100%");
        }
        match (pct * 10.0).round() as u32 {
            0 => Loss::None,
            per_mille => Loss::Random(per_mille),
        }
    };
    Ok((
        loss,
        rate.parse().map_err(|_| bad())?,
        mtu.parse().map_err(|_| bad())?,
    ))
}

#[allow(clippy::too_many_arguments)]
fn diode_bench_in(
    pair: &NetnsPair,
    diode: &Path,
    me: &Path,
    dir: &Path,
    size_mib: u64,
    big_gib: u64,
    big_dir: &Path,
    scenarios: &[(Loss, u32, u32)],
) -> Result<()> {
    let key = dir.join("link.key");
    let st = Command::new(diode)
        .args(["keygen", "--link", "bench", "--out"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("diode keygen failed");
    }
    let outbox = dir.join("out");
    let files = write_mixed_files(&outbox.join("incoming"), size_mib << 20, 0xbe7c)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let gib = total as f64 / f64::from(1u32 << 30);

    // Baseline in the same run: copying the same files locally.
    let copy = dir.join("copy");
    let started = Instant::now();
    let st = Command::new("cp")
        .arg("-r")
        .arg(outbox.join("incoming"))
        .arg(&copy)
        .status()?;
    let cp_secs = started.elapsed().as_secs_f64();
    fs::remove_dir_all(&copy)?;
    if !st.success() {
        bail!("cp failed");
    }
    let cp_gbit = total as f64 * 8.0 / cp_secs / 1e9;

    let bench = Bench {
        pair,
        diode: diode.to_owned(),
        me: me.to_owned(),
        dir: dir.to_owned(),
        key,
    };
    println!(
        "== diode: one-way link between two network namespaces (veth, receiver buffer capped by rmem_max {} KiB) ==",
        fs::read_to_string("/proc/sys/net/core/rmem_max").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0) / 1024
    );
    println!(
        "{gib:.2} GiB in {} files of mixed sizes; sender and receiver share this machine's cores",
        files.len()
    );
    println!("baseline: cp of the same files {cp_gbit:.2} Gbit/s; reference diode (issue #5) {REFERENCE_GBIT:.2} Gbit/s");
    println!(
        "{:<24} {:>5} {:>6} {:>9} {:>8} {:>11} {:>7} {:>11} {:>11} {:>9}",
        "scenario",
        "MTU",
        "Mbit/s",
        "goodput",
        "x ref",
        "delivered",
        "failed",
        "send CPU/GiB",
        "recv CPU/GiB",
        "recv RSS"
    );
    let inbox = dir.join("in");
    for &(loss, rate, mtu) in scenarios {
        let r = bench.run(&outbox, &inbox, files.len(), rate, loss, mtu)?;
        println!(
            "{:<24} {:>5} {:>6} {:>6.2} Gb {:>7.1}x {:>5}/{:<5} {:>7} {:>10.2} s {:>10.2} s {:>6.0} MiB",
            loss.label(),
            mtu,
            rate,
            r.goodput_gbit,
            r.goodput_gbit / REFERENCE_GBIT,
            r.delivered,
            files.len(),
            r.failed,
            r.sender_cpu / gib,
            r.receiver_cpu / gib,
            r.receiver_rss_kib as f64 / 1024.0
        );
        if let Some(c) = &r.counters {
            println!("    {c}");
        }
        if let Some(why) = &r.first_failure {
            println!("    first failure: {why}");
        }
    }

    if big_gib > 0 {
        // One large object (sparse on the sender's side, so only the receiver writes it) to
        // show that the receiver's memory does not grow with object size.
        let big_out = big_dir.join(format!("enclave-bench-big-{}", std::process::id()));
        fs::create_dir_all(big_out.join("out/incoming"))?;
        let big = big_out.join("out/incoming/big.bin");
        fs::File::create(&big)?.set_len(big_gib << 30)?;
        let r = bench.run(
            &big_out.join("out"),
            &big_out.join("in"),
            1,
            BIG_RATE_MBIT,
            Loss::None,
            1500,
        );
        let _ = fs::remove_dir_all(&big_out);
        let r = r?;
        println!(
            "{:<24} {:>5} {:>6} {:>6.2} Gb {:>7.1}x {:>5}/{:<5} {:>7} {:>10.2} s {:>10.2} s {:>6.0} MiB",
            format!("one {big_gib} GiB object"),
            1500,
            BIG_RATE_MBIT,
            r.goodput_gbit,
            r.goodput_gbit / REFERENCE_GBIT,
            r.delivered,
            1,
            r.failed,
            r.sender_cpu / big_gib as f64,
            r.receiver_cpu / big_gib as f64,
            r.receiver_rss_kib as f64 / 1024.0
        );
        if let Some(why) = &r.first_failure {
            println!("    failure: {why}");
        }
        println!("(goals: >= 3 Gbit/s at 0% loss, >= 2.5 Gbit/s at 1% loss with every object delivered, receiver RSS <= 256 MB for a 10 GiB object)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_bad_ones_say_what_is_expected() {
        assert!(matches!(
            parse_scenario("1%@2000/1500").expect("ok"),
            (Loss::Random(10), 2000, 1500)
        ));
        assert!(matches!(
            parse_scenario("0.5%@3000/9000").expect("ok"),
            (Loss::Random(5), 3000, 9000)
        ));
        assert!(matches!(
            parse_scenario("0%@4000/1500").expect("ok"),
            (Loss::None, 4000, 1500)
        ));
        assert!(matches!(
            parse_scenario("burst@3000/9000").expect("ok"),
            (Loss::Burst { .. }, 3000, 9000)
        ));
        for bad in [
            "1@2000/1500",
            "1%2000/1500",
            "1%@2000",
            "x%@1/1",
            "200%@1/1",
        ] {
            let e = parse_scenario(bad).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
