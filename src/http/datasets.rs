//! `GET /v1/datasets/{uuid}/lineage?direction=upstream|downstream&depth=N`.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::store::Direction;

/// Query parameters of the lineage walk.
#[derive(Debug, Deserialize)]
pub struct LineageParams {
    /// `upstream` (default) or `downstream`.
    pub direction: Option<Direction>,
    /// Most edges from the dataset. Defaults to 10, at most 100.
    pub depth: Option<u32>,
}

/// Walk the lineage graph from a dataset.
pub async fn get_lineage(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(params): Query<LineageParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = Uuid::parse_str(&uuid)
        .map_err(|_| ApiError::BadRequest(format!("'{uuid}' is not a UUID")))?;
    let depth = params.depth.unwrap_or(10);
    if depth > 100 {
        return Err(ApiError::BadRequest("depth is at most 100".into()));
    }
    let direction = params.direction.unwrap_or(Direction::Upstream);
    let graph = crate::lineage::walk_known(
        state.store.as_ref(),
        root,
        direction,
        depth,
        crate::lineage::WalkLimits::default(),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(crate::lineage::unknown_dataset(root)))?;
    Ok(Json(crate::lineage::graph_json(&graph, direction)))
}
