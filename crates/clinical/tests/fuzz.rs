//! Mutation fuzzing of every parser (R-IN-2: a hostile file gets a refusal, never a crash or
//! a hang): over a million inputs in total, made from a fixed seed by mutating real sample
//! files and synthetic files, each parsed with a panic catcher and a stopwatch.
//!
//! A panic, or an input that takes longer than [`MAX_PER_INPUT`], fails the test and the
//! input is written under the temp dir so it can be replayed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clinical::{Format, Limits};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MAX_PER_INPUT: Duration = Duration::from_millis(500);

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples")
}

/// Seeds per format: the real samples plus a small synthetic population.
fn corpus() -> Vec<(Format, Vec<u8>)> {
    let mut c = Vec::new();
    let mut files = testkit::files_under(&samples());
    let synth_dir = tempfile::tempdir().expect("tempdir");
    let out = synth_dir.path().join("s");
    synth::generate(
        &synth::Options {
            persons: 40,
            seed: 11,
            institutions: 3,
            formats: synth::Format::ALL.to_vec(),
            out: out.clone(),
            as_of: synth::date::Date::new(2025, 3, 31).expect("date"),
            threads: 1,
            layout: synth::Layout::Tree,
        },
        |_| {},
    )
    .expect("synth");
    files.extend(testkit::files_under(&out));
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let name = f.to_string_lossy().to_string();
        if let Some(fmt) = clinical::detect(&bytes, Some(&name)) {
            c.push((fmt, bytes));
        }
    }
    // HL7 batch files (FHS/BHS … BTS/FTS) of a few SS-MIX2 messages each, so the batch
    // parser is mutated too.
    let messages: Vec<Vec<u8>> = c
        .iter()
        .filter(|(f, b)| {
            *f == clinical::Format::Ssmix2
                && b.starts_with(b"MSH")
                && clinical::parse(*f, b, None, &clinical::Limits::default()).is_ok()
        })
        .map(|(_, b)| {
            let keep = b.len()
                - b.iter()
                    .rev()
                    .take_while(|c| matches!(c, 0x1c | b'\r' | b'\n'))
                    .count();
            b[..keep].to_vec()
        })
        .collect();
    let mut batches = 0;
    for group in messages.chunks(5).take(20) {
        let mut b = b"FHS|^~\\&|A\rBHS|^~\\&|A\r".to_vec();
        for m in group {
            b.extend_from_slice(m);
            b.push(b'\r');
        }
        b.extend_from_slice(format!("BTS|{}\rFTS|1\r", group.len()).as_bytes());
        let x = clinical::parse(clinical::Format::Ssmix2, &b, None, &Default::default())
            .unwrap_or_else(|r| panic!("a batch of valid messages is refused: {r}"));
        assert_eq!(x.doc_type, format!("HL7 batch of {}", group.len()));
        batches += 1;
        c.push((clinical::Format::Ssmix2, b));
    }
    assert!(batches >= 10, "only {batches} batch seeds");
    c
}

const TOKENS: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\x1b$B",
    b"\x1b(B",
    b"\x1b(J",
    b"\x1c",
    b"\x0b",
    b"MSH|^~\\&|",
    b"PID|",
    b"OBX|1|NM|",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"\"resourceType\":\"Bundle\"",
    b"<",
    b">",
    b"</",
    b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]>",
    b"&a;",
    b"PK\x03\x04",
    b"IR,",
    b"RE,",
    b"GO,",
    b"\xff",
    b"\x80",
    b"\xe3\x81",
    "日".as_bytes(),
    "ｱ".as_bytes(),
    b"\x82\xa0",
    b"99999999999999999999",
    b"-",
    b".",
    b"0",
];

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        let len = b.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..9) {
            0 if len > 0 => b[at] ^= 1 << rng.gen_range(0..8),
            1 if len > 0 => b[at] = rng.gen(),
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                b.splice(at..at, t.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + rng.gen_range(1..64)).min(len);
                b.drain(at..end);
            }
            4 => b.truncate(at),
            5 if len > 0 => {
                // Duplicate a chunk (repeated segments, entries, records).
                let end = (at + rng.gen_range(1..256)).min(len);
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                // Splice in part of another file.
                let from = rng.gen_range(0..other.len());
                let end = (from + rng.gen_range(1..512)).min(other.len());
                b.splice(at..at, other[from..end].iter().copied());
            }
            7 => {
                let n = rng.gen_range(1..32);
                let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b.splice(at..at, junk);
            }
            _ => {
                if len > 1 {
                    let a = rng.gen_range(0..len);
                    b.swap(at, a);
                }
            }
        }
    }
    b
}

fn mutate_inside_zip(rng: &mut ChaCha8Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(seed)) else {
        return seed.to_vec();
    };
    let victim = rng.gen_range(0..zip.len().max(1));
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zip.len() {
        let Ok(mut e) = zip.by_index(i) else { continue };
        let name = e.name().to_owned();
        let mut body = Vec::new();
        if e.read_to_end(&mut body).is_err() {
            continue;
        }
        if i == victim {
            body = mutate(rng, &body, other);
        }
        if out.start_file(name, opts).is_err() || out.write_all(&body).is_err() {
            return seed.to_vec();
        }
    }
    out.finish()
        .map(|c| c.into_inner())
        .unwrap_or_else(|_| seed.to_vec())
}

/// Parses `input` as `format`, catching panics and timing it.
fn run_one(format: Format, input: &[u8], limits: &Limits) -> (bool, Duration, bool) {
    let start = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        clinical::parse(format, input, None, limits)
    }));
    let took = start.elapsed();
    match r {
        Ok(res) => (false, took, res.is_ok()),
        Err(_) => (true, took, false),
    }
}

fn save(name: &str, input: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(name);
    let _ = std::fs::write(&p, input);
    p
}

#[test]
fn a_million_mutated_inputs_never_panic_or_hang() {
    // Panics are caught and counted; silence the default hook's backtrace spam meanwhile.
    let corpus = corpus();
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_f022);
    let mut per_format: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    // Inputs per format, weighted so each format gets a fair share of wall time.
    let plan: [(Format, u64); 5] = [
        (Format::Ssmix2, 450_000),
        (Format::FhirJp, 150_000),
        (Format::Uke, 250_000),
        (Format::Csv, 130_000),
        (Format::CdaTokutei, 40_000),
    ];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut total = 0u64;
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure: Option<String> = None;
    'outer: for (fmt, n) in plan {
        let seeds: Vec<&Vec<u8>> = corpus
            .iter()
            .filter(|(f, _)| *f == fmt)
            .map(|(_, b)| b)
            .collect();
        assert!(!seeds.is_empty(), "no seed files for {fmt}");
        for i in 0..n {
            let seed = seeds[rng.gen_range(0..seeds.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())].1;
            let input = if fmt == Format::CdaTokutei && i % 2 == 0 {
                // Mutate inside the package, then re-zip: reaches the XML and CDA checks,
                // which a mutated deflate stream almost never does.
                mutate_inside_zip(&mut rng, seed, other)
            } else if i % 50 == 0 {
                // Pure noise, and noise wearing the format's first bytes.
                let len = rng.gen_range(0..2048);
                let mut v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if i % 100 == 0 {
                    v.splice(0..0, seed.iter().take(16).copied());
                }
                v
            } else {
                mutate(&mut rng, seed, other)
            };
            // Every input also goes through a parser of another format: a file declared
            // as one thing may be anything.
            let cross = Format::ALL[(i % 5) as usize];
            for f in [fmt, cross] {
                let (panicked, took, ok) = run_one(f, &input, &limits);
                total += 1;
                slowest = slowest.max(took);
                let e = per_format.entry(f.as_str()).or_default();
                e.0 += 1;
                e.1 += ok as u64;
                if panicked {
                    let p = save(
                        &format!("clinical-fuzz-panic-{}-{i}.bin", f.as_str()),
                        &input,
                    );
                    failure = Some(format!(
                        "{f} parser panicked; input saved to {}",
                        p.display()
                    ));
                    break 'outer;
                }
                if took > MAX_PER_INPUT {
                    let p = save(
                        &format!("clinical-fuzz-slow-{}-{i}.bin", f.as_str()),
                        &input,
                    );
                    failure = Some(format!(
                        "{f} parser took {took:?}; input saved to {}",
                        p.display()
                    ));
                    break 'outer;
                }
            }
        }
    }
    std::panic::set_hook(prev_hook);
    if let Some(f) = failure {
        panic!("{f}");
    }
    println!(
        "fuzz: {} inputs, {total} parses in {:.1} s, slowest {:?}; per format (parsed, accepted): {per_format:?}",
        total / 2,
        started.elapsed().as_secs_f64(),
        slowest
    );
    assert!(total / 2 >= 1_000_000, "only {} inputs", total / 2);
    // The mutations must not be so destructive that nothing is ever accepted, or the
    // deeper code would go untested.
    for (f, (n, ok)) in &per_format {
        assert!(
            *ok > 0,
            "{f}: none of {n} inputs was accepted; the fuzzer is not reaching the parser's depth"
        );
    }
}
