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
