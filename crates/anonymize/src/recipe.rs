//! Replayable recipes (R-AN-3; issue #12): everything needed to apply the same anonymization
//! to the next delivery of data — the settings with the chosen levels fixed, and the text of
//! every hierarchy they name — in one JSON document identified by its SHA-256. Applying a
//! recipe runs no search: each value maps to what it mapped to before, and a delivery on
//! which the model no longer holds at those levels is refused with the reason rather than
//! released with a weaker protection ([`crate::job`] does the refusing).
//!
//! Only full-domain results (optimal, heuristic) make recipes: Mondrian's cuts are medians of
//! the data it saw, so they would not mean the same on other data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hierarchy::Hierarchy;
use crate::job::{JobError, Mode, Settings};
use crate::person::PersonSettings;

/// Format tag of a recipe document.
pub const FORMAT: &str = "enclave-recipe/v1";
/// Domain separation of recipe ids.
const DOMAIN: &[u8] = b"enclave-recipe-v1\0";

/// What a recipe anonymizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its content, and with serde_json's
// arbitrary_precision (enabled in this workspace) buffered numbers no longer read as f64.
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Plan {
    /// One table, one row per record (`enclave anonymize`).
    Rows {
        /// Settings with `levels` fixed.
        settings: Box<Settings>,
    },
    /// A person table with an event table (`enclave anonymize-persons`); `levels` covers the
    /// person table's quasi-identifiers, then one level per event set.
    Persons {
        /// Settings with `model.levels` fixed.
        settings: Box<PersonSettings>,
    },
}

/// A recipe: the plan, the files it names, and where it came from (for the reader only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// [`FORMAT`].
    pub format: String,
    /// What to do.
    pub plan: Plan,
    /// Every hierarchy file the plan names, by that name, as text.
    pub files: BTreeMap<String, String>,
    /// The run it was derived from: input, rows, seconds (informational; part of the id).
    pub derived_from: serde_json::Value,
}

impl Recipe {
    /// A recipe for the run of `plan` whose result was `levels`. `files` must hold every file
    /// the plan names.
    pub fn new(
        mut plan: Plan,
        levels: Vec<usize>,
        files: BTreeMap<String, String>,
        derived_from: serde_json::Value,
    ) -> Result<Self, JobError> {
        let model = match &mut plan {
            Plan::Rows { settings } => settings,
            Plan::Persons { settings } => &mut settings.model,
        };
        if model.mode == Mode::Mondrian {
            return Err(JobError::Settings(
                "a Mondrian result cannot be a recipe: its cuts are medians of the data it saw; \
                 use --mode optimal or heuristic"
                    .into(),
            ));
        }
        model.levels = Some(levels);
        let r = Self {
            format: FORMAT.into(),
            plan,
            files,
            derived_from,
        };
        r.check()?;
        Ok(r)
    }

    /// Parses a recipe document and checks it is complete.
    pub fn parse(bytes: &[u8]) -> Result<Self, JobError> {
        let r: Self = serde_json::from_slice(bytes)
            .map_err(|e| JobError::Settings(format!("not a recipe: {e}")))?;
        if r.format != FORMAT {
            return Err(JobError::Settings(format!(
                "recipe format {:?}; this version reads {FORMAT:?}",
                r.format
            )));
        }
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), JobError> {
        let mut names: Vec<&str> = Vec::new();
        match &self.plan {
            Plan::Rows { settings } => {
                settings.check()?;
                names.extend(
                    settings
                        .quasi_identifiers
                        .iter()
                        .map(|q| q.hierarchy.as_str()),
                );
                names.extend(settings.sensitive_hierarchies.values().map(String::as_str));
            }
            Plan::Persons { settings } => {
                settings.check()?;
                let m = &settings.model;
                names.extend(m.quasi_identifiers.iter().map(|q| q.hierarchy.as_str()));
                names.extend(m.sensitive_hierarchies.values().map(String::as_str));
                names.extend(settings.event_sets.iter().map(|s| s.hierarchy.as_str()));
            }
        }
        if self.model().levels.is_none() {
            return Err(JobError::Settings("a recipe must fix the levels".into()));
        }
        if let Some(missing) = names.iter().find(|n| !self.files.contains_key(**n)) {
            return Err(JobError::Settings(format!(
                "the recipe names the file {missing} but does not hold it"
            )));
        }
        Ok(())
    }

    /// The settings of the privacy model.
    pub fn model(&self) -> &Settings {
        match &self.plan {
            Plan::Rows { settings } => settings,
            Plan::Persons { settings } => &settings.model,
        }
    }

    /// The recipe's id: SHA-256 over its canonical JSON, hex.
    pub fn id(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(DOMAIN);
        ctx.update(&serde_json::to_vec(self).unwrap_or_default());
        hex::encode(ctx.finish().as_ref())
    }

    /// The document (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// A file the plan names, for [`crate::job::hierarchies`].
    pub fn file(&self, name: &str) -> Result<Vec<u8>, String> {
        self.files
            .get(name)
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| format!("the recipe does not hold {name}"))
    }
}

/// Format tag of a recipe signature document.
pub const SIGNATURE_FORMAT: &str = "enclave-recipe-signature/v1";
/// Domain separation of what a recipe signature covers.
const SIGNATURE_DOMAIN: &[u8] = b"enclave-recipe-signature-v1\0";

/// A detached signature over a recipe's id (R-AN-3: the approved method version is the
/// recipe with this id, and the approver says so with their signing key). The id is a
/// SHA-256 of the whole recipe, so signing the id signs every setting and hierarchy in it.
/// Keys and the Ed25519 operation live with the caller (the `envelope` crate's keys); this
/// type only fixes what is signed and how the document reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The id of the recipe signed.
    pub recipe_id: String,
    /// Owner id of the signing key (who approved).
    pub signer: String,
    /// Key id (SHA-256 of the public key, hex) of the signing key.
    pub key_id: String,
    /// Ed25519 signature over [`Signature::message`] of `recipe_id`, hex.
    pub signature: String,
}

impl Signature {
    /// The bytes a signature covers for a recipe id.
    pub fn message(recipe_id: &str) -> Vec<u8> {
        let mut m = SIGNATURE_DOMAIN.to_vec();
        m.extend_from_slice(recipe_id.as_bytes());
        m
    }

    /// Parses a signature document.
    pub fn parse(bytes: &[u8]) -> Result<Self, JobError> {
        let s: Self = serde_json::from_slice(bytes)
            .map_err(|e| JobError::Settings(format!("not a recipe signature: {e}")))?;
        if s.format != SIGNATURE_FORMAT {
            return Err(JobError::Settings(format!(
                "signature format {:?}; this version reads {SIGNATURE_FORMAT:?}",
                s.format
            )));
        }
        Ok(s)
    }

    /// The document (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The signature bytes, if they are 64 bytes of hex.
    pub fn bytes(&self) -> Result<[u8; 64], JobError> {
        let raw = hex::decode(&self.signature)
            .map_err(|e| JobError::Settings(format!("recipe signature: {e}")))?;
        raw.try_into()
            .map_err(|_| JobError::Settings("recipe signature: not 64 bytes".into()))
    }
}

/// The applied value mapping, for operators (never released): one line per original value of
/// each quasi-identifier, `column;original;released`, at `levels`. `codes` adds the event
/// codes of a person-level run (column `KIND codes`) at their set's level.
pub fn mapping_csv(
    quasi: &[Hierarchy],
    levels: &[usize],
    codes: &[(String, &Hierarchy, usize)],
) -> String {
    let mut out = String::from("column;original;released\n");
    let quoted = |s: &str| {
        if s.contains([';', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    // Event codes at the top level are written `*` whatever the hierarchy's top says (as
    // the person-level writer does); quasi-identifiers as their hierarchy says.
    let mut line = |column: &str, h: &Hierarchy, level: usize, star_on_top: bool| {
        for leaf in 0..h.leaves() as u32 {
            let released = if star_on_top && level + 1 >= h.height() {
                "*"
            } else {
                h.value(level, h.code(leaf, level))
            };
            out.push_str(&format!(
                "{};{};{}\n",
                quoted(column),
                quoted(h.value(0, h.code(leaf, 0))),
                quoted(released)
            ));
        }
    };
    for (h, &level) in quasi.iter().zip(levels) {
        line(h.column(), h, level, false);
    }
    for (column, h, level) in codes {
        line(column, h, *level, true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Qi;

    fn settings(mode: &str) -> Settings {
        let text = format!(
            r#"{{"quasi_identifiers": [{{"column": "age", "hierarchy": "age.csv"}}],
                "k": 5, "suppression_limit": 0.05, "mode": "{mode}"}}"#
        );
        serde_json::from_str(&text).expect("settings")
    }

    fn files() -> BTreeMap<String, String> {
        BTreeMap::from([("age.csv".to_owned(), "1;*\n2;*\n".to_owned())])
    }

    #[test]
    fn a_recipe_round_trips_with_the_same_id_and_any_change_gives_another() {
        let plan = Plan::Rows {
            settings: Box::new(settings("optimal")),
        };
        let r =
            Recipe::new(plan, vec![1], files(), serde_json::json!({"rows": 2})).expect("recipe");
        let back = Recipe::parse(&r.to_json()).expect("parse");
        assert_eq!(back, r);
        assert_eq!(back.id(), r.id());
        assert_eq!(back.model().levels, Some(vec![1]));
        assert_eq!(back.file("age.csv").expect("file"), b"1;*\n2;*\n");
        let mut other = r.clone();
        other
            .files
            .insert("age.csv".into(), "1;*\n2;*\n3;*\n".into());
        assert_ne!(other.id(), r.id());
    }

    #[test]
    fn incomplete_or_unreplayable_recipes_are_refused() {
        let mondrian = Plan::Rows {
            settings: Box::new(settings("mondrian")),
        };
        assert!(Recipe::new(mondrian, vec![1], files(), serde_json::Value::Null).is_err());
        let wrong_count = Plan::Rows {
            settings: Box::new(settings("optimal")),
        };
        assert!(Recipe::new(wrong_count, vec![1, 0], files(), serde_json::Value::Null).is_err());
        let mut s = settings("optimal");
        s.quasi_identifiers.push(Qi {
            column: "sex".into(),
            hierarchy: "sex.csv".into(),
        });
        let missing = Recipe::new(
            Plan::Rows {
                settings: Box::new(s),
            },
            vec![0, 0],
            files(),
            0.into(),
        );
        assert!(missing.is_err_and(|e| e.to_string().contains("sex.csv")));
        let r = Recipe::new(
            Plan::Rows {
                settings: Box::new(settings("optimal")),
            },
            vec![0],
            files(),
            0.into(),
        )
        .expect("recipe");
        let text = String::from_utf8(r.to_json()).expect("utf8");
        let future = text.replace(FORMAT, "enclave-recipe/v9");
        assert!(Recipe::parse(future.as_bytes()).is_err());
        assert!(Recipe::parse(b"{}").is_err());
    }
}
