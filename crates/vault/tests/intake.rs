//! `vault intake` end to end on sealed synthetic envelopes (issue #7): everything stored
//! once, refusals quarantined with their reasons, nothing in clear at rest, and twenty
//! SIGKILLs at random points leave exactly the store an uninterrupted run makes. Every test
//! runs twice: with the metadata in SQLite (the default) and in a real PostgreSQL server
//! the test starts itself (`testkit::pg`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{fill, fixture, Fixture};
use envelope::{measure, seal, ContentType, SealParams};
use keystore::PairKind;
use rand::{Rng, SeedableRng};

fn vault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vault"))
}

/// Where the stores of a test keep their metadata.
enum Meta {
    Sqlite,
    Postgres(testkit::pg::PgServer),
}

impl Meta {
    /// A PostgreSQL server of the test's own. Without root and without PostgreSQL the test
    /// is skipped with the reason printed; as root (CI) PostgreSQL must be there, since
    /// `make deps` installs it.
    fn postgres() -> Option<Meta> {
        if let Some(why) = testkit::pg::pg_unavailable() {
            assert!(!nix::unistd::geteuid().is_root(), "PostgreSQL path: {why}");
            println!("skipped: {why}");
            return None;
        }
        Some(Meta::Postgres(
            testkit::pg::PgServer::start().expect("start PostgreSQL"),
        ))
    }

    /// A store folder and its own metadata database.
    fn store(&self, dir: PathBuf) -> StoreAt {
        let database = match self {
            Meta::Sqlite => "sqlite".to_owned(),
            Meta::Postgres(pg) => pg.create_database("store").expect("create database"),
        };
        StoreAt { dir, database }
    }

    /// Envelope rows in the store's metadata, counted in the database itself (so a test
    /// meant for PostgreSQL cannot pass on a SQLite file by mistake).
    fn envelope_rows(&self, store: &StoreAt) -> Option<i64> {
        match self {
            Meta::Sqlite => {
                assert!(store.dir.join("meta.sqlite").exists());
                None
            }
            Meta::Postgres(pg) => {
                assert!(
                    !store.dir.join("meta.sqlite").exists(),
                    "the PostgreSQL store wrote SQLite metadata"
                );
                let db = store
                    .database
                    .split('?')
                    .next()
                    .and_then(|s| s.rsplit('/').next())
                    .expect("database name");
                Some(
                    pg.sql(db, "SELECT COUNT(*) FROM envelopes")
                        .expect("count")
                        .parse()
                        .expect("number"),
                )
            }
        }
    }

    /// Folders outside the store that hold its metadata, for the nothing-in-clear check.
    fn outside(&self) -> Vec<PathBuf> {
        match self {
            Meta::Sqlite => Vec::new(),
            Meta::Postgres(pg) => vec![pg.data_dir()],
        }
    }
}

/// A store folder and its metadata database (`sqlite` or a URL).
struct StoreAt {
    dir: PathBuf,
    database: String,
}

impl StoreAt {
    /// `vault` with this store's database in its environment (as an operator's unit file
    /// would set `VAULT_DATABASE`).
    fn vault(&self) -> Command {
        let mut c = vault();
        c.env("VAULT_DATABASE", &self.database);
        c
    }
}

fn run_args<'a>(fx: &'a Fixture, inbox: &'a Path, store: &'a StoreAt) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "intake".into(),
        "run".into(),
        "--once".into(),
        "--batch".into(),
        "25".into(),
    ];
    for (k, v) in [
        ("--inbox", inbox.as_os_str()),
        ("--store", store.dir.as_os_str()),
        ("--key", fx.root.join("vault.key").into_os_string().leak()),
        (
            "--institutions",
            fx.root.join("institutions").into_os_string().leak(),
        ),
    ] {
        a.push(k.into());
        a.push(v.to_owned());
    }
    a
}

fn status(store: &StoreAt) -> serde_json::Value {
    let out = store
        .vault()
        .args(["intake", "status", "--json", "--store"])
        .arg(&store.dir)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn init(store: &StoreAt) {
    let out = vault()
        .args(["init", "--store"])
        .arg(&store.dir)
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every record of a store, decrypted, as sorted text lines.
fn dump(store: &StoreAt) -> Vec<String> {
    let (rt, st) = reader(store);
    rt.block_on(async {
        let df = st.records().await.expect("records");
        vault_store::frame_lines(&df).expect("lines")
    })
}

/// A runtime and the store opened as a reader on it.
fn reader(store: &StoreAt) -> (tokio::runtime::Runtime, vault_store::Store) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let st = rt.block_on(async {
        let master = keystore::load_link_key(&store.dir.join("keys/master.key")).expect("master");
        vault_store::Store::open_reader(
            &store.dir,
            vault_store::MasterKey::new(*master.key).expect("key"),
            &store.database.parse().expect("database"),
        )
        .await
        .expect("open")
    });
    (rt, st)
}

fn count_in(s: &serde_json::Value, status: &str) -> i64 {
    s["by_institution"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r[2] == status)
        .map(|r| r[3].as_i64().expect("n"))
        .sum()
}

#[test]
fn everything_stored_once_refusals_quarantined_nothing_in_clear() {
    everything_stored_once(&Meta::Sqlite);
}

#[test]
fn postgres_everything_stored_once_refusals_quarantined_nothing_in_clear() {
    if let Some(meta) = Meta::postgres() {
        everything_stored_once(&meta);
    }
}

fn everything_stored_once(meta: &Meta) {
    let fx = fixture(120);
    let inbox = fx.root.join("inbox");
    let store = meta.store(fx.root.join("store"));
    init(&store);
    fill(&inbox, &fx.envelopes);
    // A re-delivered envelope, garbage, an unregistered signer, and a broken message.
    let (n0, e0) = &fx.envelopes[0];
    std::fs::write(inbox.join(format!("99999999999999999990-again-{n0}")), e0).expect("dup");
    std::fs::write(
        inbox.join("99999999999999999991-garbage"),
        b"not an envelope",
    )
    .expect("garbage");
    let rng = ring::rand::SystemRandom::new();
    keystore::generate_pair(
        PairKind::Signing,
        "9999999999",
        &fx.root.join("stranger"),
        &rng,
    )
    .expect("stranger");
    let stranger = keystore::load_signing_key(&fx.root.join("stranger.key")).expect("load");
    let vault_pub = keystore::load_recipient_public(&fx.root.join("vault.pub")).expect("pub");
    let broken = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/samples/ssmix2/nhoHQ-SSMIX2DataTestingTool/standard_storage/000/000/0000001/20000401/OMP-11/0000001_20000401_OMP-11_123456789012345_20110701113813225_01_1",
    ))
    .expect("sample");
    let signer_of_first = keystore::load_signing_key(
        &fx.root.join("secrets").join(
            std::fs::read_dir(fx.root.join("secrets"))
                .expect("dir")
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "key"))
                .expect("a key"),
        ),
    )
    .expect("signer");
    for (name, signer, body) in [
        (
            "99999999999999999992-stranger",
            &stranger,
            &b"MSH|^~\\&|"[..],
        ),
        ("99999999999999999993-broken", &signer_of_first, &broken[..]),
    ] {
        let mut sealed = Vec::new();
        seal(
            SealParams {
                recipient: &vault_pub,
                signer,
                content_type: ContentType::Ssmix2,
                segment_size: envelope::DEFAULT_SEGMENT_SIZE,
            },
            measure(body).expect("measure"),
            &rng,
            body,
            &mut sealed,
        )
        .expect("seal");
        std::fs::write(inbox.join(name), sealed).expect("write");
    }
    let out = store
        .vault()
        .args(run_args(&fx, &inbox, &store))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status(&store);
    assert_eq!(count_in(&s, "stored") as usize, fx.envelopes.len());
    assert_eq!(
        s["records"].as_i64(),
        Some(fx.records as i64),
        "every record stored"
    );
    assert_eq!(
        s["persons"].as_i64(),
        Some(fx.persons as i64),
        "one pseudonym per synthetic person"
    );
    let q: Vec<(String, String)> = s["quarantine"]
        .as_array()
        .expect("q")
        .iter()
        .map(|r| {
            (
                r[2].as_str().unwrap_or("").to_owned(),
                r[3].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let codes: Vec<&str> = q.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes.len(), 3, "{q:?}");
    for want in ["envelope.header", "envelope.open", "hl7.msh"] {
        assert!(codes.contains(&want), "{want} missing in {q:?}");
    }
    assert_eq!(
        std::fs::read_dir(store.dir.join("quarantine"))
            .expect("q")
            .count(),
        3,
        "each refusal kept, sealed"
    );
    assert_eq!(
        std::fs::read_dir(&inbox).expect("inbox").count(),
        0,
        "inbox emptied"
    );
    assert_eq!(dump(&store).len() as u64, fx.records);
    if let Some(n) = meta.envelope_rows(&store) {
        assert_eq!(
            n as usize,
            fx.envelopes.len() + 3,
            "stored and quarantined rows"
        );
    }
    // At rest nothing is in clear: no identifier or clinical text from the input appears.
    let mut at_rest = testkit::files_under(&store.dir);
    for d in meta.outside() {
        at_rest.extend(testkit::files_under(&d));
    }
    for f in at_rest {
        // SQLite removes its -wal and -shm files when the last connection closes, which
        // may happen between the listing and the read.
        let b = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", f.display()),
        };
        for needle in [
            "ロキソプロフェン".as_bytes(),
            b"ISO IR87",
            b"resourceType",
            "保険".as_bytes(),
        ] {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in clear",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    // Delivering everything again changes nothing.
    fill(&inbox, &fx.envelopes);
    let out = store
        .vault()
        .args(run_args(&fx, &inbox, &store))
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("duplicates {}", fx.envelopes.len())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&store)["records"], s["records"]);
}

#[test]
fn twenty_sigkills_leave_the_store_an_uninterrupted_run_makes() {
    twenty_sigkills(&Meta::Sqlite);
}

#[test]
fn postgres_twenty_sigkills_leave_the_store_an_uninterrupted_run_makes() {
    if let Some(meta) = Meta::postgres() {
        twenty_sigkills(&meta);
    }
}

fn twenty_sigkills(meta: &Meta) {
    let fx = fixture(300);
    // Reference: one uninterrupted run.
    let ref_inbox = fx.root.join("ref-inbox");
    let ref_store = meta.store(fx.root.join("ref-store"));
    init(&ref_store);
    fill(&ref_inbox, &fx.envelopes);
    let t0 = std::time::Instant::now();
    let out = ref_store
        .vault()
        .args(run_args(&fx, &ref_inbox, &ref_store))
        .output()
        .expect("run");
    let whole = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The crashed store uses the same keys, so pseudonyms can be compared.
    let inbox = fx.root.join("inbox");
    let store = meta.store(fx.root.join("store"));
    std::fs::create_dir_all(store.dir.join("keys")).expect("keys");
    for k in ["master.key", "link.key"] {
        std::fs::copy(
            ref_store.dir.join("keys").join(k),
            store.dir.join("keys").join(k),
        )
        .expect("copy key");
    }
    fill(&inbox, &fx.envelopes);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let mut kills = 0;
    for _ in 0..20 {
        let mut child = store
            .vault()
            .args(run_args(&fx, &inbox, &store))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Each run gets 1/100 to 1/30 of an uninterrupted run's time (together about half
        // of it), so twenty of them land during intake even if the reference run was slowed
        // down by the tests running beside it.
        let ms = whole.as_millis() as u64;
        std::thread::sleep(Duration::from_millis(rng.gen_range(ms / 100..ms / 30 + 1)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    let left = std::fs::read_dir(&inbox).expect("inbox").count();
    let out = store
        .vault()
        .args(run_args(&fx, &inbox, &store))
        .output()
        .expect("final run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "uninterrupted run {whole:?} for {} envelopes; {kills} of 20 runs killed mid-intake; {left} envelopes left for the final run",
        fx.envelopes.len()
    );
    assert!(
        kills >= 15,
        "the kills must land during intake, only {kills} did"
    );
    let (a, b) = (status(&ref_store), status(&store));
    assert_eq!(a["records"], b["records"]);
    assert_eq!(a["persons"], b["persons"]);
    assert_eq!(a["by_institution"], b["by_institution"]);
    assert_eq!(
        dump(&ref_store),
        dump(&store),
        "same records, same pseudonyms"
    );
}

#[test]
fn serve_receives_over_the_link_and_stores() {
    serve_receives(&Meta::Sqlite);
}

#[test]
fn postgres_serve_receives_over_the_link_and_stores() {
    if let Some(meta) = Meta::postgres() {
        serve_receives(&meta);
    }
}

fn serve_receives(meta: &Meta) {
    let fx = fixture(30);
    let store = meta.store(fx.root.join("store"));
    init(&store);
    let rng = ring::rand::SystemRandom::new();
    let link_key = fx.root.join("ingress-vault.key");
    keystore::generate_link_key("ingress-vault", &link_key, &rng).expect("link key");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let serve = store
        .vault()
        .args([
            "serve",
            "--bind",
            &to.to_string(),
            "--batch",
            "100",
            "--link-key",
        ])
        .arg(&link_key)
        .arg("--events")
        .arg(fx.root.join("events.jsonl"))
        .arg("--inbox")
        .arg(fx.root.join("inbox"))
        .arg("--store")
        .arg(&store.dir)
        .arg("--key")
        .arg(fx.root.join("vault.key"))
        .arg("--institutions")
        .arg(fx.root.join("institutions"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    std::thread::sleep(Duration::from_millis(300));
    // Ingress's side of the link: envelopes renamed into the outbox, sent once.
    let outbox = diode_io::Outbox::open(&fx.root.join("outbox")).expect("outbox");
    for (name, bytes) in &fx.envelopes {
        let tmp = fx.root.join("outbox").join(format!(".{name}"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, outbox.incoming_dir().join(name)).expect("rename");
    }
    let key = *keystore::load_link_key(&link_key).expect("load").key;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(diode_io::run_sender(
        diode_io::SendOptions {
            to,
            bind: "127.0.0.1:0".parse().expect("addr"),
            outbox: fx.root.join("outbox"),
            key,
            config: diode::SenderConfig::default(),
            scan_interval: Duration::from_millis(50),
            retention: diode_io::Retention {
                max_age: Duration::from_secs(3600),
                max_count: 1_000_000,
            },
            exit_when_idle: true,
            events: None,
            session: 7,
        },
        std::future::pending::<()>(),
    ))
    .expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let n = count_in(&status(&store), "stored") as usize;
        if n == fx.envelopes.len() || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = serve.wait_with_output().expect("wait");
    assert_eq!(
        stored,
        fx.envelopes.len(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "serve stops cleanly on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&store)["records"].as_i64(), Some(fx.records as i64));
}

#[test]
fn an_opted_out_person_is_deleted_and_never_stored_again() {
    opt_out(&Meta::Sqlite);
}

#[test]
fn postgres_an_opted_out_person_is_deleted_and_never_stored_again() {
    if let Some(meta) = Meta::postgres() {
        opt_out(&meta);
    }
}

/// Opt-out (issue #8, R-IN-6, R-OP-6): half the envelopes are taken in, an operator opts a
/// person out by an institution's patient id through the running vault, the other half
/// arrives. The store then holds exactly what a store without that person holds: every
/// record of theirs deleted, none of the later ones stored; and the deletion is on record.
fn opt_out(meta: &Meta) {
    let fx = fixture(30);
    // The person seen at the most institutions, opted out by their first one's patient id.
    let truth = std::fs::read_to_string(fx.root.join("synth/truth/links.csv")).expect("truth");
    let mut ids: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for l in truth.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        ids.entry(f[0]).or_default().push((f[1], f[2]));
    }
    let (_, local_ids) = ids.iter().max_by_key(|(_, v)| v.len()).expect("a person");
    let (institution, patient_id) = local_ids[0];
    assert!(local_ids.len() >= 2, "a person known at two institutions");

    // The reference: every envelope into a store with the same pseudonym key.
    let reference = meta.store(fx.root.join("reference"));
    let store = meta.store(fx.root.join("store"));
    init(&store);
    init(&reference);
    std::fs::copy(
        store.dir.join("keys/link.key"),
        reference.dir.join("keys/link.key"),
    )
    .expect("copy key");
    let all = fx.root.join("inbox-all");
    fill(&all, &fx.envelopes);
    let out = reference
        .vault()
        .args(run_args(&fx, &all, &reference))
        .output()
        .expect("intake");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (first, second) = fx.envelopes.split_at(fx.envelopes.len() / 2);
    let inbox = fx.root.join("inbox");
    fill(&inbox, first);
    let out = store
        .vault()
        .args(run_args(&fx, &inbox, &store))
        .output()
        .expect("intake");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = dump(&store);
    let sealed_before = sealed_identities(&store);

    let first_admin = common::bootstrap(&mut store.vault(), &store.dir);
    let socket = fx.root.join("admin.sock");
    let mut ops = common::Operators::new(socket.clone());
    ops.enrol(&first_admin);
    let mut serve = common::serve(store.vault(), &fx.root, &store.dir, &["--batch", "25"]);
    let serve_log = || common::serve_log(&fx.root);
    let admin = ops.login("admin");
    ops.add_user(&admin, "op1", "operator", false);
    ops.add_user(&admin, "aud1", "auditor", false);
    let operator = ops.login("op1");
    let r = ops.call(
        "optout.add",
        Some(&operator),
        &[
            ("institution", institution),
            ("patient_id", patient_id),
            ("source", "本人からの停止求め (窓口)"),
        ],
    );
    assert!(r.ok, "{:?} {}", r.error, serve_log());
    let pseudonym = r.result["pseudonyms"]
        .as_str()
        .expect("pseudonyms")
        .split(' ')
        .next()
        .expect("one")
        .to_owned();
    let theirs = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.split('\t').nth(2) == Some(pseudonym.as_str()))
            .count()
    };
    let had = theirs(&before);
    assert!(had > 0, "the person had records before");
    assert_eq!(r.result["records_deleted"].as_u64(), Some(had as u64));
    assert!(r.result["identities_deleted"].as_u64().expect("n") > 0);
    assert!(r.result["batches_rewritten"].as_u64().expect("n") > 0);
    // No one may name the person by patient id and pseudonym at once, or by nothing.
    let r = ops.call("optout.add", Some(&operator), &[("source", "x")]);
    assert!(r
        .error
        .expect("refused")
        .contains("--institution and --patient-id"));

    // The rest arrives while the vault runs.
    fill(&inbox, second);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The receiver keeps its own state in hidden entries of the inbox.
    let waiting = || {
        std::fs::read_dir(&inbox)
            .expect("inbox")
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    while waiting() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "intake did not finish: {}",
            serve_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let auditor = ops.login("aud1");
    // The auditor's CSV export through the command line.
    let session = fx.root.join("aud1.session");
    let cli = |args: &[&str], stdin: &str| {
        common::admin_cli(store.vault(), &socket, &session, args, stdin)
    };
    let code = ops.code("aud1");
    let out = cli(
        &["login", "--user", "aud1"],
        &format!("{}\n{code}\n", ops.passwords["aud1"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["--csv", "optout", "list"], "");
    let csv = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        csv.starts_with(
            "id,institution,tag,pseudonyms,source,received,entered_by,records_deleted,"
        ),
        "{csv}"
    );
    assert!(csv.contains(&format!(",op1,{had},")), "{csv}");
    let out = cli(&["optout", "add", "--source", "x"], "");
    assert_eq!(out.status.code(), Some(2), "a person must be named");
    let listed = ops.call("optout.list", Some(&auditor), &[]);
    assert_eq!(
        listed.result.as_array().map(Vec::len),
        Some(1),
        "{listed:?}"
    );
    assert_eq!(listed.result[0]["entered_by"], "op1");
    assert!(
        !serde_json::to_string(&listed.result)
            .expect("json")
            .contains(patient_id),
        "the patient id is not kept"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert!(serve.wait().expect("wait").success(), "{}", serve_log());

    let after = dump(&store);
    assert_eq!(
        theirs(&after),
        0,
        "none of the person's records are left or came in later"
    );
    let expected: Vec<String> = dump(&reference)
        .into_iter()
        .filter(|l| l.split('\t').nth(2) != Some(pseudonym.as_str()))
        .collect();
    assert!(
        theirs(&dump(&reference)) > had,
        "the second half held more of the person's records"
    );
    assert_eq!(after.len(), expected.len());
    assert!(
        after == expected,
        "the store equals a store that never had the person"
    );
    let audit = common::audit_entries(&store.dir);
    let entry = audit
        .iter()
        .find(|e| e["action"] == "optout.add" && e["outcome"] == "ok")
        .expect("audited");
    assert_eq!(entry["actor"], "op1");
    assert_eq!(entry["target"], pseudonym.as_str());
    assert_eq!(entry["records"].as_u64(), Some(had as u64));

    // The store grep (issue #31, item 9): the deleted person's sealed identity rows, as the
    // database held them before, are in no file of the store folder nor of the database's
    // data folder (its tables; PostgreSQL's own write-ahead log is covered in
    // docs/operations.md), while another person's rows are found there, so the search works.
    let gone: Vec<String> = listed.result[0]["pseudonyms"]
        .as_str()
        .expect("pseudonyms")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let (theirs_sealed, others): (Vec<_>, Vec<_>) =
        sealed_before.iter().partition(|(p, _)| gone.contains(p));
    assert!(!theirs_sealed.is_empty() && !others.is_empty());
    if let Meta::Postgres(pg) = meta {
        // Dirty pages reach the table files at a checkpoint; without one the search would
        // look at files the server has not written yet.
        pg.sql("postgres", "CHECKPOINT").expect("checkpoint");
    }
    let mut places = vec![store.dir.clone()];
    places.extend(meta.outside().into_iter().map(|d| d.join("base")));
    let found = |sealed: &[u8]| -> Vec<PathBuf> {
        // A 24-byte run from the middle of the ciphertext: random, so only a copy matches.
        let mid = sealed.len() / 2;
        let needle = &sealed[mid - 12..mid + 12];
        places
            .iter()
            .flat_map(|d| testkit::files_under(d))
            .filter(|f| {
                std::fs::read(f)
                    .map(|b| b.windows(needle.len()).any(|w| w == needle))
                    .unwrap_or(false)
            })
            .collect()
    };
    assert!(
        !found(&others[0].1).is_empty(),
        "the control: another person's sealed identity is in the database files"
    );
    for (p, sealed) in &theirs_sealed {
        let at = found(sealed);
        assert!(
            at.is_empty(),
            "a deleted identity of {p} is still in {at:?}"
        );
    }
}

/// Every identity row of a store as the database holds it (sealed).
fn sealed_identities(store: &StoreAt) -> Vec<(String, Vec<u8>)> {
    let (rt, st) = reader(store);
    rt.block_on(st.sealed_identities()).expect("identities")
}

#[test]
fn backup_wipe_restore_gives_the_same_state() {
    backup_restore(&Meta::Sqlite);
}

#[test]
fn postgres_backup_wipe_restore_gives_the_same_state() {
    if let Some(meta) = Meta::postgres() {
        backup_restore(&meta);
    }
}

/// R-OP-8 (issue #8): a store with records, quarantine, operator state and audit log is
/// backed up, wiped (folder and database) and restored from the backup and the separately
/// kept keys; its state digest (every table and every batch file) and its records are what
/// they were. A damaged backup is refused.
fn backup_restore(meta: &Meta) {
    let fx = fixture(20);
    let store = meta.store(fx.root.join("store"));
    init(&store);
    let inbox = fx.root.join("inbox");
    fill(&inbox, &fx.envelopes);
    std::fs::write(inbox.join("zz-garbage"), b"not an envelope").expect("garbage");
    let out = store
        .vault()
        .args(run_args(&fx, &inbox, &store))
        .output()
        .expect("intake");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::bootstrap(&mut store.vault(), &store.dir);
    let digest = |s: &StoreAt| {
        let out = s
            .vault()
            .args(["digest", "--store"])
            .arg(&s.dir)
            .output()
            .expect("digest");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    };
    let before = digest(&store);
    let records = dump(&store);
    assert!(!records.is_empty());
    let backup = fx.root.join("backup");
    let out = store
        .vault()
        .args(["backup", "--store"])
        .arg(&store.dir)
        .arg("--to")
        .arg(&backup)
        .output()
        .expect("backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(&format!("state digest {before}")), "{said}");
    assert!(said.contains("keys not included"));
    assert!(
        !backup.join("files/keys/master.key").exists(),
        "secret keys stay out by default"
    );
    assert!(
        backup.join("files/admin/audit.log").exists()
            && backup.join("files/admin/state.sealed").exists()
    );
    // The keys' own offline copy, then the wipe: folder and database.
    let keys = fx.root.join("key-backup");
    std::fs::create_dir_all(&keys).expect("dir");
    for k in ["master.key", "link.key", "audit.key"] {
        std::fs::copy(store.dir.join("keys").join(k), keys.join(k)).expect("copy key");
    }
    std::fs::remove_dir_all(&store.dir).expect("wipe");
    if let Meta::Postgres(pg) = meta {
        let db = store
            .database
            .split('?')
            .next()
            .and_then(|s| s.rsplit('/').next())
            .expect("name");
        pg.sql("postgres", &format!("DROP DATABASE {db}"))
            .expect("drop");
    }
    let fresh = meta.store(fx.root.join("store"));
    let restore = |s: &StoreAt, from: &Path| {
        s.vault()
            .args(["restore", "--from"])
            .arg(from)
            .arg("--store")
            .arg(&s.dir)
            .arg("--register")
            .arg(vault::admin::register::default_path(&s.dir))
            .output()
            .expect("restore")
    };
    let out = restore(&fresh, &backup);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("put keys/master.key and keys/link.key back")
    );
    // A damaged copy of the backup is refused before anything is written.
    let damaged = fx.root.join("damaged");
    copy_tree(&backup, &damaged);
    let batch = std::fs::read_dir(damaged.join("files/records"))
        .expect("records")
        .next()
        .expect("a batch")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&batch).expect("read");
    bytes[40] ^= 1;
    std::fs::write(&batch, bytes).expect("write");
    let out = restore(&fresh, &damaged);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backup damaged: records/batch-"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the keys put back, the restore gives the same state.
    std::fs::create_dir_all(fresh.dir.join("keys")).expect("dir");
    for k in ["master.key", "link.key", "audit.key"] {
        std::fs::copy(keys.join(k), fresh.dir.join("keys").join(k)).expect("key back");
    }
    let out = restore(&fresh, &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest(&fresh), before);
    assert_eq!(dump(&fresh), records);
    let s = status(&fresh);
    assert_eq!(s["quarantine"].as_array().map(Vec::len), Some(1));
    let out = vault()
        .args(["audit", "verify", "--store"])
        .arg(&fresh.dir)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A second restore into the restored store is refused.
    let out = restore(&fresh, &backup);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds record batches"));
}

fn copy_tree(from: &Path, to: &Path) {
    for f in testkit::files_under(from) {
        let target = to.join(f.strip_prefix(from).expect("under"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("dir");
        std::fs::copy(&f, &target).expect("copy");
    }
}
