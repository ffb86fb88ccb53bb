//! Adoption: rows another writer (the reference Python task) put into `lineage_events` get
//! their log positions, event times, edges and leaf hashes, in `(timestamp, event_id)` order,
//! seed columns untouched (see "Adoption" in the module documentation).
//!
//! Not for: checking that a table can be adopted at all (that is `migrate.rs`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::commit::write_log_head;
use super::commit::LOCK_LOG_HEAD;
use super::error::classify;
use super::read::{log_head_from_row, query_value};
use super::{to_sql_int, PostgresStore};
use crate::event::{parse_event, LineageEvent};
use crate::store::StoreError;
use crate::tlog::{event_leaf_hash, format_recorded_at, Hash};

/// Rows adopted per page (see "Adoption" in the module documentation).
pub(super) const ADOPTION_PAGE: i64 = 1000;

impl PostgresStore {
    /// Give every row without a log position its position, event times and edges (see
    /// "Adoption" in the module documentation). Returns how many rows were adopted.
    pub(super) async fn adopt_pending(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<u64, StoreError> {
        let privileged: bool = query_value(
            &*client,
            "SELECT has_table_privilege('lineage_events', 'UPDATE') \
                AND has_table_privilege('log_head', 'UPDATE')",
            &[],
        )
        .await?;
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
}

/// The leaf hash of a row as stored (see [`crate::tlog::leaf`]). A row written by another writer
/// may lack its `timestamp` or `payload_json`: those hash as empty text, so the row still takes
/// its place in the tree, and `verify` names it for the missing column.
pub(super) fn stored_leaf_hash(
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

/// One page of adopted rows as the array parameters of the adoption's UPDATE and INSERT.
#[derive(Default)]
pub(super) struct AdoptionPage {
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
