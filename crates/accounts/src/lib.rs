//! Operator accounts of the vault (R-OP-1, R-OP-2): what makes a password acceptable, how it
//! is stored (argon2id), the TOTP second factor (RFC 6238), lockout after failed logins with a
//! growing delay, session expiry, and which role may run which command (least privilege,
//! separation of duties).
//!
//! Pure: no files, sockets or clock. Every function that depends on time takes `now` (Unix
//! seconds) from its caller, which keeps the rules testable to the second.

#![forbid(unsafe_code)]

pub mod lockout;
pub mod password;
pub mod roles;
pub mod session;
pub mod totp;

pub use lockout::{Lockout, LockoutPolicy, Refused};
pub use password::{PasswordPolicy, StoredPassword, Violation};
pub use roles::{Command, Role};
pub use session::{Expired, Session, SessionPolicy};
pub use totp::{Totp, TotpError};

/// Errors of this crate that are not a rule saying no.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The password hash could not be made or read.
    #[error("password hash: {0}")]
    Hash(String),
    /// The random source failed.
    #[error("random source failed")]
    Random,
}
