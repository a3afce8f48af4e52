//! Linking on synthetic data against the generator's ground truth (R-IN-5): every file of a
//! 3,000-person, 5-institution population parses, and the pseudonyms join exactly the local
//! ids that are one person. The 100,000-person figure is measured by `enclave-bench link`.

use linkage::eval::{link_tree, read_truth, score};
use linkage::{LinkKey, Linker};

#[test]
fn synthetic_population_links_with_full_precision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("s");
    synth::generate(
        &synth::Options {
            persons: 3_000,
            seed: 7,
            institutions: 5,
            formats: synth::Format::ALL.to_vec(),
            out: out.clone(),
            as_of: synth::date::Date::new(2025, 3, 31).expect("date"),
            threads: 2,
            layout: synth::Layout::Tree,
        },
        |_| {},
    )
    .expect("synth");
    let truth = read_truth(&std::fs::read_to_string(out.join("truth/links.csv")).expect("truth"))
        .expect("parse truth");
    let mut linker = Linker::new(LinkKey::new([42; 32]));
    let st = link_tree(&out, &mut linker).expect("walk");
    assert!(
        st.refused.is_empty(),
        "synthetic files refused: {:?}",
        &st.refused[..st.refused.len().min(5)]
    );
    let s = score(&linker, &truth);
    println!(
        "{st:?}\n{s:?} recall {:.5} precision {:.5}",
        s.recall(),
        s.precision()
    );
    assert_eq!(
        s.unseen, 0,
        "every local id in the truth appears in some file"
    );
    assert!(
        s.true_pairs > 100,
        "the population must have persons at several institutions"
    );
    assert!(s.recall() >= 0.995, "recall {}", s.recall());
    assert_eq!(s.precision(), 1.0);
    // Nothing stayed provisional: every local id came with a card at least once.
    assert!(linker
        .local_map()
        .values()
        .all(|(_, b)| *b != linkage::Basis::Provisional));
}
