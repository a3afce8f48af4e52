//! Dev-only helpers shared by integration tests and benchmark programs: test hosts as network
//! namespaces joined by veth (with nftables loss, and counters proving that nothing travels
//! the wrong way), seeded test files, and a throwaway PostgreSQL server ([`pg`]).
//!
//! Everything here stays inside namespaces the caller creates ([`NetnsPair`] for one link,
//! [`Hosts`] for the five-host harness): addresses come from the documentation ranges
//! (TEST-NET-1..3, never routed), and the namespaces are deleted on drop.

#![forbid(unsafe_code)]

pub mod hosts;
pub mod pg;

pub use hosts::{with_defines, Hosts};

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rand::{RngCore, SeedableRng};

/// The seed for a property test: `PROPTEST_RNG_SEED` if set (to explore), else `default`
/// (so CI runs the same cases every time and a failure replays exactly).
pub fn proptest_seed(default: u64) -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Why a root-only test cannot run here, or `None` if it can.
pub fn root_test_unavailable(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces and nftables); CI runs as root".into());
    }
    for tool in tools {
        if !have(tool) {
            return Some(format!(
                "`{tool}` is not installed (run `make deps` as root)"
            ));
        }
    }
    None
}

/// Whether a command is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `nft` (already pointed at its namespace) with `-f -` and `rules` on standard input.
fn nft_load(nft: &mut Command, rules: &str) -> Result<(), String> {
    let mut child = nft
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<Output, String> {
    run(Command::new("ip").args(args))
}

/// Two namespaces joined by a veth pair: a sender host and a receiver host of a one-way link.
///
/// The receiver's interface has ARP switched off and IPv6 disabled, and the sender has a
/// static neighbour entry, so a correct receiver emits no frame at all; an nftables counter
/// on the receiver interface's egress hook counts every frame it nevertheless tries to send.
pub struct NetnsPair {
    /// Sender namespace.
    pub sender_ns: String,
    /// Receiver namespace.
    pub receiver_ns: String,
    /// Sender address.
    pub sender_ip: &'static str,
    /// Receiver address.
    pub receiver_ip: &'static str,
    receiver_if: String,
    sender_if: String,
}

impl NetnsPair {
    /// Creates the pair. `tag` keeps names unique per test (with the process id).
    pub fn create(tag: &str) -> Result<Self, String> {
        let id = std::process::id() % 100_000;
        let pair = NetnsPair {
            sender_ns: format!("{tag}s{id}"),
            receiver_ns: format!("{tag}r{id}"),
            sender_ip: "192.0.2.1",
            receiver_ip: "192.0.2.2",
            receiver_if: format!("{tag}r{id}"),
            sender_if: format!("{tag}s{id}"),
        };
        // Drop removes whatever was created if a step below fails.
        ip(&["netns", "add", &pair.sender_ns])?;
        ip(&["netns", "add", &pair.receiver_ns])?;
        let (s_if, r_if) = (pair.sender_if.clone(), pair.receiver_if.clone());
        ip(&[
            "link",
            "add",
            &s_if,
            "netns",
            &pair.sender_ns,
            "type",
            "veth",
            "peer",
            "name",
            &r_if,
            "netns",
            &pair.receiver_ns,
        ])?;
        for (ns, dev, addr) in [
            (&pair.sender_ns, &s_if, "192.0.2.1/24"),
            (&pair.receiver_ns, &r_if, "192.0.2.2/24"),
        ] {
            pair.exec_ok(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            pair.exec_ok(
                ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            )?;
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &pair.receiver_ns, "link", "set", &r_if, "arp", "off"])?;
        ip(&["-n", &pair.sender_ns, "link", "set", &s_if, "up"])?;
        ip(&["-n", &pair.receiver_ns, "link", "set", &r_if, "up"])?;
        let link = ip(&["-n", &pair.receiver_ns, "-br", "link", "show", &r_if])?;
        let text = String::from_utf8_lossy(&link.stdout);
        let mac = text
            .split_whitespace()
            .nth(2)
            .ok_or_else(|| format!("no MAC in {text:?}"))?
            .to_owned();
        ip(&[
            "-n",
            &pair.sender_ns,
            "neigh",
            "add",
            pair.receiver_ip,
            "lladdr",
            &mac,
            "dev",
            &s_if,
            "nud",
            "permanent",
        ])?;
        // A GSO super-packet would cross the veth whole, and nftables would drop all of its
        // (up to 44) datagrams at once: "1% loss" would mean bursts. A physical NIC segments
        // before the wire, so segment in software here too, and leave GRO off on the
        // receiving side, so that loss rules act on single datagrams as on a real link.
        if have("ethtool") {
            let _ = pair.exec_ok(
                &pair.sender_ns,
                &["ethtool", "-K", &s_if, "tx-udp-segmentation", "off"],
            );
        }
        pair.set_loss(0)?;
        Ok(pair)
    }

    /// Sets the MTU of both ends of the veth (1500 by default; 9000 for jumbo frames).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), String> {
        let mtu = mtu.to_string();
        for (ns, dev) in [
            (&self.sender_ns, &self.sender_if),
            (&self.receiver_ns, &self.receiver_if),
        ] {
            ip(&["-n", ns, "link", "set", dev, "mtu", &mtu])?;
        }
        Ok(())
    }

    /// Turns the pair into an ordinary two-way network (ARP on, no counting drop rules), for
    /// hosts that do answer — ingress answering institutions. Load the host's own rule set
    /// afterwards.
    pub fn make_two_way(&self) -> Result<(), String> {
        for table in [["netdev", "diode_reverse"], ["inet", "diode_test"]] {
            self.exec_ok(
                &self.receiver_ns,
                &["nft", "delete", "table", table[0], table[1]],
            )?;
        }
        ip(&[
            "-n",
            &self.receiver_ns,
            "link",
            "set",
            &self.receiver_if,
            "arp",
            "on",
        ])?;
        Ok(())
    }

    /// Loads an nftables rule set into namespace `ns` (`nft -f -`).
    pub fn load_rules(&self, ns: &str, rules: &str) -> Result<(), String> {
        nft_load(&mut self.command(ns, "nft"), rules)
    }

    /// Packets counted by the named nftables counter `name` of `table` in namespace `ns`.
    pub fn named_counter(
        &self,
        ns: &str,
        family: &str,
        table: &str,
        name: &str,
    ) -> Result<u64, String> {
        let out = self.exec_ok(ns, &["nft", "list", "counter", family, table, name])?;
        let text = String::from_utf8_lossy(&out.stdout);
        hosts::packets_in(&text).ok_or_else(|| format!("no packet count in {text:?}"))
    }

    /// A command run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    fn exec_ok(&self, ns: &str, args: &[&str]) -> Result<Output, String> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// (Re)loads the receiver's nftables rules: drop `permille`/1000 of arriving datagrams at
    /// random (`numgen random mod 1000 < N`, since `tc netem` is not available), and count and
    /// drop every frame the receiver tries to send.
    pub fn set_loss(&self, permille: u32) -> Result<(), String> {
        let loss = if permille > 0 {
            format!("numgen random mod 1000 < {permille} counter drop")
        } else {
            String::new()
        };
        self.set_input_rule(&loss)
    }

    /// Drops `burst` consecutive datagrams out of every `every` arriving at the receiver
    /// (`numgen inc`: deterministic bursts, where `set_loss` scatters).
    pub fn set_burst_loss(&self, burst: u32, every: u32) -> Result<(), String> {
        self.set_input_rule(&format!("numgen inc mod {every} < {burst} counter drop"))
    }

    fn set_input_rule(&self, loss: &str) -> Result<(), String> {
        let _ = self.exec_ok(
            &self.receiver_ns,
            &["nft", "delete", "table", "inet", "diode_test"],
        );
        let _ = self.exec_ok(
            &self.receiver_ns,
            &["nft", "delete", "table", "netdev", "diode_reverse"],
        );
        let rules = format!(
            "table netdev diode_reverse {{\n  chain egress {{\n    type filter hook egress device \"{dev}\" priority 0; policy accept;\n    counter drop\n  }}\n}}\n\
             table inet diode_test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {loss}\n  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {sender} ip protocol icmp counter drop\n    ip daddr {sender} counter drop\n  }}\n}}\n",
            dev = self.receiver_if,
            sender = self.sender_ip,
        );
        self.load_rules(&self.receiver_ns, &rules)
    }

    /// What the receiver host tried to send back, by the nftables counters.
    pub fn reverse_packets(&self) -> Result<ReversePackets, String> {
        let out = self.exec_ok(&self.receiver_ns, &["nft", "list", "ruleset"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut egress = None;
        let mut icmp = None;
        let mut other = None;
        let mut section = "";
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("chain ") {
                section = line.split_whitespace().nth(1).unwrap_or("");
            }
            if let Some(rest) = line.split("counter packets ").nth(1) {
                let n: u64 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                match (section, line.contains("icmp")) {
                    ("egress", _) => egress = Some(n),
                    ("output", true) => icmp = Some(n),
                    ("output", false) => other = Some(n),
                    _ => {}
                }
            }
        }
        Ok(ReversePackets {
            left_the_host: egress.ok_or("no egress counter")?,
            kernel_icmp_blocked: icmp.ok_or("no icmp counter")?,
            other_blocked: other.ok_or("no output counter")?,
        })
    }
}

/// Counters of the receiver host's reverse direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReversePackets {
    /// Frames that reached the receiver interface's egress hook: anything at all that would
    /// have left the host towards the sender. Must be 0, always.
    pub left_the_host: u64,
    /// ICMP the receiver host's *kernel* generated towards the sender (port unreachable while
    /// no receiver was listening), dropped by the output rule. Non-zero only during an
    /// outage of the receiver process; the deployed rule set drops these the same way.
    pub kernel_icmp_blocked: u64,
    /// Any other packet towards the sender, dropped at the output hook. Must be 0: the
    /// receiver process never transmits.
    pub other_blocked: u64,
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.sender_ns]);
        let _ = ip(&["netns", "del", &self.receiver_ns]);
    }
}

/// A test file that was written, with its SHA-256.
#[derive(Clone, Debug)]
pub struct TestFile {
    /// File name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Writes files of mixed sizes totalling about `total` bytes into `dir`, from `seed`:
/// one quarter of the bytes in one large file, a quarter in four, a quarter in 4 MiB
/// files, and the rest in small files of 1–200 KiB (envelopes are mostly small).
pub fn write_mixed_files(dir: &Path, total: u64, seed: u64) -> std::io::Result<Vec<TestFile>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sizes = vec![total / 4];
    sizes.extend(std::iter::repeat_n(total / 16, 4));
    sizes.extend(std::iter::repeat_n(
        4 << 20,
        ((total / 4) / (4 << 20)) as usize,
    ));
    let mut small_left = total.saturating_sub(sizes.iter().sum());
    while small_left > 0 {
        let s = (1024 + rng.next_u64() % (200 * 1024)).min(small_left);
        sizes.push(s);
        small_left -= s;
    }
    sizes.push(0);
    let mut files = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, size) in sizes.into_iter().enumerate() {
        let name = format!("obj-{i:05}.bin");
        let mut w = BufWriter::new(File::create(dir.join(&name))?);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            ctx.update(&buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        w.flush()?;
        files.push(TestFile {
            name,
            size,
            sha256: hex(ctx.finish().as_ref()),
        });
    }
    Ok(files)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Names of the crates in `package`'s normal (non-dev, non-build) dependency tree, read with
/// `cargo tree` offline from the lock file. Guard tests use it to keep network clients out
/// of the hosts that must not have them (R-GW-2, R-GW-6).
pub fn dependency_names(manifest_dir: &str, package: &str) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(manifest_dir)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    if names.len() <= 3 {
        return Err(format!("{package}: implausibly small tree: {names:?}"));
    }
    Ok(names)
}

/// Every file under `dir`, recursively, in path order (directories are entered, symlinks to
/// directories are not, so a link cannot make the walk loop). A missing `dir` gives none.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
