//! `GET /v1/log/checkpoint` (the latest signed checkpoint note, `text/plain`) and
//! `GET /v1/log/proof/{event_id}` (the inclusion proof JSON that `geoprov prove` prints).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::{ApiError, AppState};
use crate::tlog_service::{inclusion_proof, LogServiceError};

impl From<LogServiceError> for ApiError {
    fn from(e: LogServiceError) -> Self {
        match e {
            LogServiceError::Store(e) => e.into(),
            LogServiceError::NotFound(what) | LogServiceError::NotCovered(what) => {
                ApiError::NotFound(what)
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The latest signed checkpoint, as a C2SP signed note; 404 when none was written yet.
pub async fn get_checkpoint(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let log = crate::store::transparency_log(state.store.as_ref())?;
    let checkpoint = log
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::NotFound("no checkpoint has been written yet".into()))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        checkpoint.note,
    ))
}

/// The inclusion proof of one event against the latest checkpoint; 404 when the event is not
/// stored or not covered by a checkpoint yet.
pub async fn get_proof(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = crate::store::resolve_event_id(state.store.as_ref(), &event_id).await?;
    let proof = inclusion_proof(state.store.as_ref(), &id).await?;
    Ok(Json(proof))
}
