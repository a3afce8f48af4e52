//! The operator socket: a Unix socket on the vault host only (never a network port), mode
//! 0660, and a peer-credential check (SO_PEERCRED) against the uids allowed to operate, so
//! that only the operators' own logins on the vault console or the admin network's jump
//! account reach the login prompt at all. One JSON request per line, one JSON response per
//! line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::service::{Request, Response, Service};

/// The longest request line accepted (a password change is well under 1 KiB).
const MAX_LINE: usize = 64 * 1024;

/// Serves the operator socket at `path` until `stop` completes.
pub async fn serve(
    path: &Path,
    allowed_uids: Vec<u32>,
    svc: Arc<Mutex<Service>>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        } else {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
    }
    let listener = listen_then_publish(path)?;
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => { eprintln!("vault: operator socket: {e}"); continue; }
            },
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        if !uid.is_some_and(|u| allowed_uids.contains(&u)) {
            if let Ok(mut s) = svc.lock() {
                s.peer_refused(uid);
            }
            drop(stream);
            continue;
        }
        let svc = Arc::clone(&svc);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, svc).await {
                eprintln!("vault: operator connection: {e:#}");
            }
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Binds and listens under a temporary name beside `path`, sets mode 0660, and only then
/// renames it to `path`. A client that sees the socket file can therefore always connect
/// (a bare bind makes the file appear before listen(), and a connect in that window is
/// refused), and the socket is never reachable with the umask's looser mode.
fn listen_then_publish(path: &Path) -> Result<UnixListener> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // A leftover from a crash of this same pid number; nothing else uses the name.
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
    let published = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = published {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("publishing {}", path.display()));
    }
    Ok(listener)
}

async fn connection(stream: tokio::net::UnixStream, svc: Arc<Mutex<Service>>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_LINE {
            Response::refused("request too long")
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => {
                    let svc = Arc::clone(&svc);
                    // Password hashing takes tens of milliseconds: off the async workers.
                    tokio::task::spawn_blocking(move || match svc.lock() {
                        Ok(mut s) => s.handle(req),
                        Err(_) => Response::refused("the service is broken (a request panicked)"),
                    })
                    .await?
                }
                Err(e) => Response::refused(format!("not a request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > MAX_LINE {
            return Ok(());
        }
    }
}

/// Sends one request to the socket at `path` and returns the response (the client side).
pub fn call(path: &Path, request: &Request) -> Result<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!("connecting to the vault's operator socket {} (is `vault serve --admin-socket` running?)", path.display())
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    let closed = || {
        anyhow::anyhow!(
            "the vault closed the connection (this account's uid is not allowed to operate)"
        )
    };
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    match stream.write_all(&line) {
        Err(e) if gone(&e) => return Err(closed()),
        other => other?,
    }
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Err(e) if gone(&e) => return Err(closed()),
        other => other?,
    };
    if answer.is_empty() {
        return Err(closed());
    }
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    }

    #[test]
    fn the_socket_appears_listening_with_its_final_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("admin.sock");
        let rt = runtime();
        let _guard = rt.enter();
        let _listener = listen_then_publish(&path).expect("listen");
        let meta = std::fs::symlink_metadata(&path).expect("published");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // Connectable as soon as it is visible (the kernel queues the connection).
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("admin.sock")]);
    }

    #[test]
    fn a_socket_in_a_missing_directory_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("no/such/admin.sock");
        let rt = runtime();
        let _guard = rt.enter();
        let e = listen_then_publish(&path).expect_err("no directory");
        assert!(format!("{e:#}").contains("no/such"), "{e:#}");
    }
}
