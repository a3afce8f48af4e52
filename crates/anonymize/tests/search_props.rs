//! The search against brute force on random tables and hierarchies, for k-anonymity alone
//! and with distinct-l, entropy-l or t-closeness (equal or hierarchical distance) on one or
//! two sensitive attributes: every
//! transformation of the lattice is grouped with a plain string group-by, checked against
//! the models' definitions and scored with the metric's formula written out again, and the
//! search must return a transformation that is anonymous and has the brute-force minimum. Pruning by monotonicity, by the lower bound and by the
//! upward walks may only ever skip transformations that cannot win.

use std::collections::HashMap;

mod common;

use anonymize::{optimal, Dataset, Diversity, Evaluator, Hierarchy, Metric, Privacy};
use common::{case, Case};
use proptest::prelude::*;

/// One sensitive attribute as the brute force sees it: its value per row and, for the
/// hierarchical distance, its hierarchy.
struct Attr<'a> {
    values: &'a [String],
    tree: Option<&'a Hierarchy>,
}

/// Earth mover's distance with hierarchical ground distance, written from the definition
/// over the whole tree (every node, whether the class has values under it or not): each
/// node at level j costs j / H × min(positive, negative extras of its children), where an
/// extra is the class's share minus the table's of the values under a child.
fn hierarchical_emd(h: &Hierarchy, p: &HashMap<&str, f64>, q: &HashMap<&str, f64>) -> f64 {
    let height = h.height() - 1;
    let leaves: Vec<&str> = (0..h.leaves() as u32)
        .map(|l| h.value(0, h.code(l, 0)))
        .collect();
    let under = |level: usize, node: &str| -> Vec<&str> {
        (0..h.leaves() as u32)
            .filter(|&l| h.value(level, h.code(l, level)) == node)
            .map(|l| leaves[l as usize])
            .collect()
    };
    let extra = |level: usize, node: &str| -> f64 {
        under(level, node)
            .iter()
            .map(|v| p.get(v).copied().unwrap_or(0.0) - q.get(v).copied().unwrap_or(0.0))
            .sum()
    };
    let mut cost = 0.0;
    for j in 1..=height {
        let mut nodes: Vec<&str> = (0..h.leaves() as u32)
            .map(|l| h.value(j, h.code(l, j)))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            let mut children: Vec<&str> = (0..h.leaves() as u32)
                .filter(|&l| h.value(j, h.code(l, j)) == node)
                .map(|l| h.value(j - 1, h.code(l, j - 1)))
                .collect();
            children.sort_unstable();
            children.dedup();
            let (mut pos, mut neg) = (0.0, 0.0);
            for c in children {
                let e = extra(j - 1, c);
                if e > 0.0 {
                    pos += e;
                } else {
                    neg -= e;
                }
            }
            cost += j as f64 / height as f64 * f64::min(pos, neg);
        }
    }
    cost
}

/// Does one class (its rows) fail the privacy model? Written from the definitions, per
/// sensitive attribute: distinct values, Shannon entropy, the earth mover's distance to the
/// table's distribution (half the L1 distance, or hierarchical).
fn class_fails(
    p: &Privacy,
    rows: &[usize],
    attrs: &[Attr<'_>],
    overall: &[HashMap<&str, f64>],
) -> bool {
    let n = rows.len() as f64;
    if (rows.len() as u64) < p.k {
        return true;
    }
    for (a, overall) in attrs.iter().zip(overall) {
        let mut freq: HashMap<&str, f64> = HashMap::new();
        for &r in rows {
            *freq.entry(a.values[r].as_str()).or_default() += 1.0;
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
            let share: HashMap<&str, f64> = freq.iter().map(|(v, c)| (*v, c / n)).collect();
            let d = match a.tree {
                Some(h) => hierarchical_emd(h, &share, overall),
                None => {
                    overall
                        .iter()
                        .map(|(v, q)| (share.get(v).copied().unwrap_or(0.0) - q).abs())
                        .sum::<f64>()
                        / 2.0
                }
            };
            if d > t + 1e-12 {
                return true;
            }
        }
    }
    false
}

/// Brute force over strings: (anonymous, score) of one transformation.
fn brute(
    c: &Case,
    levels: &[usize],
    p: &Privacy,
    metric: Metric,
    attrs: &[Attr<'_>],
) -> (bool, f64) {
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
    let mut members: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
    for (i, r) in c.strings.iter().enumerate() {
        members.entry(gen(r)).or_default().push(i);
    }
    let n = c.strings.len() as f64;
    let overall: Vec<HashMap<&str, f64>> = attrs
        .iter()
        .map(|a| {
            let mut o: HashMap<&str, f64> = HashMap::new();
            for s in a.values {
                *o.entry(s.as_str()).or_default() += 1.0 / n;
            }
            o
        })
        .collect();
    let failing: HashMap<Vec<String>, bool> = members
        .iter()
        .map(|(g, rows)| (g.clone(), class_fails(p, rows, attrs, &overall)))
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
        model in 0u8..7,
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
        // Models: 0 k alone; 1 distinct-l, 2 entropy-l, 3 t equal distance, on one
        // attribute; 4 distinct-l and t (equal) on two; 5 t hierarchical on one; 6 t on two,
        // the first hierarchical.
        let tree = matches!(model, 5 | 6).then_some(&c.sensitive_hierarchy);
        let mut attrs = Vec::new();
        if model > 0 {
            attrs.push(Attr { values: &c.sensitive, tree });
        }
        if matches!(model, 4 | 6) {
            attrs.push(Attr { values: &c.sensitive2, tree: None });
        }
        let mut data = Dataset::with_sensitive_attributes(dims, attrs.len());
        if let Some(h) = tree {
            data = data.with_sensitive_hierarchy(0, h.clone()).expect("sensitive hierarchy");
        }
        for (i, r) in c.strings.iter().enumerate() {
            let v: Vec<&str> = r.iter().map(String::as_str).collect();
            let s: Vec<&str> = attrs.iter().map(|a| a.values[i].as_str()).collect();
            data.push_row_with(i + 1, &v, &c.hs, &s).expect("row");
        }
        let k = k.min(rows as u64);
        let supp = f64::from(supp_permille) / 1000.0;
        let mut privacy = Privacy::k_anonymity(k, supp, rows as u64).expect("privacy");
        privacy = match model {
            1 => privacy.with_diversity(Diversity::Distinct(l)).expect("l"),
            2 => privacy.with_diversity(Diversity::Entropy(1.0 + (l - 1) as f64 * 0.9)).expect("l"),
            3 | 5 | 6 => privacy.with_closeness(f64::from(t_permille) / 1000.0).expect("t"),
            4 => privacy
                .with_diversity(Diversity::Distinct(l))
                .and_then(|p| p.with_closeness(f64::from(t_permille) / 1000.0))
                .expect("l and t"),
            _ => privacy,
        };
        let ev = Evaluator::new(&c.hs, &data).expect("ev");
        let res = optimal(&ev, metric, &privacy, |_, _| {}).expect("search");

        let heights: Vec<usize> = c.hs.iter().map(Hierarchy::height).collect();
        let mut best: Option<f64> = None;
        for levels in all_levels(&heights) {
            let (anon, score) = brute(&c, &levels, &privacy, metric, &attrs);
            if anon {
                best = Some(best.map_or(score, |b: f64| b.min(score)));
            }
        }
        match (best, res.best) {
            (None, None) => {}
            (Some(b), Some(found)) => {
                let (anon, score) = brute(&c, &found.levels, &privacy, metric, &attrs);
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
