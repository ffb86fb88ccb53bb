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
//! # Throughput
//!
//! SQLite writes every page a commit dirtied, whole (4 KiB), to the WAL, and a checkpoint later
//! copies it to the database file. Rows are appended in order, a few events per page, but the
//! `event_id` index and both edge indexes have random keys: once an index is much larger than
//! a batch, each new entry dirties a page of its own. That, not SQL or Rust overhead, bounds
//! commit throughput, and it falls as the store grows. On the 2-core development VM
//! (`measure_commit_throughput` in `tests/it/sqlite_store.rs`: batches of 1,000 events of about
//! 650 bytes with one edge each, `synchronous=FULL`) it measured about 43,000 events/s over the
//! first 50,000 events and about 30,000 events/s around 200,000; duplicates are skipped at about
//! 400,000 events/s.
//!
//! # Lineage walks
//!
//! Breadth-first, one indexed lookup per dataset reached, each dataset expanded once (see
//! `walk`), so cycles, diamonds and huge depths cost nothing extra. Ten levels up in a store of
//! a million events took 20-40 ms. A walk that would reach more than
//! [`DEFAULT_MAX_LINEAGE_NODES`] datasets is refused rather than answered in part.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use uuid::Uuid;

use super::Migration;
use super::{
    CommitReport, Direction, EdgePage, LineageEdge, LineageGraph, Store, StoreError,
    StoredCheckpoint, StoredEdge, StoredEvent, TransparencyLog, TreeHead,
};
use crate::event::{EventId, LineageEvent};
use crate::tlog::{event_leaf_hash, CompactRange, Hash};

/// Every migration this binary knows, oldest first. Never edit one that has shipped; append.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_tlog",
        sql: include_str!("migrations/sqlite/0002_tlog.sql"),
    },
    Migration {
        version: 3,
        name: "0003_log_nodes",
        sql: include_str!("migrations/sqlite/0003_log_nodes.sql"),
    },
];

/// The schema version this binary reads and writes (the newest migration it knows).
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Default cap on the datasets one [`Store::lineage`] walk may reach before it is refused.
///
/// 100,000 nodes is a few megabytes of JSON and a fraction of a second of SQLite work; a walk
/// that reaches more (typically "downstream of a base layer everything uses") is an error that
/// asks for a smaller depth rather than an unbounded answer. Edges are capped at
/// [`EDGES_PER_NODE_LIMIT`] times this number.
pub const DEFAULT_MAX_LINEAGE_NODES: usize = 100_000;

/// A walk may traverse at most this many edges per allowed node (see
/// [`DEFAULT_MAX_LINEAGE_NODES`]); several events can link the same two datasets.
pub const EDGES_PER_NODE_LIMIT: usize = 4;

/// How long the writer waits for a lock held by another process before giving up.
///
/// Inside one process the writer mutex already serializes commits, so this only covers another
/// process (a second `geoprov worker`, `geoprov migrate`, an operator's `sqlite3` shell). A
/// normal commit of another geoprov holds the lock for a few milliseconds; anything longer is an
/// outage, and the worker's backoff (which does not burn retries) is the right place to wait,
/// not a blocked thread inside SQLite that cannot see shutdown.
const WRITE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a reader waits for a lock. In WAL mode readers only wait in rare cases (WAL
/// recovery after a crash, a checkpoint resetting the WAL), so this can be generous.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Read connections kept open between reads; more are opened on demand under load.
const MAX_IDLE_READERS: usize = 4;

/// Page cache per connection, in KiB (SQLite's negative `cache_size` convention). The writer
/// touches the hot end of three b-trees plus random pages of the `event_id` and edge indexes;
/// 64 MiB keeps a few million rows' worth of interior pages in memory.
const CACHE_SIZE_KIB: i64 = 65_536;

/// WAL size, in pages, at which a commit also checkpoints (SQLite's default is 1000, 4 MiB).
///
/// Every commit writes each page it dirtied to the WAL, and a checkpoint copies each distinct
/// page to the database file once. The `event_id` and edge indexes have random keys, so a batch
/// dirties pages all over them; checkpointing every 128 MiB instead of every 4 MiB lets a page
/// dirtied by many batches be copied once, which cut bytes written per event by about 40% and
/// raised throughput 1.6-2.4x in `measure_commit_throughput` at 100,000 events.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 32_768;

/// The WAL file is truncated back to this size after a checkpoint resets it, so its disk use
/// stays bounded at about the checkpoint size.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 128 << 20;

/// Write `t` as the `timestamp`, `started_at` and `ended_at` columns hold it: RFC 3339 in UTC,
/// always six fractional digits and `Z` (`2024-05-01T10:00:00.250000Z`), so that text order is
/// time order. Hand-rolled because it runs twice per event and chrono's `format` re-parses its
/// pattern on every call.
fn write_timestamp(out: &mut String, t: DateTime<Utc>) {
    // A leap second reports 1,000,000 or more microseconds; keep the fixed width.
    let micros = t.timestamp_subsec_micros().min(999_999);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

/// [`write_timestamp`] into a new string.
fn timestamp_text(t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(27);
    write_timestamp(&mut out, t);
    out
}

/// `ON CONFLICT (event_id) DO NOTHING`, not `INSERT OR IGNORE`: OR IGNORE would also swallow a
/// violated `log_position` UNIQUE or NOT NULL constraint and silently drop the event, while
/// this skips only a duplicate id and lets any other violation fail the batch.
const INSERT_EVENT: &str = "INSERT INTO lineage_events (event_id, dataset_uuid, operation, \
     crs_from, crs_to, processor_id, timestamp, payload_json, log_position, started_at, ended_at, \
     leaf_hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (event_id) DO NOTHING";

const INSERT_EDGE: &str =
    "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) VALUES (?1, ?2, ?3, ?4)";

const SELECT_LOG_SIZE: &str = "SELECT size FROM log_head WHERE id = 0";

const SELECT_LOG_HEAD: &str = "SELECT size, frontier FROM log_head WHERE id = 0";

const UPDATE_LOG_HEAD: &str = "UPDATE log_head SET size = ?1, frontier = ?2 WHERE id = 0";

/// The columns [`StoredEvent`] is read from, in the order `read_event_row` expects.
const EVENT_COLUMNS: &str = "log_position, event_id, dataset_uuid, operation, crs_from, crs_to, \
     processor_id, timestamp, payload_json, started_at, ended_at";

/// The embedded SQLite store (see the module documentation).
///
/// Cheap to share: hold it in an `Arc<dyn Store>`. Dropping the last handle closes the file.
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// See [`DEFAULT_MAX_LINEAGE_NODES`].
    max_lineage_nodes: usize,
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
    /// Set once the schema version has been seen to equal [`SCHEMA_VERSION`], so the check
    /// costs one query per store, not one per call.
    schema_ready: AtomicBool,
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
            max_lineage_nodes: DEFAULT_MAX_LINEAGE_NODES,
        })
    }

    /// [`SqliteStore::open`], then [`Store::migrate`]: for tests, `serve` and one-off tools.
    pub async fn open_and_migrate(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = SqliteStore::open(path).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Change the cap on datasets a lineage walk may reach (default
    /// [`DEFAULT_MAX_LINEAGE_NODES`]; edges are capped at [`EDGES_PER_NODE_LIMIT`] times it).
    #[must_use]
    pub fn with_max_lineage_nodes(mut self, max_nodes: usize) -> Self {
        self.max_lineage_nodes = max_nodes.max(1);
        self
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
        run_blocking(move || inner.read(|conn| get_event(conn, &id))).await
    }

    async fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| scan(conn, from, limit))).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| log_size(conn))).await
    }

    async fn lineage(
        &self,
        root: Uuid,
        direction: Direction,
        depth: u32,
    ) -> Result<LineageGraph, StoreError> {
        let inner = Arc::clone(&self.inner);
        let limits = WalkLimits {
            max_nodes: self.max_lineage_nodes,
            max_edges: self.max_lineage_nodes.saturating_mul(EDGES_PER_NODE_LIMIT),
        };
        run_blocking(move || inner.read(|conn| walk(conn, root, direction, depth, limits))).await
    }

    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        Some(self)
    }
}

#[async_trait]
impl TransparencyLog for SqliteStore {
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            inner.read(|conn| {
                let range = read_log_head(conn)?;
                Ok(TreeHead {
                    size: range.size(),
                    root: range.root(),
                })
            })
        })
        .await
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| leaf_hashes(conn, from, to))).await
    }

    /// Pages through `lineage_edges` by rowid; the cursor is the last rowid read.
    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| edges_page(conn, cursor, limit))).await
    }

    async fn tree_nodes(
        &self,
        height: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| tree_nodes(conn, height, from, to))).await
    }

    async fn tree_nodes_end(&self, height: u32) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            inner.read(|conn| {
                let end: Option<i64> = conn
                    .prepare_cached("SELECT max(node_index) FROM log_nodes WHERE height = ?1")
                    .and_then(|mut stmt| stmt.query_row([height], |row| row.get(0)))
                    .map_err(classify)?;
                Ok(end.map_or(0, |i| u64::try_from(i).unwrap_or(0).saturating_add(1)))
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

    async fn add_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<bool, StoreError> {
        let note = note.to_owned();
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.add_checkpoint(tree_size, root_hash, &note)).await
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.read(|conn| checkpoints(conn, from_size, limit))).await
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
                    Some(row) => read_checkpoint_row(row).map(Some),
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
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!(
                    "cannot create the directory {} for the SQLite store: {e}",
                    parent.display()
                ))
            })?;
        }
        let writer = open_connection(&path, Role::Writer)?;
        Ok(Inner {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            schema_ready: AtomicBool::new(false),
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
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let version = schema_version(conn)?;
        if version != SCHEMA_VERSION {
            return Err(version_mismatch(&self.path, version));
        }
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn migrate(&self) -> Result<u32, StoreError> {
        let mut conn = self.writer();
        let current = schema_version(&conn)?;
        if current > SCHEMA_VERSION {
            return Err(version_mismatch(&self.path, current));
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            // Look again under the write lock: another process may have migrated meanwhile.
            let now = schema_version(&tx)?;
            if now > SCHEMA_VERSION {
                return Err(version_mismatch(&self.path, now));
            }
            if now >= migration.version {
                continue;
            }
            if now == 0 && table_exists(&tx, "lineage_events")? {
                return Err(StoreError::Schema(format!(
                    "{} already has a lineage_events table that geoprov did not create (no \
                     schema_migrations table); adopting an existing table is not supported by \
                     the SQLite store: use a new file and replay the events with `geoprov emit`",
                    self.path.display()
                )));
            }
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                     version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .map_err(classify)?;
            tx.execute_batch(migration.sql).map_err(|e| {
                let error = classify(e);
                match error {
                    StoreError::Query(detail) => StoreError::Schema(format!(
                        "migration {} failed on {}: {detail}",
                        migration.name,
                        self.path.display()
                    )),
                    other => other,
                }
            })?;
            if migration.version == 2 {
                backfill_leaves(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![migration.version, timestamp_text(Utc::now())],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)?;
            tracing::info!(
                message = "Applied store migration.",
                migration = migration.name,
                path = %self.path.display()
            );
        }
        let version = schema_version(&conn)?;
        if version == SCHEMA_VERSION {
            self.schema_ready.store(true, Ordering::Release);
        }
        Ok(version)
    }

    /// The whole batch in one `BEGIN IMMEDIATE` transaction (see [`Store::commit_batch`]).
    fn commit(&self, batch: &EncodedBatch) -> Result<CommitReport, StoreError> {
        let mut conn = self.writer();
        // IMMEDIATE takes the write lock up front, so a busy database fails here, before any
        // work, and never half-way through as a deferred transaction's lock upgrade could.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        self.ensure_schema(&tx)?;
        let mut range = read_log_head(&tx)?;
        let start = range.size();
        let mut size = start;
        let mut duplicates = 0_u64;
        // One recording time for the whole batch: the rows become visible together.
        let recorded_at = timestamp_text(Utc::now());
        {
            let mut insert_event = tx.prepare_cached(INSERT_EVENT).map_err(classify)?;
            let mut insert_edge = tx.prepare_cached(INSERT_EDGE).map_err(classify)?;
            for row in &batch.rows {
                let position = to_sql_int(size, "log position")?;
                let event_id = batch.str(row.event_id);
                let operation = batch.str(row.operation);
                let payload_json = batch.str(row.payload_json);
                // The leaf covers the exact timestamp text stored in this row.
                let leaf = event_leaf_hash(size, event_id, &recorded_at, payload_json)
                    .map_err(|e| StoreError::Query(e.to_string()))?;
                let inserted = insert_event
                    .execute(params![
                        event_id,
                        batch.str(row.dataset_uuid),
                        operation,
                        row.crs_from.map(|s| batch.str(s)),
                        row.crs_to.map(|s| batch.str(s)),
                        batch.str(row.processor_id),
                        recorded_at,
                        payload_json,
                        position,
                        row.started_at.map(|s| batch.str(s)),
                        row.ended_at.map(|s| batch.str(s)),
                        &leaf[..],
                    ])
                    .map_err(classify)?;
                if inserted == 0 {
                    // Stored before, or earlier in this batch: skipped, never an error.
                    duplicates += 1;
                    continue;
                }
                size += 1;
                range.append(leaf);
                for &from in batch.uuids(row.inputs.clone()) {
                    for &to in batch.uuids(row.outputs.clone()) {
                        insert_edge
                            .execute(params![batch.str(from), batch.str(to), event_id, operation])
                            .map_err(classify)?;
                    }
                }
            }
        }
        if size != start {
            write_log_head(&tx, &range)?;
        }
        tx.commit().map_err(classify)?;
        Ok(CommitReport {
            inserted: size - start,
            duplicates,
            log_size: size,
        })
    }
}

impl Inner {
    /// [`TransparencyLog::add_checkpoint`] on the write connection, in one transaction.
    fn add_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        self.ensure_schema(&tx)?;
        let head = read_log_head(&tx)?;
        if tree_size > head.size() {
            return Err(StoreError::Query(format!(
                "a checkpoint at tree size {tree_size} is beyond the log (size {})",
                head.size()
            )));
        }
        if tree_size == head.size() && root_hash != head.root() {
            return Err(StoreError::Query(format!(
                "the checkpoint root for tree size {tree_size} is not the log's root"
            )));
        }
        let size = to_sql_int(tree_size, "tree size")?;
        let stored: Option<Vec<u8>> = tx
            .query_row(
                "SELECT root_hash FROM log_checkpoints WHERE tree_size = ?1",
                [size],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(classify)?;
        if let Some(stored) = stored {
            if stored.as_slice() != root_hash.as_slice() {
                return Err(StoreError::Query(format!(
                    "a checkpoint at tree size {tree_size} with another root is already stored"
                )));
            }
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO log_checkpoints (tree_size, root_hash, note, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![size, &root_hash[..], note, timestamp_text(Utc::now())],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        Ok(true)
    }
}

/// The persisted frontier at the log's size.
fn read_log_head(conn: &Connection) -> Result<CompactRange, StoreError> {
    let (size, frontier): (i64, Vec<u8>) = conn
        .prepare_cached(SELECT_LOG_HEAD)
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(classify)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    if frontier.len() % 32 != 0 {
        return Err(StoreError::Corrupt(format!(
            "log_head.frontier is {} bytes, not a multiple of 32",
            frontier.len()
        )));
    }
    let hashes: Vec<Hash> = frontier
        .chunks_exact(32)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect();
    CompactRange::from_parts(size, hashes)
        .map_err(|e| StoreError::Corrupt(format!("log_head.frontier: {e}")))
}

/// Writes the size and frontier of `range` to `log_head`.
fn write_log_head(conn: &Connection, range: &CompactRange) -> Result<(), StoreError> {
    let size = to_sql_int(range.size(), "log size")?;
    let frontier: Vec<u8> = range.hashes().concat();
    conn.prepare_cached(UPDATE_LOG_HEAD)
        .and_then(|mut stmt| stmt.execute(params![size, frontier]))
        .map_err(classify)?;
    Ok(())
}

/// Rows read per step while backfilling leaf hashes.
const BACKFILL_PAGE: usize = 10_000;

/// Migration 2 on a log written before it: gives every row its leaf hash and builds the
/// frontier, inside the migration's transaction (the update trigger is dropped and recreated
/// around it, as the 0001 migration foresees).
fn backfill_leaves(tx: &Connection) -> Result<(), StoreError> {
    let size = log_size(tx)?;
    if size == 0 {
        return Ok(());
    }
    tx.execute_batch("DROP TRIGGER lineage_events_no_update")
        .map_err(classify)?;
    let mut range = CompactRange::new();
    while range.size() < size {
        let rows = scan(tx, range.size(), BACKFILL_PAGE)?;
        if rows.is_empty() {
            break;
        }
        let mut update = tx
            .prepare_cached("UPDATE lineage_events SET leaf_hash = ?1 WHERE log_position = ?2")
            .map_err(classify)?;
        for row in rows {
            if row.position != range.size() {
                return Err(StoreError::Corrupt(format!(
                    "log position {} is missing; cannot build the log",
                    range.size()
                )));
            }
            let leaf = event_leaf_hash(
                row.position,
                &row.event_id,
                &timestamp_text(row.recorded_at),
                &row.payload_json,
            )
            .map_err(|e| StoreError::Query(e.to_string()))?;
            update
                .execute(params![
                    &leaf[..],
                    to_sql_int(row.position, "log position")?
                ])
                .map_err(classify)?;
            range.append(leaf);
        }
    }
    if range.size() != size {
        return Err(StoreError::Corrupt(format!(
            "log_head.size is {size} but the log holds {} rows",
            range.size()
        )));
    }
    write_log_head(tx, &range)?;
    tx.execute_batch(
        "CREATE TRIGGER lineage_events_no_update BEFORE UPDATE ON lineage_events \
         BEGIN SELECT RAISE(ABORT, 'lineage_events is append-only'); END;",
    )
    .map_err(classify)?;
    Ok(())
}

fn tree_nodes(
    conn: &Connection,
    height: u32,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Hash)>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let (lo, hi) = (
        to_sql_int(from, "node index")?,
        to_sql_int(to, "node index")?,
    );
    let mut stmt = conn
        .prepare_cached(
            "SELECT node_index, hash FROM log_nodes \
             WHERE height = ?1 AND node_index >= ?2 AND node_index < ?3 ORDER BY node_index",
        )
        .map_err(classify)?;
    let rows = stmt
        .query_map(params![height, lo, hi], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .map_err(classify)?;
    let mut out = Vec::new();
    for row in rows {
        let (index, hash) = row.map_err(classify)?;
        let hash: Hash = hash.try_into().map_err(|_| {
            StoreError::Corrupt(format!("log node {height}/{index} is not 32 bytes"))
        })?;
        out.push((u64::try_from(index).unwrap_or(0), hash));
    }
    Ok(out)
}

fn leaf_hashes(conn: &Connection, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let (lo, hi) = (to_sql_int(from, "position")?, to_sql_int(to, "position")?);
    let mut stmt = conn
        .prepare_cached(
            "SELECT log_position, leaf_hash FROM lineage_events \
             WHERE log_position >= ?1 AND log_position < ?2 ORDER BY log_position",
        )
        .map_err(classify)?;
    let mut rows = stmt.query(params![lo, hi]).map_err(classify)?;
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0).min(1 << 20));
    let mut expected = from;
    while let Some(row) = rows.next().map_err(classify)? {
        let position: i64 = row.get(0).map_err(classify)?;
        if u64::try_from(position).ok() != Some(expected) {
            return Err(StoreError::Corrupt(format!(
                "log position {expected} is missing"
            )));
        }
        let hash: Option<Vec<u8>> = row.get(1).map_err(classify)?;
        let hash: Hash = hash.and_then(|h| h.try_into().ok()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the leaf_hash of log position {expected} is missing or not 32 bytes"
            ))
        })?;
        out.push(hash);
        expected += 1;
    }
    if expected != to {
        return Err(StoreError::Corrupt(format!(
            "log position {expected} is missing"
        )));
    }
    Ok(out)
}

fn edges_page(conn: &Connection, cursor: u64, limit: usize) -> Result<EdgePage, StoreError> {
    let after = to_sql_int(cursor, "edge cursor")?;
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT g.rowid, g.event_id, e.log_position, g.from_uuid, g.to_uuid \
             FROM lineage_edges AS g LEFT JOIN lineage_events AS e ON e.event_id = g.event_id \
             WHERE g.rowid > ?1 ORDER BY g.rowid LIMIT ?2",
        )
        .map_err(classify)?;
    let mut rows = stmt.query(params![after, limit]).map_err(classify)?;
    let mut page = EdgePage::default();
    let mut last = after;
    while let Some(row) = rows.next().map_err(classify)? {
        last = row.get(0).map_err(classify)?;
        let position: Option<i64> = row.get(2).map_err(classify)?;
        page.edges.push(StoredEdge {
            event_id: row.get(1).map_err(classify)?,
            position: position.and_then(|p| u64::try_from(p).ok()),
            from: row.get(3).map_err(classify)?,
            to: row.get(4).map_err(classify)?,
        });
    }
    if !page.edges.is_empty() {
        page.next = u64::try_from(last).ok();
    }
    Ok(page)
}

fn checkpoints(
    conn: &Connection,
    from_size: u64,
    limit: usize,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    let Ok(from) = i64::try_from(from_size) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
             WHERE tree_size >= ?1 ORDER BY tree_size LIMIT ?2",
        )
        .map_err(classify)?;
    let mut rows = stmt.query(params![from, limit]).map_err(classify)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        out.push(read_checkpoint_row(row)?);
    }
    Ok(out)
}

/// One `log_checkpoints` row (`tree_size, root_hash, note, created_at`).
fn read_checkpoint_row(row: &rusqlite::Row<'_>) -> Result<StoredCheckpoint, StoreError> {
    let size: i64 = row.get(0).map_err(classify)?;
    let tree_size = u64::try_from(size)
        .map_err(|_| StoreError::Corrupt(format!("negative checkpoint tree size {size}")))?;
    let root: Vec<u8> = row.get(1).map_err(classify)?;
    let root_hash: Hash = root.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "the checkpoint at tree size {tree_size} has a root_hash that is not 32 bytes"
        ))
    })?;
    Ok(StoredCheckpoint {
        tree_size,
        root_hash,
        note: row.get(2).map_err(classify)?,
        created_at: row.get(3).map_err(classify)?,
    })
}

/// Which connection [`open_connection`] configures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

fn open_connection(path: &Path, role: Role) -> Result<Connection, StoreError> {
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    let busy = match role {
        Role::Writer => WRITE_BUSY_TIMEOUT,
        Role::Reader => READ_BUSY_TIMEOUT,
    };
    conn.busy_timeout(busy).map_err(classify)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "{} cannot use WAL mode (got journal_mode={mode}); put the SQLite store on a local \
             file system",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(classify)?;
    // Schema version 1 declares no foreign key; this makes any that a later migration
    // declares binding from the start.
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(classify)?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)
        .map_err(classify)?;
    if role == Role::Writer {
        // Checkpoints run on the committing connection; see the constants for the sizes.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(classify)?;
        let _: i64 = conn
            .pragma_update_and_check(
                None,
                "journal_size_limit",
                JOURNAL_SIZE_LIMIT_BYTES,
                |row| row.get(0),
            )
            .map_err(classify)?;
    }
    if role == Role::Reader {
        // Defence in depth: a reader can never write, whatever SQL it is given.
        conn.pragma_update(None, "query_only", true)
            .map_err(classify)?;
    }
    Ok(conn)
}

/// The newest applied migration, or 0 for a database geoprov never migrated.
fn schema_version(conn: &Connection) -> Result<u32, StoreError> {
    if !table_exists(conn, "schema_migrations")? {
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .map_err(classify)?;
    let version = version.unwrap_or(0);
    u32::try_from(version).map_err(|_| {
        StoreError::Schema(format!(
            "schema_migrations holds an impossible version {version}"
        ))
    })
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
    .map_err(classify)
}

fn version_mismatch(path: &Path, found: u32) -> StoreError {
    if found > SCHEMA_VERSION {
        StoreError::Schema(format!(
            "{} has schema version {found}, newer than version {SCHEMA_VERSION} that this geoprov \
             knows; upgrade geoprov (an older binary refuses to touch a newer schema)",
            path.display()
        ))
    } else {
        StoreError::Schema(format!(
            "{} has schema version {found} but this geoprov needs version {SCHEMA_VERSION}; run \
             `geoprov migrate`",
            path.display()
        ))
    }
}

/// Map a rusqlite error to the [`StoreError`] the worker can act on.
///
/// - [`StoreError::Unavailable`] (hold and retry): busy or locked database, I/O error, disk full,
///   read-only or unopenable file, lock-protocol failure, schema changed under a prepared
///   statement, out of memory, interrupted. All of them can clear without any change to the
///   batch.
/// - [`StoreError::Corrupt`]: a damaged database file, or a stored value of the wrong type or
///   range.
/// - [`StoreError::Config`]: the file is not a SQLite database.
/// - [`StoreError::Query`]: everything else, i.e. constraint violations (including the
///   append-only triggers) and SQL errors, which are geoprov's bug and will not heal by retrying.
pub fn classify(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::SchemaChanged
            | ErrorCode::OutOfMemory
            | ErrorCode::OperationInterrupted => StoreError::Unavailable(e.to_string()),
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(e.to_string()),
            ErrorCode::NotADatabase => {
                StoreError::Config(format!("the file is not a SQLite database: {e}"))
            }
            _ => StoreError::Query(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}

/// A `u64` counter as an SQLite integer (an `i64`); refuses the impossible overflow.
fn to_sql_int(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{what} {value} exceeds i64")))
}

fn log_size(conn: &Connection) -> Result<u64, StoreError> {
    let size: i64 = conn
        .prepare_cached(SELECT_LOG_SIZE)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(classify)?;
    u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))
}

fn get_event(conn: &Connection, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE event_id = ?1"
        ))
        .map_err(classify)?;
    let mut rows = stmt.query([event_id]).map_err(classify)?;
    match rows.next().map_err(classify)? {
        Some(row) => read_event_row(row).map(Some),
        None => Ok(None),
    }
}

fn scan(conn: &Connection, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
    // Positions never exceed i64::MAX, so a larger start is past the end.
    let Ok(from) = i64::try_from(from) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE log_position >= ?1 \
             ORDER BY log_position LIMIT ?2"
        ))
        .map_err(classify)?;
    let mut rows = stmt.query(params![from, sql_limit]).map_err(classify)?;
    let mut events = Vec::with_capacity(limit.min(4096));
    while let Some(row) = rows.next().map_err(classify)? {
        events.push(read_event_row(row)?);
    }
    Ok(events)
}

/// One `lineage_events` row selected with [`EVENT_COLUMNS`].
fn read_event_row(row: &rusqlite::Row<'_>) -> Result<StoredEvent, StoreError> {
    let position: i64 = row.get(0).map_err(classify)?;
    let position = u64::try_from(position)
        .map_err(|_| StoreError::Corrupt(format!("negative log position {position}")))?;
    let text = |index: usize| -> Result<Option<String>, StoreError> {
        row.get::<_, Option<String>>(index).map_err(classify)
    };
    let event_id = text(1)?.unwrap_or_default();
    let required = |index: usize, column: &str| -> Result<String, StoreError> {
        text(index)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the row at log position {position} (event_id {event_id}) has no {column}"
            ))
        })
    };
    let dataset_uuid = required(2, "dataset_uuid")?;
    let operation = required(3, "operation")?;
    let crs_from = text(4)?;
    let crs_to = text(5)?;
    let processor_id = required(6, "processor_id")?;
    let timestamp = required(7, "timestamp")?;
    let payload_json = required(8, "payload_json")?;
    let recorded_at = parse_timestamp(&timestamp).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the row at log position {position} (event_id {event_id}) has an unreadable \
             timestamp '{timestamp}'"
        ))
    })?;
    let event_time = |index: usize, column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        match text(index)? {
            None => Ok(None),
            Some(t) => parse_timestamp(&t).map(Some).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the row at log position {position} (event_id {event_id}) has an \
                     unreadable {column} '{t}'"
                ))
            }),
        }
    };
    let started_at = event_time(9, "started_at")?;
    let ended_at = event_time(10, "ended_at")?;
    Ok(StoredEvent {
        position,
        event_id,
        dataset_uuid,
        operation,
        crs_from,
        crs_to,
        processor_id,
        recorded_at,
        payload_json,
        started_at,
        ended_at,
    })
}

/// Read a `timestamp` column: RFC 3339 as geoprov writes it, or a naive ISO 8601 time
/// (Python's `datetime.isoformat()`, with `T` or a space), taken as UTC.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

/// Caps on one lineage walk.
#[derive(Clone, Copy)]
struct WalkLimits {
    max_nodes: usize,
    max_edges: usize,
}

/// Breadth-first walk of `lineage_edges` from `root`, one level at a time, inside one read
/// transaction (one consistent snapshot).
///
/// Each dataset is expanded exactly once, at its smallest depth, so the work is linear in the
/// edges reached whatever the cycles, diamonds or depth bound. This is why the walk is a loop of
/// indexed lookups rather than one recursive CTE: SQLite's recursive CTEs have no visited set,
/// so a CTE carrying the depth re-expands a dataset at every depth it is reachable at (a
/// three-node cycle with `--depth 1000000` would produce a million rows), while a CTE without
/// the depth cannot honour the bound. Each lookup is one probe of `lineage_edges_to` (upstream)
/// or `lineage_edges_from` (downstream), then one table read per edge found.
fn walk(
    conn: &mut Connection,
    root: Uuid,
    direction: Direction,
    depth: u32,
    limits: WalkLimits,
) -> Result<LineageGraph, StoreError> {
    let tx = conn.transaction().map_err(classify)?;
    let sql = match direction {
        Direction::Upstream => {
            "SELECT from_uuid, event_id, operation FROM lineage_edges WHERE to_uuid = ?1"
        }
        Direction::Downstream => {
            "SELECT to_uuid, event_id, operation FROM lineage_edges WHERE from_uuid = ?1"
        }
    };
    let mut stmt = tx.prepare_cached(sql).map_err(classify)?;
    let mut depths: HashMap<Uuid, u32> = HashMap::new();
    depths.insert(root, 0);
    let mut edges = Vec::new();
    let mut frontier = vec![root];
    let mut next = Vec::new();
    let mut key = Uuid::encode_buffer();
    for level in 0..depth {
        if frontier.is_empty() {
            break;
        }
        for &node in &frontier {
            let node_text: &str = node.hyphenated().encode_lower(&mut key);
            let mut rows = stmt.query([node_text]).map_err(classify)?;
            while let Some(row) = rows.next().map_err(classify)? {
                let other: String = row.get(0).map_err(classify)?;
                let other = Uuid::parse_str(&other).map_err(|_| {
                    StoreError::Corrupt(format!("lineage_edges holds a non-UUID dataset '{other}'"))
                })?;
                if edges.len() >= limits.max_edges {
                    return Err(too_large(root, limits, "edges"));
                }
                let event_id: String = row.get(1).map_err(classify)?;
                let operation: String = row.get(2).map_err(classify)?;
                let (from, to) = match direction {
                    Direction::Upstream => (other, node),
                    Direction::Downstream => (node, other),
                };
                edges.push(LineageEdge {
                    from,
                    to,
                    event_id,
                    operation,
                });
                if !depths.contains_key(&other) {
                    if depths.len() >= limits.max_nodes {
                        return Err(too_large(root, limits, "datasets"));
                    }
                    depths.insert(other, level + 1);
                    next.push(other);
                }
            }
        }
        std::mem::swap(&mut frontier, &mut next);
        next.clear();
    }
    drop(stmt);
    tx.commit().map_err(classify)?;
    let mut nodes: Vec<(Uuid, u32)> = depths.into_iter().collect();
    nodes.sort_unstable_by_key(|&(id, d)| (d, id));
    edges.sort_unstable_by(|a, b| (a.from, a.to, &a.event_id).cmp(&(b.from, b.to, &b.event_id)));
    Ok(LineageGraph {
        root: Some(root),
        nodes,
        edges,
    })
}

fn too_large(root: Uuid, limits: WalkLimits, what: &str) -> StoreError {
    StoreError::Query(format!(
        "the lineage walk from {root} reaches more than {} {what} (the limit is {} datasets and \
         {} edges); ask for a smaller depth",
        if what == "edges" {
            limits.max_edges
        } else {
            limits.max_nodes
        },
        limits.max_nodes,
        limits.max_edges
    ))
}

/// A byte range of [`EncodedBatch::text`].
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

/// One event's columns, as spans of [`EncodedBatch::text`].
#[derive(Debug)]
struct EncodedRow {
    event_id: Span,
    dataset_uuid: Span,
    operation: Span,
    crs_from: Option<Span>,
    crs_to: Option<Span>,
    processor_id: Span,
    started_at: Option<Span>,
    ended_at: Option<Span>,
    payload_json: Span,
    /// Distinct inputs, as indexes into [`EncodedBatch::uuids`].
    inputs: Range<usize>,
    /// Distinct outputs, as indexes into [`EncodedBatch::uuids`].
    outputs: Range<usize>,
}

/// A batch turned into the exact text of its columns, owned so that the blocking task can run
/// after the caller's borrow ends, and packed into one string so that this costs a handful of
/// allocations per batch instead of several per event.
#[derive(Debug, Default)]
struct EncodedBatch {
    text: String,
    rows: Vec<EncodedRow>,
    uuids: Vec<Span>,
}

impl EncodedBatch {
    fn encode(batch: &[LineageEvent]) -> EncodedBatch {
        const UUID_LEN: usize = 36;
        const TIME_LEN: usize = 27;
        let text_len: usize = batch
            .iter()
            .map(|e| {
                64 + UUID_LEN
                    + e.operation.len()
                    + e.crs_from.as_ref().map_or(0, String::len)
                    + e.crs_to.as_ref().map_or(0, String::len)
                    + e.processor_id.len()
                    + 2 * TIME_LEN
                    + e.payload_json.len()
                    + UUID_LEN * (e.inputs.len() + e.outputs.len())
            })
            .sum();
        let uuid_count = batch.iter().map(|e| e.inputs.len() + e.outputs.len()).sum();
        let mut out = EncodedBatch {
            text: String::with_capacity(text_len),
            rows: Vec::with_capacity(batch.len()),
            uuids: Vec::with_capacity(uuid_count),
        };
        let mut scratch = Vec::new();
        for event in batch {
            let start = out.text.len();
            // Writing to a String cannot fail.
            let _ = write!(out.text, "{}", event.event_id);
            let event_id = out.span_from(start);
            let dataset_uuid = out.push_uuid(event.dataset_uuid);
            let operation = out.push_str(&event.operation);
            let crs_from = event.crs_from.as_deref().map(|s| out.push_str(s));
            let crs_to = event.crs_to.as_deref().map(|s| out.push_str(s));
            let processor_id = out.push_str(&event.processor_id);
            let started_at = event
                .started_at
                .map(|t| out.push_time(t.with_timezone(&Utc)));
            let ended_at = event.ended_at.map(|t| out.push_time(t.with_timezone(&Utc)));
            let payload_json = out.push_str(&event.payload_json);
            let inputs = out.push_uuid_set(&event.inputs, &mut scratch);
            let outputs = out.push_uuid_set(&event.outputs, &mut scratch);
            out.rows.push(EncodedRow {
                event_id,
                dataset_uuid,
                operation,
                crs_from,
                crs_to,
                processor_id,
                started_at,
                ended_at,
                payload_json,
                inputs,
                outputs,
            });
        }
        out
    }

    fn span_from(&self, start: usize) -> Span {
        Span {
            start,
            end: self.text.len(),
        }
    }

    fn push_str(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        self.span_from(start)
    }

    fn push_uuid(&mut self, id: Uuid) -> Span {
        let mut buf = Uuid::encode_buffer();
        self.push_str(id.hyphenated().encode_lower(&mut buf))
    }

    fn push_time(&mut self, t: DateTime<Utc>) -> Span {
        let start = self.text.len();
        write_timestamp(&mut self.text, t);
        self.span_from(start)
    }

    /// The distinct ids of `ids` (a repeated input makes one edge, not two).
    fn push_uuid_set(&mut self, ids: &[Uuid], scratch: &mut Vec<Uuid>) -> Range<usize> {
        scratch.clear();
        scratch.extend_from_slice(ids);
        scratch.sort_unstable();
        scratch.dedup();
        let first = self.uuids.len();
        for &id in scratch.iter() {
            let span = self.push_uuid(id);
            self.uuids.push(span);
        }
        first..self.uuids.len()
    }

    fn str(&self, span: Span) -> &str {
        &self.text[span.start..span.end]
    }

    fn uuids(&self, range: Range<usize>) -> &[Span] {
        &self.uuids[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, DEFAULT_MAX_PAYLOAD_BYTES};

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn classify_separates_transient_from_permanent() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_CANTOPEN,
        ] {
            assert!(classify(failure(code)).is_transient(), "code {code}");
        }
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER)),
            StoreError::Query(_)
        ));
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_ERROR)),
            StoreError::Query(_)
        ));
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_CORRUPT)),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            classify(failure(rusqlite::ffi::SQLITE_NOTADB)),
            StoreError::Config(_)
        ));
    }

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5+02:00")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let text = t.map(timestamp_text);
        assert_eq!(text.as_deref(), Some("2024-05-01T10:00:00.500000Z"));
        assert_eq!(
            text.as_deref().and_then(parse_timestamp),
            t,
            "geoprov's own format reads back"
        );
        for secs in [0_i64, 1, 951_782_400, 1_714_557_600, 4_102_444_799] {
            let t = DateTime::from_timestamp(secs, 123_456_789).unwrap_or_default();
            assert_eq!(
                timestamp_text(t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
        assert!(parse_timestamp("2024-05-01 10:00:00.123456").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn encoding_keeps_columns_and_dedups_edges() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let payload =
            format!(r#"{{"dataset_uuid": "{b}", "operation": "mosaic", "processor_id": "p"}}"#);
        let mut event = match parse_event(payload.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES) {
            Ok(event) => event,
            Err(e) => panic!("valid payload refused: {e}"),
        };
        event.inputs = vec![a, a, b];
        event.outputs = vec![b];
        let batch = EncodedBatch::encode(std::slice::from_ref(&event));
        let row = &batch.rows[0];
        assert_eq!(batch.str(row.event_id), event.event_id.to_hex());
        assert_eq!(batch.str(row.dataset_uuid), b.to_string());
        assert_eq!(batch.str(row.operation), "mosaic");
        assert_eq!(batch.str(row.payload_json), event.payload_json);
        assert_eq!(row.inputs.len(), 2, "the repeated input is stored once");
        assert_eq!(row.outputs.len(), 1);
        assert!(row.crs_from.is_none() && row.started_at.is_none());
    }
}
