//! Releases end to end (issue #10): synthetic data → intake → method proposed and approved
//! → recipient registered → a person opts out → release request (the vault builds and
//! anonymizes) → first approval → second confirmation → package in the outbox → `diode send`
//! over the second one-way link → `egress serve` → QUIC + mutual TLS → `enclave receive`.
//! The received table is checked for k-anonymity here, independently of the anonymizer, and
//! its manifest against the vault's key. Then the refusals, each with its audit entry:
//! approval by the requester, one reviewer approving and confirming, an unapproved method,
//! a tampered package at the receiver, and a package sealed to the wrong recipient key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const K: usize = 3;

/// The two tests here each run a vault with intake, an operator socket and a synthetic
/// population; run side by side on two cores they starve each other's timeouts, so they take
/// turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vault"))
}

fn sibling(name: &str) -> Command {
    Command::new(common::bin(name))
}

struct Researcher {
    dir: PathBuf,
    out: PathBuf,
}

use common::{free_udp_port, served, Served};

#[test]
fn a_release_reaches_the_researcher_k_anonymous_and_signed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Served {
        fx,
        store,
        outbox,
        mut ops,
        mut serve,
        admin,
    } = served();
    let root = fx.root.clone();
    let op = ops.login("op1");
    let rev1 = ops.login("rev1");
    let rev2 = ops.login("rev2");

    // Methods: one approved by a second person, one left proposed.
    common::write_method(&root.join("method"), K);
    let r = ops.call(
        "method.propose",
        Some(&admin),
        &[
            ("name", "age-sex-postal k3"),
            ("dir", root.join("method").to_str().expect("utf-8")),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let method = r.result["id"].as_str().expect("id").to_owned();
    let r = ops.call("method.approve", Some(&rev1), &[("id", &method)]);
    assert!(r.ok, "{:?}", r.error);
    common::write_method(&root.join("method2"), 5);
    let r = ops.call(
        "method.propose",
        Some(&admin),
        &[
            ("name", "k5 (not approved)"),
            ("dir", root.join("method2").to_str().expect("utf-8")),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let unapproved = r.result["id"].as_str().expect("id").to_owned();

    // The researcher's keys, and the recipient registered with the encryption key.
    let rng = ring::rand::SystemRandom::new();
    let lab = Researcher {
        dir: root.join("lab"),
        out: root.join("lab/releases"),
    };
    let lab_pub = common::researcher_keys(&lab.dir);
    let recipient_args = |key: &str| -> Vec<(&'static str, String)> {
        vec![
            ("name", "研究 一郎".into()),
            ("organisation", "Example University".into()),
            ("key", key.trim().to_owned()),
            ("contact", "lab@example.ac.jp".into()),
        ]
    };
    let mut a = recipient_args(&lab_pub);
    a.push(("id", "lab-1".into()));
    let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ops.call("recipient.add", Some(&admin), &a);
    assert!(r.ok, "{:?}", r.error);

    let request = |ops: &Operators, token: &str, method: &str| {
        ops.call(
            "release.request",
            Some(token),
            &[
                ("recipient", "lab-1"),
                ("purpose", "糖尿病の疫学研究"),
                ("committee_decision", "C-2026-017"),
                ("committee_date", "2026-11-01"),
                ("conditions", "研究目的外利用・第三者提供の禁止"),
                ("cohort", "all"),
                ("method", method),
            ],
        )
    };
    use common::Operators;

    // Before the opt-out: the cohort as the store has it.
    let r = request(&ops, &op, &method);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let before = r.result["selection"].clone();
    assert!(
        before["selected"].as_u64().expect("selected") >= 20,
        "{before}"
    );
    let r = ops.call("release.cancel", Some(&op), &[("id", "R0001")]);
    assert!(r.ok, "{:?}", r.error);

    // A person opts out (named by a patient id at their first institution).
    let truth = std::fs::read_to_string(root.join("synth/truth/links.csv")).expect("truth");
    let line = truth.lines().nth(1).expect("a person");
    let f: Vec<&str> = line.split(',').collect();
    let r = ops.call(
        "optout.add",
        Some(&op),
        &[
            ("institution", f[1]),
            ("patient_id", f[2]),
            ("source", "本人の求め"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);

    // Refused: an unapproved method.
    let r = request(&ops, &op, &unapproved);
    assert!(!r.ok);
    assert!(
        r.error.as_deref().unwrap_or("").contains("not approved"),
        "{:?}",
        r.error
    );

    // The release: built without the opted-out person.
    let r = request(&ops, &op, &method);
    assert!(r.ok, "{:?}", r.error);
    let id = r.result["id"].as_str().expect("id").to_owned();
    let sel = r.result["selection"].clone();
    assert_eq!(
        sel["persons"].as_u64().expect("n") + 1,
        before["persons"].as_u64().expect("n"),
        "the opted-out person is gone from the store: {before} → {sel}"
    );
    assert_eq!(sel["opted_out"].as_u64(), Some(0), "{sel}");
    let rows = r.result["rows"].as_u64().expect("rows");
    assert_eq!(rows, sel["selected"].as_u64().expect("selected"));

    // Refused: the requester approving (not a reviewer), a reviewer confirming their own
    // approval, confirming before approval.
    let r = ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(!r.ok, "confirmed before approval");
    let r = ops.call("release.approve", Some(&op), &[("id", &id)]);
    assert!(!r.ok, "the requester approved");
    let r = ops.call("release.show", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.result["report"]["config"]["k"], serde_json::json!(K));
    let r = ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call("release.confirm", Some(&rev1), &[("id", &id)]);
    assert!(!r.ok, "one reviewer approved and confirmed");
    assert!(
        r.error.as_deref().unwrap_or("").contains("second reviewer"),
        "{:?}",
        r.error
    );
    assert!(
        !outbox
            .join("incoming")
            .read_dir()
            .expect("outbox")
            .any(|e| e.is_ok()),
        "nothing may reach the outbox before the second confirmation"
    );
    let r = ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let outbox_file = r.result["outbox_file"].as_str().expect("file").to_owned();
    eprintln!(
        "release {id}: {rows} rows of {} persons, package {} bytes",
        sel["persons"], r.result["bytes"]
    );
    assert_eq!(outbox_file, format!("{id}.lab-1.release"));

    // The ledger has it; the audit log has every step and every refusal.
    let r = ops.call("ledger.list", Some(&op), &[]);
    assert!(r.ok, "{:?}", r.error);
    let ledger = r.result.as_array().expect("rows");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["recipient"], "lab-1");
    assert_eq!(ledger[0]["method"], Value::String(method.clone()));
    let r = ops.call(
        "ledger.onward.add",
        Some(&op),
        &[
            ("release", &id),
            ("to", "共同研究先 B大学"),
            ("purpose", "共同解析"),
            ("permission", "許可書 P-2026-3"),
            ("reported", "2026-11-20"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);

    // The same ledger from the command line, as CSV, the way an operator exports it.
    let socket = root.join("admin.sock");
    let session = root.join("op1.session");
    let code = ops.code("op1");
    let login = format!("{}\n{code}\n", ops.passwords["op1"]);
    common::ok(
        &common::admin_cli(
            vault(),
            &socket,
            &session,
            &["login", "--user", "op1"],
            &login,
        ),
        "login",
    );
    let ledger_cli = |extra: &[&str]| {
        let out = vault()
            .arg("ledger")
            .arg("--csv")
            .arg("--socket")
            .arg(&socket)
            .arg("--session-file")
            .arg(&session)
            .args(extra)
            .output()
            .expect("vault ledger");
        common::ok(&out, "vault ledger")
    };
    let csv = ledger_cli(&[]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("release,sent,recipient,"), "{csv}");
    for want in [id.as_str(), "lab-1", "C-2026-017", method.as_str()] {
        assert!(lines[1].contains(want), "{want} not in {csv}");
    }
    let onward = ledger_cli(&["--onward"]);
    assert!(onward.contains("許可書 P-2026-3"), "{onward}");
    serve.kill();
    let entries = common::audit_entries(&store);
    let count = |action: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("release.request", "ok"), 2);
    // Refusals by the role table are audited as "refused", by the workflow as "failed".
    assert!(
        count("release.request", "failed") >= 1,
        "unapproved method not audited"
    );
    assert!(
        count("release.approve", "refused") >= 1,
        "requester's approval not audited"
    );
    assert!(
        count("release.confirm", "failed") >= 2,
        "refused confirmations not audited"
    );
    assert_eq!(count("release.confirm", "ok"), 1);
    assert_eq!(count("ledger.onward.add", "ok"), 1);

    // PKI: the operator's CA issues egress's client and the researcher's server certificate.
    let ca = common::TestCa::new(&root);
    let (egress_cert, egress_key) = ca.issue("egress", pki::Role::Client, &[]);
    let (lab_cert, lab_key) = ca.issue(
        "lab-1.example",
        pki::Role::Server,
        &["lab-1.example".into()],
    );

    // The researcher's receiver.
    let lab_port = free_udp_port();
    let receiver = common::Running(
        sibling("enclave")
            .arg("receive")
            .arg("--bind")
            .arg(format!("127.0.0.1:{lab_port}"))
            .arg("--key")
            .arg(lab.dir.join("lab.key"))
            .arg("--vault-key")
            .arg(store.join("keys/release.pub"))
            .arg("--receipt-key")
            .arg(lab.dir.join("receipt.key"))
            .arg("--ca")
            .arg(&ca.crt)
            .arg("--crl")
            .arg(&ca.crl)
            .arg("--cert")
            .arg(&lab_cert)
            .arg("--tls-key")
            .arg(&lab_key)
            .arg("--out")
            .arg(&lab.out)
            .stdout(std::fs::File::create(root.join("receive.out")).expect("out"))
            .stderr(std::fs::File::create(root.join("receive.log")).expect("log"))
            .spawn()
            .expect("receive"),
    );

    // Egress: the link's receiver and the push loop.
    let link_key = root.join("vault-egress.key");
    keystore::generate_link_key("vault-egress", &link_key, &rng).expect("link key");
    common::write_recipients(
        &root.join("recipients.json"),
        &lab.dir,
        &format!("127.0.0.1:{lab_port}"),
    );
    let egress_port = free_udp_port();
    let egress_inbox = root.join("egress/inbox");
    let egress_state = root.join("egress/state");
    let mut egress = common::Running(
        sibling("egress")
            .arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{egress_port}"))
            .arg("--link-key")
            .arg(&link_key)
            .arg("--events")
            .arg(root.join("egress/link-events.jsonl"))
            .arg("--scan-ms")
            .arg("100")
            .arg("--inbox")
            .arg(&egress_inbox)
            .arg("--state")
            .arg(&egress_state)
            .arg("--recipients")
            .arg(root.join("recipients.json"))
            .arg("--vault-key")
            .arg(store.join("keys/release.pub"))
            .arg("--ca")
            .arg(&ca.crt)
            .arg("--cert")
            .arg(&egress_cert)
            .arg("--key")
            .arg(&egress_key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("egress.log")).expect("log"))
            .spawn()
            .expect("egress"),
    );
    std::thread::sleep(Duration::from_millis(500));

    // The second one-way link carries the package from the vault's outbox to egress.
    common::ok(
        &sibling("diode")
            .arg("send")
            .arg("--to")
            .arg(format!("127.0.0.1:{egress_port}"))
            .arg("--outbox")
            .arg(&outbox)
            .arg("--key-file")
            .arg(&link_key)
            .arg("--rate-mbit")
            .arg("100")
            .arg("--once")
            .output()
            .expect("diode send"),
        "diode send",
    );
    let deliveries = egress_state.join("deliveries.jsonl");
    let delivered = |n: usize| -> Vec<Value> {
        let started = Instant::now();
        loop {
            let lines: Vec<Value> = std::fs::read_to_string(&deliveries)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .filter(|d: &Value| d["outcome"] != "retry")
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no delivery after 60 s: egress: {}\nreceive: {}",
                std::fs::read_to_string(root.join("egress.log")).unwrap_or_default(),
                std::fs::read_to_string(root.join("receive.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let sent_at = Instant::now();
    let d = delivered(1);
    eprintln!(
        "delivered {:.1} s after diode send returned",
        sent_at.elapsed().as_secs_f64()
    );
    assert_eq!(d[0]["outcome"], "delivered", "{}", d[0]);
    assert_eq!(d[0]["release"], Value::String(id.clone()));
    socket_loop_raised(&root.join("egress/link-events.jsonl"));

    // What the researcher has: the manifest verifies with the vault's key, the files match
    // it, the statement is there, and the table is k-anonymous by our own count.
    let (manifest, entries_in, n) =
        common::check_received(&lab.out.join(&id), &store.join("keys/release.pub"), K);
    assert_eq!(manifest.release, id);
    assert_eq!(manifest.recipient, "lab-1");
    assert_eq!(manifest.method, method);
    assert_eq!(n as u64, rows);
    // No pseudonym, link tag or key leaves (R-AN-4): none of the store's appears anywhere in
    // what the researcher got.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let secrets: Vec<String> = rt.block_on(async {
        let master = keystore::load_link_key(&store.join("keys/master.key")).expect("master");
        let st = vault_store::Store::open_reader(
            &store,
            vault_store::MasterKey::new(*master.key).expect("key"),
            &vault_store::Database::default(),
        )
        .await
        .expect("open");
        let mut v = Vec::new();
        for (tag, pseudonym, _) in st.link_map().await.expect("link map") {
            v.push(tag);
            v.push(pseudonym);
        }
        v
    });
    assert!(secrets.len() > 40, "{} link entries", secrets.len());
    for key in ["master.key", "link.key", "release.key"] {
        let text = std::fs::read_to_string(store.join("keys").join(key)).expect("key");
        // The secret is the `key:` line (the key id beside it is public by design).
        let secret_lines = text.lines().filter(|l| l.starts_with("key:"));
        for word in secret_lines
            .flat_map(str::split_whitespace)
            .filter(|w| w.len() >= 32)
        {
            for (name, bytes) in &entries_in {
                assert!(
                    !String::from_utf8_lossy(bytes).contains(word),
                    "{name} carries {key}"
                );
            }
        }
    }
    for (name, bytes) in &entries_in {
        let text = String::from_utf8_lossy(bytes);
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name} carries the pseudonym or tag {s}"
            );
        }
    }

    // Refused at the receiver: a tampered package (one ciphertext byte flipped), and a
    // package sealed to another key than the one registered for lab-1. Both go through egress
    // (which cannot see inside) and are refused by the receiver or by egress, never written.
    let sealed = std::fs::read(store.join(format!("admin/releases/{id}/package.envelope")))
        .expect("package");
    let mut tampered = sealed.clone();
    let at = tampered.len() - 100;
    tampered[at] ^= 0x40;
    // Drops a package into egress's inbox as the link would and waits for its record, which
    // must be a refusal saying `why`.
    let refused_by_egress = |release: &str, bytes: &[u8], nth: usize, why: &str| {
        std::fs::write(
            egress_inbox.join(format!("{nth:020}-{release}.lab-1.release")),
            bytes,
        )
        .expect("write");
        let d = delivered(nth + 1);
        assert_eq!(d[nth]["outcome"], "refused", "{}", d[nth]);
        let error = d[nth]["error"].as_str().unwrap_or("");
        assert!(error.contains(why), "{}", d[nth]);
        assert!(!lab.out.join(release).exists());
    };
    refused_by_egress("R9001", &tampered, 1, "does not open");

    // Sealed to another recipient key: egress refuses it before connecting.
    let other = envelope::RecipientSecretKey::generate("lab-1", &rng).expect("key");
    let signer = keystore::load_signing_key(&store.join("keys/release.key")).expect("key");
    let archive = b"not even a package".to_vec();
    let mut wrong = Vec::new();
    envelope::seal(
        envelope::SealParams {
            recipient: other.public(),
            signer: &signer,
            content_type: envelope::ContentType::Release,
            segment_size: envelope::DEFAULT_SEGMENT_SIZE,
        },
        envelope::measure(&archive[..]).expect("measure"),
        &rng,
        &archive[..],
        &mut wrong,
    )
    .expect("seal");
    refused_by_egress("R9002", &wrong, 2, "sealed to key");
    // And the receiver refuses it too when it arrives another way.
    std::fs::write(root.join("wrong.release"), &wrong).expect("write");
    let out = sibling("enclave")
        .arg("receive")
        .arg("--key")
        .arg(lab.dir.join("lab.key"))
        .arg("--vault-key")
        .arg(store.join("keys/release.pub"))
        .arg("--receipt-key")
        .arg(lab.dir.join("receipt.key"))
        .arg("--out")
        .arg(&lab.out)
        .arg("--file")
        .arg(root.join("wrong.release"))
        .output()
        .expect("receive --file");
    assert_eq!(out.status.code(), Some(3), "a refused package exits 3");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not open"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    egress.kill();
    drop(receiver);
    let summary = std::fs::read_to_string(root.join("receive.out")).unwrap_or_default();
    assert!(
        summary.contains(&format!("received release {id}")),
        "{summary}"
    );
    // Egress never listened outside: its only socket was the link's receiver.
    let log = std::fs::read_to_string(root.join("egress.log")).unwrap_or_default();
    assert!(log.contains("delivered"), "{log}");
}

/// Issue #12, cumulative-release checks: a second release whose cohort differs from an
/// earlier one by 3 persons (k = 5; here the 3 opted out in between) is flagged, cannot be
/// approved until a reviewer records an override with a reason, and the override with its
/// reason is in the audit log.
#[test]
fn a_cohort_three_persons_apart_is_flagged_and_needs_a_recorded_override() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Served {
        fx,
        store,
        mut ops,
        mut serve,
        admin,
        ..
    } = served();
    let root = fx.root.clone();
    let op = ops.login("op1");
    let rev1 = ops.login("rev1");
    common::write_method(&root.join("method"), 5);
    let r = ops.call(
        "method.propose",
        Some(&admin),
        &[
            ("name", "age-sex-postal k5"),
            ("dir", root.join("method").to_str().expect("utf-8")),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let method = r.result["id"].as_str().expect("id").to_owned();
    let r = ops.call("method.approve", Some(&rev1), &[("id", &method)]);
    assert!(r.ok, "{:?}", r.error);
    let lab_pub = common::researcher_keys(&root.join("lab"));
    let r = ops.call(
        "recipient.add",
        Some(&admin),
        &[
            ("id", "lab-1"),
            ("name", "研究 一郎"),
            ("organisation", "Example University"),
            ("key", lab_pub.trim()),
            ("contact", "lab@example.ac.jp"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let request = |ops: &common::Operators| {
        ops.call(
            "release.request",
            Some(&op),
            &[
                ("recipient", "lab-1"),
                ("purpose", "糖尿病の疫学研究"),
                ("committee_decision", "C-2026-021"),
                ("committee_date", "2026-11-01"),
                ("conditions", "研究目的外利用・第三者提供の禁止"),
                ("cohort", "all"),
                ("method", &method),
            ],
        )
    };

    let r = request(&ops);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    assert_eq!(
        r.result["findings"],
        serde_json::json!([]),
        "first release flagged"
    );
    let before = r.result["selection"]["selected"]
        .as_u64()
        .expect("selected");
    // The recipient receives it: from then on it holds these persons, whatever happens to
    // the store (an opt-out removes persons from every build still pending, issue #31, so
    // only a provided release can be subtracted from a later one).
    let rev2 = ops.login("rev2");
    let r = ops.call("release.approve", Some(&rev1), &[("id", "R0001")]);
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call("release.confirm", Some(&rev2), &[("id", "R0001")]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));

    // Three persons opt out (three different persons, each by one of their patient ids).
    let truth = std::fs::read_to_string(root.join("synth/truth/links.csv")).expect("truth");
    let mut seen = std::collections::BTreeSet::new();
    for line in truth.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if seen.len() == 3 || !seen.insert(f[0].to_owned()) {
            continue;
        }
        let r = ops.call(
            "optout.add",
            Some(&op),
            &[
                ("institution", f[1]),
                ("patient_id", f[2]),
                ("source", "本人の求め"),
            ],
        );
        assert!(r.ok, "{:?}", r.error);
    }

    let r = request(&ops);
    assert!(r.ok, "{:?}", r.error);
    let id = r.result["id"].as_str().expect("id").to_owned();
    let after = r.result["selection"]["selected"]
        .as_u64()
        .expect("selected");
    assert_eq!(before - after, 3, "the setup must remove exactly 3 persons");
    let findings = r.result["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "differencing");
    assert_eq!(findings[0]["earlier"], "R0001");
    assert_eq!(findings[0]["persons"], 3);

    // The reviewer sees it in the report, and cannot approve without an override.
    let r = ops.call("release.show", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    let checks = &r.result["report"]["cumulative_checks"];
    assert_eq!(checks["compared_with"], 1, "{checks}");
    assert_eq!(checks["findings"][0]["persons"], 3, "{checks}");
    let r = ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(!r.ok, "a flagged release was approved");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("release override"),
        "{:?}",
        r.error
    );
    let r = ops.call(
        "release.override",
        Some(&op),
        &[("id", &id), ("reason", "mine")],
    );
    assert!(!r.ok, "the operator overrode (not a reviewer)");
    let reason = "委員会 C-2026-021 が撤回3名の差分リスクを審議し許容";
    let r = ops.call(
        "release.override",
        Some(&rev1),
        &[("id", &id), ("reason", reason)],
    );
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);

    serve.kill();
    let entries = common::audit_entries(&store);
    let overrides: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "release.override" && e["outcome"] == "ok")
        .collect();
    assert_eq!(overrides.len(), 1);
    let o = overrides[0];
    assert_eq!(o["actor"], "rev1", "{o}");
    assert_eq!(o["target"], id.as_str(), "{o}");
    assert_eq!(o["detail"]["reason"], reason, "{o}");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "release.approve" && e["outcome"] == "failed"));
}

/// A person-level method (issue #12) in `dir`: the person table's age, sex and postal code,
/// and the set of each person's ICD-10 diagnoses, under `profile`.
fn write_person_method(dir: &std::path::Path, profile: &str) {
    common::write_method(dir, K);
    let mut codes: Vec<String> = Vec::new();
    for d in synth::tables::DISEASES {
        codes.push(d.icd10.to_owned());
        codes.push(d.icd10.replace('.', ""));
    }
    codes.sort();
    codes.dedup();
    let h = anonymize::builders::icd10("code", &codes).expect("icd10");
    std::fs::write(
        dir.join("icd10.csv"),
        anonymize::builders::to_arx_csv(&h).expect("csv"),
    )
    .expect("write");
    let (k, limit) = if profile == "pseudonymized" {
        (1, 0.0)
    } else {
        (K, 0.5)
    };
    let settings = serde_json::json!({
        "model": {
            "quasi_identifiers": [
                {"column": "age", "hierarchy": "age.csv"},
                {"column": "sex", "hierarchy": "sex.csv"},
                {"column": "postal3", "hierarchy": "postal3.csv"}
            ],
            "k": k, "suppression_limit": limit, "metric": "loss"
        },
        "id": "person", "kind_column": "kind", "code_column": "code",
        "event_sets": [{"kind": "dx", "hierarchy": "icd10.csv"}],
        "shift_dates": ["date"], "max_shift_days": 30,
        "profile": profile
    });
    std::fs::write(
        dir.join("method.json"),
        serde_json::to_vec_pretty(&settings).expect("json"),
    )
    .expect("method");
}

#[test]
fn person_level_releases_and_pseudonymized_data_only_to_certified_users() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Served {
        fx,
        store,
        outbox,
        mut ops,
        mut serve,
        admin,
    } = served();
    let root = fx.root.clone();
    let op = ops.login("op1");
    let rev1 = ops.login("rev1");
    let rev2 = ops.login("rev2");
    let mut methods = Vec::new();
    for profile in ["anonymized", "pseudonymized"] {
        let dir = root.join(format!("method-{profile}"));
        write_person_method(&dir, profile);
        let r = ops.call(
            "method.propose",
            Some(&admin),
            &[
                ("name", &format!("persons {profile}")),
                ("dir", dir.to_str().expect("utf-8")),
            ],
        );
        assert!(r.ok, "{:?}", r.error);
        let id = r.result["id"].as_str().expect("id").to_owned();
        let r = ops.call("method.approve", Some(&rev1), &[("id", &id)]);
        assert!(r.ok, "{:?}", r.error);
        methods.push(id);
    }
    // lab-1 is an ordinary recipient; lab-2 is registered as a certified user.
    let rng = ring::rand::SystemRandom::new();
    let mut keys = Vec::new();
    for lab in ["lab-1", "lab-2"] {
        let prefix = root.join(lab);
        keystore::generate_pair(keystore::PairKind::Encryption, lab, &prefix, &rng).expect("key");
        let public = std::fs::read_to_string(prefix.with_extension("pub")).expect("pub");
        let mut a = vec![
            ("id", lab),
            ("name", "研究 一郎"),
            ("organisation", "Example University"),
            ("key", public.trim()),
            ("contact", "lab@example.ac.jp"),
        ];
        if lab == "lab-2" {
            a.push(("certified_user", "認定利用-2026-0001"));
        }
        let r = ops.call("recipient.add", Some(&admin), &a);
        assert!(r.ok, "{:?}", r.error);
        keys.push(prefix);
    }
    let request = |recipient: &str, method: &str| {
        ops.call(
            "release.request",
            Some(&op),
            &[
                ("recipient", recipient),
                ("purpose", "糖尿病の経過の研究"),
                ("committee_decision", "C-2026-030"),
                ("committee_date", "2026-11-01"),
                ("conditions", "研究目的外利用・第三者提供の禁止"),
                ("cohort", "all"),
                ("method", method),
            ],
        )
    };

    // Pseudonymized data to a recipient who is not a certified user: refused, nothing built.
    let r = request("lab-1", &methods[1]);
    assert!(
        !r.ok,
        "pseudonymized data requested for an uncertified recipient"
    );
    let e = r.error.unwrap_or_default();
    assert!(e.contains("certified user"), "{e}");
    assert!(!store.join("admin/releases/R0001").exists(), "built anyway");

    // Anonymized, person-level, to the ordinary recipient: persons and their events, k per
    // person.
    let r = request("lab-1", &methods[0]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    assert_eq!(r.result["profile"], "anonymized");
    assert_eq!(
        r.result["files"],
        serde_json::json!(["persons.csv", "events.csv", "report.json"])
    );
    let anon = r.result["id"].as_str().expect("id").to_owned();
    let r = ops.call("release.show", Some(&rev1), &[("id", &anon)]);
    assert!(r.ok, "{:?}", r.error);
    let report = &r.result["report"];
    assert!(report["min_class"].as_u64().expect("min") >= K as u64);
    assert_eq!(report["persons"]["unit"], "person");
    assert!(report["persons"]["events"].as_u64().expect("events") > 0);
    assert_eq!(report["profile"]["name"], "anonymized");

    // Pseudonymized to the certified user: built, approved by two reviewers, packaged.
    let r = request("lab-2", &methods[1]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let id = r.result["id"].as_str().expect("id").to_owned();
    let selected = r.result["selection"]["selected"].as_u64().expect("n");
    assert_eq!(
        r.result["suppressed"], 0,
        "pseudonymized data suppresses nobody"
    );
    let r = ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let sealed = std::fs::read(outbox.join(format!("incoming/{id}.lab-2.release"))).expect("pkg");
    let secret = keystore::load_recipient_secret(&keys[1].with_extension("key")).expect("key");
    let vault_key = keystore::load_verifying_key(&store.join("keys/release.pub")).expect("pub");
    let mut archive = Vec::new();
    envelope::open(
        &secret,
        std::slice::from_ref(&vault_key),
        &sealed[..],
        &mut archive,
    )
    .expect("the package opens with lab-2's key");
    let v = release::package::verify(&archive, &vault_key).expect("verifies");
    assert_eq!(v.manifest.profile, "pseudonymized");
    assert_eq!(
        v.manifest.statement,
        release::package::PSEUDONYMIZED_STATEMENT
    );
    let file = |name: &str| {
        let (_, b) = v.files.iter().find(|(n, _)| n == name).expect(name);
        String::from_utf8(b.clone()).expect("utf-8")
    };
    // Values kept, ids replaced by release keys, one row per person of the cohort.
    let persons = file("persons.csv");
    let mut lines = persons.lines();
    assert_eq!(lines.next(), Some("person,age,sex,postal3,dx_codes"));
    let ids: std::collections::BTreeSet<&str> =
        lines.map(|l| l.split(',').next().expect("id")).collect();
    assert_eq!(ids.len() as u64, selected);
    assert!(
        ids.iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())),
        "an id that is not a release key"
    );
    let events = file("events.csv");
    let known: std::collections::BTreeSet<String> = synth::tables::DISEASES
        .iter()
        .flat_map(|d| [d.icd10.to_owned(), d.icd10.replace('.', "")])
        .collect();
    let mut n = 0;
    for line in events.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert!(ids.contains(f[0]), "an event of nobody released");
        assert!(known.contains(f[3]), "code {} generalized or unknown", f[3]);
        n += 1;
    }
    assert!(n > 0, "no events released");
    // The recipient register says who is certified.
    let r = ops.call("recipient.list", Some(&admin), &[]);
    assert!(r.ok, "{:?}", r.error);
    let text = r.result.to_string();
    assert!(text.contains("認定利用-2026-0001"), "{text}");
    serve.kill();
}

/// Egress's link receiver runs on a thread of its own whose socket loop raised itself
/// `diode_io::SOCKET_LOOP_RAISE` nice steps (root may; docs/diode.md, "Thread priorities"),
/// or, unprivileged, says why it could not.
fn socket_loop_raised(events: &Path) {
    let text = std::fs::read_to_string(events).expect("egress link events");
    let event: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "socket_loop_priority")
        .expect("a socket_loop_priority event");
    if nix::unistd::geteuid().is_root() {
        let before = event["process_nice"].as_i64().expect("process nice");
        let expected = (before - i64::from(diode_io::SOCKET_LOOP_RAISE)).max(-20);
        assert_eq!(event["nice"].as_i64(), Some(expected), "{event}");
    } else {
        assert!(event["nice"].is_null(), "{event}");
        assert!(
            event["why"]
                .as_str()
                .is_some_and(|w| w.contains("CAP_SYS_NICE")),
            "{event}"
        );
    }
}
