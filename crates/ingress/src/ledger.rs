//! The receipt ledger (R-IN-3): evidence of every exchange with an institution — accepted,
//! duplicate, refused, aborted, and TLS handshakes that were refused — in SQLite via sqlx.
//!
//! Writes go through one writer task that commits whatever is waiting in a single
//! transaction (group commit): each submitter still waits for its own row to be durable, but
//! a thousand small envelopes a second cost tens of fsyncs, not thousands.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Outcome column values.
pub mod outcome {
    /// Stored; receipt sent.
    pub const ACCEPTED: &str = "accepted";
    /// Already stored earlier; the earlier receipt was sent again.
    pub const DUPLICATE: &str = "duplicate";
    /// Refused; see reason.
    pub const REFUSED: &str = "refused";
    /// The upload stopped (connection lost); the partial file is kept for resumption.
    pub const ABORTED: &str = "aborted";
    /// The TLS handshake failed (unknown CA, revoked, expired …).
    pub const TLS_REFUSED: &str = "tls_refused";
}

/// One row of the `exchanges` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    /// When the exchange ended, Unix ms.
    pub at_ms: i64,
    /// When it started, Unix ms.
    pub started_ms: i64,
    /// Peer address.
    pub remote: String,
    /// Institution (client certificate CN), when known.
    pub institution: Option<String>,
    /// Client certificate serial (hex), when known.
    pub cert_serial: Option<String>,
    /// Envelope id, when an offer was read.
    pub envelope_id: Option<String>,
    /// SHA-256 (hex) offered or stored.
    pub sha256: Option<String>,
    /// Size offered or stored.
    pub size: Option<i64>,
    /// Bytes received in this exchange.
    pub bytes_received: i64,
    /// One of [`outcome`].
    pub outcome: String,
    /// Refusal code (intake_proto::RefusalCode) or error kind.
    pub reason_code: Option<String>,
    /// Human-readable reason.
    pub reason: Option<String>,
    /// The signed receipt JSON (accepted, duplicate).
    pub receipt: Option<String>,
}

/// An accepted envelope (one row per institution and envelope id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Institution.
    pub institution: String,
    /// Envelope id, hex.
    pub envelope_id: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size.
    pub size: i64,
    /// Signed receipt JSON.
    pub receipt: String,
    /// When accepted, Unix ms.
    pub accepted_ms: i64,
}

enum Job {
    Exchange(Exchange),
    Accept(Accepted, Exchange),
}

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pool: SqlitePool,
    tx: mpsc::Sender<(Job, oneshot::Sender<Result<(), String>>)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS exchanges (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  remote TEXT NOT NULL,
  institution TEXT,
  cert_serial TEXT,
  envelope_id TEXT,
  sha256 TEXT,
  size INTEGER,
  bytes_received INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  reason_code TEXT,
  reason TEXT,
  receipt TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_inst ON exchanges (institution, at_ms);
CREATE TABLE IF NOT EXISTS envelopes (
  institution TEXT NOT NULL,
  envelope_id TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  receipt TEXT NOT NULL,
  accepted_ms INTEGER NOT NULL,
  PRIMARY KEY (institution, envelope_id)
);
CREATE INDEX IF NOT EXISTS envelopes_day ON envelopes (institution, accepted_ms);
";

impl Ledger {
    /// Opens (creating if needed) the ledger database at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .with_context(|| format!("ledger path {}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening ledger {}", path.display()))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .context("creating ledger tables")?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(pool.clone(), rx));
        Ok(Self { pool, tx })
    }

    async fn submit(&self, job: Job) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((job, done))
            .await
            .map_err(|_| anyhow::anyhow!("ledger writer stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("ledger writer stopped"))?
            .map_err(|e| anyhow::anyhow!("ledger write failed: {e}"))
    }

    /// Records an exchange; returns when it is durable.
    pub async fn record(&self, e: Exchange) -> Result<()> {
        self.submit(Job::Exchange(e)).await
    }

    /// Records an acceptance and its exchange in one transaction; returns when durable.
    /// Fails if the envelope id was already accepted for this institution.
    pub async fn accept(&self, a: Accepted, e: Exchange) -> Result<()> {
        self.submit(Job::Accept(a, e)).await
    }

    /// The accepted envelope with this id from this institution, if any.
    pub async fn lookup(&self, institution: &str, envelope_id: &str) -> Result<Option<Accepted>> {
        let row = sqlx::query(
            "SELECT sha256, size, receipt, accepted_ms FROM envelopes WHERE institution = ? AND envelope_id = ?",
        )
        .bind(institution)
        .bind(envelope_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Accepted {
            institution: institution.to_owned(),
            envelope_id: envelope_id.to_owned(),
            sha256: r.get(0),
            size: r.get(1),
            receipt: r.get(2),
            accepted_ms: r.get(3),
        }))
    }

    /// Bytes accepted from `institution` since `since_ms`.
    pub async fn bytes_since(&self, institution: &str, since_ms: i64) -> Result<u64> {
        let total: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(size) FROM envelopes WHERE institution = ? AND accepted_ms >= ?",
        )
        .bind(institution)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(total.unwrap_or(0)).unwrap_or(0))
    }

    /// Every exchange, oldest first (tests, `ingress ledger`).
    pub async fn exchanges(&self) -> Result<Vec<Exchange>> {
        let rows = sqlx::query(
            "SELECT at_ms, started_ms, remote, institution, cert_serial, envelope_id, sha256, size,
                    bytes_received, outcome, reason_code, reason, receipt
             FROM exchanges ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Exchange {
                at_ms: r.get(0),
                started_ms: r.get(1),
                remote: r.get(2),
                institution: r.get(3),
                cert_serial: r.get(4),
                envelope_id: r.get(5),
                sha256: r.get(6),
                size: r.get(7),
                bytes_received: r.get(8),
                outcome: r.get(9),
                reason_code: r.get(10),
                reason: r.get(11),
                receipt: r.get(12),
            })
            .collect())
    }

    /// Every accepted envelope.
    pub async fn accepted(&self) -> Result<Vec<Accepted>> {
        let rows = sqlx::query(
            "SELECT institution, envelope_id, sha256, size, receipt, accepted_ms FROM envelopes ORDER BY accepted_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Accepted {
                institution: r.get(0),
                envelope_id: r.get(1),
                sha256: r.get(2),
                size: r.get(3),
                receipt: r.get(4),
                accepted_ms: r.get(5),
            })
            .collect())
    }

    /// Closes the pool after the writer drained.
    pub async fn close(self) {
        drop(self.tx);
        self.pool.close().await;
    }
}

async fn insert_exchange(
    conn: &mut sqlx::SqliteConnection,
    e: &Exchange,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO exchanges (at_ms, started_ms, remote, institution, cert_serial, envelope_id,
            sha256, size, bytes_received, outcome, reason_code, reason, receipt)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at_ms)
    .bind(e.started_ms)
    .bind(&e.remote)
    .bind(&e.institution)
    .bind(&e.cert_serial)
    .bind(&e.envelope_id)
    .bind(&e.sha256)
    .bind(e.size)
    .bind(e.bytes_received)
    .bind(&e.outcome)
    .bind(&e.reason_code)
    .bind(&e.reason)
    .bind(&e.receipt)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply(
    conn: &mut sqlx::SqliteConnection,
    job: &Job,
) -> std::result::Result<(), sqlx::Error> {
    match job {
        Job::Exchange(e) => insert_exchange(conn, e).await,
        Job::Accept(a, e) => {
            sqlx::query(
                "INSERT INTO envelopes (institution, envelope_id, sha256, size, receipt, accepted_ms)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&a.institution)
            .bind(&a.envelope_id)
            .bind(&a.sha256)
            .bind(a.size)
            .bind(&a.receipt)
            .bind(a.accepted_ms)
            .execute(&mut *conn)
            .await?;
            insert_exchange(conn, e).await
        }
    }
}

type Pending = (Job, oneshot::Sender<Result<(), String>>);

async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let jobs: Vec<&Job> = batch.iter().map(|(j, _)| j).collect();
        let outcome = commit_jobs(&pool, &jobs).await;
        match outcome {
            Ok(()) => {
                for (_, done) in batch {
                    let _ = done.send(Ok(()));
                }
            }
            // One bad row (say a duplicate acceptance racing another) must not fail its
            // neighbours: retry them one by one.
            Err(_) => {
                for (job, done) in batch {
                    let r = commit_jobs(&pool, &[&job]).await.map_err(|e| e.to_string());
                    let _ = done.send(r);
                }
            }
        }
    }
}

async fn commit_jobs(pool: &SqlitePool, jobs: &[&Job]) -> std::result::Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for job in jobs {
        apply(&mut tx, job).await?;
    }
    tx.commit().await
}
