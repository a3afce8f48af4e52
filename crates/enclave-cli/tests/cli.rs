//! End-to-end tests of the `enclave` binary as a user runs it: key generation, sealing and
//! opening through files and pipes, and the promises of its `--help` — no plaintext under the
//! final name unless the envelope verified, distinct exit codes for rejected envelopes, and
//! refusal of badly protected secret keys.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn enclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    enclave()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run enclave")
}

fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "enclave {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic, non-repeating test data (a xorshift stream from a fixed seed).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Setup { dir };
        ok(
            s.path(),
            &[
                "keygen",
                "--kind",
                "encryption",
                "--owner",
                "vault",
                "--out",
                "vault",
            ],
        );
        ok(
            s.path(),
            &[
                "keygen",
                "--kind",
                "signing",
                "--owner",
                "1312345678",
                "--out",
                "inst",
            ],
        );
        s
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn seal(&self, input: &str, output: &str) {
        ok(
            self.path(),
            &[
                "seal",
                "--to",
                "vault.pub",
                "--sign-with",
                "inst.key",
                "--type",
                "ssmix2",
                "--segment-size",
                "4096",
                input,
                "-o",
                output,
            ],
        );
    }
    fn open(&self, input: &str, output: &str) -> Output {
        run(
            self.path(),
            &[
                "open",
                "--key",
                "vault.key",
                "--trust",
                "inst.pub",
                input,
                "-o",
                output,
            ],
        )
    }
    /// Names in the directory other than the ones the setup made.
    fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn seal_and_open_files_round_trip() {
    let s = Setup::new();
    let plain = data(300_000, 1);
    fs::write(s.file("records.hl7"), &plain).expect("write");
    s.seal("records.hl7", "records.env");
    let out = s.open("records.env", "back.hl7");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(s.file("back.hl7")).expect("read"), plain);
    let mode = fs::metadata(s.file("back.hl7"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "plaintext must not be readable by others");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from 1312345678"), "{stderr}");
}

#[test]
fn seal_and_open_through_pipes() {
    let s = Setup::new();
    let plain = data(150_000, 2);
    let mut child = enclave()
        .current_dir(s.path())
        .args([
            "seal",
            "--to",
            "vault.pub",
            "--sign-with",
            "inst.key",
            "--type",
            "csv",
            "-",
            "-o",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&plain)
        .expect("feed");
    let sealed = child.wait_with_output().expect("wait");
    assert!(sealed.status.success());

    let mut child = enclave()
        .current_dir(s.path())
        .args(["open", "--key", "vault.key", "--trust", ".", "-o", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&sealed.stdout)
        .expect("feed");
    let opened = child.wait_with_output().expect("wait");
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(opened.stdout, plain);
}

#[test]
fn tampered_or_truncated_envelope_exits_3_and_writes_nothing() {
    let s = Setup::new();
    fs::write(s.file("p"), data(50_000, 3)).expect("write");
    s.seal("p", "p.env");
    let sealed = fs::read(s.file("p.env")).expect("read");
    let before = s.leftovers();

    let mut flipped = sealed.clone();
    flipped[30_000] ^= 0x20;
    fs::write(s.file("flipped.env"), &flipped).expect("write");
    fs::write(s.file("cut.env"), &sealed[..sealed.len() - 4096 - 16]).expect("write");
    for (name, needle) in [
        ("flipped.env", "failed authentication"),
        ("cut.env", "truncated envelope"),
    ] {
        let out = s.open(name, "out.bin");
        assert_eq!(out.status.code(), Some(3), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!s.file("out.bin").exists(), "{name}: output written");
    }
    let mut expected = before;
    expected.extend(["cut.env".to_string(), "flipped.env".to_string()]);
    expected.sort();
    assert_eq!(s.leftovers(), expected, "temporary files left behind");
}

#[test]
fn wrong_recipient_and_untrusted_sender_are_named() {
    let s = Setup::new();
    ok(
        s.path(),
        &[
            "keygen",
            "--kind",
            "encryption",
            "--owner",
            "researcher-1",
            "--out",
            "r1",
        ],
    );
    ok(
        s.path(),
        &[
            "keygen",
            "--kind",
            "signing",
            "--owner",
            "2712345678",
            "--out",
            "other",
        ],
    );
    fs::write(s.file("p"), b"x").expect("write");
    s.seal("p", "p.env");

    let out = run(
        s.path(),
        &[
            "open", "--key", "r1.key", "--trust", "inst.pub", "p.env", "-o", "o",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is sealed to key"));

    let out = run(
        s.path(),
        &[
            "open",
            "--key",
            "vault.key",
            "--trust",
            "other.pub",
            "p.env",
            "-o",
            "o",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trusted sender key"));
    assert!(!s.file("o").exists());
}

#[test]
fn open_secret_key_and_existing_outputs_are_refused() {
    let s = Setup::new();
    fs::set_permissions(s.file("inst.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(s.file("p"), b"x").expect("write");
    let out = run(
        s.path(),
        &[
            "seal",
            "--to",
            "vault.pub",
            "--sign-with",
            "inst.key",
            "--type",
            "csv",
            "p",
            "-o",
            "p.env",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    let out = run(
        s.path(),
        &[
            "keygen", "--kind", "signing", "--owner", "x", "--out", "inst",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));

    fs::set_permissions(s.file("inst.key"), fs::Permissions::from_mode(0o600)).expect("chmod");
    s.seal("p", "p.env");
    let out = run(
        s.path(),
        &[
            "seal",
            "--to",
            "vault.pub",
            "--sign-with",
            "inst.key",
            "--type",
            "csv",
            "p",
            "-o",
            "p.env",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn inspect_shows_header_and_checks_signature_without_a_secret_key() {
    let s = Setup::new();
    fs::write(s.file("p"), data(10_000, 4)).expect("write");
    s.seal("p", "p.env");
    let out = ok(s.path(), &["inspect", "p.env", "--trust", "inst.pub"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sender:           1312345678"), "{text}");
    assert!(text.contains("plaintext-size:   10000"), "{text}");
    assert!(text.contains("signature:        valid"), "{text}");
    let out = run(s.path(), &["inspect", "vault.pub"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sealed envelope"));
}

#[test]
fn help_says_what_it_refuses() {
    let out = enclave().arg("--help").output().expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("It refuses"), "{text}");
    for sub in ["keygen", "seal", "open", "inspect"] {
        let out = enclave().args([sub, "--help"]).output().expect("help");
        assert!(out.status.success(), "{sub} --help");
    }
}

/// `enclave conform` on a tree where nothing can be read: every check unknown, exit 0 (no
/// deviation); with --strict exit 3; a deviation (an IP forwarding host) exit 3 naming it.
#[test]
fn conform_reports_unknown_strictly_and_deviations_with_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("host");
    fs::create_dir_all(&root).expect("dir");
    let root_s = root.to_str().expect("utf-8");
    let out = ok(
        dir.path(),
        &["conform", "--role", "ingress", "--root", root_s, "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = report["findings"].as_array().expect("findings");
    assert!(findings.len() > 20);
    assert!(
        findings.iter().all(|f| f["status"] == "unknown"),
        "{report}"
    );
    let out = run(
        dir.path(),
        &["conform", "--role", "ingress", "--root", root_s, "--strict"],
    );
    assert_eq!(out.status.code(), Some(3));
    let out = run(
        dir.path(),
        &["conform", "--role", "ingress", "--root", "no-such-host"],
    );
    assert_eq!(out.status.code(), Some(1), "a missing --root is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-host: no such folder"));
    let forwarding = root.join("proc/sys/net/ipv4");
    fs::create_dir_all(&forwarding).expect("dir");
    fs::write(forwarding.join("ip_forward"), "1\n").expect("write");
    let out = run(
        dir.path(),
        &["conform", "--role", "vault", "--root", root_s],
    );
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("DEVIATION")
            && l.contains("sysctl.net.ipv4.ip_forward")
            && l.contains("R-GW-6")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 deviation(s)"));
}
