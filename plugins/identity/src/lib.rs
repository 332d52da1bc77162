//! Identity: accounts, their users and roles, API and session tokens, and the audit
//! trail. The API asks this plugin who a bearer token stands for (its [`AuthMethod`]) and
//! hands it a record of every mutating request (its [`AuditTrail`]); what each role may do
//! is the API's business, from the access every kind declares.
//!
//! On its first start the node creates the `admin` account and user, and writes an admin
//! token to `<data dir>/admin.token` (mode 0600), which the client beside it reads.

mod audit;
mod tokens;

use flatstack_header::identity::{
    Access, AuditTrail, AuthMethod, CreateAccount, CreateToken, CreateUser, ListAudit, Role,
    ADMIN_ACCOUNT, IDENTITY_SERVICE,
};
use flatstack_header::{ApiResource, DataDir, DeleteResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{async_trait, ConfigKey, Fault, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, store, ResourceTable};
use serde_json::{json, Value};
use std::sync::Arc;

pub use tokens::{hash_token, TOKEN_PREFIX};

/// The user the node creates at its first start: `admin`, of the admin account.
pub const ADMIN_USER: &str = "00000000000000000000000000000002";

/// The file in the data directory that holds the admin token written at first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

static ACCOUNTS: ResourceTable =
    ResourceTable::new("accounts", "identity_accounts").filters(&["name"]);

static USERS: ResourceTable = ResourceTable::new("users", "identity_users")
    .filters(&["name", "account_uuid", "role"])
    .before_delete(|tx, user| {
        Box::pin(async move {
            let uuid = user.get("uuid").cloned().unwrap_or(Value::Null);
            tx.statement("DELETE FROM api_tokens WHERE user_uuid = $1", &[uuid])
                .await?;
            Ok(())
        })
    })
    .decorate(|_, user| {
        // Never shown, not even its hash.
        user.remove("password_hash");
        Box::pin(async { Ok(()) })
    });

static TOKENS: ResourceTable = ResourceTable::new("tokens", "api_tokens")
    .filters(&["user_uuid", "account_uuid", "kind"])
    .decorate(|_, token| {
        token.remove("token_hash");
        Box::pin(async { Ok(()) })
    });

/// How long a session token from a login is accepted.
pub const SESSION_TTL: ConfigKey<u64> = ConfigKey::new(
    "identity.session_ttl_seconds",
    "How long a session token from a login (POST /v1/sessions) is accepted, in seconds.",
    || 12 * 3600,
)
.with_validator(|s| match s {
    60..=2_592_000 => Ok(()),
    _ => Err("between 60 seconds and 30 days".into()),
});

/// How many failed logins of one name are allowed per window before it is refused.
pub const LOGIN_FAILURES: ConfigKey<u32> = ConfigKey::new(
    "identity.login_failures_per_minute",
    "Failed logins of one user name allowed per minute; more are refused with 429.",
    || 5,
)
.with_validator(|n| match n {
    1..=1000 => Ok(()),
    _ => Err("between 1 and 1000".into()),
});

/// How long the audit trail keeps a record.
pub const AUDIT_RETENTION: ConfigKey<u64> = ConfigKey::new(
    "identity.audit_retention_days",
    "How many days the audit trail keeps a record of a mutating request.",
    || 90,
)
.with_validator(|d| match d {
    1..=3650 => Ok(()),
    _ => Err("between 1 and 3650 days".into()),
});

/// The plugin: accounts, users, tokens, sessions and the audit trail.
#[derive(Default)]
pub struct IdentityPlugin {
    tokens: Arc<tokens::Tokens>,
    audit: Arc<audit::Audit>,
}

#[async_trait]
impl Plugin for IdentityPlugin {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn description(&self) -> &'static str {
        "Accounts, users and roles; API and session tokens; the audit trail."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "accounts, users, tokens and the audit trail",
            "CREATE TABLE identity_accounts (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE identity_users (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
                account_uuid TEXT NOT NULL REFERENCES identity_accounts (uuid), role TEXT NOT NULL,
                password_hash TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE api_tokens (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                user_uuid TEXT NOT NULL REFERENCES identity_users (uuid), account_uuid TEXT NOT NULL,
                kind TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, expires_at TEXT,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE audit_records (
                uuid TEXT PRIMARY KEY, at TEXT NOT NULL, user_uuid TEXT, user_name TEXT,
                account_uuid TEXT, remote TEXT NOT NULL, method TEXT NOT NULL,
                path TEXT NOT NULL, status BIGINT NOT NULL, job_uuid TEXT);
             CREATE INDEX audit_records_by_time ON audit_records (at, uuid);",
        ));
        b.config(&SESSION_TTL)
            .config(&LOGIN_FAILURES)
            .config(&AUDIT_RETENTION);
        self.tokens.bind(b.kernel());
        self.audit.bind(b.kernel());
        b.register(AuthMethod::new("token", self.tokens.clone()));
        b.register(AuditTrail(self.audit.clone()));

        let mut service = b.service(IDENTITY_SERVICE, ());
        ACCOUNTS.serve(&mut service);
        let audit = self.audit.clone();
        service
            .handle::<CreateAccount, _, _>(|_, msg, cx| async move {
                check_name(&msg.name)?;
                let account = row(json!({"name": msg.name, "description": msg.description}));
                ACCOUNTS.create_row(&cx.kernel, account).await
            })
            .handle::<ListAudit, _, _>(move |_, msg, cx| {
                let audit = audit.clone();
                async move { audit.list(&cx.kernel, msg).await }
            });
        b.register(ApiResource {
            path: "accounts",
            service: IDENTITY_SERVICE,
            create: CreateAccount::NAME,
            access: Access::Admin,
            holds_secrets: false,
            driver_kind: None,
            inventory: None,
            filters: ACCOUNTS.filters,
            actions: &[],
            children: &[],
        });
        b.register(ACCOUNTS.table_kind());

        let mut service = b.service("identity-user", ());
        USERS.serve_reads(&mut service);
        let cache = self.tokens.clone();
        service
            .handle::<CreateUser, _, _>(
                |_, msg, cx| async move { create_user(&cx.kernel, msg).await },
            )
            .handle::<DeleteResource, _, _>(move |_, _, cx| {
                let cache = cache.clone();
                async move {
                    let uuid = cx.resource_id()?;
                    if uuid == ADMIN_USER {
                        return Err(Fault::conflict("the node's admin user cannot be deleted"));
                    }
                    // Its tokens go with it, in the delete's transaction.
                    USERS.remove(&cx.kernel, uuid).await?;
                    cache.forget_all();
                    Ok(())
                }
            });
        b.register(ApiResource {
            path: "users",
            service: "identity-user",
            create: CreateUser::NAME,
            access: Access::Admin,
            holds_secrets: true,
            driver_kind: None,
            inventory: None,
            filters: USERS.filters,
            actions: &[],
            children: &[],
        });
        b.register(USERS.table_kind());

        let mut service = b.service("identity-token", ());
        TOKENS.serve_reads(&mut service);
        let cache = self.tokens.clone();
        service
            .handle::<CreateToken, _, _>(|_, msg, cx| async move {
                tokens::create(&cx.kernel, msg).await
            })
            .handle::<DeleteResource, _, _>(move |_, _, cx| {
                let cache = cache.clone();
                async move {
                    TOKENS.remove(&cx.kernel, cx.resource_id()?).await?;
                    // Revoked here at once; other nodes stop accepting it within their
                    // cache's lifetime.
                    cache.forget_all();
                    Ok(())
                }
            });
        b.register(ApiResource {
            path: "tokens",
            service: "identity-token",
            create: CreateToken::NAME,
            access: Access::Personal,
            holds_secrets: true,
            driver_kind: None,
            inventory: None,
            filters: TOKENS.filters,
            actions: &[],
            children: &[],
        });
        b.register(TOKENS.table_kind());
    }

    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        bootstrap(kernel).await?;
        self.audit.start(kernel);
        Ok(())
    }

    async fn stop(&self, kernel: &Kernel) {
        self.audit.flush(kernel).await;
    }
}

/// `POST /v1/users`: a user of an existing account, with a role and maybe a password.
async fn create_user(kernel: &Kernel, msg: CreateUser) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    let mut tx = store(kernel)?.read().await?;
    if !tx.exists(ACCOUNTS.table, &msg.account_uuid).await? {
        return Err(Fault::invalid(
            "account_uuid",
            format!("no account {}", msg.account_uuid),
        ));
    }
    drop(tx);
    let password_hash = match msg.password {
        Some(password) => Some(tokens::hash_password(password).await?),
        None => None,
    };
    let user = row(json!({
        "name": msg.name, "description": msg.description, "account_uuid": msg.account_uuid,
        "role": msg.role.as_str(), "password_hash": password_hash,
    }));
    USERS.create_row(kernel, user).await
}

/// The admin account and user, and the admin token in the data directory: created at the
/// first start (and the token again if its file is gone or no longer valid: a new
/// database), in one transaction. They are the node's initial state, as its schema is:
/// written without canonical events. Two nodes starting at once on one database: the
/// second's insert is refused and it finds the first's rows.
async fn bootstrap(kernel: &Kernel) -> Result<(), Fault> {
    match bootstrap_once(kernel).await {
        Err(fault) if fault.code == flatstack_kernel::FaultCode::Conflict => {
            bootstrap_once(kernel).await
        }
        done => done,
    }
}

async fn bootstrap_once(kernel: &Kernel) -> Result<(), Fault> {
    let path = kernel
        .get::<DataDir>()
        .map(|dir| dir.0.join(ADMIN_TOKEN_FILE));
    let token_valid = match path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(existing) => tokens::lookup(kernel, existing.trim()).await?.is_some(),
        None => path.is_none(),
    };
    let store = store(kernel)?;
    let mut tx = store.begin().await?;
    let at = flatstack_store::now();
    if !tx.exists(ACCOUNTS.table, ADMIN_ACCOUNT).await? {
        let account = row(json!({"uuid": ADMIN_ACCOUNT, "name": "admin",
            "description": "The node's administrators.", "created_at": at, "updated_at": at}));
        tx.insert(ACCOUNTS.table, &account).await?;
    }
    if !tx.exists(USERS.table, ADMIN_USER).await? {
        let user = row(json!({"uuid": ADMIN_USER, "name": "admin",
            "description": "Created at the node's first start.", "account_uuid": ADMIN_ACCOUNT,
            "role": Role::Admin.as_str(), "password_hash": Value::Null,
            "created_at": at, "updated_at": at}));
        tx.insert(USERS.table, &user).await?;
    }
    let mut secret = None;
    if !token_valid {
        let (token, mut record) =
            tokens::new_token(ADMIN_USER, ADMIN_ACCOUNT, ("admin.token", ""), "api", None);
        record.insert("uuid".into(), json!(flatstack_store::resource::new_uuid()));
        record.insert("created_at".into(), json!(at));
        record.insert("updated_at".into(), json!(at));
        tx.insert(TOKENS.table, &record).await?;
        secret = Some(token);
    }
    tx.commit(kernel.bus()).await?;
    if let (Some(path), Some(token)) = (path, secret) {
        tokens::write_secret_file(&path, &token)
            .map_err(|e| Fault::internal(format!("writing the admin token file: {e}")))?;
        tracing::info!(path = %path.display(), "admin token written");
    }
    Ok(())
}
