//! Generalization hierarchies in ARX's CSV format (no header, `;`-separated; column 0 is the
//! original value, column j its generalization at level j), validated and integer-coded so
//! that the search never touches a string.

use std::collections::HashMap;

use crate::error::AnonError;

/// One column's hierarchy, coded: leaves are the rows of the file, and at every level each
/// distinct generalized value has a dense code.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    column: String,
    /// `values[level][code]`: the generalized string.
    values: Vec<Vec<String>>,
    /// `codes[level][leaf]`: the code of the leaf's generalization at `level`.
    codes: Vec<Vec<u32>>,
    /// `leaf_count[level][code]`: how many leaves generalize to that value (ARX's domain
    /// share numerator).
    leaf_count: Vec<Vec<u32>>,
    leaf_index: rustc_hash::FxHashMap<String, u32>,
}

impl Hierarchy {
    /// Parses ARX's CSV text: one row per original value, `;`-separated.
    pub fn parse_arx(column: &str, text: &str, delimiter: char) -> Result<Self, AnonError> {
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| l.split(delimiter).map(str::to_owned).collect())
            .collect();
        Self::from_rows(column, rows)
    }

    /// Builds and validates a hierarchy from its rows (leaf first).
    pub fn from_rows(column: &str, rows: Vec<Vec<String>>) -> Result<Self, AnonError> {
        let first = rows.first().ok_or_else(|| AnonError::EmptyHierarchy {
            column: column.to_owned(),
        })?;
        let height = first.len();
        let mut leaf_index =
            rustc_hash::FxHashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (i, r) in rows.iter().enumerate() {
            if r.len() != height {
                return Err(AnonError::RaggedHierarchy {
                    column: column.to_owned(),
                    row: i + 1,
                    got: r.len(),
                    expected: height,
                });
            }
            let leaf = u32::try_from(i)
                .map_err(|_| AnonError::Config(format!("hierarchy for {column} is too large")))?;
            if let Some(prev) = leaf_index.insert(r[0].clone(), leaf) {
                return Err(AnonError::DuplicateLeaf {
                    column: column.to_owned(),
                    value: r[0].clone(),
                    first: prev as usize + 1,
                    second: i + 1,
                });
            }
        }
        let mut values = Vec::with_capacity(height);
        let mut codes = Vec::with_capacity(height);
        let mut leaf_count = Vec::with_capacity(height);
        for level in 0..height {
            let mut index: HashMap<&str, u32> = HashMap::new();
            let mut vals = Vec::new();
            let mut counts = Vec::new();
            let mut col = Vec::with_capacity(rows.len());
            for r in &rows {
                let v = r[level].as_str();
                let code = *index.entry(v).or_insert_with(|| {
                    vals.push(v.to_owned());
                    counts.push(0);
                    (vals.len() - 1) as u32
                });
                counts[code as usize] += 1;
                col.push(code);
            }
            values.push(vals);
            codes.push(col);
            leaf_count.push(counts);
        }
        let h = Self {
            column: column.to_owned(),
            values,
            codes,
            leaf_count,
            leaf_index,
        };
        h.check_tree(&rows)?;
        Ok(h)
    }

    /// Each level must be a function of the one below: two leaves that agree at level j
    /// agree at every level above j.
    fn check_tree(&self, rows: &[Vec<String>]) -> Result<(), AnonError> {
        for level in 0..self.height().saturating_sub(1) {
            let mut parent: HashMap<u32, (u32, usize)> = HashMap::new();
            for (leaf, r) in rows.iter().enumerate() {
                let here = self.codes[level][leaf];
                let up = self.codes[level + 1][leaf];
                match parent.get(&here) {
                    None => {
                        parent.insert(here, (up, leaf));
                    }
                    Some(&(p, other)) if p != up => {
                        return Err(AnonError::InconsistentHierarchy {
                            column: self.column.clone(),
                            a: rows[other][0].clone(),
                            b: r[0].clone(),
                            shared: r[level].clone(),
                            level,
                            higher: level + 1,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Column name.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Number of levels, the original values included (ARX's height).
    pub fn height(&self) -> usize {
        self.codes.len()
    }

    /// Number of original values (rows of the file): ARX's domain size.
    pub fn leaves(&self) -> usize {
        self.codes.first().map_or(0, Vec::len)
    }

    /// The leaf index of an original value.
    pub fn leaf(&self, value: &str) -> Option<u32> {
        self.leaf_index.get(value).copied()
    }

    /// The leaf index of a value of data row `row` (1-based), or the error naming both.
    pub fn leaf_in_row(&self, value: &str, row: usize) -> Result<u32, AnonError> {
        self.leaf(value)
            .ok_or_else(|| AnonError::ValueNotInHierarchy {
                row,
                column: self.column.clone(),
                value: value.to_owned(),
            })
    }

    /// Code of `leaf` generalized to `level`.
    pub fn code(&self, leaf: u32, level: usize) -> u32 {
        self.codes[level][leaf as usize]
    }

    /// Codes of every leaf at `level`, indexed by leaf.
    pub fn codes_at(&self, level: usize) -> &[u32] {
        &self.codes[level]
    }

    /// Number of distinct values at `level`.
    pub fn width(&self, level: usize) -> usize {
        self.values[level].len()
    }

    /// The string of `code` at `level`.
    pub fn value(&self, level: usize, code: u32) -> &str {
        &self.values[level][code as usize]
    }

    /// ARX's domain share of a generalized value: the fraction of the hierarchy's original
    /// values that it covers.
    pub fn share(&self, level: usize, code: u32) -> f64 {
        f64::from(self.leaf_count[level][code as usize]) / self.leaves() as f64
    }

    /// Number of leaves covered by a generalized value.
    pub fn leaf_count(&self, level: usize, code: u32) -> u32 {
        self.leaf_count[level][code as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_shares() {
        let h = Hierarchy::parse_arx("age", "1;0-4;*\n2;0-4;*\n5;5-9;*\n", ';').expect("ok");
        assert_eq!(h.height(), 3);
        assert_eq!(h.leaves(), 3);
        let l = h.leaf("2").expect("leaf");
        assert_eq!(h.value(1, h.code(l, 1)), "0-4");
        assert!((h.share(1, h.code(l, 1)) - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(h.share(2, 0), 1.0);
    }

    #[test]
    fn refuses_ragged_duplicate_and_inconsistent() {
        assert!(matches!(
            Hierarchy::parse_arx("a", "1;x\n2\n", ';'),
            Err(AnonError::RaggedHierarchy { row: 2, .. })
        ));
        assert!(matches!(
            Hierarchy::parse_arx("a", "1;x\n1;y\n", ';'),
            Err(AnonError::DuplicateLeaf { .. })
        ));
        assert!(matches!(
            Hierarchy::parse_arx("a", "1;x;p\n2;x;q\n", ';'),
            Err(AnonError::InconsistentHierarchy { level: 1, .. })
        ));
        assert!(matches!(
            Hierarchy::parse_arx("a", "", ';'),
            Err(AnonError::EmptyHierarchy { .. })
        ));
    }
}
