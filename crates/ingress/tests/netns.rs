//! Ingress behind its own packet filter (`deploy/nftables/ingress.nft`), in a network
//! namespace: institutions reach it over QUIC and get receipts, while every attempt by the
//! ingress host to open anything — a TCP connection, a UDP datagram to anywhere but the
//! vault's link port — is counted and dropped, and datagrams to the link pass (R-GW-2,
//! R-GW-4, R-GW-7). Needs root and nftables; skips with the reason otherwise (CI is root).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{root_test_unavailable, NetnsPair};

const RULES: &str = include_str!("../../../deploy/nftables/ingress.nft");

fn counter(pair: &NetnsPair, name: &str) -> u64 {
    pair.named_counter(&pair.receiver_ns, "inet", "enclave_ingress", name)
        .unwrap()
}

#[test]
fn ingress_behind_its_rule_set_receives_and_never_initiates() {
    if let Some(why) = root_test_unavailable(&["ip", "nft"]) {
        eprintln!("skipped: {why}");
        return;
    }
    let enclave = Path::new(env!("CARGO_BIN_EXE_ingress")).with_file_name("enclave");
    if !enclave.exists() {
        eprintln!(
            "skipped: {} not built (run the workspace's tests)",
            enclave.display()
        );
        return;
    }
    let pair = NetnsPair::create("ig").unwrap();
    pair.make_two_way().unwrap();
    // Institution = the pair's sender (192.0.2.1), ingress = its receiver (192.0.2.2); the
    // vault's link address is another address on that network (nothing answers there, and
    // nothing needs to: the link is one-way). Were it the institution's address, the input
    // chain would drop the institution as "traffic back from the vault" — as it should.
    let rules = RULES
        .replace("{ 198.51.100.0/24 }", "{ 192.0.2.1/32 }")
        .replace(
            "define VAULT_LINK = 192.0.2.10",
            "define VAULT_LINK = 192.0.2.3",
        );
    pair.load_rules(&pair.receiver_ns, &rules).unwrap();

    let fx = Fixture::new();
    let p = fx.path();
    let mut ingress = pair.command(&pair.receiver_ns, env!("CARGO_BIN_EXE_ingress"));
    ingress
        .args(fx.serve_args("192.0.2.2:4433"))
        .stdout(Stdio::null());
    let _server = Killed(ingress.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(500));

    let inst = INSTITUTIONS[0];
    let data = p.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..5 {
        write_file(&data.join(format!("m{i}.hl7")), 50_000 * (i + 1), i);
    }
    let out = pair
        .command(&pair.sender_ns, enclave.to_str().unwrap())
        .args([
            "submit",
            "--ingress",
            "192.0.2.2:4433",
            "--server-name",
            "ingress.test",
        ])
        .arg("--ca")
        .arg(p.join("ca/ca.crt.pem"))
        .arg("--cert")
        .arg(p.join(format!("clients/{inst}.crt.pem")))
        .arg("--key")
        .arg(p.join(format!("clients/{inst}.key.pem")))
        .arg("--vault")
        .arg(p.join("vault.pub"))
        .arg("--sign-with")
        .arg(p.join(format!("sign-{inst}.key")))
        .arg("--ingress-key")
        .arg(p.join("receipts.pub"))
        .args(["--type", "ssmix2", "--max-attempts", "2"])
        .arg("--state")
        .arg(p.join("state"))
        .arg(&data)
        .output()
        .unwrap();
    if !out.status.success() {
        let show = |ns: &str, args: &[&str]| {
            let o = Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        panic!(
            "submit through the rule set failed: {}{}\ningress rules:\n{}\nneighbours: {} | {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            show(&pair.receiver_ns, &["nft", "list", "ruleset"]),
            show(&pair.receiver_ns, &["ip", "neigh"]),
            show(&pair.sender_ns, &["ip", "neigh"]),
        );
    }
    assert_eq!(std::fs::read_dir(fx.outbox_incoming()).unwrap().count(), 5);
    assert!(counter(&pair, "quic_in") > 0);
    let dropped_before = counter(&pair, "output_drop");

    // What a compromised ingress would try: a TCP connection out, a datagram to another
    // port, a datagram to the link port (allowed: that is the diode sender's job).
    let sh = |script: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.receiver_ns,
                "timeout",
                "3",
                "bash",
                "-c",
                script,
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    let started = Instant::now();
    let tcp = sh("exec 3<>/dev/tcp/192.0.2.1/443");
    assert!(!tcp.success(), "a TCP connection left the ingress host");
    let _ = sh("echo probe > /dev/udp/192.0.2.1/53");
    let link_before = counter(&pair, "link_out");
    let link = sh("echo datagram > /dev/udp/192.0.2.3/47000");
    assert!(link.success(), "the link port must stay open");
    assert!(counter(&pair, "link_out") > link_before);
    let dropped = counter(&pair, "output_drop") - dropped_before;
    assert!(dropped >= 2, "only {dropped} outbound packets dropped");
    eprintln!(
        "institution pushed 5 envelopes through the rule set; outbound TCP and UDP attempts: {dropped} packets dropped in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Kills the server when the test ends, even by a panic.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
