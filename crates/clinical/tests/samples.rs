//! Every real sample file in `../shared/samples/` either parses or is refused with a reason
//! that names what is actually wrong with it (issue #7; the table is docs/vault.md
//! "Sample files"). A sample that appears without an entry here, or a count that changes,
//! fails the test: new samples must be looked at, not waved through.

use std::path::{Path, PathBuf};

use clinical::Limits;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples")
}

/// What is expected of a file, by the end of its path.
enum Expect {
    /// Refused with this code, and the reason mentions each of these.
    Refused(&'static str, &'static [&'static str]),
    /// Accepted with a warning containing this.
    Warned(&'static str),
}

const EXPECTED: &[(&str, Expect)] = &[
    // Two bytes fb fc and a file name that disagrees with every folder above it.
    (
        "ADT-31/9999013_20110630_OMP-11_123456789012345_20110701113813225_01_1",
        Expect::Refused(
            "hl7.not-a-message",
            &["does not start with an MSH", "differs from its folder"],
        ),
    ),
    // The checking tool's deliberately broken messages: Japanese text in MSH-13 (NM), junk
    // OBX and TQ1 values, and a trailing run of bare segment ids including a second MSH.
    (
        "0000001_20000401_OMP-11_123456789012345_20110701113813225_01_1",
        Expect::Refused(
            "hl7.msh",
            &[
                "MSH-13",
                "OBX-5 \"ccc\"",
                "TQ1-2 (quantity) \"test\"",
                "a second MSH",
            ],
        ),
    ),
    (
        "0000001_20000401_OMP-11_123456789012346_20110701113813226_01_0",
        Expect::Refused(
            "hl7.msh",
            &[
                "MSH-13",
                "OBX-5 \"ccc\"",
                "TQ1-2 (quantity) \"test\"",
                "a second MSH",
            ],
        ),
    ),
    // Guideline example messages filed under patient 9999013 but about other patients.
    (
        "ADT-61/9999013_-_ADT-61_999999999999999_20111014232213000_-_1",
        Expect::Warned("PID-3 \"12345678\" differs"),
    ),
    (
        "PPR-01/9999013_-_PPR-01_999999999999999_20111209163030000_01_1",
        Expect::Warned("PID-3 \"1234567890\" differs"),
    ),
    (
        "OMD/9999013_20111013_OMD_123456789012345_20111014232213000_01_1",
        Expect::Warned("PID-3 \"1234567890\" differs"),
    ),
    (
        "OMG-01/9999013_20111220_OMG-01_000201101200100_20111220224447339_-_1",
        Expect::Warned("PID-3 \"12345678\" differs"),
    ),
    (
        "OMG-03/9999013_20111220_OMG-03_201112200089100_20111220224447339_01_1",
        Expect::Warned("PID-3 \"12345678\" differs"),
    ),
    (
        "OMG-11/9999013_20111220_OMG-11_2011122000300_20111220224447339_24_1",
        Expect::Warned("PID-3 \"3330000333\" differs"),
    ),
    (
        "OML-11/9999013_20111220_OML-11_000000011000354_20111220103059000_01_1",
        Expect::Warned("PID-3 \"0001000052\" differs"),
    ),
    // JAMI's intentional error examples, as their own note text describes them.
    (
        "MedicationRequest-ErrorExample-JP-MedReq-ExtEye-Total1.json",
        Expect::Warned("requires a YJ code, a 一般処方名 code"),
    ),
    (
        "Observation-ErrorExample-ObsLabo-eGFR.json",
        Expect::Warned("requires a local lab code"),
    ),
];

#[test]
fn every_sample_parses_or_is_refused_for_what_is_wrong_with_it() {
    assert!(
        samples().is_dir(),
        "samples folder (../shared/samples beside the project)"
    );
    let files = testkit::files_under(&samples());
    let limits = Limits::default();
    let (mut hl7, mut fhir, mut matched) = (0, 0, 0);
    for f in &files {
        let name = f.to_string_lossy().to_string();
        let base = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(base, "LICENSE" | "NOTICE.txt" | "SOURCE.md" | "README.md") {
            continue;
        }
        let bytes = std::fs::read(f).expect("read sample");
        let format = clinical::detect(&bytes, Some(&name))
            .unwrap_or_else(|| panic!("{name}: format not detected"));
        match format {
            clinical::Format::Ssmix2 => hl7 += 1,
            clinical::Format::FhirJp => fhir += 1,
            other => panic!("{name}: unexpected format {other}"),
        }
        let got = clinical::parse(format, &bytes, Some(&name), &limits);
        let expect = EXPECTED
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix))
            .map(|(_, e)| e);
        match (expect, &got) {
            (Some(Expect::Refused(code, words)), Err(r)) => {
                assert_eq!(r.code, *code, "{name}: {r}");
                for w in *words {
                    assert!(
                        r.reason.contains(w),
                        "{name}: reason lacks {w:?}: {}",
                        r.reason
                    );
                }
                matched += 1;
            }
            (Some(Expect::Warned(w)), Ok(x)) => {
                assert!(
                    x.warnings.iter().any(|x| x.contains(w)),
                    "{name}: no warning {w:?} in {:?}",
                    x.warnings
                );
                matched += 1;
            }
            (None, Ok(x)) => {
                // Accepted files carry no profile or path warnings, only (at most) the note
                // that a single resource's subject lives in another file.
                for w in &x.warnings {
                    assert!(
                        w.contains("subject is not a Patient in this file"),
                        "{name}: unexpected warning {w}"
                    );
                }
            }
            (_, got) => panic!("{name}: unexpected outcome {got:?}"),
        }
    }
    // SOURCE.md: 17 SS-MIX2 files (16 messages and one non-message), 55 FHIR files.
    assert_eq!((hl7, fhir), (17, 55));
    assert_eq!(matched, EXPECTED.len(), "every expectation met a file");
}

#[test]
fn accepted_samples_yield_the_records_they_hold() {
    let base =
        samples().join("ssmix2/nhoHQ-SSMIX2DataTestingTool/standard_storage/999/901/9999013");
    let read = |rel: &str| {
        let p = base.join(rel);
        let b = std::fs::read(&p).expect("sample");
        clinical::parse(
            clinical::Format::Ssmix2,
            &b,
            Some(&p.to_string_lossy()),
            &Limits::default(),
        )
        .expect("accepted")
    };
    // OUL^R22 with three lab results: A/G比 1.7, 総蛋白 7.2 g/dl, アルブミン 4.9 g/dl.
    let x = read("20111220/OML-11/9999013_20111220_OML-11_000000011000354_20111220103059000_01_1");
    let obs: Vec<_> = x
        .records
        .iter()
        .filter(|r| r.kind == Some(clinical::Kind::Observation))
        .map(|r| {
            (
                r.display.clone().unwrap_or_default(),
                r.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        obs,
        [
            ("A/G比".to_owned(), "1.7".to_owned()),
            ("総蛋白".into(), "7.2".into()),
            ("アルブミン".into(), "4.9".into())
        ]
    );
    assert_eq!(
        x.identities[0].name_kana.as_deref(),
        Some("カンジャ タロウ")
    );
    assert_eq!(x.identities[0].birth.as_deref(), Some("19700405"));
    // RDE^O11: three prescriptions; 倍 in アレピアチン１０倍散 holds 0x5C (\) in JIS.
    let x = read("20110701/OMP-01/9999013_20110701_OMP-01_000000011000185_20110701224603984_01_1");
    let meds: Vec<_> = x
        .records
        .iter()
        .filter_map(|r| r.display.clone())
        .filter(|d| d.contains('錠') || d.contains('散'))
        .collect();
    assert_eq!(
        meds,
        [
            "ダーゼン錠（５mg)",
            "パンスポリンＴ錠（１００mg)",
            "アレピアチン１０倍散"
        ]
    );
}
