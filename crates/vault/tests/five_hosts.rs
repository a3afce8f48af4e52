//! The five-host harness (issue #11, `make e2e`): institution, ingress, vault, egress and
//! researcher as network namespaces on veth cables, each host behind its deployed nftables
//! rule set (`deploy/nftables/`), running the real binaries through the whole flow —
//! `enclave submit` → `ingress serve` → one-way link → `vault serve` (intake, operators,
//! release with two reviewers) → one-way link → `egress serve` → `enclave receive`.
//!
//! Then it checks what the deployment promises: the researcher's table is k-anonymous and
//! its manifest verifies; nothing came back on either one-way link (R-GW-4, R-GW-5), by the
//! harness's own watch counters and by the rule sets' reverse counters; ingress, vault and
//! egress have no listening socket but the allowed ones (R-GW-2, R-GW-3, R-GW-6); the
//! audit chain verifies (R-OP-3). A second test loads a deliberately wrong vault rule set
//! and has a process send back across the link: the same check must catch it.
//!
//! Needs root, `ip`, `nft` and `ss`; skips with the reason otherwise, unless
//! `ENCLAVE_E2E_REQUIRED` is set (as `make e2e` does), when it fails instead.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Running;
use keystore::PairKind;
use serde_json::Value;
use testkit::{with_defines, Hosts};

const K: usize = 3;
const INGRESS_RULES: &str = include_str!("../../../deploy/nftables/ingress.nft");
const VAULT_RULES: &str = include_str!("../../../deploy/nftables/vault.nft");
const EGRESS_RULES: &str = include_str!("../../../deploy/nftables/egress.nft");

// The site: institutions on 198.51.100.0/24, the two one-way links on 192.0.2.8/29 and
// 192.0.2.16/29, the researcher at 203.0.113.10 (documentation ranges, inside namespaces).
const INGRESS_QUIC: &str = "198.51.100.1:4433";
const VAULT_LINK: &str = "192.0.2.10:47000";
const EGRESS_LINK: &str = "192.0.2.18:47001";
const LAB_QUIC: &str = "203.0.113.10:4433";

fn unavailable() -> Option<String> {
    let why = testkit::root_test_unavailable(&["ip", "nft", "ss"])?;
    assert!(
        std::env::var_os("ENCLAVE_E2E_REQUIRED").is_none(),
        "the five-host harness cannot run: {why}"
    );
    Some(why)
}

/// The five hosts cabled as deployed, no rule sets yet.
fn site(tag: &str) -> Hosts {
    let mut h = Hosts::create(tag, &["inst", "ingress", "vault", "egress", "lab"]).expect("hosts");
    for (a, a_dev, a_ip, b, b_dev, b_ip, one_way) in [
        (
            "inst",
            "net",
            "198.51.100.20/24",
            "ingress",
            "inst",
            "198.51.100.1/24",
            false,
        ),
        (
            "ingress",
            "link-out",
            "192.0.2.9/29",
            "vault",
            "link-in",
            "192.0.2.10/29",
            true,
        ),
        (
            "vault",
            "link-out",
            "192.0.2.17/29",
            "egress",
            "link-in",
            "192.0.2.18/29",
            true,
        ),
        (
            "egress",
            "ext",
            "203.0.113.1/24",
            "lab",
            "net",
            "203.0.113.10/24",
            false,
        ),
    ] {
        h.cable(a, a_dev, a_ip, b, b_dev, b_ip, one_way)
            .expect("cable");
    }
    h
}

/// The three rule sets with the site's values; `vault` may replace the vault's.
fn load_rules(h: &Hosts, vault: &str) {
    let ingress = with_defines(
        INGRESS_RULES,
        &[
            ("INSTITUTION_NETS", "{ 198.51.100.0/24 }"),
            ("QUIC_PORT", "4433"),
            ("VAULT_LINK", "192.0.2.10"),
            ("VAULT_LINK_PORT", "47000"),
        ],
    )
    .expect("ingress defines");
    h.load_rules("ingress", &ingress).expect("ingress rules");
    let vault = with_defines(
        vault,
        &[
            ("LINK_IN_DEV", "\"link-in\""),
            ("LINK_IN_ADDR", "192.0.2.10"),
            ("LINK_IN_PORT", "47000"),
            ("LINK_OUT_DEV", "\"link-out\""),
            ("EGRESS_LINK", "192.0.2.18"),
            ("EGRESS_LINK_PORT", "47001"),
        ],
    )
    .expect("vault defines");
    h.load_rules("vault", &vault).expect("vault rules");
    let egress = with_defines(
        EGRESS_RULES,
        &[
            ("LINK_IN_DEV", "\"link-in\""),
            ("LINK_IN_ADDR", "192.0.2.18"),
            ("LINK_IN_PORT", "47001"),
            ("EXT_DEV", "\"ext\""),
            ("RECIPIENTS", "{ 203.0.113.10 }"),
            ("RECIPIENT_PORT", "4433"),
        ],
    )
    .expect("egress defines");
    h.load_rules("egress", &egress).expect("egress rules");
}

/// What the harness measured of the site's boundaries.
#[derive(Debug)]
struct Boundaries {
    lines: Vec<String>,
    deviations: Vec<String>,
}

/// Reads every reverse counter and listening socket; a deviation for anything that came
/// back across a one-way link, anything a rule set had to stop going out, and any socket
/// but the allowed ones.
fn boundaries(h: &Hosts) -> Boundaries {
    let mut b = Boundaries {
        lines: Vec::new(),
        deviations: Vec::new(),
    };
    let mut zero = |what: String, n: Result<u64, String>| {
        let n = n.unwrap_or_else(|e| panic!("{what}: {e}"));
        b.lines.push(format!("{what}: {n}"));
        if n != 0 {
            b.deviations.push(format!("{what} is {n}, must be 0"));
        }
    };
    zero(
        "frames back on link 1 (vault → ingress), harness watch".into(),
        h.frames_back("ingress", "link-out"),
    );
    zero(
        "frames back on link 2 (egress → vault), harness watch".into(),
        h.frames_back("vault", "link-out"),
    );
    for (host, family, table, counter) in [
        ("vault", "netdev", "enclave_vault_link_in", "reverse_out"),
        ("vault", "inet", "enclave_vault", "reverse_in"),
        ("vault", "inet", "enclave_vault", "output_drop"),
        ("egress", "netdev", "enclave_egress_link_in", "reverse_out"),
        ("egress", "inet", "enclave_egress", "output_drop"),
        ("ingress", "inet", "enclave_ingress", "output_drop"),
    ] {
        zero(
            format!("{host} {table} {counter}"),
            h.counter(host, family, table, counter),
        );
    }
    for (host, allowed) in [
        ("ingress", INGRESS_QUIC),
        ("vault", VAULT_LINK),
        ("egress", EGRESS_LINK),
    ] {
        let sockets = h.listening(host).expect("ss");
        b.lines
            .push(format!("{host} sockets: {}", sockets.join(", ")));
        for s in &sockets {
            if *s != format!("udp {allowed}") {
                b.deviations
                    .push(format!("{host} has a socket it must not have: {s}"));
            }
        }
    }
    b
}

fn spawn(mut c: Command, log: &Path) -> Running {
    Running(
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn"),
    )
}

/// Waits up to `secs` for `done`, naming `what` (and `log`) if it never is.
fn wait_for(what: &str, secs: u64, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not after {secs} s\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_whole_flow_across_five_hosts_behind_their_rule_sets() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let h = site("e2e");
    load_rules(&h, VAULT_RULES);
    let fx = common::fixture(60);
    let root = fx.root.clone();
    let rng = ring::rand::SystemRandom::new();

    // PKI: the operator's CA issues ingress's and the researcher's server certificates and
    // the institutions' and egress's client certificates.
    let ca = common::TestCa::new(&root);
    let (ca_crt, crl) = (ca.crt.clone(), ca.crl.clone());
    let (ingress_cert, ingress_key) =
        ca.issue("ingress.test", pki::Role::Server, &["ingress.test".into()]);
    let (egress_cert, egress_key) = ca.issue("egress", pki::Role::Client, &[]);
    let (lab_cert, lab_key) = ca.issue(
        "lab-1.example",
        pki::Role::Server,
        &["lab-1.example".into()],
    );
    keystore::generate_pair(PairKind::Signing, "ingress", &root.join("receipts"), &rng)
        .expect("receipt key");

    // Ingress host: the QUIC receiver, then (below) the link sender.
    let outbox = root.join("ingress/outbox");
    std::fs::create_dir_all(root.join("ingress")).expect("dir");
    let mut c = h
        .command("ingress", common::bin("ingress").to_str().expect("utf-8"))
        .expect("cmd");
    c.args(["serve", "--listen", INGRESS_QUIC, "--sandbox-report"]);
    for (flag, file) in [
        ("--ca", ca_crt.clone()),
        ("--crl", crl.clone()),
        ("--cert", ingress_cert),
        ("--key", ingress_key),
        ("--receipt-key", root.join("receipts.key")),
        ("--institutions", root.join("institutions")),
        ("--spool", root.join("ingress/spool")),
        ("--outbox", outbox.clone()),
        ("--ledger", root.join("ingress/ledger.db")),
    ] {
        c.arg(flag).arg(file);
    }
    let ingress = spawn(c, &root.join("ingress.log"));
    wait_for("ingress listening", 20, &root.join("ingress.log"), || {
        h.listening("ingress").is_ok_and(|s| !s.is_empty())
    });

    // Vault host: intake from the link, operators on the local socket, egress outbox.
    let store = root.join("store");
    common::ok(
        &Command::new(common::bin("vault"))
            .args(["init", "--store"])
            .arg(&store)
            .output()
            .expect("init"),
        "vault init",
    );
    let first = common::bootstrap(&mut Command::new(common::bin("vault")), &store);
    let vault_outbox = root.join("vault-outbox");
    let serve = Running(common::serve_at(
        h.command("vault", common::bin("vault").to_str().expect("utf-8"))
            .expect("cmd"),
        &root,
        &store,
        VAULT_LINK,
        &[
            "--egress-outbox",
            vault_outbox.to_str().expect("utf-8"),
            "--sandbox-report",
        ],
    ));
    std::thread::sleep(Duration::from_millis(300));

    // Institution host: each institution pushes its SS-MIX2 storage.
    let mut submitted = 0;
    for dir in std::fs::read_dir(root.join("synth/ssmix2")).expect("ssmix2") {
        let dir = dir.expect("entry").path();
        let inst = dir.file_name().expect("name").to_string_lossy().to_string();
        let (cert, key) = ca.issue(&inst, pki::Role::Client, &[]);
        let mut c = h
            .command("inst", common::bin("enclave").to_str().expect("utf-8"))
            .expect("cmd");
        c.args([
            "submit",
            "--ingress",
            INGRESS_QUIC,
            "--server-name",
            "ingress.test",
        ])
        .arg("--ca")
        .arg(&ca_crt)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--vault")
        .arg(root.join("vault.pub"))
        .arg("--sign-with")
        .arg(root.join(format!("secrets/{inst}.key")))
        .arg("--ingress-key")
        .arg(root.join("receipts.pub"))
        .args(["--type", "ssmix2", "--state"])
        .arg(root.join(format!("submit-{inst}")))
        .arg(&dir);
        common::ok(&c.output().expect("submit"), "submit");
        submitted += testkit::files_under(&dir).len();
    }
    let accepted = || {
        std::fs::read_dir(outbox.join("incoming"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for(
        "every file in ingress's outbox",
        60,
        &root.join("ingress.log"),
        || accepted() == submitted,
    );

    // Link 1: ingress → vault.
    let mut c = h
        .command("ingress", common::bin("diode").to_str().expect("utf-8"))
        .expect("cmd");
    c.args(["send", "--to", VAULT_LINK, "--outbox"])
        .arg(&outbox)
        .arg("--key-file")
        .arg(root.join("link.key"))
        .args(["--rate-mbit", "200", "--once"]);
    common::ok(&c.output().expect("diode send"), "diode send (link 1)");
    let stored = || {
        let out = Command::new(common::bin("vault"))
            .args(["intake", "status", "--json", "--store"])
            .arg(&store)
            .output()
            .expect("status");
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        s["by_institution"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| r[2] == "stored")
                    .filter_map(|r| r[3].as_u64())
                    .sum::<u64>()
            })
            .unwrap_or(0) as usize
    };
    wait_for(
        "every file stored by the vault",
        90,
        &root.join("serve.log"),
        || stored() == submitted,
    );
    eprintln!(
        "e2e: {submitted} SS-MIX2 files submitted, accepted, carried and stored ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // Operators: a method, a recipient, and a release through two reviewers.
    let mut ops = common::Operators::new(root.join("admin.sock"));
    ops.enrol(&first);
    let admin = ops.login("admin");
    for (u, role) in [
        ("op1", "operator"),
        ("rev1", "reviewer"),
        ("rev2", "reviewer"),
    ] {
        ops.add_user(&admin, u, role, false);
    }
    let (op, rev1, rev2) = (ops.login("op1"), ops.login("rev1"), ops.login("rev2"));
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
    assert!(
        ops.call("method.approve", Some(&rev1), &[("id", &method)])
            .ok
    );
    let lab = root.join("lab");
    let lab_pub = common::researcher_keys(&lab);
    let r = ops.call(
        "recipient.add",
        Some(&admin),
        &[
            ("id", "lab-1"),
            ("name", "研究 一郎"),
            ("organisation", "Example University"),
            ("key", &lab_pub),
            ("contact", "lab@example.ac.jp"),
        ],
    );
    assert!(r.ok, "{:?}", r.error);
    let r = ops.call(
        "release.request",
        Some(&op),
        &[
            ("recipient", "lab-1"),
            ("purpose", "糖尿病の疫学研究"),
            ("committee_decision", "C-2026-017"),
            ("committee_date", "2026-11-01"),
            ("conditions", "研究目的外利用・第三者提供の禁止"),
            ("cohort", "all"),
            ("method", &method),
        ],
    );
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));
    let id = r.result["id"].as_str().expect("id").to_owned();
    let rows = r.result["rows"].as_u64().expect("rows");
    assert!(ops.call("release.approve", Some(&rev1), &[("id", &id)]).ok);
    let r = ops.call("release.confirm", Some(&rev2), &[("id", &id)]);
    assert!(r.ok, "{:?} {}", r.error, common::serve_log(&root));

    // Researcher host: the receiver. Egress host: the link receiver and the push loop.
    let mut c = h
        .command("lab", common::bin("enclave").to_str().expect("utf-8"))
        .expect("cmd");
    c.args(["receive", "--bind", LAB_QUIC]);
    for (flag, file) in [
        ("--key", lab.join("lab.key")),
        ("--vault-key", store.join("keys/release.pub")),
        ("--receipt-key", lab.join("receipt.key")),
        ("--ca", ca_crt.clone()),
        ("--crl", crl.clone()),
        ("--cert", lab_cert),
        ("--tls-key", lab_key),
        ("--out", lab.join("releases")),
    ] {
        c.arg(flag).arg(file);
    }
    let receiver = spawn(c, &root.join("receive.log"));
    wait_for(
        "the researcher's receiver listening",
        20,
        &root.join("receive.log"),
        || h.listening("lab").is_ok_and(|s| !s.is_empty()),
    );
    let link2 = root.join("vault-egress.key");
    keystore::generate_link_key("vault-egress", &link2, &rng).expect("link key");
    common::write_recipients(&root.join("recipients.json"), &lab, LAB_QUIC);
    let mut c = h
        .command("egress", common::bin("egress").to_str().expect("utf-8"))
        .expect("cmd");
    c.args([
        "serve",
        "--bind",
        EGRESS_LINK,
        "--scan-ms",
        "100",
        "--sandbox-report",
    ]);
    for (flag, file) in [
        ("--link-key", link2.clone()),
        ("--events", root.join("egress/link-events.jsonl")),
        ("--inbox", root.join("egress/inbox")),
        ("--state", root.join("egress/state")),
        ("--recipients", root.join("recipients.json")),
        ("--vault-key", store.join("keys/release.pub")),
        ("--ca", ca_crt.clone()),
        ("--cert", egress_cert),
        ("--key", egress_key),
    ] {
        c.arg(flag).arg(file);
    }
    let egress = spawn(c, &root.join("egress.log"));
    std::thread::sleep(Duration::from_millis(500));

    // Link 2: vault → egress.
    let mut c = h
        .command("vault", common::bin("diode").to_str().expect("utf-8"))
        .expect("cmd");
    c.args(["send", "--to", EGRESS_LINK, "--outbox"])
        .arg(&vault_outbox)
        .arg("--key-file")
        .arg(&link2)
        .args(["--rate-mbit", "100", "--once"]);
    common::ok(&c.output().expect("diode send"), "diode send (link 2)");
    let got = lab.join("releases").join(&id);
    wait_for(
        "the release at the researcher",
        60,
        &root.join("egress.log"),
        || got.join("report.json").exists(),
    );
    let (manifest, _, n) = common::check_received(&got, &store.join("keys/release.pub"), K);
    assert_eq!(manifest.release, id);
    assert_eq!(n as u64, rows);

    // The boundaries, with every server still running.
    let b = boundaries(&h);
    drop((egress, receiver, ingress));
    let pid = nix::unistd::Pid::from_raw(serve.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    std::thread::sleep(Duration::from_millis(500));
    drop(serve);
    let audit = common::ok(
        &Command::new(common::bin("vault"))
            .args(["audit", "verify", "--store"])
            .arg(&store)
            .output()
            .expect("audit verify"),
        "audit verify",
    );
    println!("\n== five-host harness summary (make e2e)");
    println!(
        "flow: {submitted} SS-MIX2 files from 3 institutions → ingress → link 1 → vault → release {id} ({rows} rows, k = {K}, manifest verified) → link 2 → egress → researcher"
    );
    for l in &b.lines {
        println!("{l}");
    }
    println!("audit: {}", audit.trim());
    // Each server confined itself (Landlock, seccomp) and said what it enforces.
    for (server, log) in [
        ("ingress", "ingress.log"),
        ("vault", "serve.log"),
        ("egress", "egress.log"),
    ] {
        let text = std::fs::read_to_string(root.join(log)).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{server}: sandbox: ")))
            .unwrap_or_else(|| panic!("{server} reported no sandbox: {text}"))
            .to_owned();
        println!("{line}");
        assert!(line.contains("system calls refused"), "{line}");
        if !line.contains("not enforced") {
            assert!(line.contains("landlock fully enforced"), "{line}");
            if server != "vault" {
                assert!(line.contains("tcp: no bind, no connect"), "{line}");
            }
        }
    }
    println!("time: {:.1} s", started.elapsed().as_secs_f64());
    assert!(b.deviations.is_empty(), "deviations: {:#?}", b.deviations);
}

/// A deliberately wrong vault rule set — its link port may transmit, and ARP is on — and a
/// process on the vault sending a datagram back to ingress: the harness's check must fail
/// and name it. With the deployed rule set the same attempt leaves nothing on the cable.
#[test]
fn a_rule_set_letting_traffic_back_is_caught() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let send_back = |h: &Hosts| {
        // bash's /dev/udp: one datagram to ingress's link address; may fail when dropped.
        let _ = h.exec("vault", &["bash", "-c", "echo back > /dev/udp/192.0.2.9/9"]);
        std::thread::sleep(Duration::from_millis(300));
    };

    let h = site("neg");
    load_rules(&h, VAULT_RULES);
    send_back(&h);
    let b = boundaries(&h);
    assert_eq!(h.frames_back("ingress", "link-out"), Ok(0), "{b:#?}");
    assert!(
        b.deviations.iter().any(|d| d.contains("output_drop")),
        "the deployed rules drop and count the attempt: {b:#?}"
    );
    drop(h);

    let wrong = VAULT_RULES
        .replace(
            "policy drop;\n        counter name reverse_out drop",
            "policy accept;\n        counter name reverse_out accept",
        )
        .replace(
            "oif \"lo\" accept\n        # The second",
            "oif \"lo\" accept\n        oifname $LINK_IN_DEV accept\n        # The second",
        );
    assert_ne!(wrong, VAULT_RULES, "the wrong rule was not made");
    let h = site("neg");
    load_rules(&h, &wrong);
    h.exec("vault", &["ip", "link", "set", "link-in", "arp", "on"])
        .expect("arp on");
    send_back(&h);
    let b = boundaries(&h);
    assert!(
        b.deviations
            .iter()
            .any(|d| d.contains("frames back on link 1")),
        "the harness missed traffic back across link 1: {b:#?}"
    );
    eprintln!("caught: {:?}", b.deviations);
}
