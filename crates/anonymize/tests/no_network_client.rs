//! The vault has no network path (R-GW-6), and an auditor will ask why a binary that runs
//! there contains an HTTP client. This test reads the dependency tree of the anonymization
//! core and of the vault binary (`cargo tree`, offline, from the lock file) and fails if an
//! HTTP, TLS-client or cloud-storage crate is in it — for instance if Polars with `lazy`
//! (which pulls in reqwest and object_store since 0.47) were added. docs/anonymization.md
//! explains the choice.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "reqwest",
    "hyper",
    "h2",
    "object_store",
    "ureq",
    "curl",
    "native-tls",
    "openssl",
    "aws-config",
];

#[test]
fn no_http_client_in_the_vault_side_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for package in ["anonymize", "vault"] {
        let out = Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "tree",
                "-p",
                package,
                "-e",
                "normal",
                "--prefix",
                "none",
                "--offline",
                "--locked",
            ])
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let crates: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            crates.len() > 3,
            "{package}: implausibly small tree:\n{text}"
        );
        for f in FORBIDDEN {
            assert!(
                !crates.contains(f),
                "{package} depends on {f}: a network client in the vault's code\n{text}"
            );
        }
    }
}
