//! Sessions (R-OP-2, R-OP-3): a session ends after a spell of inactivity or after a fixed
//! length, whichever comes first, and counts the records it touched for the audit log.
//! Break-glass sessions are short.

use serde::{Deserialize, Serialize};

use crate::roles::Role;

/// Session lengths, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// Inactivity that ends a session.
    pub idle: u64,
    /// Longest session.
    pub absolute: u64,
    /// Longest break-glass session.
    pub break_glass: u64,
}

impl Default for SessionPolicy {
    /// 15 minutes idle, 8 hours at most, 1 hour for break-glass.
    fn default() -> Self {
        Self {
            idle: 15 * 60,
            absolute: 8 * 3600,
            break_glass: 3600,
        }
    }
}

/// Why a session is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expired {
    /// Idle too long.
    #[error("session expired after inactivity; log in again")]
    Idle,
    /// Open too long.
    #[error("session reached its maximum length; log in again")]
    Absolute,
}

/// A logged-in session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Public id (the audit log names it; the token that proves it is kept hashed).
    pub id: String,
    /// Who.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// Logged in by a break-glass account.
    pub break_glass: bool,
    /// Login time (Unix seconds).
    pub started: u64,
    /// Last command.
    pub last_seen: u64,
    /// Records touched so far.
    pub records: u64,
}

impl Session {
    /// Checks the session at `now` and marks it used; an expired session stays expired.
    pub fn touch(&mut self, now: u64, policy: &SessionPolicy) -> Result<(), Expired> {
        let limit = if self.break_glass {
            policy.break_glass.min(policy.absolute)
        } else {
            policy.absolute
        };
        if now.saturating_sub(self.started) >= limit {
            return Err(Expired::Absolute);
        }
        if now.saturating_sub(self.last_seen) >= policy.idle {
            return Err(Expired::Idle);
        }
        self.last_seen = now;
        Ok(())
    }

    /// Seconds since login.
    pub fn duration(&self, now: u64) -> u64 {
        now.saturating_sub(self.started)
    }
}
