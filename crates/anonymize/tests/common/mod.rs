//! Random tables and hierarchies shared by the property tests (fixed seeds from proptest).

use anonymize::Hierarchy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random hierarchy over `m` leaves: each level merges runs of the level below; the top is `*`.
fn hierarchy(rng: &mut ChaCha8Rng, column: &str, m: usize, height: usize) -> Hierarchy {
    let mut rows: Vec<Vec<String>> = (0..m).map(|i| vec![format!("{column}{i}")]).collect();
    let mut groups: Vec<usize> = (0..m).collect();
    for level in 1..height {
        if level == height - 1 {
            for r in rows.iter_mut() {
                r.push("*".into());
            }
            break;
        }
        // Merge consecutive groups in runs of 1..=3.
        let distinct = groups.iter().max().map_or(0, |g| g + 1);
        let mut map = vec![0usize; distinct];
        let mut next = 0;
        let mut g = 0;
        while g < distinct {
            let run = rng.gen_range(1..=3).min(distinct - g);
            for slot in &mut map[g..g + run] {
                *slot = next;
            }
            next += 1;
            g += run;
        }
        for (i, r) in rows.iter_mut().enumerate() {
            groups[i] = map[groups[i]];
            r.push(format!("{column}L{level}G{}", groups[i]));
        }
    }
    Hierarchy::from_rows(column, rows).expect("valid")
}

pub struct Case {
    pub hs: Vec<Hierarchy>,
    pub strings: Vec<Vec<String>>,
    pub sensitive: Vec<String>,
    /// A second sensitive attribute, independent of the first.
    pub sensitive2: Vec<String>,
    /// A hierarchy over the first sensitive attribute's values (s0, s1, …).
    #[allow(dead_code)] // each test binary compiles this module; only some use it
    pub sensitive_hierarchy: Hierarchy,
}

pub fn case(seed: u64, dims: usize, rows: usize) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hs: Vec<Hierarchy> = (0..dims)
        .map(|d| {
            let m = rng.gen_range(2..12);
            let h = rng.gen_range(2..5);
            hierarchy(&mut rng, &format!("c{d}"), m, h)
        })
        .collect();
    let strings = (0..rows)
        .map(|_| {
            hs.iter()
                .map(|h| {
                    // Skewed: small leaves more often, so classes differ in size.
                    let m = h.leaves();
                    let a = rng.gen_range(0..m);
                    let b = rng.gen_range(0..m);
                    let leaf = a.min(b) as u32;
                    h.value(0, h.code(leaf, 0)).to_owned()
                })
                .collect()
        })
        .collect();
    let kinds = rng.gen_range(1..5);
    let sensitive = (0..rows)
        .map(|_| format!("s{}", rng.gen_range(0..kinds)))
        .collect();
    // Drawn after everything above, so the other fields are as before for a seed.
    let kinds2 = rng.gen_range(1..4);
    let sensitive2 = (0..rows)
        .map(|_| format!("u{}", rng.gen_range(0..kinds2)))
        .collect();
    let height = rng.gen_range(2..5);
    // Leaves beyond those in the data too: a hierarchy covers the whole domain.
    let domain = kinds + rng.gen_range(0..3);
    let sensitive_hierarchy = hierarchy(&mut rng, "s", domain, height);
    Case {
        hs,
        strings,
        sensitive,
        sensitive2,
        sensitive_hierarchy,
    }
}
