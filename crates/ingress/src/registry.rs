//! The institutions ingress accepts: their envelope-signing keys and their limits.
//!
//! ```text
//! INSTITUTIONS/*.pub                   Ed25519 signing keys (`enclave keygen --kind signing`);
//!                                      the institution is each key's owner id
//! INSTITUTIONS/1312345678.limits.json  optional per-institution limits (intake_proto::Limits)
//! ```
//!
//! The same directory serves as the vault's `--trust` directory. A limits file for an
//! institution without a key is refused at startup, so a typo in its name is noticed.

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
        if !dir.is_dir() {
            bail!("institution registry {}: not a directory", dir.display());
        }
        // The institution is the key's owner, whatever the file is called; an institution
        // may have two keys during a rotation.
        let keys = keystore::load_trusted(&[dir.to_owned()])?;
        let mut limits = HashMap::new();
        for key in &keys {
            limits.entry(key.owner().to_owned()).or_insert(default);
        }
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".limits.json") {
                if !limits.contains_key(id) {
                    bail!(
                        "{}: limits for {id:?}, which has no signing key in this directory",
                        dir.join(&name).display()
                    );
                }
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
