//! The values stores hand back: rows as stored ([`StoredEvent`], [`StoredCheckpoint`],
//! [`StoredEdge`]), the log's head ([`TreeHead`]), a commit's counts ([`CommitReport`]) and the
//! lineage graph's edges ([`LineageEdge`], [`Direction`]).
//!
//! Pure data, no I/O: the [`crate::store`] backends produce these, and the pure modules that
//! present or check them (`prov`, `verify`, `lineage`) import them from here, not from the
//! store.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::tlog::Hash;

/// Counts returned by `Store::commit_batch`.
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
    /// The payload text as stored: Python's `json.dumps(payload, sort_keys=True)` for rows geoprov
    /// wrote; rows adopted from the reference task keep its `json.dumps(payload)`.
    pub payload_json: String,
    /// The event times as stored (derived from the payload's `started_at` / `ended_at`, to the
    /// microsecond).
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
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
    /// The input dataset.
    pub from: Uuid,
    /// The output dataset.
    pub to: Uuid,
    /// The event the edge belongs to.
    pub event_id: String,
    /// Its operation (`reproject`, `tile`, ...).
    pub operation: String,
    /// Its processor (host, job, service).
    pub processor_id: String,
    /// When it happened: its `ended_at`, else its `started_at`, else when it was recorded.
    pub time: Option<DateTime<Utc>>,
}

/// The log's head: its size and `MTH(D[size])`, read together from one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of leaves (= stored events).
    pub size: u64,
    /// RFC 6962 root of the tree over positions `0..size` (`crate::tlog::empty_root` when
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

/// One stored lineage edge, as `Store::edges` reads it back.
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

/// A page of `Store::edges`.
#[derive(Debug, Clone, Default)]
pub struct EdgePage {
    /// The edges of this page.
    pub edges: Vec<StoredEdge>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<u64>,
}

/// What `Store::search_events` looks for: every filter given must hold (an empty query
/// matches every logged event). Answers come newest first (descending log position), a page of
/// at most `limit` at a time, continued with `before`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Events that name this dataset: as their `dataset_uuid`, an input or an output.
    pub dataset: Option<Uuid>,
    /// Events whose `event_id` starts with these lowercase hex digits.
    pub id_prefix: Option<String>,
    /// Events of this operation, exactly.
    pub operation: Option<String>,
    /// Events of this processor, exactly.
    pub processor: Option<String>,
    /// Events whose `crs_from` or `crs_to` is this text, exactly (`EPSG:32633`).
    pub crs: Option<String>,
    /// Events whose time interval ends at or after this instant. An event's interval is
    /// `[started_at, ended_at]`; a missing end is the other end, and an event with neither has
    /// its record time at both ends.
    pub since: Option<DateTime<Utc>>,
    /// Events whose time interval starts at or before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only events at log positions below this one: the `next` of the previous page.
    pub before: Option<u64>,
    /// Most events per page (at least 1).
    pub limit: usize,
}

/// A page of `Store::search_events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// The matching events, newest first.
    pub events: Vec<StoredEvent>,
    /// Where the next page starts (`EventQuery::before`); `None` after the last page.
    pub next: Option<u64>,
}
