//! The anonymization core (R-AN-1..4): ARX-compatible generalization hierarchies, the
//! k-anonymity, l-diversity and t-closeness privacy models with record suppression, ARX's
//! quality metrics, and the search for the optimal full-domain generalization.
//!
//! Pure: tables and configurations in, transformations and reports out. Reading and writing
//! files is in [`table`]; the `enclave anonymize` command is a thin driver over this crate.

pub mod builders;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod heuristic;
pub mod hierarchy;
pub mod job;
pub mod mondrian;
pub mod person;
pub mod plain;
pub mod recipe;
pub mod report;
pub mod search;
pub mod table;

pub use dataset::Dataset;
pub use error::AnonError;
pub use evaluate::{ClassTable, Diversity, Evaluator, Metric, NodeResult, Privacy, Release};
pub use hierarchy::Hierarchy;
pub use search::{optimal, SearchResult, SearchStats};
