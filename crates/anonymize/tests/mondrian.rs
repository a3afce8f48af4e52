//! Mondrian local recoding on random tables: the written output is recounted with a plain
//! string group-by, and every class must satisfy the privacy model (k, and distinct-l or
//! t-closeness on a sensitive attribute); every input row is written exactly once; and the
//! partition's reported levels are what the output shows.

mod common;

use std::collections::HashMap;

use anonymize::mondrian::mondrian;
use anonymize::{table, Dataset, Diversity, Evaluator, Metric, Privacy};
use common::case;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn every_written_class_satisfies_the_model(
        seed in any::<u64>(),
        dims in 1usize..5,
        rows in 5usize..200,
        k in 1u64..8,
        model in 0u8..4,
        l in 1u64..3,
    ) {
        let c = case(seed, dims, rows);
        // Models: 0 k alone; 1 distinct-l, 2 t-closeness, on one sensitive attribute;
        // 3 distinct-l on two.
        let attributes = match model { 0 => 0, 3 => 2, _ => 1 };
        let mut data = Dataset::with_sensitive_attributes(dims, attributes);
        for (i, r) in c.strings.iter().enumerate() {
            let v: Vec<&str> = r.iter().map(String::as_str).collect();
            let s = [c.sensitive[i].as_str(), c.sensitive2[i].as_str()];
            data.push_row_with(i + 1, &v, &c.hs, &s[..attributes]).expect("row");
        }
        let k = k.min(rows as u64);
        let mut privacy = Privacy::k_anonymity(k, 0.0, rows as u64).expect("privacy");
        privacy = match model {
            1 | 3 => privacy.with_diversity(Diversity::Distinct(l)).expect("l"),
            2 => privacy.with_closeness(0.3).expect("t"),
            _ => privacy,
        };
        let ev = Evaluator::new(&c.hs, &data).expect("ev");
        let res = mondrian(&ev, &c.hs, &data, &privacy, Metric::Loss).expect("mondrian");

        // Write through the table writer and recount.
        let dir = tempfile::tempdir().expect("tmp");
        let input = dir.path().join("in.csv");
        let mut text = String::new();
        let names: Vec<String> = c.hs.iter().map(|h| h.column().to_owned()).collect();
        text.push_str(&names.join(";"));
        text.push_str(";s;u\n");
        for ((r, s), u) in c.strings.iter().zip(&c.sensitive).zip(&c.sensitive2) {
            text.push_str(&r.join(";"));
            text.push(';');
            text.push_str(s);
            text.push(';');
            text.push_str(u);
            text.push('\n');
        }
        std::fs::write(&input, text).expect("write");
        let mut by_leaves: HashMap<Vec<u32>, Vec<usize>> = HashMap::new();
        for p in &res.partitions {
            for &t in &p.tuples {
                by_leaves.insert(data.tuple(t as usize), p.levels.clone());
            }
        }
        let out = dir.path().join("out.csv");
        let suppress_all = res.suppressed > 0;
        let w = table::write_with(&input, &out, b';', &c.hs, &[], |leaves| {
            if suppress_all { None } else { by_leaves.get(leaves).cloned() }
        })
        .expect("write");
        prop_assert_eq!(w.rows, rows as u64);
        let written = std::fs::read_to_string(&out).expect("out");
        let mut classes: HashMap<Vec<&str>, Vec<&str>> = HashMap::new();
        let mut second: HashMap<Vec<&str>, Vec<&str>> = HashMap::new();
        for line in written.lines().skip(1) {
            let f: Vec<&str> = line.split(';').collect();
            classes.entry(f[..dims].to_vec()).or_default().push(f[dims]);
            second.entry(f[..dims].to_vec()).or_default().push(f[dims + 1]);
        }
        let mut overall: HashMap<&str, f64> = HashMap::new();
        for s in &c.sensitive {
            *overall.entry(s).or_default() += 1.0 / rows as f64;
        }
        for (key, values) in &classes {
            if key.iter().all(|v| *v == "*") && suppress_all {
                continue;
            }
            prop_assert!(values.len() as u64 >= k, "class {:?} of {} < k", key, values.len());
            let distinct = |v: &Vec<&str>| {
                let mut d = v.clone();
                d.sort();
                d.dedup();
                d.len() as u64
            };
            if model == 1 || model == 3 {
                prop_assert!(distinct(values) >= l, "class {:?} has {:?}", key, values);
            }
            if model == 3 {
                let u = &second[key];
                prop_assert!(distinct(u) >= l, "class {:?} has {:?} in the second", key, u);
            }
            if model == 2 {
                let n = values.len() as f64;
                let mut f: HashMap<&str, f64> = HashMap::new();
                for v in values {
                    *f.entry(v).or_default() += 1.0 / n;
                }
                let dist: f64 = overall
                    .iter()
                    .map(|(v, q)| (f.get(v).copied().unwrap_or(0.0) - q).abs())
                    .sum::<f64>() / 2.0;
                prop_assert!(dist <= 0.3 + 1e-9, "class {:?} at distance {}", key, dist);
            }
        }
        if !suppress_all {
            prop_assert_eq!(classes.len() as u64, res.classes);
        }
    }
}
