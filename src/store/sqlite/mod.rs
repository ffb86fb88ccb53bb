//! The SQLite store: geoprov's embedded default, one file with no server to run.
//!
//! Not for: several hosts writing to one store (use PostgreSQL), or anything but the
//! [`Store`] contract. Proofs, checkpoints and the Merkle tree live in the tlog module; this
//! file only keeps the rows they are computed from.
//!
//! # Layout on disk
//!
//! The schema is created by versioned migrations (`migrations/sqlite/NNNN_*.sql`, compiled in)
//! and recorded in `schema_migrations(version, applied_at)`:
//!
//! - `lineage_events`: the seed's columns (`event_id` primary key, `dataset_uuid`, `operation`,
//!   `crs_from`, `crs_to`, `processor_id`, `timestamp`, `payload_json`) plus `log_position`
//!   (dense, unique), `started_at`, `ended_at` and `leaf_hash`.
//! - `lineage_edges(from_uuid, to_uuid, event_id, operation)`: every input of an event linked to
//!   every output; indexed for walks in both directions.
//! - `log_head`: one row holding the log size and the frontier (the RFC 6962 compact range over
//!   positions `0..size`: the perfect-subtree roots, largest first, as concatenated 32-byte
//!   hashes), so appends never scan and the current root is O(1) to read.
//! - `log_checkpoints(tree_size, root_hash, note, created_at)`: signed checkpoints, one per
//!   tree size (migration 0002).
//!
//! Triggers refuse every `UPDATE` and `DELETE` on `lineage_events`, `lineage_edges` and
//! `log_checkpoints`.
//!
//! # The transparency log
//!
//! [`Store::commit_batch`] gives each new row its `leaf_hash` (`geoprov/leaf/v1` over its
//! position, `event_id`, the exact `timestamp` text stored and `payload_json`, see
//! [`crate::tlog::leaf`]) and appends it to the frontier read from `log_head`, then writes the
//! new size and frontier back, all in the batch's `BEGIN IMMEDIATE` transaction: SQLite's write
//! lock is the lock of the log head, so positions stay dense with several processes. The
//! [`TransparencyLog`] methods read the frontier, the stored leaf hashes and the checkpoints.
//!
//! # Connections and threads
//!
//! One write connection, behind a [`std::sync::Mutex`], serializes commits inside this process;
//! a small pool of read connections serves reads. In WAL mode readers see the last committed
//! snapshot and never wait for the writer, so a query or an export does not stall ingestion.
//! Every call into SQLite blocks, so each one runs on Tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on an async worker thread.
//!
//! # Durability and outages
//!
//! `synchronous=FULL`: the worker acknowledges messages to the broker as soon as
//! [`Store::commit_batch`] returns, so the commit must already be on disk; with `NORMAL` a power
//! loss could drop the last commits of the WAL after their messages were acknowledged, losing
//! them for good. A locked, busy, read-only, full or failing database surfaces as
//! [`StoreError::Unavailable`] after a short busy timeout, so the worker holds its batch and
//! retries with backoff instead of blocking inside SQLite.
//!
//! # Files
//!
//! - `mod.rs`: [`SqliteStore`], its connections, and the trait impls that call into:
//! - `connection.rs` (opening a connection), `migrate.rs` (the schema), `commit.rs` (writes),
//!   `read.rs` (reads), `timestamp.rs` (the time columns' text), `error.rs` (error mapping).
//!
//! The breadth-first lineage walk is not here: [`crate::lineage::walk`] drives it over
//! [`Store::neighbours`], which this store answers with one probe of `lineage_edges_to`
//! (upstream) or `lineage_edges_from` (downstream) per dataset, inside one read transaction.

mod commit;
mod connection;
mod error;
mod migrate;
mod read;
mod timestamp;

pub use error::classify;
pub use migrate::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use uuid::Uuid;

use self::commit::EncodedBatch;
use self::connection::{open_connection, Role, MAX_IDLE_READERS};
use super::migration::SchemaGate;
use super::rows;
use super::{
    CommitReport, Direction, EdgePage, EventPage, EventQuery, LineageEdge, Store, StoreError,
    StoredCheckpoint, StoredEvent, TransparencyLog, TreeHead,
};
use crate::event::{EventId, LineageEvent};
use crate::tlog::Hash;

/// The embedded SQLite store (see the module documentation).
///
/// Cheap to share: hold it in an `Arc<dyn Store>`. Dropping the last handle closes the file.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// The connections, shared with the blocking tasks (which need `'static` data).
struct Inner {
    /// The database file.
    path: PathBuf,
    /// The only connection that writes. A `std::sync::Mutex`, not Tokio's: it is locked only
    /// inside `spawn_blocking` tasks, which are plain threads that may block, and its guard is
    /// never held across an `.await`. Tokio's mutex exists for guards held across awaits; here
    /// it would only add a runtime hop (`blocking_lock`) for nothing. Commits from this process
    /// queue on this mutex; other processes queue on SQLite's own lock (busy timeout).
    writer: Mutex<Connection>,
    /// Idle read connections (query-only). A read takes one or opens a new one, then gives it
    /// back; at most [`MAX_IDLE_READERS`] are kept.
    readers: Mutex<Vec<Connection>>,
    /// Open once the schema version has been seen to equal [`SCHEMA_VERSION`], so the check
    /// costs one query per store, not one per call.
    schema: SchemaGate,
}

impl SqliteStore {
    /// Open the database file at `path`, creating it and its parent directories if needed,
    /// in WAL mode with `synchronous=FULL`, foreign keys on and a short busy timeout.
    ///
    /// Does NOT create or upgrade the schema: call [`Store::migrate`] (or use
    /// [`SqliteStore::open_and_migrate`]). Until the schema is current every other method
    /// returns [`StoreError::Schema`] saying to run `geoprov migrate`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let inner = run_blocking(move || Inner::open(path)).await?;
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// [`SqliteStore::open`], then [`Store::migrate`]: for tests, `serve` and one-off tools.
    pub async fn open_and_migrate(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = SqliteStore::open(path).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The database file this store uses.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.migrate()).await
    }

    /// Cancel-safe in the sense the worker needs: if the caller stops waiting, the commit still
    /// finishes or rolls back as a whole, and the unacknowledged messages come back as
    /// duplicates that this method skips.
    async fn commit_batch(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
        // Encode on the caller's thread (outside the writer lock) into one owned buffer, because
        // the blocking task cannot borrow `batch`.
        let encoded = EncodedBatch::encode(batch);
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.commit(&encoded)).await
    }

    async fn get_event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        let id = id.to_hex();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::get_event(conn, &id))).await
    }

    async fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::scan(conn, from, limit))).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::log_size(conn))).await
    }

    async fn neighbours(
        &self,
        datasets: &[Uuid],
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<LineageEdge>, StoreError> {
        let datasets = datasets.to_vec();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::neighbours(conn, &datasets, direction, limit)))
            .await
    }

    async fn search_events(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let owned = query.clone();
        let inner = Arc::clone(&self.inner);
        let events =
            run_blocking(move || inner.read(|conn| read::search_events(conn, &owned))).await?;
        Ok(super::event_page(query, events))
    }

    async fn event_ids_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::event_ids_with_prefix(conn, &prefix, limit)))
            .await
    }

    async fn mentions_dataset(&self, dataset: Uuid) -> Result<bool, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::mentions_dataset(conn, dataset))).await
    }

    /// Pages through `lineage_edges` by rowid; the cursor is the last rowid read.
    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::edges_page(conn, cursor, limit))).await
    }

    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        Some(self)
    }
}

#[async_trait]
impl TransparencyLog for SqliteStore {
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| Ok(rows::tree_head(&commit::read_log_head(conn)?))))
            .await
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::leaf_hashes(conn, from, to))).await
    }

    async fn tree_nodes(
        &self,
        height: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::tree_nodes(conn, height, from, to))).await
    }

    async fn tree_nodes_end(&self, height: u32) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            inner.read(|conn| {
                let end: Option<i64> = conn
                    .prepare_cached("SELECT max(node_index) FROM log_nodes WHERE height = ?1")
                    .and_then(|mut stmt| stmt.query_row([height], |row| row.get(0)))
                    .map_err(classify)?;
                Ok(rows::tree_nodes_end(end))
            })
        })
        .await
    }

    async fn add_tree_nodes(&self, height: u32, nodes: &[(u64, Hash)]) -> Result<(), StoreError> {
        let nodes = nodes.to_vec();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let mut conn = inner.writer();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            inner.ensure_schema(&tx)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO log_nodes (height, node_index, hash) VALUES (?1, ?2, ?3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .map_err(classify)?;
                for (index, hash) in &nodes {
                    let index = to_sql_int(*index, "node index")?;
                    insert
                        .execute(params![height, index, &hash[..]])
                        .map_err(classify)?;
                }
            }
            tx.commit().map_err(classify)
        })
        .await
    }

    async fn insert_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<Option<Hash>, StoreError> {
        let note = note.to_owned();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.insert_checkpoint(tree_size, root_hash, &note)).await
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| read::checkpoints(conn, from_size, limit))).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            inner.read(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
                         ORDER BY tree_size DESC LIMIT 1",
                    )
                    .map_err(classify)?;
                let mut rows = stmt.query([]).map_err(classify)?;
                match rows.next().map_err(classify)? {
                    Some(row) => read::read_checkpoint_row(row).map(Some),
                    None => Ok(None),
                }
            })
        })
        .await
    }
}

/// Run blocking SQLite work on Tokio's blocking pool.
async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // The runtime is shutting down: nothing was decided, the caller may try again.
        Err(e) if e.is_cancelled() => Err(StoreError::Unavailable(format!(
            "store task cancelled: {e}"
        ))),
        Err(e) => Err(StoreError::Query(format!("store task panicked: {e}"))),
    }
}

impl Inner {
    fn open(path: PathBuf) -> Result<Inner, StoreError> {
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(StoreError::Config(format!(
                "SQLite store path '{}' is not a file: give a file path, e.g. sqlite://./geoprov-data/lineage.db",
                path.display()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::config::ensure_dir(parent)
                .map_err(|why| StoreError::Config(format!("SQLite store: {why}")))?;
        }
        let writer = open_connection(&path, Role::Writer)?;
        Ok(Inner {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            schema: SchemaGate::new(SCHEMA_VERSION),
        })
    }

    /// The write connection. A poisoned mutex is recovered: a panic inside a commit unwinds
    /// through rusqlite's `Transaction`, whose drop rolls back, so the connection is clean.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on a read connection from the pool, after checking the schema version.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => open_connection(&self.path, Role::Reader)?,
        };
        let result = self.ensure_schema(&conn).and_then(|()| f(&mut conn));
        // A connection that just failed with an I/O-class error is dropped rather than reused.
        if !matches!(result, Err(StoreError::Unavailable(_))) {
            let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }

    /// Fail with [`StoreError::Schema`] unless the database is at [`SCHEMA_VERSION`].
    fn ensure_schema(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.schema.is_open() {
            return Ok(());
        }
        let found = migrate::schema_version(conn)?;
        self.schema.admit(&self.path.display().to_string(), found)
    }
}

/// A `u64` counter as an SQLite integer (an `i64`); refuses the impossible overflow.
pub(super) fn to_sql_int(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds i64")))
}
