//! Host conformance (issue #11): reads a host — the running one or a fixture tree — through a
//! [`Source`] and compares it with the hardening profile (`firmware-config/profile.toml`):
//! firmware, kernel settings, NICs, time, services, package sources, the packet filter and
//! the listening sockets. Each finding is `ok`, `deviation` (with what was found) or
//! `unknown` (with why it could not be read): a check that cannot see never says "ok".
//!
//! The checks are pure functions of what the source returns; `enclave conform` is the driver.

#![forbid(unsafe_code)]

pub mod profile;
pub mod source;

use std::collections::BTreeSet;

use serde::Serialize;

pub use profile::{Profile, ProfileError};
pub use source::{Probe, RootSource, Source};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As the profile says.
    Ok,
    /// Not as the profile says.
    Deviation,
    /// Could not be read here.
    Unknown,
}

/// One check's finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Check id, e.g. `sysctl.net.ipv4.ip_forward`.
    pub check: String,
    /// The requirement it serves (docs/traceability.md).
    pub requirement: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found, or why it could not be read.
    pub detail: String,
}

/// Everything one run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The role checked.
    pub role: String,
    /// Findings in check order.
    pub findings: Vec<Finding>,
    /// Items to check on site (not readable from the running system).
    pub manual: Vec<String>,
}

impl Report {
    /// Number of findings with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
}

/// A run that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// The role is not in the profile.
    #[error("role {0:?} is not in the profile (it has: {1})")]
    Role(String, String),
}

const EFI_VARS: &str = "sys/firmware/efi/efivars";
const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn finding(check: &str, requirement: &'static str, status: Status, detail: String) -> Finding {
    Finding {
        check: check.into(),
        requirement,
        status,
        detail,
    }
}

/// Runs every check of the profile for `role`.
pub fn check(profile: &Profile, role: &str, src: &dyn Source) -> Result<Report, ConformError> {
    let rp = profile.roles.get(role).ok_or_else(|| {
        ConformError::Role(
            role.into(),
            profile.roles.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    })?;
    let mut f = vec![
        secure_boot(profile, src),
        setup_mode(profile, src),
        boot_entries(profile, src),
        tpm(profile, src),
    ];
    f.extend(sysctls(profile, src));
    f.push(wake_on_lan(profile, src));
    f.push(time_servers(profile, src));
    f.push(time_synchronized(src));
    f.push(services_disabled(profile, src));
    f.push(units_enabled(&rp.units, src));
    f.push(package_sources(profile, src));
    let ruleset = src.probe(Probe::NftRuleset);
    f.push(nft_tables(role, &rp.tables, ruleset.as_deref()));
    f.push(nft_counters(role, ruleset.as_deref()));
    f.push(listening(
        role,
        &rp.listen,
        src.probe(Probe::Sockets).as_deref(),
    ));
    Ok(Report {
        role: role.into(),
        findings: f,
        manual: profile.firmware.manual.clone(),
    })
}

/// The data of an EFI variable (after its 4 attribute bytes): `None` without EFI variables
/// at all, `Some(None)` when EFI is there but the variable is not.
fn efi_var(src: &dyn Source, name: &str) -> Option<Option<Vec<u8>>> {
    src.list(EFI_VARS)?;
    Some(
        src.read(&format!("{EFI_VARS}/{name}-{EFI_GLOBAL}"))
            .filter(|b| b.len() > 4)
            .map(|b| b[4..].to_vec()),
    )
}

const NO_EFI: &str =
    "no EFI variables (legacy BIOS boot, or a VM without EFI): check in firmware setup";

fn efi_flag(
    src: &dyn Source,
    check: &str,
    var: &str,
    want: bool,
    requirement: &'static str,
) -> Finding {
    match efi_var(src, var) {
        None => finding(check, requirement, Status::Unknown, NO_EFI.into()),
        Some(None) => finding(
            check,
            requirement,
            Status::Deviation,
            format!("EFI variable {var} is missing: the firmware does not support it"),
        ),
        Some(Some(v)) => {
            let on = v.first() == Some(&1);
            let status = if on == want {
                Status::Ok
            } else {
                Status::Deviation
            };
            finding(
                check,
                requirement,
                status,
                format!("{var} = {} (want {})", u8::from(on), u8::from(want)),
            )
        }
    }
}

fn secure_boot(p: &Profile, src: &dyn Source) -> Finding {
    efi_flag(
        src,
        "firmware.secure_boot",
        "SecureBoot",
        p.firmware.secure_boot,
        "R-GW-1",
    )
}

fn setup_mode(p: &Profile, src: &dyn Source) -> Finding {
    efi_flag(
        src,
        "firmware.setup_mode",
        "SetupMode",
        p.firmware.setup_mode,
        "R-GW-1",
    )
}

/// The description of a `Boot####` load option: after u32 attributes and u16 path length,
/// a NUL-terminated UTF-16LE string.
fn boot_description(data: &[u8]) -> Option<String> {
    let units: Vec<u16> = data
        .get(6..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

fn boot_entries(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "firmware.boot_entries";
    let order = match efi_var(src, "BootOrder") {
        None => return finding(C, "R-GW-1", Status::Unknown, NO_EFI.into()),
        Some(None) => {
            return finding(
                C,
                "R-GW-1",
                Status::Unknown,
                "no BootOrder variable to read".into(),
            )
        }
        Some(Some(v)) => v,
    };
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for c in order.chunks_exact(2) {
        let n = u16::from_le_bytes([c[0], c[1]]);
        let name = format!("Boot{n:04X}");
        let Some(Some(data)) = efi_var(src, &name) else {
            bad.push(format!("{name} (in the boot order but unreadable)"));
            continue;
        };
        let desc = boot_description(&data).unwrap_or_default();
        let lower = desc.to_lowercase();
        if p.firmware
            .forbidden_boot_entries
            .iter()
            .any(|w| lower.contains(&w.to_lowercase()))
        {
            bad.push(format!("{name} {desc:?}"));
        }
        seen.push(format!("{name} {desc:?}"));
    }
    if bad.is_empty() {
        finding(C, "R-GW-1", Status::Ok, seen.join(", "))
    } else {
        finding(
            C,
            "R-GW-1",
            Status::Deviation,
            format!(
                "boot order has external or network entries: {}",
                bad.join(", ")
            ),
        )
    }
}

fn tpm(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "firmware.tpm";
    if !p.firmware.tpm {
        return finding(
            C,
            "R-OP-5",
            Status::Ok,
            "not required by the profile".into(),
        );
    }
    match src.list("sys/class/tpm") {
        Some(devs) if devs.iter().any(|d| d.starts_with("tpm")) => {
            finding(C, "R-OP-5", Status::Ok, devs.join(", "))
        }
        Some(_) => finding(
            C,
            "R-OP-5",
            Status::Deviation,
            "no TPM device: enable it in firmware setup".into(),
        ),
        None if src.list("sys/class").is_none() => finding(
            C,
            "R-OP-5",
            Status::Unknown,
            "/sys/class cannot be read".into(),
        ),
        None => finding(
            C,
            "R-OP-5",
            Status::Deviation,
            "no TPM class in /sys: no TPM or no driver".into(),
        ),
    }
}

/// Which requirement a kernel setting serves: IP ones keep the host off any path through it
/// (R-GW-6); the rest, BPF JIT hardening included, protect the memory keys live in (R-OP-5).
fn sysctl_requirement(name: &str) -> &'static str {
    if name.starts_with("net.ipv") {
        "R-GW-6"
    } else {
        "R-OP-5"
    }
}

fn sysctls(p: &Profile, src: &dyn Source) -> Vec<Finding> {
    p.sysctl
        .iter()
        .map(|(name, want)| {
            let c = format!("sysctl.{name}");
            let req = sysctl_requirement(name);
            let path = format!("proc/sys/{}", name.replace('.', "/"));
            match src.read(&path) {
                None => finding(&c, req, Status::Unknown, format!("/{path} cannot be read")),
                Some(v) => {
                    let got = String::from_utf8_lossy(&v).trim().to_owned();
                    let ok = want.split('|').any(|w| w.trim() == got);
                    let status = if ok { Status::Ok } else { Status::Deviation };
                    finding(&c, req, status, format!("{got} (want {want})"))
                }
            }
        })
        .collect()
}

fn wake_on_lan(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "nic.wake_on_lan";
    let Some(ifaces) = src.list("sys/class/net") else {
        return finding(
            C,
            "R-GW-1",
            Status::Unknown,
            "/sys/class/net cannot be read".into(),
        );
    };
    let mut on = Vec::new();
    let mut unreadable = Vec::new();
    let mut off = Vec::new();
    for i in ifaces
        .iter()
        .filter(|i| src.exists(&format!("sys/class/net/{i}/device")))
    {
        match src.read(&format!("sys/class/net/{i}/device/power/wakeup")) {
            Some(v) if String::from_utf8_lossy(&v).trim() == "enabled" => on.push(i.clone()),
            Some(_) => off.push(i.clone()),
            None => unreadable.push(i.clone()),
        }
    }
    if !p.nic.wake_on_lan && !on.is_empty() {
        finding(
            C,
            "R-GW-1",
            Status::Deviation,
            format!("wake-up enabled on {}", on.join(", ")),
        )
    } else if !unreadable.is_empty() || off.is_empty() && on.is_empty() {
        finding(
            C,
            "R-GW-1",
            Status::Unknown,
            if unreadable.is_empty() {
                "no physical interface visible".into()
            } else {
                format!("wake-up setting not readable for {}", unreadable.join(", "))
            },
        )
    } else {
        finding(
            C,
            "R-GW-1",
            Status::Ok,
            format!("off on {}", off.join(", ")),
        )
    }
}

/// Non-comment lines of the files a source has at `paths` and in `dirs` (with `ext`).
fn config_lines(src: &dyn Source, paths: &[&str], dirs: &[(&str, &str)]) -> Option<Vec<String>> {
    let mut files: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
    for (dir, ext) in dirs {
        for e in src.list(dir).unwrap_or_default() {
            if e.ends_with(ext) {
                files.push(format!("{dir}/{e}"));
            }
        }
    }
    let mut found = false;
    let mut lines = Vec::new();
    for f in files {
        if let Some(b) = src.read(&f) {
            found = true;
            lines.extend(
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
                    .map(str::to_owned),
            );
        }
    }
    found.then_some(lines)
}

fn time_servers(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "time.servers";
    let chrony = config_lines(
        src,
        &["etc/chrony/chrony.conf", "etc/chrony.conf"],
        &[
            ("etc/chrony/sources.d", ".sources"),
            ("etc/chrony/conf.d", ".conf"),
        ],
    );
    let timesyncd = config_lines(
        src,
        &["etc/systemd/timesyncd.conf"],
        &[("etc/systemd/timesyncd.conf.d", ".conf")],
    );
    let mut servers = BTreeSet::new();
    let mut default_pool = false;
    match (&chrony, &timesyncd) {
        (None, None) => {
            return finding(
                C,
                "R-OP-3",
                Status::Unknown,
                "neither chrony nor systemd-timesyncd is configured here".into(),
            )
        }
        (Some(lines), _) => {
            for l in lines {
                let mut w = l.split_whitespace();
                if matches!(w.next(), Some("server" | "pool" | "peer")) {
                    servers.extend(w.next().map(str::to_owned));
                }
            }
        }
        (None, Some(lines)) => {
            let mut ntp_set = false;
            for l in lines {
                if let Some(v) = l.strip_prefix("NTP=") {
                    ntp_set = true;
                    servers.extend(v.split_whitespace().map(str::to_owned));
                } else if let Some(v) = l.strip_prefix("FallbackNTP=") {
                    servers.extend(v.split_whitespace().map(str::to_owned));
                }
            }
            default_pool = !ntp_set;
        }
    }
    let foreign: Vec<&str> = servers
        .iter()
        .filter(|s| !p.time.servers.contains(s))
        .map(String::as_str)
        .collect();
    if default_pool || servers.is_empty() {
        finding(
            C,
            "R-OP-3",
            Status::Deviation,
            "no time server configured: the distribution's default pool would be used".into(),
        )
    } else if !foreign.is_empty() {
        finding(
            C,
            "R-OP-3",
            Status::Deviation,
            format!("time servers outside the profile: {}", foreign.join(", ")),
        )
    } else {
        finding(
            C,
            "R-OP-3",
            Status::Ok,
            servers.into_iter().collect::<Vec<_>>().join(", "),
        )
    }
}

fn time_synchronized(src: &dyn Source) -> Finding {
    const C: &str = "time.synchronized";
    match src.probe(Probe::TimeSynchronized).as_deref().map(str::trim) {
        Some("yes") => finding(C, "R-OP-3", Status::Ok, "synchronised".into()),
        Some(other) => finding(
            C,
            "R-OP-3",
            Status::Deviation,
            format!("not synchronised (timedatectl: {other:?})"),
        ),
        None => finding(
            C,
            "R-OP-3",
            Status::Unknown,
            "timedatectl cannot be run".into(),
        ),
    }
}

/// Units enabled on the host: symlinks in `etc/systemd/system/*.wants/`; `None` without
/// that folder.
fn enabled_units(src: &dyn Source) -> Option<BTreeSet<String>> {
    let dirs = src.list("etc/systemd/system")?;
    let mut units = BTreeSet::new();
    for d in dirs.iter().filter(|d| d.ends_with(".wants")) {
        units.extend(
            src.list(&format!("etc/systemd/system/{d}"))
                .unwrap_or_default(),
        );
    }
    Some(units)
}

fn services_disabled(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "services.disabled";
    let Some(enabled) = enabled_units(src) else {
        return finding(
            C,
            "R-GW-6",
            Status::Unknown,
            "/etc/systemd/system cannot be read".into(),
        );
    };
    let on: Vec<&str> = p
        .services
        .disabled
        .iter()
        .filter(|s| enabled.contains(&format!("{s}.service")))
        .map(String::as_str)
        .collect();
    if on.is_empty() {
        finding(
            C,
            "R-GW-6",
            Status::Ok,
            format!("none of {} enabled", p.services.disabled.len()),
        )
    } else {
        finding(
            C,
            "R-GW-6",
            Status::Deviation,
            format!("enabled: {}", on.join(", ")),
        )
    }
}

fn units_enabled(units: &[String], src: &dyn Source) -> Finding {
    const C: &str = "services.enabled";
    let Some(enabled) = enabled_units(src) else {
        return finding(
            C,
            "R-GW-1",
            Status::Unknown,
            "/etc/systemd/system cannot be read".into(),
        );
    };
    let missing: Vec<&str> = units
        .iter()
        .filter(|u| !enabled.contains(*u))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        finding(C, "R-GW-1", Status::Ok, units.join(", "))
    } else {
        finding(
            C,
            "R-GW-1",
            Status::Deviation,
            format!("not enabled: {}", missing.join(", ")),
        )
    }
}

fn package_sources(p: &Profile, src: &dyn Source) -> Finding {
    const C: &str = "patch.sources";
    let Some(lines) = config_lines(
        src,
        &["etc/apt/sources.list"],
        &[
            ("etc/apt/sources.list.d", ".list"),
            ("etc/apt/sources.list.d", ".sources"),
        ],
    ) else {
        return finding(
            C,
            "R-GW-9",
            Status::Unknown,
            "no APT sources to read".into(),
        );
    };
    let mut uris = Vec::new();
    for l in &lines {
        if let Some(v) = l.strip_prefix("URIs:") {
            uris.extend(v.split_whitespace().map(str::to_owned));
        } else if l.starts_with("deb ") || l.starts_with("deb-src ") {
            // `deb [opts] URI suite …`: the first word after the type and any [options].
            let rest = l.split_once(' ').map_or("", |x| x.1).trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']').map_or("", |x| x.1),
                None => rest,
            };
            uris.extend(rest.split_whitespace().next().map(str::to_owned));
        }
    }
    let foreign: Vec<&str> = uris
        .iter()
        .filter(|u| !p.patch.staging.iter().any(|s| u.starts_with(s.as_str())))
        .map(String::as_str)
        .collect();
    if foreign.is_empty() {
        finding(
            C,
            "R-GW-9",
            Status::Ok,
            format!("{} source(s), all from the staging server", uris.len()),
        )
    } else {
        finding(
            C,
            "R-GW-9",
            Status::Deviation,
            format!("sources outside the staging server: {}", foreign.join(", ")),
        )
    }
}

/// The requirement a role's sockets and packet filter serve: ingress receives only
/// (R-GW-2), egress sends only (R-GW-3), the vault has no other path (R-GW-6).
fn role_requirement(role: &str) -> &'static str {
    match role {
        "ingress" => "R-GW-2",
        "egress" => "R-GW-3",
        _ => "R-GW-6",
    }
}

/// The one-way link a role's reverse counters guard: into the vault (R-GW-4) or out of it
/// (R-GW-5).
fn link_requirement(role: &str) -> &'static str {
    if role == "egress" {
        "R-GW-5"
    } else {
        "R-GW-4"
    }
}

fn nft_tables(role: &str, want: &[String], ruleset: Option<&str>) -> Finding {
    const C: &str = "nftables.tables";
    let req = role_requirement(role);
    let Some(text) = ruleset else {
        return finding(
            C,
            req,
            Status::Unknown,
            "`nft list ruleset` cannot be run".into(),
        );
    };
    let loaded: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[0] == "table").then(|| format!("{} {}", w[1], w[2]))
        })
        .collect();
    let missing: Vec<&str> = want
        .iter()
        .filter(|t| !loaded.contains(*t))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        finding(C, req, Status::Ok, want.join(", "))
    } else {
        finding(
            C,
            req,
            Status::Deviation,
            format!("not loaded: {}", missing.join(", ")),
        )
    }
}

/// Named counters of a ruleset listing: `counter NAME {` followed by `packets N bytes M`.
pub fn named_counters(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for l in text.lines().map(str::trim) {
        if let Some(name) = l
            .strip_prefix("counter ")
            .and_then(|r| r.strip_suffix('{'))
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.contains(' '))
        {
            current = Some(name.to_owned());
        } else if let Some(name) = current.take() {
            let n = l
                .strip_prefix("packets ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
            if let Some(n) = n {
                out.push((name, n));
            }
        }
    }
    out
}

fn nft_counters(role: &str, ruleset: Option<&str>) -> Finding {
    const C: &str = "nftables.reverse_counters";
    let req = link_requirement(role);
    let Some(text) = ruleset else {
        return finding(
            C,
            req,
            Status::Unknown,
            "`nft list ruleset` cannot be run".into(),
        );
    };
    let watched: Vec<(String, u64)> = named_counters(text)
        .into_iter()
        .filter(|(n, _)| n.starts_with("reverse_") || n == "output_drop")
        .collect();
    if watched.is_empty() {
        return finding(
            C,
            req,
            Status::Deviation,
            "no reverse_* or output_drop counter loaded: the appliance's rule set is not in place"
                .into(),
        );
    }
    let hit: Vec<String> = watched
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} = {n}"))
        .collect();
    if hit.is_empty() {
        finding(
            C,
            req,
            Status::Ok,
            format!("{} counter(s) at 0", watched.len()),
        )
    } else {
        finding(
            C,
            req,
            Status::Deviation,
            format!(
                "something tried to go where nothing may: {}",
                hit.join(", ")
            ),
        )
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.starts_with("127.")
        || addr.starts_with("[::1]")
        || addr.starts_with("::1")
        || addr.contains("%lo")
}

fn listening(role: &str, allowed: &[String], ss: Option<&str>) -> Finding {
    const C: &str = "sockets.listening";
    let req = role_requirement(role);
    let Some(text) = ss else {
        return finding(C, req, Status::Unknown, "`ss` cannot be run".into());
    };
    let mut seen = Vec::new();
    let mut extra = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(proto), Some(local)) = (f.first(), f.get(4)) else {
            continue;
        };
        let Some((addr, port)) = local.rsplit_once(':') else {
            continue;
        };
        if is_loopback(addr) {
            continue;
        }
        let key = format!("{proto} {port}");
        if allowed.contains(&key) {
            seen.push(format!("{proto} {local}"));
        } else {
            extra.push(format!("{proto} {local}"));
        }
    }
    if extra.is_empty() {
        finding(
            C,
            req,
            Status::Ok,
            if seen.is_empty() {
                "nothing listening off loopback".into()
            } else {
                seen.join(", ")
            },
        )
    } else {
        finding(
            C,
            req,
            Status::Deviation,
            format!("not allowed for this role: {}", extra.join(", ")),
        )
    }
}

/// The report as text, a line per finding, then the manual items and a count.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    for f in &r.findings {
        let tag = match f.status {
            Status::Ok => "ok",
            Status::Deviation => "DEVIATION",
            Status::Unknown => "unknown",
        };
        s.push_str(&format!(
            "{tag:<10} {:<48} {:<7} {}\n",
            f.check, f.requirement, f.detail
        ));
    }
    for m in &r.manual {
        s.push_str(&format!("{:<10} {m}\n", "on site"));
    }
    s.push_str(&format!(
        "conform --role {}: {} ok, {} deviation(s), {} unknown, {} to check on site\n",
        r.role,
        r.count(Status::Ok),
        r.count(Status::Deviation),
        r.count(Status::Unknown),
        r.manual.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_counters_are_read_from_a_listing() {
        let text = "table inet t {\n\tcounter reverse_in {\n\t\tpackets 3 bytes 120\n\t}\n\tchain c {\n\t\tcounter packets 9 bytes 1 drop\n\t}\n}\n";
        assert_eq!(named_counters(text), vec![("reverse_in".to_owned(), 3)]);
    }

    #[test]
    fn kernel_settings_are_filed_under_their_requirement() {
        assert_eq!(sysctl_requirement("net.ipv4.ip_forward"), "R-GW-6");
        assert_eq!(sysctl_requirement("net.core.bpf_jit_harden"), "R-OP-5");
        assert_eq!(sysctl_requirement("kernel.kptr_restrict"), "R-OP-5");
    }

    #[test]
    fn a_boot_description_is_read() {
        let mut data = vec![1, 0, 0, 0, 4, 0];
        data.extend("UEFI USB".encode_utf16().flat_map(u16::to_le_bytes));
        data.extend([0, 0, 0x7f, 0xff]);
        assert_eq!(boot_description(&data).as_deref(), Some("UEFI USB"));
        assert_eq!(boot_description(&[1, 2]), None);
    }

    #[test]
    fn the_built_in_profile_parses_and_has_the_three_roles() {
        let p = Profile::parse(profile::BUILT_IN).expect("profile");
        let roles: Vec<&str> = p.roles.keys().map(String::as_str).collect();
        assert_eq!(roles, ["egress", "ingress", "vault"]);
        assert!(Profile::parse("version = 2\n").is_err());
    }
}
