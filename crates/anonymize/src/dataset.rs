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
    leaves: Vec<u32>,
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

    /// An empty set of tuples over the quasi-identifiers of `hierarchies` and `sensitive`
    /// sensitive attributes, with compact keys while loading.
    pub fn for_hierarchies(hierarchies: &[Hierarchy], sensitive: usize) -> Self {
        let mut shifts = Vec::with_capacity(hierarchies.len() + sensitive);
        let mut bits = 0u32;
        for h in hierarchies {
            shifts.push(bits);
            bits += usize::BITS - h.leaves().max(1).leading_zeros();
        }
        for _ in 0..sensitive {
            shifts.push(bits);
            bits += 32;
        }
        Self {
            dims: hierarchies.len(),
            sensitive_columns: vec![SensitiveColumn::default(); sensitive],
            packable: bits <= 128,
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
        if sensitive.len() != self.sensitive_columns.len() {
            return Err(AnonError::Config(format!(
                "{} sensitive values given, the dataset has {} sensitive attributes",
                sensitive.len(),
                self.sensitive_columns.len()
            )));
        }
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
        self.sensitive.extend_from_slice(&key[self.dims..]);
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
        for col in &mut self.sensitive_columns {
            col.index = FxHashMap::default();
        }
    }
}
