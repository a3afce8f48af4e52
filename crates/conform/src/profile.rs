//! The host hardening profile (`firmware-config/profile.toml`) as types, parsed strictly:
//! an unknown key is an error, so a misspelt setting cannot silently check nothing.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The profile built into the checker.
pub const BUILT_IN: &str = include_str!("../../../firmware-config/profile.toml");

/// The whole profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version (1).
    pub version: u32,
    /// Firmware expectations.
    pub firmware: Firmware,
    /// Kernel settings: name → value, or alternatives joined by `|`.
    pub sysctl: BTreeMap<String, String>,
    /// Network interface settings.
    pub nic: Nic,
    /// Time synchronisation.
    pub time: Time,
    /// Services that must not be enabled.
    pub services: Services,
    /// Where packages may come from.
    pub patch: Patch,
    /// Per role: units, nftables tables, listening sockets.
    pub roles: BTreeMap<String, RoleProfile>,
}

/// Firmware expectations.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// UEFI Secure Boot must be on.
    pub secure_boot: bool,
    /// Whether setup mode (no platform key) is acceptable.
    pub setup_mode: bool,
    /// A TPM must be present.
    pub tpm: bool,
    /// Words that must not appear in the description of a boot entry in the boot order.
    pub forbidden_boot_entries: Vec<String>,
    /// Items only checkable in firmware setup, listed for the on-site check.
    #[serde(default)]
    pub manual: Vec<String>,
}

/// Network interface settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Whether wake-on-LAN may be on.
    pub wake_on_lan: bool,
}

/// Time synchronisation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    /// The only time servers the host may use.
    pub servers: Vec<String>,
}

/// Services.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// Unit names (without `.service`) that must not be enabled.
    pub disabled: Vec<String>,
}

/// Package sources.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// URI prefixes of the staging server.
    pub staging: Vec<String>,
}

/// What one role's host runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleProfile {
    /// Units that must be enabled.
    pub units: Vec<String>,
    /// nftables tables (`family name`) that must be loaded.
    pub tables: Vec<String>,
    /// Allowed listening sockets off loopback, as `proto port`.
    pub listen: Vec<String>,
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not valid TOML or not the profile's shape.
    #[error("the profile does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// A version this checker does not know.
    #[error("profile version {0} is not supported (this checker reads version 1)")]
    Version(u32),
}

impl Profile {
    /// Parses a profile.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let p: Profile = toml::from_str(text)?;
        if p.version != 1 {
            return Err(ProfileError::Version(p.version));
        }
        Ok(p)
    }
}
