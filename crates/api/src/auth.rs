//! Who is calling, and may they: every request but the public ones carries
//! `Authorization: Bearer <token>`, which the registered authentication methods
//! ([`AuthMethod`]) turn into a [`Caller`]; each route then checks the caller's role
//! against the access its kind declares ([`Access`]), and, for another account's
//! resources, answers as if they did not exist. Every mutating request is handed to the
//! audit trail ([`AuditTrail`]).

use crate::error::{body_of, ApiError};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use flatstack_header::identity::{Access, AuditRecord, AuditTrail, AuthMethod, Caller, Role};
use flatstack_kernel::{Fault, Kernel};
use std::net::SocketAddr;
use std::sync::Arc;

/// The longest bearer token looked at.
const MAX_TOKEN: usize = 512;

/// Where a request came from when no socket address is known: set by a transport that is
/// not TCP (the API over AMQP says `amqp`).
#[derive(Debug, Clone)]
pub struct Origin(pub String);

/// The job a response started, for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct JobStarted(pub String);

struct Auth {
    methods: Vec<AuthMethod>,
    audit: Option<AuditTrail>,
}

/// Requires a valid bearer token on every route of `router` but the public ones, and
/// audits every mutating request. Applied by [`crate::router`]; a distribution that adds
/// routes of its own (`/metrics`) wraps them with it too.
pub fn authenticated(router: Router, kernel: &Kernel) -> Router {
    let auth = Arc::new(Auth {
        methods: kernel
            .registered::<AuthMethod>()
            .into_iter()
            .map(|(_, m)| m.clone())
            .collect(),
        audit: kernel
            .registered::<AuditTrail>()
            .into_iter()
            .map(|(_, a)| a.clone())
            .next(),
    });
    router.layer(axum::middleware::from_fn_with_state(auth, authenticate))
}

/// Routes anyone may call: probes, the version, the API's own description, and the login.
pub fn is_public(method: &Method, path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/v1/version" | "/v1/openapi.json"
    ) || (method == Method::POST && path == "/v1/sessions")
}

async fn authenticate(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mutating = matches!(
        method,
        Method::POST | Method::PATCH | Method::DELETE | Method::PUT
    );
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .or_else(|| request.extensions().get::<Origin>().map(|o| o.0.clone()))
        .unwrap_or_else(|| "unknown".to_owned());
    let caller = if is_public(&method, &path) {
        None
    } else {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        match identify(&auth, header).await {
            Ok(caller) => Some(caller),
            Err(fault) => {
                let response = refuse(fault);
                if mutating {
                    auth.record(&method, &path, response.status(), remote, None, None);
                }
                return response;
            }
        }
    };
    if let Some(caller) = &caller {
        request.extensions_mut().insert(caller.clone());
    }
    let response = next.run(request).await;
    if mutating {
        let job = response
            .extensions()
            .get::<JobStarted>()
            .map(|j| j.0.clone());
        auth.record(&method, &path, response.status(), remote, caller, job);
    }
    response
}

impl Auth {
    fn record(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        remote: String,
        caller: Option<Caller>,
        job: Option<String>,
    ) {
        let Some(AuditTrail(sink)) = &self.audit else {
            return;
        };
        let mut record =
            AuditRecord::new(method.to_string(), path.to_owned(), status.as_u16(), remote);
        if let Some(caller) = caller {
            record.user_uuid = Some(caller.user_uuid);
            record.user_name = Some(caller.user_name);
            record.account_uuid = Some(caller.account_uuid);
        }
        record.job_uuid = job;
        sink.record(record);
    }
}

/// The caller a request's bearer token stands for.
async fn identify(auth: &Auth, header: Option<String>) -> Result<Caller, Fault> {
    let header = header.ok_or_else(|| {
        Fault::unauthenticated(
            "this route needs `Authorization: Bearer <token>` (the node wrote an admin \
                 token to <data dir>/admin.token at its first start)",
        )
    })?;
    let token = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
        .ok_or_else(|| {
            Fault::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
    if auth.methods.is_empty() {
        return Err(Fault::unauthenticated(
            "no authentication method is enabled on this node (the `identity` plugin is off)",
        ));
    }
    for method in &auth.methods {
        if let Some(caller) = method.authenticator.authenticate(token).await? {
            return Ok(caller);
        }
    }
    Err(Fault::unauthenticated(
        "the token is unknown, revoked or expired",
    ))
}

fn refuse(fault: Fault) -> Response {
    let status = crate::error::status_of(fault.code);
    let mut response = (status, Json(body_of(&fault))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// What a request does to a kind, for [`allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Create,
    Update,
    Delete,
    /// An action; `member`: declared for members.
    Action {
        member: bool,
    },
}

impl Op {
    /// The permission's verb, as `/v1/permissions` lists it.
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Action { .. } => "action",
        }
    }
}

/// Whether `role` may do `op` on a kind of `access` (on its own account's resources, for
/// an owned kind: ownership is checked apart).
pub(crate) fn allows(access: Access, role: Role, op: Op) -> bool {
    match (role, access) {
        (Role::Admin, _) => true,
        (_, Access::Admin) => false,
        (_, Access::Infrastructure) => op == Op::Read,
        // A credential is its user's own, whatever the role: a viewer makes and revokes
        // its tokens too.
        (_, Access::Personal) => matches!(op, Op::Read | Op::Create | Op::Delete),
        (Role::Viewer, Access::Owned | Access::Shared) => op == Op::Read,
        (Role::Member, Access::Owned | Access::Shared) => match op {
            Op::Action { member } => member,
            _ => true,
        },
    }
}

/// `403` unless `caller` may do `op` on `kind`.
pub(crate) fn authorize(
    caller: &Caller,
    kind: &str,
    access: Access,
    op: Op,
) -> Result<(), ApiError> {
    if allows(access, caller.role, op) {
        return Ok(());
    }
    Err(ApiError(
        Fault::forbidden(format!(
            "a {} may not {} {kind}",
            caller.role.as_str(),
            op.verb()
        ))
        .with_detail("permission", format!("{kind}:{}", op.verb())),
    ))
}

/// `403` unless `caller` is an admin.
pub(crate) fn admin_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    Err(ApiError(Fault::forbidden(format!(
        "only admins may {what}"
    ))))
}

/// Which of a kind's resources a caller sees, when not all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scope<'a> {
    /// The column that says whose a resource is, and the caller's value of it.
    pub column: &'static str,
    pub own: &'a str,
    /// Those marked `shared` too (an [`Access::Shared`] kind), for reading.
    pub shared: bool,
}

/// What `caller` sees of a kind of `access`; `None` when it sees all of the kind.
pub(crate) fn scope(caller: &Caller, access: Access) -> Option<Scope<'_>> {
    if caller.is_admin() {
        return None;
    }
    let (column, own, shared) = match access {
        Access::Owned => ("account_uuid", &caller.account_uuid, false),
        Access::Shared => ("account_uuid", &caller.account_uuid, true),
        Access::Personal => ("user_uuid", &caller.user_uuid, false),
        Access::Infrastructure | Access::Admin => return None,
    };
    Some(Scope {
        column,
        own,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_what_each_kind_allows() {
        let member = |access, op| allows(access, Role::Member, op);
        let viewer = |access, op| allows(access, Role::Viewer, op);
        for op in [
            Op::Read,
            Op::Create,
            Op::Update,
            Op::Delete,
            Op::Action { member: false },
        ] {
            assert!(allows(Access::Admin, Role::Admin, op));
            assert!(!member(Access::Admin, op));
            assert!(!viewer(Access::Admin, op));
        }
        assert!(member(Access::Infrastructure, Op::Read));
        assert!(!member(Access::Infrastructure, Op::Create));
        assert!(!member(Access::Infrastructure, Op::Action { member: true }));
        assert!(member(Access::Owned, Op::Delete));
        assert!(member(Access::Shared, Op::Create));
        assert!(viewer(Access::Shared, Op::Read));
        assert!(!viewer(Access::Shared, Op::Create));
        assert!(member(Access::Owned, Op::Action { member: true }));
        assert!(!member(Access::Owned, Op::Action { member: false }));
        assert!(viewer(Access::Owned, Op::Read));
        assert!(!viewer(Access::Owned, Op::Create));
        assert!(!viewer(Access::Owned, Op::Action { member: true }));
        assert!(viewer(Access::Personal, Op::Create));
        assert!(!viewer(Access::Personal, Op::Update));
    }
}
