//! `GET /v1/export/prov?dataset=UUID&since=T&until=T`: PROV-JSON, streamed.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::export::{export_prov, ExportFilter};

/// Query parameters of the export.
#[derive(Debug, Deserialize)]
pub struct ExportParams {
    /// Only this dataset and its whole upstream.
    pub dataset: Option<String>,
    /// Only events recorded at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only events recorded before this RFC 3339 time.
    pub until: Option<String>,
}

/// Stream the document; the body is produced page by page as the client reads it.
pub async fn get_prov(
    State(state): State<AppState>,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let filter = ExportFilter::parse(
        params.dataset.as_deref(),
        params.since.as_deref(),
        params.until.as_deref(),
        "",
    )
    .map_err(ApiError::BadRequest)?;
    if let Some(root) = filter.dataset {
        if !state.store.mentions_dataset(root).await? {
            return Err(ApiError::NotFound(crate::lineage::unknown_dataset(root)));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let store = state.store.clone();
    tokio::spawn(async move {
        let chunk_tx = tx.clone();
        let mut sink = move |chunk: Vec<u8>| {
            let tx = chunk_tx.clone();
            async move {
                tx.send(Ok(chunk))
                    .await
                    .map_err(|_| std::io::Error::other("client went away"))
            }
            .boxed()
        };
        let mut progress = |_: u64, _: usize, _: u64| {};
        if let Err(e) = export_prov(store.as_ref(), &filter, &mut sink, &mut progress).await {
            tracing::warn!(message = "PROV export failed mid-stream.", error = %e);
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let stream = tokio_stream_from(rx);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
