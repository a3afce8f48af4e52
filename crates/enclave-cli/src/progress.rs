//! Progress on long work: a `Read` wrapper that reports bytes done to standard error, at
//! most once a second, and only when standard error is a terminal (logs stay clean).

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Counts bytes read and prints `label: 42% (430 MiB of 1.0 GiB)` now and then.
pub struct Progress<R> {
    inner: R,
    label: &'static str,
    total: u64,
    done: u64,
    last: Option<Instant>,
    enabled: bool,
}

impl<R: Read> Progress<R> {
    /// Wraps `inner`; `total` is the expected byte count (0 when unknown: then only the
    /// bytes done are shown).
    pub fn new(inner: R, label: &'static str, total: u64) -> Self {
        Self {
            inner,
            label,
            total,
            done: 0,
            last: None,
            enabled: io::stderr().is_terminal(),
        }
    }

    /// Clears the progress line, if one was drawn.
    pub fn finish(&self) {
        if self.enabled && self.last.is_some() {
            eprint!("\r{:60}\r", "");
        }
    }

    fn report(&mut self) {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if !due {
            return;
        }
        self.last = Some(now);
        if self.total == 0 {
            eprint!("\r{}: {}   ", self.label, human_bytes(self.done));
        } else {
            let pct = (self.done as f64 * 100.0 / self.total as f64).min(100.0);
            eprint!(
                "\r{}: {pct:3.0}% ({} of {})   ",
                self.label,
                human_bytes(self.done),
                human_bytes(self.total)
            );
        }
        io::stderr().flush().ok();
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.enabled && (self.total == 0 || self.total > 8 << 20) {
            self.report();
        }
        Ok(n)
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
