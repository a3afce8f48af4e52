//! Calendar days as operators type them (`YYYY-MM-DD`) and as records carry them
//! (`YYYYMMDD`), parsed strictly with the `time` crate: the whole text must be the date (no
//! trailing characters), the day must exist in the calendar (no 2026-02-31) and the year must
//! lie in [`FIRST_YEAR`]..=[`LAST_YEAR`], so a typo such as `9999-12-31` is refused where it
//! is typed instead of failing deep inside a build (issue #31, item 8).

use time::{Date, Month};

/// The earliest year a register or record date may have.
pub const FIRST_YEAR: i32 = 1900;
/// The latest year a register or record date may have.
pub const LAST_YEAR: i32 = 2100;

/// Why a text is not a day.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DayError {
    /// Not `YYYY-MM-DD` or `YYYYMMDD`.
    #[error("{0:?} is not a date: write YYYY-MM-DD")]
    Shape(String),
    /// The shape is right but the calendar has no such day.
    #[error("{0:?} is not a day of the calendar")]
    Calendar(String),
    /// Outside the years the appliance accepts.
    #[error("{0:?} is outside {FIRST_YEAR}–{LAST_YEAR}")]
    Range(String),
}

/// Parses `YYYY-MM-DD` or `YYYYMMDD`.
pub fn parse(text: &str) -> Result<Date, DayError> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let parts = match b.len() {
        10 if b[4] == b'-' && b[7] == b'-' => (digits(0..4), digits(5..7), digits(8..10)),
        8 => (digits(0..4), digits(4..6), digits(6..8)),
        _ => (None, None, None),
    };
    let (Some(y), Some(m), Some(d)) = parts else {
        return Err(DayError::Shape(text.to_owned()));
    };
    let year = i32::try_from(y).map_err(|_| DayError::Shape(text.to_owned()))?;
    if !(FIRST_YEAR..=LAST_YEAR).contains(&year) {
        return Err(DayError::Range(text.to_owned()));
    }
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(|| DayError::Calendar(text.to_owned()))?;
    let day = u8::try_from(d).map_err(|_| DayError::Calendar(text.to_owned()))?;
    Date::from_calendar_date(year, month, day).map_err(|_| DayError::Calendar(text.to_owned()))
}

/// The day as `YYYY-MM-DD`.
pub fn format(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_calendar_days_in_range_are_days() {
        for ok in ["2026-02-28", "20240229", "1900-01-01", "2100-12-31"] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(format(parse("20260301").expect("day")), "2026-03-01");
        for (bad, why) in [
            ("2026-02-31", "calendar"),
            ("2025-02-29", "calendar"),
            ("2026-13-01", "calendar"),
            ("2026-00-10", "calendar"),
            ("20260101x", "shape"),
            ("2026-1-01", "shape"),
            ("x", "shape"),
            ("", "shape"),
            ("+026-01-01", "shape"),
            ("2026/01/01", "shape"),
            ("9999-12-31", "range"),
            ("1899-12-31", "range"),
        ] {
            let e = parse(bad).expect_err(bad);
            let kind = match e {
                DayError::Shape(_) => "shape",
                DayError::Calendar(_) => "calendar",
                DayError::Range(_) => "range",
            };
            assert_eq!(kind, why, "{bad}");
        }
    }
}
