//! Releases of anonymized data (issue #10) as pure rules, no I/O: which anonymization methods
//! may be used (R-AN-3: versioned, identified by their hash, proposed by one person and approved
//! by another) and the states a release goes through before anything leaves the vault (R-RL-1:
//! committee decision recorded; R-RL-2: two people confirm, neither of them the requester), the
//! cohort dataset a release starts from, and the signed package that leaves (R-RL-4, R-AN-4).

#![forbid(unsafe_code)]

pub mod cohort;
pub mod cumulative;
pub mod day;
pub mod method;
pub mod package;
pub mod workflow;

pub use method::{method_id, Method, MethodState};
pub use workflow::{Event, Refusal, Release, Request, State};
