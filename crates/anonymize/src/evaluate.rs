//! Evaluating one full-domain transformation (a level per quasi-identifier): group the
//! distinct tuples into equivalence classes, suppress the classes below k if the limit
//! allows, and score the result with an ARX-compatible quality metric.
//!
//! Metric definitions follow ARX 3.9.2 (`org.deidentifier.arx.metric.v2`) so that scores are
//! comparable to the reference tool: see docs/anonymization.md.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::AnonError;
use crate::hierarchy::Hierarchy;

/// Quality metric (lower is better, as ARX's information loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// ARX's Loss (`MetricMDNMLoss` as `Metric.createLossMetric()` makes it: gs-factor 0.5,
    /// geometric mean over attributes).
    Loss,
    /// ARX's monotone non-uniform entropy (`createEntropyMetric(true)`: precomputed, sum over
    /// attributes). Depends on the levels only, not on what is suppressed.
    EntropyMono,
}

impl Metric {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::EntropyMono => "entropy",
        }
    }
}

/// The privacy requirements of a search.
#[derive(Clone, Debug)]
pub struct Privacy {
    /// Minimum equivalence class size.
    pub k: u64,
    /// Most records that may be suppressed (ARX: ⌊limit × rows⌋).
    pub max_suppressed: u64,
}

impl Privacy {
    /// k-anonymity with a suppression limit given as a fraction of the rows.
    pub fn k_anonymity(k: u64, suppression_limit: f64, rows: u64) -> Result<Self, AnonError> {
        if k == 0 {
            return Err(AnonError::Config("k must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&suppression_limit) {
            return Err(AnonError::Config(format!(
                "suppression limit {suppression_limit} is not a fraction in [0, 1]"
            )));
        }
        if k > rows {
            return Err(AnonError::Config(format!(
                "k = {k} is larger than the data ({rows} rows): no transformation can satisfy it"
            )));
        }
        Ok(Self {
            k,
            max_suppressed: (suppression_limit * rows as f64).floor() as u64,
        })
    }
}

/// The outcome of one transformation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeResult {
    /// Level per quasi-identifier.
    pub levels: Vec<usize>,
    /// Whether the privacy model holds (with suppression within the limit).
    pub anonymous: bool,
    /// Records in classes below k (suppressed if the node is anonymous).
    pub suppressed: u64,
    /// Equivalence classes that are not suppressed.
    pub classes: u64,
    /// Smallest class that is not suppressed (0 if none).
    pub min_class: u64,
    /// Information loss per quasi-identifier, normalized as ARX does.
    pub per_attribute: Vec<f64>,
    /// Information loss (the metric's aggregate).
    pub score: f64,
}

/// Precomputed tables for evaluating transformations of one dataset.
pub struct Evaluator<'a> {
    hierarchies: &'a [Hierarchy],
    data: &'a Dataset,
    shifts: Vec<u32>,
    /// Bit mask of each attribute's field in a class key (not shifted).
    masks: Vec<u128>,
    /// `up[d][from][to][code]`: the code at level `to` of a value coded `code` at `from`.
    up: Vec<Vec<Vec<Vec<u32>>>>,
    /// `share[d][level][code]`: ARX domain share of a generalized value.
    share: Vec<Vec<Vec<f64>>>,
    /// `bound[d][level]`: Loss of attribute d at `level` if nothing were suppressed — a lower
    /// bound of the real loss (a suppressed record costs 1, the most a share can be).
    bound: Vec<Vec<f64>>,
    /// `entropy[d][level]`: ARX's non-uniform entropy of attribute d at `level`.
    entropy: Vec<Vec<f64>>,
}

/// Equivalence classes of one transformation: the packed generalized codes (the class
/// key) and the row count per class — 24 bytes a class. Everything the metrics and models
/// need is a function of the generalized values, and because each hierarchy level is a
/// function of the one below, a key can be generalized further without the original rows.
#[derive(Clone, Debug)]
pub struct ClassTable {
    /// The transformation these are the classes of.
    levels: Vec<usize>,
    keys: Vec<u128>,
    counts: Vec<u64>,
}

impl ClassTable {
    /// Number of classes.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The transformation these are the classes of.
    pub fn levels(&self) -> &[usize] {
        &self.levels
    }

    /// Rows in class `c`.
    pub fn count(&self, c: usize) -> u64 {
        self.counts[c]
    }
}

impl<'a> Evaluator<'a> {
    /// Prepares the tables; fails if the class key would not fit in 128 bits.
    pub fn new(hierarchies: &'a [Hierarchy], data: &'a Dataset) -> Result<Self, AnonError> {
        let mut shifts = Vec::with_capacity(hierarchies.len());
        let mut masks = Vec::with_capacity(hierarchies.len());
        let mut bits = 0u32;
        for h in hierarchies {
            let width = usize::BITS - h.leaves().max(1).leading_zeros();
            shifts.push(bits);
            masks.push((1u128 << width) - 1);
            bits += width;
        }
        if bits > 128 {
            return Err(AnonError::KeyTooWide { bits });
        }
        let up = hierarchies
            .iter()
            .map(|h| {
                (0..h.height())
                    .map(|from| {
                        (0..h.height())
                            .map(|to| {
                                let mut map = vec![0u32; h.width(from)];
                                if to >= from {
                                    for leaf in 0..h.leaves() as u32 {
                                        map[h.code(leaf, from) as usize] = h.code(leaf, to);
                                    }
                                }
                                map
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let share = hierarchies
            .iter()
            .map(|h| {
                (0..h.height())
                    .map(|level| {
                        (0..h.width(level) as u32)
                            .map(|code| h.share(level, code))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let leaf_share: Vec<Vec<Vec<f64>>> = hierarchies
            .iter()
            .map(|h| {
                (0..h.height())
                    .map(|level| {
                        (0..h.leaves() as u32)
                            .map(|leaf| h.share(level, h.code(leaf, level)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut raw = leaf_share
            .iter()
            .map(|levels| vec![0.0; levels.len()])
            .collect::<Vec<_>>();
        for t in 0..data.len() {
            let count = data.count(t) as f64;
            for (d, &leaf) in data.tuple(t).iter().enumerate() {
                for (level, shares) in leaf_share[d].iter().enumerate() {
                    raw[d][level] += count * shares[leaf as usize];
                }
            }
        }
        let rows = data.rows() as f64;
        let bound = raw
            .iter()
            .zip(hierarchies)
            .map(|(levels, h)| {
                levels
                    .iter()
                    .map(|&v| normalize_loss(v, rows, h.leaves() as f64))
                    .collect()
            })
            .collect();
        let entropy = hierarchies
            .iter()
            .enumerate()
            .map(|(d, h)| non_uniform_entropy(h, data, d))
            .collect();
        Ok(Self {
            hierarchies,
            data,
            shifts,
            masks,
            up,
            share,
            bound,
            entropy,
        })
    }

    /// Levels per quasi-identifier (heights).
    pub fn heights(&self) -> Vec<usize> {
        self.hierarchies.iter().map(Hierarchy::height).collect()
    }

    /// The distinct tuples themselves: the classes of the untransformed data.
    pub fn root(&self) -> ClassTable {
        let levels = vec![0; self.data.dims()];
        let mut counts = Vec::with_capacity(self.data.len());
        let mut keys = Vec::with_capacity(self.data.len());
        for t in 0..self.data.len() {
            counts.push(self.data.count(t));
            keys.push(self.key(self.data.tuple(t)));
        }
        ClassTable {
            levels,
            keys,
            counts,
        }
    }

    /// The class key of a tuple of leaves, untransformed.
    fn key(&self, leaves: &[u32]) -> u128 {
        let mut key = 0u128;
        for (d, &leaf) in leaves.iter().enumerate() {
            key |= u128::from(self.hierarchies[d].code(leaf, 0)) << self.shifts[d];
        }
        key
    }

    /// The classes under `levels`, grouped from `src` — the classes of any transformation
    /// at or below `levels` in every attribute (each of its classes lies within one class of
    /// the coarser one, so generalizing its keys and merging equal ones is exact).
    pub fn classes_from(&self, src: &ClassTable, levels: &[usize]) -> ClassTable {
        struct Step<'m> {
            shift: u32,
            mask: u128,
            map: &'m [u32],
        }
        let steps: Vec<Step<'_>> = (0..levels.len())
            .filter(|&d| src.levels[d] != levels[d])
            .map(|d| Step {
                shift: self.shifts[d],
                mask: self.masks[d],
                map: &self.up[d][src.levels[d]][levels[d]],
            })
            .collect();
        let mut index: FxHashMap<u128, u32> =
            FxHashMap::with_capacity_and_hasher(src.len(), Default::default());
        let mut keys = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for (c, &old) in src.keys.iter().enumerate() {
            let mut key = old;
            for s in &steps {
                let code = ((key >> s.shift) & s.mask) as usize;
                key = (key & !(s.mask << s.shift)) | (u128::from(s.map[code]) << s.shift);
            }
            let next = counts.len() as u32;
            let k = *index.entry(key).or_insert(next);
            if k == next {
                counts.push(0);
                keys.push(key);
            }
            counts[k as usize] += src.counts[c];
        }
        ClassTable {
            levels: levels.to_vec(),
            keys,
            counts,
        }
    }

    /// The metric's lower bound at `levels` without looking at the classes.
    pub fn lower_bound(&self, metric: Metric, levels: &[usize]) -> f64 {
        match metric {
            Metric::Loss => geometric_mean(
                &levels
                    .iter()
                    .enumerate()
                    .map(|(d, &l)| self.bound[d][l])
                    .collect::<Vec<_>>(),
            ),
            Metric::EntropyMono => levels
                .iter()
                .enumerate()
                .map(|(d, &l)| self.entropy[d][l])
                .sum(),
        }
    }

    /// Evaluates one transformation completely, from the raw tuples.
    pub fn evaluate(&self, metric: Metric, privacy: &Privacy, levels: &[usize]) -> NodeResult {
        let g = self.classes_from(&self.root(), levels);
        self.evaluate_classes(metric, privacy, levels, &g)
    }

    /// Evaluates one transformation given its classes.
    pub fn evaluate_classes(
        &self,
        metric: Metric,
        privacy: &Privacy,
        levels: &[usize],
        g: &ClassTable,
    ) -> NodeResult {
        let outlier: Vec<bool> = g.counts.iter().map(|&c| c < privacy.k).collect();
        let suppressed: u64 = g
            .counts
            .iter()
            .zip(&outlier)
            .filter(|(_, &o)| o)
            .map(|(c, _)| c)
            .sum();
        let kept = g.counts.iter().zip(&outlier).filter(|(_, &o)| !o);
        let classes = kept.clone().count() as u64;
        let min_class = kept.map(|(c, _)| *c).min().unwrap_or(0);
        let anonymous = suppressed <= privacy.max_suppressed;
        let per_attribute = match metric {
            Metric::Loss => self.loss(levels, g, &outlier),
            Metric::EntropyMono => levels
                .iter()
                .enumerate()
                .map(|(d, &l)| self.entropy[d][l])
                .collect(),
        };
        let score = match metric {
            Metric::Loss => geometric_mean(&per_attribute),
            Metric::EntropyMono => per_attribute.iter().sum(),
        };
        NodeResult {
            levels: levels.to_vec(),
            anonymous,
            suppressed,
            classes,
            min_class,
            score,
            per_attribute,
        }
    }

    /// ARX `MetricMDNMLoss.getInformationLossInternal` with gs-factor 0.5: a kept record
    /// costs its generalized value's domain share, a suppressed one costs 1, per attribute.
    fn loss(&self, levels: &[usize], g: &ClassTable, outlier: &[bool]) -> Vec<f64> {
        let dims = levels.len();
        let mut sums = vec![0.0f64; dims];
        for (c, &out) in outlier.iter().enumerate() {
            let count = g.counts[c] as f64;
            if out {
                for s in sums.iter_mut() {
                    *s += count;
                }
            } else {
                let key = g.keys[c];
                for (d, sum) in sums.iter_mut().enumerate() {
                    let code = ((key >> self.shifts[d]) & self.masks[d]) as usize;
                    *sum += count * self.share[d][levels[d]][code];
                }
            }
        }
        let rows = self.data.rows() as f64;
        sums.iter()
            .zip(self.hierarchies)
            .map(|(&s, h)| normalize_loss(s, rows, h.leaves() as f64))
            .collect()
    }
}

/// ARX `MetricMDNUEntropyPrecomputed`: per level, -Σ over original values of
/// a·log2(a/b), a = rows with the value, b = rows with its generalization; cut to ten digits.
fn non_uniform_entropy(h: &Hierarchy, data: &Dataset, d: usize) -> Vec<f64> {
    let mut leaf_rows = vec![0u64; h.leaves()];
    for t in 0..data.len() {
        leaf_rows[data.tuple(t)[d] as usize] += data.count(t);
    }
    (0..h.height())
        .map(|level| {
            let mut gen_rows = vec![0u64; h.width(level)];
            for (leaf, &a) in leaf_rows.iter().enumerate() {
                gen_rows[h.code(leaf as u32, level) as usize] += a;
            }
            let mut v = 0.0f64;
            for (leaf, &a) in leaf_rows.iter().enumerate() {
                if a != 0 {
                    let b = gen_rows[h.code(leaf as u32, level) as usize];
                    v += a as f64 * (a as f64 / b as f64).log2();
                }
            }
            let v = if v == 0.0 { 0.0 } else { -v };
            (v * 1e10).floor() / 1e10
        })
        .collect()
}

/// ARX `MetricMDNMLoss.normalizeGeneralized`: 0 for the original data (every record's share
/// is 1/domain), 1 for everything suppressed; cut to ten digits (`Metric.round`).
fn normalize_loss(aggregate: f64, rows: f64, domain: f64) -> f64 {
    let min = rows / domain;
    let max = rows;
    let r = ((aggregate - min) / (max - min)).max(0.0);
    (r * 1e10).floor() / 1e10
}

/// ARX `ILMultiDimensionalGeometricMean` with equal weights: 1 is added to each value (so a
/// zero does not hide the others) and subtracted from the result.
fn geometric_mean(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    values
        .iter()
        .fold(1.0, |acc, v| acc * (v + 1.0).powf(1.0 / n))
        - 1.0
}
