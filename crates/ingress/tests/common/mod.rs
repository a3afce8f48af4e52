//! Shared fixture of the ingress loopback tests: an operator CA, ingress's certificate and
//! receipt key, the vault's key, registered institutions, and a running `ingress serve`.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keystore::PairKind;
use time::OffsetDateTime;

pub const INSTITUTIONS: [&str; 3] = ["1310000001", "2710000002", "0110000003"];

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: pki::Ca,
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let rng = ring::rand::SystemRandom::new();
        let ca = pki::Ca::init(&p.join("ca"), "test operator CA", now(), 30).unwrap();
        let server = ca
            .issue(
                "ingress",
                pki::Role::Server,
                &["ingress.test".into()],
                now(),
                now() + time::Duration::days(2),
            )
            .unwrap();
        pki::write_issued(&p.join("tls"), "ingress", &server).unwrap();
        keystore::generate_pair(PairKind::Encryption, "vault", &p.join("vault"), &rng).unwrap();
        keystore::generate_pair(PairKind::Signing, "ingress", &p.join("receipts"), &rng).unwrap();
        std::fs::create_dir_all(p.join("registry")).unwrap();
        for inst in INSTITUTIONS {
            keystore::generate_pair(
                PairKind::Signing,
                inst,
                &p.join(format!("sign-{inst}")),
                &rng,
            )
            .unwrap();
            std::fs::copy(
                p.join(format!("sign-{inst}.pub")),
                p.join("registry").join(format!("{inst}.pub")),
            )
            .unwrap();
            let c = ca
                .issue(
                    inst,
                    pki::Role::Client,
                    &[],
                    now(),
                    now() + time::Duration::days(2),
                )
                .unwrap();
            pki::write_issued(&p.join("clients"), inst, &c).unwrap();
        }
        Self { dir, ca }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn outbox_incoming(&self) -> PathBuf {
        self.path().join("outbox/incoming")
    }

    /// The arguments of `ingress serve` on `listen` for this fixture's files.
    pub fn serve_args(&self, listen: &str) -> Vec<std::ffi::OsString> {
        let p = self.path();
        let mut args: Vec<std::ffi::OsString> =
            vec!["serve".into(), "--listen".into(), listen.into()];
        for (flag, file) in [
            ("--ca", "ca/ca.crt.pem"),
            ("--crl", "ca/crl.pem"),
            ("--cert", "tls/ingress.crt.pem"),
            ("--key", "tls/ingress.key.pem"),
            ("--receipt-key", "receipts.key"),
            ("--institutions", "registry"),
            ("--spool", "spool"),
            ("--outbox", "outbox"),
            ("--ledger", "ledger.db"),
        ] {
            args.push(flag.into());
            args.push(p.join(file).into());
        }
        args
    }

    /// Starts `ingress serve` on `listen` (port 0 for any); returns it and its address.
    pub fn start(&self, listen: &str) -> (Running, SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ingress"))
            .args(self.serve_args(listen))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("ingress did not start: {line:?}"));
        (Running(Some(child)), addr)
    }

    pub fn target(&self, addr: SocketAddr, inst: &str, client_dir: &str) -> submit::Target {
        submit::Target {
            addr,
            server_name: "ingress.test".into(),
            ca: self.path().join("ca/ca.crt.pem"),
            cert: self.path().join(format!("{client_dir}/{inst}.crt.pem")),
            key: self.path().join(format!("{client_dir}/{inst}.key.pem")),
        }
    }

    pub fn job(&self, addr: SocketAddr, inst: &str, signer: &str, state: &str) -> Arc<submit::Job> {
        let p = self.path();
        Arc::new(submit::Job {
            target: self.target(addr, inst, "clients"),
            vault: keystore::load_recipient_public(&p.join("vault.pub")).unwrap(),
            signer: keystore::load_signing_key(&p.join(format!("sign-{signer}.key"))).unwrap(),
            ingress_key: self.receipt_key(),
            content_type: envelope::ContentType::Ssmix2,
            state: p.join(state),
            parallel: 16,
            max_attempts: 12,
            backoff: Duration::from_millis(200),
        })
    }

    pub fn receipt_key(&self) -> envelope::VerifyingKey {
        keystore::load_verifying_key(&self.path().join("receipts.pub")).unwrap()
    }

    /// Every exchange in the ledger, as `ingress ledger` prints it.
    pub fn ledger(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_ingress"))
            .args(["ledger", "--ledger"])
            .arg(self.path().join("ledger.db"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A running ingress; killed if the test panics, so no server outlives its test.
pub struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Stops ingress the way systemd does (SIGTERM) and waits for it.
pub fn stop(mut r: Running) {
    if let Some(mut child) = r.0.take() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
}

/// Kills ingress with SIGKILL (a crash) and waits for it.
pub fn kill9(r: Running) {
    drop(r);
}

/// Deterministic file contents (xorshift), `size` bytes, written in 1 MiB pieces.
pub fn write_file(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(left as usize);
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    hex::encode(ctx.finish().as_ref())
}

/// Checks the outbox against the receipts: every receipt verifies, every envelope in the
/// outbox has exactly one receipt whose hash and size it matches, and the plaintext hashes
/// in the envelope headers are exactly the sources' hashes. Returns the envelope count.
pub fn check_outbox(fx: &Fixture, states: &[PathBuf], source_hashes: &[String]) -> usize {
    let key = fx.receipt_key();
    let mut receipts = std::collections::HashMap::new();
    for state in states {
        for e in std::fs::read_dir(state.join("receipts")).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let signed: intake_proto::SignedReceipt = serde_json::from_str(&text).unwrap();
            let body = signed.verify(&key).expect("receipt verifies");
            let file = format!("{}_{}.env", body.institution, body.envelope_id);
            assert!(
                receipts.insert(file, body).is_none(),
                "two receipts for one envelope"
            );
        }
    }
    let mut plain = Vec::new();
    let mut count = 0;
    for e in std::fs::read_dir(fx.outbox_incoming()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "staged file left behind: {name}");
        let body = receipts
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no receipt"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            body.size,
            "{name} truncated"
        );
        assert_eq!(
            sha256_file(&path),
            body.sha256,
            "{name} differs from its receipt"
        );
        let h =
            envelope::SignedHeader::read_from(&mut std::fs::File::open(&path).unwrap()).unwrap();
        plain.push(hex::encode(h.header().plaintext_sha256));
        count += 1;
    }
    assert_eq!(
        count,
        receipts.len(),
        "receipts without an envelope in the outbox"
    );
    let mut want = source_hashes.to_vec();
    want.sort();
    plain.sort();
    assert_eq!(
        plain, want,
        "outbox does not hold exactly one envelope per source file"
    );
    let partial = fx.path().join("spool/partial");
    let left: usize = std::fs::read_dir(&partial)
        .map(|d| {
            d.map(|i| std::fs::read_dir(i.unwrap().path()).unwrap().count())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "partial uploads left in the spool");
    count
}
