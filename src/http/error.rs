//! `ApiError`: the one place where library errors become HTTP answers. Details are logged; the
//! client gets a short reason as JSON `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::broker::BrokerError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a reason.
    BadRequest(String),
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404 with what was not found.
    NotFound(String),
    /// 422: every item of the request was refused.
    Unprocessable(serde_json::Value),
    /// 503 with `Retry-After`: the broker or store cannot take the request now.
    Unavailable(String),
    /// 500: something unexpected; details are in the log.
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": reason }),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "missing or wrong bearer token" }),
            ),
            ApiError::NotFound(what) => {
                (StatusCode::NOT_FOUND, serde_json::json!({ "error": what }))
            }
            ApiError::Unprocessable(body) => (StatusCode::UNPROCESSABLE_ENTITY, body),
            ApiError::Unavailable(detail) => {
                tracing::warn!(message = "Request refused: backend unavailable.", detail);
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": "temporarily unavailable, retry later" })),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
            ApiError::Internal(detail) => {
                tracing::error!(message = "Request failed.", detail);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": "internal error (see the server log)" }),
                )
            }
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
