//! Civil dates without a clock: the generator works on a fixed "as of" date so that output
//! never depends on when it runs. Day arithmetic uses the days-from-civil algorithm
//! (proleptic Gregorian), which is exact for every date the generator can produce.

use std::fmt;

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2025.
    pub y: i32,
    /// Month 1–12.
    pub m: u32,
    /// Day 1–31.
    pub d: u32,
}

impl Date {
    /// Builds a date; `None` when the day does not exist.
    pub fn new(y: i32, m: u32, d: u32) -> Option<Self> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        Some(Self { y, m, d })
    }

    /// Days since 1970-01-01.
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.y) - i64::from(self.m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
        Self { y, m, d }
    }

    /// This date moved by `n` days (negative goes back).
    pub fn add_days(self, n: i64) -> Self {
        Self::from_days(self.to_days() + n)
    }

    /// Whole years of age on `on` for someone born on `self`.
    pub fn age_on(self, on: Date) -> u32 {
        let mut age = on.y - self.y;
        if (on.m, on.d) < (self.m, self.d) {
            age -= 1;
        }
        age.max(0) as u32
    }

    /// `YYYYMMDD`, the HL7 v2 / UKE / SS-MIX2 form.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.y, self.m, self.d)
    }

    /// `YYYYMM`, the claim month (診療年月).
    pub fn year_month(self) -> String {
        format!("{:04}{:02}", self.y, self.m)
    }
}

impl fmt::Display for Date {
    /// ISO 8601 `YYYY-MM-DD`, the FHIR form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_days() {
        assert_eq!(Date::new(1970, 1, 1).map(Date::to_days), Some(0));
        assert_eq!(Date::new(2000, 3, 1).map(Date::to_days), Some(11_017));
        assert_eq!(Date::new(2023, 2, 29), None);
        assert!(Date::new(2024, 2, 29).is_some());
    }

    #[test]
    fn age() {
        let b = Date {
            y: 1980,
            m: 6,
            d: 15,
        };
        assert_eq!(
            b.age_on(Date {
                y: 2025,
                m: 6,
                d: 14
            }),
            44
        );
        assert_eq!(
            b.age_on(Date {
                y: 2025,
                m: 6,
                d: 15
            }),
            45
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(testkit::proptest_seed(0xda7e)),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn days_round_trip(days in -80_000i64..80_000) {
            let d = Date::from_days(days);
            prop_assert_eq!(d.to_days(), days);
            prop_assert!(Date::new(d.y, d.m, d.d).is_some());
        }
    }
}
