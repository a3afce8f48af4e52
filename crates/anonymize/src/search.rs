//! Optimal full-domain generalization: the transformation (one level per quasi-identifier)
//! that satisfies the privacy model with the least information loss, proven optimal over the
//! whole lattice.
//!
//! Two facts prune the lattice, as in ARX's Flash:
//! - k-anonymity and l-diversity with a suppression limit are monotone: if a transformation
//!   is not anonymous, none of its predecessors (less generalized everywhere) is — those are
//!   never evaluated (t-closeness with suppression is not monotone: then every
//!   transformation under the bound is evaluated);
//! - the metric has a lower bound that needs no grouping (for Loss: the generalization cost
//!   alone, since a suppressed record costs the most a record can). Transformations are
//!   visited in order of that bound, and the search stops at the first bound above the best
//!   score found: every transformation left is worse.
//!
//! Pure: a dataset and a configuration in, a result out; no clock, no I/O.

use std::collections::VecDeque;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::evaluate::{ClassTable, Evaluator, Metric, NodeResult, Privacy};

/// What the search did, for the report and the benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SearchStats {
    /// Transformations in the lattice.
    pub lattice_nodes: u64,
    /// Transformations grouped and scored.
    pub evaluated: u64,
    /// Of those, evaluated while walking up from a non-anonymous node to prune below it.
    pub evaluated_climbing: u64,
    /// Of those, grouped from the raw tuples (no predecessor's classes at hand).
    pub grouped_from_raw: u64,
    /// Of those, found not anonymous part way through grouping: more classes than k-anonymity
    /// within the suppression limit allows.
    pub stopped_early: u64,
    /// Skipped: a more generalized transformation was already not anonymous.
    pub pruned_by_monotonicity: u64,
    /// Never visited: their lower bound was above the optimum.
    pub pruned_by_bound: u64,
}

/// The optimum and how it was found.
#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    /// The chosen transformation (None: nothing satisfies the privacy model).
    pub best: Option<NodeResult>,
    /// Other transformations with the same score (ties), in the order they were found.
    pub ties: Vec<Vec<usize>>,
    /// Counters.
    pub stats: SearchStats,
}

/// Scores within this relative distance are the same score (summation order differs
/// between tools in the last bits).
const TIE: f64 = 1e-12;

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= TIE * a.abs().max(b.abs()).max(1.0)
}

/// Mixed-radix coding of lattice nodes.
struct Lattice {
    heights: Vec<usize>,
    strides: Vec<usize>,
    size: usize,
}

impl Lattice {
    fn new(heights: Vec<usize>) -> Self {
        let mut strides = Vec::with_capacity(heights.len());
        let mut size = 1usize;
        for &h in &heights {
            strides.push(size);
            size = size.saturating_mul(h.max(1));
        }
        Self {
            heights,
            strides,
            size,
        }
    }

    fn levels(&self, mut index: usize) -> Vec<usize> {
        self.heights
            .iter()
            .map(|&h| {
                let l = index % h;
                index /= h;
                l
            })
            .collect()
    }

    /// Marks `index` and everything below it (fewer levels everywhere); stops at marked nodes.
    fn mark_down(&self, index: usize, marks: &mut [bool]) -> u64 {
        let mut stack = vec![index];
        let mut newly = 0;
        while let Some(i) = stack.pop() {
            if marks[i] {
                continue;
            }
            marks[i] = true;
            newly += 1;
            let mut rest = i;
            for (d, &h) in self.heights.iter().enumerate() {
                let l = rest % h;
                rest /= h;
                if l > 0 {
                    stack.push(i - self.strides[d]);
                }
            }
        }
        newly
    }
}

/// Class tables kept for rolling up (in classes, summed over the tables): ARX keeps
/// snapshots for the same reason. A transformation grouped from a predecessor's classes
/// touches hundreds of classes instead of every distinct tuple. A class is 16 or 24 bytes,
/// so this is at most about 100 MB — the floor; see [`cache_budget`].
const CACHE_ENTRIES: usize = 4_000_000;

/// The cache's size in classes: at least [`CACHE_ENTRIES`]; for larger tables, room for two
/// of the largest tables a transformation that can still be anonymous has, but never more
/// than the untransformed table. Only such tables are cached (a grouping that outgrows the
/// limit stops), so this is all a search can use, and it grows with the class limit rather
/// than with the rows: at 100M nearly distinct rows and k = 5 it is 48M classes (0.8 GB),
/// not another untransformed table.
fn cache_budget(root: usize, class_limit: usize) -> usize {
    CACHE_ENTRIES.max(root.min(class_limit.saturating_mul(2)))
}

struct Cache {
    budget: usize,
    used: usize,
    tables: FxHashMap<usize, Rc<ClassTable>>,
    order: VecDeque<usize>,
}

impl Cache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            tables: FxHashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// The smallest cached table of a direct predecessor of node `i`; failing that, the
    /// smallest cached table of any node below `i` (grouping costs one step per source
    /// class, so a small source is what matters).
    fn source_for(&self, lattice: &Lattice, i: usize) -> Option<Rc<ClassTable>> {
        let mut rest = i;
        let mut best: Option<&Rc<ClassTable>> = None;
        for (d, &h) in lattice.heights.iter().enumerate() {
            let l = rest % h;
            rest /= h;
            if l == 0 {
                continue;
            }
            if let Some(t) = self.tables.get(&(i - lattice.strides[d])) {
                if best.is_none_or(|b| t.len() < b.len()) {
                    best = Some(t);
                }
            }
        }
        if best.is_some() {
            return best.cloned();
        }
        let target = lattice.levels(i);
        self.tables
            .values()
            .filter(|t| t.levels().iter().zip(&target).all(|(a, b)| a <= b))
            .min_by_key(|t| t.len())
            .cloned()
    }

    fn insert(&mut self, i: usize, t: Rc<ClassTable>) {
        let size = t.len();
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(t) = self.tables.remove(&old) {
                self.used -= t.len();
            }
        }
        self.used += size;
        self.tables.insert(i, t);
        self.order.push_back(i);
    }
}

/// Largest lattice searched exhaustively (beyond this a heuristic mode is needed).
pub const MAX_LATTICE: usize = 50_000_000;

/// Finds the optimal transformation. `progress` is called with (visited, lattice size).
pub fn optimal(
    ev: &Evaluator<'_>,
    metric: Metric,
    privacy: &Privacy,
    mut progress: impl FnMut(u64, u64),
) -> Result<SearchResult, crate::error::AnonError> {
    let lattice = Lattice::new(ev.heights());
    if lattice.size > MAX_LATTICE {
        return Err(crate::error::AnonError::Config(format!(
            "the lattice has {} transformations, more than the {MAX_LATTICE} an exhaustive search \
             visits; use --mode heuristic (not proven optimal), fewer quasi-identifiers or \
             lower hierarchies",
            lattice.size
        )));
    }
    let mut order: Vec<(f64, usize, usize)> = (0..lattice.size)
        .map(|i| {
            let levels = lattice.levels(i);
            let sum = levels.iter().sum();
            (ev.lower_bound(metric, &levels), sum, i)
        })
        .collect();
    // By bound, then by generalization height, then by index: a total, deterministic order.
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));

    let root = Rc::new(ev.root());
    let mut st = State {
        ev,
        metric,
        privacy,
        lattice: &lattice,
        cache: Cache::new(cache_budget(root.len(), ev.class_limit(privacy))),
        root,
        not_anonymous: vec![false; lattice.size],
        evaluated: vec![false; lattice.size],
        best: None,
        ties: Vec::new(),
        stats: SearchStats {
            lattice_nodes: lattice.size as u64,
            evaluated: 0,
            evaluated_climbing: 0,
            grouped_from_raw: 0,
            stopped_early: 0,
            pruned_by_monotonicity: 0,
            pruned_by_bound: 0,
        },
    };
    for (visited, &(bound, _, i)) in order.iter().enumerate() {
        if let Some(b) = &st.best {
            if bound > b.score && !same(bound, b.score) {
                st.stats.pruned_by_bound = (order.len() - visited) as u64;
                break;
            }
        }
        if visited % 256 == 0 {
            progress(visited as u64, lattice.size as u64);
        }
        if st.not_anonymous[i] {
            st.stats.pruned_by_monotonicity += 1;
            continue;
        }
        if st.evaluated[i] {
            continue;
        }
        let (anonymous, classes) = st.evaluate(i, None);
        if !anonymous && privacy.is_monotone() {
            st.climb(i, classes);
        }
    }
    progress(lattice.size as u64, lattice.size as u64);
    Ok(SearchResult {
        best: st.best,
        ties: st.ties,
        stats: st.stats,
    })
}

struct State<'a, 'e> {
    ev: &'a Evaluator<'e>,
    metric: Metric,
    privacy: &'a Privacy,
    lattice: &'a Lattice,
    cache: Cache,
    root: Rc<ClassTable>,
    not_anonymous: Vec<bool>,
    evaluated: Vec<bool>,
    best: Option<NodeResult>,
    ties: Vec<Vec<usize>>,
    stats: SearchStats,
}

impl State<'_, '_> {
    /// Groups and scores node `i` (from `src`, or the best cached predecessor), offers it as
    /// the optimum, and returns whether it is anonymous with a table to group its successors
    /// from: its classes, or — when grouping stopped early because the classes outnumbered
    /// what can be anonymous ([`Evaluator::class_limit`]) — the table it was grouped from.
    fn evaluate(&mut self, i: usize, src: Option<Rc<ClassTable>>) -> (bool, Rc<ClassTable>) {
        let levels = self.lattice.levels(i);
        let src = src
            .or_else(|| self.cache.source_for(self.lattice, i))
            .unwrap_or_else(|| {
                self.stats.grouped_from_raw += 1;
                self.root.clone()
            });
        self.evaluated[i] = true;
        self.stats.evaluated += 1;
        let limit = self.ev.class_limit(self.privacy);
        let Some(classes) = self.ev.classes_within(&src, &levels, limit) else {
            self.stats.stopped_early += 1;
            return (false, src);
        };
        let classes = Rc::new(classes);
        let r = self
            .ev
            .evaluate_classes(self.metric, self.privacy, &levels, &classes);
        self.cache.insert(i, classes.clone());
        let anonymous = r.anonymous;
        if anonymous {
            self.offer(r);
        }
        (anonymous, classes)
    }

    /// Keeps the better of `r` and the best so far. Equal scores are ties; among them the
    /// least generalized (sum of levels, then the levels themselves) is chosen, so the
    /// result does not depend on the order nodes were visited in.
    fn offer(&mut self, r: NodeResult) {
        let Some(b) = &self.best else {
            self.best = Some(r);
            return;
        };
        let rank = |n: &NodeResult| (n.levels.iter().sum::<usize>(), n.levels.clone());
        if same(r.score, b.score) {
            if rank(&r) < rank(b) {
                let old = self.best.replace(r);
                if let Some(old) = old {
                    self.ties.push(old.levels);
                }
            } else {
                self.ties.push(r.levels);
            }
        } else if r.score < b.score {
            self.ties.clear();
            self.best = Some(r);
        }
    }

    /// Node `i` is not anonymous. Walk up while the successors stay non-anonymous (each
    /// grouped from the classes in hand, so a step is cheap), then mark the maximal
    /// non-anonymous node found and everything below it: one walk prunes a whole region.
    fn climb(&mut self, mut i: usize, mut classes: Rc<ClassTable>) {
        'up: loop {
            let levels = self.lattice.levels(i);
            for (d, &h) in self.lattice.heights.iter().enumerate() {
                if levels[d] + 1 >= h {
                    continue;
                }
                let j = i + self.lattice.strides[d];
                if self.not_anonymous[j] {
                    // Already marked, with everything below it, i included.
                    return;
                }
                if self.evaluated[j] {
                    continue;
                }
                self.stats.evaluated_climbing += 1;
                let (anonymous, next) = self.evaluate(j, Some(classes.clone()));
                if !anonymous {
                    i = j;
                    classes = next;
                    continue 'up;
                }
            }
            break;
        }
        self.lattice.mark_down(i, &mut self.not_anonymous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_codes_round_trip_and_mark_down_covers_the_box() {
        let l = Lattice::new(vec![3, 2, 4]);
        assert_eq!(l.size, 24);
        for i in 0..l.size {
            let levels = l.levels(i);
            let back: usize = levels.iter().zip(&l.strides).map(|(a, s)| a * s).sum();
            assert_eq!(back, i);
        }
        let mut marks = vec![false; l.size];
        let top = 1 + 3 + 2 * 6; // levels (1, 1, 2) with strides 1, 3, 6
        assert_eq!(l.mark_down(top, &mut marks), 2 * 2 * 3);
        for (i, &m) in marks.iter().enumerate() {
            let v = l.levels(i);
            assert_eq!(m, v[0] <= 1 && v[1] <= 1 && v[2] <= 2);
        }
    }
}
