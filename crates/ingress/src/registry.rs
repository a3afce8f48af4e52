//! The institutions ingress accepts: their envelope-signing keys and their limits.
//!
//! ```text
//! INSTITUTIONS/1312345678.pub          Ed25519 signing key (from `enclave keygen --kind signing`)
//! INSTITUTIONS/1312345678.limits.json  optional per-institution limits (intake_proto::Limits)
//! ```
//!
//! The key's owner id must equal the file name's stem, so a key copied under the wrong name
//! is refused at startup rather than silently trusted for another institution.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use envelope::VerifyingKey;
use intake_proto::Limits;

/// Registered institutions.
#[derive(Clone, Debug)]
pub struct Registry {
    keys: Vec<VerifyingKey>,
    limits: HashMap<String, Limits>,
}

impl Registry {
    /// Loads `dir`; institutions without a limits file get `default`.
    pub fn load(dir: &Path, default: Limits) -> Result<Self> {
        let mut keys = Vec::new();
        let mut limits = HashMap::new();
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("institution registry {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".pub") {
                let key = keystore::load_verifying_key(&path)?;
                if key.owner() != stem {
                    bail!(
                        "{}: key belongs to {:?}, but the file name says {stem:?}",
                        path.display(),
                        key.owner()
                    );
                }
                limits.entry(stem.to_owned()).or_insert(default);
                keys.push(key);
            }
        }
        for (id, l) in limits.iter_mut() {
            let path = dir.join(format!("{id}.limits.json"));
            if path.exists() {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                *l = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not valid limits", path.display()))?;
            }
        }
        if keys.is_empty() {
            bail!(
                "{}: no institution keys (*.pub); enrol an institution first (docs/operations.md)",
                dir.display()
            );
        }
        Ok(Self { keys, limits })
    }

    /// All registered signing keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The limits of `institution`, or `None` if it is not registered.
    pub fn limits(&self, institution: &str) -> Option<&Limits> {
        self.limits.get(institution)
    }

    /// Registered institution ids.
    pub fn institutions(&self) -> impl Iterator<Item = &str> {
        self.limits.keys().map(String::as_str)
    }
}
