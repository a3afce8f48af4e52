//! Alerts on abnormal operation (R-OP-4): written as JSON lines to `STORE/admin/alerts.jsonl`
//! (for the monitoring agent) and to standard error (the service's journal). The rules are
//! pure functions of what happened, so they are tested without a clock.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// When (RFC 3339 UTC).
    pub time: String,
    /// What kind: `login.locked`, `login.failures`, `break_glass.login`, `bulk.off_hours`,
    /// `audit.verify_failed`, `peer.refused`.
    pub kind: String,
    /// The account concerned, if any.
    pub user: String,
    /// A sentence for the operator.
    pub detail: String,
}

/// Where alerts go.
#[derive(Debug)]
pub struct Alerts {
    path: PathBuf,
}

impl Alerts {
    /// Alerts of the store at `store`.
    pub fn new(store: &Path) -> Self {
        Self {
            path: store.join("admin/alerts.jsonl"),
        }
    }

    /// The events file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raises `alert`: one line in the events file (fsynced) and one on standard error.
    pub fn raise(&self, alert: &Alert) {
        eprintln!(
            "vault: ALERT {} user={:?}: {}",
            alert.kind, alert.user, alert.detail
        );
        let line = serde_json::to_string(alert).unwrap_or_default();
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
        if let Err(e) = written {
            eprintln!("vault: cannot write {}: {e}", self.path.display());
        }
    }
}

/// Hours (JST, UTC+9) outside which touching many records is unusual.
pub const WORKING_HOURS_JST: std::ops::Range<u64> = 8..20;
/// Records in one command that count as bulk access.
pub const BULK_RECORDS: u64 = 10_000;
/// Refused logins, across all accounts, within [`FAILURE_WINDOW`] seconds that raise an alert.
pub const FAILURE_BURST: usize = 10;
/// See [`FAILURE_BURST`].
pub const FAILURE_WINDOW: u64 = 600;

/// Whether a command touching `records` at Unix time `now` is bulk access out of hours.
pub fn off_hours_bulk(now: u64, records: u64) -> bool {
    let hour_jst = (now / 3600 + 9) % 24;
    records >= BULK_RECORDS && !WORKING_HOURS_JST.contains(&hour_jst)
}

/// Whether the refused logins at `times` (Unix seconds, oldest first) make a burst at `now`.
pub fn failure_burst(times: &[u64], now: u64) -> bool {
    times
        .iter()
        .filter(|&&t| now.saturating_sub(t) < FAILURE_WINDOW)
        .count()
        >= FAILURE_BURST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_hours_is_judged_in_japan_time() {
        let midnight_utc = 1_795_737_600; // 2026-11-27T00:00:00Z = 09:00 JST
        assert!(!off_hours_bulk(midnight_utc, 50_000));
        assert!(
            off_hours_bulk(midnight_utc + 11 * 3600, 50_000),
            "20:00 JST"
        );
        assert!(off_hours_bulk(midnight_utc - 2 * 3600, 50_000), "07:00 JST");
        assert!(!off_hours_bulk(midnight_utc - 2 * 3600, 10), "few records");
    }

    #[test]
    fn a_burst_needs_ten_failures_in_ten_minutes() {
        let times: Vec<u64> = (0..10).map(|i| 1000 + i * 30).collect();
        assert!(failure_burst(&times, 1300));
        assert!(!failure_burst(&times[1..], 1300));
        assert!(
            !failure_burst(&times, 1000 + 600 + 1),
            "the first fell out of the window"
        );
    }
}
