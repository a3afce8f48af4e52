//! Keyed pseudonyms for linking one person's records across institutions (R-IN-5).
//!
//! A pseudonym is HMAC-SHA256 (ring) under the vault's link key over *normalised*
//! identifiers, so the same person gets the same pseudonym whichever institution and format
//! the record came from, and nobody without the key can compute or reverse it. The
//! identifiers themselves never enter the analytic tables.
//!
//! Bases, in order of preference:
//! 1. **insurance**: 保険者番号 + 記号 + 番号 + birth date + sex. The 枝番 is left out: older
//!    cards and most exports lack it, and birth date and sex already separate the family
//!    members who share a card (same-sex twins on one card are the known collision).
//! 2. **local**: a local patient id already seen with a better basis at the same institution
//!    (an SS-MIX2 lab message carries only PID-3; the ADT message before it carried the card).
//! 3. **demographic** fallback: kana (else kanji) name + birth date + sex + postal code, for
//!    persons without insurance details (自費, 生活保護).
//! 4. **provisional**: only an institution-local id; merged into the real pseudonym as soon as
//!    that local id is seen with a better basis ([`Resolution::merged_from`]).
//!
//! [`Linker`] is a pure state machine over identities (no I/O, no clock); the vault persists
//! its map.

#![forbid(unsafe_code)]

pub mod eval;

use std::collections::HashMap;

use clinical::Identity;
use ring::hmac;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// A person's pseudonym: 128 bits of HMAC-SHA256, as 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub String);

impl std::fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a pseudonym was computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basis {
    /// Insurance card and birth date and sex.
    Insurance,
    /// A local id already linked at this institution.
    Local,
    /// Name, birth date, sex and postal code.
    Demographic,
    /// Only a local id; may be merged later.
    Provisional,
}

impl Basis {
    /// Name in storage and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Insurance => "insurance",
            Basis::Local => "local",
            Basis::Demographic => "demographic",
            Basis::Provisional => "provisional",
        }
    }
}

/// The link key. Built from 32 secret bytes, which are wiped when this is dropped.
pub struct LinkKey {
    key: hmac::Key,
    _bytes: Zeroizing<[u8; 32]>,
}

impl LinkKey {
    /// A key from 32 secret bytes (the vault's link key file, crate `keystore`).
    pub fn new(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        LinkKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes.as_slice()),
            _bytes: bytes,
        }
    }

    fn mac(&self, domain: &str, parts: &[&str]) -> Pseudonym {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"enclave-link-v1\0");
        ctx.update(domain.as_bytes());
        for p in parts {
            // Length-prefixed, so no two different field lists give the same input.
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p.as_bytes());
        }
        let tag = ctx.sign();
        Pseudonym(hex::encode(&tag.as_ref()[..16]))
    }
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// NFKC, then only letters and digits, upper case: `０６１２ー３４` and `0612-34` agree.
pub fn normalise_code(s: &str) -> String {
    s.nfkc()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// NFKC, hiragana to katakana, no spaces or middle dots: `やまだ　はなこ`, `ﾔﾏﾀﾞ ﾊﾅｺ` and
/// `ヤマダ・ハナコ` agree.
pub fn normalise_name(s: &str) -> String {
    s.nfkc()
        .filter(|c| !c.is_whitespace() && *c != '・' && *c != '･')
        .map(|c| match c {
            'ぁ'..='ゖ' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn field(v: &Option<String>, f: fn(&str) -> String) -> Option<String> {
    v.as_deref().map(f).filter(|s| !s.is_empty())
}

/// The insurance basis of `id`, when it has every part.
pub fn insurance_pseudonym(key: &LinkKey, id: &Identity) -> Option<Pseudonym> {
    let insurer = field(&id.insurer, normalise_code)?;
    let number = field(&id.number, normalise_code)?;
    let symbol = field(&id.symbol, normalise_code).unwrap_or_default();
    let birth = id.birth.as_deref()?;
    let sex = id.sex?.to_string();
    Some(key.mac("insurance", &[&insurer, &symbol, &number, birth, &sex]))
}

/// The demographic basis of `id`, when it has a name, birth date and sex.
pub fn demographic_pseudonym(key: &LinkKey, id: &Identity) -> Option<Pseudonym> {
    let name =
        field(&id.name_kana, normalise_name).or_else(|| field(&id.name_kanji, normalise_name))?;
    let birth = id.birth.as_deref()?;
    let sex = id.sex?.to_string();
    let postal = id.postal.clone().unwrap_or_default();
    Some(key.mac("demographic", &[&name, birth, &sex, &postal]))
}

/// The outcome of linking one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The person's pseudonym.
    pub pseudonym: Pseudonym,
    /// What it rests on.
    pub basis: Basis,
    /// A provisional pseudonym this local id had before, now to be rewritten to `pseudonym`.
    pub merged_from: Option<Pseudonym>,
}

/// Links identities to pseudonyms, remembering which local ids belong to whom at each
/// institution. Pure: the caller persists [`Linker::local_map`].
#[derive(Debug)]
pub struct Linker {
    key: LinkKey,
    /// Keyed tag of (institution, local id) → pseudonym: the map itself holds no local id,
    /// so persisting it stores no identifier.
    local: HashMap<Pseudonym, (Pseudonym, Basis)>,
}

impl Linker {
    /// A linker with an empty map.
    pub fn new(key: LinkKey) -> Self {
        Linker {
            key,
            local: HashMap::new(),
        }
    }

    /// The remembered local ids: keyed tag of (institution, local id) → (pseudonym, basis).
    pub fn local_map(&self) -> &HashMap<Pseudonym, (Pseudonym, Basis)> {
        &self.local
    }

    /// The keyed tag under which the local id `local_id` of `institution` is remembered.
    pub fn local_tag(&self, institution: &str, local_id: &str) -> Pseudonym {
        self.key
            .mac("local", &[institution, &normalise_code(local_id)])
    }

    /// Restores one remembered local id (after a restart), by its tag.
    pub fn remember(&mut self, tag: Pseudonym, p: Pseudonym, basis: Basis) {
        self.local.insert(tag, (p, basis));
    }

    /// A keyed tag over `parts` in `domain`, for storing equality without the values.
    pub fn tag(&self, domain: &str, parts: &[&str]) -> Pseudonym {
        self.key.mac(domain, parts)
    }

    /// Links `id`, sent by `institution`; `None` when nothing identifies the person at all.
    pub fn resolve(&mut self, institution: &str, id: &Identity) -> Option<Resolution> {
        let local_norm = id
            .local_id
            .as_deref()
            .map(normalise_code)
            .filter(|l| !l.is_empty());
        let local_key = local_norm
            .as_ref()
            .map(|l| self.key.mac("local", &[institution, l]));
        let known = local_key.as_ref().and_then(|k| self.local.get(k)).cloned();
        let strong = insurance_pseudonym(&self.key, id)
            .map(|p| (p, Basis::Insurance))
            .or_else(|| match &known {
                Some((p, b)) if *b != Basis::Provisional => Some((p.clone(), Basis::Local)),
                _ => None,
            })
            .or_else(|| demographic_pseudonym(&self.key, id).map(|p| (p, Basis::Demographic)));
        let (pseudonym, basis) = match (strong, &local_key) {
            (Some(s), _) => s,
            (None, Some(_)) => match (&known, &local_norm) {
                (Some(k), _) => k.clone(),
                (None, l) => (
                    self.key
                        .mac("provisional", &[institution, l.as_deref().unwrap_or("")]),
                    Basis::Provisional,
                ),
            },
            (None, None) => return None,
        };
        let mut merged_from = None;
        if let Some(k) = local_key {
            match known {
                Some((old, Basis::Provisional)) if old != pseudonym => merged_from = Some(old),
                _ => {}
            }
            // A better basis replaces a weaker one; a Local basis never overwrites its source.
            let stored_basis = if basis == Basis::Local {
                Basis::Insurance
            } else {
                basis
            };
            let replace = match self.local.get(&k) {
                None => true,
                Some((_, b)) => rank(stored_basis) >= rank(*b),
            };
            if replace && basis != Basis::Local {
                self.local.insert(k, (pseudonym.clone(), stored_basis));
            }
        }
        Some(Resolution {
            pseudonym,
            basis,
            merged_from,
        })
    }
}

fn rank(b: Basis) -> u8 {
    match b {
        Basis::Provisional => 0,
        Basis::Demographic => 1,
        Basis::Local | Basis::Insurance => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> LinkKey {
        LinkKey::new([7; 32])
    }

    fn card(local: &str) -> Identity {
        Identity {
            local_id: Some(local.into()),
            insurer: Some("06123456".into()),
            symbol: Some("ＡＢ１".into()),
            number: Some("123".into()),
            birth: Some("19600101".into()),
            sex: Some('F'),
            ..Identity::default()
        }
    }

    #[test]
    fn same_card_links_across_institutions_and_spellings() {
        let mut l = Linker::new(key());
        let a = l.resolve("A", &card("1")).expect("linked");
        let mut other = card("99");
        other.symbol = Some("AB1".into());
        let b = l.resolve("B", &other).expect("linked");
        assert_eq!(a.pseudonym, b.pseudonym);
        assert_eq!(a.basis, Basis::Insurance);
    }

    #[test]
    fn local_id_inherits_and_provisional_merges() {
        let mut l = Linker::new(key());
        let only_local = Identity {
            local_id: Some("5".into()),
            ..Identity::default()
        };
        let first = l.resolve("A", &only_local).expect("provisional");
        assert_eq!(first.basis, Basis::Provisional);
        let real = l.resolve("A", &card("5")).expect("linked");
        assert_eq!(real.merged_from, Some(first.pseudonym));
        let later = l.resolve("A", &only_local).expect("linked");
        assert_eq!(
            (later.pseudonym, later.basis),
            (real.pseudonym, Basis::Local)
        );
        // The same local id at another institution is another person.
        assert_eq!(
            l.resolve("B", &only_local).map(|r| r.basis),
            Some(Basis::Provisional)
        );
    }

    #[test]
    fn key_matters_and_nothing_identifies_nothing() {
        let a = insurance_pseudonym(&key(), &card("1"));
        let b = insurance_pseudonym(&LinkKey::new([8; 32]), &card("1"));
        assert_ne!(a, b);
        assert!(Linker::new(key())
            .resolve("A", &Identity::default())
            .is_none());
    }

    #[test]
    fn names_normalise() {
        assert_eq!(normalise_name("やまだ　はなこ"), normalise_name("ﾔﾏﾀﾞ ﾊﾅｺ"));
        assert_eq!(normalise_name("ヤマダ・ハナコ"), "ヤマダハナコ");
        assert_eq!(normalise_code("０６１２-３４"), "061234");
    }

    proptest! {
        #[test]
        fn any_difference_in_a_card_field_changes_the_pseudonym(n in 0u32..1_000_000, m in 0u32..1_000_000) {
            prop_assume!(n != m);
            let mut a = card("1");
            let mut b = card("1");
            a.number = Some(n.to_string());
            b.number = Some(m.to_string());
            prop_assert_ne!(insurance_pseudonym(&key(), &a), insurance_pseudonym(&key(), &b));
        }
    }
}
