//! The vault has no network path (R-GW-6), and an auditor will ask why a binary that runs
//! there contains an HTTP client. This test reads the dependency tree of the anonymization
//! core and of the vault binary (`cargo tree`, offline, from the lock file) and fails if an
//! HTTP, TLS-client or cloud-storage crate is in it — for instance if Polars with `lazy`
//! (which pulls in reqwest and object_store since 0.47) were added. docs/anonymization.md
//! explains the choice.

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
    for package in ["anonymize", "vault"] {
        let crates = testkit::dependency_names(env!("CARGO_MANIFEST_DIR"), package)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = crates.join("\n");
        for f in FORBIDDEN {
            assert!(
                !crates.iter().any(|c| c == f),
                "{package} depends on {f}: a network client in the vault's code\n{text}"
            );
        }
    }
}
