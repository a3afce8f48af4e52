//! Cumulative-release checks (issue #12): a release is safe alone and unsafe beside another.
//! Before reviewers see a new release it is compared with every earlier one still standing
//! (not rejected, not cancelled):
//! - **differencing**: over the same quasi-identifiers, the two cohorts differ by fewer than
//!   k persons (one has 1 … k−1 persons the other lacks). Whoever holds both can subtract
//!   one table from the other and isolate those persons — the classic attack on repeated
//!   releases, and exactly what an opt-out between two deliveries produces;
//! - **overlap**: the same recipient already received persons of this cohort under other
//!   quasi-identifiers or another method, so the two extracts can be joined on their
//!   common persons' released values, narrowing their classes.
//!
//! Findings do not stop the build; they stop the approval until a reviewer records an
//! override with a reason ([`crate::workflow`]), which the vault's audit log keeps. Pure:
//! the vault hands in each release's members (sorted pseudonyms) and method facts.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// What kind of risk a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Two cohorts over the same quasi-identifiers differ by fewer than k persons.
    Differencing,
    /// One recipient holds overlapping extracts under different quasi-identifiers or methods.
    Overlap,
}

/// One finding against an earlier release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Kind.
    pub kind: FindingKind,
    /// The earlier release.
    pub earlier: String,
    /// Persons concerned (the difference, or the overlap).
    pub persons: u64,
    /// What a reviewer reads.
    pub detail: String,
}

/// What the check needs of one release.
pub struct Footprint<'a> {
    /// Release id.
    pub release: &'a str,
    /// Recipient id.
    pub recipient: &'a str,
    /// Method id.
    pub method: &'a str,
    /// Quasi-identifier columns of the method.
    pub quasi: &'a [String],
    /// The persons in the released dataset (pseudonyms), sorted and distinct.
    pub members: &'a [String],
}

/// (only in `a`, only in `b`, in both) of two sorted, distinct lists.
fn compare(a: &[String], b: &[String]) -> (u64, u64, u64) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            Ordering::Less => {
                only_a += 1;
                i += 1;
            }
            Ordering::Greater => {
                only_b += 1;
                j += 1;
            }
            Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    only_a += (a.len() - i) as u64;
    only_b += (b.len() - j) as u64;
    (only_a, only_b, both)
}

fn same_columns(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// The findings of `new` against each of `earlier`, with the new release's `k`.
pub fn check(new: &Footprint<'_>, earlier: &[Footprint<'_>], k: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in earlier {
        let (only_new, only_old, both) = compare(new.members, e.members);
        let same_qi = same_columns(new.quasi, e.quasi);
        if same_qi {
            // Named in the direction they differ: persons of the new release absent from the
            // earlier one, and persons of the earlier release absent from the new one.
            for (n, of, other) in [
                (only_new, new.release, e.release),
                (only_old, e.release, new.release),
            ] {
                if n > 0 && n < k {
                    out.push(Finding {
                        kind: FindingKind::Differencing,
                        earlier: e.release.to_owned(),
                        persons: n,
                        detail: format!(
                            "{n} person(s) of release {of} are not in release {other} (k = \
                             {k}) over the same quasi-identifiers ({}): whoever holds both can \
                             isolate them by difference",
                            new.quasi.join(", "),
                        ),
                    });
                }
            }
        }
        if new.recipient == e.recipient && both > 0 && (!same_qi || new.method != e.method) {
            out.push(Finding {
                kind: FindingKind::Overlap,
                earlier: e.release.to_owned(),
                persons: both,
                detail: format!(
                    "recipient {} already holds {both} of these persons from release {} under \
                     {}: the two extracts can be joined on those persons",
                    new.recipient,
                    e.release,
                    if same_qi {
                        "another method".to_owned()
                    } else {
                        format!("other quasi-identifiers ({})", e.quasi.join(", "))
                    }
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people(range: std::ops::Range<u32>) -> Vec<String> {
        let mut v: Vec<String> = range.map(|i| format!("p{i:05}")).collect();
        v.sort();
        v
    }

    fn qi(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn cohorts_differing_by_fewer_than_k_are_flagged_either_way() {
        let q = qi(&["age", "sex", "postal3"]);
        let all = people(0..100);
        let less3 = people(3..100);
        let fp = |release, members| Footprint {
            release,
            recipient: "lab-1",
            method: "m1",
            quasi: &q,
            members,
        };
        let f = check(&fp("R2", &less3), &[fp("R1", &all)], 5);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Differencing);
        assert_eq!(f[0].persons, 3);
        // R1 had three persons R2 lacks: said in that direction (issue #31, item 10).
        assert!(
            f[0].detail
                .starts_with("3 person(s) of release R1 are not in release R2"),
            "{}",
            f[0].detail
        );
        // Added persons count as much as removed ones.
        let f = check(&fp("R2", &all), &[fp("R1", &less3)], 5);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].detail
                .starts_with("3 person(s) of release R2 are not in release R1"),
            "{}",
            f[0].detail
        );
        // k or more apart, or identical: no differencing finding.
        let less5 = people(5..100);
        assert!(check(&fp("R2", &less5), &[fp("R1", &all)], 5).is_empty());
        assert!(check(&fp("R2", &all), &[fp("R1", &all)], 5).is_empty());
        // Other quasi-identifiers, another recipient: the tables cannot be subtracted.
        let other = qi(&["age", "sex"]);
        let e = Footprint {
            release: "R1",
            recipient: "lab-2",
            method: "m2",
            quasi: &other,
            members: &all,
        };
        assert!(check(&fp("R2", &less3), &[e], 5).is_empty());
    }

    #[test]
    fn one_recipient_with_overlapping_extracts_under_other_columns_is_flagged() {
        let q1 = qi(&["age", "sex", "postal3"]);
        let q2 = qi(&["age", "diagnosis"]);
        let a = people(0..60);
        let b = people(40..100);
        let new = Footprint {
            release: "R2",
            recipient: "lab-1",
            method: "m2",
            quasi: &q2,
            members: &b,
        };
        let old = Footprint {
            release: "R1",
            recipient: "lab-1",
            method: "m1",
            quasi: &q1,
            members: &a,
        };
        let f = check(&new, &[old], 5);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Overlap);
        assert_eq!(f[0].persons, 20);
        let disjoint = people(60..100);
        let new = Footprint {
            members: &disjoint,
            ..new
        };
        let old = Footprint {
            release: "R1",
            recipient: "lab-1",
            method: "m1",
            quasi: &q1,
            members: &a,
        };
        assert!(check(&new, &[old], 5).is_empty());
    }
}
