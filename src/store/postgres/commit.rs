//! The PostgreSQL store's writes: a batch as one binary COPY under the log head's lock, with
//! the probe for stored events when duplicates are expected, and the merging of the edge
//! indexes' pending lists away from the commits (see "Writes" in the module documentation).
//!
//! Not for: reads (`read.rs`) or the COPY row framing (`copy_rows.rs`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::copy_rows::{self, EncodedRows};
use super::error::{classify, classify_pool};
use super::read::{log_head_from_row, log_size};
use super::{to_sql_int, PostgresStore};
use crate::event::LineageEvent;
use crate::store::{CommitReport, StoreError};
use crate::tlog::{event_leaf_hash, format_recorded_at, CompactRange};

/// How many attempts a commit makes inside the store (see "Writes"): the first may assume every
/// event is new; the others probe, and are repeated only when a writer that does not take the
/// log lock inserted one of the batch's events meanwhile.
pub(super) const RACE_RETRIES: usize = 4;

/// The log lock, as `migrate` takes it: the log size and frontier.
pub(super) const LOCK_LOG_HEAD: &str =
    "SELECT size, frontier FROM log_head WHERE id = 0 FOR UPDATE";

/// The commit's lock: the log size and frontier, and the server's clock once the lock is held
/// (the recording time of the batch; see "Writes").
pub(super) const LOCK_LOG_HEAD_AT: &str =
    "SELECT size, frontier, clock_timestamp() FROM log_head WHERE id = 0 FOR UPDATE";

/// The commit's probe, run under the log lock when the batch is expected to hold stored events
/// (see "Writes"): the 1-based ordinals (in `$1`, the batch's distinct event ids) of the events
/// that are not stored yet.
pub(super) const SELECT_FRESH: &str = r#"
SELECT coalesce(array_agg(b.ord ORDER BY b.ord), '{}')::bigint[]
FROM unnest($1::text[]) WITH ORDINALITY AS b(event_id, ord)
WHERE NOT EXISTS (SELECT 1 FROM lineage_events e WHERE e.event_id = b.event_id)
"#;

/// The commit's insert of the new events, with their edges, under the log lock: a binary COPY,
/// which writes a page of rows per heap WAL record instead of one record per row. The fields
/// known before the lock come first, so that they can be encoded beforehand ([`EncodedRows`]);
/// the record time, position and leaf hash come last.
pub(super) const COPY_EVENTS: &str =
    "COPY lineage_events (event_id, dataset_uuid, operation, crs_from, \
     crs_to, processor_id, payload_json, started_at, ended_at, inputs, outputs, \
     \"timestamp\", log_position, leaf_hash) FROM STDIN (FORMAT binary)";

/// The number of columns [`COPY_EVENTS`] names.
pub(super) const COPY_EVENT_FIELDS: i16 = 14;

/// How many bytes of COPY data a commit collects before sending them: large enough that the
/// per-message cost is negligible, small enough that the server works on the first rows while
/// the next are hashed.
pub(super) const COPY_CHUNK: usize = 256 * 1024;

pub(super) const UPDATE_LOG_HEAD: &str =
    "UPDATE log_head SET size = $1, frontier = $2 WHERE id = 0";

impl PostgresStore {
    /// `Store::commit_batch` (see "Writes" in the module documentation).
    pub(super) async fn commit(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
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

    /// One attempt at a commit (see "Writes"); `None` when an event of the batch turned out to
    /// be stored already. With `probe`, the events already stored are looked up under the lock
    /// and left out; without, every event is assumed new.
    pub(super) async fn try_commit(
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
pub(super) const CLEAN_EVERY_EVENTS: u64 = 16_000;

/// Merges the GIN pending lists of `inputs` and `outputs` into the indexes proper, in a task of
/// its own on a connection that holds no lock, every [`CLEAN_EVERY_EVENTS`] events this process
/// stores (migration 0003 says why). At most one merge per process runs at a time; merges from
/// several processes queue on the index's own lock. If the merge cannot run (an older server,
/// a role without EXECUTE), it says so once and stops trying: the inserts then merge the lists
/// themselves, as PostgreSQL does by default.
#[derive(Debug, Default)]
pub(super) struct EdgeIndexCleaner {
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
pub(super) async fn race_or(
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

/// Writes the size and frontier of `range` to `log_head`.
pub(super) async fn write_log_head<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    range: &CompactRange,
) -> Result<(), StoreError> {
    let size = to_sql_int(range.size())?;
    let frontier = range.to_frontier_bytes();
    client
        .execute(UPDATE_LOG_HEAD, &[&size, &frontier])
        .await
        .map_err(classify)?;
    Ok(())
}

/// A batch as the parameter of [`SELECT_FRESH`] and the rows of [`COPY_EVENTS`]: one element
/// per distinct event (the first occurrence of a repeated id; the repeats are duplicates).
pub(super) struct BatchColumns<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;
    use uuid::Uuid;

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
}
