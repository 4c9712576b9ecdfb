//! What every route shares: the error answer (a status and a one-line reason, in the
//! shape OpenAI's clients read), the request limits, JSON bodies and the API key.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;

/// An answer that is not a success: `{"error": {"message", "type", "code"}}`, the shape
/// of OpenAI's errors (its Python client shows `message`), with a one-line message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
}

impl From<duetdb::Error> for ApiError {
    /// The library's errors: bad input is the client's (400), a closed database means
    /// the server is stopping (503), anything else is ours (500).
    fn from(e: duetdb::Error) -> Self {
        let status = match &e {
            duetdb::Error::InvalidInput(_) | duetdb::Error::Dimension { .. } => StatusCode::BAD_REQUEST,
            duetdb::Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        let message = self.message.replace('\n', " ");
        (self.status, Json(json!({"error": {"message": message, "type": kind, "code": self.status.as_u16()}}))).into_response()
    }
}

/// Limits on one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_inputs: usize,
    pub(crate) max_documents: usize,
    pub(crate) max_text_bytes: usize,
    pub(crate) max_body_bytes: usize,
}

impl Limits {
    /// Checks the texts of one embeddings request: how many, none empty, none too long.
    pub(crate) fn check_inputs(&self, texts: &[String]) -> Result<(), ApiError> {
        if texts.is_empty() {
            return Err(ApiError::bad("`input` is empty: send at least one text"));
        }
        if texts.len() > self.max_inputs {
            return Err(ApiError::too_large(format!("{} inputs in one request, more than the limit of {} (split the request)", texts.len(), self.max_inputs)));
        }
        for (i, t) in texts.iter().enumerate() {
            self.check_text(&format!("input {i}"), t)?;
        }
        Ok(())
    }

    /// Checks one text, named `what` in the error (`input 3`, `the query text`).
    pub(crate) fn check_text(&self, what: &str, t: &str) -> Result<(), ApiError> {
        if t.trim().is_empty() {
            return Err(ApiError::bad(format!("{what} is empty")));
        }
        if t.len() > self.max_text_bytes {
            return Err(ApiError::too_large(format!("{what} has {} bytes, more than the limit of {}", t.len(), self.max_text_bytes)));
        }
        Ok(())
    }
}

/// A request body within the size limit; one past it is a 413 with our error shape
/// (axum's own rejection is plain text).
pub(crate) struct Body(pub(crate) Bytes);

impl FromRequest<Arc<super::AppState>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<super::AppState>) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(Body).map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::too_large(format!("the request body is larger than the limit of {} bytes (length limit exceeded)", state.limits.max_body_bytes))
            }
            status => ApiError::new(status, e.body_text()),
        })
    }
}

/// Runs blocking database work off the async threads; a task that panicked is a 500.
pub(crate) async fn blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> duetdb::Result<T> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} task failed: {e}"))),
    }
}

/// Parses a JSON body whatever its content type says, so that a plain `curl -d` works.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// Rejects a request without `Authorization: Bearer KEY` when a key is set.
pub(crate) async fn require_key(State(key): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    if let Some(key) = key.as_ref() {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => return ApiError::new(StatusCode::UNAUTHORIZED, "missing API key: send `Authorization: Bearer KEY`").into_response(),
            Some(g) if !same(g.trim().as_bytes(), key.as_bytes()) => return ApiError::new(StatusCode::UNAUTHORIZED, "wrong API key").into_response(),
            Some(_) => {}
        }
    }
    next.run(req).await
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
