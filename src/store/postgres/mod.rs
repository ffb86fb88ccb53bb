//! The PostgreSQL store: for teams that outgrow one machine, with many workers on many hosts
//! writing to one database.
//!
//! Not for: anything but the [`Store`] and [`TransparencyLog`] contracts. It behaves exactly
//! like the SQLite store ([`super::sqlite`]); this file documents only what differs. Proofs,
//! checkpoint signing and the Merkle math live in the tlog module.
//!
//! # Connecting
//!
//! `postgres://user:pass@host:port/db?param=value&...` or `postgresql://...`, with libpq-style
//! parameters. Those understood by `tokio_postgres` pass through to it (`connect_timeout`,
//! `application_name`, `options`, `keepalives_idle`, `target_session_attrs`, ...); geoprov reads
//! and removes these before that:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `sslmode` | `disable`, `prefer`, `require`, `verify-ca`, `verify-full` (libpq's meanings, through rustls) | `prefer` |
//! | `sslrootcert` | PEM file of the CA certificate(s) to trust, or `system` for the Mozilla root set | `~/.postgresql/root.crt` (for `verify-*`) |
//! | `schema` | the schema geoprov's tables live in (created by `migrate` if missing); sets `search_path` at connection start | the server's `search_path` |
//! | `pool_size` | connections kept by this process (one per concurrent worker, plus readers) | [`DEFAULT_POOL_SIZE`] |
//!
//! As in libpq, `require` encrypts without checking who answers, unless `sslrootcert` names a
//! file: then it checks the chain like `verify-ca`. `verify-ca` checks the chain but not the host
//! name; `verify-full` checks both. Client certificates (`sslcert`, `sslkey`) are refused rather
//! than ignored.
//!
//! # Schema
//!
//! Versioned migrations (`migrations/postgres/NNNN_*.sql`, compiled in), recorded in
//! `schema_migrations(version, name, applied_at)` and applied inside one transaction under a
//! transaction-scoped advisory lock, so that many workers starting at once are safe: one
//! migrates, the others wait a moment and find nothing to do. Tables as in SQLite, with
//! PostgreSQL types: `lineage_events` keeps the reference task's columns and types exactly
//! (`text`, `timestamptz`) and adds `log_position bigint` (unique), `started_at`, `ended_at`
//! (`timestamptz`), `leaf_hash bytea`, and the event's lineage edges as `inputs` and `outputs`
//! (`uuid[]`, distinct and sorted; the edges are every input x every output), each with a GIN
//! index, instead of SQLite's `lineage_edges` table (migration 0003 says why; a read-only view of
//! that name lists the pairs); `log_head`
//! holds the log size and the frontier (`bytea`, the RFC 6962 compact range as concatenated
//! 32-byte hashes, largest subtree first); `log_checkpoints(tree_size bigint primary key,
//! root_hash bytea, note text, created_at timestamptz)` holds the signed checkpoints (migration
//! 0002). Triggers refuse `UPDATE`, `DELETE` and `TRUNCATE` on `lineage_events` and
//! `log_checkpoints`.
//!
//! Migration 0002 on a log written by a schema-1 geoprov gives every row that has a position
//! its leaf hash, in position order, and sets the frontier, in Rust, inside the migration's
//! transaction and under its lock (the events' append-only trigger is disabled for that update
//! only, and enabled again before the commit).
//!
//! # Adoption
//!
//! `migrate` can adopt a `lineage_events` table created and filled by the reference Python task
//! (same table, same database): it checks the table's columns and key, adds geoprov's columns as
//! nullable columns without defaults (a catalog change: no table rewrite, the rows and their
//! columns stay byte for byte as they were), creates the other tables, and then, in Rust, reads
//! the rows that have no log position in pages in a stable order (`timestamp`, then `event_id`),
//! parses each `payload_json` with geoprov's own event parser to find its edges and event times,
//! and gives the rows the next positions, with their leaf hashes (over the row's own
//! `timestamp` and `payload_json`, as stored), moving the frontier on in the same transaction.
//! A row whose payload cannot be parsed still gets its position (it is stored, so it is part of
//! the log) but no edges, and a warning names it; `verify` will name it too.
//!
//! The append-only trigger makes exactly one exception for this: a row that has no position
//! yet may be given its geoprov columns once, provided every seed column stays the same. Rows
//! that the Python task keeps writing during a migration are adopted at the next `migrate`
//! (which `geoprov worker` also runs at start); until then they are not in the log, and an event
//! that geoprov receives with the same id is counted as a duplicate.
//!
//! # Writes
//!
//! [`Store::commit_batch`] is one transaction; the batch's distinct events go to the server as
//! one binary COPY, edges included:
//!
//! 1. `SELECT size, frontier, clock_timestamp() FROM log_head WHERE id = 0 FOR UPDATE`
//!    serializes appends across every worker of every host from here to the commit, which keeps
//!    positions dense and in commit order and the frontier in step with them. The time it
//!    returns is the batch's `timestamp` (when the rows were recorded), so on one server
//!    recorded times never run backwards along the log.
//! 2. Each new event is numbered from the log size in batch order and gets its leaf hash
//!    (`geoprov/leaf/v1` over its position, `event_id`, that time rendered by
//!    [`crate::tlog::format_recorded_at`] and `payload_json`; the server's `timestamptz` keeps
//!    exactly the microseconds that rendering shows, so `verify` recomputes the same bytes from
//!    the stored value), appended to the frontier. The rows, leaf hashes and edges included, are
//!    written with `COPY lineage_events ... FROM STDIN (FORMAT binary)` (one WAL record per heap
//!    page instead of one per row), `log_head` gets the new size and frontier, and the
//!    transaction commits.
//!
//! Which events are new? Usually all of them, so the first attempt assumes so and sends no
//! lookup. If one is stored already (a message redelivered after a crash, or to two workers),
//! the COPY hits the primary key, the transaction is rolled back, and the batch is tried again
//! with a probe pipelined behind the lock (`SELECT_FRESH`, `NOT EXISTS` on the primary key,
//! run once the lock is held, so no geoprov commit can slip in between) that leaves the stored
//! ones out. Duplicates come in runs, so the store keeps probing until a batch holds none. A
//! writer that does not take the lock (the Python task during a migration) can still insert an
//! event between the probe and the COPY: that costs one more retry, never a gap or a row twice.
//! Repeated events inside a batch are dropped before sending (the first one counts). Statements
//! are prepared once per connection (deadpool's statement cache).
//!
//! Round trips: `BEGIN`, then the lock, the probe (when probing) and the start of the COPY
//! pipelined as one, the rows streamed, then the end of the COPY and the update of `log_head`
//! pipelined as one, then `COMMIT`. So the lock is held for two round trips plus the server's
//! work; sent one after the other it was four. That matters when the database is on another
//! host, since every worker of every host waits for the lock (the README has the figures).
//!
//! The edges' GIN indexes collect new keys in pending lists; the store merges those lists every
//! `CLEAN_EVERY_EVENTS` events in a task of its own, outside the lock (`EdgeIndexCleaner`),
//! so that no commit has to merge them while every other worker waits for the lock.
//!
//! # The transparency log
//!
//! The [`TransparencyLog`] methods read `log_head` without a lock (one row, so size and frontier
//! come from one snapshot and commits are never held up), the stored `leaf_hash` column and
//! `log_checkpoints`. A checkpoint is one `INSERT ... ON CONFLICT (tree_size) DO NOTHING`: the
//! checkpointers of several worker processes racing for the same size leave one row and no
//! error. [`Store::edges`] reads the stored edges for `verify` from `inputs` x `outputs`, a
//! page of positions at a time.
//!
//! # Outages
//!
//! Every error is classified ([`classify`]): a server that is down, starting, shutting down or
//! full, a dropped connection, a pool timeout, a serialization failure or a deadlock is
//! [`StoreError::Unavailable`], so the worker holds its batch and retries with backoff. The pool
//! drops closed connections and opens new ones on demand, so the store recovers by itself.
//!
//! # Files
//!
//! `mod.rs` ([`PostgresStore`], the pool, the [`Store`] impl), `connect.rs` (the URL),
//! `tls.rs`, `migrate.rs` (the schema), `adopt.rs`, `commit.rs` and `copy_rows.rs` (writes),
//! `read.rs`, `log.rs` (the [`TransparencyLog`] impl), `error.rs` (error mapping). The
//! breadth-first lineage walk is [`crate::lineage::walk`]; this store answers each level with
//! one `= ANY($1)` query over the GIN-indexed edge columns ([`Store::neighbours`]).

mod adopt;
mod commit;
mod connect;
mod copy_rows;
mod error;
mod log;
mod migrate;
mod read;
mod tls;

pub use error::classify;
pub use migrate::SCHEMA_VERSION;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use uuid::Uuid;

use self::commit::EdgeIndexCleaner;
use self::connect::{ConnectSettings, DEFAULT_CONNECT_TIMEOUT};
use self::error::classify_pool;
use self::migrate::schema_version;
use self::tls::tls_connector;
use super::migration::{self, SchemaGate};
use super::{
    CommitReport, Direction, EdgePage, EventPage, EventQuery, LineageEdge, Store, StoreError,
    StoredEvent, TransparencyLog,
};
use crate::event::{EventId, LineageEvent};

/// Connections per store when the URL does not say (`pool_size=N`): enough for the default two
/// worker tasks plus concurrent readers (HTTP queries, the bench's progress poll).
pub const DEFAULT_POOL_SIZE: usize = 4;

/// How long a caller waits for a free pooled connection before [`StoreError::Unavailable`].
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options that code (rather than the URL) may set; the URL's parameters win.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Connections in the pool; size it to the worker's concurrency plus a few readers.
    /// Defaults to [`DEFAULT_POOL_SIZE`]; `pool_size=N` in the URL overrides it.
    pub pool_size: Option<usize>,
}

/// The PostgreSQL store (see the module documentation).
///
/// Cheap to share: hold it in an `Arc<dyn Store>`. Connections are opened on first use, not by
/// [`PostgresStore::open`].
pub struct PostgresStore {
    pool: Pool,
    /// The `schema=` parameter, if any.
    schema: Option<String>,
    /// The URL without password or query, for messages.
    describe: String,
    /// Open once the schema version has been seen to equal [`SCHEMA_VERSION`], so the check
    /// costs one query per store, not one per call.
    schema_gate: SchemaGate,
    /// Whether the next commit looks up which of its events are stored already before its COPY,
    /// instead of assuming they are all new (see "Writes"). Set when a commit meets a stored
    /// event, cleared when one meets none.
    expect_duplicates: AtomicBool,
    /// Merges the edge indexes' pending lists away from the commits (see [`EdgeIndexCleaner`]).
    cleaner: Arc<EdgeIndexCleaner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.describe)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Prepare a pool for `url` (see "Connecting" in the module documentation) with default
    /// options. Reads the CA file now, so a bad TLS setting fails here; connects on first use.
    ///
    /// Does NOT create or upgrade the schema: call [`Store::migrate`]. Until the schema is
    /// current every other method returns [`StoreError::Schema`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        PostgresStore::open_with(url, PostgresOptions::default()).await
    }

    /// [`PostgresStore::open`] with options set by code.
    pub async fn open_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let settings = ConnectSettings::parse(url)?;
        let tls = tls_connector(&settings.tls)?;
        let pool_size = settings
            .pool_size
            .or(options.pool_size)
            .unwrap_or(DEFAULT_POOL_SIZE)
            .max(1);
        let create_timeout = settings
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            + Duration::from_secs(5);
        let manager = Manager::from_config(
            settings.config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(create_timeout))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresStore {
            pool,
            schema: settings.schema,
            describe: settings.describe,
            schema_gate: SchemaGate::new(SCHEMA_VERSION),
            expect_duplicates: AtomicBool::new(false),
            cleaner: Arc::new(EdgeIndexCleaner::default()),
        })
    }

    /// [`PostgresStore::open`], then [`Store::migrate`]: for tests and one-off tools.
    pub async fn open_and_migrate(url: &str) -> Result<Self, StoreError> {
        let store = PostgresStore::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The schema named by the URL's `schema=` parameter, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// A pooled connection. Connection errors name the server (user, host, port and database,
    /// never the password) beside the server's own message.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let at = |why: String| format!("{}: {why}", self.describe);
            match classify_pool(e) {
                StoreError::Unavailable(why) => StoreError::Unavailable(at(why)),
                StoreError::Config(why) => StoreError::Config(at(why)),
                StoreError::Schema(why) => StoreError::Schema(at(why)),
                other => other,
            }
        })
    }

    /// A pooled connection, after checking (once per store) that the schema is current.
    async fn ready_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.client().await?;
        if !self.schema_gate.is_open() {
            let version = schema_version(&client).await?;
            self.schema_gate.admit(&self.describe, version)?;
        }
        Ok(client)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        // Fast path, without locks or DDL (which a least-privilege role may not run): nothing
        // to migrate and nothing to adopt.
        let current = schema_version(&client).await?;
        migration::refuse_newer(&self.describe, current, SCHEMA_VERSION)?;
        if current < SCHEMA_VERSION {
            self.apply_migrations(&mut client).await?;
        }
        let pending: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM lineage_events WHERE log_position IS NULL)",
                &[],
            )
            .await
            .map_err(classify)?
            .try_get(0)
            .map_err(classify)?;
        if pending {
            self.adopt_pending(&mut client).await?;
        }
        self.schema_gate.open();
        Ok(SCHEMA_VERSION)
    }

    /// Cancel-safe in the sense the worker needs: if the caller stops waiting, the transaction
    /// is rolled back (or has committed as a whole), and the unacknowledged messages come back
    /// as duplicates that this method skips.
    async fn commit_batch(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
        self.commit(batch).await
    }

    async fn get_event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        self.read_event(id).await
    }

    async fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_page(from, limit).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let client = self.ready_client().await?;
        read::log_size(&client).await
    }

    async fn neighbours(
        &self,
        datasets: &[Uuid],
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<LineageEdge>, StoreError> {
        self.read_neighbours(datasets, direction, limit).await
    }

    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError> {
        self.read_edges(cursor, limit).await
    }

    async fn search_events(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let events = self.read_search(query).await?;
        Ok(super::event_page(query, events))
    }

    async fn event_ids_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read_ids_with_prefix(prefix, limit).await
    }

    async fn mentions_dataset(&self, dataset: Uuid) -> Result<bool, StoreError> {
        self.read_mentions(dataset).await
    }

    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        Some(self)
    }
}

pub(super) fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{value} exceeds a bigint")))
}
