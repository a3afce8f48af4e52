//! Several test hosts as network namespaces joined by veth cables, for the five-host
//! harness (issue #11): each host has its own interfaces, addresses, packet filter and
//! listening sockets, so the deployed nftables rule sets and the real binaries can be run
//! as they would be on separate machines. A one-way cable is built the way the appliance
//! wires its links (R-GW-4, R-GW-5): the receiving end has ARP off and IPv6 disabled and the
//! sender a static neighbour entry, so a correct receiver emits no frame at all; a watch
//! table on the *sending* end counts every frame that nevertheless arrives backwards, which
//! is independent of the rule sets under test.

use std::process::{Command, Output};

use crate::{ip, run};

/// Hosts (namespaces) named `{tag}-{host}-{pid}`; deleted on drop.
pub struct Hosts {
    names: Vec<(String, String)>,
    links: Vec<Cable>,
}

/// One cable between two hosts.
#[derive(Clone, Debug)]
pub struct Cable {
    /// Host at the sending end (the one-way link's sender, or either end).
    pub a: String,
    /// Device name on host `a`.
    pub a_dev: String,
    /// Address of `a` on this cable (without prefix).
    pub a_ip: String,
    /// Host at the receiving end.
    pub b: String,
    /// Device name on host `b`.
    pub b_dev: String,
    /// Address of `b` on this cable.
    pub b_ip: String,
    /// Whether this is a one-way link a → b.
    pub one_way: bool,
}

/// The table the harness installs on a one-way link's sending host to watch for frames
/// coming back.
pub const WATCH_TABLE: &str = "harness_watch";

impl Hosts {
    /// Creates one namespace per host, loopback up, IPv6 off.
    pub fn create(tag: &str, hosts: &[&str]) -> Result<Self, String> {
        let id = std::process::id() % 100_000;
        let mut me = Hosts {
            names: Vec::new(),
            links: Vec::new(),
        };
        for h in hosts {
            let ns = format!("{tag}-{h}-{id}");
            ip(&["netns", "add", &ns])?;
            me.names.push(((*h).to_owned(), ns.clone()));
            for k in ["all", "default"] {
                me.exec(
                    h,
                    &[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
                    ],
                )?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(me)
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> Result<&str, String> {
        self.names
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, ns)| ns.as_str())
            .ok_or_else(|| format!("no host {host}"))
    }

    /// Joins `a` and `b` with a veth cable: `a_dev`/`a_ip` on `a`, `b_dev`/`b_ip` on `b`
    /// (addresses with their prefix, e.g. `10.80.2.1/24`). A one-way cable is wired as
    /// described in the module comment, with a watch counter on `a`'s end.
    #[allow(clippy::too_many_arguments)]
    pub fn cable(
        &mut self,
        a: &str,
        a_dev: &str,
        a_ip: &str,
        b: &str,
        b_dev: &str,
        b_ip: &str,
        one_way: bool,
    ) -> Result<(), String> {
        let (ns_a, ns_b) = (self.ns(a)?.to_owned(), self.ns(b)?.to_owned());
        // Created under names unique on the host, then renamed inside their namespaces.
        let n = self.links.len();
        let id = std::process::id() % 100_000;
        let (tmp_a, tmp_b) = (format!("h{id}a{n}"), format!("h{id}b{n}"));
        ip(&[
            "link", "add", &tmp_a, "netns", &ns_a, "type", "veth", "peer", "name", &tmp_b, "netns",
            &ns_b,
        ])?;
        ip(&["-n", &ns_a, "link", "set", &tmp_a, "name", a_dev])?;
        ip(&["-n", &ns_b, "link", "set", &tmp_b, "name", b_dev])?;
        ip(&["-n", &ns_a, "addr", "add", a_ip, "dev", a_dev])?;
        ip(&["-n", &ns_b, "addr", "add", b_ip, "dev", b_dev])?;
        let bare = |s: &str| s.split('/').next().unwrap_or(s).to_owned();
        let cable = Cable {
            a: a.into(),
            a_dev: a_dev.into(),
            a_ip: bare(a_ip),
            b: b.into(),
            b_dev: b_dev.into(),
            b_ip: bare(b_ip),
            one_way,
        };
        if one_way {
            ip(&["-n", &ns_b, "link", "set", b_dev, "arp", "off"])?;
        }
        ip(&["-n", &ns_a, "link", "set", a_dev, "up"])?;
        ip(&["-n", &ns_b, "link", "set", b_dev, "up"])?;
        if one_way {
            let mac = self.mac(b, b_dev)?;
            ip(&[
                "-n",
                &ns_a,
                "neigh",
                "add",
                &cable.b_ip,
                "lladdr",
                &mac,
                "dev",
                a_dev,
                "nud",
                "permanent",
            ])?;
            // Datagram segmentation in software, as a NIC would (see NetnsPair::create).
            if crate::have("ethtool") {
                let _ = self.exec(a, &["ethtool", "-K", a_dev, "tx-udp-segmentation", "off"]);
            }
            self.load_rules(
                a,
                &format!(
                    "table netdev {WATCH_TABLE}_{a_dev} {{\n  chain back {{\n    type filter hook ingress device \"{a_dev}\" priority -500; policy accept;\n    counter\n  }}\n}}\n"
                ),
            )?;
        }
        self.links.push(cable);
        Ok(())
    }

    /// The cables made so far.
    pub fn cables(&self) -> &[Cable] {
        &self.links
    }

    fn mac(&self, host: &str, dev: &str) -> Result<String, String> {
        let out = ip(&["-n", self.ns(host)?, "-br", "link", "show", dev])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| format!("no MAC in {text:?}"))
    }

    /// Frames that arrived backwards at the sending end of the one-way cable whose sender
    /// device is `a_dev` on host `a` (the harness's own counter, not the rule set's).
    pub fn frames_back(&self, a: &str, a_dev: &str) -> Result<u64, String> {
        let out = self.exec(
            a,
            &[
                "nft",
                "list",
                "table",
                "netdev",
                &format!("{WATCH_TABLE}_{a_dev}"),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        packets_in(&text).ok_or_else(|| format!("no watch counter in {text:?}"))
    }

    /// A command run inside `host`.
    pub fn command(&self, host: &str, program: &str) -> Result<Command, String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(host)?, program]);
        Ok(c)
    }

    /// Runs `args` inside `host`; an error carries its standard error.
    pub fn exec(&self, host: &str, args: &[&str]) -> Result<Output, String> {
        run(Command::new("ip")
            .args(["netns", "exec", self.ns(host)?])
            .args(args))
    }

    /// Loads an nftables rule set into `host`.
    pub fn load_rules(&self, host: &str, rules: &str) -> Result<(), String> {
        crate::nft_load(&mut self.command(host, "nft")?, rules)
    }

    /// Packets counted by the named counter `name` of `table` on `host`.
    pub fn counter(
        &self,
        host: &str,
        family: &str,
        table: &str,
        name: &str,
    ) -> Result<u64, String> {
        let out = self.exec(host, &["nft", "list", "counter", family, table, name])?;
        let text = String::from_utf8_lossy(&out.stdout);
        packets_in(&text).ok_or_else(|| format!("no packet count in {text:?}"))
    }

    /// The listening (TCP) and bound unconnected (UDP) sockets on `host`, as `proto addr:port`
    /// lines from `ss`.
    pub fn listening(&self, host: &str) -> Result<Vec<String>, String> {
        let out = self.exec(host, &["ss", "-H", "-l", "-n", "-t", "-u"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(format!("{} {}", f.first()?, f.get(4)?))
            })
            .collect())
    }
}

/// The first `packets N` in nft output.
pub(crate) fn packets_in(text: &str) -> Option<u64> {
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|v| v.parse().ok())
}

/// Rewrites the `define NAME = …` lines of a rule set for a site; every name must be there.
pub fn with_defines(rules: &str, defines: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(rules.len());
    let mut seen = vec![false; defines.len()];
    for line in rules.lines() {
        let replaced = defines.iter().enumerate().find_map(|(i, (name, value))| {
            let head = format!("define {name} =");
            line.starts_with(&head).then(|| {
                seen[i] = true;
                format!("{head} {value}")
            })
        });
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    match defines.iter().zip(&seen).find(|(_, s)| !**s) {
        Some(((name, _), _)) => Err(format!("no `define {name}` in the rule set")),
        None => Ok(out),
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (_, ns) in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_are_rewritten_and_missing_ones_named() {
        let rules = "define A = 1\ndefine B = { 2 }\ntable inet t {}\n";
        assert_eq!(
            with_defines(rules, &[("B", "{ 3, 4 }")]).expect("B is there"),
            "define A = 1\ndefine B = { 3, 4 }\ntable inet t {}\n"
        );
        assert!(with_defines(rules, &[("C", "5")])
            .expect_err("C is missing")
            .contains("define C"));
    }

    #[test]
    fn packet_counts_are_read() {
        assert_eq!(packets_in("counter x { packets 12 bytes 900 }"), Some(12));
        assert_eq!(packets_in("counter x { }"), None);
    }
}
