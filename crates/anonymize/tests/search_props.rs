//! The search against brute force on random tables and hierarchies, for k-anonymity alone
//! and with distinct-l, entropy-l or t-closeness on a sensitive attribute: every
//! transformation of the lattice is grouped with a plain string group-by, checked against
//! the models' definitions and scored with the metric's formula written out again, and the
//! search must return a transformation that is anonymous and has the brute-force minimum. Pruning by monotonicity, by the lower bound and by the
//! upward walks may only ever skip transformations that cannot win.

use std::collections::HashMap;

mod common;

use anonymize::{optimal, Dataset, Diversity, Evaluator, Hierarchy, Metric, Privacy};
use common::{case, Case};
use proptest::prelude::*;

/// Does one class (its sensitive values) fail the privacy model? Written from the
/// definitions: distinct values, Shannon entropy, half the L1 distance to the table's
/// distribution.
fn class_fails(p: &Privacy, values: &[&str], overall: &HashMap<&str, f64>) -> bool {
    let n = values.len() as f64;
    if (values.len() as u64) < p.k {
        return true;
    }
    let mut freq: HashMap<&str, f64> = HashMap::new();
    for v in values {
        *freq.entry(v).or_default() += 1.0;
    }
    match p.diversity {
        Some(Diversity::Distinct(l)) if (freq.len() as u64) < l => return true,
        Some(Diversity::Entropy(l)) => {
            let h: f64 = freq.values().map(|c| -(c / n) * (c / n).ln()).sum();
            if h < l.ln() - 1e-12 {
                return true;
            }
        }
        _ => {}
    }
    if let Some(t) = p.closeness {
        let d: f64 = overall
            .iter()
            .map(|(v, q)| (freq.get(v).copied().unwrap_or(0.0) / n - q).abs())
            .sum::<f64>()
            / 2.0;
        if d > t + 1e-12 {
            return true;
        }
    }
    false
}

/// Brute force over strings: (anonymous, score) of one transformation.
fn brute(c: &Case, levels: &[usize], p: &Privacy, metric: Metric) -> (bool, f64) {
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
    let mut members: HashMap<Vec<String>, Vec<&str>> = HashMap::new();
    for (r, s) in c.strings.iter().zip(&c.sensitive) {
        members.entry(gen(r)).or_default().push(s);
    }
    let n = c.strings.len() as f64;
    let mut overall: HashMap<&str, f64> = HashMap::new();
    for s in &c.sensitive {
        *overall.entry(s).or_default() += 1.0 / n;
    }
    let failing: HashMap<Vec<String>, bool> = members
        .iter()
        .map(|(g, vals)| (g.clone(), class_fails(p, vals, &overall)))
        .collect();
    let suppressed: u64 = members
        .iter()
        .filter(|(g, _)| failing[*g])
        .map(|(_, v)| v.len() as u64)
        .sum();
    let anonymous = suppressed <= p.max_suppressed;
    let cut = |v: f64| (v * 1e10).floor() / 1e10;
    match metric {
        Metric::Discernibility => {
            let score = members
                .iter()
                .map(|(g, v)| {
                    let c = v.len() as f64;
                    if failing[g] {
                        n * c
                    } else {
                        c * c
                    }
                })
                .sum();
            return (anonymous, score);
        }
        Metric::Aecs => {
            let kept = members.keys().filter(|g| !failing[*g]).count() as f64;
            let extra = if suppressed > 0 { 1.0 } else { 0.0 };
            return (anonymous, n / (kept + extra));
        }
        Metric::EntropyMono | Metric::EntropyNonMono => {
            let mut total = 0.0;
            for (d, h) in c.hs.iter().enumerate() {
                // Per row: −log2(rows with its value / rows with its generalization).
                let mut orig: HashMap<&str, f64> = HashMap::new();
                let mut general: HashMap<String, f64> = HashMap::new();
                for r in &c.strings {
                    *orig.entry(&r[d]).or_default() += 1.0;
                    *general.entry(gen(r)[d].clone()).or_default() += 1.0;
                }
                let mut v: f64 = c
                    .strings
                    .iter()
                    .map(|r| -(orig[r[d].as_str()] / general[&gen(r)[d]]).log2())
                    .sum();
                if metric == Metric::EntropyNonMono && suppressed > 0 {
                    let mut sup: HashMap<String, f64> = HashMap::new();
                    for r in &c.strings {
                        let g = gen(r);
                        if failing[&g] {
                            *sup.entry(g[d].clone()).or_default() += 1.0;
                        }
                    }
                    let s = suppressed as f64;
                    v += sup.values().map(|x| -x * (x / s).log2()).sum::<f64>();
                }
                let _ = h;
                total += cut(v);
            }
            return (anonymous, total);
        }
        Metric::Loss => {}
    }
    let mut per = Vec::new();
    for (d, h) in c.hs.iter().enumerate() {
        // Share of a generalized string: hierarchy rows carrying it at that level / rows.
        let dom = h.leaves() as f64;
        let mut sum = 0.0;
        for r in &c.strings {
            let g = gen(r);
            if failing[&g] {
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
    (anonymous, score)
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
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn search_finds_the_brute_force_optimum(
        seed in any::<u64>(),
        dims in 1usize..5,
        rows in 5usize..120,
        k in 1u64..8,
        supp_permille in prop_oneof![Just(0u32), Just(20), Just(100), 0u32..1000],
        model in 0u8..4,
        l in 1u64..4,
        t_permille in 50u32..600,
        metric in prop_oneof![
            3 => Just(Metric::Loss),
            1 => Just(Metric::EntropyMono),
            1 => Just(Metric::EntropyNonMono),
            1 => Just(Metric::Discernibility),
            1 => Just(Metric::Aecs),
        ],
    ) {
        let c = case(seed, dims, rows);
        let sensitive = model > 0;
        let mut data = if sensitive { Dataset::with_sensitive(dims) } else { Dataset::new(dims) };
        for (i, r) in c.strings.iter().enumerate() {
            let v: Vec<&str> = r.iter().map(String::as_str).collect();
            let s = sensitive.then(|| c.sensitive[i].as_str());
            data.push_row_with(i + 1, &v, &c.hs, s).expect("row");
        }
        let k = k.min(rows as u64);
        let supp = f64::from(supp_permille) / 1000.0;
        let mut privacy = Privacy::k_anonymity(k, supp, rows as u64).expect("privacy");
        privacy = match model {
            1 => privacy.with_diversity(Diversity::Distinct(l)).expect("l"),
            2 => privacy.with_diversity(Diversity::Entropy(1.0 + (l - 1) as f64 * 0.9)).expect("l"),
            3 => privacy.with_closeness(f64::from(t_permille) / 1000.0).expect("t"),
            _ => privacy,
        };
        let ev = Evaluator::new(&c.hs, &data).expect("ev");
        let res = optimal(&ev, metric, &privacy, |_, _| {}).expect("search");

        let heights: Vec<usize> = c.hs.iter().map(Hierarchy::height).collect();
        let mut best: Option<f64> = None;
        for levels in all_levels(&heights) {
            let (anon, score) = brute(&c, &levels, &privacy, metric);
            if anon {
                best = Some(best.map_or(score, |b: f64| b.min(score)));
            }
        }
        match (best, res.best) {
            (None, None) => {}
            (Some(b), Some(found)) => {
                let (anon, score) = brute(&c, &found.levels, &privacy, metric);
                prop_assert!(anon, "the search returned a transformation that is not anonymous");
                // Each attribute's loss is cut to ten digits (as ARX does); a different
                // summation order can move the cut by 1e-10, hence the tolerance.
                let tol = TOL * score.abs().max(1.0);
                prop_assert!((score - found.score).abs() < tol, "score {} vs brute force {}", found.score, score);
                prop_assert!((b - found.score).abs() < tol, "optimum {} but the search found {}", b, found.score);
            }
            (b, f) => prop_assert!(false, "brute force {:?} vs search {:?}", b, f),
        }
    }
}
