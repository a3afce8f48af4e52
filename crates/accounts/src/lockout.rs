//! Lockout after failed logins (R-OP-1): each failure doubles the wait before the next
//! attempt is even looked at, and the fifth failure in a row locks the account until an
//! administrator unlocks it. A failure is one wrong login, whichever factor was wrong: the
//! answer never says which (two factors, not two steps).

use serde::{Deserialize, Serialize};

/// The lockout rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures in a row that lock the account.
    pub max_failures: u32,
    /// Wait after the first failure, in seconds; it doubles with each further one.
    pub base_delay: u64,
    /// The longest wait.
    pub max_delay: u64,
}

impl Default for LockoutPolicy {
    /// Five failures lock; waits of 1, 2, 4 and 8 s before that.
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_delay: 1,
            max_delay: 300,
        }
    }
}

/// Why a login attempt is not even checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Locked after too many failures, until an administrator unlocks it.
    #[error("account locked after repeated failed logins; an administrator must unlock it")]
    Locked,
    /// Too soon after the last failure.
    #[error("too soon after a failed login; wait {0} s")]
    Wait(u64),
}

/// One account's failure state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    /// Failures in a row.
    pub failures: u32,
    /// No attempt is checked before this time (Unix seconds).
    pub not_before: u64,
    /// Locked until unlocked.
    pub locked: bool,
}

/// What a failure led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Failures in a row now.
    pub failures: u32,
    /// Seconds before the next attempt is checked.
    pub wait: u64,
    /// This failure locked the account (raise an alert).
    pub locked_now: bool,
}

impl Lockout {
    /// Whether an attempt at `now` may be checked at all.
    pub fn check(&self, now: u64) -> Result<(), Refused> {
        if self.locked {
            Err(Refused::Locked)
        } else if now < self.not_before {
            Err(Refused::Wait(self.not_before - now))
        } else {
            Ok(())
        }
    }

    /// Records a failed attempt at `now`.
    pub fn fail(&mut self, now: u64, policy: &LockoutPolicy) -> Failure {
        self.failures = self.failures.saturating_add(1);
        let locked_now = !self.locked && self.failures >= policy.max_failures;
        if locked_now {
            self.locked = true;
        }
        let shift = self.failures.saturating_sub(1).min(32);
        let wait = policy
            .base_delay
            .saturating_mul(1u64 << shift)
            .min(policy.max_delay);
        self.not_before = now.saturating_add(wait);
        Failure {
            failures: self.failures,
            wait,
            locked_now,
        }
    }

    /// Records a successful login: the count starts again.
    pub fn succeed(&mut self) {
        *self = Self::default();
    }

    /// An administrator unlocks the account.
    pub fn unlock(&mut self) {
        *self = Self::default();
    }
}
