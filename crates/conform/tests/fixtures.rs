//! `enclave conform`'s checks on crafted fixture trees (issue #11): for every role, a host
//! built to the profile (every check `ok`), a host with every setting wrong (every check
//! `deviation`), and an empty tree where nothing can be read (every check `unknown`, never
//! `ok`). Each check is asserted by id, so a check added later without fixtures fails here.

use std::path::Path;

use conform::{check, Profile, RootSource, Status};

const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    std::fs::write(p, bytes).expect("write");
}

fn efi(root: &Path, name: &str, data: &[u8]) {
    let mut b = vec![7, 0, 0, 0];
    b.extend_from_slice(data);
    write(
        root,
        &format!("sys/firmware/efi/efivars/{name}-{GLOBAL}"),
        &b,
    );
}

fn boot_entry(root: &Path, n: u16, desc: &str) {
    let mut d = vec![1, 0, 0, 0, 4, 0];
    d.extend(desc.encode_utf16().flat_map(u16::to_le_bytes));
    d.extend([0, 0, 0x7f, 0xff, 0x04, 0x00]);
    efi(root, &format!("Boot{n:04X}"), &d);
}

fn enable(root: &Path, unit: &str) {
    let dir = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&dir).expect("dir");
    std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), dir.join(unit))
        .expect("symlink");
}

/// A role's ruleset listing in `nft list ruleset` form, with the reverse counter at `n`.
fn ruleset(tables: &[String], n: u64) -> String {
    let mut s = String::new();
    for t in tables {
        s.push_str(&format!(
            "table {t} {{\n\tcounter reverse_out {{\n\t\tpackets {n} bytes {}\n\t}}\n\tcounter output_drop {{\n\t\tpackets 0 bytes 0\n\t}}\n}}\n",
            n * 60
        ));
    }
    s
}

/// A host as the profile wants it (`good`), or with every setting wrong.
fn host(root: &Path, p: &Profile, role: &str, good: bool) {
    let rp = &p.roles[role];
    efi(root, "SecureBoot", &[u8::from(good)]);
    efi(root, "SetupMode", &[u8::from(!good)]);
    efi(root, "BootOrder", &[1, 0, 2, 0]);
    boot_entry(root, 1, "debian");
    boot_entry(
        root,
        2,
        if good {
            "Hard Disk 2"
        } else {
            "UEFI PXEv4 (MAC:525400123456)"
        },
    );
    std::fs::create_dir_all(root.join("sys/class/tpm")).expect("dir");
    if good {
        std::fs::create_dir_all(root.join("sys/class/tpm/tpm0")).expect("dir");
    }
    for (name, want) in &p.sysctl {
        let first = want.split('|').next().expect("value");
        let v = if good {
            first.to_owned()
        } else {
            format!("{}9", first)
        };
        write(
            root,
            &format!("proc/sys/{}", name.replace('.', "/")),
            format!("{v}\n").as_bytes(),
        );
    }
    write(
        root,
        "sys/class/net/eno1/device/power/wakeup",
        if good { b"disabled\n" } else { b"enabled\n" },
    );
    std::fs::create_dir_all(root.join("sys/class/net/lo")).expect("lo");
    let server = if good {
        p.time.servers[0].clone()
    } else {
        "ntp.nict.jp".into()
    };
    write(
        root,
        "etc/systemd/timesyncd.conf",
        format!("[Time]\n# site time server\nNTP={server}\n").as_bytes(),
    );
    write(
        root,
        "cmd/timesync.out",
        if good { b"yes\n" } else { b"no\n" },
    );
    if good {
        for u in &rp.units {
            enable(root, u);
        }
    } else {
        enable(root, "cups.service");
    }
    let staging = &p.patch.staging[0];
    let apt = if good {
        format!("deb [signed-by=/etc/apt/keyrings/staging.gpg] {staging}debian bookworm main\n")
    } else {
        format!(
            "deb {staging}debian bookworm main\ndeb http://deb.debian.org/debian bookworm main\n"
        )
    };
    write(root, "etc/apt/sources.list", apt.as_bytes());
    write(
        root,
        "etc/apt/sources.list.d/extra.sources",
        format!("Types: deb\nURIs: {staging}security\nSuites: bookworm-security\n").as_bytes(),
    );
    let tables: Vec<String> = if good {
        rp.tables.clone()
    } else {
        rp.tables[1..].to_vec()
    };
    write(
        root,
        "cmd/nft-ruleset.out",
        ruleset(&tables, u64::from(!good) * 3).as_bytes(),
    );
    let mut ss = String::new();
    for l in &rp.listen {
        let (proto, port) = l.split_once(' ').expect("proto port");
        ss.push_str(&format!("{proto} UNCONN 0 0 192.0.2.10:{port} 0.0.0.0:*\n"));
    }
    ss.push_str("udp UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:*\n");
    if !good {
        ss.push_str("tcp LISTEN 0 128 0.0.0.0:8080 0.0.0.0:*\n");
    }
    write(root, "cmd/ss.out", ss.as_bytes());
}

fn profile() -> Profile {
    Profile::parse(conform::profile::BUILT_IN).expect("profile")
}

/// Every check id a role's report must have.
fn check_ids(p: &Profile) -> Vec<String> {
    let mut ids: Vec<String> = [
        "firmware.secure_boot",
        "firmware.setup_mode",
        "firmware.boot_entries",
        "firmware.tpm",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    ids.extend(p.sysctl.keys().map(|k| format!("sysctl.{k}")));
    ids.extend(
        [
            "nic.wake_on_lan",
            "time.servers",
            "time.synchronized",
            "services.disabled",
            "services.enabled",
            "patch.sources",
            "nftables.tables",
            "nftables.reverse_counters",
            "sockets.listening",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    ids
}

fn assert_all(role: &str, tree: &str, want: Status, good: Option<bool>) {
    let p = profile();
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(good) = good {
        host(dir.path(), &p, role, good);
    }
    let r = check(&p, role, &RootSource::fixture(dir.path())).expect("check");
    let ids: Vec<&str> = r.findings.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(ids, check_ids(&p), "the checks of {role}");
    for f in &r.findings {
        assert_eq!(f.status, want, "{role}, {tree} host: {f:?}");
        assert!(f.requirement.starts_with("R-"), "{f:?}");
        assert!(!f.detail.is_empty(), "{f:?}");
    }
    assert_eq!(r.count(want), r.findings.len());
}

#[test]
fn a_host_built_to_the_profile_is_ok_everywhere() {
    for role in ["ingress", "vault", "egress"] {
        assert_all(role, "conforming", Status::Ok, Some(true));
    }
}

#[test]
fn every_wrong_setting_is_a_deviation() {
    for role in ["ingress", "vault", "egress"] {
        assert_all(role, "misconfigured", Status::Deviation, Some(false));
    }
}

#[test]
fn what_cannot_be_read_is_unknown_never_ok() {
    for role in ["ingress", "vault", "egress"] {
        assert_all(role, "empty", Status::Unknown, None);
    }
}

#[test]
fn deviations_name_what_was_found() {
    let p = profile();
    let dir = tempfile::tempdir().expect("tempdir");
    host(dir.path(), &p, "vault", false);
    let r = check(&p, "vault", &RootSource::fixture(dir.path())).expect("check");
    let detail = |id: &str| {
        r.findings
            .iter()
            .find(|f| f.check == id)
            .map(|f| f.detail.clone())
            .expect(id)
    };
    assert!(detail("firmware.boot_entries").contains("PXE"));
    assert!(detail("time.servers").contains("ntp.nict.jp"));
    assert!(detail("services.disabled").contains("cups"));
    assert!(detail("patch.sources").contains("deb.debian.org"));
    assert!(detail("nftables.tables").contains("inet enclave_vault"));
    assert!(detail("nftables.reverse_counters").contains("reverse_out = 3"));
    assert!(detail("sockets.listening").contains("0.0.0.0:8080"));
    assert!(!detail("sockets.listening").contains("127.0.0.53"));
    let text = conform::render_text(&r);
    assert!(text.contains("DEVIATION"), "{text}");
    assert!(
        text.contains("boot order locked"),
        "the on-site items are listed: {text}"
    );
}

#[test]
fn an_unknown_role_is_refused_naming_the_roles() {
    let p = profile();
    let dir = tempfile::tempdir().expect("tempdir");
    let e = check(&p, "gateway", &RootSource::fixture(dir.path())).expect_err("unknown role");
    assert!(e.to_string().contains("egress, ingress, vault"), "{e}");
}

/// deploy/sysctl.d/90-enclave.conf sets what the profile asks for, and nothing else.
#[test]
fn the_shipped_sysctl_file_matches_the_profile() {
    let p = profile();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sysctl.d/90-enclave.conf"),
    )
    .expect("sysctl file");
    let mut set = std::collections::BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (k, v) = l.split_once('=').expect("key = value");
        set.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let keys: Vec<&String> = set.keys().collect();
    assert_eq!(keys, p.sysctl.keys().collect::<Vec<_>>());
    for (k, want) in &p.sysctl {
        assert!(
            want.split('|').any(|w| w == set[k]),
            "{k} = {} (profile: {want})",
            set[k]
        );
    }
}
