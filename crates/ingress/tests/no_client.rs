//! Ingress is receive-only (R-GW-2): nothing in it may open a connection. quinn itself can
//! act as a client, so this test reads ingress's own sources and fails on any call that
//! initiates one — a QUIC client endpoint or connect, a TCP connect, a connected UDP socket —
//! and reads its dependency tree for HTTP or other client crates. The institution's client
//! lives in the separate `submit` crate, which ingress does not depend on.
#![allow(clippy::unwrap_used, missing_docs)]

const FORBIDDEN_CALLS: &[&str] = &[
    "Endpoint::client",
    ".connect(",
    "connect_with(",
    "TcpStream",
    "UdpSocket::connect",
    "set_default_client_config",
    "ClientConfig",
];

const FORBIDDEN_CRATES: &[&str] = &[
    "reqwest",
    "hyper",
    "h2",
    "ureq",
    "curl",
    "submit",
    "native-tls",
    "openssl",
    // The vault's store may keep its metadata in PostgreSQL; ingress's ledger is a local
    // SQLite file and must not carry a database client that dials out.
    "sqlx-postgres",
    "sqlx-mysql",
];

#[test]
fn ingress_sources_never_initiate_a_connection() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for call in FORBIDDEN_CALLS {
                // The ledger's SQLite pool "connects" to a local file; that is the one
                // allowed use of the word, and only in ledger.rs.
                let allowed = *call == "connect_with(" && path.ends_with("ledger.rs");
                assert!(
                    allowed || !code.contains(call),
                    "{}:{}: `{call}` would let ingress initiate a connection (R-GW-2): {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} source files found");
}

#[test]
fn no_client_crate_in_the_ingress_dependency_tree() {
    let crates = testkit::dependency_names(env!("CARGO_MANIFEST_DIR"), "ingress")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        crates.iter().any(|c| c == "quinn"),
        "implausible tree: {crates:?}"
    );
    for f in FORBIDDEN_CRATES {
        assert!(
            !crates.iter().any(|c| c == f),
            "ingress depends on {f}: {crates:?}"
        );
    }
}
