//! Faults as HTTP responses: `{"error": {"code", "message", "details"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flatstack_kernel::{Fault, FaultCode};
use serde_json::json;

/// A fault on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub Fault);

impl From<Fault> for ApiError {
    fn from(fault: Fault) -> Self {
        ApiError(fault)
    }
}

pub fn status_of(code: FaultCode) -> StatusCode {
    match code {
        FaultCode::InvalidArgument => StatusCode::BAD_REQUEST,
        FaultCode::NotFound => StatusCode::NOT_FOUND,
        FaultCode::Conflict => StatusCode::CONFLICT,
        FaultCode::Vetoed => StatusCode::UNPROCESSABLE_ENTITY,
        FaultCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        FaultCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FaultCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        FaultCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        FaultCode::Forbidden => StatusCode::FORBIDDEN,
        FaultCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
    }
}

pub fn body_of(fault: &Fault) -> serde_json::Value {
    json!({"error": {"code": fault.code, "message": fault.message, "details": fault.details}})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(self.0.code), Json(body_of(&self.0))).into_response()
    }
}

/// Gives every error the JSON error shape, whoever made it: axum's own refusals (a body
/// too large, `413`; a malformed query, `400`; a method a route does not have, `405`) are
/// plain text, which clients of this API cannot parse.
pub(crate) async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/event-stream"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => FaultCode::NotFound,
        StatusCode::CONFLICT => FaultCode::Conflict,
        StatusCode::UNAUTHORIZED => FaultCode::Unauthenticated,
        StatusCode::FORBIDDEN => FaultCode::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => FaultCode::TooManyRequests,
        StatusCode::SERVICE_UNAVAILABLE => FaultCode::Unavailable,
        s if s.is_client_error() => FaultCode::InvalidArgument,
        _ => FaultCode::Internal,
    };
    // The text is axum's, about the request's form (never data): kept as the message.
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    let mut answer = (status, Json(body_of(&Fault::new(code, message)))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
