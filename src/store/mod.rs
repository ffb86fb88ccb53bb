//! The lineage store: where validated events are persisted, once each, in commit order.
//!
//! Not for: decoding, validation or broker work. The worker hands a batch of [`LineageEvent`]s to
//! [`Store::commit_batch`]; readers (`lineage`, `export`, `verify`, HTTP) use the read methods.
//!
//! Backends: [`sqlite::SqliteStore`] (the embedded default) and [`postgres::PostgresStore`]
//! (many workers on many hosts). The URL picks one at run time through [`open`].
//!
//! The seam is thin on purpose: a backend writes queries, nothing else. What is the same for
//! every backend lives above it: the lineage walk with its caps ([`crate::lineage::walk`] over
//! [`Store::neighbours`]), the checkpoint admission rules (`tlog_service::add_checkpoint` over
//! [`TransparencyLog::insert_checkpoint`]), the frontier's encoding
//! ([`crate::tlog::CompactRange::to_frontier_bytes`]) and the migration bookkeeping
//! ([`migration`]). The values the backends hand back are in [`crate::records`].

pub mod migration;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use crate::records::{
    CommitReport, Direction, EdgePage, EventPage, EventQuery, LineageEdge, StoredCheckpoint,
    StoredEdge, StoredEvent, TreeHead,
};

use std::sync::Arc;

use async_trait::async_trait;
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

    /// One level of the lineage graph: every stored edge into one of `datasets` (`Upstream`:
    /// the edge's `to` is in `datasets`) or out of one (`Downstream`: its `from` is), as
    /// [`LineageEdge`]s, each `(from, to, event)` once, in no promised order, from one
    /// consistent snapshot.
    ///
    /// MUST return every such edge when there are at most `limit`; when there are more it MAY
    /// stop at `limit` (the caller asks for one more than it can take to tell "at the cap" from
    /// "over"). The breadth-first walk with its caps is [`crate::lineage::walk`], above this
    /// seam; a backend only answers one level with an indexed lookup.
    async fn neighbours(
        &self,
        datasets: &[Uuid],
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<LineageEdge>, StoreError>;

    /// One page of the stored lineage edges, starting at `cursor` (0 for the first page; then
    /// the page's [`EdgePage::next`]), about `limit` edges or events' worth. Every stored edge
    /// comes exactly once over all pages, in no promised order, with the position of the event
    /// it names (`None` when no stored event has that id). Lets `verify` check that the edges
    /// are exactly the ones the payloads in the log name, no more and no fewer.
    async fn edges(&self, cursor: u64, limit: usize) -> Result<EdgePage, StoreError>;

    /// Whether any stored event names `dataset` (as its `dataset_uuid`, an input or an output),
    /// so that a walk from a dataset no event mentions can be told apart from a walk from a
    /// source dataset (both reach nothing).
    async fn mentions_dataset(&self, dataset: Uuid) -> Result<bool, StoreError>;

    /// One page of the logged events that match `query` (see [`EventQuery`]), newest first.
    /// MUST return `next` exactly when more matching events may follow (the page is full).
    async fn search_events(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// The ids of up to `limit` logged events whose `event_id` starts with `prefix` (lowercase
    /// hex), in id order: how a short id (as `lineage` prints them) is resolved.
    async fn event_ids_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The transparency log kept beside the rows (leaf hashes, frontier, checkpoints), when
    /// this backend keeps one. Defaults to `None`; use [`transparency_log`] to get it or the
    /// standard "not available" error.
    fn transparency_log(&self) -> Option<&dyn TransparencyLog> {
        None
    }
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

    /// Store a signed checkpoint note for `tree_size` whose root is `root_hash`, unless a
    /// checkpoint of that size is stored already: then nothing changes and the stored one's root
    /// is returned. MUST be atomic per size (two writers racing for one size leave one row and
    /// no error). Whether a checkpoint may be stored at all (not beyond the log, the log's own
    /// root at its size) is decided above this seam, by `tlog_service::add_checkpoint`.
    async fn insert_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<Option<Hash>, StoreError>;

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
}

/// The page [`Store::search_events`] answers from `events` (at most `query.limit`, newest
/// first): `next` is the last one's position when the page is full.
pub fn event_page(query: &EventQuery, events: Vec<StoredEvent>) -> EventPage {
    let next = (events.len() >= query.limit.max(1))
        .then(|| events.last().map(|e| e.position))
        .flatten();
    EventPage { events, next }
}

/// The id range `[low, high)` of the lowercase hex ids that start with `prefix`: `"ab3f"` gives
/// `("ab3f", "ab4")`, and an all-`f` prefix `("ff", "g")` (`g` sorts after every hex id).
pub fn prefix_range(prefix: &str) -> (String, String) {
    let mut high: Vec<u8> = prefix.as_bytes().to_vec();
    while let Some(last) = high.pop() {
        let next = match last {
            b'0'..=b'8' | b'a'..=b'e' => last + 1,
            b'9' => b'a',
            _ => continue, // an `f` carries into the digit before it
        };
        high.push(next);
        return (
            prefix.to_owned(),
            String::from_utf8_lossy(&high).into_owned(),
        );
    }
    (prefix.to_owned(), "g".to_owned())
}

/// Resolves an event id given in full (64 hex digits) or as a unique prefix of at least 8, as
/// `geoprov lineage` prints them (12).
///
/// # Errors
///
/// [`IdLookupError`] saying why the text names no single event.
pub async fn resolve_event_id(store: &dyn Store, text: &str) -> Result<EventId, IdLookupError> {
    if let Some(id) = EventId::from_hex(text) {
        return Ok(id);
    }
    let prefix = text.to_ascii_lowercase();
    if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdLookupError::Malformed(text.to_owned()));
    }
    let ids = store.event_ids_with_prefix(&prefix, 2).await?;
    match ids.as_slice() {
        [one] => EventId::from_hex(one).ok_or_else(|| {
            IdLookupError::Store(StoreError::Corrupt(format!("a stored event_id is '{one}'")))
        }),
        [] => Err(IdLookupError::NotFound(text.to_owned())),
        _ => Err(IdLookupError::Ambiguous(text.to_owned())),
    }
}

/// Why [`resolve_event_id`] found no single event.
#[derive(Debug, thiserror::Error)]
pub enum IdLookupError {
    /// Neither 64 hex digits nor a prefix of 8 or more.
    #[error("'{0}' is not an event id: give its 64 hex digits, or a unique prefix of 8 or more")]
    Malformed(String),
    /// No logged event has that id or prefix.
    #[error("no event {0}")]
    NotFound(String),
    /// Several do.
    #[error("the prefix {0} names several events; give more digits")]
    Ambiguous(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

#[cfg(test)]
mod tests {
    use super::prefix_range;

    #[test]
    fn prefix_ranges_cover_exactly_the_ids_with_the_prefix() {
        assert_eq!(prefix_range("ab3f"), ("ab3f".into(), "ab4".into()));
        assert_eq!(prefix_range("ab39"), ("ab39".into(), "ab3a".into()));
        assert_eq!(prefix_range("a0ff"), ("a0ff".into(), "a1".into()));
        assert_eq!(prefix_range("ffff"), ("ffff".into(), "g".into()));
        let (low, high) = prefix_range("12ab");
        for id in ["12ab", "12ab0000", "12abffff"] {
            assert!(id >= low.as_str() && id < high.as_str(), "{id}");
        }
        for id in ["12aa", "12ac", "12b"] {
            assert!(!(id >= low.as_str() && id < high.as_str()), "{id}");
        }
    }
}
