//! The vault (管理サーバ) as a library: what the `vault` binary drives.
//!
//! [`check`] is the offline content check; [`intake`] takes envelopes from the link's inbox
//! into the encrypted store (crate `vault-store`) with the same parsers (R-IN-1, R-IN-2,
//! R-IN-5, R-OP-5); [`admin`] is the operators' service (issue #8) and [`releases`] builds,
//! packages and sends releases (issue #10).

#![forbid(unsafe_code)]

pub mod admin;
pub mod backup;
pub mod check;
pub mod intake;
pub mod releases;
