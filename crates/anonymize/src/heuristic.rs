//! A heuristic search for lattices too large to search exhaustively (many quasi-identifiers:
//! 16 of them make 85 million transformations). In the spirit of ARX's Lightning: climb from
//! the original data by the generalization step that suppresses least until the privacy
//! model holds, then improve by steepest descent — raise or lower one attribute, or lower
//! one and raise another — while the model still holds and the score falls. Each step groups from the classes in hand or the nearest
//! cached ones below. The result is anonymous but **not proven optimal**; the report says so.
//!
//! Pure: no clock, no I/O; bounded by a number of evaluations.

use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::evaluate::{ClassTable, Evaluator, Metric, NodeResult, Privacy};
use crate::search::{SearchResult, SearchStats};

/// Classes kept in grouping sources (24 bytes each: about 100 MB).
const TABLE_ENTRIES: usize = 4_000_000;

struct Walker<'a, 'e> {
    ev: &'a Evaluator<'e>,
    metric: Metric,
    privacy: &'a Privacy,
    heights: Vec<usize>,
    seen: FxHashMap<Vec<usize>, NodeResult>,
    /// Class tables kept as grouping sources, at most `TABLE_ENTRIES` classes in all.
    tables: FxHashMap<Vec<usize>, Rc<ClassTable>>,
    table_entries: usize,
    root: Rc<ClassTable>,
    evaluated: u64,
    budget: u64,
}

impl Walker<'_, '_> {
    /// Evaluates `levels` (once), grouping from the smallest known table below it.
    fn eval(&mut self, levels: &[usize]) -> Option<NodeResult> {
        if let Some(r) = self.seen.get(levels) {
            return Some(r.clone());
        }
        if self.evaluated >= self.budget {
            return None;
        }
        let src = self
            .tables
            .iter()
            .filter(|(l, _)| l.iter().zip(levels).all(|(a, b)| a <= b))
            .map(|(_, t)| t)
            .min_by_key(|t| t.len())
            .cloned()
            .unwrap_or_else(|| self.root.clone());
        let classes = Rc::new(self.ev.classes_from(&src, levels));
        let r = self
            .ev
            .evaluate_classes(self.metric, self.privacy, levels, &classes);
        self.evaluated += 1;
        // Memory stays bounded: when the tables kept exceed the budget, the largest go
        // first (the small ones are the cheap sources for the many nodes above them).
        self.table_entries += classes.len();
        self.tables.insert(levels.to_vec(), classes);
        while self.table_entries > TABLE_ENTRIES {
            let Some(largest) = self
                .tables
                .iter()
                .max_by_key(|(_, t)| t.len())
                .map(|(l, _)| l.clone())
            else {
                break;
            };
            if let Some(t) = self.tables.remove(&largest) {
                self.table_entries -= t.len();
            }
        }
        self.seen.insert(levels.to_vec(), r.clone());
        Some(r)
    }
}

/// Ranks nodes: anonymous before not, then by score, then least generalized.
fn better(a: &NodeResult, b: &NodeResult) -> bool {
    let key = |n: &NodeResult| (!n.anonymous, n.levels.iter().sum::<usize>());
    match (a.anonymous, b.anonymous) {
        (true, false) => true,
        (false, true) => false,
        _ => a.score < b.score || (a.score == b.score && key(a) < key(b)),
    }
}

/// Runs the heuristic with at most `budget` evaluations.
pub fn heuristic(
    ev: &Evaluator<'_>,
    metric: Metric,
    privacy: &Privacy,
    budget: u64,
) -> SearchResult {
    let heights = ev.heights();
    let dims = heights.len();
    let mut w = Walker {
        ev,
        metric,
        privacy,
        heights: heights.clone(),
        seen: FxHashMap::default(),
        tables: FxHashMap::default(),
        table_entries: 0,
        root: Rc::new(ev.root()),
        evaluated: 0,
        budget: budget.max(1),
    };
    let lattice: u64 = heights
        .iter()
        .fold(1u64, |acc, &h| acc.saturating_mul(h as u64));

    // 1. Climb: from the original data, take the successor that keeps the score lowest
    //    (the bound when nothing is anonymous yet) until the model holds.
    let mut current = vec![0usize; dims];
    let mut cur = w.eval(&current);
    while cur.as_ref().is_some_and(|c| !c.anonymous) {
        let mut next: Option<NodeResult> = None;
        for d in 0..dims {
            if current[d] + 1 >= w.heights[d] {
                continue;
            }
            let mut l = current.clone();
            l[d] += 1;
            if let Some(r) = w.eval(&l) {
                // Anonymous successors first, by score; among the others the one that
                // suppresses least (the direction towards the model), then by score.
                let rank = |n: &NodeResult| {
                    (
                        !n.anonymous,
                        if n.anonymous { 0 } else { n.suppressed },
                        n.score,
                    )
                };
                if next.as_ref().is_none_or(|n| {
                    rank(&r).partial_cmp(&rank(n)) == Some(std::cmp::Ordering::Less)
                }) {
                    next = Some(r);
                }
            }
        }
        match next {
            Some(n) => {
                current = n.levels.clone();
                cur = Some(n);
            }
            None => break,
        }
    }

    // 2. Improve: raise or lower one attribute, or lower one and raise another, while the
    //    model holds and the score falls (steepest descent over these moves) — from the
    //    climb's end and from the most generalized transformation, keeping the better.
    let top: Vec<usize> = w.heights.iter().map(|h| h - 1).collect();
    let starts = [
        cur.filter(|c| c.anonymous),
        w.eval(&top).filter(|c| c.anonymous),
    ];
    let mut result: Option<NodeResult> = None;
    for start in starts {
        let end = descend(&mut w, start, dims);
        if let Some(e) = end {
            if result.as_ref().is_none_or(|r| better(&e, r)) {
                result = Some(e);
            }
        }
    }
    SearchResult {
        best: result,
        ties: Vec::new(),
        stats: SearchStats {
            lattice_nodes: lattice,
            evaluated: w.evaluated,
            evaluated_climbing: 0,
            grouped_from_raw: 0,
            stopped_early: 0,
            pruned_by_monotonicity: 0,
            pruned_by_bound: 0,
        },
    }
}

/// Steepest descent from `start` over the neighbour moves; returns where it stops.
fn descend(w: &mut Walker<'_, '_>, start: Option<NodeResult>, dims: usize) -> Option<NodeResult> {
    let mut best = start;
    while let Some(b) = best.clone() {
        let mut improved: Option<NodeResult> = None;
        let mut moves: Vec<Vec<usize>> = Vec::new();
        for d in 0..dims {
            // Raise one attribute (less suppression can outweigh more generalization).
            if b.levels[d] + 1 < w.heights[d] {
                let mut up = b.levels.clone();
                up[d] += 1;
                moves.push(up);
            }
            if b.levels[d] == 0 {
                continue;
            }
            let mut down = b.levels.clone();
            down[d] -= 1;
            moves.push(down.clone());
            for e in 0..dims {
                if e != d && down[e] + 1 < w.heights[e] {
                    let mut swap = down.clone();
                    swap[e] += 1;
                    moves.push(swap);
                }
            }
        }
        for m in moves {
            if let Some(r) = w.eval(&m) {
                if r.anonymous
                    && r.score < b.score
                    && improved.as_ref().is_none_or(|i| better(&r, i))
                {
                    improved = Some(r);
                }
            }
        }
        match improved {
            Some(i) => best = Some(i),
            None => break,
        }
    }
    best
}
