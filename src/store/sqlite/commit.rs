//! The SQLite store's writes: a batch encoded outside the lock ([`EncodedBatch`]), then inserted
//! with its leaf hashes and edges and the frontier moved on, in one `BEGIN IMMEDIATE`
//! transaction; and checkpoint rows.
//!
//! Not for: reads (that is `read.rs`) or whether a checkpoint may be stored (that is
//! `tlog_service::add_checkpoint`, above the store seam).

use std::fmt::Write as _;
use std::ops::Range;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};
use uuid::Uuid;

use super::error::classify;
use super::timestamp::{timestamp_text, write_timestamp};
use super::{to_sql_int, Inner};
use crate::event::LineageEvent;
use crate::store::{CommitReport, StoreError};
use crate::tlog::{event_leaf_hash, CompactRange, Hash};

/// `ON CONFLICT (event_id) DO NOTHING`, not `INSERT OR IGNORE`: OR IGNORE would also swallow a
/// violated `log_position` UNIQUE or NOT NULL constraint and silently drop the event, while
/// this skips only a duplicate id and lets any other violation fail the batch.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO lineage_events (event_id, dataset_uuid, operation, \
     crs_from, crs_to, processor_id, timestamp, payload_json, log_position, started_at, ended_at, \
     leaf_hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (event_id) DO NOTHING";

pub(super) const INSERT_EDGE: &str =
    "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) VALUES (?1, ?2, ?3, ?4)";

pub(super) const SELECT_LOG_HEAD: &str = "SELECT size, frontier FROM log_head WHERE id = 0";

pub(super) const UPDATE_LOG_HEAD: &str =
    "UPDATE log_head SET size = ?1, frontier = ?2 WHERE id = 0";

impl Inner {
    /// The whole batch in one `BEGIN IMMEDIATE` transaction (see [`Store::commit_batch`]).
    pub(super) fn commit(&self, batch: &EncodedBatch) -> Result<CommitReport, StoreError> {
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

    /// [`TransparencyLog::insert_checkpoint`] on the write connection, in one transaction.
    pub(super) fn insert_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<Option<Hash>, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        self.ensure_schema(&tx)?;
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
            return Hash::try_from(stored.as_slice()).map(Some).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the checkpoint at tree size {tree_size} has a root_hash that is not 32 bytes"
                ))
            });
        }
        tx.execute(
            "INSERT INTO log_checkpoints (tree_size, root_hash, note, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![size, &root_hash[..], note, timestamp_text(Utc::now())],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        Ok(None)
    }
}

/// The persisted frontier at the log's size.
pub(super) fn read_log_head(conn: &Connection) -> Result<CompactRange, StoreError> {
    let (size, frontier): (i64, Vec<u8>) = conn
        .prepare_cached(SELECT_LOG_HEAD)
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(classify)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    CompactRange::from_frontier_bytes(size, &frontier)
        .map_err(|e| StoreError::Corrupt(format!("log_head.frontier: {e}")))
}

/// Writes the size and frontier of `range` to `log_head`.
pub(super) fn write_log_head(conn: &Connection, range: &CompactRange) -> Result<(), StoreError> {
    let size = to_sql_int(range.size(), "log size")?;
    let frontier = range.to_frontier_bytes();
    conn.prepare_cached(UPDATE_LOG_HEAD)
        .and_then(|mut stmt| stmt.execute(params![size, frontier]))
        .map_err(classify)?;
    Ok(())
}

/// A byte range of [`EncodedBatch::text`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    start: usize,
    end: usize,
}

/// One event's columns, as spans of [`EncodedBatch::text`].
#[derive(Debug)]
pub(super) struct EncodedRow {
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
pub(super) struct EncodedBatch {
    text: String,
    rows: Vec<EncodedRow>,
    uuids: Vec<Span>,
}

impl EncodedBatch {
    pub(super) fn encode(batch: &[LineageEvent]) -> EncodedBatch {
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
