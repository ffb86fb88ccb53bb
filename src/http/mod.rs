//! The HTTP API: ingest (`POST /v1/events`), reads, the transparency log (`/v1/log/...`),
//! `/metrics` and `/healthz`.
//!
//! Built by [`router`] so tests can drive it without a socket. Never imports the worker: it
//! only enqueues through a `Producer` and reads through the `Store`.

mod auth;
mod datasets;
mod error;
mod events;
mod export;
mod health;
mod log;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::broker::{Broker, Producer};
use crate::config::Secret;
use crate::store::Store;

pub use error::ApiError;
pub use events::{search_page_json, stored_event_json};

/// Everything a request handler may touch.
#[derive(Clone)]
pub struct AppState {
    /// Where accepted events are enqueued.
    pub producer: Arc<dyn Producer>,
    /// The broker, for the queue depth gauge.
    pub broker: Arc<dyn Broker>,
    /// Where reads go.
    pub store: Arc<dyn Store>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bearer token required on every route but `/healthz`, if set.
    pub token: Option<Secret>,
    /// Largest single event accepted, in bytes.
    pub max_payload_bytes: usize,
    /// The broker's URL as shown (password hidden), for `/v1/status`.
    pub broker_url: String,
    /// The store's URL as shown (password hidden), for `/v1/status`.
    pub store_url: String,
}

/// Largest request body accepted by `POST /v1/events`: 64 MiB.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route(
            "/v1/events",
            post(events::post_events).get(events::search_events),
        )
        .route("/v1/events/{event_id}", get(events::get_event))
        .route("/v1/datasets/{uuid}/lineage", get(datasets::get_lineage))
        .route("/v1/export/prov", get(export::get_prov))
        .route("/v1/log/checkpoint", get(log::get_checkpoint))
        .route("/v1/log/proof/{event_id}", get(log::get_proof))
        .route("/v1/status", get(health::status))
        .route("/metrics", get(health::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(protected)
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::map_response(error::errors_as_json))
        .with_state(state)
}
