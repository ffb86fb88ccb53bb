//! The row pass: pages of rows read from the store with their stored leaf hashes, and each
//! row checked against its payload (id, seed columns, event times, leaf hash) on all cores.
//!
//! Not for: the tree and checkpoints (`checkpoints.rs`).

use std::sync::Arc;

use super::edges::{EdgeKey, EdgeSum};
use crate::event::event_id::event_id_of_payload_json;
use crate::event::{parse_event, EventId};
use crate::store::{transparency_log, Store, StoreError, StoredEvent};
use crate::tlog::{event_leaf_hash, format_recorded_at, Hash};

/// One page as read from the store: the rows and, per row, its stored leaf hash (`None` when
/// missing or malformed).
pub(super) struct Page {
    pub(super) rows: Vec<StoredEvent>,
    pub(super) stored: Vec<Option<Hash>>,
}

/// Reads the rows of positions `from..end` (at most `limit`) and their stored leaf hashes.
pub(super) async fn read_page(
    store: Arc<dyn Store>,
    from: u64,
    end: u64,
    limit: usize,
) -> Result<Page, StoreError> {
    let want = usize::try_from(end - from).unwrap_or(usize::MAX).min(limit);
    let mut rows = store.scan(from, want).await?;
    rows.retain(|r| r.position < end);
    let log = transparency_log(store.as_ref())?;
    let dense = rows
        .iter()
        .enumerate()
        .all(|(i, r)| Some(r.position) == from.checked_add(i as u64));
    let stored = match (dense, rows.last()) {
        (_, None) => Vec::new(),
        (true, Some(last)) => match log.leaf_hashes(from, last.position + 1).await {
            Ok(hashes) => hashes.into_iter().map(Some).collect(),
            Err(StoreError::Corrupt(_)) => per_row_hashes(store.as_ref(), &rows).await?,
            Err(e) => return Err(e),
        },
        (false, Some(_)) => per_row_hashes(store.as_ref(), &rows).await?,
    };
    Ok(Page { rows, stored })
}

/// The slow path, for a page with a gap or a bad stored hash: each row's hash on its own.
pub(super) async fn per_row_hashes(
    store: &dyn Store,
    rows: &[StoredEvent],
) -> Result<Vec<Option<Hash>>, StoreError> {
    let log = transparency_log(store)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        match log.leaf_hashes(row.position, row.position + 1).await {
            Ok(hashes) => out.push(hashes.first().copied()),
            Err(StoreError::Corrupt(_)) => out.push(None),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Checks one row against its payload and stored leaf hash; returns the recomputed leaf hash and
/// the digest of the edges its payload names, or why the row is bad.
pub(super) fn check_row(
    row: &StoredEvent,
    stored: Option<&Hash>,
    key: &EdgeKey,
) -> Result<(Hash, EdgeSum), String> {
    let event = parse_event(row.payload_json.as_bytes(), usize::MAX);
    let derived_id = match &event {
        Ok(e) => e.event_id,
        Err(_) => event_id_of_payload_json(&row.payload_json)
            .map_err(|e| format!("payload_json is not JSON: {e}"))?,
    };
    // Case is not checked here: the event_id text is hashed into the leaf.
    if EventId::from_hex(&row.event_id) != Some(derived_id) {
        return Err("payload_json does not hash to event_id".into());
    }
    let event = event.map_err(|e| format!("payload_json is not a valid event: {e}"))?;
    let mut buf = uuid::Uuid::encode_buffer();
    let dataset_uuid: &str = event.dataset_uuid.hyphenated().encode_lower(&mut buf);
    let columns: [(&str, Option<&str>, Option<&str>); 5] = [
        ("dataset_uuid", Some(&row.dataset_uuid), Some(dataset_uuid)),
        ("operation", Some(&row.operation), Some(&event.operation)),
        (
            "crs_from",
            row.crs_from.as_deref(),
            event.crs_from.as_deref(),
        ),
        ("crs_to", row.crs_to.as_deref(), event.crs_to.as_deref()),
        (
            "processor_id",
            Some(&row.processor_id),
            Some(&event.processor_id),
        ),
    ];
    for (name, stored_value, derived) in columns {
        if stored_value != derived {
            return Err(format!(
                "column {name} ({stored_value:?}) does not match payload_json ({derived:?})"
            ));
        }
    }
    let times = [
        ("started_at", row.started_at, event.started_at),
        ("ended_at", row.ended_at, event.ended_at),
    ];
    for (name, stored_value, derived) in times {
        // The stores keep microseconds, and may round or truncate a finer time: equal within 1.
        let same = match (stored_value, derived) {
            (None, None) => true,
            (Some(a), Some(b)) => (a.timestamp_micros() - b.timestamp_micros()).abs() <= 1,
            _ => false,
        };
        if !same {
            return Err(format!(
                "column {name} ({stored_value:?}) does not match payload_json ({derived:?})"
            ));
        }
    }
    let leaf = event_leaf_hash(
        row.position,
        &row.event_id,
        &format_recorded_at(row.recorded_at),
        &row.payload_json,
    )
    .map_err(|e| e.to_string())?;
    match stored {
        None => Err("the stored leaf_hash is missing or malformed".into()),
        Some(hash) if *hash != leaf => Err(format!(
            "the stored leaf_hash does not match the row (recomputed {})",
            hex::encode(leaf)
        )),
        Some(_) => Ok((leaf, EdgeSum::of_event(key, &row.event_id, &event))),
    }
}

/// Each row's leaf hash and edge digest, or the first bad row's index and reason.
pub(super) type RowChecks = Result<Vec<(Hash, EdgeSum)>, (usize, String)>;

/// Checks a page's rows on all cores; returns their leaf hashes and edge digests, or the first
/// bad row's index and reason.
pub(super) fn check_page(page: &Page, key: &EdgeKey) -> RowChecks {
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1);
    let n = page.rows.len();
    let chunk = n.div_ceil(threads).max(256);
    let check = |start: usize, end: usize| -> RowChecks {
        (start..end)
            .map(|i| check_row(&page.rows[i], page.stored[i].as_ref(), key).map_err(|e| (i, e)))
            .collect()
    };
    if n <= chunk {
        return check(0, n);
    }
    let results: Vec<RowChecks> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(n);
                scope.spawn(move || check(start, end))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(k, h)| {
                h.join()
                    .unwrap_or_else(|_| Err((k * chunk, "the row check panicked".into())))
            })
            .collect()
    });
    let mut leaves = Vec::with_capacity(n);
    for result in results {
        leaves.extend(result?);
    }
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// The leaf hash `check_row` recomputes, or its reason.
    fn leaf_of(row: &StoredEvent, stored: Option<&Hash>) -> Result<Hash, String> {
        check_row(row, stored, &EdgeKey::new()).map(|(leaf, _)| leaf)
    }

    fn row(position: u64, payload: &str) -> (StoredEvent, Hash) {
        let event = parse_event(payload.as_bytes(), usize::MAX).unwrap();
        let recorded_at = Utc::now();
        let id = event.event_id.to_hex();
        let leaf = event_leaf_hash(
            position,
            &id,
            &format_recorded_at(recorded_at),
            &event.payload_json,
        )
        .unwrap();
        let stored = StoredEvent {
            position,
            event_id: id,
            dataset_uuid: event.dataset_uuid.to_string(),
            operation: event.operation.clone(),
            crs_from: event.crs_from.clone(),
            crs_to: event.crs_to.clone(),
            processor_id: event.processor_id.clone(),
            recorded_at,
            payload_json: event.payload_json.clone(),
            started_at: event.started_at.map(|t| t.with_timezone(&chrono::Utc)),
            ended_at: event.ended_at.map(|t| t.with_timezone(&chrono::Utc)),
        };
        (stored, leaf)
    }

    const PAYLOAD: &str = r#"{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "operation": "tile", "processor_id": "p", "crs_from": "EPSG:4326"}"#;

    #[test]
    fn an_intact_row_yields_its_leaf() {
        let (stored, leaf) = row(3, PAYLOAD);
        assert_eq!(leaf_of(&stored, Some(&leaf)), Ok(leaf));
    }

    #[test]
    fn each_kind_of_change_is_named() {
        let (good, leaf) = row(3, PAYLOAD);
        let mut r = good.clone();
        r.payload_json = r.payload_json.replace("tile", "tilf");
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("does not hash"));
        let mut r = good.clone();
        r.operation = "mosaic".into();
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column operation"));
        let mut r = good.clone();
        r.crs_to = Some("EPSG:3857".into());
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column crs_to"));
        let mut r = good.clone();
        r.position = 4;
        assert!(leaf_of(&r, Some(&leaf)).unwrap_err().contains("leaf_hash"));
        assert!(leaf_of(&good, None).unwrap_err().contains("missing"));
        let mut r = good;
        r.recorded_at += chrono::Duration::seconds(1);
        assert!(leaf_of(&r, Some(&leaf)).unwrap_err().contains("leaf_hash"));
    }

    #[test]
    fn event_times_are_checked_to_the_microsecond() {
        let payload = r#"{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "ended_at": "2024-05-01T10:00:03.1234567+02:00", "operation": "tile", "processor_id": "p", "started_at": "2024-05-01T07:00:00Z"}"#;
        let (good, leaf) = row(3, payload);
        assert_eq!(leaf_of(&good, Some(&leaf)), Ok(leaf));
        // A store keeps microseconds: the truncated time still matches.
        let mut r = good.clone();
        r.ended_at = r.ended_at.map(|t| t - chrono::Duration::nanoseconds(700));
        assert_eq!(leaf_of(&r, Some(&leaf)), Ok(leaf));
        let mut r = good.clone();
        r.started_at = r.started_at.map(|t| t + chrono::Duration::seconds(1));
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column started_at"));
        let mut r = good;
        r.ended_at = None;
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column ended_at"));
    }

    #[test]
    fn a_page_reports_its_first_bad_row() {
        let rows: Vec<(StoredEvent, Hash)> = (0..1000)
            .map(|i| {
                row(
                    i,
                    &format!(
                        r#"{{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "operation": "tile", "processor_id": "p", "n": {i}}}"#
                    ),
                )
            })
            .collect();
        let mut page = Page {
            rows: rows.iter().map(|r| r.0.clone()).collect(),
            stored: rows.iter().map(|r| Some(r.1)).collect(),
        };
        assert_eq!(check_page(&page, &EdgeKey::new()).unwrap().len(), 1000);
        page.rows[700].processor_id = "q".into();
        page.rows[900].processor_id = "q".into();
        assert_eq!(check_page(&page, &EdgeKey::new()).unwrap_err().0, 700);
    }
}
