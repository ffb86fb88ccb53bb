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
//! with a probe pipelined behind the lock ([`SELECT_FRESH`], `NOT EXISTS` on the primary key,
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
//! host, since every worker of every host waits for the lock: through a proxy adding 1 ms of
//! round trip, `geoprov bench --events 50000 --concurrency 4 --batch-size 500` went from
//! ~30,000 to ~43,000 events/s (2 runs each; with batches of 5,000, and on localhost, the
//! difference is within the noise).
//!
//! The edges' GIN indexes collect new keys in pending lists; the store merges those lists every
//! [`CLEAN_EVERY_EVENTS`] events in a task of its own, outside the lock ([`EdgeIndexCleaner`]),
//! so that no commit has to merge them while every other worker waits for the lock.
//!
//! Measured on the 2-core development VM, `geoprov bench --events 200000 --concurrency 4`,
//! embedded broker, median of 5: schema 2 (an edge row per (input, output) pair with two btree
//! indexes, inserted before the lock after a `NOT EXISTS` probe of every event) ~49,000 events/s;
//! edges in the row with GIN, optimistic COPY, rows encoded before the lock ~73,000-74,000;
//! with the pending lists merged outside the lock ~75,000-77,000. At that point the two cores
//! are busy with the worker (queue, parsing, hashing: ~13 us per event) and the server's insert
//! of the row and its five index entries (~11 us).
//!
//! # The transparency log
//!
//! The [`TransparencyLog`] methods read `log_head` without a lock (one row, so size and frontier
//! come from one snapshot and commits are never held up), the stored `leaf_hash` column and
//! `log_checkpoints`. A checkpoint is one `INSERT ... ON CONFLICT (tree_size) DO NOTHING`: the
//! checkpointers of several worker processes racing for the same size leave one row and no
//! error. Hashing leaves under the log lock did not measurably slow commits
//! (`measure_commit_throughput`, batches of 1,000 on the 2-core development VM: 45-48k events/s
//! with one task and 72-79k with two, with or without leaf hashes). `geoprov verify` read and
//! checked a 200,000-event log at about 350,000 events/s (`measure_verify_throughput` in
//! `tests/it/tlog_postgres.rs`), and at about 165,000 events/s since it also checks every
//! event's edges ([`TransparencyLog::edges`] reads them from `inputs` x `outputs`, a page of
//! positions at a time).
//!
//! # Outages
//!
//! Every error is classified ([`classify`]): a server that is down, starting, shutting down or
//! full, a dropped connection, a pool timeout, a serialization failure or a deadlock is
//! [`StoreError::Unavailable`], so the worker holds its batch and retries with backoff. The pool
//! drops closed connections and opens new ones on demand, so the store recovers by itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::SinkExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::copy_rows::{self, EncodedRows};
use super::sqlite::{DEFAULT_MAX_LINEAGE_NODES, EDGES_PER_NODE_LIMIT};
use super::Migration;
use super::{
    CommitReport, Direction, EdgePage, LineageEdge, LineageGraph, Store, StoreError,
    StoredCheckpoint, StoredEdge, StoredEvent, TransparencyLog, TreeHead,
};
use crate::event::{parse_event, EventId, LineageEvent};
use crate::tlog::{event_leaf_hash, format_recorded_at, CompactRange, Hash};

/// Every migration this binary knows, oldest first. Never edit one that has shipped; append.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_tlog",
        sql: include_str!("migrations/postgres/0002_tlog.sql"),
    },
    Migration {
        version: 3,
        name: "0003_edge_columns",
        sql: include_str!("migrations/postgres/0003_edge_columns.sql"),
    },
    Migration {
        version: 4,
        name: "0004_log_nodes",
        sql: include_str!("migrations/postgres/0004_log_nodes.sql"),
    },
];

/// The schema version this binary reads and writes (the newest migration it knows).
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Connections per store when the URL does not say (`pool_size=N`): enough for the default two
/// worker tasks plus concurrent readers (HTTP queries, the bench's progress poll).
pub const DEFAULT_POOL_SIZE: usize = 4;

/// Connection timeout when the URL does not set `connect_timeout`. Short, because an outage is
/// the worker's backoff's business, not a blocked connect's.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive idle time when the URL does not set `keepalives_idle` (tokio-postgres' default
/// is two hours): a peer that vanished without a reset is noticed in well under a minute.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(15);

/// How long a caller waits for a free pooled connection before [`StoreError::Unavailable`].
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The first key of the advisory lock `migrate` takes (`gprv`); the second is a hash of the
/// schema, so that stores in different schemas of one database do not wait for each other.
const MIGRATION_LOCK_CLASS: i32 = 0x6770_7276;

/// Rows adopted per page (see "Adoption" in the module documentation).
const ADOPTION_PAGE: i64 = 1000;

/// How many attempts a commit makes inside the store (see "Writes"): the first may assume every
/// event is new; the others probe, and are repeated only when a writer that does not take the
/// log lock inserted one of the batch's events meanwhile.
const RACE_RETRIES: usize = 4;

/// The log lock, as `migrate` takes it: the log size and frontier.
const LOCK_LOG_HEAD: &str = "SELECT size, frontier FROM log_head WHERE id = 0 FOR UPDATE";

/// The commit's lock: the log size and frontier, and the server's clock once the lock is held
/// (the recording time of the batch; see "Writes").
const LOCK_LOG_HEAD_AT: &str =
    "SELECT size, frontier, clock_timestamp() FROM log_head WHERE id = 0 FOR UPDATE";

/// The log head without a lock (one row: one consistent snapshot of size and frontier).
const SELECT_LOG_HEAD: &str = "SELECT size, frontier FROM log_head WHERE id = 0";

/// The commit's probe, run under the log lock when the batch is expected to hold stored events
/// (see "Writes"): the 1-based ordinals (in `$1`, the batch's distinct event ids) of the events
/// that are not stored yet.
const SELECT_FRESH: &str = r#"
SELECT coalesce(array_agg(b.ord ORDER BY b.ord), '{}')::bigint[]
FROM unnest($1::text[]) WITH ORDINALITY AS b(event_id, ord)
WHERE NOT EXISTS (SELECT 1 FROM lineage_events e WHERE e.event_id = b.event_id)
"#;

/// The commit's insert of the new events, with their edges, under the log lock: a binary COPY,
/// which writes a page of rows per heap WAL record instead of one record per row. The fields
/// known before the lock come first, so that they can be encoded beforehand ([`EncodedRows`]);
/// the record time, position and leaf hash come last.
const COPY_EVENTS: &str = "COPY lineage_events (event_id, dataset_uuid, operation, crs_from, \
     crs_to, processor_id, payload_json, started_at, ended_at, inputs, outputs, \
     \"timestamp\", log_position, leaf_hash) FROM STDIN (FORMAT binary)";

/// The number of columns [`COPY_EVENTS`] names.
const COPY_EVENT_FIELDS: i16 = 14;

/// How many bytes of COPY data a commit collects before sending them: large enough that the
/// per-message cost is negligible, small enough that the server works on the first rows while
/// the next are hashed.
const COPY_CHUNK: usize = 256 * 1024;

const UPDATE_LOG_HEAD: &str = "UPDATE log_head SET size = $1, frontier = $2 WHERE id = 0";

const SELECT_LOG_SIZE: &str = "SELECT size FROM log_head WHERE id = 0";

/// The columns [`StoredEvent`] is read from, in the order [`read_event_row`] expects.
const EVENT_COLUMNS: &str = "log_position, event_id, dataset_uuid, operation, crs_from, crs_to, \
     processor_id, \"timestamp\", payload_json, started_at, ended_at";

/// The seed's columns and the types `migrate` accepts for them in a table it adopts. Text
/// columns may also be `character varying`.
const SEED_COLUMNS: &[(&str, &str)] = &[
    ("event_id", "text"),
    ("dataset_uuid", "text"),
    ("operation", "text"),
    ("crs_from", "text"),
    ("crs_to", "text"),
    ("processor_id", "text"),
    ("timestamp", "timestamp with time zone"),
    ("payload_json", "text"),
];

/// geoprov's columns and their types, for a table that already has some of them.
const GEOPROV_COLUMNS: &[(&str, &str)] = &[
    ("log_position", "bigint"),
    ("started_at", "timestamp with time zone"),
    ("ended_at", "timestamp with time zone"),
    ("leaf_hash", "bytea"),
    ("inputs", "uuid[]"),
    ("outputs", "uuid[]"),
];

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
    /// Set once the schema version has been seen to equal [`SCHEMA_VERSION`], so the check
    /// costs one query per store, not one per call.
    schema_ready: AtomicBool,
    /// Whether the next commit looks up which of its events are stored already before its COPY,
    /// instead of assuming they are all new (see "Writes"). Set when a commit meets a stored
    /// event, cleared when one meets none.
    expect_duplicates: AtomicBool,
    /// Merges the edge indexes' pending lists away from the commits (see [`EdgeIndexCleaner`]).
    cleaner: Arc<EdgeIndexCleaner>,
    /// See [`DEFAULT_MAX_LINEAGE_NODES`].
    max_lineage_nodes: usize,
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
            schema_ready: AtomicBool::new(false),
            expect_duplicates: AtomicBool::new(false),
            cleaner: Arc::new(EdgeIndexCleaner::default()),
            max_lineage_nodes: DEFAULT_MAX_LINEAGE_NODES,
        })
    }

    /// [`PostgresStore::open`], then [`Store::migrate`]: for tests and one-off tools.
    pub async fn open_and_migrate(url: &str) -> Result<Self, StoreError> {
        let store = PostgresStore::open(url).await?;
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

    /// The schema named by the URL's `schema=` parameter, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(classify_pool)
    }

    /// A pooled connection, after checking (once per store) that the schema is current.
    async fn ready_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.client().await?;
        if !self.schema_ready.load(Ordering::Acquire) {
            let version = schema_version(&client).await?;
            if version != SCHEMA_VERSION {
                return Err(self.version_mismatch(version));
            }
            self.schema_ready.store(true, Ordering::Release);
        }
        Ok(client)
    }

    fn version_mismatch(&self, found: u32) -> StoreError {
        if found > SCHEMA_VERSION {
            StoreError::Schema(format!(
                "{} has schema version {found}, newer than version {SCHEMA_VERSION} that this \
                 geoprov knows; upgrade geoprov (an older binary refuses to touch a newer schema)",
                self.describe
            ))
        } else {
            StoreError::Schema(format!(
                "{} has schema version {found} but this geoprov needs version {SCHEMA_VERSION}; \
                 run `geoprov migrate`",
                self.describe
            ))
        }
    }

    /// Apply the missing migrations in one transaction under the migration lock; returns the
    /// version now in force.
    async fn apply_migrations(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<u32, StoreError> {
        let tx = client.transaction().await.map_err(classify)?;
        self.lock_migrations(&tx).await?;
        if let Some(schema) = &self.schema {
            let exists: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                    &[schema],
                )
                .await
                .map_err(classify)?
                .try_get(0)
                .map_err(classify)?;
            if !exists {
                // The name was checked to be a plain identifier when the URL was parsed.
                tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                    .await
                    .map_err(classify)?;
            }
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(classify)?;
        let current = schema_version(&tx).await?;
        if current > SCHEMA_VERSION {
            return Err(self.version_mismatch(current));
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            if migration.version == 1 {
                check_adoptable(&tx).await?;
            }
            tx.batch_execute(migration.sql)
                .await
                .map_err(|e| match classify(e) {
                    StoreError::Query(detail) => StoreError::Schema(format!(
                        "migration {} failed on {}: {detail}",
                        migration.name, self.describe
                    )),
                    other => other,
                })?;
            if migration.version == 2 {
                backfill_leaves(&tx).await?;
            }
            let version = i32::try_from(migration.version).map_err(|_| {
                StoreError::Schema(format!("migration version {} too large", migration.version))
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &migration.name],
            )
            .await
            .map_err(classify)?;
            tracing::info!(
                message = "Applied store migration.",
                migration = migration.name,
                store = %self.describe
            );
        }
        tx.commit().await.map_err(classify)?;
        Ok(SCHEMA_VERSION)
    }

    /// `pg_advisory_xact_lock` for this store's schema: released when `tx` ends.
    async fn lock_migrations(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2::text, current_schema(), '')))",
            &[&MIGRATION_LOCK_CLASS, &self.schema],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Give every row without a log position its position, event times and edges (see
    /// "Adoption" in the module documentation). Returns how many rows were adopted.
    async fn adopt_pending(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<u64, StoreError> {
        let privileged: bool = client
            .query_one(
                "SELECT has_table_privilege('lineage_events', 'UPDATE') \
                    AND has_table_privilege('log_head', 'UPDATE')",
                &[],
            )
            .await
            .map_err(classify)?
            .try_get(0)
            .map_err(classify)?;
        if !privileged {
            tracing::warn!(
                message = "Rows written by another writer wait for adoption, but this role may \
                           not adopt them; run `geoprov migrate` as the tables' owner.",
                store = %self.describe
            );
            return Ok(0);
        }
        let tx = client.transaction().await.map_err(classify)?;
        self.lock_migrations(&tx).await?;
        let head = tx.query_one(LOCK_LOG_HEAD, &[]).await.map_err(classify)?;
        let mut range = log_head_from_row(&head)?;
        let start = to_sql_int(range.size())?;
        let mut size = start;
        let select = tx
            .prepare(
                "SELECT event_id, payload_json, \"timestamp\" FROM lineage_events \
                 WHERE log_position IS NULL ORDER BY \"timestamp\", event_id LIMIT $1",
            )
            .await
            .map_err(classify)?;
        let mut unparsed = 0_u64;
        loop {
            let rows = tx
                .query(&select, &[&ADOPTION_PAGE])
                .await
                .map_err(classify)?;
            if rows.is_empty() {
                break;
            }
            let mut page = AdoptionPage::default();
            for row in &rows {
                let event_id: String = row.try_get(0).map_err(classify)?;
                let payload: Option<String> = row.try_get(1).map_err(classify)?;
                let recorded_at: Option<DateTime<Utc>> = row.try_get(2).map_err(classify)?;
                let position = size
                    .checked_add(i64::try_from(page.ids.len()).unwrap_or(i64::MAX))
                    .ok_or_else(|| StoreError::Corrupt("log size overflows i64".into()))?;
                // The leaf covers the row exactly as stored (the seed columns are not touched).
                let leaf = stored_leaf_hash(position, &event_id, recorded_at, payload.as_deref())?;
                range.append(leaf);
                page.leaves.push(leaf.to_vec());
                if !page.push(event_id, payload.as_deref(), position) {
                    unparsed += 1;
                }
            }
            let updated = tx
                .execute(
                    "UPDATE lineage_events AS e \
                     SET log_position = u.position, started_at = u.started_at, \
                         ended_at = u.ended_at, leaf_hash = u.leaf_hash, \
                         inputs = u.inputs::uuid[], outputs = u.outputs::uuid[] \
                     FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], \
                                 $4::timestamptz[], $5::bytea[], $6::text[], $7::text[]) \
                          AS u(event_id, position, started_at, ended_at, leaf_hash, inputs, \
                               outputs) \
                     WHERE e.event_id = u.event_id AND e.log_position IS NULL",
                    &[
                        &page.ids,
                        &page.positions,
                        &page.started_at,
                        &page.ended_at,
                        &page.leaves,
                        &page.inputs,
                        &page.outputs,
                    ],
                )
                .await
                .map_err(classify)?;
            if updated != page.ids.len() as u64 {
                return Err(StoreError::Unavailable(format!(
                    "adoption raced another writer ({updated} of {} rows updated); retrying \
                     will adopt them",
                    page.ids.len()
                )));
            }
            size += i64::try_from(page.ids.len()).unwrap_or(i64::MAX);
        }
        if size != start {
            write_log_head(&tx, &range).await?;
        }
        tx.commit().await.map_err(classify)?;
        let adopted = u64::try_from(size - start).unwrap_or(0);
        if adopted > 0 {
            tracing::info!(
                message = "Adopted rows written by another writer into the log.",
                adopted,
                first_position = start,
                without_edges = unparsed,
                store = %self.describe
            );
        }
        Ok(adopted)
    }

    /// One attempt at a commit (see "Writes"); `None` when an event of the batch turned out to
    /// be stored already. With `probe`, the events already stored are looked up under the lock
    /// and left out; without, every event is assumed new.
    async fn try_commit(
        &self,
        client: &mut deadpool_postgres::Object,
        columns: &BatchColumns<'_>,
        probe: bool,
    ) -> Result<Option<CommitReport>, StoreError> {
        let lock = client
            .prepare_cached(LOCK_LOG_HEAD_AT)
            .await
            .map_err(classify)?;
        let copy = client.prepare_cached(COPY_EVENTS).await.map_err(classify)?;
        let grow = client
            .prepare_cached(UPDATE_LOG_HEAD)
            .await
            .map_err(classify)?;
        let tx = client.transaction().await.map_err(classify)?;
        // Pipelined: the lock, the probe (if any) and the start of the COPY are sent at once, and
        // the server runs them in that order, so the lock's row and the COPY's go-ahead come back
        // in one round trip (two fewer while the lock is held than one after the other).
        let (head, fresh, sink) = if probe {
            let select_fresh = tx.prepare_cached(SELECT_FRESH).await.map_err(classify)?;
            let ids: [&(dyn ToSql + Sync); 1] = [&columns.event_id];
            let (head, fresh, sink) = futures::try_join!(
                tx.query_one(&lock, &[]),
                tx.query_one(&select_fresh, &ids),
                tx.copy_in::<_, bytes::Bytes>(&copy),
            )
            .map_err(classify)?;
            let fresh: Vec<i64> = fresh.try_get(0).map_err(classify)?;
            (head, fresh, sink)
        } else {
            let (head, sink) = futures::try_join!(
                tx.query_one(&lock, &[]),
                tx.copy_in::<_, bytes::Bytes>(&copy),
            )
            .map_err(classify)?;
            let all = 1..=i64::try_from(columns.event_id.len()).unwrap_or(i64::MAX);
            (head, all.collect(), sink)
        };
        futures::pin_mut!(sink);
        let mut range = log_head_from_row(&head)?;
        let start = to_sql_int(range.size())?;
        let recorded_at: DateTime<Utc> = head.try_get(2).map_err(classify)?;
        let added = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
        let size = start
            .checked_add(added)
            .ok_or_else(|| StoreError::Corrupt(format!("log size {start} + {added} overflows")))?;
        // The leaf covers the record time exactly as the row stores it: the server's timestamptz
        // keeps microseconds, which is what `format_recorded_at` renders.
        let recorded_text = format_recorded_at(recorded_at);
        let mut out = BytesMut::with_capacity(COPY_CHUNK * 2);
        out.extend_from_slice(copy_rows::HEADER);
        // Each row's leaf is hashed just before the row is queued, and rows are sent in chunks,
        // so hashing overlaps with the server's work on the rows already sent.
        for (position, &ord) in (start..).zip(fresh.iter()) {
            let i = usize::try_from(ord - 1).unwrap_or(usize::MAX);
            let (Some(id), Some(payload)) = (columns.event_id.get(i), columns.payload_json.get(i))
            else {
                return Err(StoreError::Query(format!(
                    "the server returned an impossible batch ordinal {ord}"
                )));
            };
            let leaf = event_leaf_hash(range.size(), id, &recorded_text, payload)
                .map_err(|e| StoreError::Query(e.to_string()))?;
            range.append(leaf);
            let leaf: &[u8] = &leaf;
            let tail: [(&(dyn ToSql + Sync), &Type); 3] = [
                (&recorded_at, &Type::TIMESTAMPTZ),
                (&position, &Type::INT8),
                (&leaf, &Type::BYTEA),
            ];
            columns
                .rows
                .finish_row(i, &tail, &mut out)
                .map_err(|e| StoreError::Query(format!("cannot encode event {id}: {e}")))?
                .ok_or_else(|| StoreError::Query(format!("no encoded row {i}")))?;
            if out.len() >= COPY_CHUNK {
                if let Err(e) = sink.send(out.split().freeze()).await {
                    return race_or(tx, e).await;
                }
            }
        }
        out.extend_from_slice(copy_rows::TRAILER);
        if let Err(e) = sink.send(out.split().freeze()).await {
            return race_or(tx, e).await;
        }
        if fresh.is_empty() {
            // Every event was stored already: the COPY, started with the lock, ends empty.
            if let Err(e) = sink.finish().await {
                return race_or(tx, e).await;
            }
        } else {
            if range.size() != u64::try_from(size).unwrap_or(0) {
                return Err(StoreError::Query(format!(
                    "the frontier reached size {} instead of {size}",
                    range.size()
                )));
            }
            let frontier = range.hashes().concat();
            // Pipelined too: the head's update goes out right behind the end of the COPY. If the
            // COPY fails, the update fails with it (the transaction is aborted) and the COPY's
            // error is the one that counts.
            let head: [&(dyn ToSql + Sync); 2] = [&size, &frontier];
            let (copied, grown) = futures::join!(sink.finish(), tx.execute(&grow, &head));
            if let Err(e) = copied {
                // An event stored already (when not probed for), or stored by a writer that does
                // not take the lock: start again; the next attempt probes and leaves it out.
                return race_or(tx, e).await;
            }
            grown.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        let inserted = fresh.len() as u64;
        let log_size = u64::try_from(size)
            .map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
        Ok(Some(CommitReport {
            inserted,
            duplicates: columns.total - inserted,
            log_size,
        }))
    }
}

/// New events between two merges of the edge indexes' pending lists: about 2 MB of pending
/// entries, which a walk reads in well under a millisecond.
const CLEAN_EVERY_EVENTS: u64 = 16_000;

/// Merges the GIN pending lists of `inputs` and `outputs` into the indexes proper, in a task of
/// its own on a connection that holds no lock, every [`CLEAN_EVERY_EVENTS`] events this process
/// stores (migration 0003 says why). At most one merge per process runs at a time; merges from
/// several processes queue on the index's own lock. If the merge cannot run (an older server,
/// a role without EXECUTE), it says so once and stops trying: the inserts then merge the lists
/// themselves, as PostgreSQL does by default.
#[derive(Debug, Default)]
struct EdgeIndexCleaner {
    since_last: AtomicU64,
    running: AtomicBool,
    given_up: AtomicBool,
}

impl EdgeIndexCleaner {
    /// Count `inserted` new events and start a merge when enough have come in.
    fn stored(self: &Arc<Self>, inserted: u64, pool: &Pool, describe: &str) {
        if inserted == 0 || self.given_up.load(Ordering::Relaxed) {
            return;
        }
        let pending = self.since_last.fetch_add(inserted, Ordering::Relaxed) + inserted;
        if pending < CLEAN_EVERY_EVENTS || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.since_last.store(0, Ordering::Relaxed);
        let (cleaner, pool, describe) = (Arc::clone(self), pool.clone(), describe.to_owned());
        tokio::spawn(async move {
            let result = match pool.get().await {
                Ok(client) => client
                    .execute("SELECT geoprov_clean_edge_indexes()", &[])
                    .await
                    .map(|_| ())
                    .map_err(classify),
                Err(e) => Err(classify_pool(e)),
            };
            match result {
                Ok(()) | Err(StoreError::Unavailable(_)) => {}
                Err(e) => {
                    cleaner.given_up.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        message = "Cannot merge the lineage edge indexes' pending lists; \
                                   inserts will merge them instead, which slows commits.",
                        store = %describe,
                        error = %e
                    );
                }
            }
            cleaner.running.store(false, Ordering::Release);
        });
    }
}

/// A failed COPY: `Ok(None)` (roll back and try again) when it hit the primary key, the error
/// otherwise.
async fn race_or(
    tx: deadpool_postgres::Transaction<'_>,
    e: tokio_postgres::Error,
) -> Result<Option<CommitReport>, StoreError> {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        tx.rollback().await.map_err(classify)?;
        Ok(None)
    } else {
        Err(classify(e))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        // Fast path, without locks or DDL (which a least-privilege role may not run): nothing
        // to migrate and nothing to adopt.
        let current = schema_version(&client).await?;
        if current > SCHEMA_VERSION {
            return Err(self.version_mismatch(current));
        }
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
        self.schema_ready.store(true, Ordering::Release);
        Ok(SCHEMA_VERSION)
    }

    /// Cancel-safe in the sense the worker needs: if the caller stops waiting, the transaction
    /// is rolled back (or has committed as a whole), and the unacknowledged messages come back
    /// as duplicates that this method skips.
    async fn commit_batch(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
        let mut client = self.ready_client().await?;
        if batch.is_empty() {
            let size = log_size(&client).await?;
            return Ok(CommitReport {
                inserted: 0,
                duplicates: 0,
                log_size: size,
            });
        }
        let ids: Vec<String> = batch.iter().map(|e| e.event_id.to_hex()).collect();
        let columns = BatchColumns::new(batch, &ids)?;
        let repeats = columns.total - columns.event_id.len() as u64;
        let mut probe = self.expect_duplicates.load(Ordering::Relaxed);
        for _ in 0..RACE_RETRIES {
            if let Some(report) = self.try_commit(&mut client, &columns, probe).await? {
                // Probe until a batch is found to hold no stored event: duplicates come in runs
                // (a redelivered backlog after a crash, a replayed file).
                self.expect_duplicates
                    .store(report.duplicates > repeats, Ordering::Relaxed);
                self.cleaner
                    .stored(report.inserted, &self.pool, &self.describe);
                return Ok(report);
            }
            probe = true;
            self.expect_duplicates.store(true, Ordering::Relaxed);
        }
        Err(StoreError::Unavailable(
            "another writer that does not take geoprov's log lock keeps inserting the same \
             event ids; the batch will be retried"
                .into(),
        ))
    }

    async fn get_event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM lineage_events \
                 WHERE event_id = $1 AND log_position IS NOT NULL"
            ))
            .await
            .map_err(classify)?;
        let row = client
            .query_opt(&stmt, &[&id.to_hex()])
            .await
            .map_err(classify)?;
        row.as_ref().map(read_event_row).transpose()
    }

    async fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        // Positions never exceed i64::MAX, so a larger start is past the end.
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready_client().await?;
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE log_position >= $1 \
                 ORDER BY log_position LIMIT $2"
            ))
            .await
            .map_err(classify)?;
        let rows = client
            .query(&stmt, &[&from, &sql_limit])
            .await
            .map_err(classify)?;
        rows.iter().map(read_event_row).collect()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let client = self.ready_client().await?;
        log_size(&client).await
    }

    /// Breadth-first, one query per level (`= ANY($1)` over the whole frontier) inside one
    /// read-only repeatable-read transaction (one consistent snapshot).
    ///
    /// Each dataset is expanded exactly once, at its smallest depth, so the work is linear in
    /// the edges reached whatever the cycles, diamonds or depth bound, and a walk of depth `d`
    /// costs at most `d` round trips. A recursive CTE cannot do this: it has no visited set
    /// across paths (even with `CYCLE`, which only stops a path from revisiting its own nodes),
    /// so diamonds multiply the rows it produces.
    async fn lineage(
        &self,
        root: Uuid,
        direction: Direction,
        depth: u32,
    ) -> Result<LineageGraph, StoreError> {
        let max_nodes = self.max_lineage_nodes;
        let max_edges = max_nodes.saturating_mul(EDGES_PER_NODE_LIMIT);
        let mut client = self.ready_client().await?;
        let sql = match direction {
            // The events that made a dataset of the frontier (found through the GIN index on
            // `outputs`), and one row per (that output, input) pair of each.
            Direction::Upstream => {
                "SELECT o, i, e.event_id, coalesce(e.operation, '') FROM lineage_events e \
                 CROSS JOIN LATERAL unnest(e.outputs) o CROSS JOIN LATERAL unnest(e.inputs) i \
                 WHERE e.outputs && $1::uuid[] AND o = ANY($1::uuid[]) LIMIT $2"
            }
            Direction::Downstream => {
                "SELECT i, o, e.event_id, coalesce(e.operation, '') FROM lineage_events e \
                 CROSS JOIN LATERAL unnest(e.inputs) i CROSS JOIN LATERAL unnest(e.outputs) o \
                 WHERE e.inputs && $1::uuid[] AND i = ANY($1::uuid[]) LIMIT $2"
            }
        };
        let stmt = client.prepare_cached(sql).await.map_err(classify)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(classify)?;
        let mut depths: HashMap<Uuid, u32> = HashMap::new();
        depths.insert(root, 0);
        let mut edges: Vec<LineageEdge> = Vec::new();
        let mut frontier = vec![root];
        let mut level = 0_u32;
        while level < depth && !frontier.is_empty() {
            // One more than the edges still allowed, to tell "exactly at the cap" from "over".
            let room = max_edges.saturating_sub(edges.len()).saturating_add(1);
            let room = i64::try_from(room).unwrap_or(i64::MAX);
            let rows = tx
                .query(&stmt, &[&frontier, &room])
                .await
                .map_err(classify)?;
            let mut next = Vec::new();
            for row in &rows {
                let node: Uuid = row.try_get(0).map_err(classify)?;
                let other: Uuid = row.try_get(1).map_err(classify)?;
                if edges.len() >= max_edges {
                    return Err(too_large(root, max_nodes, max_edges, "edges"));
                }
                let event_id: String = row.try_get(2).map_err(classify)?;
                let operation: String = row.try_get(3).map_err(classify)?;
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
                    if depths.len() >= max_nodes {
                        return Err(too_large(root, max_nodes, max_edges, "datasets"));
                    }
                    depths.insert(other, level + 1);
                    next.push(other);
                }
            }
            frontier = next;
            level += 1;
        }
        tx.commit().await.map_err(classify)?;
        let mut nodes: Vec<(Uuid, u32)> = depths.into_iter().collect();
        nodes.sort_unstable_by_key(|&(id, d)| (d, id));
        edges
            .sort_unstable_by(|a, b| (a.from, a.to, &a.event_id).cmp(&(b.from, b.to, &b.event_id)));
        Ok(LineageGraph {
            root: Some(root),
            nodes,
            edges,
        })
    }

    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        Some(self)
    }
}

#[async_trait]
impl TransparencyLog for PostgresStore {
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(SELECT_LOG_HEAD)
            .await
            .map_err(classify)?;
        let row = client.query_one(&stmt, &[]).await.map_err(classify)?;
        let range = log_head_from_row(&row)?;
        Ok(TreeHead {
            size: range.size(),
            root: range.root(),
        })
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (lo, hi) = (to_sql_int(from)?, to_sql_int(to)?);
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT log_position, leaf_hash FROM lineage_events \
                 WHERE log_position >= $1 AND log_position < $2 ORDER BY log_position",
            )
            .await
            .map_err(classify)?;
        let rows = client.query(&stmt, &[&lo, &hi]).await.map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut expected = from;
        for row in &rows {
            let position: i64 = row.try_get(0).map_err(corrupt)?;
            if u64::try_from(position).ok() != Some(expected) {
                return Err(StoreError::Corrupt(format!(
                    "log position {expected} is missing"
                )));
            }
            let hash: Option<&[u8]> = row.try_get(1).map_err(corrupt)?;
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

    async fn tree_nodes(
        &self,
        height: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (lo, hi) = (to_sql_int(from)?, to_sql_int(to)?);
        let height = node_height(height)?;
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT node_index, hash FROM log_nodes \
                 WHERE height = $1 AND node_index >= $2 AND node_index < $3 ORDER BY node_index",
            )
            .await
            .map_err(classify)?;
        let rows = client
            .query(&stmt, &[&height, &lo, &hi])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| {
                let index: i64 = row.try_get(0).map_err(corrupt)?;
                let hash: &[u8] = row.try_get(1).map_err(corrupt)?;
                let hash: Hash = hash.try_into().map_err(|_| {
                    StoreError::Corrupt(format!("log node {height}/{index} is not 32 bytes"))
                })?;
                Ok((u64::try_from(index).unwrap_or(0), hash))
            })
            .collect()
    }

    async fn tree_nodes_end(&self, height: u32) -> Result<u64, StoreError> {
        let height = node_height(height)?;
        let client = self.ready_client().await?;
        let row = client
            .query_one(
                "SELECT max(node_index) FROM log_nodes WHERE height = $1",
                &[&height],
            )
            .await
            .map_err(classify)?;
        let end: Option<i64> = row.try_get(0).map_err(corrupt)?;
        Ok(end.map_or(0, |i| u64::try_from(i).unwrap_or(0).saturating_add(1)))
    }

    /// One `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`: checkpointers of several
    /// processes may store the same nodes at once.
    async fn add_tree_nodes(&self, height: u32, nodes: &[(u64, Hash)]) -> Result<(), StoreError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let height = node_height(height)?;
        let indexes = nodes
            .iter()
            .map(|(index, _)| to_sql_int(*index))
            .collect::<Result<Vec<i64>, _>>()?;
        let hashes: Vec<&[u8]> = nodes.iter().map(|(_, hash)| &hash[..]).collect();
        let client = self.ready_client().await?;
        client
            .execute(
                "INSERT INTO log_nodes (height, node_index, hash) \
                 SELECT $1, i, h FROM unnest($2::bigint[], $3::bytea[]) AS n(i, h) \
                 ON CONFLICT DO NOTHING",
                &[&height, &indexes, &hashes],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// One statement that cannot lose a race: `INSERT ... ON CONFLICT DO NOTHING`, then, when
    /// the size was taken, a look at the root stored for it. The head is read without a lock
    /// (commits are not held up by checkpoints); it only grows, so a size not beyond it now
    /// never will be.
    /// Pages by log position: the cursor is the first position of the page, `limit` the
    /// number of positions; the edges come from the rows' `inputs` x `outputs`.
    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError> {
        let client = self.ready_client().await?;
        let from = to_sql_int(cursor)?;
        let to = from.saturating_add(i64::try_from(limit.max(1)).unwrap_or(i64::MAX));
        let stmt = client
            .prepare_cached(
                "SELECT e.event_id, e.log_position, i, o FROM lineage_events e \
                 CROSS JOIN LATERAL unnest(e.inputs) i CROSS JOIN LATERAL unnest(e.outputs) o \
                 WHERE e.log_position >= $1 AND e.log_position < $2",
            )
            .await
            .map_err(classify)?;
        let rows = client.query(&stmt, &[&from, &to]).await.map_err(classify)?;
        let mut page = EdgePage::default();
        for row in &rows {
            let position: i64 = row.try_get(1).map_err(corrupt)?;
            let from_uuid: Uuid = row.try_get(2).map_err(corrupt)?;
            let to_uuid: Uuid = row.try_get(3).map_err(corrupt)?;
            page.edges.push(StoredEdge {
                event_id: row.try_get(0).map_err(corrupt)?,
                position: u64::try_from(position).ok(),
                from: from_uuid.to_string(),
                to: to_uuid.to_string(),
            });
        }
        // Rows with a position beyond the head exist only mid-commit; the head bounds the pages.
        let size = to_sql_int(log_size(&client).await?)?;
        page.next = (to < size).then(|| u64::try_from(to).unwrap_or(u64::MAX));
        Ok(page)
    }

    async fn add_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<bool, StoreError> {
        let size = to_sql_int(tree_size)?;
        let mut client = self.ready_client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let head = tx.query_one(SELECT_LOG_HEAD, &[]).await.map_err(classify)?;
        let head = log_head_from_row(&head)?;
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
        let inserted = tx
            .execute(
                "INSERT INTO log_checkpoints (tree_size, root_hash, note, created_at) \
                 VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT (tree_size) DO NOTHING",
                &[&size, &&root_hash[..], &note],
            )
            .await
            .map_err(classify)?;
        if inserted == 0 {
            let stored: Vec<u8> = tx
                .query_one(
                    "SELECT root_hash FROM log_checkpoints WHERE tree_size = $1",
                    &[&size],
                )
                .await
                .map_err(classify)?
                .try_get(0)
                .map_err(corrupt)?;
            if stored.as_slice() != root_hash.as_slice() {
                return Err(StoreError::Query(format!(
                    "a checkpoint at tree size {tree_size} with another root is already stored"
                )));
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(inserted > 0)
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let Ok(from) = i64::try_from(from_size) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
                 WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
            )
            .await
            .map_err(classify)?;
        let rows = client
            .query(&stmt, &[&from, &limit])
            .await
            .map_err(classify)?;
        rows.iter().map(read_checkpoint_row).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .await
            .map_err(classify)?;
        let row = client.query_opt(&stmt, &[]).await.map_err(classify)?;
        row.as_ref().map(read_checkpoint_row).transpose()
    }
}

fn too_large(root: Uuid, max_nodes: usize, max_edges: usize, what: &str) -> StoreError {
    StoreError::Query(format!(
        "the lineage walk from {root} reaches more than {} {what} (the limit is {max_nodes} \
         datasets and {max_edges} edges); ask for a smaller depth",
        if what == "edges" {
            max_edges
        } else {
            max_nodes
        },
    ))
}

/// The newest applied migration, or 0 for a database (or schema) geoprov never migrated.
async fn schema_version<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
) -> Result<u32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    if !exists {
        return Ok(0);
    }
    let version: i64 = client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
            &[],
        )
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    u32::try_from(version).map_err(|_| {
        StoreError::Schema(format!(
            "schema_migrations holds an impossible version {version}"
        ))
    })
}

/// Refuse to adopt a `lineage_events` table whose columns or key are not the reference
/// schema's (or geoprov's). Nothing to check when the table does not exist.
async fn check_adoptable(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass('lineage_events') AND a.attnum > 0 \
               AND NOT a.attisdropped",
            &[],
        )
        .await
        .map_err(classify)?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut types = HashMap::new();
    for row in &rows {
        let name: String = row.try_get(0).map_err(classify)?;
        let ty: String = row.try_get(1).map_err(classify)?;
        types.insert(name, ty);
    }
    let mut problems = Vec::new();
    for &(column, want) in SEED_COLUMNS {
        match types.get(column) {
            None => problems.push(format!("column {column} is missing")),
            Some(ty) if ty == want || (want == "text" && ty.starts_with("character varying")) => {}
            Some(ty) => problems.push(format!("column {column} is {ty}, not {want}")),
        }
    }
    for &(column, want) in GEOPROV_COLUMNS {
        if let Some(ty) = types.get(column) {
            if ty != want {
                problems.push(format!("column {column} is {ty}, not {want}"));
            }
        }
    }
    let unique_id: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass('lineage_events') AND i.indisunique \
               AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'event_id')",
            &[],
        )
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    if !unique_id {
        problems.push("event_id is not its primary key".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "the existing lineage_events table cannot be adopted: {}; geoprov adopts only the \
             reference schema (event_id text primary key, dataset_uuid, operation, crs_from, \
             crs_to, processor_id text, timestamp timestamptz, payload_json text)",
            problems.join(", ")
        )))
    }
}

async fn log_size<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
) -> Result<u64, StoreError> {
    let stmt = client
        .prepare_cached(SELECT_LOG_SIZE)
        .await
        .map_err(classify)?;
    let size: i64 = client
        .query_one(&stmt, &[])
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))
}

/// A `u64` counter as a PostgreSQL `bigint`; refuses the impossible overflow.
/// A node height as the `smallint` column stores it.
fn node_height(height: u32) -> Result<i16, StoreError> {
    i16::try_from(height)
        .ok()
        .filter(|h| (1..=63).contains(h))
        .ok_or_else(|| StoreError::Query(format!("no tree node height {height}")))
}

fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Query(format!("{value} exceeds a bigint")))
}

/// The frontier of a `log_head` row selected as `size, frontier, ...`.
fn log_head_from_row(row: &tokio_postgres::Row) -> Result<CompactRange, StoreError> {
    let size: i64 = row.try_get(0).map_err(corrupt)?;
    let frontier: &[u8] = row.try_get(1).map_err(corrupt)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    if !frontier.len().is_multiple_of(32) {
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
async fn write_log_head<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    range: &CompactRange,
) -> Result<(), StoreError> {
    let size = to_sql_int(range.size())?;
    let frontier: Vec<u8> = range.hashes().concat();
    client
        .execute(UPDATE_LOG_HEAD, &[&size, &frontier])
        .await
        .map_err(classify)?;
    Ok(())
}

/// The leaf hash of a row as stored (see [`crate::tlog::leaf`]). A row written by another writer
/// may lack its `timestamp` or `payload_json`: those hash as empty text, so the row still takes
/// its place in the tree, and `verify` names it for the missing column.
fn stored_leaf_hash(
    position: i64,
    event_id: &str,
    recorded_at: Option<DateTime<Utc>>,
    payload_json: Option<&str>,
) -> Result<Hash, StoreError> {
    let position = u64::try_from(position)
        .map_err(|_| StoreError::Corrupt(format!("negative log position {position}")))?;
    let recorded_at = recorded_at.map(format_recorded_at).unwrap_or_default();
    event_leaf_hash(
        position,
        event_id,
        &recorded_at,
        payload_json.unwrap_or_default(),
    )
    .map_err(|e| StoreError::Query(e.to_string()))
}

/// Rows read per step while backfilling leaf hashes.
const BACKFILL_PAGE: i64 = 10_000;

/// Migration 2 on a log written before it: gives every row that has a position its leaf hash,
/// in position order, and builds the frontier, inside the migration's transaction (which holds
/// the migration lock; the log head is locked too). The append-only trigger is disabled around
/// the update and enabled again before the transaction ends, so nobody ever sees it off.
async fn backfill_leaves(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let head = tx.query_one(LOCK_LOG_HEAD, &[]).await.map_err(classify)?;
    let size: i64 = head.try_get(0).map_err(corrupt)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    if size == 0 {
        return Ok(());
    }
    tx.batch_execute("ALTER TABLE lineage_events DISABLE TRIGGER lineage_events_append_only")
        .await
        .map_err(classify)?;
    let select = tx
        .prepare(
            "SELECT log_position, event_id, \"timestamp\", payload_json FROM lineage_events \
             WHERE log_position >= $1 ORDER BY log_position LIMIT $2",
        )
        .await
        .map_err(classify)?;
    let update = tx
        .prepare(
            "UPDATE lineage_events AS e SET leaf_hash = u.leaf_hash \
             FROM unnest($1::bigint[], $2::bytea[]) AS u(position, leaf_hash) \
             WHERE e.log_position = u.position",
        )
        .await
        .map_err(classify)?;
    let mut range = CompactRange::new();
    while range.size() < size {
        let from = to_sql_int(range.size())?;
        let rows = tx
            .query(&select, &[&from, &BACKFILL_PAGE])
            .await
            .map_err(classify)?;
        if rows.is_empty() {
            break;
        }
        let mut positions = Vec::with_capacity(rows.len());
        let mut leaves = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: i64 = row.try_get(0).map_err(corrupt)?;
            if u64::try_from(position).ok() != Some(range.size()) {
                return Err(StoreError::Corrupt(format!(
                    "log position {} is missing; cannot build the log",
                    range.size()
                )));
            }
            let event_id: String = row.try_get(1).map_err(corrupt)?;
            let recorded_at: Option<DateTime<Utc>> = row.try_get(2).map_err(corrupt)?;
            let payload: Option<&str> = row.try_get(3).map_err(corrupt)?;
            let leaf = stored_leaf_hash(position, &event_id, recorded_at, payload)?;
            range.append(leaf);
            positions.push(position);
            leaves.push(leaf.to_vec());
        }
        tx.execute(&update, &[&positions, &leaves])
            .await
            .map_err(classify)?;
    }
    if range.size() != size {
        return Err(StoreError::Corrupt(format!(
            "log_head.size is {size} but the log holds {} rows",
            range.size()
        )));
    }
    write_log_head(tx, &range).await?;
    tx.batch_execute("ALTER TABLE lineage_events ENABLE TRIGGER lineage_events_append_only")
        .await
        .map_err(classify)?;
    Ok(())
}

/// One `log_checkpoints` row (`tree_size, root_hash, note, created_at`).
fn read_checkpoint_row(row: &tokio_postgres::Row) -> Result<StoredCheckpoint, StoreError> {
    let size: i64 = row.try_get(0).map_err(corrupt)?;
    let tree_size = u64::try_from(size)
        .map_err(|_| StoreError::Corrupt(format!("negative checkpoint tree size {size}")))?;
    let root: &[u8] = row.try_get(1).map_err(corrupt)?;
    let root_hash: Hash = root.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "the checkpoint at tree size {tree_size} has a root_hash that is not 32 bytes"
        ))
    })?;
    let created_at: DateTime<Utc> = row.try_get(3).map_err(corrupt)?;
    Ok(StoredCheckpoint {
        tree_size,
        root_hash,
        note: row.try_get(2).map_err(corrupt)?,
        created_at: format_recorded_at(created_at),
    })
}

/// One `lineage_events` row selected with [`EVENT_COLUMNS`].
fn read_event_row(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let position: Option<i64> = row.try_get(0).map_err(corrupt)?;
    let event_id: String = row
        .try_get::<_, Option<String>>(1)
        .map_err(corrupt)?
        .unwrap_or_default();
    let position = position
        .and_then(|p| u64::try_from(p).ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the row of event_id {event_id} has log position {position:?}"
            ))
        })?;
    let text = |index: usize| -> Result<Option<String>, StoreError> {
        row.try_get::<_, Option<String>>(index).map_err(corrupt)
    };
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
    let recorded_at: Option<DateTime<Utc>> = row.try_get(7).map_err(corrupt)?;
    let recorded_at = recorded_at.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the row at log position {position} (event_id {event_id}) has no timestamp"
        ))
    })?;
    let payload_json = required(8, "payload_json")?;
    let started_at: Option<DateTime<Utc>> = row.try_get(9).map_err(corrupt)?;
    let ended_at: Option<DateTime<Utc>> = row.try_get(10).map_err(corrupt)?;
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

fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A batch as the parameter of [`SELECT_FRESH`] and the rows of [`COPY_EVENTS`]: one element
/// per distinct event (the first occurrence of a repeated id; the repeats are duplicates).
struct BatchColumns<'a> {
    /// Events in the batch, repeats included (for the duplicate count).
    total: u64,
    event_id: Vec<&'a str>,
    payload_json: Vec<&'a str>,
    /// Each event's row but for its last three fields (record time, position, leaf hash), which
    /// the commit appends under the log lock.
    rows: EncodedRows,
}

impl<'a> BatchColumns<'a> {
    /// `ids[i]` is the hex id of `batch[i]`.
    fn new(batch: &'a [LineageEvent], ids: &'a [String]) -> Result<BatchColumns<'a>, StoreError> {
        let n = batch.len();
        let mut columns = BatchColumns {
            total: n as u64,
            event_id: Vec::with_capacity(n),
            payload_json: Vec::with_capacity(n),
            rows: EncodedRows::with_capacity(n, 1024),
        };
        let mut seen = HashSet::with_capacity(n);
        for (event, id) in batch.iter().zip(ids) {
            if !seen.insert(event.event_id) {
                continue;
            }
            let dataset_uuid = event.dataset_uuid.to_string();
            let started_at = event.started_at.map(|t| t.with_timezone(&Utc));
            let ended_at = event.ended_at.map(|t| t.with_timezone(&Utc));
            let (inputs, outputs) = event.edge_ends();
            let id_text: &str = id;
            let crs_from = event.crs_from.as_deref();
            let crs_to = event.crs_to.as_deref();
            columns
                .rows
                .push(
                    COPY_EVENT_FIELDS,
                    &[
                        (&id_text, &Type::TEXT),
                        (&dataset_uuid, &Type::TEXT),
                        (&event.operation, &Type::TEXT),
                        (&crs_from, &Type::TEXT),
                        (&crs_to, &Type::TEXT),
                        (&event.processor_id, &Type::TEXT),
                        (&event.payload_json, &Type::TEXT),
                        (&started_at, &Type::TIMESTAMPTZ),
                        (&ended_at, &Type::TIMESTAMPTZ),
                        (&inputs, &Type::UUID_ARRAY),
                        (&outputs, &Type::UUID_ARRAY),
                    ],
                )
                .map_err(|e| StoreError::Query(format!("cannot encode event {id}: {e}")))?;
            columns.event_id.push(id);
            columns.payload_json.push(&event.payload_json);
        }
        Ok(columns)
    }
}

/// One page of adopted rows as the array parameters of the adoption's UPDATE and INSERT.
#[derive(Default)]
struct AdoptionPage {
    ids: Vec<String>,
    positions: Vec<i64>,
    /// The rows' leaf hashes, computed by the caller in position order.
    leaves: Vec<Vec<u8>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    /// The `inputs` and `outputs` columns as array literals (`{uuid,uuid}`), cast by the
    /// server: one text per row is simpler to send than a ragged two-dimensional array. `None`
    /// for a row whose payload could not be parsed.
    inputs: Vec<Option<String>>,
    outputs: Vec<Option<String>>,
}

impl AdoptionPage {
    /// Add one row; false when its payload could not be parsed (it gets a position, no edges).
    fn push(&mut self, event_id: String, payload: Option<&str>, position: i64) -> bool {
        let parsed = payload.map(|p| parse_event(p.as_bytes(), usize::MAX));
        let event = match parsed {
            Some(Ok(event)) => Some(event),
            Some(Err(e)) => {
                tracing::warn!(
                    message = "An adopted row's payload_json is not a valid event; it gets a log \
                               position but no lineage edges.",
                    event_id = %event_id,
                    reason = %e
                );
                None
            }
            None => {
                tracing::warn!(
                    message = "An adopted row has no payload_json; it gets a log position but no \
                               lineage edges.",
                    event_id = %event_id
                );
                None
            }
        };
        let parsed_ok = event.is_some();
        self.positions.push(position);
        self.started_at.push(
            event
                .as_ref()
                .and_then(|e| e.started_at)
                .map(|t| t.with_timezone(&Utc)),
        );
        self.ended_at.push(
            event
                .as_ref()
                .and_then(|e| e.ended_at)
                .map(|t| t.with_timezone(&Utc)),
        );
        let literal = |ids: &[Uuid]| {
            let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        };
        let ends = event.as_ref().map(LineageEvent::edge_ends);
        self.inputs
            .push(ends.as_ref().map(|(inputs, _)| literal(inputs)));
        self.outputs
            .push(ends.as_ref().map(|(_, outputs)| literal(outputs)));
        self.ids.push(event_id);
        parsed_ok
    }
}

/// Map a tokio-postgres error to the [`StoreError`] the worker can act on.
///
/// - [`StoreError::Unavailable`] (hold and retry): no connection (refused, reset, closed, timed
///   out), a server starting or shutting down (`57P01`, `57P02`, `57P03`), any connection
///   exception (class `08`), insufficient resources such as too many connections or a full disk
///   (class `53`), serialization failures and deadlocks (class `40`), lock and statement
///   timeouts, a read-only server (a standby during failover), an I/O error on the server.
/// - [`StoreError::Config`]: authentication and authorization failures, a database that does not
///   exist, missing privileges, a TLS certificate that does not verify or TLS the server does
///   not offer.
/// - [`StoreError::Schema`]: a missing table or column (run `geoprov migrate`).
/// - [`StoreError::Corrupt`]: a stored value of the wrong type.
/// - [`StoreError::Query`]: everything else, i.e. constraint violations (including the
///   append-only triggers) and SQL errors, which will not heal by retrying.
pub fn classify(e: tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    if let Some(code) = e.code() {
        return classify_code(code, e.to_string());
    }
    let message = e.to_string();
    if e.is_closed() {
        return StoreError::Unavailable(message);
    }
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        // tokio-rustls reports a failed handshake as an I/O error wrapping rustls' own error.
        if io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return StoreError::Config(format!("TLS: {message}"));
        }
        return StoreError::Unavailable(message);
    }
    // tokio-postgres exposes no kind for these; its messages are fixed strings.
    if message.starts_with("timeout waiting for server")
        || message.starts_with("error connecting to server")
        || message.starts_with("error communicating with the server")
    {
        return StoreError::Unavailable(message);
    }
    if message.starts_with("error performing TLS handshake") {
        return StoreError::Config(format!("TLS: {message}"));
    }
    if message.starts_with("error deserializing column") {
        return StoreError::Corrupt(message);
    }
    if message.starts_with("authentication error") || message.starts_with("invalid configuration") {
        return StoreError::Config(message);
    }
    StoreError::Query(message)
}

fn classify_code(code: &SqlState, message: String) -> StoreError {
    let class = &code.code()[..2.min(code.code().len())];
    if matches!(class, "08" | "53" | "40" | "58")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    {
        return StoreError::Unavailable(message);
    }
    if matches!(class, "28")
        || *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
    {
        return StoreError::Config(message);
    }
    if *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::UNDEFINED_COLUMN
        || *code == SqlState::INVALID_SCHEMA_NAME
        || *code == SqlState::UNDEFINED_FUNCTION
    {
        return StoreError::Schema(message);
    }
    StoreError::Query(message)
}

/// A pool error: timeouts and a closed pool are transient, the backend's own errors are
/// classified by [`classify`].
fn classify_pool(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no database connection in time ({kind:?})"))
        }
        PoolError::NoRuntimeSpecified => {
            StoreError::Config("the connection pool has no runtime".into())
        }
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    /// No `sslrootcert`: `~/.postgresql/root.crt` when a mode needs roots, as in libpq.
    Default,
    /// `sslrootcert=system`: the Mozilla root set (webpki-roots).
    System,
    /// `sslrootcert=PATH`: every certificate in that PEM file.
    File(PathBuf),
}

/// The TLS half of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsSettings {
    mode: SslMode,
    roots: RootCerts,
}

/// A store URL taken apart: what tokio-postgres understands, and geoprov's own parameters.
struct ConnectSettings {
    config: tokio_postgres::Config,
    tls: TlsSettings,
    schema: Option<String>,
    pool_size: Option<usize>,
    describe: String,
}

impl ConnectSettings {
    fn parse(url: &str) -> Result<ConnectSettings, StoreError> {
        if !matches!(url.parse(), Ok(crate::url::StoreUrl::Postgres(_))) {
            return Err(StoreError::Config(format!(
                "'{}' is not a PostgreSQL URL (postgres://user@host:port/db)",
                crate::url::redact_url(url)
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let describe = crate::url::redact_url(base);
        let mut kept = Vec::new();
        let mut mode = SslMode::Prefer;
        let mut roots = RootCerts::Default;
        let mut schema = None;
        let mut pool_size = None;
        let mut has_connect_timeout = false;
        let mut has_keepalives_idle = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(raw_key)?;
            let value = || percent_decode(raw_value);
            match key.as_str() {
                "sslmode" => {
                    mode = match value()?.as_str() {
                        "disable" => SslMode::Disable,
                        // libpq's `allow` tries without TLS first; geoprov prefers TLS.
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(StoreError::Config(format!(
                                "sslmode={other} is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            )))
                        }
                    };
                }
                "sslrootcert" => {
                    let value = value()?;
                    roots = if value == "system" {
                        RootCerts::System
                    } else {
                        RootCerts::File(PathBuf::from(value))
                    };
                }
                "schema" => {
                    let value = value()?;
                    if !is_plain_identifier(&value) {
                        return Err(StoreError::Config(format!(
                            "schema={value} is not a plain identifier (letters, digits and _, \
                             not starting with a digit, at most 63 bytes)"
                        )));
                    }
                    schema = Some(value);
                }
                "pool_size" => {
                    let value = value()?;
                    match value.parse::<usize>() {
                        Ok(n) if n >= 1 => pool_size = Some(n),
                        _ => {
                            return Err(StoreError::Config(format!(
                                "pool_size={value} is not a positive number of connections"
                            )))
                        }
                    }
                }
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(StoreError::Config(format!(
                        "{key} (client certificates and CRLs) is not supported by geoprov's \
                         PostgreSQL store"
                    )));
                }
                _ => {
                    has_connect_timeout |= key == "connect_timeout";
                    has_keepalives_idle |= key == "keepalives_idle";
                    kept.push(pair);
                }
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL {describe}: {e}")))?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if !has_connect_timeout {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if !has_keepalives_idle {
            config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
        }
        if config.get_application_name().is_none() {
            config.application_name("geoprov");
        }
        if let Some(schema) = &schema {
            let options = match config.get_options() {
                Some(existing) if !existing.is_empty() => {
                    format!("{existing} -c search_path={schema}")
                }
                _ => format!("-c search_path={schema}"),
            };
            config.options(&options);
        }
        Ok(ConnectSettings {
            config,
            tls: TlsSettings { mode, roots },
            schema,
            pool_size,
            describe,
        })
    }
}

/// Letters, digits and `_`, not starting with a digit, at most 63 bytes: safe to put in
/// `search_path` and in `CREATE SCHEMA "..."` without quoting rules.
fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decode `%XX` escapes (and `+` as a space is NOT applied: libpq URLs do not use it).
fn percent_decode(text: &str) -> Result<String, StoreError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(StoreError::Config(format!(
                        "bad percent-encoding in the store URL parameter '{text}'"
                    )))
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        StoreError::Config(format!(
            "the store URL parameter '{text}' is not UTF-8 once decoded"
        ))
    })
}

/// The rustls connector for these TLS settings (used only when `sslmode` is not `disable`).
fn tls_connector(
    settings: &TlsSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
    // libpq: with a CA file named, `require` verifies the chain as `verify-ca` does.
    let mode = match (settings.mode, &settings.roots) {
        (SslMode::Require, RootCerts::File(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(&settings.roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner: webpki }))
                    .with_no_client_auth()
            }
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The CA certificates to trust.
fn root_store(roots: &RootCerts) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    let path = match roots {
        RootCerts::System => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(store);
        }
        RootCerts::File(path) => path.clone(),
        RootCerts::Default => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            match home.map(|h| h.join(".postgresql").join("root.crt")) {
                Some(path) if path.exists() => path,
                _ => {
                    return Err(StoreError::Config(
                        "sslmode verify-ca/verify-full needs the CA certificate: add \
                         sslrootcert=PATH (a PEM file) or sslrootcert=system to the store URL"
                            .into(),
                    ))
                }
            }
        }
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StoreError::Config(format!(
                "cannot read the CA certificates in {}: {e}",
                path.display()
            ))
        })?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(StoreError::Config(format!(
            "{} holds no usable CA certificate (expected PEM 'BEGIN CERTIFICATE' blocks)",
            path.display()
        )));
    }
    Ok(store)
}

/// `sslmode=prefer` and `require` (without a CA file): encrypt, but accept whatever certificate
/// the server shows.
///
/// This is libpq's documented meaning of those modes, and what lets `require` work with the
/// self-signed certificate a PostgreSQL package generates at install time. It protects against
/// passive eavesdropping only: anyone able to intercept the connection can present their own
/// certificate. Use `verify-full` with `sslrootcert` for that. The handshake signatures are
/// still checked, so the session is at least bound to the key the server presented.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted CA, whatever host name the certificate
/// names.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ConnectSettings, StoreError> {
        ConnectSettings::parse(url)
    }

    #[test]
    fn geoprov_parameters_are_taken_out_of_the_url() {
        let s = match parse(
            "postgres://alice:secret@db.example:6543/lineage?sslmode=verify-full&\
             sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&schema=geo_1&pool_size=9&\
             application_name=etl&connect_timeout=3",
        ) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            s.tls.roots,
            RootCerts::File(PathBuf::from("/etc/ca dir/ca.pem"))
        );
        assert_eq!(s.schema.as_deref(), Some("geo_1"));
        assert_eq!(s.pool_size, Some(9));
        assert_eq!(s.config.get_application_name(), Some("etl"));
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(s.config.get_options(), Some("-c search_path=geo_1"));
        assert_eq!(s.config.get_dbname(), Some("lineage"));
        assert_eq!(s.config.get_user(), Some("alice"));
        assert!(!s.describe.contains("secret"), "{}", s.describe);
        assert_eq!(
            s.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn defaults_are_libpq_like() {
        let s = match parse("postgresql://postgres@127.0.0.1/test") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.tls.mode, SslMode::Prefer);
        assert_eq!(s.tls.roots, RootCerts::Default);
        assert_eq!(s.schema, None);
        assert_eq!(s.pool_size, None);
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(s.config.get_application_name(), Some("geoprov"));
    }

    #[test]
    fn bad_parameters_are_configuration_errors() {
        for url in [
            "postgres://h/db?sslmode=sometimes",
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=1abc",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?sslcert=/x.pem",
            "postgres://h/db?sslrootcert=%zz",
            "postgres://h/db?no_such_option=1",
            "mysql://h/db",
        ] {
            assert!(
                matches!(parse(url), Err(StoreError::Config(_))),
                "{url} was accepted"
            );
        }
    }

    #[test]
    fn verify_modes_need_a_ca() {
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCerts::File(PathBuf::from("/nonexistent/ca.pem")),
        };
        assert!(matches!(
            tls_connector(&missing),
            Err(StoreError::Config(_))
        ));
        let system = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCerts::System,
        };
        assert!(tls_connector(&system).is_ok());
        let require = TlsSettings {
            mode: SslMode::Require,
            roots: RootCerts::Default,
        };
        assert!(tls_connector(&require).is_ok());
    }

    #[test]
    fn sql_states_are_classified() {
        let transient = [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::CONNECTION_FAILURE,
            SqlState::DISK_FULL,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ];
        for code in transient {
            assert!(
                classify_code(&code, String::new()).is_transient(),
                "{code:?}"
            );
        }
        assert!(matches!(
            classify_code(&SqlState::INVALID_PASSWORD, String::new()),
            StoreError::Config(_)
        ));
        assert!(matches!(
            classify_code(&SqlState::UNDEFINED_TABLE, String::new()),
            StoreError::Schema(_)
        ));
        assert!(matches!(
            classify_code(&SqlState::RAISE_EXCEPTION, String::new()),
            StoreError::Query(_)
        ));
        assert!(matches!(
            classify_code(&SqlState::UNIQUE_VIOLATION, String::new()),
            StoreError::Query(_)
        ));
    }

    #[test]
    fn batches_keep_the_first_of_repeated_events_and_distinct_edges() {
        let (a, b, out) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let payload = format!(
            r#"{{"dataset_uuid": "{out}", "operation": "mosaic", "processor_id": "p",
                "inputs": ["{a}", "{b}", "{a}"], "outputs": ["{out}"]}}"#
        );
        let event = match parse_event(payload.as_bytes(), 1 << 20) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        let batch = vec![event.clone(), event];
        let ids: Vec<String> = batch.iter().map(|e| e.event_id.to_hex()).collect();
        let columns = match BatchColumns::new(&batch, &ids) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(columns.total, 2);
        assert_eq!(columns.event_id.len(), 1);
        assert_eq!(batch[0].edge_ends(), (vec![a, b], vec![out]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").ok().as_deref(), Some("a/b c"));
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
