//! The systemd units in `deploy/systemd/` (issue #11) hold what docs/deploy.md promises: each
//! runs as its own user with the sandbox settings, an empty capability set, an address-family
//! and IP allow-list, a system-call filter and its state under `StateDirectory`; every option
//! its `ExecStart` passes is one the binary's `--help` knows (so a renamed flag cannot break
//! a deployment unnoticed); and, where `systemd-analyze` is installed, its offline security
//! exposure stays at or below 2.0 ("OK").

use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("deploy/systemd")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).expect("read"),
            )
        })
        .collect();
    v.sort();
    v
}

fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vault")).with_file_name(name)
}

#[test]
fn every_unit_is_sandboxed_and_runs_flags_its_binary_knows() {
    let units = units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "enclave-egress.service",
            "enclave-ingress-link.service",
            "enclave-ingress.service",
            "enclave-vault-link.service",
            "enclave-vault.service",
        ]
    );
    for (name, text) in &units {
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("RestrictAddressFamilies", "AF_INET AF_UNIX"),
            ("IPAddressDeny", "any"),
            ("SystemCallFilter", "@system-service"),
            ("MemoryDenyWriteExecute", "yes"),
        ] {
            assert!(
                values(text, key).contains(&want),
                "{name}: {key}={want} missing"
            );
        }
        let user = values(text, "User");
        assert_eq!(user.len(), 1, "{name}");
        assert!(user[0].starts_with("enclave-"), "{name}: a dedicated user");
        assert_eq!(
            values(text, "StateDirectory"),
            user,
            "{name}: state under its user's name"
        );
        assert!(!values(text, "IPAddressAllow").is_empty(), "{name}");
        assert!(
            !text.contains("/etc/enclave/secrets/") || text.contains("LoadCredential="),
            "{name}: secret keys only as credentials"
        );
        // ExecStart: the binary and subcommand, and every --flag in its --help.
        let exec = values(text, "ExecStart");
        assert_eq!(exec.len(), 1, "{name}");
        let words: Vec<&str> = exec[0].split_whitespace().collect();
        let program = Path::new(words[0]).file_name().expect("program");
        let help = Command::new(bin(&program.to_string_lossy()))
            .args([words[1], "--help"])
            .output()
            .expect("--help");
        assert!(
            help.status.success(),
            "{name}: {} {} --help",
            words[0],
            words[1]
        );
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{name}: {flag} is not an option of {} {}",
                words[0],
                words[1]
            );
        }
    }
}

/// The vault and egress embed a link receiver, whose socket loop raises its thread
/// `diode_io::SOCKET_LOOP_RAISE` nice steps: their units must allow exactly that much, and
/// the one system call, or the loop runs unraised (docs/diode.md, "Thread priorities"); no
/// other unit gets either.
#[test]
fn receiver_units_let_the_link_socket_loop_raise_itself_and_no_further() {
    let want = format!("-{}", diode_io::SOCKET_LOOP_RAISE);
    for (name, text) in &units() {
        let filters = values(text, "SystemCallFilter");
        if name == "enclave-vault.service" || name == "enclave-egress.service" {
            assert_eq!(values(text, "LimitNICE"), [want.as_str()], "{name}");
            assert!(filters.contains(&"setpriority"), "{name}");
            assert!(
                filters
                    .iter()
                    .any(|f| f.starts_with('~') && f.contains("@resources")),
                "{name}: the rest of @resources stays denied"
            );
        } else {
            assert!(values(text, "LimitNICE").is_empty(), "{name}");
            assert!(!filters.contains(&"setpriority"), "{name}");
        }
    }
}

#[test]
fn systemd_rates_every_unit_ok() {
    if !testkit::have("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    for (name, _) in units() {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.join(&name))
            .output()
            .expect("systemd-analyze");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(score) = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok())
        else {
            eprintln!(
                "skipped: this systemd-analyze cannot rate offline: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        };
        eprintln!("{name}: exposure {score}");
        assert!(score <= 2.0, "{name}: exposure {score}\n{text}");
    }
}
