//! The `vault` binary explains itself and says clearly what is missing when it cannot start.

use std::process::Command;

#[test]
fn help_states_purpose_and_refusals() {
    let out = Command::new(env!("CARGO_BIN_EXE_vault"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("It refuses"), "{text}");
}

#[test]
fn serve_explains_a_missing_link_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    let out = Command::new(env!("CARGO_BIN_EXE_vault"))
        .args(["serve", "--bind", "127.0.0.1:0", "--link-key"])
        .arg(p("missing.key"))
        .arg("--events")
        .arg(p("events.jsonl"))
        .arg("--inbox")
        .arg(p("inbox"))
        .arg("--store")
        .arg(p("store"))
        .arg("--key")
        .arg(p("vault.key"))
        .arg("--institutions")
        .arg(p("institutions"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("loading the link key"), "{text}");
}
