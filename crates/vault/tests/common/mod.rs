//! Test helpers shared by the vault's test files: an operator client that logs in with
//! real TOTP codes (each step used once, as the vault demands) and changes first passwords.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;
use std::path::Path;

use accounts::Totp;
use envelope::{measure, seal, ContentType, SealParams};
use keystore::PairKind;
use serde_json::Value;
use vault::admin::service::{Request, Response};
use vault::admin::socket;

/// Operators of one vault, as their authenticators and memories know them.
pub struct Operators {
    /// The operator socket.
    pub socket: PathBuf,
    /// Per user: TOTP secret and the last step used (a step can be used once).
    pub totp: HashMap<String, (Vec<u8>, Option<u64>)>,
    /// Per user: the current password.
    pub passwords: HashMap<String, String>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl Operators {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            totp: HashMap::new(),
            passwords: HashMap::new(),
        }
    }

    /// Takes the one-time credentials `bootstrap` or `user.add` printed.
    pub fn enrol(&mut self, first: &Value) {
        let user = first["user"].as_str().expect("user").to_owned();
        let secret = accounts::totp::base32_decode(first["totp_secret"].as_str().expect("secret"))
            .expect("base32");
        self.totp.insert(user.clone(), (secret, None));
        self.passwords.insert(
            user,
            first["first_password"]
                .as_str()
                .expect("password")
                .to_owned(),
        );
    }

    /// A code for `user` that has not been used: the next step in the ±1 window, waiting
    /// for the clock when the window is used up.
    pub fn code(&mut self, user: &str) -> String {
        let (secret, last) = self.totp.get_mut(user).expect("enrolled");
        let t = Totp::new(secret);
        loop {
            let c = t.counter(now());
            let step = last.map_or(c - 1, |l| (l + 1).max(c - 1));
            if step <= c + 1 {
                *last = Some(step);
                return format!("{:06}", t.code(step));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn call(&self, command: &str, token: Option<&str>, args: &[(&str, &str)]) -> Response {
        let req = Request {
            command: command.into(),
            token: token.map(str::to_owned),
            args: args
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        };
        socket::call(&self.socket, &req).expect("call")
    }

    pub fn login_with(&mut self, user: &str, password: &str) -> Response {
        let code = self.code(user);
        self.call(
            "login",
            None,
            &[("user", user), ("password", password), ("totp", &code)],
        )
    }

    /// Logs in (changing the first password when asked to) and returns the token.
    pub fn login(&mut self, user: &str) -> String {
        let pw = self.passwords[user].clone();
        let r = self.login_with(user, &pw);
        assert!(r.ok, "login {user}: {:?}", r.error);
        let token = r.result["token"].as_str().expect("token").to_owned();
        if r.result["must_change_password"] == Value::Bool(true) {
            let new = format!("{}-Kawa#{}", pw.len(), user.len() * 7919);
            let r = self.call("password", Some(&token), &[("old", &pw), ("new", &new)]);
            assert!(r.ok, "{:?}", r.error);
            self.passwords.insert(user.to_owned(), new);
        }
        token
    }

    /// Creates `user` (a person of their own: name and staff number from the id) and enrols
    /// them as the person would, with the one-time token: their own password, their own TOTP
    /// secret.
    pub fn add_user(&mut self, admin: &str, user: &str, role: &str, break_glass: bool) {
        let name = format!("テスト {user}");
        let staff = format!("S-{user}");
        let r = self.call(
            "user.add",
            Some(admin),
            &[
                ("user", user),
                ("name", &name),
                ("staff_number", &staff),
                ("role", role),
                ("break_glass", if break_glass { "true" } else { "false" }),
            ],
        );
        assert!(r.ok, "{:?}", r.error);
        assert!(
            r.result.get("first_password").is_none() && r.result.get("totp_secret").is_none(),
            "an administrator saw another person's secrets: {}",
            r.result
        );
        let token = r.result["enrolment_token"]
            .as_str()
            .expect("token")
            .to_owned();
        self.redeem(user, &token);
    }

    /// Redeems an enrolment token as `user`, choosing a password.
    pub fn redeem(&mut self, user: &str, token: &str) {
        let password = format!("Enrol#{}-Kx{}", user.len() * 7919, user.len());
        let r = self.call(
            "enrol",
            None,
            &[("user", user), ("token", token), ("password", &password)],
        );
        assert!(r.ok, "enrol {user}: {:?}", r.error);
        let secret =
            accounts::totp::base32_decode(r.result["totp_secret"].as_str().expect("secret"))
                .expect("base32");
        self.totp.insert(user.to_owned(), (secret, None));
        self.passwords.insert(user.to_owned(), password);
    }
}

/// `vault admin bootstrap` on `store`: the first administrator `admin`'s credentials.
pub fn bootstrap(vault: &mut std::process::Command, store: &std::path::Path) -> Value {
    let out = vault
        .args([
            "admin",
            "bootstrap",
            "--user",
            "admin",
            "--name",
            "管理 太郎",
            "--store",
        ])
        .arg(store)
        .output()
        .expect("bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The entries of a store's live audit log.
pub fn audit_entries(store: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(store.join("admin/audit.log"))
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry"))
        .collect()
}

/// Starts `vault serve` with the operator socket on a test folder laid out as
/// `ROOT/{link.key, vault.key, institutions/, inbox/, events.jsonl, serve.log, admin.sock}`
/// (keys and folders made when missing) and the store at `store`; returns once the socket
/// is there.
pub fn serve(
    vault: std::process::Command,
    root: &std::path::Path,
    store: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    serve_at(vault, root, store, "127.0.0.1:0", extra)
}

/// [`serve`] with the link's receiver bound to `bind`.
pub fn serve_at(
    vault: std::process::Command,
    root: &std::path::Path,
    store: &std::path::Path,
    bind: &str,
    extra: &[&str],
) -> std::process::Child {
    let socket = root.join("admin.sock");
    let mut child = spawn_serve(vault, root, store, bind, extra);
    for _ in 0..400 {
        if socket.exists() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no operator socket: {}", serve_log(root));
}

/// Starts `vault serve` as [`serve_at`] does, without waiting for anything.
pub fn spawn_serve(
    mut vault: std::process::Command,
    root: &std::path::Path,
    store: &std::path::Path,
    bind: &str,
    extra: &[&str],
) -> std::process::Child {
    let rng = ring::rand::SystemRandom::new();
    let link_key = root.join("link.key");
    if !link_key.exists() {
        keystore::generate_link_key("ingress-vault", &link_key, &rng).expect("link key");
    }
    if !root.join("vault.key").exists() {
        keystore::generate_pair(
            keystore::PairKind::Encryption,
            "vault",
            &root.join("vault"),
            &rng,
        )
        .expect("vault key");
    }
    std::fs::create_dir_all(root.join("institutions")).expect("dir");
    let socket = root.join("admin.sock");
    let log = std::fs::File::create(root.join("serve.log")).expect("log");
    vault
        .args(["serve", "--bind", bind, "--link-key"])
        .arg(&link_key)
        .arg("--events")
        .arg(root.join("events.jsonl"))
        .arg("--inbox")
        .arg(root.join("inbox"))
        .arg("--store")
        .arg(store)
        .arg("--key")
        .arg(root.join("vault.key"))
        .arg("--institutions")
        .arg(root.join("institutions"))
        .arg("--admin-socket")
        .arg(&socket)
        .args(extra)
        .stderr(log)
        .spawn()
        .expect("serve")
}

/// What `serve` wrote to standard error.
pub fn serve_log(root: &std::path::Path) -> String {
    std::fs::read_to_string(root.join("serve.log")).unwrap_or_default()
}

/// Runs `vault admin --socket S --session-file F ARGS…` with `stdin` as its input.
pub fn admin_cli(
    mut vault: std::process::Command,
    socket: &std::path::Path,
    session: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = vault
        .arg("admin")
        .arg("--socket")
        .arg(socket)
        .arg("--session-file")
        .arg(session)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

/// A synthetic population sealed to a vault key, with the institutions' keys.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// (inbox name, sealed bytes) of every good envelope.
    pub envelopes: Vec<(String, Vec<u8>)>,
    /// Records the parsers take from the good envelopes' plaintexts.
    pub records: u64,
    /// Persons in the generator's truth.
    pub persons: usize,
}

/// A synthetic population, its institutions' keys, and every file sealed to the vault.
pub fn fixture(persons: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let out = root.join("synth");
    synth::generate(
        &synth::Options {
            persons,
            seed: 3,
            institutions: 3,
            formats: vec![
                synth::Format::Ssmix2,
                synth::Format::Fhir,
                synth::Format::Cda,
                synth::Format::Claims,
            ],
            out: out.clone(),
            as_of: synth::date::Date::new(2025, 3, 31).expect("date"),
            threads: 2,
            layout: synth::Layout::Tree,
        },
        |_| {},
    )
    .expect("synth");
    let rng = ring::rand::SystemRandom::new();
    keystore::generate_pair(PairKind::Encryption, "vault", &root.join("vault"), &rng)
        .expect("vault key");
    std::fs::create_dir_all(root.join("institutions")).expect("dir");
    std::fs::create_dir_all(root.join("secrets")).expect("dir");
    let vault_pub = keystore::load_recipient_public(&root.join("vault.pub")).expect("pub");
    let mut signers = BTreeMap::new();
    let mut envelopes = Vec::new();
    let mut records = 0u64;
    let limits = clinical::Limits::default();
    for (sub, ct, fmt) in [
        ("ssmix2", ContentType::Ssmix2, clinical::Format::Ssmix2),
        ("fhir", ContentType::FhirJp, clinical::Format::FhirJp),
        ("claims", ContentType::Uke, clinical::Format::Uke),
        ("cda", ContentType::CdaTokutei, clinical::Format::CdaTokutei),
    ] {
        for f in testkit::files_under(&out.join(sub)) {
            let rel = f.strip_prefix(out.join(sub)).expect("under");
            let first = rel
                .components()
                .next()
                .expect("first")
                .as_os_str()
                .to_string_lossy()
                .to_string();
            let inst = first.split('_').next().expect("inst").to_owned();
            let signer = signers.entry(inst.clone()).or_insert_with(|| {
                let prefix = root.join("secrets").join(&inst);
                keystore::generate_pair(PairKind::Signing, &inst, &prefix, &rng)
                    .expect("signing key");
                std::fs::copy(
                    prefix.with_extension("pub"),
                    root.join("institutions").join(format!("{inst}.pub")),
                )
                .expect("copy pub");
                keystore::load_signing_key(&prefix.with_extension("key")).expect("load")
            });
            let plain = std::fs::read(&f).expect("read");
            records += clinical::parse(fmt, &plain, None, &limits)
                .expect("synthetic file parses")
                .records
                .len() as u64;
            let mut sealed = Vec::new();
            seal(
                SealParams {
                    recipient: &vault_pub,
                    signer,
                    content_type: ct,
                    segment_size: envelope::DEFAULT_SEGMENT_SIZE,
                },
                measure(&plain[..]).expect("measure"),
                &rng,
                &plain[..],
                &mut sealed,
            )
            .expect("seal");
            envelopes.push((
                format!(
                    "{:020}-{}",
                    envelopes.len(),
                    f.file_name().expect("name").to_string_lossy()
                ),
                sealed,
            ));
        }
    }
    let truth = std::fs::read_to_string(out.join("truth/links.csv")).expect("truth");
    let persons: std::collections::HashSet<&str> = truth
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    let persons = persons.len();
    Fixture {
        _dir: dir,
        root,
        envelopes,
        records,
        persons,
    }
}

/// Writes envelopes into an inbox folder, each atomically (hidden part file, then rename).
pub fn fill(inbox: &Path, envs: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(inbox).expect("inbox");
    for (name, bytes) in envs {
        // As the link's receiver does: a hidden part file renamed into place, so a running
        // intake never reads half an envelope. (Written in place, a busy machine let `vault
        // serve` read one half-written, quarantine it, and the opt-out test miss its records.)
        let part = inbox.join(format!(".{name}.part"));
        std::fs::write(&part, bytes).expect("write");
        std::fs::rename(&part, inbox.join(name)).expect("rename");
    }
}

/// The method: age by decade, sex, the first digit of the postal code; k = 3.
pub fn write_method(dir: &Path, k: usize) {
    std::fs::create_dir_all(dir).expect("dir");
    let age: String = (0..=130)
        .map(|a| format!("{a};{}-{};*\n", a / 10 * 10, a / 10 * 10 + 9))
        .collect();
    let postal: String = (0..1000)
        .map(|p| format!("{p:03};{}**;*\n", p / 100))
        .collect();
    std::fs::write(dir.join("age.csv"), age).expect("age");
    std::fs::write(dir.join("sex.csv"), "M;*\nF;*\nO;*\nU;*\n").expect("sex");
    std::fs::write(dir.join("postal3.csv"), postal).expect("postal");
    let settings = serde_json::json!({
        "quasi_identifiers": [
            {"column": "age", "hierarchy": "age.csv"},
            {"column": "sex", "hierarchy": "sex.csv"},
            {"column": "postal3", "hierarchy": "postal3.csv"}
        ],
        "k": k,
        "suppression_limit": 0.2,
        "metric": "loss"
    });
    std::fs::write(
        dir.join("method.json"),
        serde_json::to_vec_pretty(&settings).expect("json"),
    )
    .expect("method");
}

/// Checks a release as the researcher received it in `got`: the manifest's signature with the
/// vault's release key, every file against the manifest's hash, the R-RL-4 statement, and
/// the table k-anonymous by a count of our own (suppressed rows all `*`). Returns the
/// manifest, the files and the number of rows.
pub fn check_received(
    got: &Path,
    release_pub: &Path,
    k: usize,
) -> (release::package::Manifest, Vec<(String, Vec<u8>)>, usize) {
    let vault_key = keystore::load_verifying_key(release_pub).expect("key");
    let mut entries_in: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [
        "manifest.json",
        "manifest.sig",
        "data.csv",
        "data.parquet",
        "report.json",
    ] {
        entries_in.push((name.into(), std::fs::read(got.join(name)).expect(name)));
    }
    let manifest: release::package::Manifest =
        serde_json::from_slice(&entries_in[0].1).expect("manifest");
    let sig = String::from_utf8(entries_in[1].1.clone()).expect("sig");
    let sig_hex = sig.split_whitespace().nth(2).expect("sig hex");
    let mut msg = release::package::SIGNATURE_CONTEXT.to_vec();
    msg.extend_from_slice(&entries_in[0].1);
    vault_key
        .verify(&msg, &hex::decode(sig_hex).expect("hex"))
        .expect("the manifest's signature verifies with the vault's release key");
    assert!(manifest.statement.contains("匿名加工医療情報"));
    for f in &manifest.files {
        let bytes = &entries_in
            .iter()
            .find(|(n, _)| *n == f.name)
            .expect("file")
            .1;
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        assert_eq!(sha, f.sha256, "{}", f.name);
    }
    let csv = String::from_utf8(entries_in[2].1.clone()).expect("utf-8");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(header, ["age", "sex", "postal3", "diagnosis"]);
    let mut classes: HashMap<(String, String, String), usize> = HashMap::new();
    let mut n = 0;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        n += 1;
        if f[0] == "*" && f[1] == "*" && f[2] == "*" {
            continue; // suppressed
        }
        *classes
            .entry((f[0].into(), f[1].into(), f[2].into()))
            .or_default() += 1;
    }
    assert!(!classes.is_empty());
    assert!(
        classes.values().all(|&c| c >= k),
        "a class smaller than k = {k}: {classes:?}"
    );
    (manifest, entries_in, n)
}

/// Another binary of the workspace, built beside `vault` by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_vault")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: this test drives the whole appliance; build the workspace first \
         (cargo test --release --workspace builds every binary)",
        p.display()
    );
    p
}

/// Standard output of a command that must have succeeded (else both outputs, named `what`).
pub fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed when the test ends, also when it panics.
pub struct Running(pub std::process::Child);

impl Running {
    /// Kills and reaps it now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The operator's CA of a test at `ROOT/ca` (its CRL written), issuing into `ROOT/certs`
/// certificates valid from yesterday for a week.
pub struct TestCa {
    ca: pki::Ca,
    now: time::OffsetDateTime,
    certs: PathBuf,
    /// The CA certificate.
    pub crt: PathBuf,
    /// Its current CRL.
    pub crl: PathBuf,
}

impl TestCa {
    pub fn new(root: &Path) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let ca = pki::Ca::init(
            &root.join("ca"),
            "operator CA",
            now - time::Duration::days(1),
            30,
        )
        .expect("ca");
        let crl = ca.write_crl(now).expect("crl");
        TestCa {
            ca,
            now,
            certs: root.join("certs"),
            crt: root.join("ca/ca.crt.pem"),
            crl,
        }
    }

    /// Issues `name`'s certificate and key; returns their paths.
    pub fn issue(&self, name: &str, role: pki::Role, dns: &[String]) -> (PathBuf, PathBuf) {
        let issued = self
            .ca
            .issue(
                name,
                role,
                dns,
                self.now - time::Duration::days(1),
                self.now + time::Duration::days(7),
            )
            .expect("issue");
        pki::write_issued(&self.certs, name, &issued).expect("write")
    }
}

/// The researcher `lab-1`'s keys in `dir`: `lab.key`/`lab.pub` (releases are sealed to it)
/// and `receipt.key`/`receipt.pub` (signs receipts). Returns the encryption public key.
pub fn researcher_keys(dir: &Path) -> String {
    let rng = ring::rand::SystemRandom::new();
    std::fs::create_dir_all(dir).expect("dir");
    keystore::generate_pair(PairKind::Encryption, "lab-1", &dir.join("lab"), &rng)
        .expect("lab key");
    keystore::generate_pair(PairKind::Signing, "lab-1", &dir.join("receipt"), &rng)
        .expect("receipt key");
    std::fs::read_to_string(dir.join("lab.pub"))
        .expect("pub")
        .trim()
        .to_owned()
}

/// Egress's recipient register at `path` with `lab-1` (keys from [`researcher_keys`] in
/// `lab_dir`) reachable at `address` as `lab-1.example`.
pub fn write_recipients(path: &Path, lab_dir: &Path, address: &str) {
    let read = |f: &str| {
        std::fs::read_to_string(lab_dir.join(f))
            .expect("pub")
            .trim()
            .to_owned()
    };
    let recipients = serde_json::json!({"recipients": [{
        "id": "lab-1",
        "address": address,
        "server_name": "lab-1.example",
        "key": read("lab.pub"),
        "receipt_key": read("receipt.pub"),
    }]});
    std::fs::write(path, recipients.to_string()).expect("recipients");
}

fn vault_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_vault"))
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port()
}

/// A store filled by intake from a synthetic population of 80, the vault serving it with an
/// egress outbox, and its operators: admin, op1 (operator), rev1 and rev2 (reviewers), aud1
/// (auditor).
pub struct Served {
    pub fx: Fixture,
    pub store: std::path::PathBuf,
    pub outbox: std::path::PathBuf,
    pub ops: Operators,
    pub serve: Running,
    /// The administrator's session token.
    pub admin: String,
}

pub fn served() -> Served {
    let fx = fixture(80);
    let root = fx.root.clone();
    let store = root.join("store");
    ok(
        &vault_cmd()
            .args(["init", "--store"])
            .arg(&store)
            .output()
            .expect("init"),
        "init",
    );
    let inbox = root.join("inbox-intake");
    fill(&inbox, &fx.envelopes);
    ok(
        &vault_cmd()
            .args(["intake", "run", "--once", "--inbox"])
            .arg(&inbox)
            .arg("--store")
            .arg(&store)
            .arg("--key")
            .arg(root.join("vault.key"))
            .arg("--institutions")
            .arg(root.join("institutions"))
            .output()
            .expect("intake"),
        "intake",
    );
    let first = bootstrap(&mut vault_cmd(), &store);
    let mut ops = Operators::new(root.join("admin.sock"));
    ops.enrol(&first);
    let outbox = root.join("egress-outbox");
    let serve = Running(serve(
        vault_cmd(),
        &root,
        &store,
        &["--egress-outbox", outbox.to_str().expect("utf-8")],
    ));
    let admin = ops.login("admin");
    for (u, role) in [
        ("op1", "operator"),
        ("rev1", "reviewer"),
        ("rev2", "reviewer"),
        ("aud1", "auditor"),
    ] {
        ops.add_user(&admin, u, role, false);
    }
    Served {
        fx,
        store,
        outbox,
        ops,
        serve,
        admin,
    }
}
