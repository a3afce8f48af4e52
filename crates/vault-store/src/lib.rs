//! The vault's store: what intake accepted, encrypted at rest (R-OP-5), and what it
//! quarantined, with the reason (R-IN-2).
//!
//! ```text
//! STORE/meta.sqlite                 envelopes, batches, link map, identities (sealed), merges
//!                                   (or a PostgreSQL database: see [`Database`])
//! STORE/store.id                    which metadata database belongs to this folder
//! STORE/records/batch-NNNNNNNN.pq.enc  one Parquet file per committed batch, AES-256-GCM
//! STORE/records/*.tmp               a batch being written (deleted at open)
//! STORE/quarantine/NAME             refused envelopes, still sealed, byte for byte
//! ```
//!
//! A batch is committed in this order: the sealed Parquet file is written under a temporary
//! name, synced and renamed; then one SQLite transaction records the batch (with its wrapped
//! key), its envelopes, identities and link-map changes (SQLite by default, PostgreSQL by
//! configuration; the same statements on both). A crash before the transaction
//! leaves a batch file no row names, which [`Store::open`] deletes; the envelopes are still
//! in the inbox and are taken again. A crash after it leaves envelopes the store knows,
//! which intake skips. So `kill -9` at any point loses and duplicates nothing.
//!
//! Analytic rows carry the keyed pseudonym, never an identifier (R-IN-5); identities are
//! sealed under a key derived from the master key and kept in their own table, only for
//! opt-out and deletion (R-IN-6).

#![forbid(unsafe_code)]

pub mod seal;
mod tables;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use polars::prelude::*;
use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

pub use seal::MasterKey;
pub use tables::{tables_digest, TableDump};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The metadata database.
    #[error("metadata database: {0}")]
    Db(#[from] sqlx::Error),
    /// Parquet encoding or decoding.
    #[error("parquet: {0}")]
    Parquet(#[from] PolarsError),
    /// Encryption.
    #[error("encryption: {0}")]
    Crypto(&'static str),
    /// The store contradicts itself.
    #[error("store is inconsistent: {0}")]
    Inconsistent(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// The metadata tables, with `{int}` and `{blob}` for the two dialects' type names.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS store_info (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS envelopes (
  id TEXT PRIMARY KEY,
  institution TEXT NOT NULL,
  content_type TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  bytes {int} NOT NULL,
  status TEXT NOT NULL,
  records {int} NOT NULL,
  batch {int},
  code TEXT,
  reason TEXT,
  doc_type TEXT
);
CREATE TABLE IF NOT EXISTS batches (
  seq {int} PRIMARY KEY,
  file TEXT NOT NULL,
  wrapped_key {blob} NOT NULL,
  records {int} NOT NULL,
  envelopes {int} NOT NULL,
  committed_ms {int} NOT NULL,
  took_ms {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS link_map (
  tag TEXT PRIMARY KEY,
  pseudonym TEXT NOT NULL,
  basis TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
  pseudonym TEXT NOT NULL,
  institution TEXT NOT NULL,
  tag TEXT NOT NULL,
  sealed {blob} NOT NULL,
  PRIMARY KEY (pseudonym, institution, tag)
);
CREATE TABLE IF NOT EXISTS merges (
  from_pseudonym TEXT PRIMARY KEY,
  to_pseudonym TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS optouts (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  at_ms {int} NOT NULL
);
";

/// Where the store keeps its metadata (R-OP-5 covers the record batches, which stay in the
/// store folder either way; the metadata holds ids, counts, wrapped keys and sealed
/// identities, nothing in clear).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Database {
    /// `STORE/meta.sqlite` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database, by URL (`postgres://user@host/db`; the password belongs in
    /// `~/.pgpass` or `PGPASSWORD`, not in the URL, which may be shown in errors redacted).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite => f.write_str("Sqlite"),
            Database::Postgres(url) => write!(f, "Postgres({})", redact(url)),
        }
    }
}

impl std::str::FromStr for Database {
    type Err = String;

    /// `sqlite` (or empty) for the default, or a `postgres://` / `postgresql://` URL.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s == "sqlite" {
            Ok(Database::Sqlite)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Database::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "database {:?}: expected `sqlite` or a postgres:// URL",
                redact(s)
            ))
        }
    }
}

/// A database URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn schema(self) -> String {
        let (int, blob) = match self {
            Dialect::Sqlite => ("INTEGER", "BLOB"),
            Dialect::Postgres => ("BIGINT", "BYTEA"),
        };
        SCHEMA.replace("{int}", int).replace("{blob}", blob)
    }

    /// The one statement the dialects spell differently: ids in a JSON array.
    fn known_among(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "SELECT id FROM envelopes WHERE id IN (SELECT value FROM json_each($1))"
            }
            Dialect::Postgres => {
                "SELECT id FROM envelopes WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))"
            }
        }
    }
}

/// One envelope as intake saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvelopeRow {
    /// Envelope id (hex), or `file:NAME` when not even the header could be read.
    pub id: String,
    /// The signing institution, or `?` when unknown.
    pub institution: String,
    /// Declared content type.
    pub content_type: String,
    /// SHA-256 of the plaintext as the signed header states it.
    pub sha256: String,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Records taken (0 when quarantined).
    pub records: u64,
    /// Message or document type.
    pub doc_type: String,
}

/// One analytic row: a record under a pseudonym.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    /// The envelope it came from.
    pub envelope: String,
    /// Sending institution.
    pub institution: String,
    /// Keyed pseudonym of the person (or `unlinked`).
    pub pseudonym: String,
    /// Record kind.
    pub kind: &'static str,
    /// Date `YYYYMMDD`.
    pub date: Option<String>,
    /// Code.
    pub code: Option<String>,
    /// Code system.
    pub system: Option<String>,
    /// Text.
    pub display: Option<String>,
    /// Value.
    pub value: Option<String>,
    /// Unit.
    pub unit: Option<String>,
}

/// Everything one commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Accepted envelopes.
    pub envelopes: Vec<EnvelopeRow>,
    /// Their records.
    pub rows: Vec<RecordRow>,
    /// Identities: (pseudonym, institution, keyed tag of the identity, its JSON).
    pub identities: Vec<(String, String, String, Vec<u8>)>,
    /// Link-map entries: (tag, pseudonym, basis).
    pub links: Vec<(String, String, String)>,
    /// Provisional pseudonyms merged into real ones: (from, to).
    pub merges: Vec<(String, String)>,
}

/// A refused envelope.
#[derive(Clone, Debug, Serialize)]
pub struct Quarantined {
    /// Envelope row (records 0).
    pub envelope: EnvelopeRow,
    /// Stable refusal code.
    pub code: String,
    /// Reason.
    pub reason: String,
}

/// Counts for `vault intake status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// (institution, content type, status, envelopes, records).
    pub by_institution: Vec<(String, String, String, i64, i64)>,
    /// Quarantined envelopes: (id, institution, code, reason).
    pub quarantine: Vec<(String, String, String, String)>,
    /// Batches committed.
    pub batches: i64,
    /// Records stored.
    pub records: i64,
    /// Records per second over the batches' own processing time.
    pub records_per_s: f64,
    /// Persons (distinct pseudonyms in the link map).
    pub persons: i64,
}

/// The store.
pub struct Store {
    dir: PathBuf,
    pool: AnyPool,
    dialect: Dialect,
    master: MasterKey,
    /// The writer's hold on the store (`None` for a reader): an exclusive lock on
    /// `STORE/writer.lock` and, with PostgreSQL, a session advisory lock.
    _writer: Option<WriterLock>,
    /// Commits and opt-out deletions of one writer never interleave: a commit that began
    /// before an opt-out could otherwise store the person's records after the deletion.
    gate: tokio::sync::Mutex<()>,
    /// Records left out of commits because their person opted out (R-IN-6).
    optout_dropped: std::sync::atomic::AtomicU64,
}

/// What [`Store::forget`] removed for one opt-out (the deletion record, R-OP-6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// The pseudonyms whose data was removed (the person's, and provisional ones merged
    /// into it).
    pub pseudonyms: Vec<String>,
    /// Records deleted from the batches.
    pub records: u64,
    /// Sealed identity rows deleted.
    pub identities: u64,
    /// Batch files rewritten.
    pub batches: u64,
}

/// Held for as long as a writer has the store open.
struct WriterLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    /// In a mutex only so that the store can be shared between threads (the connection is
    /// never used again; holding it holds the lock).
    _session: Option<std::sync::Mutex<sqlx::pool::PoolConnection<sqlx::Any>>>,
}

/// How long a writer waits for the previous one to let go (a killed writer's PostgreSQL
/// session ends only once the server has finished what that writer had sent).
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The advisory lock key of a store's database (one store per database): one writer.
const ADVISORY_KEY: i64 = 0x656e_636c_6176_6531;

/// The advisory lock key commits hold shared and recovery takes exclusive.
const COMMIT_KEY: i64 = 0x656e_636c_6176_6532;

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it, fsynced,
/// renamed into place, then the folder fsynced.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))?;
    match path.parent() {
        // A bare file name is in the working folder.
        Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
        Some(p) => sync_dir(p)?,
        None => {}
    }
    Ok(())
}

/// Rows per multi-row INSERT: well under SQLite's 32,766 and PostgreSQL's 65,535 bound
/// parameters at eight columns.
const ROWS_PER_INSERT: usize = 500;

/// `head (…), (…) tail` for `rows` rows of `width` parameters each, plus `constant` (SQL
/// text, may be empty) as the last column of every row. Parameters are `$n` for PostgreSQL
/// and plain `?` for SQLite, whose lookup of a named parameter is linear in the statement's
/// parameter count (quadratic over a multi-row statement).
fn values_sql(
    dialect: Dialect,
    head: &str,
    width: usize,
    constant: &str,
    rows: usize,
    tail: &str,
) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            sql.push_str(if c == 0 { "" } else { ", " });
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => {
                    let _ = write!(sql, "${}", r * width + c + 1);
                }
            }
        }
        if !constant.is_empty() {
            let _ = write!(sql, ", {constant}");
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// The last element for every key, in order of first appearance of those last elements
/// (an upsert statement may touch each key only once).
fn last_per_key<'t, T>(items: &'t [T], key: impl Fn(&'t T) -> &'t str) -> Vec<&'t T> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, t) in items.iter().enumerate() {
        last.insert(key(t), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &items[i]).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with its metadata in
    /// `STORE/meta.sqlite`; see [`Store::open_with`].
    pub async fn open(dir: &Path, master: MasterKey) -> Result<Store, StoreError> {
        Store::open_with(dir, master, &Database::Sqlite).await
    }

    /// Opens (creating if needed) the store in `dir` with its metadata in `database`, and
    /// removes what a crash left behind: temporary files and batch files that no committed
    /// batch names. The folder and the database are bound to each other by a store id, so a
    /// folder opened against another store's database (or an empty one) is refused rather
    /// than "recovered" by deleting its batches.
    pub async fn open_with(
        dir: &Path,
        master: MasterKey,
        database: &Database,
    ) -> Result<Store, StoreError> {
        Store::open_as(dir, master, database, true).await
    }

    /// Opens the store to read it (`vault intake status`, exports) while a writer may be
    /// running: no lock, no recovery, nothing written.
    pub async fn open_reader(
        dir: &Path,
        master: MasterKey,
        database: &Database,
    ) -> Result<Store, StoreError> {
        Store::open_as(dir, master, database, false).await
    }

    async fn open_as(
        dir: &Path,
        master: MasterKey,
        database: &Database,
        writer: bool,
    ) -> Result<Store, StoreError> {
        for sub in ["records", "quarantine"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}/{sub}", dir.display())))?;
        }
        sqlx::any::install_default_drivers();
        let (url, dialect) = match database {
            Database::Sqlite => (
                SqliteConnectOptions::new()
                    .filename(dir.join("meta.sqlite"))
                    .create_if_missing(true)
                    .to_url_lossy()
                    .to_string(),
                Dialect::Sqlite,
            ),
            Database::Postgres(url) => (url.clone(), Dialect::Postgres),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            // One more for the writer's PostgreSQL advisory-lock session.
            .max_connections(3)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Durable commits: a batch reported committed survives power loss.
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA secure_delete = ON;",
                        ))
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(dialect.schema()))
            .execute(&pool)
            .await?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            pool,
            dialect,
            master,
            _writer: None,
            gate: tokio::sync::Mutex::new(()),
            optout_dropped: std::sync::atomic::AtomicU64::new(0),
        };
        if writer {
            store._writer = Some(store.lock_writer().await?);
            store.bind_id().await?;
            // Only a writer that holds the lock may delete what looks orphaned: anything
            // else could be the batch file a live writer is about to commit.
            store.recover().await?;
        } else {
            store.check_id().await?;
        }
        Ok(store)
    }

    /// Takes the writer's locks, waiting up to [`WRITER_WAIT`] for a previous writer.
    async fn lock_writer(&self) -> Result<WriterLock, StoreError> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.dir.join("writer.lock");
        let deadline = std::time::Instant::now() + WRITER_WAIT;
        let busy = || {
            StoreError::Inconsistent(format!(
                "another vault process is writing {} (waited {} s)",
                self.dir.display(),
                WRITER_WAIT.as_secs()
            ))
        };
        let file = loop {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((_, nix::errno::Errno::EWOULDBLOCK))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(busy()),
                Err((_, e)) => return Err(io(format!("locking {}", path.display()))(e.into())),
            }
        };
        let session = match self.dialect {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                let mut conn = self.pool.acquire().await?;
                loop {
                    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(ADVISORY_KEY)
                        .fetch_one(&mut *conn)
                        .await?;
                    if got {
                        break Some(std::sync::Mutex::new(conn));
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(busy());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        Ok(WriterLock {
            _file: file,
            _session: session,
        })
    }

    /// The store id as the folder (`store.id`) and as the database state it, if they do.
    async fn ids(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        let in_db: Option<String> =
            sqlx::query_scalar("SELECT value FROM store_info WHERE key = 'store_id'")
                .fetch_optional(&self.pool)
                .await?;
        let file = self.dir.join("store.id");
        let in_dir = match std::fs::read_to_string(&file) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(format!("reading {}", file.display()))(e)),
        };
        Ok((in_dir, in_db))
    }

    /// A reader's check that folder and database belong together; it writes nothing.
    async fn check_id(&self) -> Result<(), StoreError> {
        match self.ids().await? {
            (Some(a), Some(b)) if a != b => Err(StoreError::Inconsistent(format!(
                "{} is store {a} but the metadata database belongs to store {b}",
                self.dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Makes sure folder and database belong together (see [`Store::open_with`]).
    async fn bind_id(&self) -> Result<(), StoreError> {
        let file = self.dir.join("store.id");
        let (in_dir, in_db) = self.ids().await?;
        let has_batches = std::fs::read_dir(self.dir.join("records"))
            .map_err(io("listing records"))?
            .filter_map(|e| e.ok())
            .any(|e| !e.file_name().to_string_lossy().ends_with(".tmp"));
        match (in_dir, in_db) {
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => Err(StoreError::Inconsistent(format!(
                "{} is store {a} but the metadata database belongs to store {b}",
                self.dir.display()
            ))),
            (Some(a), None) if has_batches => Err(StoreError::Inconsistent(format!(
                "{} is store {a} and holds record batches, but the metadata database is empty: \
                 restore or point to the store's own database",
                self.dir.display()
            ))),
            (None, Some(b)) if has_batches => Err(StoreError::Inconsistent(format!(
                "{} has record batches but no store.id; the metadata database is store {b}",
                self.dir.display()
            ))),
            (in_dir, in_db) => {
                // A new store, or one whose first open was cut short between the two writes:
                // the database is written first, then the file.
                let id = match (in_dir, in_db) {
                    (_, Some(b)) => b,
                    (Some(a), None) => a,
                    (None, None) => {
                        let mut raw = [0u8; 16];
                        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                            .map_err(|_| StoreError::Crypto("random store id"))?;
                        hex::encode(raw)
                    }
                };
                sqlx::query("INSERT INTO store_info (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING")
                    .bind(&id)
                    .execute(&self.pool)
                    .await?;
                write_synced(&file, format!("{id}\n").as_bytes())
            }
        }
    }

    async fn recover(&self) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            // Wait out any commit a killed writer left in flight on the server (see `commit`).
            let mut conn = self.pool.acquire().await?;
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_lock($1)) AS held",
            )
            .bind(COMMIT_KEY)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                .bind(COMMIT_KEY)
                .fetch_one(&mut *conn)
                .await?;
        }
        let named: std::collections::HashSet<String> =
            sqlx::query_scalar::<_, String>("SELECT file FROM batches")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        for sub in ["records", "quarantine"] {
            let d = self.dir.join(sub);
            for e in std::fs::read_dir(&d).map_err(io(format!("listing {}", d.display())))? {
                let e = e.map_err(io(format!("listing {}", d.display())))?;
                let name = e.file_name().to_string_lossy().to_string();
                let orphan = name.ends_with(".tmp") || (sub == "records" && !named.contains(&name));
                if orphan {
                    std::fs::remove_file(e.path())
                        .map_err(io(format!("removing {}", e.path().display())))?;
                }
            }
        }
        Ok(())
    }

    /// Whether envelope `id` was already stored or quarantined.
    pub async fn known(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Which of `ids` the store already holds, in one query (a per-envelope query costs a
    /// round trip to the database thread each, which dominated intake's CPU time).
    pub async fn known_among(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let json =
            serde_json::to_string(ids).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        let rows: Vec<String> = sqlx::query_scalar(self.dialect.known_among())
            .bind(json)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The link map: (tag, pseudonym, basis).
    pub async fn link_map(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT tag, pseudonym, basis FROM link_map")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Commits a batch (see the module documentation for the order). `took_ms` is the time
    /// intake spent on it, for throughput reporting.
    pub async fn commit(&self, mut batch: Batch, took_ms: i64) -> Result<i64, StoreError> {
        if batch.envelopes.is_empty() {
            return Ok(0);
        }
        let _gate = self.gate.lock().await;
        self.leave_out_opted(&mut batch).await?;
        let parquet = to_parquet(&batch.rows)?;
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            // Held until this transaction ends, and taken before the batch file exists: a
            // writer that starts after this one was killed waits in `recover` until the
            // server has finished (committed or rolled back) what this one had sent, so it
            // never deletes a file a commit still in flight will name.
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock_shared($1)) AS held",
            )
            .bind(COMMIT_KEY)
            .fetch_one(&mut *tx)
            .await?;
        }
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches")
            .fetch_one(&mut *tx)
            .await?;
        let file = format!("batch-{seq:08}.pq.enc");
        let (sealed, wrapped) = self.master.seal_batch(&file, &parquet)?;
        write_synced(&self.dir.join("records").join(&file), &sealed)?;
        sqlx::query("INSERT INTO batches (seq, file, wrapped_key, records, envelopes, committed_ms, took_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(seq)
            .bind(&file)
            .bind(&wrapped)
            .bind(batch.rows.len() as i64)
            .bind(batch.envelopes.len() as i64)
            .bind(now_ms())
            .bind(took_ms)
            .execute(&mut *tx)
            .await?;
        // Rows go in multi-row statements: one statement per row cost a round trip to the
        // database thread each, a tenth of intake's time on bulk envelopes.
        for chunk in batch.envelopes.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                self.dialect,
                "INSERT INTO envelopes (id, institution, content_type, sha256, bytes, records, batch, doc_type, status) VALUES ",
                8,
                "'stored'",
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(&e.id)
                    .bind(&e.institution)
                    .bind(&e.content_type)
                    .bind(&e.sha256)
                    .bind(e.bytes as i64)
                    .bind(e.records as i64)
                    .bind(seq)
                    .bind(&e.doc_type);
            }
            q.execute(&mut *tx).await?;
        }
        // The same person arrives in many envelopes of a batch: write each identity and each
        // link-map entry once (the last link entry for a tag wins, as it would row by row;
        // likewise the last merge of a pseudonym).
        let mut seen = std::collections::HashSet::new();
        let identities: Vec<(&String, &String, &String, Vec<u8>)> = batch
            .identities
            .iter()
            .filter(|(p, inst, tag, _)| seen.insert((p.as_str(), inst.as_str(), tag.as_str())))
            .map(|(p, inst, tag, json)| Ok((p, inst, tag, self.master.seal_identity(json)?)))
            .collect::<Result<_, StoreError>>()?;
        let link_rows = last_per_key(&batch.links, |(tag, _, _)| tag.as_str());
        let merge_rows = last_per_key(&batch.merges, |(from, _)| from.as_str());
        for chunk in identities.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                self.dialect,
                "INSERT INTO identities (pseudonym, institution, tag, sealed) VALUES ",
                4,
                "",
                chunk.len(),
                " ON CONFLICT (pseudonym, institution, tag) DO NOTHING",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (p, inst, tag, sealed) in chunk {
                q = q.bind(*p).bind(*inst).bind(*tag).bind(sealed.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in link_rows.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                self.dialect,
                "INSERT INTO link_map (tag, pseudonym, basis) VALUES ",
                3,
                "",
                chunk.len(),
                " ON CONFLICT (tag) DO UPDATE SET pseudonym = excluded.pseudonym, basis = excluded.basis",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (tag, p, basis) in chunk {
                q = q.bind(tag).bind(p).bind(basis);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in merge_rows.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                self.dialect,
                "INSERT INTO merges (from_pseudonym, to_pseudonym) VALUES ",
                2,
                "",
                chunk.len(),
                " ON CONFLICT (from_pseudonym) DO UPDATE SET to_pseudonym = excluded.to_pseudonym",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (from, to) in chunk {
                q = q.bind(from).bind(to);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// Drops the rows and identities of persons who opted out from a batch about to be
    /// committed. A person known only by a local patient id when they opted out is
    /// recognised by the link entry the batch makes for that id; their pseudonym is then
    /// added to the opt-outs. Link entries stay, so the person keeps being recognised.
    async fn leave_out_opted(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT key, kind FROM optouts")
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut pseudonyms = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for r in &rows {
            let (key, kind): (String, String) = (r.get(0), r.get(1));
            if kind == "tag" {
                tags.insert(key);
            } else {
                pseudonyms.insert(key);
            }
        }
        let mut found = Vec::new();
        for (tag, p, _) in &batch.links {
            if tags.contains(tag) && pseudonyms.insert(p.clone()) {
                found.push(p.clone());
            }
        }
        for p in &found {
            sqlx::query("INSERT INTO optouts (key, kind, at_ms) VALUES ($1, 'pseudonym', $2) ON CONFLICT (key) DO NOTHING")
                .bind(p)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        }
        let merged: std::collections::HashMap<&str, &str> = batch
            .merges
            .iter()
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect();
        let opted = |p: &str| {
            pseudonyms.contains(p) || merged.get(p).is_some_and(|to| pseudonyms.contains(*to))
        };
        let before = batch.rows.len();
        batch.rows.retain(|r| !opted(&r.pseudonym));
        batch.identities.retain(|(p, _, _, _)| !opted(p));
        self.optout_dropped.fetch_add(
            (before - batch.rows.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Records left out of commits since this store was opened because their person had
    /// opted out.
    pub fn optout_dropped(&self) -> u64 {
        self.optout_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pseudonym the link map gives `tag` (a local patient id's tag), if any.
    pub async fn pseudonym_of_tag(&self, tag: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT pseudonym FROM link_map WHERE tag = $1")
                .bind(tag)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Opt-out (R-IN-6): records the person as opted out — by the tag of a local patient
    /// id, by pseudonym, or both — so no later commit stores them, then deletes every record
    /// and sealed identity the store holds for them. Batches are rewritten under new file
    /// names and switched in one database transaction; the old files are removed after it
    /// (a crash in between leaves an orphan that the next writer's recovery removes).
    pub async fn forget(
        &self,
        tag: Option<&str>,
        pseudonym: Option<&str>,
    ) -> Result<Forgotten, StoreError> {
        let _gate = self.gate.lock().await;
        let mut keys = Vec::new();
        if let Some(t) = tag {
            keys.push((t.to_owned(), "tag"));
        }
        let mut target = pseudonym.map(str::to_owned);
        if target.is_none() {
            if let Some(t) = tag {
                target = self.pseudonym_of_tag(t).await?;
            }
        }
        if let Some(p) = &target {
            keys.push((p.clone(), "pseudonym"));
        }
        for (key, kind) in &keys {
            sqlx::query("INSERT INTO optouts (key, kind, at_ms) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(*kind)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        }
        let Some(target) = target else {
            return Ok(Forgotten::default());
        };
        let mut gone: std::collections::BTreeSet<String> = sqlx::query_scalar::<_, String>(
            "SELECT from_pseudonym FROM merges WHERE to_pseudonym = $1",
        )
        .bind(&target)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        gone.insert(target);
        let mut out = Forgotten {
            pseudonyms: gone.iter().cloned().collect(),
            ..Forgotten::default()
        };
        let batches = sqlx::query("SELECT seq, file, wrapped_key FROM batches ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        for r in batches {
            let (seq, file, wrapped): (i64, String, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
            let path = self.dir.join("records").join(&file);
            let sealed = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            let plain = self.master.open_batch(&file, &sealed, &wrapped)?;
            let df = ParquetReader::new(Cursor::new(plain)).finish()?;
            let ca = df.column("pseudonym")?.str()?;
            let keep: BooleanChunked = (0..ca.len())
                .map(|i| Some(!ca.get(i).is_some_and(|p| gone.contains(p))))
                .collect();
            let mut kept = df.filter(&keep)?;
            let removed = (df.height() - kept.height()) as u64;
            if removed == 0 {
                continue;
            }
            let mut buf = Vec::new();
            ParquetWriter::new(&mut buf)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut kept)?;
            let new_file = format!("batch-{seq:08}-{}.pq.enc", now_ms());
            let (sealed, wrapped) = self.master.seal_batch(&new_file, &buf)?;
            write_synced(&self.dir.join("records").join(&new_file), &sealed)?;
            sqlx::query(
                "UPDATE batches SET file = $1, wrapped_key = $2, records = $3 WHERE seq = $4",
            )
            .bind(&new_file)
            .bind(&wrapped)
            .bind(kept.height() as i64)
            .bind(seq)
            .execute(&self.pool)
            .await?;
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
            out.records += removed;
            out.batches += 1;
        }
        for p in &out.pseudonyms {
            let n = sqlx::query("DELETE FROM identities WHERE pseudonym = $1")
                .bind(p)
                .execute(&self.pool)
                .await?
                .rows_affected();
            out.identities += n;
        }
        self.scrub().await?;
        Ok(out)
    }

    /// Leaves no copy of deleted rows in the database's files (issue #31, item 9): SQLite
    /// overwrites freed content (`secure_delete`, set on every connection) and here folds
    /// the write-ahead log back and truncates it, since the log still holds the old pages;
    /// PostgreSQL rewrites the tables whose rows were deleted or replaced (`VACUUM FULL`),
    /// so the dead tuples' pages are gone from its heap files. The replaced batch keys were
    /// the only way to read the removed batch files (crypto-erasure).
    async fn scrub(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Sqlite => {
                sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE);")
                    .execute(&self.pool)
                    .await?;
            }
            Dialect::Postgres => {
                sqlx::raw_sql("VACUUM FULL identities, batches;")
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Quarantines a refused envelope: its sealed bytes are kept as they arrived (they hold
    /// no plaintext), with the reason. Idempotent by envelope id.
    pub async fn quarantine(&self, q: &Quarantined, sealed: &[u8]) -> Result<(), StoreError> {
        let name: String = q
            .envelope
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        write_synced(&self.dir.join("quarantine").join(&name), sealed)?;
        sqlx::query("INSERT INTO envelopes (id, institution, content_type, sha256, bytes, status, records, code, reason, doc_type) VALUES ($1, $2, $3, $4, $5, 'quarantined', 0, $6, $7, '') ON CONFLICT (id) DO NOTHING")
            .bind(&q.envelope.id)
            .bind(&q.envelope.institution)
            .bind(&q.envelope.content_type)
            .bind(&q.envelope.sha256)
            .bind(q.envelope.bytes as i64)
            .bind(&q.code)
            .bind(&q.reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Counts per institution and format, the quarantine list and throughput.
    pub async fn status(&self) -> Result<Status, StoreError> {
        let mut s = Status::default();
        for r in sqlx::query("SELECT institution, content_type, status, COUNT(*), CAST(COALESCE(SUM(records), 0) AS BIGINT) FROM envelopes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
            .fetch_all(&self.pool)
            .await?
        {
            s.by_institution.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)));
        }
        for r in sqlx::query("SELECT id, institution, COALESCE(code, ''), COALESCE(reason, '') FROM envelopes WHERE status = 'quarantined' ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            s.quarantine.push((r.get(0), r.get(1), r.get(2), r.get(3)));
        }
        let r = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(records), 0) AS BIGINT), CAST(COALESCE(SUM(took_ms), 0) AS BIGINT) FROM batches",
        )
        .fetch_one(&self.pool)
        .await?;
        s.batches = r.get(0);
        s.records = r.get(1);
        let took: i64 = r.get(2);
        s.records_per_s = if took > 0 {
            s.records as f64 * 1000.0 / took as f64
        } else {
            0.0
        };
        s.persons = sqlx::query_scalar("SELECT COUNT(DISTINCT pseudonym) FROM link_map")
            .fetch_one(&self.pool)
            .await?;
        Ok(s)
    }

    /// Provisional pseudonyms and what they were merged into.
    async fn merges(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        Ok(
            sqlx::query("SELECT from_pseudonym, to_pseudonym FROM merges")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    /// Every identity, opened: (pseudonym after merges, the identity's JSON). For building
    /// release datasets inside the vault; the JSON never leaves it (R-AN-4).
    pub async fn identities(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let merges = self.merges().await?;
        let rows = sqlx::query("SELECT pseudonym, sealed FROM identities ORDER BY pseudonym")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let p: String = r.get(0);
            let sealed: Vec<u8> = r.get(1);
            let plain = self.master.open_identity(&sealed)?;
            out.push((merges.get(&p).cloned().unwrap_or(p), plain));
        }
        Ok(out)
    }

    /// The identity rows as the database holds them, sealed (pseudonym as stored, ciphertext):
    /// for checks that a deletion left no copy of them in the database's files.
    pub async fn sealed_identities(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT pseudonym, sealed FROM identities ORDER BY pseudonym")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Pseudonyms of every person who opted out (R-IN-6), named by pseudonym or through
    /// the link map by an institution's patient-id tag.
    pub async fn opted_out(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        let rows = sqlx::query("SELECT key, kind FROM optouts")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let (key, kind): (String, String) = (r.get(0), r.get(1));
            if kind == "tag" {
                if let Some(p) = self.pseudonym_of_tag(&key).await? {
                    out.insert(p);
                }
            } else {
                out.insert(key);
            }
        }
        Ok(out)
    }

    /// Decrypts every batch and returns all records, provisional pseudonyms replaced by what
    /// they were merged into, sorted (so two stores with the same content compare equal).
    pub async fn records(&self) -> Result<DataFrame, StoreError> {
        let rows = sqlx::query("SELECT file, wrapped_key FROM batches ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        let mut frames = Vec::new();
        for r in rows {
            let file: String = r.get(0);
            let wrapped: Vec<u8> = r.get(1);
            let path = self.dir.join("records").join(&file);
            let sealed = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            let plain = self.master.open_batch(&file, &sealed, &wrapped)?;
            frames.push(ParquetReader::new(Cursor::new(plain)).finish()?);
        }
        let merges = self.merges().await?;
        let mut all = match frames.split_first() {
            None => empty_frame()?,
            Some((first, rest)) => {
                let mut acc = first.clone();
                for f in rest {
                    acc.vstack_mut(f)?;
                }
                acc
            }
        };
        if !merges.is_empty() {
            let ca = all.column("pseudonym")?.str()?;
            let mapped: Vec<Option<String>> = (0..ca.len())
                .map(|i| {
                    ca.get(i)
                        .map(|v| merges.get(v).cloned().unwrap_or_else(|| v.to_owned()))
                })
                .collect();
            all.with_column(Column::new("pseudonym".into(), mapped))?;
        }
        let cols: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        Ok(all.sort(cols, SortMultipleOptions::default())?)
    }
}

/// The rows of a records frame as tab-separated text lines (empty for null), in frame order.
pub fn frame_lines(df: &DataFrame) -> Result<Vec<String>, StoreError> {
    let cols: Vec<&StringChunked> = COLUMNS
        .iter()
        .map(|c| df.column(c).and_then(|c| c.str()))
        .collect::<Result<_, _>>()?;
    Ok((0..df.height())
        .map(|i| {
            cols.iter()
                .map(|c| c.get(i).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect())
}

const COLUMNS: [&str; 10] = [
    "envelope",
    "institution",
    "pseudonym",
    "kind",
    "date",
    "code",
    "system",
    "display",
    "value",
    "unit",
];

fn empty_frame() -> Result<DataFrame, StoreError> {
    to_frame(&[])
}

fn to_frame(rows: &[RecordRow]) -> Result<DataFrame, StoreError> {
    let text =
        |f: fn(&RecordRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<Option<&str>>>();
    let cols = vec![
        Column::new(COLUMNS[0].into(), text(|r| Some(&r.envelope))),
        Column::new(COLUMNS[1].into(), text(|r| Some(&r.institution))),
        Column::new(COLUMNS[2].into(), text(|r| Some(&r.pseudonym))),
        Column::new(COLUMNS[3].into(), text(|r| Some(r.kind))),
        Column::new(COLUMNS[4].into(), text(|r| r.date.as_deref())),
        Column::new(COLUMNS[5].into(), text(|r| r.code.as_deref())),
        Column::new(COLUMNS[6].into(), text(|r| r.system.as_deref())),
        Column::new(COLUMNS[7].into(), text(|r| r.display.as_deref())),
        Column::new(COLUMNS[8].into(), text(|r| r.value.as_deref())),
        Column::new(COLUMNS[9].into(), text(|r| r.unit.as_deref())),
    ];
    Ok(DataFrame::new(rows.len(), cols)?)
}

fn to_parquet(rows: &[RecordRow]) -> Result<Vec<u8>, StoreError> {
    let mut df = to_frame(rows)?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)?;
    Ok(buf)
}

/// A table of strings as Parquet bytes (every column a UTF-8 string column), for release
/// packages: the researcher gets the same rows as CSV and as Parquet.
pub fn strings_to_parquet(columns: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>, StoreError> {
    let cols: Vec<Column> = columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let values: Vec<&str> = rows
                .iter()
                .map(|r| r.get(i).map(String::as_str).unwrap_or(""))
                .collect();
            Column::new(name.as_str().into(), values)
        })
        .collect();
    let mut df = DataFrame::new(rows.len(), cols)?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(&mut df)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(env: &str, p: &str) -> RecordRow {
        RecordRow {
            envelope: env.into(),
            institution: "A".into(),
            pseudonym: p.into(),
            kind: "observation",
            date: Some("20240101".into()),
            code: Some("X".into()),
            system: None,
            display: Some("日本".into()),
            value: Some("1.5".into()),
            unit: None,
        }
    }

    fn env(id: &str) -> EnvelopeRow {
        EnvelopeRow {
            id: id.into(),
            institution: "A".into(),
            content_type: "ssmix2".into(),
            sha256: "00".into(),
            bytes: 1,
            records: 1,
            doc_type: "ADT^A08".into(),
        }
    }

    #[tokio::test]
    async fn commit_read_back_and_orphans_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MasterKey::new([3; 32]).expect("key"))
            .await
            .expect("open");
        let b = Batch {
            envelopes: vec![env("e1")],
            rows: vec![row("e1", "prov"), row("e1", "p2")],
            merges: vec![("prov".into(), "p1".into())],
            ..Batch::default()
        };
        store.commit(b, 5).await.expect("commit");
        assert!(store.known("e1").await.expect("known"));
        let df = store.records().await.expect("records");
        let ca = df.column("pseudonym").expect("col").str().expect("str");
        let ps: Vec<Option<&str>> = (0..ca.len()).map(|i| ca.get(i)).collect();
        assert_eq!(ps, [Some("p1"), Some("p2")]);
        // The file on disk is not Parquet in the clear.
        let file = dir.path().join("records/batch-00000001.pq.enc");
        let bytes = std::fs::read(&file).expect("read");
        assert!(!bytes.windows(4).any(|w| w == b"PAR1"));
        // An orphan (a crash between the file and the transaction) is removed at open.
        std::fs::write(dir.path().join("records/batch-00000002.pq.enc"), b"x").expect("write");
        drop(store);
        let store = Store::open(dir.path(), MasterKey::new([3; 32]).expect("key"))
            .await
            .expect("open");
        assert!(!dir.path().join("records/batch-00000002.pq.enc").exists());
        assert_eq!(store.status().await.expect("status").records, 2);
        // Another master key cannot read the batch.
        drop(store);
        let wrong = Store::open(dir.path(), MasterKey::new([4; 32]).expect("key"))
            .await
            .expect("open");
        assert!(wrong.records().await.is_err());
    }

    #[tokio::test]
    async fn a_folder_is_never_recovered_against_another_stores_database() {
        let key = || MasterKey::new([3; 32]).expect("key");
        let (a, b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        for d in [&a, &b] {
            let st = Store::open(d.path(), key()).await.expect("open");
            let batch = Batch {
                envelopes: vec![env("e1")],
                rows: vec![row("e1", "p1")],
                ..Batch::default()
            };
            st.commit(batch, 1).await.expect("commit");
        }
        let batch_file = a.path().join("records/batch-00000001.pq.enc");
        // A's folder against B's database: refused, nothing deleted.
        for f in ["meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"] {
            let _ = std::fs::remove_file(a.path().join(f));
            if b.path().join(f).exists() {
                std::fs::copy(b.path().join(f), a.path().join(f)).expect("copy");
            }
        }
        let err = Store::open(a.path(), key()).await.err().expect("refused");
        assert!(err.to_string().contains("belongs to store"), "{err}");
        assert!(batch_file.exists(), "a refused open deletes nothing");
        // A's folder against an empty database: refused too.
        for f in ["meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"] {
            let _ = std::fs::remove_file(a.path().join(f));
        }
        let err = Store::open(a.path(), key()).await.err().expect("refused");
        assert!(err.to_string().contains("database is empty"), "{err}");
        assert!(batch_file.exists(), "a refused open deletes nothing");
    }

    #[tokio::test]
    async fn only_the_writer_recovers_so_a_reader_never_deletes_a_batch_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = || MasterKey::new([3; 32]).expect("key");
        let writer = Store::open(dir.path(), key()).await.expect("writer");
        // What a writer has written and not yet committed looks orphaned to anyone else.
        let in_flight = dir.path().join("records/batch-00000001.pq.enc");
        std::fs::write(&in_flight, b"sealed").expect("write");
        let reader = Store::open_reader(dir.path(), key(), &Database::Sqlite)
            .await
            .expect("reader");
        assert_eq!(reader.status().await.expect("status").batches, 0);
        assert!(in_flight.exists(), "a reader deleted a batch in flight");
        drop((reader, writer));
        // The next writer, holding the lock, removes it: nobody can commit it any more.
        let _writer = Store::open(dir.path(), key()).await.expect("writer");
        assert!(!in_flight.exists());
    }

    #[test]
    fn multi_row_statements_number_their_parameters_in_order() {
        let head = "INSERT INTO t (a, b, s) VALUES ";
        let tail = " ON CONFLICT DO NOTHING";
        assert_eq!(
            values_sql(Dialect::Postgres, head, 2, "'x'", 2, tail),
            "INSERT INTO t (a, b, s) VALUES ($1, $2, 'x'), ($3, $4, 'x') ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            values_sql(Dialect::Sqlite, head, 2, "", 2, tail),
            "INSERT INTO t (a, b, s) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        let items = [("a", 1), ("b", 2), ("a", 3)];
        let kept: Vec<i32> = last_per_key(&items, |t| t.0).iter().map(|t| t.1).collect();
        assert_eq!(kept, [2, 3]);
    }

    #[test]
    fn database_settings_parse_and_passwords_are_not_shown() {
        assert_eq!("sqlite".parse::<Database>(), Ok(Database::Sqlite));
        let pg: Database = "postgres://vault:s3cret@db/enclave".parse().expect("pg");
        assert!(!format!("{pg:?}").contains("s3cret"), "{pg:?}");
        assert_eq!(redact("postgres://vault@db/x"), "postgres://vault:***@db/x");
        let err = "mysql://u:s3cret@h/x"
            .parse::<Database>()
            .expect_err("refused");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
