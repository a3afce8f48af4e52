//! The metadata tables as plain data, the same on SQLite and PostgreSQL: for backups
//! (R-OP-8), for restoring into an empty database of either kind, and for a digest that says
//! whether two stores hold the same state.

use ring::digest;
use serde_json::Value;
use sqlx::Row;

use crate::{Store, StoreError};

/// A column's type, as the schema declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Text,
    Int,
    Blob,
}

/// A table: its name, its columns with their types, and its primary key.
type Table = (&'static str, &'static [(&'static str, Ty)], &'static str);

/// Every table with its columns, in a fixed order (the digest depends on it).
const TABLES: &[Table] = &[
    (
        "store_info",
        &[("key", Ty::Text), ("value", Ty::Text)],
        "key",
    ),
    (
        "envelopes",
        &[
            ("id", Ty::Text),
            ("institution", Ty::Text),
            ("content_type", Ty::Text),
            ("sha256", Ty::Text),
            ("bytes", Ty::Int),
            ("status", Ty::Text),
            ("records", Ty::Int),
            ("batch", Ty::Int),
            ("code", Ty::Text),
            ("reason", Ty::Text),
            ("doc_type", Ty::Text),
        ],
        "id",
    ),
    (
        "batches",
        &[
            ("seq", Ty::Int),
            ("file", Ty::Text),
            ("wrapped_key", Ty::Blob),
            ("records", Ty::Int),
            ("envelopes", Ty::Int),
            ("committed_ms", Ty::Int),
            ("took_ms", Ty::Int),
        ],
        "seq",
    ),
    (
        "link_map",
        &[
            ("tag", Ty::Text),
            ("pseudonym", Ty::Text),
            ("basis", Ty::Text),
        ],
        "tag",
    ),
    (
        "identities",
        &[
            ("pseudonym", Ty::Text),
            ("institution", Ty::Text),
            ("tag", Ty::Text),
            ("sealed", Ty::Blob),
        ],
        "pseudonym, institution, tag",
    ),
    (
        "merges",
        &[("from_pseudonym", Ty::Text), ("to_pseudonym", Ty::Text)],
        "from_pseudonym",
    ),
    (
        "optouts",
        &[("key", Ty::Text), ("kind", Ty::Text), ("at_ms", Ty::Int)],
        "key",
    ),
];

/// One table's rows: each row a JSON array in column order (blobs as hex, NULL as null).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableDump {
    /// Table name.
    pub table: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows in primary-key order.
    pub rows: Vec<Vec<Value>>,
}

impl Store {
    /// Every metadata table, rows in primary-key order.
    pub async fn dump_tables(&self) -> Result<Vec<TableDump>, StoreError> {
        let mut out = Vec::new();
        for (table, cols, key) in TABLES {
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY {key}", names.join(", "));
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?;
            let mut dump = TableDump {
                table: (*table).to_string(),
                columns: names.iter().map(|n| (*n).to_string()).collect(),
                rows: Vec::with_capacity(rows.len()),
            };
            for r in &rows {
                let mut row = Vec::with_capacity(cols.len());
                for (i, (_, ty)) in cols.iter().enumerate() {
                    row.push(match ty {
                        Ty::Text => r
                            .try_get::<Option<String>, _>(i)?
                            .map_or(Value::Null, Value::String),
                        Ty::Int => r
                            .try_get::<Option<i64>, _>(i)?
                            .map_or(Value::Null, Value::from),
                        Ty::Blob => r
                            .try_get::<Option<Vec<u8>>, _>(i)?
                            .map_or(Value::Null, |b| Value::String(hex::encode(b))),
                    });
                }
                dump.rows.push(row);
            }
            out.push(dump);
        }
        Ok(out)
    }

    /// Whether the metadata tables are empty but for the store's own id (a database to
    /// restore into).
    pub async fn tables_empty(&self) -> Result<bool, StoreError> {
        for (table, _, _) in TABLES.iter().filter(|(t, _, _)| *t != "store_info") {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            if n > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Loads dumped tables into this store's empty database, in one transaction.
    pub async fn load_tables(&self, dumps: &[TableDump]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for d in dumps {
            let Some((table, cols, _)) = TABLES.iter().find(|(t, _, _)| *t == d.table) else {
                return Err(StoreError::Inconsistent(format!(
                    "unknown table {:?} in the backup",
                    d.table
                )));
            };
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            if d.columns != names {
                return Err(StoreError::Inconsistent(format!(
                    "table {table}: columns differ from this version's"
                )));
            }
            if *table == "store_info" {
                // Opening the store wrote its own id; the backup's replaces it.
                sqlx::query("DELETE FROM store_info")
                    .execute(&mut *tx)
                    .await?;
            }
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            );
            for row in &d.rows {
                if row.len() != cols.len() {
                    return Err(StoreError::Inconsistent(format!(
                        "table {table}: a row has {} values",
                        row.len()
                    )));
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for ((_, ty), v) in cols.iter().zip(row) {
                    let bad = || {
                        StoreError::Inconsistent(format!(
                            "table {table}: value {v} is not a {ty:?}"
                        ))
                    };
                    q = match (ty, v) {
                        (Ty::Text, Value::Null) => q.bind(None::<String>),
                        (Ty::Int, Value::Null) => q.bind(None::<i64>),
                        (Ty::Blob, Value::Null) => q.bind(None::<Vec<u8>>),
                        (Ty::Text, Value::String(s)) => q.bind(s.clone()),
                        (Ty::Int, Value::Number(n)) => q.bind(n.as_i64().ok_or_else(bad)?),
                        (Ty::Blob, Value::String(s)) => q.bind(hex::decode(s).map_err(|_| bad())?),
                        _ => return Err(bad()),
                    };
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// SHA-256 of dumped tables in their canonical JSON form.
pub fn tables_digest(dumps: &[TableDump]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for d in dumps {
        ctx.update(serde_json::to_string(d).unwrap_or_default().as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(ctx.finish().as_ref())
}
