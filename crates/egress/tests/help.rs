//! The `egress` binary explains itself and refuses clearly what this build cannot do yet.

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
}

#[test]
fn serve_is_refused_with_a_pointer_to_the_issue() {
    let out = Command::new(env!("CARGO_BIN_EXE_egress"))
        .arg("serve")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("not part of this build yet"), "{text}");
}
