//! `vault check` as operators and institutions run it: one JSON line per file with the
//! documented keys, exit 0 when all are accepted and 3 when any is refused (issue #7).

use std::path::{Path, PathBuf};
use std::process::Command;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples")
}

fn run(args: &[&Path]) -> (i32, Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vault"))
        .arg("check")
        .args(args)
        .output()
        .expect("run vault");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_line_per_file_and_a_refusal_sets_the_exit_code() {
    let dir = samples().join("ssmix2");
    let (code, lines, stderr) = run(&[&dir]);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(lines.len(), 18, "17 storage files and the LICENSE");
    for l in &lines {
        for key in [
            "file", "format", "records", "accepted", "reason", "code", "warnings",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        let accepted = l["accepted"].as_bool().expect("bool");
        assert_eq!(
            accepted,
            l["reason"].is_null(),
            "a reason exactly when refused: {l}"
        );
    }
    let refused = lines.iter().filter(|l| l["accepted"] == false).count();
    assert_eq!(
        refused, 4,
        "LICENSE, the 2-byte non-message and the two broken OMP-11 files"
    );
    assert!(stderr.contains("18 files, 14 accepted"), "{stderr}");
}

#[test]
fn all_accepted_exits_zero_and_missing_paths_are_errors() {
    let ok = samples().join(
        "fhir-jp/jami-clinical-core/ExampleJson/Bundle-Bundle-CLINS-Observations-Example-01.json",
    );
    let (code, lines, _) = run(&[&ok]);
    assert_eq!(code, 0);
    assert_eq!(lines[0]["records"], 4);
    assert_eq!(lines[0]["format"], "fhir-jp");
    let (code, lines, stderr) = run(&[Path::new("/nonexistent/x")]);
    assert_eq!((code, lines.len()), (1, 0));
    assert!(stderr.contains("does not exist"), "{stderr}");
}
