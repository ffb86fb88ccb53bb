//! `GET /healthz` and `GET /metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::AppState;

/// Liveness and store reachability: 200 `{"status":"ok",...}` or 503.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.count().await {
        Ok(events) => (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "events": events })),
        ),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "degraded", "store": e.to_string() })),
        ),
    }
}

/// `GET /v1/status`: the broker and the store (see [`crate::status`]); 200 when healthy, 503
/// when degraded, the same JSON either way.
pub async fn status(State(state): State<AppState>) -> impl IntoResponse {
    use crate::status::{broker_status, store_status, Status};
    let (broker, store) = tokio::join!(
        broker_status(state.broker.as_ref(), state.broker_url.clone()),
        store_status(state.store.as_ref(), state.store_url.clone()),
    );
    let status = Status::new(Some(broker), store);
    let code = if status.healthy {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status))
}

/// Prometheus text format. Refreshes the queue depth gauge first.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(Some(depth)) = state.broker.depth().await {
        crate::metrics::queue_depth(depth);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
