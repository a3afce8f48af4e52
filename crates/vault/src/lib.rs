//! The vault (管理サーバ) as a library: what the `vault` binary drives.
//!
//! [`check`] is the offline content check; [`intake`] takes envelopes from the link's inbox
//! into the encrypted store (crate `vault-store`) with the same parsers (R-IN-1, R-IN-2,
//! R-IN-5, R-OP-5). Operators and releases arrive with issues #8 and #10.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backup;
pub mod check;
pub mod intake;
