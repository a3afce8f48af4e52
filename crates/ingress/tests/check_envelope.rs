//! `ingress check-envelope` accepts a well-signed envelope from a registered institution and
//! refuses one from anybody else, without holding any key that could open it (R-GW-8).

use std::fs;
use std::process::Command;

use envelope::{measure, seal, ContentType, SealParams};
use keystore::PairKind;

fn ingress(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ingress"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run")
}

#[test]
fn accepts_registered_sender_and_refuses_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rng = ring::rand::SystemRandom::new();
    let p = dir.path();
    keystore::generate_pair(PairKind::Encryption, "vault", &p.join("vault"), &rng).expect("v");
    keystore::generate_pair(PairKind::Signing, "1312345678", &p.join("inst"), &rng).expect("i");
    keystore::generate_pair(PairKind::Signing, "2712345678", &p.join("other"), &rng).expect("o");
    let vault = keystore::load_recipient_public(&p.join("vault.pub")).expect("load");
    let inst = keystore::load_signing_key(&p.join("inst.key")).expect("load");
    let data = vec![7u8; 100_000];
    let mut sealed = Vec::new();
    let params = SealParams {
        recipient: &vault,
        signer: &inst,
        content_type: ContentType::FhirJp,
        segment_size: envelope::DEFAULT_SEGMENT_SIZE,
    };
    seal(
        params,
        measure(&data[..]).expect("m"),
        &rng,
        &data[..],
        &mut sealed,
    )
    .expect("seal");
    fs::write(p.join("e.env"), &sealed).expect("write");
    fs::write(p.join("short.env"), &sealed[..sealed.len() - 1]).expect("write");

    let out = ingress(&["check-envelope", "e.env", "--trust", "inst.pub"], p);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("accepted") && text.contains("1312345678"),
        "{text}"
    );

    let out = ingress(&["check-envelope", "e.env", "--trust", "other.pub"], p);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trusted sender key"));

    let out = ingress(&["check-envelope", "short.env", "--trust", "inst.pub"], p);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("header announces"));
}

#[test]
fn help_states_purpose_and_refusals() {
    let out = ingress(&["--help"], std::path::Path::new("."));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("It refuses") && text.contains("R-GW-2"),
        "{text}"
    );
}
