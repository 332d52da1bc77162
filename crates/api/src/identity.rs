//! The identity routes every node has: the login (`POST /v1/sessions`, the one mutating
//! route open to anonymous callers) and `/v1/permissions`, which lists what each kind's
//! declared access makes of the roles.

use crate::auth::{allows, Op};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flatstack_header::identity::{AuthMethod, Role};
use flatstack_kernel::Fault;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
    password: String,
}

/// `POST /v1/sessions {"name", "password"}`: a session token from the first method that
/// knows the user; `401` for a wrong name or password (never which of the two).
pub(crate) async fn login(
    State(api): State<Arc<crate::routes::Api>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let login: Login = serde_json::from_slice(&body).map_err(|e| {
        ApiError(Fault::invalid(
            "",
            format!("a login is {{\"name\": ..., \"password\": ...}}: {e}"),
        ))
    })?;
    if login.name.len() > 255 || login.password.len() > 1024 {
        return Err(ApiError(Fault::unauthenticated(
            "wrong user name or password",
        )));
    }
    for (_, method) in api.kernel.registered::<AuthMethod>() {
        if let Some(session) = method
            .authenticator
            .login(&login.name, &login.password)
            .await?
        {
            let inventory = serde_json::to_value(session)
                .map_err(|e| ApiError(Fault::internal(e.to_string())))?;
            return Ok((StatusCode::CREATED, Json(json!({"inventory": inventory}))).into_response());
        }
    }
    Err(ApiError(Fault::unauthenticated(
        "wrong user name or password",
    )))
}

/// `GET /v1/permissions`: every permission (`<kind>:<verb>`, `<kind>:action:<name>`), the
/// kind's access, and the roles that hold it.
pub(crate) async fn permissions(State(api): State<Arc<crate::routes::Api>>) -> Json<Value> {
    let mut permissions = Vec::new();
    let mut add = |name: String, access: &str, granted: Vec<&str>| {
        permissions.push(json!({"permission": name, "access": access, "roles": granted}));
    };
    let roles = |access, op| -> Vec<&str> {
        Role::ALL
            .into_iter()
            .filter(|role| allows(access, *role, op))
            .map(Role::as_str)
            .collect()
    };
    for r in api.resources() {
        let access = format!("{:?}", r.access).to_lowercase();
        for op in [Op::Read, Op::Create, Op::Update, Op::Delete] {
            add(
                format!("{}:{}", r.path, op.verb()),
                &access,
                roles(r.access, op),
            );
        }
        for (_, action) in api.actions(r) {
            let op = Op::Action {
                member: action.member,
            };
            add(
                format!("{}:action:{}", r.path, action.name),
                &access,
                roles(r.access, op),
            );
        }
    }
    Json(json!({"permissions": permissions}))
}
