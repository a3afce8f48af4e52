//! The `egress` binary explains itself and refuses bad configuration with the file named.

use std::process::Command;

#[test]
fn help_states_purpose_and_refusals() {
    let out = Command::new(env!("CARGO_BIN_EXE_egress"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("It refuses"), "{text}");
    assert!(text.contains("deliveries.jsonl"), "{text}");
}

#[test]
fn a_recipient_whose_key_belongs_to_someone_else_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let rng = ring::rand::SystemRandom::new();
    let d = dir.path();
    keystore::generate_pair(
        keystore::PairKind::Encryption,
        "lab-2",
        &d.join("lab"),
        &rng,
    )
    .expect("key");
    keystore::generate_pair(
        keystore::PairKind::Signing,
        "vault",
        &d.join("release"),
        &rng,
    )
    .expect("key");
    let key = std::fs::read_to_string(d.join("lab.pub")).expect("pub");
    let receipt = std::fs::read_to_string(d.join("release.pub")).expect("pub");
    let recipients = serde_json::json!({"recipients": [{
        "id": "lab-1", "address": "127.0.0.1:4443", "server_name": "lab-1.example",
        "key": key.trim(), "receipt_key": receipt.trim()
    }]});
    std::fs::write(d.join("recipients.json"), recipients.to_string()).expect("write");
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(d.join(f), "").expect("write");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_egress"))
        .arg("push")
        .arg("--inbox")
        .arg(d.join("inbox"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--recipients")
        .arg(d.join("recipients.json"))
        .arg("--vault-key")
        .arg(d.join("release.pub"))
        .arg("--ca")
        .arg(d.join("ca.pem"))
        .arg("--cert")
        .arg(d.join("cert.pem"))
        .arg("--key")
        .arg(d.join("key.pem"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("recipients.json") && text.contains("belongs to lab-2"),
        "{text}"
    );
}
