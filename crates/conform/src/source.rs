//! Where the checks read the host from: a root folder (`/` on the running host, a fixture
//! tree in tests) for /proc/sys, /sys, /etc, and the output of the few commands whose state
//! has no file (`nft list ruleset`, `ss`, `timedatectl`). Under a fixture root those outputs
//! are files `ROOT/cmd/NAME.out`; a missing one reads as "cannot be read", as does a command
//! that is not installed on the running host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A command whose output the checks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `nft list ruleset`.
    NftRuleset,
    /// `ss -H -l -n -t -u` (listening TCP, bound UDP).
    Sockets,
    /// `timedatectl show -p NTPSynchronized --value`.
    TimeSynchronized,
}

impl Probe {
    /// The file name under `ROOT/cmd/` that stands for this command in a fixture.
    pub fn fixture_name(self) -> &'static str {
        match self {
            Probe::NftRuleset => "nft-ruleset.out",
            Probe::Sockets => "ss.out",
            Probe::TimeSynchronized => "timesync.out",
        }
    }

    fn argv(self) -> &'static [&'static str] {
        match self {
            Probe::NftRuleset => &["nft", "list", "ruleset"],
            Probe::Sockets => &["ss", "-H", "-l", "-n", "-t", "-u"],
            Probe::TimeSynchronized => &["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
        }
    }
}

/// What the checks read.
pub trait Source {
    /// The bytes of `rel` (a path under the root, without leading `/`), or `None` if absent
    /// or unreadable.
    fn read(&self, rel: &str) -> Option<Vec<u8>>;
    /// The entries of folder `rel`, sorted, or `None` if it is absent.
    fn list(&self, rel: &str) -> Option<Vec<String>>;
    /// Whether `rel` exists (a dangling symlink counts: an enabled unit is a symlink).
    fn exists(&self, rel: &str) -> bool;
    /// A command's output, or `None` when it cannot be run or fails.
    fn probe(&self, probe: Probe) -> Option<String>;
}

/// A host under a root folder.
#[derive(Clone, Debug)]
pub struct RootSource {
    root: PathBuf,
    live: bool,
}

impl RootSource {
    /// The running host: files under `/`, commands run.
    pub fn live() -> Self {
        RootSource {
            root: PathBuf::from("/"),
            live: true,
        }
    }

    /// A fixture tree: files under `root`, command outputs from `root/cmd/*.out`.
    pub fn fixture(root: &Path) -> Self {
        RootSource {
            root: root.to_path_buf(),
            live: false,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

impl Source for RootSource {
    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(rel)).ok()
    }

    fn list(&self, rel: &str) -> Option<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Some(v)
    }

    fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.path(rel)).is_ok()
    }

    fn probe(&self, probe: Probe) -> Option<String> {
        if !self.live {
            let p = self.path("cmd").join(probe.fixture_name());
            return std::fs::read_to_string(p).ok();
        }
        let argv = probe.argv();
        let out = Command::new(argv[0]).args(&argv[1..]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
