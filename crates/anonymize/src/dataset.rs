//! The quasi-identifier part of a table, reduced to its distinct tuples of hierarchy leaves
//! with their multiplicities. The search works on this, never on raw rows: Adult's 30,162
//! rows are a few thousand tuples, and a table of millions rarely has more than a few
//! hundred thousand.

use rustc_hash::FxHashMap;

use crate::error::AnonError;
use crate::hierarchy::Hierarchy;

/// Distinct quasi-identifier tuples (as leaf indices) and how many rows have each. With a
/// sensitive attribute, a tuple is the QI leaves plus the sensitive value's code, so the
/// classes can carry the distribution of sensitive values that l-diversity and t-closeness
/// need.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    dims: usize,
    leaves: Vec<u32>,
    sensitive: Vec<u32>,
    sensitive_values: Vec<String>,
    sensitive_index: FxHashMap<String, u32>,
    has_sensitive: bool,
    counts: Vec<u64>,
    rows: u64,
    /// Tuple lookup while loading, by the leaves packed into one integer (sensitive code
    /// last, 32 bits) — no allocation per row. Tables too wide for 128 bits use `wide`.
    packed: FxHashMap<u128, u32>,
    wide: FxHashMap<Vec<u32>, u32>,
    /// Bit offset of each field in the packed key, and whether packing is possible.
    shifts: Vec<u32>,
    packable: bool,
    /// Reused per row, so loading allocates nothing per row.
    scratch: Vec<u32>,
}

impl Dataset {
    /// An empty set of tuples over `dims` quasi-identifiers.
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    /// An empty set of tuples over the quasi-identifiers of `hierarchies` (and a sensitive
    /// attribute if `sensitive`), with compact keys while loading.
    pub fn for_hierarchies(hierarchies: &[Hierarchy], sensitive: bool) -> Self {
        let mut shifts = Vec::with_capacity(hierarchies.len() + 1);
        let mut bits = 0u32;
        for h in hierarchies {
            shifts.push(bits);
            bits += usize::BITS - h.leaves().max(1).leading_zeros();
        }
        shifts.push(bits);
        if sensitive {
            bits += 32;
        }
        Self {
            dims: hierarchies.len(),
            has_sensitive: sensitive,
            packable: bits <= 128,
            shifts,
            ..Self::default()
        }
    }

    /// An empty set of tuples over `dims` quasi-identifiers and one sensitive attribute.
    pub fn with_sensitive(dims: usize) -> Self {
        Self {
            dims,
            has_sensitive: true,
            ..Self::default()
        }
    }

    /// Adds one row's quasi-identifier values; returns its tuple index. `row` (1-based) is
    /// only for the error message.
    pub fn push_row(
        &mut self,
        row: usize,
        values: &[&str],
        hierarchies: &[Hierarchy],
    ) -> Result<u32, AnonError> {
        self.push_row_with(row, values, hierarchies, None)
    }

    /// As [`Dataset::push_row`], with the row's sensitive value (required if and only if
    /// the dataset was made [`Dataset::with_sensitive`]).
    pub fn push_row_with(
        &mut self,
        row: usize,
        values: &[&str],
        hierarchies: &[Hierarchy],
        sensitive: Option<&str>,
    ) -> Result<u32, AnonError> {
        let mut key = std::mem::take(&mut self.scratch);
        key.clear();
        for (v, h) in values.iter().zip(hierarchies) {
            key.push(h.leaf_in_row(v, row)?);
        }
        match (self.has_sensitive, sensitive) {
            (true, Some(v)) => {
                let next = self.sensitive_values.len() as u32;
                let code = *self.sensitive_index.entry(v.to_owned()).or_insert(next);
                if code == next {
                    self.sensitive_values.push(v.to_owned());
                }
                key.push(code);
            }
            (false, None) => {}
            _ => {
                return Err(AnonError::Config(
                    "a sensitive value must be given exactly when the dataset has a sensitive \
                     attribute"
                        .into(),
                ))
            }
        }
        let t = self.push_key(&key, 1);
        self.scratch = key;
        Ok(t)
    }

    /// Adds `count` rows with the given leaves; returns the tuple index.
    pub fn push_leaves(&mut self, key: Vec<u32>, count: u64) -> u32 {
        self.push_key(&key, count)
    }

    fn push_key(&mut self, key: &[u32], count: u64) -> u32 {
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
        self.leaves.extend_from_slice(&key[..self.dims]);
        if self.has_sensitive {
            self.sensitive.push(key[self.dims]);
        }
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

    /// Whether tuples carry a sensitive value.
    pub fn has_sensitive(&self) -> bool {
        self.has_sensitive
    }

    /// Sensitive value code of tuple `t` (0 without a sensitive attribute).
    pub fn sensitive(&self, t: usize) -> u32 {
        self.sensitive.get(t).copied().unwrap_or(0)
    }

    /// Distinct sensitive values, by code.
    pub fn sensitive_values(&self) -> &[String] {
        &self.sensitive_values
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
    pub fn tuple(&self, t: usize) -> &[u32] {
        &self.leaves[t * self.dims..(t + 1) * self.dims]
    }

    /// Rows with tuple `t`.
    pub fn count(&self, t: usize) -> u64 {
        self.counts[t]
    }

    /// Drops the lookup index once every row is in (it is only needed while loading).
    pub fn seal(&mut self) {
        self.packed = FxHashMap::default();
        self.wide = FxHashMap::default();
        self.sensitive_index = FxHashMap::default();
    }
}
