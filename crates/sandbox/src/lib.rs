//! Self-sandboxing of the servers (issue #11), applied at start-up before any thread exists
//! so every later thread inherits it:
//!
//! - **Landlock** file rules: read-only beneath the paths the server was given to read
//!   (certificates, keys, registers), read-write beneath its state folders, nothing else —
//!   so a compromised parser cannot read another host secret or plant a file elsewhere; and
//!   TCP rules: no TCP bind and no TCP connect (except to the ports a policy names, e.g. the
//!   vault's PostgreSQL), which backs the host's packet filter from inside (R-GW-2..6).
//! - **seccomp** deny list: the system calls no server needs and an attacker wants (execve,
//!   ptrace, mount, bpf, module loading, kexec, keyrings …) return EPERM.
//!
//! Both are best effort on the running kernel: [`Applied`] says what was enforced, and the
//! servers print it with `--sandbox-report`. A kernel without Landlock is reported as such,
//! never as enforced.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use serde::Serialize;

/// What a server may touch once running.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Read beneath these (files or folders); missing ones are skipped and reported.
    pub read: Vec<PathBuf>,
    /// Read and write beneath these folders (made by the caller beforehand).
    pub write: Vec<PathBuf>,
    /// TCP ports it may connect to (none for the three servers; the vault's PostgreSQL).
    pub tcp_connect: Vec<u16>,
}

impl Policy {
    /// Adds the runtime's own needs: /proc and /sys (CPU count, cgroup limits), zone
    /// information, /dev/null and /dev/urandom, and the temporary folder read-write
    /// (SQLite's and Polars' scratch files).
    pub fn with_runtime_basics(mut self) -> Self {
        for p in [
            "/proc",
            "/sys",
            "/etc/localtime",
            "/usr/share/zoneinfo",
            "/dev/urandom",
        ] {
            self.read.push(p.into());
        }
        self.write.push("/dev/null".into());
        self.write.push(std::env::temp_dir());
        self
    }

    /// Adds `path`'s folder read-write (for a file the server creates, e.g. a log).
    pub fn write_beside(mut self, path: &Path) -> Self {
        self.write.push(parent_or_dot(path));
        self
    }
}

fn parent_or_dot(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What was enforced.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Applied {
    /// `fully enforced`, `partially enforced` (older kernel: some rights not handled) or
    /// `not enforced` (no Landlock).
    pub landlock: String,
    /// Paths given read access.
    pub read: Vec<String>,
    /// Paths given read-write access.
    pub write: Vec<String>,
    /// Paths of the policy that did not exist (no rule made for them).
    pub skipped: Vec<String>,
    /// TCP: what is left.
    pub tcp: String,
    /// Number of system calls refused by the seccomp filter, or why none are.
    pub seccomp: String,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sandbox: landlock {} ({} read, {} read-write paths{}), tcp: {}, seccomp: {}",
            self.landlock,
            self.read.len(),
            self.write.len(),
            if self.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} missing skipped", self.skipped.len())
            },
            self.tcp,
            self.seccomp
        )
    }
}

/// The sandbox could not be set up (as opposed to: the kernel lacks a feature).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Landlock refused the rules.
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The seccomp filter could not be built or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// System calls no server of the appliance makes, refused with EPERM.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("personality", libc::SYS_personality),
    ("acct", libc::SYS_acct),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("adjtimex", libc::SYS_adjtimex),
    ("quotactl", libc::SYS_quotactl),
];

/// Applies `policy` to this process. Call it while the process has one thread.
pub fn apply(policy: &Policy) -> Result<Applied, SandboxError> {
    // ABI 4 brings TCP rules; with best effort an older kernel enforces what it can and the
    // status says "partially".
    let abi = ABI::V4;
    let mut read = Vec::new();
    let mut write = Vec::new();
    let mut skipped = Vec::new();
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
        .create()?;
    for (paths, access, out) in [
        (&policy.read, AccessFs::from_read(abi), &mut read),
        (&policy.write, AccessFs::from_all(abi), &mut write),
    ] {
        for p in paths {
            match PathFd::new(p) {
                Ok(fd) => {
                    // A file gets only the rights that apply to files.
                    let access = if p.is_dir() {
                        access
                    } else {
                        access & AccessFs::from_file(abi)
                    };
                    ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
                    out.push(p.display().to_string());
                }
                Err(_) => skipped.push(p.display().to_string()),
            }
        }
    }
    for port in &policy.tcp_connect {
        ruleset = ruleset.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
    }
    let status = ruleset.restrict_self()?;
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not enforced (the kernel has no Landlock)",
    }
    .to_owned();
    let tcp = if status.ruleset == RulesetStatus::NotEnforced {
        "not restricted".to_owned()
    } else if policy.tcp_connect.is_empty() {
        "no bind, no connect".to_owned()
    } else {
        format!(
            "no bind; connect only to port {}",
            policy
                .tcp_connect
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let seccomp = match deny_syscalls() {
        Ok(n) => format!("{n} system calls refused"),
        Err(e) => return Err(SandboxError::Seccomp(e)),
    };
    Ok(Applied {
        landlock,
        read,
        write,
        skipped,
        tcp,
        seccomp,
    })
}

fn deny_syscalls() -> Result<usize, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())?;
    Ok(DENIED_SYSCALLS.len())
}

/// The servers' shared command-line switches.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SandboxArgs {
    /// Print what the sandbox enforces (Landlock paths, TCP, seccomp) to standard error at
    /// start; the systemd units pass it, so the journal records it
    #[arg(long)]
    pub sandbox_report: bool,
    /// Do not confine the process (no Landlock, no seccomp filter): for diagnosing a
    /// refused file access only, never in operation
    #[arg(long)]
    pub no_sandbox: bool,
}

impl SandboxArgs {
    /// Applies `policy` (with the runtime's basics) unless `--no-sandbox`, and prints the
    /// report as `PROGRAM: sandbox: …` when asked. Call it before any thread is started.
    pub fn confine(&self, program: &str, policy: Policy) -> Result<Option<Applied>, SandboxError> {
        if self.no_sandbox {
            if self.sandbox_report {
                eprintln!("{program}: sandbox: off (--no-sandbox)");
            }
            return Ok(None);
        }
        let applied = apply(&policy.with_runtime_basics())?;
        if self.sandbox_report {
            eprintln!("{program}: {applied}");
            for p in &applied.skipped {
                eprintln!("{program}: sandbox: {p} does not exist, no rule made for it");
            }
        }
        Ok(Some(applied))
    }
}

/// The TCP port of a `postgres://` URL (5432 when none is given), for the vault's policy;
/// `None` when the URL names a Unix socket folder (`?host=/path`) and no TCP is needed.
pub fn postgres_port(url: &str) -> Option<u16> {
    if url.contains("host=/") {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |x| x.1);
    match hostport.rsplit_once(':') {
        Some((_, port)) if !hostport.ends_with(']') => port.parse().ok(),
        _ => Some(5432),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_ports_are_read_from_urls() {
        assert_eq!(postgres_port("postgres://u@db.internal/meta"), Some(5432));
        assert_eq!(
            postgres_port("postgres://u@db.internal:6432/meta"),
            Some(6432)
        );
        assert_eq!(
            postgres_port("postgres://u:pw@10.0.0.5:5433/meta?sslmode=require"),
            Some(5433)
        );
        assert_eq!(
            postgres_port("postgres://postgres@localhost/db?host=/run/pg"),
            None
        );
    }
}
