//! The SQLite store's reads: rows, pages of the log, one level of the lineage graph, stored
//! edges, leaf hashes, tree nodes and checkpoints.
//!
//! Not for: writes (that is `commit.rs`).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::error::classify;
use super::timestamp::{parse_timestamp, timestamp_text};
use super::to_sql_int;
use crate::records::{Direction, LineageEdge};
use crate::store::rows::{self, EventRow};
use crate::store::{EdgePage, EventQuery, StoreError, StoredCheckpoint, StoredEdge, StoredEvent};
use crate::tlog::Hash;

pub(super) const SELECT_LOG_SIZE: &str = "SELECT size FROM log_head WHERE id = 0";

/// The columns [`StoredEvent`] is read from, in the order `read_event_row` expects.
pub(super) const EVENT_COLUMNS: &str =
    "log_position, event_id, dataset_uuid, operation, crs_from, crs_to, \
     processor_id, timestamp, payload_json, started_at, ended_at";

pub(super) fn tree_nodes(
    conn: &Connection,
    height: u32,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Hash)>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let (lo, hi) = (
        to_sql_int(from, "node index")?,
        to_sql_int(to, "node index")?,
    );
    let mut stmt = conn
        .prepare_cached(
            "SELECT node_index, hash FROM log_nodes \
             WHERE height = ?1 AND node_index >= ?2 AND node_index < ?3 ORDER BY node_index",
        )
        .map_err(classify)?;
    let nodes = stmt
        .query_map(params![height, lo, hi], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .map_err(classify)?;
    nodes
        .map(|node| {
            let (index, hash) = node.map_err(classify)?;
            rows::tree_node(height, index, &hash)
        })
        .collect()
}

pub(super) fn leaf_hashes(conn: &Connection, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let (lo, hi) = (to_sql_int(from, "position")?, to_sql_int(to, "position")?);
    let mut stmt = conn
        .prepare_cached(
            "SELECT log_position, leaf_hash FROM lineage_events \
             WHERE log_position >= ?1 AND log_position < ?2 ORDER BY log_position",
        )
        .map_err(classify)?;
    let leaves = stmt
        .query_map(params![lo, hi], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
        })
        .map_err(classify)?;
    rows::dense_leaf_hashes(from, to, leaves.map(|leaf| leaf.map_err(classify)))
}

pub(super) fn edges_page(
    conn: &Connection,
    cursor: u64,
    limit: usize,
) -> Result<EdgePage, StoreError> {
    let after = to_sql_int(cursor, "edge cursor")?;
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT g.rowid, g.event_id, e.log_position, g.from_uuid, g.to_uuid \
             FROM lineage_edges AS g LEFT JOIN lineage_events AS e ON e.event_id = g.event_id \
             WHERE g.rowid > ?1 ORDER BY g.rowid LIMIT ?2",
        )
        .map_err(classify)?;
    let mut rows = stmt.query(params![after, limit]).map_err(classify)?;
    let mut page = EdgePage::default();
    let mut last = after;
    while let Some(row) = rows.next().map_err(classify)? {
        last = row.get(0).map_err(classify)?;
        let position: Option<i64> = row.get(2).map_err(classify)?;
        page.edges.push(StoredEdge {
            event_id: row.get(1).map_err(classify)?,
            position: position.and_then(|p| u64::try_from(p).ok()),
            from: row.get(3).map_err(classify)?,
            to: row.get(4).map_err(classify)?,
        });
    }
    if !page.edges.is_empty() {
        page.next = u64::try_from(last).ok();
    }
    Ok(page)
}

pub(super) fn checkpoints(
    conn: &Connection,
    from_size: u64,
    limit: usize,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    paged(
        conn,
        "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
         WHERE tree_size >= ?1 ORDER BY tree_size LIMIT ?2",
        from_size,
        limit,
        read_checkpoint_row,
    )
}

/// A page of `sql` (which selects `... >= ?1 ORDER BY ... LIMIT ?2`): up to `limit` rows from
/// `from` on, each decoded by `decode`.
fn paged<T>(
    conn: &Connection,
    sql: &str,
    from: u64,
    limit: usize,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let Some((from, sql_limit)) = rows::page_bounds(from, limit) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(sql).map_err(classify)?;
    let mut rows = stmt.query(params![from, sql_limit]).map_err(classify)?;
    let mut out = Vec::with_capacity(limit.min(4096));
    while let Some(row) = rows.next().map_err(classify)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// One `log_checkpoints` row (`tree_size, root_hash, note, created_at`).
pub(super) fn read_checkpoint_row(row: &rusqlite::Row<'_>) -> Result<StoredCheckpoint, StoreError> {
    let root: Vec<u8> = row.get(1).map_err(classify)?;
    rows::checkpoint(
        row.get(0).map_err(classify)?,
        &root,
        row.get(2).map_err(classify)?,
        row.get(3).map_err(classify)?,
    )
}

pub(super) fn log_size(conn: &Connection) -> Result<u64, StoreError> {
    let size: i64 = conn
        .prepare_cached(SELECT_LOG_SIZE)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(classify)?;
    u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))
}

pub(super) fn get_event(
    conn: &Connection,
    event_id: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE event_id = ?1"
        ))
        .map_err(classify)?;
    let mut rows = stmt.query([event_id]).map_err(classify)?;
    match rows.next().map_err(classify)? {
        Some(row) => read_event_row(row).map(Some),
        None => Ok(None),
    }
}

pub(super) fn scan(
    conn: &Connection,
    from: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE log_position >= ?1 \
         ORDER BY log_position LIMIT ?2"
    );
    paged(conn, &sql, from, limit, read_event_row)
}

/// One `lineage_events` row selected with [`EVENT_COLUMNS`].
pub(super) fn read_event_row(row: &rusqlite::Row<'_>) -> Result<StoredEvent, StoreError> {
    let position: i64 = row.get(0).map_err(classify)?;
    let position = u64::try_from(position)
        .map_err(|_| StoreError::Corrupt(format!("negative log position {position}")))?;
    let event_id = row.text(1)?.unwrap_or_default();
    rows::stored_event(row, position, event_id)
}

/// Times are RFC 3339 text (`timestamp.rs`).
impl EventRow for rusqlite::Row<'_> {
    fn text(&self, index: usize) -> Result<Option<String>, StoreError> {
        self.get(index).map_err(classify)
    }

    fn time(&self, index: usize) -> Result<Result<Option<DateTime<Utc>>, String>, StoreError> {
        Ok(match self.text(index)? {
            None => Ok(None),
            Some(text) => parse_timestamp(&text).map(Some).ok_or(text),
        })
    }
}

/// One level of the lineage graph ([`crate::store::Store::neighbours`]): one probe of
/// `lineage_edges_to` (upstream) or `lineage_edges_from` (downstream) per dataset, then the
/// event of each edge found by its primary key (processor and time), all inside one read
/// transaction (one snapshot).
pub(super) fn neighbours(
    conn: &mut Connection,
    datasets: &[Uuid],
    direction: Direction,
    limit: usize,
) -> Result<Vec<LineageEdge>, StoreError> {
    let tx = conn.transaction().map_err(classify)?;
    let sql = match direction {
        Direction::Upstream => {
            "SELECT d.from_uuid, d.event_id, d.operation, e.processor_id, \
                    coalesce(e.ended_at, e.started_at, e.timestamp) \
             FROM lineage_edges d JOIN lineage_events e ON e.event_id = d.event_id \
             WHERE d.to_uuid = ?1"
        }
        Direction::Downstream => {
            "SELECT d.to_uuid, d.event_id, d.operation, e.processor_id, \
                    coalesce(e.ended_at, e.started_at, e.timestamp) \
             FROM lineage_edges d JOIN lineage_events e ON e.event_id = d.event_id \
             WHERE d.from_uuid = ?1"
        }
    };
    let mut edges = Vec::new();
    {
        let mut stmt = tx.prepare_cached(sql).map_err(classify)?;
        let mut key = Uuid::encode_buffer();
        'datasets: for &node in datasets {
            let node_text: &str = node.hyphenated().encode_lower(&mut key);
            let mut rows = stmt.query([node_text]).map_err(classify)?;
            while let Some(row) = rows.next().map_err(classify)? {
                if edges.len() >= limit {
                    break 'datasets;
                }
                let other: String = row.get(0).map_err(classify)?;
                let other = Uuid::parse_str(&other).map_err(|_| {
                    StoreError::Corrupt(format!("lineage_edges holds a non-UUID dataset '{other}'"))
                })?;
                let (from, to) = match direction {
                    Direction::Upstream => (other, node),
                    Direction::Downstream => (node, other),
                };
                edges.push(LineageEdge {
                    from,
                    to,
                    event_id: row.get(1).map_err(classify)?,
                    operation: row.get(2).map_err(classify)?,
                    processor_id: row.get(3).map_err(classify)?,
                    time: row
                        .get::<_, Option<String>>(4)
                        .map_err(classify)?
                        .as_deref()
                        .and_then(parse_timestamp),
                });
            }
        }
    }
    tx.commit().map_err(classify)?;
    Ok(edges)
}

/// `Store::mentions_dataset`: an edge from or to it (indexed), or else an event of which it is
/// the `dataset_uuid` (a scan that stops at the first match; only a dataset no edge names, a
/// source or an unknown one, gets that far).
pub(super) fn mentions_dataset(conn: &Connection, dataset: Uuid) -> Result<bool, StoreError> {
    let text = dataset.hyphenated().to_string();
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM lineage_edges WHERE to_uuid = ?1) \
             OR EXISTS (SELECT 1 FROM lineage_edges WHERE from_uuid = ?1) \
             OR EXISTS (SELECT 1 FROM lineage_events WHERE dataset_uuid = ?1)",
    )
    .and_then(|mut stmt| stmt.query_row([&text], |row| row.get(0)))
    .map_err(classify)
}

/// `Store::event_ids_with_prefix`: a range scan of the primary key,
/// `[prefix, next prefix)` ([`crate::store::prefix_range`]).
pub(super) fn event_ids_with_prefix(
    conn: &Connection,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let (low, high) = crate::store::prefix_range(prefix);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT event_id FROM lineage_events WHERE event_id >= ?1 AND event_id < ?2 \
             AND log_position IS NOT NULL ORDER BY event_id LIMIT ?3",
        )
        .map_err(classify)?;
    let rows = stmt
        .query_map(params![low, high, limit], |row| row.get(0))
        .map_err(classify)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(classify)
}

/// `Store::search_events`: the filters as one `WHERE`, newest first. The dataset filter uses
/// the edge indexes (inputs and outputs with edges) and the row's `dataset_uuid`; the others
/// are checked row by row while walking the log backwards, which stops once the page is full.
pub(super) fn search_events(
    conn: &Connection,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    // Adds a parameter; its placeholder.
    let mut bind = |value: Box<dyn rusqlite::ToSql>| {
        params.push(value);
        format!("?{}", params.len())
    };
    let mut conditions = vec!["log_position IS NOT NULL".to_owned()];
    if let Some(before) = query.before {
        let p = bind(Box::new(to_sql_int(before, "cursor")?));
        conditions.push(format!("log_position < {p}"));
    }
    if let Some(dataset) = query.dataset {
        let p = bind(Box::new(dataset.hyphenated().to_string()));
        conditions.push(format!(
            "(dataset_uuid = {p} OR event_id IN (SELECT event_id FROM lineage_edges WHERE \
             from_uuid = {p} UNION SELECT event_id FROM lineage_edges WHERE to_uuid = {p}))"
        ));
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
        let p = bind(Box::new(timestamp_text(since)));
        conditions.push(format!("coalesce(ended_at, started_at, timestamp) >= {p}"));
    }
    if let Some(until) = query.until {
        let p = bind(Box::new(timestamp_text(until)));
        conditions.push(format!("coalesce(started_at, ended_at, timestamp) <= {p}"));
    }
    let limit = bind(Box::new(
        i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX),
    ));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM lineage_events WHERE {} ORDER BY log_position DESC \
         LIMIT {limit}",
        conditions.join(" AND ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(AsRef::as_ref).collect();
    let mut rows = stmt.query(refs.as_slice()).map_err(classify)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        out.push(read_event_row(row)?);
    }
    Ok(out)
}
