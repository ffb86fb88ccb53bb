//! `POST /v1/events` (ingest) and `GET /v1/events/{event_id}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::{ApiError, AppState};
use crate::ingest::{self, IngestItem};

/// Validate and durably enqueue an object, an array or NDJSON. Answers 202 with the ids of the
/// accepted events and a reason per refused item; 422 when every item was refused.
pub async fn post_events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let max = state.max_payload_bytes;
    let batch = tokio::task::spawn_blocking(move || ingest::prepare(&body, max))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if batch.items.is_empty() {
        return Err(ApiError::BadRequest("the body holds no event".into()));
    }
    let mut ids = Vec::new();
    let mut rejected = Vec::new();
    for item in &batch.items {
        match item {
            IngestItem::Accepted { event_id, .. } => ids.push(event_id.to_hex()),
            IngestItem::Rejected { index, reason } => {
                rejected.push(serde_json::json!({ "index": index, "reason": reason }))
            }
        }
    }
    crate::metrics::ingested(ids.len(), rejected.len());
    if ids.is_empty() {
        return Err(ApiError::Unprocessable(serde_json::json!({
            "accepted": 0, "event_ids": [], "rejected": rejected,
        })));
    }
    state.producer.enqueue(&batch.accepted_bodies()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "accepted": ids.len(), "event_ids": ids, "rejected": rejected,
        })),
    ))
}

/// One stored event: its columns, log position and payload.
pub async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = crate::store::resolve_event_id(state.store.as_ref(), &event_id).await?;
    let row = state
        .store
        .get_event(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))?;
    Ok(Json(stored_event_json(&row)))
}

/// `GET /v1/events?dataset=&id=&operation=&processor=&crs=&since=&until=&limit=&cursor=`: one
/// page of the matching events, newest first, as `{"events": [...], "next_cursor": "…"|null}`.
pub async fn search_events(
    State(state): State<AppState>,
    Query(text): Query<crate::search::SearchText>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = text.parse("").map_err(ApiError::BadRequest)?;
    let page = state.store.search_events(&query).await?;
    Ok(Json(search_page_json(&page)))
}

/// The JSON answer of a search page (`GET /v1/events`, `geoprov search --format json`).
pub fn search_page_json(page: &crate::store::EventPage) -> serde_json::Value {
    serde_json::json!({
        "events": page.events.iter().map(stored_event_json).collect::<Vec<_>>(),
        "next_cursor": crate::search::cursor_text(page.next),
    })
}

/// The JSON shape of a stored event in API answers.
pub fn stored_event_json(row: &crate::store::StoredEvent) -> serde_json::Value {
    // The payload is Python-style JSON and may hold NaN/Infinity, which strict JSON cannot:
    // serve it parsed where it is strict JSON, and always as the exact stored text.
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "event_id": row.event_id,
        "log_position": row.position,
        "dataset_uuid": row.dataset_uuid,
        "operation": row.operation,
        "crs_from": row.crs_from,
        "crs_to": row.crs_to,
        "processor_id": row.processor_id,
        "timestamp": row.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "payload": payload,
        "payload_json": row.payload_json,
    })
}
