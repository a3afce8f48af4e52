//! A set of `u64` ids kept as sorted, disjoint, inclusive ranges: compact for the common
//! case of long runs of delivered object ids, and cheap to print as a gap report.

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from ranges in any order (overlaps are merged).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new();
        for (a, b) in ranges {
            set.insert_range(a, b);
        }
        set
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < id);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= id)
    }

    /// Adds one id.
    pub fn insert(&mut self, id: u64) {
        self.insert_range(id, id);
    }

    /// Adds `a..=b` (ignored when `a > b`).
    pub fn insert_range(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        // First range that could touch [a, b]: its end + 1 >= a.
        let first = self
            .ranges
            .partition_point(|&(_, end)| end.saturating_add(1) < a);
        let mut start = a;
        let mut end = b;
        let mut last = first;
        while let Some(&(s, e)) = self.ranges.get(last) {
            if s > end.saturating_add(1) {
                break;
            }
            start = start.min(s);
            end = end.max(e);
            last += 1;
        }
        self.ranges.splice(first..last, [(start, end)]);
    }

    /// Ids of `lo..=hi` that are not in the set, as ranges.
    pub fn missing_in(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if lo > hi {
            return out;
        }
        let mut next = lo;
        for &(s, e) in &self.ranges {
            if e < next {
                continue;
            }
            if s > hi {
                break;
            }
            if s > next {
                out.push((next, s - 1));
            }
            if e >= hi {
                return out;
            }
            next = e + 1;
        }
        out.push((next, hi));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x07a4_e5e7),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec((0u64..200, 0u64..8), 0..60), lo in 0u64..220, span in 0u64..220) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for (a, len) in ops {
                set.insert_range(a, a + len);
                model.extend(a..=a + len);
            }
            for id in 0..230 {
                prop_assert_eq!(set.contains(id), model.contains(&id));
            }
            for w in set.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "not disjoint and non-adjacent: {:?}", set);
            }
            let hi = lo + span;
            let missing: BTreeSet<u64> = set.missing_in(lo, hi).into_iter().flat_map(|(a, b)| a..=b).collect();
            let expected: BTreeSet<u64> = (lo..=hi).filter(|i| !model.contains(i)).collect();
            prop_assert_eq!(missing, expected);
        }
    }
}
