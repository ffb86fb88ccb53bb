//! The lineage store: where validated events are persisted, once each, in commit order.
//!
//! Not for: decoding, validation or broker work. The worker hands a batch of [`LineageEvent`]s to
//! [`Store::commit_batch`]; readers (`lineage`, `export`, `verify`, HTTP) use the read methods.
//!
//! Backends: [`sqlite::SqliteStore`] (the embedded default) and [`postgres::PostgresStore`]
//! (many workers on many hosts). The URL picks one at run time through [`open`].

mod copy_rows;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{EventId, LineageEvent};
use crate::tlog::Hash;
use crate::url::StoreUrl;

/// What went wrong in a store. The worker decides between "hold and retry" and "give up on
/// this batch" with [`StoreError::is_transient`], never by reading the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is busy/locked right now; retrying later will work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The URL or options are wrong; retrying will not help.
    #[error("store configuration: {0}")]
    Config(String),
    /// The schema is missing, too new, or not one geoprov can adopt.
    #[error("store schema: {0}")]
    Schema(String),
    /// A row that geoprov wrote cannot be read back as it was written.
    #[error("store data: {0}")]
    Corrupt(String),
    /// Any other error reported by the database for this request.
    #[error("store query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// True when the same operation may succeed later without any change (outage, lock, busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// True when no message can be stored until an operator acts (wrong schema or
    /// configuration): the worker stops instead of dead-lettering good messages.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Schema(_) | StoreError::Config(_))
    }
}

/// Counts returned by [`Store::commit_batch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Events that were new and now have a row and a log position.
    pub inserted: u64,
    /// Events whose `event_id` was already stored; they were skipped, not an error.
    pub duplicates: u64,
    /// The log size (number of positions) after the commit.
    pub log_size: u64,
}

/// One row as stored, with every column kept as the database returned it, so that `verify`
/// can recompute what the row should be and report any difference.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the append-only log (0-based, dense, commit order).
    pub position: u64,
    /// The `event_id` column (64 lowercase hex characters when intact).
    pub event_id: String,
    /// The seed's columns as stored.
    pub dataset_uuid: String,
    pub operation: String,
    pub crs_from: Option<String>,
    pub crs_to: Option<String>,
    pub processor_id: String,
    /// When the row was recorded by geoprov (the seed's `timestamp` column).
    pub recorded_at: DateTime<Utc>,
    /// Python's `json.dumps(payload, sort_keys=True)`, as hashed for the id.
    pub payload_json: String,
    /// The event times as stored (derived from the payload's `started_at` / `ended_at`, to the
    /// microsecond).
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One schema migration, compiled into the binary (each backend keeps its own list).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Its number; migrations apply in increasing order and each exactly once.
    pub(crate) version: u32,
    /// The file it came from (`0001_init`), for `schema_migrations`, logs and errors.
    pub(crate) name: &'static str,
    /// The SQL, run inside the migration's transaction.
    pub(crate) sql: &'static str,
}

/// Which way a lineage walk goes from its starting dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the inputs: "where did this come from".
    Upstream,
    /// Towards the outputs: "what did this feed".
    Downstream,
}

/// One edge of the lineage graph: `from` was an input of the event that produced `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LineageEdge {
    pub from: Uuid,
    pub to: Uuid,
    pub event_id: String,
    pub operation: String,
}

/// The part of the lineage graph reached by a walk.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LineageGraph {
    /// The dataset the walk started from.
    pub root: Option<Uuid>,
    /// Every dataset reached, with its distance (in edges) from the root; the root has depth 0.
    pub nodes: Vec<(Uuid, u32)>,
    /// Every edge traversed.
    pub edges: Vec<LineageEdge>,
}

/// A persistent, append-only lineage store.
///
/// Contract for every backend:
/// - `commit_batch` MUST insert, assign log positions and update counters in ONE transaction:
///   either every new event of the batch is stored with its position, or none is.
/// - It MUST skip events whose `event_id` is already stored (counted in `duplicates`), including
///   duplicates inside the same batch, and MUST NOT fail because of them.
/// - Positions MUST be dense (0..n-1) and follow commit order.
/// - Nothing MUST ever update or delete a stored event.
#[async_trait]
pub trait Store: Send + Sync {
    /// Create or upgrade the schema; returns the schema version now in force. Idempotent.
    async fn migrate(&self) -> Result<u32, StoreError>;

    /// Persist a batch (see the contract above).
    async fn commit_batch(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError>;

    /// The stored row for one event id, if any.
    async fn get_event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError>;

    /// Up to `limit` rows with `position >= from`, in position order. Readers page through the
    /// whole log with this, in flat memory.
    async fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// The number of stored events (= the log size).
    async fn count(&self) -> Result<u64, StoreError>;

    /// Walk the lineage graph from `root`, at most `depth` edges away, safe on cycles.
    async fn lineage(
        &self,
        root: Uuid,
        direction: Direction,
        depth: u32,
    ) -> Result<LineageGraph, StoreError>;

    /// The transparency log kept beside the rows (leaf hashes, frontier, checkpoints), when
    /// this backend keeps one. Defaults to `None`; use [`transparency_log`] to get it or the
    /// standard "not available" error.
    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        None
    }
}

/// The log's head: its size and `MTH(D[size])`, read together from one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of leaves (= stored events).
    pub size: u64,
    /// RFC 6962 root of the tree over positions `0..size` ([`crate::tlog::empty_root`] when
    /// empty).
    pub root: Hash,
}

/// One stored checkpoint (a row of `log_checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The tree size the checkpoint commits to (the primary key: one checkpoint per size).
    pub tree_size: u64,
    /// The root hash as stored in its own column (the note carries it too; `verify` checks
    /// that both agree).
    pub root_hash: Hash,
    /// The full C2SP signed note text, as served at `GET /v1/log/checkpoint`.
    pub note: String,
    /// When it was written (RFC 3339 UTC text as stored).
    pub created_at: String,
}

/// The Merkle log half of a store: what checkpoints, `verify` and proofs need beyond the rows.
///
/// Kept apart from [`Store`] so that trait stays small (style.md: split the reads past about 8
/// methods); a backend exposes it through [`Store::transparency_log`].
///
/// Contract for every backend:
/// - [`Store::commit_batch`] MUST, in the same transaction that inserts the rows, store each new
///   row's leaf hash (`crate::tlog::event_leaf_hash` of its position, `event_id`, the exact
///   record time stored, formatted by `crate::tlog::format_recorded_at`, and `payload_json`) and
///   move the persisted frontier ([`crate::tlog::CompactRange`]) on with it, so that
///   [`tree_head`](Self::tree_head) is O(1) and an append O(log n). With several writers the
///   positions MUST be assigned under a lock of the log head (e.g. PostgreSQL `SELECT ... FROM
///   log_head ... FOR UPDATE` in the batch transaction), which also serializes the frontier.
/// - Checkpoints are append-only: one per tree size, never updated or deleted.
#[async_trait]
pub trait TransparencyLog: Send + Sync {
    /// The current size and root, from the persisted frontier (no scan).
    async fn tree_head(&self) -> Result<TreeHead, StoreError>;

    /// The stored leaf hashes of positions `from..to`, in position order, exactly `to - from`
    /// of them.
    ///
    /// MUST fail with [`StoreError::Corrupt`] (naming the position) when a position in the
    /// range has no row or its stored hash is missing or not 32 bytes, never make one up.
    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError>;

    /// Store a signed checkpoint note for `tree_size` whose root is `root_hash`. Idempotent per
    /// size: returns `Ok(false)` when a checkpoint of that size is already stored with the same
    /// root (the stored note is kept); MUST fail with [`StoreError::Query`] when the size is
    /// beyond the log or the stored one has another root.
    async fn add_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` stored checkpoints with `tree_size >= from_size`, ascending by size. Paged
    /// so that `verify` keeps flat memory however many checkpoints there are.
    async fn checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The checkpoint with the largest tree size, if any.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The stored interior nodes of the log's Merkle tree at `height` with indexes in
    /// `from..to`, ascending, as `(index, hash)`; nodes not stored are left out. These are a
    /// cache of perfect-subtree roots ([`crate::tlog::NodeId`]) that proofs read instead of the
    /// leaves under them; see `tlog_service::materialize_nodes`.
    async fn tree_nodes(
        &self,
        height: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError>;

    /// How many nodes of `height` are stored from index 0 on (the largest stored index + 1;
    /// 0 when none).
    async fn tree_nodes_end(&self, height: u32) -> Result<u64, StoreError>;

    /// Stores interior nodes of `height`; a node stored already is kept as it is.
    async fn add_tree_nodes(&self, height: u32, nodes: &[(u64, Hash)]) -> Result<(), StoreError>;

    /// One page of the stored lineage edges, starting at `cursor` (0 for the first page; then
    /// the page's [`EdgePage::next`]), about `limit` edges or events' worth. Every stored edge
    /// comes exactly once over all pages, in no promised order, with the position of the event
    /// it names (`None` when no stored event has that id). Lets `verify` check that the edges
    /// are exactly the ones the payloads in the log name, no more and no fewer.
    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError>;
}

/// One stored lineage edge, as [`TransparencyLog::edges`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEdge {
    /// The `event_id` the edge belongs to, as stored.
    pub event_id: String,
    /// The log position of that event; `None` when no stored event has that id.
    pub position: Option<u64>,
    /// The input dataset (hyphenated lowercase UUID, as geoprov writes it).
    pub from: String,
    /// The output dataset.
    pub to: String,
}

/// A page of [`TransparencyLog::edges`].
#[derive(Debug, Clone, Default)]
pub struct EdgePage {
    /// The edges of this page.
    pub edges: Vec<StoredEdge>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<u64>,
}

/// `store`'s transparency log, or [`StoreError::Config`] saying this store has none yet.
pub fn transparency_log(store: &dyn Store) -> Result<&dyn TransparencyLog, StoreError> {
    store.transparency_log().ok_or_else(|| {
        StoreError::Config("the transparency log is not available on this store yet".into())
    })
}

/// Open the store a URL names: `sqlite://PATH`, or `postgres://...` / `postgresql://...` (see
/// [`postgres`] for its parameters).
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, &OpenOptions::default()).await
}

/// Options for [`open_with`] that the caller (rather than the URL) knows.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Database connections to keep (PostgreSQL): size it to the worker concurrency plus a few
    /// readers. Defaults to [`postgres::DEFAULT_POOL_SIZE`]; a `pool_size=N` URL parameter wins.
    /// SQLite ignores it.
    pub pool_size: Option<usize>,
}

/// [`open`] with options.
pub async fn open_with(
    url: &StoreUrl,
    options: &OpenOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(
            postgres::PostgresStore::open_with(
                url,
                postgres::PostgresOptions {
                    pool_size: options.pool_size,
                },
            )
            .await?,
        )),
    }
}
