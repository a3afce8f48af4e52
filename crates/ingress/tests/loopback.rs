//! Ingress end to end on loopback (issue #6): institutions push concurrently with
//! `submit`, every receipt verifies and matches the envelope in the outbox; a killed ingress
//! is resumed without duplicates or truncation; every refusal is clear and in the ledger
//! (R-GW-7, R-GW-8, R-IN-3).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

fn make_files(dir: &std::path::Path, count: usize, seed: u64, big: &[u64]) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut hashes = Vec::new();
    for i in 0..count {
        let size = if rng.gen_ratio(97, 100) {
            rng.gen_range(0..32 * 1024)
        } else {
            rng.gen_range(64 * 1024..4 * 1024 * 1024)
        };
        // SS-MIX2-like nesting, so folders are walked recursively.
        let sub = dir.join(format!("{:03}", i % 100));
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join(format!("msg{i:05}.hl7"));
        write_file(&path, size, seed * 1_000_003 + i as u64);
        hashes.push(sha256_file(&path));
    }
    for (j, &size) in big.iter().enumerate() {
        let path = dir.join(format!("big{j}.bin"));
        write_file(&path, size, seed + 77 + j as u64);
        hashes.push(sha256_file(&path));
    }
    hashes
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn three_institutions_push_10000_files_concurrently() {
    let fx = Fixture::new();
    let (ingress, addr) = fx.start("127.0.0.1:0");
    // 10,000 files in all, two of them 1 GiB (the rest 0..4 MiB).
    let counts = [3332usize, 3332, 3334];
    let mut all_hashes = Vec::new();
    let mut states = Vec::new();
    let mut jobs = Vec::new();
    for (k, inst) in INSTITUTIONS.iter().enumerate() {
        let src = fx.path().join(format!("src-{inst}"));
        let big: &[u64] = if k < 2 { &[1 << 30] } else { &[] };
        all_hashes.extend(make_files(&src, counts[k], k as u64 + 1, big));
        let job = fx.job(addr, inst, inst, &format!("state-{inst}"));
        states.push(job.state.clone());
        jobs.push((job, src));
    }
    assert_eq!(all_hashes.len(), 10_000);
    let started = Instant::now();
    let summaries = runtime().block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (job, src) in jobs.clone() {
            set.spawn(async move {
                let files = submit::list_files(&[src]).unwrap();
                submit::run(job, files, Arc::new(submit::Progress::default())).await
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap().unwrap());
        }
        out
    });
    let secs = started.elapsed().as_secs_f64();
    let sent: usize = summaries.iter().map(|s| s.sent).sum();
    for s in &summaries {
        assert!(s.failed.is_empty(), "{:?}", s.failed);
    }
    assert_eq!(sent, 10_000);
    let n = check_outbox(&fx, &states, &all_hashes);
    assert_eq!(n, 10_000);
    let ledger = fx.ledger();
    let accepted = ledger.iter().filter(|e| e["outcome"] == "accepted").count();
    assert_eq!(accepted, 10_000);
    eprintln!("10,000 envelopes (two of 1 GiB) from 3 institutions in {secs:.1} s");

    // A second run finds nothing to send.
    let again = runtime().block_on(async {
        let (job, src) = jobs[1].clone();
        let files = submit::list_files(&[src]).unwrap();
        submit::run(job, files, Arc::new(submit::Progress::default()))
            .await
            .unwrap()
    });
    assert_eq!((again.sent, again.unchanged), (0, 3333));

    // A file that cannot be read fails alone, with its name and the reason.
    let unreadable = fx.path().join("src-unreadable");
    std::fs::create_dir_all(&unreadable).unwrap();
    write_file(&unreadable.join("ok.hl7"), 1000, 9);
    let missing = unreadable.join("gone.hl7");
    let summary = runtime().block_on(async {
        let (job, _) = jobs[2].clone();
        let files = vec![unreadable.join("ok.hl7"), missing.clone()];
        submit::run(job, files, Arc::new(submit::Progress::default()))
            .await
            .unwrap()
    });
    assert_eq!(summary.sent, 1);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].0, missing);
    assert!(
        summary.failed[0].1.contains("gone.hl7"),
        "{:?}",
        summary.failed
    );
    stop(ingress);
}

fn partial_size(fx: &Fixture, inst: &str) -> u64 {
    std::fs::read_dir(fx.path().join("spool/partial").join(inst))
        .map(|d| {
            d.filter_map(|e| e.ok().and_then(|e| e.metadata().ok()).map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn wait_partial(fx: &Fixture, inst: &str, at_least: u64) {
    let start = Instant::now();
    while partial_size(fx, inst) < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "upload never reached {at_least} bytes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_ingress_is_resumed_without_duplicates_or_truncation() {
    let fx = Fixture::new();
    let inst = INSTITUTIONS[0];
    let (first, addr) = fx.start("127.0.0.1:0");
    let src = fx.path().join("src");
    let hashes = make_files(&src, 300, 42, &[400 << 20]);
    let job = fx.job(addr, inst, inst, "state");
    let state = job.state.clone();
    let rt = runtime();
    let files = submit::list_files(std::slice::from_ref(&src)).unwrap();
    let run = rt.spawn(submit::run(
        job,
        files,
        Arc::new(submit::Progress::default()),
    ));

    // Kill it twice in the middle of the large upload (small ones are in flight too).
    wait_partial(&fx, inst, 100 << 20);
    kill9(first);
    let (second, _) = fx.start(&addr.to_string());
    wait_partial(&fx, inst, 250 << 20);
    kill9(second);
    let (third, _) = fx.start(&addr.to_string());

    let summary = rt.block_on(run).unwrap().unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.sent, 301);
    assert_eq!(check_outbox(&fx, &[state], &hashes), 301);
    // The large envelope was resumed, not re-sent from the start.
    let ledger = fx.ledger();
    let big = ledger
        .iter()
        .find(|e| e["outcome"] == "accepted" && e["size"].as_i64().unwrap_or(0) > 400 << 20)
        .expect("large envelope accepted");
    let received = big["bytes_received"].as_i64().unwrap();
    let size = big["size"].as_i64().unwrap();
    assert!(
        received < size - (200 << 20),
        "resumed upload carried {received} of {size} bytes"
    );
    eprintln!("large envelope: last attempt carried {received} of {size} bytes");
    stop(third);
}

#[test]
fn refusals_are_clear_and_recorded() {
    let fx = Fixture::new();
    let p = fx.path().to_path_buf();
    let late = now() + time::Duration::days(1);
    // Institution 2 may send at most 100 kB per envelope and 12 kB a day.
    std::fs::write(
        p.join(format!("registry/{}.limits.json", INSTITUTIONS[2])),
        r#"{"max_envelope_bytes": 100000, "max_bytes_per_day": 12000}"#,
    )
    .unwrap();
    let revoked = fx
        .ca
        .issue(INSTITUTIONS[1], pki::Role::Client, &[], now(), late)
        .unwrap();
    pki::write_issued(&p.join("revoked"), INSTITUTIONS[1], &revoked).unwrap();
    fx.ca.revoke(&revoked.record.serial, "test", now()).unwrap();
    let expired = fx
        .ca
        .issue(
            INSTITUTIONS[0],
            pki::Role::Client,
            &[],
            now() - time::Duration::days(400),
            now() - time::Duration::days(35),
        )
        .unwrap();
    pki::write_issued(&p.join("expired"), INSTITUTIONS[0], &expired).unwrap();
    let other_ca = pki::Ca::init(&p.join("ca2"), "somebody else's CA", now(), 30).unwrap();
    let foreign = other_ca
        .issue(INSTITUTIONS[0], pki::Role::Client, &[], now(), late)
        .unwrap();
    pki::write_issued(&p.join("foreign"), INSTITUTIONS[0], &foreign).unwrap();
    let stranger = fx
        .ca
        .issue("9990000009", pki::Role::Client, &[], now(), late)
        .unwrap();
    pki::write_issued(&p.join("clients"), "9990000009", &stranger).unwrap();
    keystore::generate_pair(
        keystore::PairKind::Signing,
        "9990000009",
        &p.join("sign-9990000009"),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();

    let (ingress, addr) = fx.start("127.0.0.1:0");
    let small = p.join("small.hl7");
    write_file(&small, 5_000, 1);
    let big = p.join("big.hl7");
    write_file(&big, 200_000, 2);
    let rt = runtime();

    // (client cert dir, cert institution, signer, file, expected message, ledger outcome, reason)
    let cases: [(&str, &str, &str, &PathBuf, &str, &str, &str); 6] = [
        (
            "foreign",
            INSTITUTIONS[0],
            INSTITUTIONS[0],
            &small,
            "refused the TLS handshake",
            "tls_refused",
            "UnknownIssuer",
        ),
        (
            "revoked",
            INSTITUTIONS[1],
            INSTITUTIONS[1],
            &small,
            "refused the TLS handshake",
            "tls_refused",
            "Revoked",
        ),
        (
            "expired",
            INSTITUTIONS[0],
            INSTITUTIONS[0],
            &small,
            "refused the TLS handshake",
            "tls_refused",
            "expired",
        ),
        (
            "clients",
            INSTITUTIONS[0],
            INSTITUTIONS[1],
            &small,
            "signer_mismatch",
            "refused",
            "signer_mismatch",
        ),
        (
            "clients",
            INSTITUTIONS[2],
            INSTITUTIONS[2],
            &big,
            "too_large",
            "refused",
            "too_large",
        ),
        (
            "clients",
            "9990000009",
            "9990000009",
            &small,
            "not registered",
            "refused",
            "unknown_institution",
        ),
    ];
    for (n, (dir, cert_inst, signer, file, msg, outcome, reason)) in cases.iter().enumerate() {
        let mut job = Arc::try_unwrap(fx.job(addr, cert_inst, signer, &format!("state-{n}")))
            .ok()
            .unwrap();
        job.target = fx.target(addr, cert_inst, dir);
        job.max_attempts = 1;
        let before = fx.ledger().len();
        let summary = rt
            .block_on(submit::run(
                Arc::new(job),
                vec![(*file).clone()],
                Arc::new(submit::Progress::default()),
            ))
            .unwrap();
        assert_eq!(
            summary.failed.len(),
            1,
            "case {n} ({dir}/{cert_inst}) was not refused"
        );
        let why = &summary.failed[0].1;
        assert!(
            why.contains(msg),
            "case {n}: client said {why:?}, expected {msg:?}"
        );
        // The ledger row is written before the reply; the TLS one right after the handshake.
        let start = Instant::now();
        let row = loop {
            let ledger = fx.ledger();
            if ledger.len() > before {
                break ledger[before].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "case {n}: no ledger entry"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(row["outcome"], *outcome, "case {n}: {row}");
        let text = format!("{} {}", row["reason_code"], row["reason"]);
        assert!(text.contains(reason), "case {n}: ledger says {text}");
    }
    assert_eq!(std::fs::read_dir(fx.outbox_incoming()).unwrap().count(), 0);

    // The daily quota: two envelopes of about 5.3 kB fit in 12 kB, the third is refused
    // (retryable, so the client would try again later; here it gives up at once).
    let mut job = Arc::try_unwrap(fx.job(addr, INSTITUTIONS[2], INSTITUTIONS[2], "state-quota"))
        .ok()
        .unwrap();
    job.max_attempts = 1;
    job.parallel = 1;
    let three: Vec<PathBuf> = (0..3)
        .map(|i| {
            let f = p.join(format!("quota{i}.hl7"));
            write_file(&f, 5_000, 10 + i);
            f
        })
        .collect();
    let summary = rt
        .block_on(submit::run(
            Arc::new(job),
            three,
            Arc::new(submit::Progress::default()),
        ))
        .unwrap();
    assert_eq!(summary.sent, 2, "{summary:?}");
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    assert!(
        summary.failed[0].1.contains("quota_exceeded"),
        "{summary:?}"
    );
    assert!(fx
        .ledger()
        .iter()
        .any(|e| e["reason_code"] == "quota_exceeded"));
    for e in std::fs::read_dir(fx.outbox_incoming()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }

    // Garbage instead of an envelope, and a duplicate upload, at the protocol level.
    rt.block_on(async {
        let target = fx.target(addr, INSTITUTIONS[0], "clients");
        let conn =
            submit::Connection::open(&target, submit::client::client_config(&target).unwrap())
                .await
                .unwrap();
        let garbage = p.join("garbage.bin");
        write_file(&garbage, 10_000, 3);
        let offer = intake_proto::Offer {
            envelope_id: envelope::EnvelopeId([5; 16]),
            size: 10_000,
            sha256: hex::decode(sha256_file(&garbage))
                .unwrap()
                .try_into()
                .unwrap(),
        };
        match conn
            .upload(&garbage, &offer, INSTITUTIONS[0], &fx.receipt_key())
            .await
        {
            Err(submit::UploadError::Refused(r)) => {
                assert_eq!(r.code, intake_proto::RefusalCode::NotAnEnvelope, "{r}")
            }
            other => panic!("garbage was not refused: {other:?}"),
        }
        // A real envelope, twice: stored once, the same receipt both times.
        let job = fx.job(addr, INSTITUTIONS[0], INSTITUTIONS[0], "state-dup");
        let summary = submit::run(
            job.clone(),
            vec![small.clone()],
            Arc::new(submit::Progress::default()),
        )
        .await
        .unwrap();
        assert_eq!(summary.sent, 1);
        let receipt_file = std::fs::read_dir(job.state.join("receipts"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let first: intake_proto::SignedReceipt =
            serde_json::from_str(&std::fs::read_to_string(receipt_file).unwrap()).unwrap();
        let body = first.verify(&fx.receipt_key()).unwrap();
        let env_path = fx
            .outbox_incoming()
            .join(format!("{}_{}.env", body.institution, body.envelope_id));
        let offer = intake_proto::Offer {
            envelope_id: envelope::EnvelopeId(
                hex::decode(&body.envelope_id).unwrap().try_into().unwrap(),
            ),
            size: body.size,
            sha256: hex::decode(&body.sha256).unwrap().try_into().unwrap(),
        };
        let again = conn
            .upload(&env_path, &offer, INSTITUTIONS[0], &fx.receipt_key())
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.signed, first);
        conn.close().await;
    });
    assert_eq!(std::fs::read_dir(fx.outbox_incoming()).unwrap().count(), 1);
    let ledger = fx.ledger();
    assert!(ledger.iter().any(|e| e["reason_code"] == "not_an_envelope"));
    assert!(ledger.iter().any(|e| e["outcome"] == "duplicate"));

    // A TLS 1.2 client cannot talk to ingress at all: QUIC carries TLS 1.3 only, so the
    // handshake never starts (nothing reaches ingress to record), and ingress has no TCP
    // listener a TLS-over-TCP client could reach.
    rt.block_on(async {
        let target = fx.target(addr, INSTITUTIONS[0], "clients");
        let mut roots = rustls::RootCertStore::empty();
        for c in pki::load_certs(&target.ca).unwrap() {
            roots.add(c).unwrap();
        }
        let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            pki::load_certs(&target.cert).unwrap(),
            pki::load_key(&target.key).unwrap(),
        )
        .unwrap();
        // rustls itself refuses to start a QUIC handshake without TLS 1.3 (quinn would
        // panic on it, which is why we ask rustls directly).
        let refused = rustls::quic::ClientConnection::new(
            Arc::new(tls12),
            rustls::quic::Version::V1,
            "ingress.test".try_into().unwrap(),
            vec![],
        );
        let refused = match refused {
            Err(e) => e.to_string().contains("TLS 1.3"),
            Ok(_) => false,
        };
        assert!(refused, "a TLS 1.2-only client connected");
    });
    assert!(std::net::TcpStream::connect(addr).is_err());
    stop(ingress);
}

/// What `enclave submit --watch` does each round: files that stopped changing are sent once
/// per content; a changed file goes again as a new envelope; a file still growing waits.
#[test]
fn watch_rounds_send_new_and_changed_files_once() {
    let fx = Fixture::new();
    let (ingress, addr) = fx.start("127.0.0.1:0");
    let inst = INSTITUTIONS[1];
    let dir = fx.path().join("ssmix2");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    for i in 0..3 {
        write_file(&dir.join(format!("a/b/m{i}.hl7")), 2000 + i, i);
    }
    let job = fx.job(addr, inst, inst, "state");
    let rt = runtime();
    let round = |growing: bool| {
        rt.block_on(async {
            let inputs = vec![dir.clone()];
            let writer = growing.then(|| {
                let path = dir.join("a/growing.hl7");
                tokio::spawn(async move {
                    for i in 0..40u64 {
                        write_file(&path, 100 + i, i);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            });
            let files = submit::settled_files(&inputs, Duration::from_millis(300))
                .await
                .unwrap();
            if let Some(w) = writer {
                w.await.unwrap();
            }
            submit::run(job.clone(), files, Arc::new(submit::Progress::default()))
                .await
                .unwrap()
        })
    };
    let first = round(true);
    assert_eq!((first.sent, first.unchanged), (3, 0), "{first:?}");
    // One changed, one new; the grown file has settled by now.
    std::thread::sleep(Duration::from_millis(20));
    write_file(&dir.join("a/b/m1.hl7"), 5000, 99);
    write_file(&dir.join("a/new.hl7"), 300, 98);
    let second = round(false);
    assert_eq!((second.sent, second.unchanged), (3, 2), "{second:?}");
    let third = round(false);
    assert_eq!((third.sent, third.unchanged), (0, 5), "{third:?}");
    assert_eq!(std::fs::read_dir(fx.outbox_incoming()).unwrap().count(), 6);
    stop(ingress);
}
