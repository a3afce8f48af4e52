//! The vault (管理サーバ) as a library: what the `vault` binary drives.
//!
//! This build has the offline content check ([`check`]), the same strict parsing the intake
//! applies to every received file (R-IN-1, R-IN-2). Intake over the link, the encrypted
//! store, operators and releases arrive with issues #7–#10.

#![forbid(unsafe_code)]

pub mod check;
