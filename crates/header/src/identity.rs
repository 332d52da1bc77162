//! Who calls, and what they may do: the contract between the API (which authenticates
//! every request and checks it against the kinds' declared access), the identity plugin
//! (accounts, users, tokens, audit) and plugins that add authentication methods (LDAP,
//! OIDC).
//!
//! - A plugin declares who may use each of its kinds in its [`ApiResource`]'s `access`
//!   ([`Access`]) and each action's `member` flag ([`ApiAction`]); the API derives the
//!   permissions (`<kind>:<verb>`, `<kind>:action:<name>`) and which [`Role`] holds each.
//! - An authentication method is an [`AuthMethod`] a plugin registers in `build`: the API
//!   asks each, in plugin order, who a bearer token stands for.
//! - The audit trail is an [`AuditTrail`] a plugin registers: the API hands it one
//!   [`AuditRecord`] per mutating request.
//!
//! [`ApiResource`]: crate::ApiResource
//! [`ApiAction`]: crate::ApiAction

use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{async_trait, Fault};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The account the node creates at its first start, which its `admin` user belongs to,
/// and which owns what is created without a caller (the demo, benchmarks, kernel tests).
/// Fixed, so that every node of a cloud and every message that names no account agree.
pub const ADMIN_ACCOUNT: &str = "00000000000000000000000000000001";

/// [`ADMIN_ACCOUNT`], for `#[serde(default = ..)]`.
pub fn admin_account() -> String {
    ADMIN_ACCOUNT.to_owned()
}

/// `true`, for `#[serde(default = ..)]` on the `shared` field of a shareable kind's create
/// and record ([`Access::Shared`]): what an admin makes is the cloud's unless it says not.
pub fn shared_by_default() -> bool {
    true
}

/// A `shared` flag as a record reads it from its owner's row, where it is stored as 0 or
/// 1 (a boolean is taken too): `#[serde(deserialize_with = "flatstack_header::identity::flag")]`.
pub fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(
        match <Flag as serde::Deserialize>::deserialize(deserializer)? {
            Flag::Bool(b) => b,
            Flag::Int(n) => n != 0,
        },
    )
}

/// What a user may do within its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, on every account's resources and on the infrastructure.
    Admin,
    /// Its account's resources (create, change, delete, the actions declared for
    /// members); reads the infrastructure.
    Member,
    /// Reads its account's resources and the infrastructure; changes nothing.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Member, Role::Viewer];

    /// Its name in the API: `admin`, `member`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// The role named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Who a kind's resources belong to, and so which roles may see and change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Each resource belongs to an account (its table has `account_uuid`, set by the node
    /// from the caller): members create, change and delete their account's, viewers read
    /// them; another account's answer `404`, as if absent.
    Owned,
    /// Each resource belongs to an account, as with `Owned`, and may be shared with every
    /// account (its table has `account_uuid` and `shared`): members create private ones
    /// and change and delete their own; every role reads its account's and the shared
    /// ones; only admins share one (`shared: true`) or change a shared one. Another
    /// account's private one answers `404`. (L3 networks, images.)
    Shared,
    /// Each resource belongs to one user (its table has `user_uuid` and `account_uuid`):
    /// a user sees and deletes only its own (API tokens).
    Personal,
    /// Shared infrastructure: every role reads it, only admins change it.
    Infrastructure,
    /// Admins only, reads included: the secure default of a kind that declares nothing.
    #[default]
    Admin,
}

/// Who a request comes from: what an [`Authenticator`] answers for a valid credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Caller {
    /// The user's uuid.
    pub user_uuid: String,
    /// The user's name, for logs and the audit trail.
    pub user_name: String,
    /// The account the user belongs to.
    pub account_uuid: String,
    /// What the user may do.
    pub role: Role,
}

impl Caller {
    /// A caller with these fields.
    pub fn new(user_uuid: String, user_name: String, account_uuid: String, role: Role) -> Self {
        Caller {
            user_uuid,
            user_name,
            account_uuid,
            role,
        }
    }

    /// Whether it may do everything.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A session token, answered once by a login.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Session {
    /// The token's uuid (revoked with `DELETE /v1/tokens/{uuid}`).
    pub uuid: String,
    /// The secret to send as `Authorization: Bearer <token>`; shown only now.
    pub token: String,
    /// When it stops being accepted (RFC 3339, UTC).
    pub expires_at: String,
    /// Whom it stands for.
    pub user_uuid: String,
}

impl Session {
    /// A session with these fields.
    pub fn new(uuid: String, token: String, expires_at: String, user_uuid: String) -> Self {
        Session {
            uuid,
            token,
            expires_at,
            user_uuid,
        }
    }
}

/// An authentication method: tells who a bearer token stands for, and may log users in
/// with a name and password. The identity plugin's tokens are one; an LDAP or OIDC plugin
/// would be another, registered the same way.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The caller `token` stands for; `None` if this method does not know it (the next
    /// method is asked), a fault only if it cannot tell (its store is down).
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, Fault>;

    /// Logs `name` in with `password` for a session token. `None` if this method does not
    /// know the user; a wrong password is `unauthenticated`, too many of them
    /// `too_many_requests`. The default knows no one.
    async fn login(&self, _name: &str, _password: &str) -> Result<Option<Session>, Fault> {
        Ok(None)
    }
}

/// An authentication method, registered in `build` (`b.register(AuthMethod::new(..))`).
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthMethod {
    /// Its name, for `/v1/plugins` and logs, e.g. `token`.
    pub name: &'static str,
    /// The method.
    pub authenticator: Arc<dyn Authenticator>,
}

impl AuthMethod {
    /// Method `name`.
    pub fn new(name: &'static str, authenticator: Arc<dyn Authenticator>) -> Self {
        AuthMethod {
            name,
            authenticator,
        }
    }
}

/// One mutating request, as the audit trail keeps it: who, from where, what, the result,
/// the job. Never its body (which may hold a password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When it was answered (RFC 3339, UTC).
    pub at: String,
    /// The caller's user, if it was authenticated.
    pub user_uuid: Option<String>,
    /// The caller's name, if it was authenticated.
    pub user_name: Option<String>,
    /// The caller's account, if it was authenticated.
    pub account_uuid: Option<String>,
    /// Where it came from: the peer's address, or `amqp`.
    pub remote: String,
    /// `POST`, `PATCH` or `DELETE`.
    pub method: String,
    /// The request's path, without its query.
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The job it started, if any.
    pub job_uuid: Option<String>,
}

impl AuditRecord {
    /// A record of `method path` answered `status`.
    pub fn new(method: String, path: String, status: u16, remote: String) -> Self {
        AuditRecord {
            at: String::new(),
            user_uuid: None,
            user_name: None,
            account_uuid: None,
            remote,
            method,
            path,
            status,
            job_uuid: None,
        }
    }
}

/// Where the API sends its [`AuditRecord`]s; registered by the plugin that keeps them
/// (`b.register(AuditTrail(..))`). `record` must not wait: the request is answered
/// already, and records are written in batches.
pub trait AuditSink: Send + Sync + 'static {
    /// Keeps one record.
    fn record(&self, record: AuditRecord);
}

/// The audit trail, registered in `build`.
#[derive(Clone)]
pub struct AuditTrail(
    /// The sink.
    pub Arc<dyn AuditSink>,
);

/// The service of the identity plugin: accounts, users, tokens, the audit trail.
pub const IDENTITY_SERVICE: &str = "identity";

/// Creates an account (admins): `POST /v1/accounts`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Unique among accounts.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}
flatstack_kernel::request!(CreateAccount = "identity.account.create" => crate::Inventory);

/// Creates a user of an account (admins): `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique among users: what it logs in with.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The account it belongs to.
    pub account_uuid: String,
    /// What it may do there.
    pub role: Role,
    /// Its password, if it logs in with one (at least 12 characters); stored only as an
    /// Argon2 hash.
    #[serde(default)]
    pub password: Option<String>,
}
flatstack_kernel::request!(CreateUser = "identity.user.create" => crate::Inventory);

/// Creates an API token: `POST /v1/tokens`. The answer's inventory holds the token, shown
/// this once; the node keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What it is for.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Whom it stands for: set by the node to the caller; an admin may name another user.
    #[serde(default)]
    pub user_uuid: Option<String>,
    /// When it stops being accepted (RFC 3339); never if absent.
    #[serde(default)]
    pub expires_at: Option<String>,
}
flatstack_kernel::request!(CreateToken = "identity.token.create" => crate::Inventory);

/// A page of the audit trail, newest first (`GET /v1/audit`); every filter narrows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    /// At most this many records (1 to 1000; 100 if absent).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Records of this user.
    #[serde(default)]
    pub user_uuid: Option<String>,
    /// Records of this account.
    #[serde(default)]
    pub account_uuid: Option<String>,
    /// Records of this method (`POST`, `PATCH`, `DELETE`).
    #[serde(default)]
    pub method: Option<String>,
}

/// One page of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    /// The records, newest first.
    pub inventories: Vec<AuditRecord>,
    /// How many records match the filters.
    pub total: u64,
    /// The cursor of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
flatstack_kernel::request!(ListAudit = "identity.audit.list" => AuditPage, service IDENTITY_SERVICE);
