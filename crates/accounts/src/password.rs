//! Password rules (R-OP-1, R-OP-2) and storage. A password is stored as an argon2id hash,
//! together with a second argon2id hash of its *skeleton* (lower case, digits and symbols at
//! either end dropped, look-alike digits read as letters), so that "Summer2025!" can be refused
//! as a close variant of a previous "Summer2024!" without keeping anything reversible.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::AccountsError;

/// What a new password must satisfy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Fewest characters (R-OP-2: at least 10 for systems like this one).
    pub min_len: usize,
    /// Fewest character classes among lower case, upper case, digits and others.
    pub min_classes: usize,
    /// How many previous passwords may not be reused, nor closely varied.
    pub history: usize,
    /// argon2id memory in KiB.
    pub memory_kib: u32,
    /// argon2id passes.
    pub passes: u32,
}

impl Default for PasswordPolicy {
    /// 10 characters, 3 classes, the last 5 passwords; argon2id with 19 MiB and 2 passes
    /// (OWASP's recommended minimum).
    fn default() -> Self {
        Self {
            min_len: 10,
            min_classes: 3,
            history: 5,
            memory_kib: 19 * 1024,
            passes: 2,
        }
    }
}

/// Why a password is refused. Several can hold at once; all are reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Violation {
    /// Shorter than the policy allows.
    #[error("is shorter than {min} characters")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// Too few kinds of character.
    #[error("uses {have} of the 4 character classes (lower case, upper case, digits, others); at least {need} are needed")]
    TooFewClasses {
        /// Classes used.
        have: usize,
        /// Classes needed.
        need: usize,
    },
    /// Equal to, or contains, the user id (in any letter case).
    #[error("contains the user id")]
    ContainsUserId,
    /// One of the last passwords.
    #[error("was used before (one of the last {history})")]
    Reused {
        /// The policy's history length.
        history: usize,
    },
    /// A close variant of one of the last passwords.
    #[error("is a close variant of one of the last {history} passwords")]
    CloseVariant {
        /// The policy's history length.
        history: usize,
    },
    /// One of the last passwords written backwards.
    #[error("is one of the last {history} passwords reversed")]
    Reversed {
        /// The policy's history length.
        history: usize,
    },
    /// Built on a word every guessing list starts with (`Passw0rd!!`, `Welcome-2026`).
    #[error("is built on the common word {word:?}, which every guessing list tries first")]
    Common {
        /// The word.
        word: String,
    },
    /// Mostly one character repeated, or too few different characters (`aaaaaaaaaA1!`).
    #[error(
        "repeats characters: it needs at least {min_distinct} different ones, none making up half"
    )]
    Repetitive {
        /// Fewest different characters.
        min_distinct: usize,
    },
}

/// Words that guessing lists try first, as skeletons (see [`skeleton`]); a password whose
/// skeleton contains one is refused whatever is added around it.
const COMMON: &[&str] = &[
    "password",
    "passwort",
    "admin",
    "administrator",
    "qwerty",
    "asdfgh",
    "letmein",
    "welcome",
    "iloveyou",
    "changeme",
    "default",
    "secret",
    "login",
];

/// Fewest different characters a password must have.
const MIN_DISTINCT: usize = 6;

/// A password as kept: argon2id hashes (PHC strings) of it and of its skeleton.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPassword {
    /// argon2id of the password.
    pub hash: String,
    /// argon2id of its skeleton.
    pub skeleton: String,
}

impl PasswordPolicy {
    fn hasher(&self) -> Result<Argon2<'static>, AccountsError> {
        let params = Params::new(self.memory_kib, self.passes, 1, Some(32))
            .map_err(|e| AccountsError::Hash(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the rules that need no history: length, classes, the user id.
    pub fn check_shape(&self, user_id: &str, password: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        if password.chars().count() < self.min_len {
            out.push(Violation::TooShort { min: self.min_len });
        }
        let have = classes(password);
        if have < self.min_classes {
            out.push(Violation::TooFewClasses {
                have,
                need: self.min_classes,
            });
        }
        let (p, u) = (password.to_lowercase(), user_id.to_lowercase());
        let sk = skeleton(password);
        let user_sk = skeleton(user_id);
        if !u.is_empty() && (p.contains(&u) || (!user_sk.is_empty() && sk.contains(&user_sk))) {
            out.push(Violation::ContainsUserId);
        }
        if let Some(word) = COMMON.iter().find(|w| sk.contains(*w)) {
            out.push(Violation::Common {
                word: (*word).to_owned(),
            });
        }
        let chars: Vec<char> = p.chars().collect();
        let mut distinct = chars.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let most = distinct
            .iter()
            .map(|d| chars.iter().filter(|c| *c == d).count())
            .max()
            .unwrap_or(0);
        // Judged on passwords long enough: a short one is already refused for its length.
        let long_enough = chars.len() >= self.min_len;
        if long_enough && (distinct.len() < MIN_DISTINCT || most * 2 >= chars.len()) {
            out.push(Violation::Repetitive {
                min_distinct: MIN_DISTINCT,
            });
        }
        out
    }

    /// Checks every rule, the previous passwords (newest first) included, and returns the
    /// hashes to store when nothing is violated.
    pub fn accept(
        &self,
        user_id: &str,
        password: &str,
        previous: &[StoredPassword],
        rng: &dyn SecureRandom,
    ) -> Result<Result<StoredPassword, Vec<Violation>>, AccountsError> {
        let mut out = self.check_shape(user_id, password);
        let recent = &previous[..previous.len().min(self.history)];
        if recent.iter().any(|old| matches(&old.hash, password)) {
            out.push(Violation::Reused {
                history: self.history,
            });
        } else {
            let sk = skeleton(password);
            let reversed: String = password.chars().rev().collect();
            if recent.iter().any(|old| matches(&old.skeleton, &sk)) {
                out.push(Violation::CloseVariant {
                    history: self.history,
                });
            } else if recent.iter().any(|old| matches(&old.hash, &reversed)) {
                out.push(Violation::Reversed {
                    history: self.history,
                });
            }
        }
        if !out.is_empty() {
            return Ok(Err(out));
        }
        Ok(Ok(StoredPassword {
            hash: self.hash(password, rng)?,
            skeleton: self.hash(&skeleton(password), rng)?,
        }))
    }

    fn hash(&self, text: &str, rng: &dyn SecureRandom) -> Result<String, AccountsError> {
        let mut salt = [0u8; 16];
        rng.fill(&mut salt).map_err(|_| AccountsError::Random)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| AccountsError::Hash(e.to_string()))?;
        Ok(self
            .hasher()?
            .hash_password(text.as_bytes(), &salt)
            .map_err(|e| AccountsError::Hash(e.to_string()))?
            .to_string())
    }
}

impl StoredPassword {
    /// Whether `password` is this password (the cost parameters come from the stored hash).
    pub fn verify(&self, password: &str) -> bool {
        matches(&self.hash, password)
    }
}

fn matches(phc: &str, text: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(text.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// How many of lower case, upper case, digits and other characters `password` uses.
pub fn classes(password: &str) -> usize {
    let mut seen = [false; 4];
    for c in password.chars() {
        let k = if c.is_lowercase() {
            0
        } else if c.is_uppercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else {
            3
        };
        seen[k] = true;
    }
    seen.iter().filter(|&&s| s).count()
}

/// The part of a password that people keep when they "change" it: its letters in lower
/// case, with a look-alike digit or symbol next to a letter read as that letter (`P@ssw0rd`),
/// and everything else dropped — so the years and counters people bump (`Summer2025!` →
/// `Summer2026!`) fall away.
pub fn skeleton(password: &str) -> String {
    let chars: Vec<char> = password.to_lowercase().chars().collect();
    let mut out = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphabetic() {
            out.push(c);
            continue;
        }
        let before = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
        let after = chars.get(i + 1).copied();
        let letter_beside =
            before.is_some_and(char::is_alphabetic) || after.is_some_and(char::is_alphabetic);
        let in_number = c.is_ascii_digit()
            && (before.is_some_and(|b| b.is_ascii_digit())
                || after.is_some_and(|a| a.is_ascii_digit()));
        let looks_like = match c {
            '0' => Some('o'),
            '1' => Some('i'),
            '3' => Some('e'),
            '4' | '@' => Some('a'),
            // Only inside a word (`@dm!n`), not as the usual trailing or leading symbol.
            '!' | '|'
                if before.is_some_and(char::is_alphabetic)
                    && after.is_some_and(char::is_alphabetic) =>
            {
                Some('i')
            }
            '5' | '$' => Some('s'),
            '7' | '+' => Some('t'),
            '8' => Some('b'),
            '9' => Some('g'),
            _ => None,
        };
        if let (Some(l), true, false) = (looks_like, letter_beside, in_number) {
            out.push(l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_shapes_are_refused_with_their_reason() {
        let p = PasswordPolicy::default();
        let has = |user: &str, pw: &str, want: fn(&Violation) -> bool| {
            p.check_shape(user, pw).iter().any(want)
        };
        assert!(has("op1", "Passw0rd!!", |v| matches!(
            v,
            Violation::Common { .. }
        )));
        assert!(has("op1", "aaaaaaaaaA1!", |v| matches!(
            v,
            Violation::Repetitive { .. }
        )));
        assert!(has("admin", "@dm!n-Pass-2026", |v| *v
            == Violation::ContainsUserId));
        assert!(p.check_shape("op1", "16-Kawa#23757").is_empty());
        assert!(p.check_shape("rev2", "Hx7-qL2m#Vt9").is_empty());
    }

    #[test]
    fn a_previous_password_reversed_is_refused() {
        let p = PasswordPolicy {
            memory_kib: 1024,
            passes: 1,
            ..PasswordPolicy::default()
        };
        let rng = ring::rand::SystemRandom::new();
        let old = p
            .accept("op1", "Hx7-qL2m#Vt9", &[], &rng)
            .expect("hash")
            .expect("accepted");
        let got = p.accept("op1", "9tV#m2Lq-7xH", &[old], &rng).expect("hash");
        assert_eq!(got.err(), Some(vec![Violation::Reversed { history: 5 }]));
    }

    #[test]
    fn skeleton_strips_the_usual_changes() {
        assert_eq!(skeleton("Summer2025!"), "summer");
        assert_eq!(skeleton("P@ssw0rd-77"), "password");
        assert_eq!(skeleton("!!Tokyo#Tower99"), "tokyotower");
        assert_eq!(skeleton("Summer2026!go"), skeleton("5ummer2025?go!"));
        assert_eq!(skeleton("T@n@k@-2026"), "tanaka");
        assert_eq!(classes("abcDEF123!"), 4);
        assert_eq!(
            classes("さくらSAKURA"),
            2,
            "kana are neither lower nor upper case"
        );
    }
}
