//! The real `diode` binaries on a real one-way link: two network namespaces joined by veth,
//! the receiver's every outgoing frame counted and dropped by nftables (R-GW-4, R-GW-5).
//!
//! Transfers 1 GiB (`DIODE_NETNS_BYTES` to change) in files of mixed sizes:
//! 1. at 0% loss — everything arrives, byte for byte;
//! 2. at 1% random loss (`numgen random mod 1000 < 10 drop`) — everything still arrives;
//! 3. with the receiver killed by SIGKILL mid-stream and restarted — once the receiver has
//!    settled (its stats say nothing is in flight), what it missed is in its gap report, and
//!    `diode resend` of exactly those ids completes the set;
//!
//! and after each, the reverse counters read 0: not one frame left the receiver host, and the
//! receiver process never tried to send. (While the receiver is killed, the receiving host's
//! kernel tries to answer datagrams to the closed port with ICMP; the output rule counts and
//! drops those, as the deployed rule set does.)
//!
//! Needs root (namespaces, nftables); without it the test prints why and passes vacuously.
//! CI runs as root, so there it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{root_test_unavailable, sha256_file, write_mixed_files, NetnsPair, TestFile};

const PORT: u16 = 7000;

fn diode() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diode"))
}

/// A child process that is killed if the test fails before it is stopped.
struct Guard(Child);

impl Guard {
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
    /// SIGKILL, then wait.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    fn wait_success(mut self) -> bool {
        self.0.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// On a timeout, what went wrong: the failures and the last counters the receiver logged.
fn diagnose(events: &Path) -> String {
    let text = fs::read_to_string(events).unwrap_or_default();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("object_failed"))
        .take(10)
        .collect();
    let stats = text
        .lines()
        .rev()
        .find(|l| l.contains("\"stats\""))
        .unwrap_or("");
    let gaps = text
        .lines()
        .rev()
        .find(|l| l.contains("\"gaps\""))
        .unwrap_or("");
    format!("failures: {failures:#?}\nlast stats: {stats}\nlast gaps: {gaps}")
}

struct Rig {
    pair: NetnsPair,
    dir: tempfile::TempDir,
    files: Vec<TestFile>,
}

impl Rig {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn receiver(&self, inbox: &str, events: &str) -> Guard {
        let child = self
            .pair
            .command(&self.pair.receiver_ns, env!("CARGO_BIN_EXE_diode"))
            .args([
                "recv",
                "--bind",
                &format!("{}:{PORT}", self.pair.receiver_ip),
            ])
            .arg("--inbox")
            .arg(self.path(inbox))
            .arg("--key-file")
            .arg(self.path("link.key"))
            .arg("--events")
            .arg(self.path(events))
            .args(["--stats-secs", "1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start receiver");
        Guard(child)
    }

    fn sender(&self, rate_mbit: u32) -> Guard {
        let child = self
            .pair
            .command(&self.pair.sender_ns, env!("CARGO_BIN_EXE_diode"))
            .args([
                "send",
                "--once",
                "--to",
                &format!("{}:{PORT}", self.pair.receiver_ip),
            ])
            .arg("--outbox")
            .arg(self.path("out"))
            .arg("--key-file")
            .arg(self.path("link.key"))
            .args(["--rate-mbit", &rate_mbit.to_string()])
            .arg("--events")
            .arg(self.path("send.jsonl"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start sender");
        Guard(child)
    }

    /// Puts every test file back into the outbox's incoming directory (they get new ids).
    fn refill(&self) {
        let sent = self.path("out/sent");
        for entry in fs::read_dir(&sent).expect("sent dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let (_, original) = diode_io::parse_entry_name(&name).expect("outbox name");
            fs::rename(entry.path(), self.path("out/incoming").join(original)).expect("refill");
        }
    }

    /// Nothing left the receiver host towards the sender, and the receiver process never
    /// tried to send. `icmp_allowed`: the receiver was down for a while, so the kernel may
    /// have tried to answer datagrams to the closed port; those must have been dropped.
    fn reverse_packets_are_zero(&self, when: &str, icmp_allowed: bool) {
        let r = self.pair.reverse_packets().expect("counters");
        println!("{when}: reverse direction: {r:?}");
        assert_eq!(r.left_the_host, 0, "{when}: a frame left the receiver host");
        assert_eq!(r.other_blocked, 0, "{when}: the receiver tried to send");
        if !icmp_allowed {
            assert_eq!(
                r.kernel_icmp_blocked, 0,
                "{when}: ICMP while the receiver was up"
            );
        }
    }
}

/// The receiver's `stats` events, oldest first.
fn stats_lines(events: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "stats")
        .collect()
}

/// Ids of completed objects in an event log.
fn completed(events: &Path) -> BTreeSet<u64> {
    let text = fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "object_complete")
        .filter_map(|v| v["id"].as_u64())
        .collect()
}

fn wait_for(what: &str, events: &Path, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}\n{}",
            diagnose(events)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every expected file is in the inbox with the right SHA-256, and nothing else is.
fn verify_inbox(inbox: &Path, files: &[TestFile]) -> Vec<String> {
    let expected: BTreeMap<&str, &TestFile> = files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut seen = BTreeSet::new();
    for entry in fs::read_dir(inbox).expect("inbox") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let (_, original) = diode_io::parse_entry_name(&name).expect("inbox name");
        let file = expected
            .get(original)
            .unwrap_or_else(|| panic!("unexpected file {name} in the inbox"));
        let sha = sha256_file(&entry.path()).expect("hash");
        assert_eq!(sha, file.sha256, "{name}: wrong bytes under a final name");
        seen.insert(original.to_owned());
    }
    files
        .iter()
        .filter(|f| !seen.contains(&f.name))
        .map(|f| f.name.clone())
        .collect()
}

fn transfer(rig: &Rig, label: &str, inbox: &str, rate_mbit: u32) {
    let events = format!("{inbox}.jsonl");
    let receiver = rig.receiver(inbox, &events);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(
        rig.sender(rate_mbit).wait_success(),
        "{label}: sender failed"
    );
    let n = rig.files.len();
    let log = rig.path(&events);
    wait_for(
        &format!("{label}: {n} objects"),
        &log,
        Duration::from_secs(60),
        || completed(&log).len() >= n,
    );
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = rig.files.iter().map(|f| f.size).sum();
    println!(
        "{label}: {n} objects, {bytes} bytes in {secs:.1} s ({:.2} Gbit/s including the sender's final repeats)",
        bytes as f64 * 8.0 / secs / 1e9
    );
    receiver.stop();
    let missing = verify_inbox(&rig.path(inbox), &rig.files);
    assert!(missing.is_empty(), "{label}: missing {missing:?}");
    rig.reverse_packets_are_zero(label, false);
}

#[test]
fn one_way_link_between_two_namespaces() {
    if let Some(why) = root_test_unavailable(&["ip", "nft"]) {
        println!("skipped: {why}");
        return;
    }
    let bytes: u64 = std::env::var("DIODE_NETNS_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    let pair = NetnsPair::create("dl").expect("namespaces");
    let dir = tempfile::tempdir().expect("tempdir");
    let incoming = dir.path().join("out/incoming");
    fs::create_dir_all(&incoming).expect("mkdir");
    let files = write_mixed_files(&incoming, bytes, 0xd10de).expect("test files");
    let rig = Rig { pair, dir, files };
    let out = diode()
        .args(["keygen", "--link", "test-link", "--out"])
        .arg(rig.path("link.key"))
        .output()
        .expect("keygen");
    assert!(out.status.success());

    // 1. No loss.
    transfer(&rig, "0% loss", "in-clean", 1000);

    // 2. 1% random loss on the receiver's side: FEC recovers all of it.
    rig.refill();
    rig.pair.set_loss(10).expect("loss rule");
    transfer(&rig, "1% loss", "in-lossy", 1000);
    rig.pair.set_loss(0).expect("loss rule");

    // 3. Receiver killed mid-stream and restarted; the gap report drives the re-send.
    rig.refill();
    let n = rig.files.len();
    let events = rig.path("in-restart.jsonl");
    let receiver = rig.receiver("in-restart", "in-restart.jsonl");
    std::thread::sleep(Duration::from_millis(300));
    let sender = rig.sender(500);
    wait_for(
        "a third of the objects",
        &events,
        Duration::from_secs(60),
        || completed(&events).len() >= n / 3,
    );
    receiver.kill();
    let delivered_before = completed(&events).len();
    std::thread::sleep(Duration::from_millis(500));
    let receiver = rig.receiver("in-restart", "in-restart.jsonl");
    assert!(sender.wait_success(), "sender failed");
    // In-flight objects time out (3 s idle) and join the gap report; the report is final
    // once a stats event written after the sender exited counts nothing in flight.
    let stats_before = stats_lines(&events).len();
    let report = rig.path("in-restart/.gap-report");
    wait_for(
        "the receiver to settle",
        &events,
        Duration::from_secs(60),
        || {
            let stats = stats_lines(&events);
            stats.len() > stats_before
                && stats.last().is_some_and(|s| s["in_flight"] == 0)
                && fs::read_to_string(&report).is_ok_and(|r| !r.trim().is_empty())
        },
    );
    let gaps: Vec<String> = fs::read_to_string(&report)
        .expect("report")
        .lines()
        .map(str::to_owned)
        .collect();
    let now_complete = completed(&events).len();
    println!(
        "restart: {delivered_before} objects before SIGKILL, {now_complete} after restart, gap report {gaps:?}"
    );
    assert!(
        now_complete < n,
        "the receiver's outage lost nothing: the test proves nothing"
    );
    let resend = diode()
        .args(["resend", "--outbox"])
        .arg(rig.path("out"))
        .args(["--ids", &gaps.join(",")])
        .output()
        .expect("resend");
    assert!(
        resend.status.success(),
        "{}",
        String::from_utf8_lossy(&resend.stderr)
    );
    assert!(rig.sender(1000).wait_success(), "sender failed");
    wait_for(
        "every object after the re-send",
        &events,
        Duration::from_secs(60),
        || completed(&events).len() >= n,
    );
    receiver.stop();
    let missing = verify_inbox(&rig.path("in-restart"), &rig.files);
    assert!(missing.is_empty(), "after re-send, missing {missing:?}");
    assert!(
        fs::read_to_string(&report)
            .expect("report")
            .trim()
            .is_empty(),
        "gap report not cleared after the re-send"
    );
    rig.reverse_packets_are_zero("restart", true);
}
