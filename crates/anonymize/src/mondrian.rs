//! Local recoding by multidimensional partitioning (Mondrian, LeFevre, DeWitt and
//! Ramakrishnan 2006), for data where one generalization level per attribute for the whole
//! table loses too much: the records are split recursively at the median of one
//! quasi-identifier while both halves still satisfy the privacy model, and each final
//! partition is generalized, per attribute, to the lowest hierarchy level at which its
//! values coincide. Different partitions can so use different levels.
//!
//! Works on the distinct tuples with their counts. Leaves are ordered by their hierarchy
//! (groups of every level kept together), so a split keeps related values on one side.
//! Pure: no clock, no I/O. Greedy, so not optimal: the report says so.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::AnonError;
use crate::evaluate::{geometric_mean, normalize_loss, Evaluator, Metric, Privacy};
use crate::hierarchy::Hierarchy;

/// One final partition: its tuples and, per quasi-identifier, the level it is written at.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Tuple indices of the dataset.
    pub tuples: Vec<u32>,
    /// Level per quasi-identifier.
    pub levels: Vec<usize>,
    /// Rows.
    pub count: u64,
}

/// The outcome of a Mondrian run.
#[derive(Clone, Debug, Serialize)]
pub struct MondrianResult {
    /// Final partitions (equivalence classes).
    #[serde(skip)]
    pub partitions: Vec<Partition>,
    /// Records suppressed: all of them if even the whole table fails the model, else 0.
    pub suppressed: u64,
    /// Released classes.
    pub classes: u64,
    /// Smallest released class.
    pub min_class: u64,
    /// Information loss per quasi-identifier (Loss metric), over all records.
    pub per_attribute: Vec<f64>,
    /// The chosen metric's score.
    pub score: f64,
    /// Per quasi-identifier, how many records are written at each level.
    pub level_histogram: Vec<Vec<u64>>,
}

/// Rank of every leaf in an order that keeps each level's groups contiguous: sorted by the
/// codes from the top level down, then by position in the file.
fn leaf_ranks(h: &Hierarchy) -> Vec<u32> {
    let mut leaves: Vec<u32> = (0..h.leaves() as u32).collect();
    leaves.sort_by_key(|&leaf| {
        let mut key: Vec<u32> = (1..h.height()).rev().map(|l| h.code(leaf, l)).collect();
        key.push(leaf);
        key
    });
    let mut rank = vec![0u32; h.leaves()];
    for (r, &leaf) in leaves.iter().enumerate() {
        rank[leaf as usize] = r as u32;
    }
    rank
}

/// Partitions the dataset and scores the result with `metric` (loss, discernibility or
/// AECS; the entropies are defined for global recoding only).
pub fn mondrian(
    ev: &Evaluator<'_>,
    hierarchies: &[Hierarchy],
    data: &Dataset,
    privacy: &Privacy,
    metric: Metric,
) -> Result<MondrianResult, AnonError> {
    if matches!(metric, Metric::EntropyMono | Metric::EntropyNonMono) {
        return Err(AnonError::Config(
            "the entropy metrics are defined for one level per attribute; use --metric loss, \
             discernibility or aecs with --mode mondrian"
                .into(),
        ));
    }
    let ranks: Vec<Vec<u32>> = hierarchies.iter().map(leaf_ranks).collect();
    let dims = hierarchies.len();
    let all: Vec<u32> = (0..data.len() as u32).collect();
    let rows = data.rows();
    let passes = |tuples: &[u32]| !privacy.class_fails(&ev.tuple_stats(tuples));

    let mut finals: Vec<Vec<u32>> = Vec::new();
    let mut suppressed = 0;
    if passes(&all) {
        let mut stack = vec![all];
        while let Some(part) = stack.pop() {
            match split(&part, data, &ranks, hierarchies, dims, &passes) {
                Some((l, r)) => {
                    stack.push(r);
                    stack.push(l);
                }
                None => finals.push(part),
            }
        }
    } else {
        suppressed = rows;
    }

    // Levels per partition and attribute; partitions that generalize to the same values
    // are one class in the output, so they are merged here; then the loss.
    let mut partitions: Vec<Partition> = Vec::with_capacity(finals.len());
    let mut by_key: FxHashMap<Vec<(usize, u32)>, usize> = FxHashMap::default();
    let mut sums = vec![0.0f64; dims];
    let mut level_histogram: Vec<Vec<u64>> =
        hierarchies.iter().map(|h| vec![0; h.height()]).collect();
    for tuples in finals {
        let count: u64 = tuples.iter().map(|&t| data.count(t as usize)).sum();
        let mut levels = Vec::with_capacity(dims);
        let mut key = Vec::with_capacity(dims);
        for (d, h) in hierarchies.iter().enumerate() {
            let first = data.leaf(tuples[0] as usize, d);
            let level = (0..h.height())
                .find(|&l| {
                    let c = h.code(first, l);
                    tuples
                        .iter()
                        .all(|&t| h.code(data.leaf(t as usize, d), l) == c)
                })
                .unwrap_or(h.height() - 1);
            sums[d] += count as f64 * h.share(level, h.code(first, level));
            level_histogram[d][level] += count;
            levels.push(level);
            key.push((level, h.code(first, level)));
        }
        match by_key.get(&key) {
            Some(&i) => {
                partitions[i].tuples.extend(tuples);
                partitions[i].count += count;
            }
            None => {
                by_key.insert(key, partitions.len());
                partitions.push(Partition {
                    tuples,
                    levels,
                    count,
                });
            }
        }
    }
    if suppressed > 0 {
        for s in sums.iter_mut() {
            *s += suppressed as f64;
        }
    }
    let per_attribute: Vec<f64> = sums
        .iter()
        .zip(hierarchies)
        .map(|(&s, h)| normalize_loss(s, rows as f64, h.leaves() as f64))
        .collect();
    let classes = partitions.len() as u64;
    let min_class = partitions.iter().map(|p| p.count).min().unwrap_or(0);
    let n = rows as f64;
    let score = match metric {
        Metric::Loss => geometric_mean(&per_attribute),
        Metric::Discernibility => {
            partitions
                .iter()
                .map(|p| (p.count as f64).powi(2))
                .sum::<f64>()
                + n * suppressed as f64
        }
        Metric::Aecs => n / (classes as f64 + if suppressed > 0 { 1.0 } else { 0.0 }),
        Metric::EntropyMono | Metric::EntropyNonMono => 0.0,
    };
    Ok(MondrianResult {
        partitions,
        suppressed,
        classes,
        min_class,
        per_attribute,
        score,
        level_histogram,
    })
}

/// The best allowed split of `part`: attributes by normalized spread, widest first; on each,
/// the weighted median of the ranks (the halves take ranks ≤ m and > m).
fn split(
    part: &[u32],
    data: &Dataset,
    ranks: &[Vec<u32>],
    hierarchies: &[Hierarchy],
    dims: usize,
    passes: &impl Fn(&[u32]) -> bool,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let rank = |t: u32, d: usize| ranks[d][data.leaf(t as usize, d) as usize];
    let mut order: Vec<(f64, usize)> = (0..dims)
        .map(|d| {
            let (lo, hi) = part
                .iter()
                .map(|&t| rank(t, d))
                .fold((u32::MAX, 0), |(a, b), r| (a.min(r), b.max(r)));
            let span = f64::from(hi.saturating_sub(lo))
                / (hierarchies[d].leaves().saturating_sub(1).max(1)) as f64;
            (span, d)
        })
        .filter(|(span, _)| *span > 0.0)
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, d) in order {
        let mut sorted = part.to_vec();
        sorted.sort_by_key(|&t| rank(t, d));
        let total: u64 = sorted.iter().map(|&t| data.count(t as usize)).sum();
        let mut acc = 0u64;
        let mut median = rank(sorted[0], d);
        for &t in &sorted {
            acc += data.count(t as usize);
            median = rank(t, d);
            if 2 * acc >= total {
                break;
            }
        }
        let max = rank(sorted[sorted.len() - 1], d);
        // If the median is the largest value, split below it instead.
        let cut = if median == max {
            sorted
                .iter()
                .map(|&t| rank(t, d))
                .filter(|&r| r < max)
                .max()
        } else {
            Some(median)
        };
        let Some(cut) = cut else { continue };
        let at = sorted.partition_point(|&t| rank(t, d) <= cut);
        let (l, r) = sorted.split_at(at);
        if !l.is_empty() && !r.is_empty() && passes(l) && passes(r) {
            return Some((l.to_vec(), r.to_vec()));
        }
    }
    None
}
