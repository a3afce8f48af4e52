//! The search against brute force on random tables and hierarchies: every transformation of
//! the lattice is grouped with a plain string group-by and scored with the metric's formula
//! written out again, and the search must return a transformation that is anonymous and has
//! the brute-force minimum score. Pruning by monotonicity, by the lower bound and by the
//! upward walks may only ever skip transformations that cannot win.

use std::collections::HashMap;

use anonymize::{optimal, Dataset, Evaluator, Hierarchy, Metric, Privacy};
use proptest::prelude::*;
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

struct Case {
    hs: Vec<Hierarchy>,
    strings: Vec<Vec<String>>,
}

fn case(seed: u64, dims: usize, rows: usize) -> Case {
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
    Case { hs, strings }
}

/// Brute force over strings: (anonymous, score) of one transformation.
fn brute(c: &Case, levels: &[usize], k: u64, max_sup: u64) -> (bool, f64) {
    let gen = |row: &Vec<String>| -> Vec<String> {
        row.iter()
            .zip(&c.hs)
            .zip(levels)
            .map(|((v, h), &l)| {
                let leaf = h.leaf(v).expect("leaf");
                h.value(l, h.code(leaf, l)).to_owned()
            })
            .collect()
    };
    let mut sizes: HashMap<Vec<String>, u64> = HashMap::new();
    for r in &c.strings {
        *sizes.entry(gen(r)).or_default() += 1;
    }
    let suppressed: u64 = sizes.values().filter(|&&s| s < k).sum();
    let n = c.strings.len() as f64;
    let mut per = Vec::new();
    for (d, h) in c.hs.iter().enumerate() {
        // Share of a generalized string: hierarchy rows carrying it at that level / rows.
        let dom = h.leaves() as f64;
        let mut sum = 0.0;
        for r in &c.strings {
            let g = gen(r);
            if sizes[&g] < k {
                sum += 1.0;
            } else {
                let covered = (0..h.leaves() as u32)
                    .filter(|&leaf| h.value(levels[d], h.code(leaf, levels[d])) == g[d])
                    .count() as f64;
                sum += covered / dom;
            }
        }
        let min = n / dom;
        let v = ((sum - min) / (n - min)).max(0.0);
        per.push((v * 1e10).floor() / 1e10);
    }
    let m = per.len() as f64;
    let score = per.iter().fold(1.0, |a, v| a * (v + 1.0).powf(1.0 / m)) - 1.0;
    (suppressed <= max_sup, score)
}

fn all_levels(heights: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &h in heights {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..h).map(move |l| {
                    let mut q = p.clone();
                    q.push(l);
                    q
                })
            })
            .collect();
    }
    out
}

/// The criterion for equal scores (relative error < 1e-9 on scores ≤ 1).
const TOL: f64 = 1e-9;

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn search_finds_the_brute_force_optimum(
        seed in any::<u64>(),
        dims in 1usize..5,
        rows in 5usize..120,
        k in 1u64..8,
        supp_permille in prop_oneof![Just(0u32), Just(20), Just(100), 0u32..1000],
    ) {
        let c = case(seed, dims, rows);
        let mut data = Dataset::new(dims);
        for (i, r) in c.strings.iter().enumerate() {
            let v: Vec<&str> = r.iter().map(String::as_str).collect();
            data.push_row(i + 1, &v, &c.hs).expect("row");
        }
        let k = k.min(rows as u64);
        let supp = f64::from(supp_permille) / 1000.0;
        let privacy = Privacy::k_anonymity(k, supp, rows as u64).expect("privacy");
        let ev = Evaluator::new(&c.hs, &data).expect("ev");
        let res = optimal(&ev, Metric::Loss, &privacy, |_, _| {}).expect("search");

        let heights: Vec<usize> = c.hs.iter().map(Hierarchy::height).collect();
        let mut best: Option<f64> = None;
        for levels in all_levels(&heights) {
            let (anon, score) = brute(&c, &levels, k, privacy.max_suppressed);
            if anon {
                best = Some(best.map_or(score, |b: f64| b.min(score)));
            }
        }
        match (best, res.best) {
            (None, None) => {}
            (Some(b), Some(found)) => {
                let (anon, score) = brute(&c, &found.levels, k, privacy.max_suppressed);
                prop_assert!(anon, "the search returned a transformation that is not anonymous");
                // Each attribute's loss is cut to ten digits (as ARX does); a different
                // summation order can move the cut by 1e-10, hence the tolerance.
                prop_assert!((score - found.score).abs() < TOL, "score {} vs brute force {}", found.score, score);
                prop_assert!((b - found.score).abs() < TOL, "optimum {} but the search found {}", b, found.score);
            }
            (b, f) => prop_assert!(false, "brute force {:?} vs search {:?}", b, f),
        }
    }
}
