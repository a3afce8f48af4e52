//! The sandbox holds (issue #11): a child process (this test binary run again with
//! `SANDBOX_CHILD` set) applies a policy and then tries what a compromised server would —
//! read a file outside its paths, write outside its state folder, open a TCP connection,
//! bind a TCP port, run a program — and reports each outcome; the parent asserts each was
//! refused while the allowed reads and writes worked. On a kernel without Landlock the test
//! says so and checks only that the report does not claim enforcement.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

fn child() {
    let dir = PathBuf::from(std::env::var("SANDBOX_DIR").expect("dir"));
    let policy = sandbox::Policy {
        read: vec![dir.join("config")],
        write: vec![dir.join("state")],
        tcp_connect: Vec::new(),
    }
    .with_runtime_basics();
    let applied = sandbox::apply(&policy).expect("apply");
    let mut out = String::new();
    out.push_str(&format!("landlock={}\n", applied.landlock));
    let mut note = |what: &str, ok: bool| {
        out.push_str(&format!(
            "{what}={}\n",
            if ok { "allowed" } else { "refused" }
        ))
    };
    note(
        "read_config",
        std::fs::read(dir.join("config/settings")).is_ok(),
    );
    note("read_secret", std::fs::read(dir.join("secret/key")).is_ok());
    note(
        "write_state",
        std::fs::write(dir.join("state/new"), b"x").is_ok(),
    );
    note(
        "write_config",
        std::fs::write(dir.join("config/new"), b"x").is_ok(),
    );
    let port: u16 = std::env::var("SANDBOX_PORT")
        .expect("port")
        .parse()
        .expect("port");
    note(
        "tcp_connect",
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    note("tcp_bind", TcpListener::bind("127.0.0.1:0").is_ok());
    note("exec", Command::new("/bin/true").status().is_ok());
    println!("\n{out}{applied}");
}

#[test]
fn a_sandboxed_process_reads_and_writes_only_its_own_and_cannot_connect_or_exec() {
    if std::env::var_os("SANDBOX_CHILD").is_some() {
        child();
        return;
    }
    // Not under the temporary folder: the policy grants that one read-write.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    for (sub, file) in [("config", "settings"), ("secret", "key")] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        std::fs::File::create(dir.path().join(sub).join(file))
            .and_then(|mut f| f.write_all(b"value"))
            .expect("write");
    }
    std::fs::create_dir_all(dir.path().join("state")).expect("dir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "a_sandboxed_process_reads_and_writes_only_its_own_and_cannot_connect_or_exec",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SANDBOX_CHILD", "1")
        .env("TMPDIR", scratch.path())
        .env("SANDBOX_DIR", dir.path())
        .env("SANDBOX_PORT", port.to_string())
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not reported: {text}"))
            .to_owned()
    };
    eprintln!("{text}");
    if get("landlock").starts_with("not enforced") {
        eprintln!("skipped: this kernel has no Landlock; the report says so");
        return;
    }
    assert_eq!(get("read_config"), "allowed");
    assert_eq!(get("write_state"), "allowed");
    assert_eq!(
        get("read_secret"),
        "refused",
        "a file outside the policy was read"
    );
    assert_eq!(
        get("write_config"),
        "refused",
        "a read-only path was written"
    );
    assert_eq!(get("tcp_connect"), "refused", "a TCP connection was opened");
    assert_eq!(get("tcp_bind"), "refused", "a TCP port was bound");
    assert_eq!(get("exec"), "refused", "a program was run");
    assert!(text.contains("system calls refused"), "{text}");
}
