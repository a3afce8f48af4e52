//! Errors of the anonymization core. Each names the column, row or level at fault, because
//! the operator who reads it has to fix a hierarchy file or a configuration, not our code.

use thiserror::Error;

/// Everything that can go wrong between reading a table and returning a transformation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AnonError {
    /// A hierarchy file has no rows.
    #[error("hierarchy for column {column}: the file has no rows")]
    EmptyHierarchy {
        /// Column the hierarchy is for.
        column: String,
    },
    /// Hierarchy rows must all have the same number of levels.
    #[error(
        "hierarchy for column {column}: row {row} has {got} levels, the first row has {expected}"
    )]
    RaggedHierarchy {
        /// Column.
        column: String,
        /// 1-based row of the hierarchy file.
        row: usize,
        /// Levels in that row.
        got: usize,
        /// Levels in the first row.
        expected: usize,
    },
    /// The same original value appears twice in column 0.
    #[error("hierarchy for column {column}: value {value:?} is listed twice (rows {first} and {second})")]
    DuplicateLeaf {
        /// Column.
        column: String,
        /// The value.
        value: String,
        /// 1-based rows.
        first: usize,
        /// 1-based rows.
        second: usize,
    },
    /// Two values share a generalization at one level but not at a higher one: the levels
    /// do not form a tree, so generalizing could split a group again.
    #[error(
        "hierarchy for column {column}: values {a:?} and {b:?} are both {shared:?} at level {level} \
         but differ at level {higher}; each level must merge whole groups of the level below"
    )]
    InconsistentHierarchy {
        /// Column.
        column: String,
        /// One value.
        a: String,
        /// Another value.
        b: String,
        /// The shared generalization.
        shared: String,
        /// Level where they agree.
        level: usize,
        /// Higher level where they differ.
        higher: usize,
    },
    /// A quasi-identifier named in the configuration is not a column of the table.
    #[error("column {column:?} is not in the input (columns: {available})")]
    MissingColumn {
        /// The name asked for.
        column: String,
        /// What the header has.
        available: String,
    },
    /// A value of the data is not a leaf of its column's hierarchy.
    #[error("row {row}, column {column}: value {value:?} is not in the column's hierarchy")]
    ValueNotInHierarchy {
        /// 1-based data row (the header is row 0).
        row: usize,
        /// Column.
        column: String,
        /// The value.
        value: String,
    },
    /// The table has no data rows.
    #[error("the input has no data rows")]
    EmptyInput,
    /// A data row has the wrong number of fields.
    #[error("row {row}: {got} fields, the header has {expected}")]
    RaggedRow {
        /// 1-based data row.
        row: usize,
        /// Fields found.
        got: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A configuration that cannot be satisfied or makes no sense.
    #[error("configuration: {0}")]
    Config(String),
    /// More quasi-identifier values than the packed class keys can hold.
    #[error("the quasi-identifiers need {bits} bits per class key; at most 128 are supported")]
    KeyTooWide {
        /// Bits needed.
        bits: u32,
    },
}
