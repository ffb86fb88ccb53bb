//! The PostgreSQL store's reads: rows, pages of the log, one level of the lineage graph, and
//! the stored edges, plus the row decoders they share with the other files.
//!
//! Not for: the transparency log's reads (`log.rs`).

use chrono::{DateTime, Utc};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::error::{classify, corrupt};
use super::{to_sql_int, PostgresStore};
use crate::event::EventId;
use crate::records::{Direction, LineageEdge};
use crate::store::rows::{self, EventRow};
use crate::store::{EdgePage, EventQuery, StoreError, StoredCheckpoint, StoredEdge, StoredEvent};
use crate::tlog::{format_recorded_at, CompactRange};

/// The log head without a lock (one row: one consistent snapshot of size and frontier).
pub(super) const SELECT_LOG_HEAD: &str = "SELECT size, frontier FROM log_head WHERE id = 0";

pub(super) const SELECT_LOG_SIZE: &str = "SELECT size FROM log_head WHERE id = 0";

/// The columns [`StoredEvent`] is read from, in the order [`read_event_row`] expects.
pub(super) const EVENT_COLUMNS: &str =
    "log_position, event_id, dataset_uuid, operation, crs_from, crs_to, \
     processor_id, \"timestamp\", payload_json, started_at, ended_at";

/// The first column of the one row `sql` selects with `params`.
pub(super) async fn query_value<C, T>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, StoreError>
where
    C: deadpool_postgres::GenericClient + Sync,
    T: for<'a> FromSql<'a>,
{
    client
        .query_one(sql, params)
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)
}

pub(super) async fn log_size<C: deadpool_postgres::GenericClient + Sync>(
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

/// The frontier of a `log_head` row selected as `size, frontier, ...`.
pub(super) fn log_head_from_row(row: &tokio_postgres::Row) -> Result<CompactRange, StoreError> {
    let size: i64 = row.try_get(0).map_err(corrupt)?;
    let frontier: &[u8] = row.try_get(1).map_err(corrupt)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    CompactRange::from_frontier_bytes(size, frontier)
        .map_err(|e| StoreError::Corrupt(format!("log_head.frontier: {e}")))
}

/// One `log_checkpoints` row (`tree_size, root_hash, note, created_at`).
pub(super) fn read_checkpoint_row(
    row: &tokio_postgres::Row,
) -> Result<StoredCheckpoint, StoreError> {
    let root: &[u8] = row.try_get(1).map_err(corrupt)?;
    let created_at: DateTime<Utc> = row.try_get(3).map_err(corrupt)?;
    rows::checkpoint(
        row.try_get(0).map_err(corrupt)?,
        root,
        row.try_get(2).map_err(corrupt)?,
        format_recorded_at(created_at),
    )
}

/// One `lineage_events` row selected with [`EVENT_COLUMNS`].
pub(super) fn read_event_row(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let position: Option<i64> = row.try_get(0).map_err(corrupt)?;
    let event_id = row.text(1)?.unwrap_or_default();
    let position = position
        .and_then(|p| u64::try_from(p).ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the row of event_id {event_id} has log position {position:?}"
            ))
        })?;
    rows::stored_event(row, position, event_id)
}

impl EventRow for tokio_postgres::Row {
    fn text(&self, index: usize) -> Result<Option<String>, StoreError> {
        self.try_get(index).map_err(corrupt)
    }

    fn time(&self, index: usize) -> Result<Result<Option<DateTime<Utc>>, String>, StoreError> {
        self.try_get(index).map(Ok).map_err(corrupt)
    }
}

impl PostgresStore {
    /// `Store::get_event`: the row of a logged event.
    pub(super) async fn read_event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
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

    /// A page of `sql` (which selects `... >= $1 ORDER BY ... LIMIT $2`): up to `limit` rows
    /// from `from` on, each decoded by `decode`.
    pub(super) async fn read_paged<T>(
        &self,
        sql: &str,
        from: u64,
        limit: usize,
        decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let Some((from, limit)) = rows::page_bounds(from, limit) else {
            return Ok(Vec::new());
        };
        let client = self.ready_client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(classify)?;
        let rows = client
            .query(&stmt, &[&from, &limit])
            .await
            .map_err(classify)?;
        rows.iter().map(decode).collect()
    }

    /// `Store::scan`: up to `limit` rows from position `from` on.
    pub(super) async fn read_page(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE log_position >= $1 \
             ORDER BY log_position LIMIT $2"
        );
        self.read_paged(&sql, from, limit, read_event_row).await
    }

    /// `Store::neighbours`: one query over the whole frontier (`= ANY($1)`, found through the
    /// GIN index on `outputs` upstream or `inputs` downstream), one row per (dataset of the
    /// frontier, other end) pair of each event, in a read-only repeatable-read transaction.
    pub(super) async fn read_neighbours(
        &self,
        datasets: &[Uuid],
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<LineageEdge>, StoreError> {
        let mut client = self.ready_client().await?;
        let sql = match direction {
            Direction::Upstream => {
                "SELECT o, i, e.event_id, coalesce(e.operation, ''), \
                 coalesce(e.processor_id, ''), coalesce(e.ended_at, e.started_at, e.\"timestamp\") \
                 FROM lineage_events e \
                 CROSS JOIN LATERAL unnest(e.outputs) o CROSS JOIN LATERAL unnest(e.inputs) i \
                 WHERE e.outputs && $1::uuid[] AND o = ANY($1::uuid[]) LIMIT $2"
            }
            Direction::Downstream => {
                "SELECT i, o, e.event_id, coalesce(e.operation, ''), \
                 coalesce(e.processor_id, ''), coalesce(e.ended_at, e.started_at, e.\"timestamp\") \
                 FROM lineage_events e \
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = tx
            .query(&stmt, &[&datasets, &limit])
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        rows.iter()
            .map(|row| {
                let node: Uuid = row.try_get(0).map_err(classify)?;
                let other: Uuid = row.try_get(1).map_err(classify)?;
                let (from, to) = match direction {
                    Direction::Upstream => (other, node),
                    Direction::Downstream => (node, other),
                };
                Ok(LineageEdge {
                    from,
                    to,
                    event_id: row.try_get(2).map_err(classify)?,
                    operation: row.try_get(3).map_err(classify)?,
                    processor_id: row.try_get(4).map_err(classify)?,
                    time: row.try_get(5).map_err(classify)?,
                })
            })
            .collect()
    }

    /// `Store::edges`: pages by log position; the cursor is the first position of the page,
    /// `limit` the number of positions; the edges come from the rows' `inputs` x `outputs`.
    pub(super) async fn read_edges(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<EdgePage, StoreError> {
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

    /// `Store::mentions_dataset`: through the GIN indexes on `outputs` (which hold the
    /// `dataset_uuid` of every logged event) and `inputs`.
    pub(super) async fn read_mentions(&self, dataset: Uuid) -> Result<bool, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM lineage_events WHERE outputs @> ARRAY[$1::uuid]) \
                     OR EXISTS (SELECT 1 FROM lineage_events WHERE inputs @> ARRAY[$1::uuid])",
            )
            .await
            .map_err(classify)?;
        client
            .query_one(&stmt, &[&dataset])
            .await
            .map_err(classify)?
            .try_get(0)
            .map_err(classify)
    }

    /// `Store::event_ids_with_prefix`: a range scan of the primary key (lowercase hex orders
    /// the same under every collation the server may use, so the bounds hold).
    pub(super) async fn read_ids_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (low, high) = crate::store::prefix_range(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT event_id FROM lineage_events WHERE event_id >= $1 AND event_id < $2 \
                 AND log_position IS NOT NULL ORDER BY event_id LIMIT $3",
            )
            .await
            .map_err(classify)?;
        let rows = client
            .query(&stmt, &[&low, &high, &limit])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(classify))
            .collect()
    }

    /// `Store::search_events`: the filters as one `WHERE`, newest first; the dataset filter
    /// goes through the GIN indexes on `outputs` (which hold every logged event's
    /// `dataset_uuid`) and `inputs`.
    pub(super) async fn read_search(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        // Adds a parameter; its placeholder.
        let mut bind = |value: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
            params.push(value);
            format!("${}", params.len())
        };
        let mut conditions = vec!["log_position IS NOT NULL".to_owned()];
        if let Some(before) = query.before {
            let p = bind(Box::new(to_sql_int(before)?));
            conditions.push(format!("log_position < {p}"));
        }
        if let Some(dataset) = query.dataset {
            let p = bind(Box::new(vec![dataset]));
            conditions.push(format!("(outputs @> {p}::uuid[] OR inputs @> {p}::uuid[])"));
        }
        if let Some(prefix) = &query.id_prefix {
            let (low, high) = crate::store::prefix_range(prefix);
            let (low, high) = (bind(Box::new(low)), bind(Box::new(high)));
            conditions.push(format!("event_id >= {low} AND event_id < {high}"));
        }
        for (column, value) in [
            ("operation", &query.operation),
            ("processor_id", &query.processor),
        ] {
            if let Some(value) = value {
                let p = bind(Box::new(value.clone()));
                conditions.push(format!("{column} = {p}"));
            }
        }
        if let Some(crs) = &query.crs {
            let p = bind(Box::new(crs.clone()));
            conditions.push(format!("(crs_from = {p} OR crs_to = {p})"));
        }
        if let Some(since) = query.since {
            let p = bind(Box::new(since));
            conditions.push(format!(
                "coalesce(ended_at, started_at, \"timestamp\") >= {p}"
            ));
        }
        if let Some(until) = query.until {
            let p = bind(Box::new(until));
            conditions.push(format!(
                "coalesce(started_at, ended_at, \"timestamp\") <= {p}"
            ));
        }
        let limit = bind(Box::new(
            i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX),
        ));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE {} ORDER BY log_position DESC \
             LIMIT {limit}",
            conditions.join(" AND ")
        );
        let client = self.ready_client().await?;
        let stmt = client.prepare_cached(&sql).await.map_err(classify)?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client.query(&stmt, &refs).await.map_err(classify)?;
        rows.iter().map(read_event_row).collect()
    }
}
