//! Evaluating one full-domain transformation (a level per quasi-identifier): group the
//! distinct tuples into equivalence classes, suppress the classes below k if the limit
//! allows, and score the result with an ARX-compatible quality metric.
//!
//! Metric definitions follow ARX 3.9.2 (`org.deidentifier.arx.metric.v2`) so that scores are
//! comparable to the reference tool: see docs/anonymization.md.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// ARX's non-monotone non-uniform entropy (`createEntropyMetric(false)`): as the
    /// monotone one, plus for suppressed records the entropy of their generalized values.
    EntropyNonMono,
    /// ARX's discernibility (`createDiscernabilityMetric()`, non-monotone): Σ |class|² over
    /// released classes plus rows × |class| for suppressed ones.
    Discernibility,
    /// ARX's average equivalence class size (`createAECSMetric()`): rows / (released classes
    /// + 1 if any record is suppressed).
    Aecs,
}

impl Metric {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::EntropyMono => "entropy",
            Metric::EntropyNonMono => "entropy-nonmono",
            Metric::Discernibility => "discernibility",
            Metric::Aecs => "aecs",
        }
    }
}

/// l-diversity variants (Machanavajjhala et al.; as ARX implements them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Diversity {
    /// At least l distinct sensitive values per class.
    Distinct(u64),
    /// The entropy of the sensitive values per class is at least ln l.
    Entropy(f64),
}

/// The privacy requirements of a search.
#[derive(Clone, Debug)]
pub struct Privacy {
    /// Minimum equivalence class size.
    pub k: u64,
    /// Most records that may be suppressed (ARX: ⌊limit × rows⌋).
    pub max_suppressed: u64,
    /// l-diversity, on every sensitive attribute.
    pub diversity: Option<Diversity>,
    /// t-closeness, on every sensitive attribute: the earth mover's distance between a
    /// class's distribution and the table's, with equal ground distance (half the L1
    /// distance) or, for an attribute with a hierarchy, hierarchical ground distance.
    pub closeness: Option<f64>,
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
            diversity: None,
            closeness: None,
        })
    }

    /// Adds l-diversity.
    pub fn with_diversity(mut self, d: Diversity) -> Result<Self, AnonError> {
        let ok = match d {
            Diversity::Distinct(l) => l >= 1,
            Diversity::Entropy(l) => l >= 1.0 && l.is_finite(),
        };
        if !ok {
            return Err(AnonError::Config(format!(
                "l must be at least 1, not {d:?}"
            )));
        }
        self.diversity = Some(d);
        Ok(self)
    }

    /// Adds t-closeness.
    pub fn with_closeness(mut self, t: f64) -> Result<Self, AnonError> {
        if !(0.0..=1.0).contains(&t) {
            return Err(AnonError::Config(format!("t = {t} is not in [0, 1]")));
        }
        self.closeness = Some(t);
        Ok(self)
    }

    /// Whether one class breaks the model.
    pub(crate) fn class_fails(&self, st: &ClassStats) -> bool {
        if st.count < self.k {
            return true;
        }
        match self.diversity {
            Some(Diversity::Distinct(l)) if st.distinct < l => return true,
            // A relative tolerance, so that a class of exactly l equally frequent values
            // passes despite rounding in the logarithms.
            Some(Diversity::Entropy(l)) if st.entropy_l < l * (1.0 - 1e-12) => return true,
            _ => {}
        }
        matches!(self.closeness, Some(t) if st.distance > t + 1e-12)
    }

    /// Whether a sensitive attribute is needed.
    pub fn needs_sensitive(&self) -> bool {
        self.diversity.is_some() || self.closeness.is_some()
    }

    /// Whether "not anonymous" carries over to every less generalized transformation.
    /// True for k-anonymity and distinct-l (a failing merged class is made of failing parts
    /// only: its parts are smaller and have fewer distinct values). Entropy-l and
    /// t-closeness only without suppression: a merged class below the entropy or over t can
    /// hold parts that pass (the merged entropy is at least the parts' weighted mean, the
    /// merged distance at most their maximum, not more), so a coarser transformation may
    /// suppress more records. Without suppression every class must pass, and a union of
    /// passing classes passes, so the models are monotone again.
    pub fn is_monotone(&self) -> bool {
        let entropy_l = matches!(self.diversity, Some(Diversity::Entropy(_)));
        self.max_suppressed == 0 || (self.closeness.is_none() && !entropy_l)
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
    /// Fewest distinct sensitive values in a released class, over every sensitive
    /// attribute (with sensitive attributes).
    pub min_distinct: Option<u64>,
    /// Lowest entropy-l (e^entropy) of a released class, over every sensitive attribute.
    pub min_entropy_l: Option<f64>,
    /// Largest t-closeness distance of a released class, over every sensitive attribute.
    pub max_distance: Option<f64>,
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
    /// The quasi-identifier bits of a key (the sensitive values' fields cleared).
    qi_mask: u128,
    /// Whether every class key fits in 64 bits: then tables keep u64 keys and grouping
    /// hashes them (half the memory per hash-table slot, which is what grouping millions of
    /// classes waits on).
    narrow: bool,
    /// Per sensitive attribute, the table's distribution of its values (the t-closeness
    /// reference), by code.
    overall: Vec<Vec<f64>>,
    /// Per sensitive attribute, its hierarchy's tree for the hierarchical distance.
    trees: Vec<Option<EmdTree>>,
    /// `up[d][from][to][code]`: the code at level `to` of a value coded `code` at `from`.
    up: Vec<Vec<Vec<Vec<u32>>>>,
    /// `share[d][level][code]`: ARX domain share of a generalized value.
    share: Vec<Vec<Vec<f64>>>,
    /// `bound[d][level]`: Loss of attribute d at `level` if nothing were suppressed — a lower
    /// bound of the real loss (a suppressed record costs 1, the most a share can be).
    bound: Vec<Vec<f64>>,
    /// `entropy[d][level]`: ARX's non-uniform entropy of attribute d at `level`, not yet
    /// cut to ten digits (the non-monotone variant adds to it first).
    entropy: Vec<Vec<f64>>,
}

/// See [`Evaluator::release`].
#[derive(Clone, Debug)]
pub struct Release {
    /// Quasi-identifier keys ([`Evaluator::qi_key`]) of the suppressed classes.
    pub suppressed_keys: rustc_hash::FxHashSet<u128>,
    /// Sizes of the released classes.
    pub released_sizes: Vec<u64>,
}

/// Equivalence classes of one transformation: the packed generalized codes (the class
/// key) and the row count per class — 16 bytes a class when keys fit in 64 bits, 24
/// otherwise. Everything the metrics and models need is a function of the generalized
/// values, and because each hierarchy level is a function of the one below, a key can be
/// generalized further without the original rows.
#[derive(Clone, Debug)]
pub struct ClassTable {
    /// The transformation these are the classes of.
    levels: Vec<usize>,
    keys: Keys,
    counts: Vec<u64>,
}

/// The class keys of a table, in 64 bits when every key of the dataset fits there: at 100M
/// nearly distinct rows that is 0.8 GB less for the untransformed table alone.
#[derive(Clone, Debug)]
enum Keys {
    Narrow(Vec<u64>),
    Wide(Vec<u128>),
}

impl Keys {
    /// Key of class `c`.
    fn key(&self, c: usize) -> u128 {
        match self {
            Keys::Narrow(v) => u128::from(v[c]),
            Keys::Wide(v) => v[c],
        }
    }

    /// Appends `other`'s keys (widening both if only one is narrow).
    fn append(self, other: Keys) -> Keys {
        match (self, other) {
            (Keys::Narrow(mut a), Keys::Narrow(b)) => {
                a.extend(b);
                Keys::Narrow(a)
            }
            (Keys::Wide(mut a), Keys::Wide(b)) => {
                a.extend(b);
                Keys::Wide(a)
            }
            (a, b) => Keys::Wide(a.widened().chain(b.widened()).collect()),
        }
    }

    fn widened(self) -> Box<dyn Iterator<Item = u128>> {
        match self {
            Keys::Narrow(v) => Box::new(v.into_iter().map(u128::from)),
            Keys::Wide(v) => Box::new(v.into_iter()),
        }
    }
}

/// A class key type: the 64-bit form when every key fits, or the full 128 bits.
trait KeyInt: Copy + Eq + std::hash::Hash {
    fn wide(self) -> u128;
    /// `key` in this type; only called with keys that fit.
    fn from_wide(key: u128) -> Self;
    fn keys(v: Vec<Self>) -> Keys;
}

impl KeyInt for u64 {
    fn wide(self) -> u128 {
        u128::from(self)
    }
    fn from_wide(key: u128) -> Self {
        key as u64
    }
    fn keys(v: Vec<Self>) -> Keys {
        Keys::Narrow(v)
    }
}

impl KeyInt for u128 {
    fn wide(self) -> u128 {
        self
    }
    fn from_wide(key: u128) -> Self {
        key
    }
    fn keys(v: Vec<Self>) -> Keys {
        Keys::Wide(v)
    }
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

    /// (key, rows) of every class, in order.
    #[cfg(test)]
    fn entries(&self) -> Vec<(u128, u64)> {
        (0..self.len())
            .map(|c| (self.keys.key(c), self.counts[c]))
            .collect()
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
        let qi_mask = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let mut overall = Vec::new();
        let mut trees = Vec::new();
        for j in 0..data.sensitive_attributes() {
            let n = data.sensitive_domain(j).max(1);
            let width = usize::BITS - n.leading_zeros();
            shifts.push(bits);
            masks.push((1u128 << width) - 1);
            bits += width;
            let mut dist = vec![0.0; n];
            for t in 0..data.len() {
                dist[data.sensitive(t)[j] as usize] += data.count(t) as f64;
            }
            let rows = data.rows().max(1) as f64;
            for q in dist.iter_mut() {
                *q /= rows;
            }
            trees.push(
                data.sensitive_hierarchy(j)
                    .map(|h| EmdTree::new(h, &dist))
                    .transpose()?,
            );
            overall.push(dist);
        }
        let narrow = bits <= 64;
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
            for (d, shares_of) in leaf_share.iter().enumerate() {
                let leaf = data.leaf(t, d);
                for (level, shares) in shares_of.iter().enumerate() {
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
            qi_mask,
            narrow,
            overall,
            trees,
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

    /// The distinct tuples themselves: the classes of the untransformed data (with
    /// sensitive attributes: one entry per class and combination of sensitive values).
    pub fn root(&self) -> ClassTable {
        let levels = vec![0; self.data.dims()];
        let counts = (0..self.data.len()).map(|t| self.data.count(t)).collect();
        let dims = self.data.dims();
        let key = |t: usize| {
            let mut key = self.key(t);
            for (j, &code) in self.data.sensitive(t).iter().enumerate() {
                key |= u128::from(code) << self.shifts[dims + j];
            }
            key
        };
        let n = self.data.len();
        let keys = if self.narrow {
            Keys::Narrow((0..n).map(|t| key(t) as u64).collect())
        } else {
            Keys::Wide((0..n).map(key).collect())
        };
        ClassTable {
            levels,
            keys,
            counts,
        }
    }

    /// The quasi-identifier class key of a row's leaves under `levels` (for writing).
    pub fn qi_key(&self, leaves: &[u32], levels: &[usize]) -> u128 {
        let mut key = 0u128;
        for (d, &leaf) in leaves.iter().enumerate() {
            key |= u128::from(self.hierarchies[d].code(leaf, levels[d])) << self.shifts[d];
        }
        key
    }

    /// What releasing the transformation `levels` means, from one grouping of the data: the
    /// quasi-identifier keys of the classes `privacy` suppresses (for writing), and the sizes
    /// of the classes it releases (for the report).
    pub fn release(&self, privacy: &Privacy, levels: &[usize]) -> Release {
        let g = self.classes_from(&self.root(), levels);
        let (class_of, stats) = self.qi_classes(&g);
        let fails: Vec<bool> = stats.iter().map(|st| self.fails(privacy, st)).collect();
        let mut suppressed_keys = rustc_hash::FxHashSet::default();
        for (c, &cls) in class_of.iter().enumerate() {
            if fails[cls as usize] {
                suppressed_keys.insert(g.keys.key(c) & self.qi_mask);
            }
        }
        let released_sizes = stats
            .iter()
            .zip(&fails)
            .filter(|(_, &f)| !f)
            .map(|(st, _)| st.count)
            .collect();
        Release {
            suppressed_keys,
            released_sizes,
        }
    }

    /// The class key of tuple `t`, untransformed.
    fn key(&self, t: usize) -> u128 {
        let mut key = 0u128;
        for (d, h) in self.hierarchies.iter().enumerate() {
            key |= u128::from(h.code(self.data.leaf(t, d), 0)) << self.shifts[d];
        }
        key
    }

    /// The classes under `levels`, grouped from `src` — the classes of any transformation
    /// at or below `levels` in every attribute (each of its classes lies within one class of
    /// the coarser one, so generalizing its keys and merging equal ones is exact).
    pub fn classes_from(&self, src: &ClassTable, levels: &[usize]) -> ClassTable {
        match self.classes_within(src, levels, usize::MAX) {
            Some(t) => t,
            None => unreachable!("a grouping without a limit always completes"),
        }
    }

    /// As [`Self::classes_from`], but gives up (None) as soon as more than `limit` classes
    /// are found: with [`Self::class_limit`], a transformation that cannot be anonymous is
    /// told apart without grouping all of it.
    pub fn classes_within(
        &self,
        src: &ClassTable,
        levels: &[usize],
        limit: usize,
    ) -> Option<ClassTable> {
        // Large tables are grouped in SHARDS threads, each taking the keys that hash to it.
        // The shard count is fixed (not the machine's core count), so the order of the
        // classes — and with it every floating-point sum — is the same on every machine.
        let shards = if src.len() >= PARALLEL_FROM {
            SHARDS
        } else {
            1
        };
        self.classes_in_shards(src, levels, shards, limit)
    }

    /// The most classes (entries of a class table) a transformation can have and still be
    /// anonymous under `privacy`; `usize::MAX` when no such bound is known.
    ///
    /// With D classes of which B have at least k records, the others hold one record or
    /// more each, so k·B + (D − B) ≤ rows, and at least D − B classes — one record each or
    /// more — are suppressed. Suppressing no more than m records then needs
    /// D·k ≤ rows + m·(k − 1). l-diversity and t-closeness only fail more classes, so the
    /// bound holds for them too. With sensitive attributes a table's entries are finer than
    /// its classes, and no bound is given.
    pub fn class_limit(&self, privacy: &Privacy) -> usize {
        if self.data.has_sensitive() || privacy.k <= 1 {
            return usize::MAX;
        }
        let rows = u128::from(self.data.rows());
        let m = u128::from(privacy.max_suppressed);
        let k = u128::from(privacy.k);
        usize::try_from((rows + m * (k - 1)) / k).unwrap_or(usize::MAX)
    }

    fn classes_in_shards(
        &self,
        src: &ClassTable,
        levels: &[usize],
        shards: usize,
        limit: usize,
    ) -> Option<ClassTable> {
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
        let generalize = |old: u128| {
            let mut key = old;
            for s in &steps {
                let code = ((key >> s.shift) & s.mask) as usize;
                key = (key & !(s.mask << s.shift)) | (u128::from(s.map[code]) << s.shift);
            }
            key
        };
        let narrow = self.narrow;
        let found = Found {
            limit,
            total: AtomicUsize::new(0),
        };
        let group_shard = |shard: usize| match &src.keys {
            Keys::Narrow(s) => {
                group_any(s, &src.counts, &generalize, shards, shard, &found, narrow)
            }
            Keys::Wide(s) => group_any(s, &src.counts, &generalize, shards, shard, &found, narrow),
        };
        let (keys, counts) = if shards == 1 {
            group_shard(0)?
        } else {
            let parts: Vec<Option<(Keys, Vec<u64>)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..shards)
                    .map(|i| scope.spawn(move || group_shard(i)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            let parts: Vec<(Keys, Vec<u64>)> = parts.into_iter().collect::<Option<_>>()?;
            let total: usize = parts.iter().map(|p| p.1.len()).sum();
            if total > limit {
                return None;
            }
            // Onto the first part: growing it in place keeps the peak near one table.
            let mut parts = parts.into_iter();
            let (mut keys, mut counts) = parts.next()?;
            for (k, c) in parts {
                keys = keys.append(k);
                counts.extend(c);
            }
            (keys, counts)
        };
        Some(ClassTable {
            levels: levels.to_vec(),
            keys,
            counts,
        })
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
            Metric::EntropyMono | Metric::EntropyNonMono => levels
                .iter()
                .enumerate()
                .map(|(d, &l)| round10(self.entropy[d][l]))
                .sum(),
            // Σ|class|² ≥ rows²/classes, and a suppressed record costs rows ≥ its class.
            Metric::Discernibility => {
                let rows = self.data.rows() as f64;
                (rows * rows / self.class_cap(levels)).max(rows)
            }
            Metric::Aecs => self.data.rows() as f64 / self.class_cap(levels),
        }
    }

    /// Most classes a transformation can have: no more than the distinct tuples, nor than
    /// the product of the hierarchies' widths at `levels`. Falls with generalization.
    fn class_cap(&self, levels: &[usize]) -> f64 {
        let widths = levels
            .iter()
            .zip(self.hierarchies)
            .map(|(&l, h)| h.width(l) as f64)
            .product::<f64>();
        widths.min(self.data.len() as f64).max(1.0)
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
        // Without sensitive attributes the entries are the classes and a class's statistics
        // are its count: nothing per class is built (32 bytes a class, on tables of up to
        // tens of millions of classes).
        let sensitive = self.data.has_sensitive();
        let (class_of, stats) = if sensitive {
            self.qi_classes(g)
        } else {
            (Vec::new(), Vec::new())
        };
        let stat = |c: usize| {
            if sensitive {
                stats[c]
            } else {
                ClassStats::new(g.counts[c])
            }
        };
        let n_classes = if sensitive { stats.len() } else { g.len() };
        let class_out: Vec<bool> = (0..n_classes)
            .map(|c| self.fails(privacy, &stat(c)))
            .collect();
        let outlier: Vec<bool> = if sensitive {
            class_of.iter().map(|&c| class_out[c as usize]).collect()
        } else {
            Vec::new()
        };
        let outlier: &[bool] = if sensitive { &outlier } else { &class_out };
        let mut suppressed = 0u64;
        let mut classes = 0u64;
        let mut min_class = u64::MAX;
        let mut min_distinct = u64::MAX;
        let mut min_entropy_l = f64::INFINITY;
        let mut max_distance = 0.0f64;
        for (st, &out) in (0..n_classes).map(stat).zip(&class_out) {
            if out {
                suppressed += st.count;
                continue;
            }
            classes += 1;
            min_class = min_class.min(st.count);
            min_distinct = min_distinct.min(st.distinct);
            min_entropy_l = min_entropy_l.min(st.entropy_l);
            max_distance = max_distance.max(st.distance);
        }
        let min_class = if classes == 0 { 0 } else { min_class };
        let anonymous = suppressed <= privacy.max_suppressed;
        let with_s = self.data.has_sensitive() && classes > 0;
        let rows = self.data.rows() as f64;
        let per_attribute = match metric {
            Metric::Loss => self.loss(levels, g, outlier),
            Metric::EntropyMono => levels
                .iter()
                .enumerate()
                .map(|(d, &l)| round10(self.entropy[d][l]))
                .collect(),
            Metric::EntropyNonMono => self.entropy_nonmono(levels, g, outlier, suppressed),
            Metric::Discernibility | Metric::Aecs => Vec::new(),
        };
        let score = match metric {
            Metric::Loss => geometric_mean(&per_attribute),
            Metric::EntropyMono | Metric::EntropyNonMono => per_attribute.iter().sum(),
            Metric::Discernibility => (0..n_classes)
                .map(stat)
                .zip(&class_out)
                .map(|(st, &out)| {
                    let c = st.count as f64;
                    if out {
                        rows * c
                    } else {
                        c * c
                    }
                })
                .sum(),
            Metric::Aecs => rows / (classes as f64 + if suppressed > 0 { 1.0 } else { 0.0 }),
        };
        NodeResult {
            levels: levels.to_vec(),
            anonymous,
            suppressed,
            classes,
            min_class,
            min_distinct: with_s.then_some(min_distinct),
            min_entropy_l: with_s.then_some(min_entropy_l),
            max_distance: with_s.then_some(max_distance),
            score,
            per_attribute,
        }
    }

    /// Groups a class table by its quasi-identifier part: the class of each entry, and per
    /// class its size and what l-diversity and t-closeness need. Without sensitive
    /// attributes the entries are the classes.
    fn qi_classes(&self, g: &ClassTable) -> (Vec<u32>, Vec<ClassStats>) {
        if !self.data.has_sensitive() {
            let stats = g
                .counts
                .iter()
                .map(|&count| ClassStats::new(count))
                .collect();
            return ((0..g.len() as u32).collect(), stats);
        }
        let mut index: FxHashMap<u128, u32> =
            FxHashMap::with_capacity_and_hasher(g.len(), Default::default());
        let mut class_of = Vec::with_capacity(g.len());
        let mut stats: Vec<ClassStats> = Vec::new();
        for c in 0..g.len() {
            let key = g.keys.key(c);
            let next = stats.len() as u32;
            let cls = *index.entry(key & self.qi_mask).or_insert(next);
            if cls == next {
                stats.push(ClassStats::new(0));
            }
            stats[cls as usize].count += g.counts[c];
            class_of.push(cls);
        }
        drop(index);
        // The entries of each class, contiguous (a counting sort by class).
        let mut start = vec![0usize; stats.len() + 1];
        for &c in &class_of {
            start[c as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut fill = start.clone();
        let mut order = vec![0u32; g.len()];
        for (e, &c) in class_of.iter().enumerate() {
            order[fill[c as usize]] = e as u32;
            fill[c as usize] += 1;
        }
        let dims = self.data.dims();
        let m = self.data.sensitive_attributes();
        let mut counts: Vec<(u32, u64)> = Vec::new();
        for (cls, st) in stats.iter_mut().enumerate() {
            let entries = &order[start[cls]..start[cls + 1]];
            for j in 0..m {
                let (shift, mask) = (self.shifts[dims + j], self.masks[dims + j]);
                counts.clear();
                counts.extend(entries.iter().map(|&e| {
                    let e = e as usize;
                    (((g.keys.key(e) >> shift) & mask) as u32, g.counts[e])
                }));
                // With one attribute each entry is one value of its class; with several, a
                // value appears once per combination with the others' values.
                if m > 1 {
                    merge_codes(&mut counts);
                }
                st.add_attribute(&counts, &self.overall[j], self.trees[j].as_ref());
            }
        }
        (class_of, stats)
    }

    /// The statistics of the records of some tuples (a Mondrian partition).
    pub(crate) fn tuple_stats(&self, tuples: &[u32]) -> ClassStats {
        let count = tuples.iter().map(|&t| self.data.count(t as usize)).sum();
        let mut st = ClassStats::new(count);
        let mut by: FxHashMap<u32, u64> = FxHashMap::default();
        for j in 0..self.data.sensitive_attributes() {
            by.clear();
            for &t in tuples {
                *by.entry(self.data.sensitive(t as usize)[j]).or_default() +=
                    self.data.count(t as usize);
            }
            let counts: Vec<(u32, u64)> = by.iter().map(|(&c, &n)| (c, n)).collect();
            st.add_attribute(&counts, &self.overall[j], self.trees[j].as_ref());
        }
        st
    }

    fn fails(&self, privacy: &Privacy, st: &ClassStats) -> bool {
        privacy.class_fails(st)
    }

    /// ARX `MetricMDNUNMEntropyPrecomputed`: the monotone entropy minus, per attribute,
    /// Σ c·log2(c/S) over the generalized values of the S suppressed records.
    fn entropy_nonmono(
        &self,
        levels: &[usize],
        g: &ClassTable,
        outlier: &[bool],
        suppressed: u64,
    ) -> Vec<f64> {
        levels
            .iter()
            .enumerate()
            .map(|(d, &l)| {
                let mut v = self.entropy[d][l];
                if suppressed > 0 {
                    let mut counts = vec![0u64; self.hierarchies[d].width(l)];
                    for (c, &out) in outlier.iter().enumerate() {
                        if out {
                            let code = ((g.keys.key(c) >> self.shifts[d]) & self.masks[d]) as usize;
                            counts[code] += g.counts[c];
                        }
                    }
                    let s = suppressed as f64;
                    for &c in counts.iter().filter(|&&c| c > 0) {
                        let c = c as f64;
                        v -= c * (c / s).log2();
                    }
                }
                round10(v)
            })
            .collect()
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
                let key = g.keys.key(c);
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

/// Classes found so far by the shards of one grouping, against the most wanted.
struct Found {
    limit: usize,
    total: AtomicUsize,
}

/// New classes a shard finds between looks at the shared count.
const FOUND_BATCH: usize = 4096;

/// Groups `src`'s entries whose generalized key falls in `shard`: the distinct keys in
/// order of first appearance and their row counts. `S` is the source's key type, `K` the
/// result's and the hash table's (64 bits when every key fits there). None once the shards
/// together have found more than `found.limit` classes (only whole batches of a shard's
/// classes are counted, so this never stops a grouping that stays within the limit).
fn group_keys<S: KeyInt, K: KeyInt>(
    src: &[S],
    src_counts: &[u64],
    generalize: &impl Fn(u128) -> u128,
    shards: usize,
    shard: usize,
    found: &Found,
) -> Option<(Keys, Vec<u64>)> {
    let bounded = found.limit < src.len();
    let mut index: FxHashMap<K, u32> = FxHashMap::with_capacity_and_hasher(
        src.len().min(found.limit) / shards,
        Default::default(),
    );
    let mut keys: Vec<K> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for (c, &old) in src.iter().enumerate() {
        let key = generalize(old.wide());
        if shards > 1 && shard_of(key, shards) != shard {
            continue;
        }
        let next = counts.len() as u32;
        let key = K::from_wide(key);
        let k = *index.entry(key).or_insert(next);
        if k == next {
            counts.push(0);
            keys.push(key);
            if bounded && counts.len().is_multiple_of(FOUND_BATCH) {
                let total = found.total.fetch_add(FOUND_BATCH, Ordering::Relaxed) + FOUND_BATCH;
                if total > found.limit {
                    return None;
                }
            }
        }
        counts[k as usize] += src_counts[c];
    }
    Some((K::keys(keys), counts))
}

/// [`group_keys`] with 64-bit keys when `narrow` (every key fits), else 128-bit ones.
fn group_any<S: KeyInt>(
    src: &[S],
    src_counts: &[u64],
    generalize: &impl Fn(u128) -> u128,
    shards: usize,
    shard: usize,
    found: &Found,
    narrow: bool,
) -> Option<(Keys, Vec<u64>)> {
    if narrow {
        group_keys::<S, u64>(src, src_counts, generalize, shards, shard, found)
    } else {
        group_keys::<S, u128>(src, src_counts, generalize, shards, shard, found)
    }
}

/// Tables at least this large are grouped in parallel.
const PARALLEL_FROM: usize = 1 << 18;
/// Threads for grouping a large table (fixed, for machine-independent results).
const SHARDS: usize = 2;

/// The shard of a class key: a multiplicative hash of both halves.
fn shard_of(key: u128, shards: usize) -> usize {
    let mixed = ((key as u64) ^ ((key >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) as usize) % shards
}

/// Sorts (code, count) pairs by code and adds up the counts of equal codes.
fn merge_codes(counts: &mut Vec<(u32, u64)>) {
    counts.sort_unstable_by_key(|c| c.0);
    let mut w = 0;
    for r in 0..counts.len() {
        if w > 0 && counts[w - 1].0 == counts[r].0 {
            counts[w - 1].1 += counts[r].1;
        } else {
            counts[w] = counts[r];
            w += 1;
        }
    }
    counts.truncate(w);
}

/// What a class's privacy checks need: its size and, over its sensitive attributes, the
/// worst of each figure (a class fails if any attribute fails).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClassStats {
    pub(crate) count: u64,
    /// Fewest distinct values of a sensitive attribute.
    distinct: u64,
    /// Lowest e^entropy of a sensitive attribute: the "effective number" of values.
    entropy_l: f64,
    /// Largest earth mover's distance of a sensitive attribute to the table's distribution.
    distance: f64,
}

impl ClassStats {
    /// A class of `count` records, before any sensitive attribute is added.
    pub(crate) fn new(count: u64) -> Self {
        Self {
            count,
            distinct: u64::MAX,
            entropy_l: f64::INFINITY,
            distance: 0.0,
        }
    }

    /// Takes in one sensitive attribute: the class's (code, count) pairs, codes unique;
    /// `overall` is the table's distribution by code and `tree` the attribute's hierarchy
    /// for the hierarchical distance (equal distance without).
    pub(crate) fn add_attribute(
        &mut self,
        counts: &[(u32, u64)],
        overall: &[f64],
        tree: Option<&EmdTree>,
    ) {
        let total: u64 = counts.iter().map(|c| c.1).sum();
        let n = total as f64;
        let mut n_ln_n = 0.0;
        let mut l1_present = 0.0;
        for &(code, c) in counts {
            let c = c as f64;
            let q = overall[code as usize];
            n_ln_n += c * c.ln();
            l1_present += (c / n - q).abs() - q;
        }
        self.distinct = self.distinct.min(counts.len() as u64);
        self.entropy_l = self.entropy_l.min((n.ln() - n_ln_n / n).exp());
        let distance = match tree {
            Some(tree) => tree.distance(counts, total),
            // Equal ground distance: ½ Σ |p − q| over all values, where the absent ones
            // contribute their q, hence ½ (Σ_present (|p − q| − q) + 1).
            None => (0.5 * (l1_present + 1.0)).max(0.0),
        };
        self.distance = self.distance.max(distance);
    }
}

/// A sensitive attribute's hierarchy prepared for the earth mover's distance with
/// hierarchical ground distance (Li, Li, Venkatasubramanian 2007, as ARX's
/// `HierarchicalDistanceTCloseness` computes it): moving mass between two leaves costs the
/// level of their lowest common ancestor divided by the hierarchy's height, so each inner
/// node N at level j adds j / H × min(positive, negative extra of its children), where a
/// child's extra is its class share minus its table share.
#[derive(Clone, Debug)]
pub(crate) struct EmdTree {
    /// Levels above the leaves (ARX's height).
    height: usize,
    /// `parent[j][code]`: the code at level j + 1 of a code at level j (level 0: leaves).
    parent: Vec<Vec<u32>>,
    /// `q[j][code]`: the table's share of the records under a code at level j.
    q: Vec<Vec<f64>>,
}

impl EmdTree {
    fn new(h: &Hierarchy, overall: &[f64]) -> Result<Self, AnonError> {
        if h.height() < 2 {
            return Err(AnonError::Config(format!(
                "the hierarchy of sensitive attribute {} has one level: the hierarchical \
                 distance needs at least one level above the values",
                h.column()
            )));
        }
        let height = h.height() - 1;
        let mut parent = Vec::with_capacity(height);
        let mut q = Vec::with_capacity(height + 1);
        for j in 0..=height {
            let mut shares = vec![0.0; h.width(j)];
            for leaf in 0..h.leaves() as u32 {
                shares[h.code(leaf, j) as usize] +=
                    overall.get(leaf as usize).copied().unwrap_or(0.0);
            }
            q.push(shares);
            if j < height {
                let mut up = vec![0u32; h.width(j)];
                for leaf in 0..h.leaves() as u32 {
                    up[h.code(leaf, j) as usize] = h.code(leaf, j + 1);
                }
                parent.push(up);
            }
        }
        // Level 0 is indexed by leaf: the dataset codes a value by its leaf index.
        q[0] = (0..h.leaves())
            .map(|l| overall.get(l).copied().unwrap_or(0.0))
            .collect();
        parent[0] = (0..h.leaves() as u32).map(|l| h.code(l, 1)).collect();
        Ok(Self { height, parent, q })
    }

    /// The distance of a class given as (leaf, count) pairs, leaves unique. Only the
    /// ancestors of the class's values can cost anything: under any other node every extra
    /// is negative (the class has nothing there), so its minimum is 0.
    pub(crate) fn distance(&self, counts: &[(u32, u64)], total: u64) -> f64 {
        let n = total.max(1) as f64;
        let mut nodes: Vec<(u32, f64)> = counts.iter().map(|&(c, k)| (c, k as f64 / n)).collect();
        let mut next: Vec<(u32, f64)> = Vec::with_capacity(nodes.len());
        let mut cost = 0.0;
        for j in 0..self.height {
            let up = &self.parent[j];
            nodes.sort_unstable_by_key(|&(c, _)| up[c as usize]);
            next.clear();
            let mut i = 0;
            while i < nodes.len() {
                let parent = up[nodes[i].0 as usize];
                let (mut p, mut pos, mut neg, mut q_present) = (0.0, 0.0, 0.0, 0.0);
                while i < nodes.len() && up[nodes[i].0 as usize] == parent {
                    let (c, share) = nodes[i];
                    let q = self.q[j][c as usize];
                    let extra = share - q;
                    if extra > 0.0 {
                        pos += extra;
                    } else {
                        neg -= extra;
                    }
                    p += share;
                    q_present += q;
                    i += 1;
                }
                // Children the class has nothing under: extra −q each.
                neg += (self.q[j + 1][parent as usize] - q_present).max(0.0);
                cost += (j + 1) as f64 / self.height as f64 * pos.min(neg);
                next.push((parent, p));
            }
            std::mem::swap(&mut nodes, &mut next);
        }
        cost
    }
}

/// ARX `MetricMDNUEntropyPrecomputed`: per level, -Σ over original values of
/// a·log2(a/b), a = rows with the value, b = rows with its generalization.
fn non_uniform_entropy(h: &Hierarchy, data: &Dataset, d: usize) -> Vec<f64> {
    let mut leaf_rows = vec![0u64; h.leaves()];
    for t in 0..data.len() {
        leaf_rows[data.leaf(t, d) as usize] += data.count(t);
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
            if v == 0.0 {
                0.0
            } else {
                -v
            }
        })
        .collect()
}

/// ARX `Metric.round`: keep ten decimal digits (floor).
pub(crate) fn round10(v: f64) -> f64 {
    (v * 1e10).floor() / 1e10
}

/// ARX `MetricMDNMLoss.normalizeGeneralized`: 0 for the original data (every record's share
/// is 1/domain), 1 for everything suppressed; cut to ten digits (`Metric.round`).
pub(crate) fn normalize_loss(aggregate: f64, rows: f64, domain: f64) -> f64 {
    let min = rows / domain;
    let max = rows;
    let r = ((aggregate - min) / (max - min)).max(0.0);
    (r * 1e10).floor() / 1e10
}

/// ARX `ILMultiDimensionalGeometricMean` with equal weights: 1 is added to each value (so a
/// zero does not hide the others) and subtracted from the result.
pub(crate) fn geometric_mean(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    values
        .iter()
        .fold(1.0, |acc, v| acc * (v + 1.0).powf(1.0 / n))
        - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grouping stopped at the class limit is only ever a transformation that is not
    /// anonymous, and one within the limit is always grouped whole (both in one shard and
    /// in parallel shards).
    #[test]
    fn grouping_stops_only_for_transformations_that_cannot_be_anonymous() {
        let mut a = String::new();
        let mut b = String::new();
        for i in 0..600 {
            a.push_str(&format!("{i};{};{};*\n", i / 3, i / 60));
        }
        for i in 0..500 {
            b.push_str(&format!("{i};{};{};*\n", i / 2, i / 50));
        }
        let hs = [
            Hierarchy::parse_arx("a", &a, ';').expect("a"),
            Hierarchy::parse_arx("b", &b, ';').expect("b"),
        ];
        let mut data = Dataset::new(2);
        for i in 0..600u32 {
            for j in 0..500u32 {
                data.push_leaves(vec![i, j], u64::from((i * 7 + j * 13) % 4 + 1));
            }
        }
        let ev = Evaluator::new(&hs, &data).expect("ev");
        let root = ev.root();
        assert!(root.len() >= PARALLEL_FROM);
        let (mut stopped, mut whole) = (0, 0);
        for k in [2, 5, 20, 300] {
            for limit in [0.0, 0.01, 0.2] {
                let privacy = Privacy::k_anonymity(k, limit, data.rows()).expect("privacy");
                let cap = ev.class_limit(&privacy);
                for x in 0..4 {
                    for y in 0..4 {
                        let levels = [x, y];
                        let all = ev.classes_from(&root, &levels);
                        let node = ev.evaluate_classes(Metric::Loss, &privacy, &levels, &all);
                        match ev.classes_within(&root, &levels, cap) {
                            None => {
                                stopped += 1;
                                assert!(all.len() > cap, "{levels:?} k {k}");
                                assert!(!node.anonymous, "{levels:?} k {k} stopped");
                            }
                            Some(t) => {
                                whole += 1;
                                assert_eq!(t.len(), all.len(), "{levels:?} k {k}");
                            }
                        }
                        if all.len() <= cap {
                            assert!(ev.classes_within(&root, &levels, cap).is_some());
                        }
                    }
                }
            }
        }
        assert!(stopped > 0 && whole > 0, "{stopped} stopped, {whole} whole");
    }

    /// Grouping in shards gives the same classes as grouping in one go.
    #[test]
    fn sharded_grouping_equals_sequential() {
        let mut a = String::new();
        let mut b = String::new();
        for i in 0..600 {
            a.push_str(&format!("{i};{};*\n", i / 7));
        }
        for i in 0..500 {
            b.push_str(&format!("{i};{};*\n", i / 3));
        }
        let hs = [
            Hierarchy::parse_arx("a", &a, ';').expect("a"),
            Hierarchy::parse_arx("b", &b, ';').expect("b"),
        ];
        let mut data = Dataset::new(2);
        for i in 0..600u32 {
            for j in 0..500u32 {
                data.push_leaves(vec![i, j], u64::from((i * 31 + j) % 5 + 1));
            }
        }
        let ev = Evaluator::new(&hs, &data).expect("ev");
        let root = ev.root();
        assert!(root.len() >= PARALLEL_FROM);
        for levels in [[0, 0], [1, 0], [1, 1], [2, 1]] {
            let mut one: Vec<(u128, u64)> = {
                let t = ev
                    .classes_in_shards(&root, &levels, 1, usize::MAX)
                    .expect("no limit");
                t.entries()
            };
            let mut two: Vec<(u128, u64)> = {
                let t = ev.classes_from(&root, &levels);
                t.entries()
            };
            one.sort_unstable();
            two.sort_unstable();
            assert_eq!(one, two, "levels {levels:?}");
        }
    }

    /// Hashing the low 64 bits (when every key fits there) groups exactly as hashing the
    /// whole 128-bit key.
    #[test]
    fn narrow_and_wide_hash_keys_group_alike() {
        let h = |name: &str, n: u32| {
            let text: String = (0..n).map(|i| format!("{i};{};*\n", i / 4)).collect();
            Hierarchy::parse_arx(name, &text, ';').expect("hierarchy")
        };
        let hs = [h("a", 3000), h("b", 2000), h("c", 50)];
        let mut data = Dataset::new(3);
        for t in 0..200_000u32 {
            data.push_leaves(vec![t % 3000, (t * 7) % 2000, (t * 13) % 50], 1);
        }
        let narrow = Evaluator::new(&hs, &data).expect("ev");
        assert!(narrow.narrow, "these keys fit in 64 bits");
        let mut wide = Evaluator::new(&hs, &data).expect("ev");
        wide.narrow = false;
        let root = narrow.root();
        for levels in [[0, 0, 0], [1, 0, 1], [1, 1, 0], [2, 1, 1]] {
            let a = narrow.classes_from(&root, &levels);
            let b = wide.classes_from(&root, &levels);
            assert!(matches!(a.keys, Keys::Narrow(_)), "narrow keys in 64 bits");
            assert!(matches!(b.keys, Keys::Wide(_)), "wide keys in 128 bits");
            assert_eq!(a.entries(), b.entries(), "levels {levels:?}");
        }
    }

    /// Why t-closeness with suppression is not treated as monotone: here the original values
    /// are anonymous (7 of 12 records suppressed, the limit) but merging a and b makes one
    /// class over t, so the coarser transformation suppresses all 12.
    #[test]
    fn t_closeness_with_suppression_is_not_monotone() {
        let h = Hierarchy::parse_arx("a", "a;ab;*\nb;ab;*\nc;c;*\n", ';').expect("h");
        let hs = [h];
        let mut data = Dataset::with_sensitive(1);
        let rows: &[(&str, &str, usize)] = &[
            ("a", "x", 1),
            ("b", "x", 3),
            ("b", "y", 2),
            ("c", "x", 1),
            ("c", "y", 5),
        ];
        let mut row = 0;
        for &(v, s, n) in rows {
            for _ in 0..n {
                row += 1;
                data.push_row_with(row, &[v], &hs, &[s]).expect("row");
            }
        }
        let privacy = Privacy::k_anonymity(1, 7.0 / 12.0, 12)
            .and_then(|p| p.with_closeness(0.2))
            .expect("privacy");
        assert!(!privacy.is_monotone());
        let ev = Evaluator::new(&hs, &data).expect("ev");
        let fine = ev.evaluate(Metric::Loss, &privacy, &[0]);
        let coarse = ev.evaluate(Metric::Loss, &privacy, &[1]);
        let top = ev.evaluate(Metric::Loss, &privacy, &[2]);
        assert_eq!((fine.suppressed, fine.anonymous), (7, true));
        assert_eq!((coarse.suppressed, coarse.anonymous), (12, false));
        assert_eq!((top.suppressed, top.anonymous), (0, true));
        assert_eq!(top.max_distance, Some(0.0));
        // Distinct l-diversity on the same data is monotone in both directions.
        let l2 = Privacy::k_anonymity(1, 0.0, 12)
            .and_then(|p| p.with_diversity(Diversity::Distinct(2)))
            .expect("l");
        assert!(l2.is_monotone());
        assert_eq!(ev.evaluate(Metric::Loss, &l2, &[0]).suppressed, 1);
        assert_eq!(ev.evaluate(Metric::Loss, &l2, &[1]).min_distinct, Some(2));
    }
}
