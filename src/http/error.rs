//! `ApiError`: the one place where library errors become HTTP answers. Details are logged; the
//! client gets a short reason as JSON `{"error": "..."}` — every error answer, including those
//! axum's extractors and router write as plain text ([`errors_as_json`]).

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

impl ApiError {
    /// A backend's failure: 503 when retrying later may work, 500 otherwise.
    fn backend(transient: bool, detail: String) -> ApiError {
        if transient {
            ApiError::Unavailable(detail)
        } else {
            ApiError::Internal(detail)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::backend(e.is_transient(), e.to_string())
    }
}

impl From<crate::store::IdLookupError> for ApiError {
    fn from(e: crate::store::IdLookupError) -> Self {
        use crate::store::IdLookupError;
        match e {
            IdLookupError::Malformed(_) | IdLookupError::Ambiguous(_) => {
                ApiError::BadRequest(e.to_string())
            }
            IdLookupError::NotFound(_) => ApiError::NotFound(e.to_string()),
            IdLookupError::Store(e) => e.into(),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError::backend(e.is_transient(), e.to_string())
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

/// The answer for a path no route serves: 404 with the method and path.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Largest plain-text error body turned into JSON; longer ones are cut.
const MAX_ERROR_TEXT: usize = 4096;

/// Rewrites an error answer that is not JSON (axum's extractor rejections such as a bad
/// `direction` or `depth`, a 405, a 413 from the body limit) into `{"error": "<its text>"}`, so
/// that every error the API gives has one shape.
pub async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}
