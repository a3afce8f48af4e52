//! A throwaway PostgreSQL server for tests (issue #7: the store's PostgreSQL path is tested
//! against a real server, not a mock).
//!
//! Each [`PgServer`] has its own data and socket folders under the system temporary folder,
//! listens on a Unix socket only (no TCP port, so tests running beside it cannot collide
//! or reach each other's server), trusts local connections, and is stopped and deleted on
//! drop. PostgreSQL refuses to run as root, so as root it runs as the `postgres` account
//! that Debian's package creates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The folder holding `initdb`, `postgres` and `psql`, if PostgreSQL is installed.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if crate::have("initdb") && crate::have("postgres") {
        let out = Command::new("sh")
            .args([
                "-c",
                "dirname \"$(readlink -f \"$(command -v postgres)\")\"",
            ])
            .output()
            .ok()?;
        return Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ));
    }
    // Debian installs the server outside the PATH.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Why a PostgreSQL test cannot run here, or `None` if it can.
pub fn pg_unavailable() -> Option<String> {
    let Some(bin) = pg_bin_dir() else {
        return Some("PostgreSQL is not installed (run `make deps` as root)".into());
    };
    if !bin.join("psql").exists() && !crate::have("psql") {
        return Some("psql is not installed (run `make deps` as root)".into());
    }
    if nix::unistd::geteuid().is_root()
        && !matches!(nix::unistd::User::from_name("postgres"), Ok(Some(_)))
    {
        return Some(
            "running as root but there is no `postgres` account to run the server as".into(),
        );
    }
    None
}

/// A running server; stopped (fast shutdown) and its folders deleted on drop.
pub struct PgServer {
    root: PathBuf,
    bin: PathBuf,
    child: Child,
    databases: AtomicU32,
}

static SERVERS: AtomicU32 = AtomicU32::new(0);

impl PgServer {
    /// Creates a cluster and starts a server on it; waits until it accepts connections.
    pub fn start() -> Result<PgServer, String> {
        let bin = pg_bin_dir().ok_or("PostgreSQL is not installed")?;
        let root = std::env::temp_dir().join(format!(
            "enclave-pg-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sock")).map_err(|e| format!("{e}"))?;
        let as_root = nix::unistd::geteuid().is_root();
        if as_root {
            let user = nix::unistd::User::from_name("postgres")
                .map_err(|e| e.to_string())?
                .ok_or("no postgres account")?;
            for d in [root.clone(), root.join("sock")] {
                nix::unistd::chown(&d, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("chown {}: {e}", d.display()))?;
            }
        }
        let cmd = |program: &str| {
            let mut c = if as_root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            c.current_dir(&root);
            c
        };
        let out = cmd("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .arg("-D")
            .arg(root.join("data"))
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let log = std::fs::File::create(root.join("server.log")).map_err(|e| e.to_string())?;
        let child = cmd("postgres")
            .arg("-D")
            .arg(root.join("data"))
            .arg("-k")
            .arg(root.join("sock"))
            .args(["-c", "listen_addresses=", "-c", "max_connections=40"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let mut server = PgServer {
            root,
            bin,
            child,
            databases: AtomicU32::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.psql("postgres", "SELECT 1").is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(server.root.join("server.log")).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err("postgres did not accept connections within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster's data folder (where the rows end up on disk).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The socket folder.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = if self.bin.join("psql").exists() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Runs one SQL statement as the superuser in `database`; returns its unaligned output.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, String> {
        self.psql(database, sql)
    }

    /// Creates a new, empty database and returns its connection URL.
    pub fn create_database(&self, prefix: &str) -> Result<String, String> {
        let name = format!("{prefix}_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// The URL of `database` on this server (over its Unix socket).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}",
            path_for_url(&self.socket_dir())
        )
    }
}

fn path_for_url(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('%', "%25")
        .replace(' ', "%20")
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected, nothing waits.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
