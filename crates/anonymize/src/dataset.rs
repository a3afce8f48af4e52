//! The quasi-identifier part of a table, reduced to its distinct tuples of hierarchy leaves
//! with their multiplicities. The search works on this, never on raw rows: Adult's 30,162
//! rows are a few thousand tuples, and a table of millions rarely has more than a few
//! hundred thousand.

use rustc_hash::FxHashMap;

use crate::error::AnonError;
use crate::hierarchy::Hierarchy;

/// One sensitive attribute's coding: values are numbered as they are first seen, or, when
/// the attribute has a hierarchy (for t-closeness with hierarchical distance), by their leaf
/// index in it, so that every value must be one of its leaves.
#[derive(Clone, Debug, Default)]
struct SensitiveColumn {
    values: Vec<String>,
    index: FxHashMap<String, u32>,
    hierarchy: Option<Hierarchy>,
}

impl SensitiveColumn {
    fn code(&mut self, value: &str, row: usize) -> Result<u32, AnonError> {
        if let Some(h) = &self.hierarchy {
            return h.leaf_in_row(value, row);
        }
        if let Some(&c) = self.index.get(value) {
            return Ok(c);
        }
        let next = self.values.len() as u32;
        self.index.insert(value.to_owned(), next);
        self.values.push(value.to_owned());
        Ok(next)
    }

    /// Number of codes (hierarchy leaves, or the values seen).
    fn domain(&self) -> usize {
        self.hierarchy
            .as_ref()
            .map_or(self.values.len(), Hierarchy::leaves)
    }
}

/// Distinct quasi-identifier tuples (as leaf indices) and how many rows have each. With
/// sensitive attributes, a tuple is the QI leaves plus each sensitive value's code, so the
/// classes can carry the distributions of sensitive values that l-diversity and t-closeness
/// need.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    dims: usize,
    leaves: Leaves,
    /// Width mask of each quasi-identifier's field in a packed tuple (`Leaves::Packed`).
    leaf_masks: Vec<u64>,
    /// `sensitive_columns.len()` codes per tuple.
    sensitive: Vec<u32>,
    sensitive_columns: Vec<SensitiveColumn>,
    counts: Vec<u64>,
    rows: u64,
    /// Tuple lookup while loading, by the leaves packed into one integer (sensitive code
    /// last, 32 bits) — no allocation per row. Tables too wide for 128 bits use `wide`.
    packed: FxHashMap<u128, u32>,
    wide: FxHashMap<Vec<u32>, u32>,
    /// Bit offset of each field in the packed key, and whether packing is possible.
    shifts: Vec<u32>,
    packable: bool,
    /// Whether the packed key fits in 64 bits: then [`Dataset::add_row`] only appends each
    /// row's key here, and [`Dataset::seal`] sorts them and counts equal ones. Eight bytes
    /// a row instead of a hash table of tuples, whose slots and resizing cost several times
    /// the tuples themselves when nearly every row is distinct (100M rows: 0.8 GB against
    /// some 6 GB).
    deferrable: bool,
    pending: Vec<u64>,
    /// Reused per row, so loading allocates nothing per row.
    scratch: Vec<u32>,
}

/// The leaves of every tuple: one u64 a tuple when the quasi-identifiers' leaf indices fit
/// there together (each at its `shifts` offset), else `dims` u32s. At 100M nearly distinct
/// rows of five quasi-identifiers that is 0.8 GB instead of 1.9 GB.
#[derive(Clone, Debug)]
enum Leaves {
    Plain(Vec<u32>),
    Packed(Vec<u64>),
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves::Plain(Vec::new())
    }
}

impl Dataset {
    /// An empty set of tuples over `dims` quasi-identifiers.
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    /// An empty set of tuples over the quasi-identifiers of `hierarchies` and `sensitive`
    /// sensitive attributes, with compact keys while loading.
    pub fn for_hierarchies(hierarchies: &[Hierarchy], sensitive: usize) -> Self {
        let mut shifts = Vec::with_capacity(hierarchies.len() + sensitive);
        let mut leaf_masks = Vec::with_capacity(hierarchies.len());
        let mut bits = 0u32;
        for h in hierarchies {
            shifts.push(bits);
            let width = usize::BITS - h.leaves().max(1).leading_zeros();
            leaf_masks.push(if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            });
            bits += width;
        }
        let leaves = if bits <= 64 {
            Leaves::Packed(Vec::new())
        } else {
            Leaves::Plain(Vec::new())
        };
        for _ in 0..sensitive {
            shifts.push(bits);
            bits += 32;
        }
        Self {
            dims: hierarchies.len(),
            sensitive_columns: vec![SensitiveColumn::default(); sensitive],
            packable: bits <= 128,
            deferrable: bits <= 64,
            leaves,
            leaf_masks,
            shifts,
            ..Self::default()
        }
    }

    /// An empty set of tuples over `dims` quasi-identifiers and one sensitive attribute.
    pub fn with_sensitive(dims: usize) -> Self {
        Self::with_sensitive_attributes(dims, 1)
    }

    /// An empty set of tuples over `dims` quasi-identifiers and `n` sensitive attributes.
    pub fn with_sensitive_attributes(dims: usize, n: usize) -> Self {
        Self {
            dims,
            sensitive_columns: vec![SensitiveColumn::default(); n],
            ..Self::default()
        }
    }

    /// Codes sensitive attribute `j` by its leaf index in `h` (for t-closeness with
    /// hierarchical distance): a value that is not a leaf of `h` is then an error naming its
    /// row. Call before any row is added.
    pub fn with_sensitive_hierarchy(mut self, j: usize, h: Hierarchy) -> Result<Self, AnonError> {
        if !self.counts.is_empty() {
            return Err(AnonError::Config(
                "a sensitive hierarchy must be set before rows are added".into(),
            ));
        }
        let col = self.sensitive_columns.get_mut(j).ok_or_else(|| {
            AnonError::Config(format!("there is no sensitive attribute number {j}"))
        })?;
        col.values = (0..h.leaves() as u32)
            .map(|leaf| h.value(0, h.code(leaf, 0)).to_owned())
            .collect();
        col.hierarchy = Some(h);
        Ok(self)
    }

    /// Adds one row's quasi-identifier values; returns its tuple index. `row` (1-based) is
    /// only for the error message.
    pub fn push_row(
        &mut self,
        row: usize,
        values: &[&str],
        hierarchies: &[Hierarchy],
    ) -> Result<u32, AnonError> {
        self.push_row_with(row, values, hierarchies, &[])
    }

    /// As [`Dataset::push_row`], with the row's sensitive values, one per sensitive
    /// attribute of the dataset.
    pub fn push_row_with(
        &mut self,
        row: usize,
        values: &[&str],
        hierarchies: &[Hierarchy],
        sensitive: &[&str],
    ) -> Result<u32, AnonError> {
        self.check_sensitive(sensitive.len())?;
        let mut key = std::mem::take(&mut self.scratch);
        key.clear();
        let coded = (|| {
            for (v, h) in values.iter().zip(hierarchies) {
                key.push(h.leaf_in_row(v, row)?);
            }
            for (v, col) in sensitive.iter().zip(self.sensitive_columns.iter_mut()) {
                key.push(col.code(v, row)?);
            }
            Ok(())
        })();
        let result = coded.map(|()| self.push_key(&key, 1));
        self.scratch = key;
        result
    }

    /// A row must give one value per sensitive attribute.
    fn check_sensitive(&self, given: usize) -> Result<(), AnonError> {
        if given != self.sensitive_columns.len() {
            return Err(AnonError::Config(format!(
                "{given} sensitive values given, the dataset has {} sensitive attributes",
                self.sensitive_columns.len()
            )));
        }
        Ok(())
    }

    /// Adds `count` rows with the given leaves; returns the tuple index.
    pub fn push_leaves(&mut self, key: Vec<u32>, count: u64) -> u32 {
        self.push_key(&key, count)
    }

    /// As [`Dataset::push_row_with`] without returning the tuple index, which lets the tuple
    /// wait until [`Dataset::seal`] (see `deferrable`). Rows added this way are tuples only
    /// after `seal`.
    pub fn add_row(
        &mut self,
        row: usize,
        values: &[&str],
        hierarchies: &[Hierarchy],
        sensitive: &[&str],
    ) -> Result<(), AnonError> {
        if !self.deferrable || !self.counts.is_empty() {
            return self
                .push_row_with(row, values, hierarchies, sensitive)
                .map(|_| ());
        }
        self.check_sensitive(sensitive.len())?;
        let mut key = 0u64;
        let mut field = 0;
        for (v, h) in values.iter().zip(hierarchies) {
            key |= u64::from(h.leaf_in_row(v, row)?) << self.shifts[field];
            field += 1;
        }
        for (v, col) in sensitive.iter().zip(self.sensitive_columns.iter_mut()) {
            key |= u64::from(col.code(v, row)?) << self.shifts[field];
            field += 1;
        }
        self.pending.push(key);
        Ok(())
    }

    /// Turns the rows [`Dataset::add_row`] deferred into tuples: sorted, equal keys
    /// counted, each distinct key unpacked once. When tuples were already pushed, the
    /// runs go through the lookup like any other row, so mixing the two stays exact.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let fields = self.dims + self.sensitive_columns.len();
        let bits = |i: usize| {
            let end = self.shifts.get(i + 1).copied().unwrap_or(64);
            let width = end - self.shifts[i];
            if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            }
        };
        let masks: Vec<u64> = (0..fields).map(bits).collect();
        let shifts = self.shifts.clone();
        let hashed = !self.counts.is_empty();
        let mut fields_of = vec![0u32; fields];
        sorted_runs(&mut pending, |key, count| {
            for (i, f) in fields_of.iter_mut().enumerate() {
                *f = ((key >> shifts[i]) & masks[i]) as u32;
            }
            if hashed {
                self.push_key(&fields_of, count);
            } else {
                self.rows += count;
                self.push_tuple(&fields_of);
                self.counts.push(count);
            }
        });
    }

    fn push_key(&mut self, key: &[u32], count: u64) -> u32 {
        if !self.pending.is_empty() {
            // Deferred rows must be in the lookup before this one is looked up.
            let start = self.counts.len();
            self.flush_pending();
            for t in start..self.counts.len() {
                let packed = self.packed_key(t);
                self.packed.insert(packed, t as u32);
            }
        }
        self.rows += count;
        let packed = self.packable.then(|| {
            key.iter()
                .zip(&self.shifts)
                .fold(0u128, |acc, (&v, &s)| acc | (u128::from(v) << s))
        });
        let found = match packed {
            Some(p) => self.packed.get(&p).copied(),
            None => self.wide.get(key).copied(),
        };
        if let Some(t) = found {
            self.counts[t as usize] += count;
            return t;
        }
        let t = self.counts.len() as u32;
        self.push_tuple(key);
        self.counts.push(count);
        match packed {
            Some(p) => {
                self.packed.insert(p, t);
            }
            None => {
                self.wide.insert(key.to_vec(), t);
            }
        }
        t
    }

    /// Whether tuples carry sensitive values.
    pub fn has_sensitive(&self) -> bool {
        !self.sensitive_columns.is_empty()
    }

    /// Number of sensitive attributes.
    pub fn sensitive_attributes(&self) -> usize {
        self.sensitive_columns.len()
    }

    /// Sensitive value codes of tuple `t`, one per sensitive attribute.
    pub fn sensitive(&self, t: usize) -> &[u32] {
        let m = self.sensitive_columns.len();
        &self.sensitive[t * m..(t + 1) * m]
    }

    /// Values of sensitive attribute `j`, by code.
    pub fn sensitive_values(&self, j: usize) -> &[String] {
        &self.sensitive_columns[j].values
    }

    /// Number of codes of sensitive attribute `j`.
    pub fn sensitive_domain(&self, j: usize) -> usize {
        self.sensitive_columns[j].domain()
    }

    /// The hierarchy of sensitive attribute `j`, if it is coded by one.
    pub fn sensitive_hierarchy(&self, j: usize) -> Option<&Hierarchy> {
        self.sensitive_columns[j].hierarchy.as_ref()
    }

    /// Number of quasi-identifiers.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of distinct tuples.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there are no tuples.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Leaves of tuple `t`.
    pub fn tuple(&self, t: usize) -> Vec<u32> {
        (0..self.dims).map(|d| self.leaf(t, d)).collect()
    }

    /// Leaf of quasi-identifier `d` in tuple `t`.
    pub fn leaf(&self, t: usize, d: usize) -> u32 {
        match &self.leaves {
            Leaves::Plain(v) => v[t * self.dims + d],
            Leaves::Packed(v) => ((v[t] >> self.shifts[d]) & self.leaf_masks[d]) as u32,
        }
    }

    /// Rows with tuple `t`.
    pub fn count(&self, t: usize) -> u64 {
        self.counts[t]
    }

    /// Stores a new tuple's leaves and sensitive codes (`key`).
    fn push_tuple(&mut self, key: &[u32]) {
        let (leaves, sensitive) = key.split_at(self.dims);
        match &mut self.leaves {
            Leaves::Plain(v) => v.extend_from_slice(leaves),
            Leaves::Packed(v) => v.push(
                leaves
                    .iter()
                    .zip(&self.shifts)
                    .fold(0u64, |acc, (&l, &s)| acc | (u64::from(l) << s)),
            ),
        }
        self.sensitive.extend_from_slice(sensitive);
    }

    /// The packed lookup key of tuple `t`.
    fn packed_key(&self, t: usize) -> u128 {
        self.tuple(t)
            .iter()
            .chain(self.sensitive(t))
            .zip(&self.shifts)
            .fold(0u128, |acc, (&v, &s)| acc | (u128::from(v) << s))
    }

    /// Makes tuples of the deferred rows and drops the lookup index once every row is in
    /// (it is only needed while loading).
    pub fn seal(&mut self) {
        self.flush_pending();
        self.packed = FxHashMap::default();
        self.wide = FxHashMap::default();
        for col in &mut self.sensitive_columns {
            col.index = FxHashMap::default();
        }
    }
}

/// Calls `each(key, count)` for the distinct keys of `keys` in ascending order, with how
/// often each occurs. Sorts in place, the two halves on two threads, then merges them.
fn sorted_runs(keys: &mut [u64], mut each: impl FnMut(u64, u64)) {
    let mid = keys.len() / 2;
    let (a, b) = keys.split_at_mut(mid);
    if mid >= 1 << 16 {
        std::thread::scope(|scope| {
            scope.spawn(|| a.sort_unstable());
            b.sort_unstable();
        });
    } else {
        a.sort_unstable();
        b.sort_unstable();
    }
    let (mut i, mut j) = (0, 0);
    let mut run: Option<(u64, u64)> = None;
    while i < a.len() || j < b.len() {
        let key = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        run = match run {
            Some((k, n)) if k == key => Some((k, n + 1)),
            Some((k, n)) => {
                each(k, n);
                Some((key, 1))
            }
            None => Some((key, 1)),
        };
    }
    if let Some((k, n)) = run {
        each(k, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hierarchy(column: &str, n: usize) -> Hierarchy {
        let rows = (0..n)
            .map(|i| vec![format!("v{i}"), format!("g{}", i / 3), "*".to_owned()])
            .collect();
        Hierarchy::from_rows(column, rows).expect("hierarchy")
    }

    /// The multiset of (leaves, sensitive codes, count) — what a dataset means, whatever
    /// order its tuples are in.
    fn meaning(d: &Dataset) -> Vec<(Vec<u32>, Vec<u32>, u64)> {
        let mut v: Vec<_> = (0..d.len())
            .map(|t| (d.tuple(t), d.sensitive(t).to_vec(), d.count(t)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn deferred_rows_make_the_same_tuples_as_looked_up_ones() {
        let hs = [hierarchy("a", 7), hierarchy("b", 300), hierarchy("c", 2)];
        let names = ["x", "y", "z", "w"];
        // Enough rows that the sort runs on two threads.
        let rows: Vec<([String; 3], &str)> = (0..200_000u64)
            .map(|i| {
                let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                (
                    [
                        format!("v{}", r % 7),
                        format!("v{}", (r / 7) % 300),
                        format!("v{}", (r / 2100) % 2),
                    ],
                    names[(r % 4) as usize],
                )
            })
            .collect();
        let mut looked_up = Dataset::for_hierarchies(&hs, 1);
        let mut deferred = Dataset::for_hierarchies(&hs, 1);
        let mut mixed = Dataset::for_hierarchies(&hs, 1);
        for (i, (v, s)) in rows.iter().enumerate() {
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            looked_up.push_row_with(i + 1, &v, &hs, &[s]).expect("row");
            deferred.add_row(i + 1, &v, &hs, &[s]).expect("row");
            if i % 1000 == 999 {
                mixed.push_row_with(i + 1, &v, &hs, &[s]).expect("row");
            } else {
                mixed.add_row(i + 1, &v, &hs, &[s]).expect("row");
            }
        }
        looked_up.seal();
        deferred.seal();
        mixed.seal();
        assert!(
            deferred.deferrable,
            "the test must exercise the deferred path"
        );
        assert_eq!(deferred.rows(), rows.len() as u64);
        assert_eq!(mixed.rows(), rows.len() as u64);
        assert_eq!(meaning(&deferred), meaning(&looked_up));
        assert_eq!(meaning(&mixed), meaning(&looked_up));
        assert_eq!(deferred.sensitive_values(0), looked_up.sensitive_values(0));
    }

    #[test]
    fn a_deferred_row_outside_the_hierarchy_names_its_row() {
        let hs = [hierarchy("a", 3)];
        let mut d = Dataset::for_hierarchies(&hs, 0);
        d.add_row(1, &["v1"], &hs, &[]).expect("row");
        let e = d.add_row(2, &["nope"], &hs, &[]).expect_err("not a leaf");
        assert!(e.to_string().contains('2'), "{e}");
    }

    #[test]
    fn sorted_runs_count_every_key_once() {
        for n in [0usize, 1, 2, 3, 1000, 70_000, 140_001] {
            let mut keys: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % 997).collect();
            let mut expected = std::collections::BTreeMap::new();
            for &k in &keys {
                *expected.entry(k).or_insert(0u64) += 1;
            }
            let mut got = Vec::new();
            sorted_runs(&mut keys, |k, c| got.push((k, c)));
            assert_eq!(got, expected.into_iter().collect::<Vec<_>>(), "n = {n}");
        }
    }
}
