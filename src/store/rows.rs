//! Row decoding every backend shares: each backend reads its columns in its own types, and the
//! checks that turn them into [`StoredEvent`]s, leaf hashes, tree nodes and
//! [`StoredCheckpoint`]s (and word their errors) are written once, here.
//!
//! Not for: SQL, or reading a column (that is the backend's own driver).

use chrono::{DateTime, Utc};

use super::{StoreError, StoredCheckpoint, StoredEvent, TreeHead};
use crate::tlog::{CompactRange, Hash};

/// The SQL bounds of a page of `limit` rows from `from` on, or `None` when the page is empty:
/// positions and sizes never exceed `i64::MAX`, so a larger start is past the end.
pub(crate) fn page_bounds(from: u64, limit: usize) -> Option<(i64, i64)> {
    let from = i64::try_from(from).ok()?;
    (limit > 0).then(|| (from, i64::try_from(limit).unwrap_or(i64::MAX)))
}

/// The leaf hashes of positions `from..to`, from rows of (position, leaf_hash) in position
/// order: every position MUST be there once, with a hash of 32 bytes.
pub(crate) fn dense_leaf_hashes<B: AsRef<[u8]>>(
    from: u64,
    to: u64,
    rows: impl IntoIterator<Item = Result<(i64, Option<B>), StoreError>>,
) -> Result<Vec<Hash>, StoreError> {
    let missing =
        |position: u64| StoreError::Corrupt(format!("log position {position} is missing"));
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0).min(1 << 20));
    let mut expected = from;
    for row in rows {
        let (position, hash) = row?;
        if u64::try_from(position).ok() != Some(expected) {
            return Err(missing(expected));
        }
        let hash: Hash = hash
            .and_then(|h| h.as_ref().try_into().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the leaf_hash of log position {expected} is missing or not 32 bytes"
                ))
            })?;
        out.push(hash);
        expected += 1;
    }
    if expected != to {
        return Err(missing(expected));
    }
    Ok(out)
}

/// One stored interior node of the tree at `height`: its index and its 32-byte hash.
pub(crate) fn tree_node(
    height: impl std::fmt::Display,
    index: i64,
    hash: &[u8],
) -> Result<(u64, Hash), StoreError> {
    let hash: Hash = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log node {height}/{index} is not 32 bytes")))?;
    Ok((u64::try_from(index).unwrap_or(0), hash))
}

/// One past the largest stored node index of a height (`max(node_index)`), 0 when none is.
pub(crate) fn tree_nodes_end(max_index: Option<i64>) -> u64 {
    max_index.map_or(0, |i| u64::try_from(i).unwrap_or(0).saturating_add(1))
}

/// The head of the log whose frontier is `range`.
pub(crate) fn tree_head(range: &CompactRange) -> TreeHead {
    TreeHead {
        size: range.size(),
        root: range.root(),
    }
}

/// One `log_checkpoints` row, from its columns `tree_size, root_hash, note, created_at`.
pub(crate) fn checkpoint(
    size: i64,
    root: &[u8],
    note: String,
    created_at: String,
) -> Result<StoredCheckpoint, StoreError> {
    let tree_size = u64::try_from(size)
        .map_err(|_| StoreError::Corrupt(format!("negative checkpoint tree size {size}")))?;
    let root_hash: Hash = root.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "the checkpoint at tree size {tree_size} has a root_hash that is not 32 bytes"
        ))
    })?;
    Ok(StoredCheckpoint {
        tree_size,
        root_hash,
        note,
        created_at,
    })
}

/// A `lineage_events` row selected with a backend's `EVENT_COLUMNS` (log_position, event_id,
/// dataset_uuid, operation, crs_from, crs_to, processor_id, timestamp, payload_json,
/// started_at, ended_at), read in the backend's own types.
pub(crate) trait EventRow {
    /// Column `index` as text, `None` for NULL.
    fn text(&self, index: usize) -> Result<Option<String>, StoreError>;

    /// Column `index` as a time, `None` for NULL; `Err` holds text that is not a time.
    fn time(&self, index: usize) -> Result<Result<Option<DateTime<Utc>>, String>, StoreError>;
}

/// The event of `row`, whose position and event id the backend has read (each words its own
/// errors for those); a missing column or an unreadable time is corrupt.
pub(crate) fn stored_event(
    row: &impl EventRow,
    position: u64,
    event_id: String,
) -> Result<StoredEvent, StoreError> {
    let corrupt = |what: String| {
        StoreError::Corrupt(format!(
            "the row at log position {position} (event_id {event_id}) has {what}"
        ))
    };
    let required = |index: usize, column: &str| -> Result<String, StoreError> {
        row.text(index)?
            .ok_or_else(|| corrupt(format!("no {column}")))
    };
    let time = |index: usize, column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.time(index)?
            .map_err(|text| corrupt(format!("an unreadable {column} '{text}'")))
    };
    let dataset_uuid = required(2, "dataset_uuid")?;
    let operation = required(3, "operation")?;
    let crs_from = row.text(4)?;
    let crs_to = row.text(5)?;
    let processor_id = required(6, "processor_id")?;
    let recorded_at = time(7, "timestamp")?.ok_or_else(|| corrupt("no timestamp".into()))?;
    let payload_json = required(8, "payload_json")?;
    let started_at = time(9, "started_at")?;
    let ended_at = time(10, "ended_at")?;
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
