//! Tokens: made of 256 random bits, shown once, kept only as their SHA-256; checked
//! through a short cache so that a request costs a hash and a map lookup. Passwords: kept
//! as Argon2id hashes, checked at login with a per-name limit on failures.

use crate::{LOGIN_FAILURES, SESSION_TTL, TOKENS};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use flatstack_header::identity::{Authenticator, Caller, CreateToken, Role, Session};
use flatstack_header::Inventory;
use flatstack_kernel::{async_trait, Fault, Kernel, KernelRef};
use flatstack_store::resource::{row, store, text};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What every token starts with, so that one found in a log or a repository is
/// recognisable (and secret scanners can match it).
pub const TOKEN_PREFIX: &str = "fst_";

/// How long a checked token is trusted without asking the store again: what a revocation
/// on another node waits at most (a revocation on this node is at once).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The most tokens the cache holds; past that it starts again empty.
const CACHE_MAX: usize = 10_000;

/// The shortest password accepted.
const MIN_PASSWORD: usize = 12;

/// The tokens method: the API's authenticator, and the login.
#[derive(Default)]
pub(crate) struct Tokens {
    kernel: OnceLock<KernelRef>,
    /// SHA-256 of a token → who it stands for, its expiry, and when it was checked.
    cache: Mutex<HashMap<String, Cached>>,
    /// User name → failed logins in the current minute, and when that minute began.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

#[derive(Clone)]
struct Cached {
    caller: Caller,
    expires_at: Option<OffsetDateTime>,
    checked: Instant,
}

impl Tokens {
    pub(crate) fn bind(&self, kernel: KernelRef) {
        let _ = self.kernel.set(kernel);
    }

    fn kernel(&self) -> Result<Kernel, Fault> {
        self.kernel
            .get()
            .ok_or_else(|| Fault::unavailable("the identity plugin is not built"))?
            .get()
    }

    /// Drops every cached token: after a revocation or a user's removal.
    pub(crate) fn forget_all(&self) {
        self.lock_cache().clear();
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a login of `name` while it has failed too often this minute.
    fn check_rate(&self, name: &str, limit: u32) -> Result<(), Fault> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, since)) = failures.get(name) {
            if since.elapsed() < Duration::from_secs(60) && *count >= limit {
                return Err(Fault::too_many_requests(
                    "too many failed logins for this name; wait a minute",
                ));
            }
        }
        Ok(())
    }

    fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() > CACHE_MAX {
            failures.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
        }
        let entry = failures
            .entry(name.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Duration::from_secs(60) {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, Fault> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = hash_token(token);
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = self.lock_cache().get(&hash).cloned() {
            if cached.checked.elapsed() < CACHE_TTL {
                return Ok(live(cached.expires_at, now).then_some(cached.caller));
            }
        }
        let kernel = self.kernel()?;
        let Some((caller, expires_at)) = lookup(&kernel, token).await? else {
            return Ok(None);
        };
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            hash,
            Cached {
                caller: caller.clone(),
                expires_at,
                checked: Instant::now(),
            },
        );
        Ok(live(expires_at, now).then_some(caller))
    }

    async fn login(&self, name: &str, password: &str) -> Result<Option<Session>, Fault> {
        let kernel = self.kernel()?;
        let limit = kernel.config().get(&LOGIN_FAILURES);
        self.check_rate(name, limit)?;
        let mut tx = store(&kernel)?.read().await?;
        let users = tx
            .query(
                "SELECT uuid, account_uuid, password_hash FROM identity_users WHERE name = $1",
                &[json!(name)],
            )
            .await?;
        drop(tx);
        let user = users.into_iter().next();
        let stored = user
            .as_ref()
            .and_then(|u| u.get("password_hash"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // An unknown name or a user without a password costs a hash too, so that timing
        // does not tell which names exist.
        let ok = verify_password(password.to_owned(), stored).await?;
        let (true, Some(user)) = (ok, user) else {
            self.failed(name);
            return Err(Fault::unauthenticated("wrong user name or password"));
        };
        let text = |key: &str| text(&user, key).to_owned();
        let ttl = kernel.config().get(&SESSION_TTL);
        let expires = OffsetDateTime::now_utc() + Duration::from_secs(ttl);
        let issued = issue(
            &kernel,
            &text("uuid"),
            &text("account_uuid"),
            ("session", ""),
            "session",
            Some(rfc3339(expires)?),
        )
        .await?;
        Ok(Some(Session::new(
            issued.uuid,
            issued.token,
            rfc3339(expires)?,
            text("uuid"),
        )))
    }
}

fn live(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    expires_at.is_none_or(|at| at > now)
}

fn rfc3339(at: OffsetDateTime) -> Result<String, Fault> {
    at.format(&Rfc3339)
        .map_err(|e| Fault::internal(format!("formatting a time: {e}")))
}

/// The SHA-256 of a token, in hex: what the store keeps of it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who `token` stands for, and until when; `None` if no token has its hash.
pub(crate) async fn lookup(
    kernel: &Kernel,
    token: &str,
) -> Result<Option<(Caller, Option<OffsetDateTime>)>, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let rows = tx
        .query(
            "SELECT t.expires_at, u.uuid AS user_uuid, u.name AS user_name, u.account_uuid,
                    u.role
             FROM api_tokens t JOIN identity_users u ON u.uuid = t.user_uuid
             WHERE t.token_hash = $1",
            &[json!(hash_token(token))],
        )
        .await?;
    let Some(found) = rows.into_iter().next() else {
        return Ok(None);
    };
    let text = |key: &str| text(&found, key).to_owned();
    let role = Role::parse(&text("role"))
        .ok_or_else(|| Fault::internal(format!("user {} has no known role", text("user_uuid"))))?;
    let expires_at = match found.get("expires_at").and_then(Value::as_str) {
        Some(at) => Some(
            OffsetDateTime::parse(at, &Rfc3339)
                .map_err(|e| Fault::internal(format!("a token's expiry does not parse: {e}")))?,
        ),
        None => None,
    };
    let caller = Caller::new(
        text("user_uuid"),
        text("user_name"),
        text("account_uuid"),
        role,
    );
    Ok(Some((caller, expires_at)))
}

/// A token just made: its row's inventory, and the secret, shown once.
pub(crate) struct Issued {
    pub uuid: String,
    pub token: String,
    pub inventory: Inventory,
}

/// A new token for `user`, and the row that stores its hash (without uuid or times).
pub(crate) fn new_token(
    user: &str,
    account: &str,
    (name, description): (&str, &str),
    kind: &str,
    expires_at: Option<String>,
) -> (String, Inventory) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{TOKEN_PREFIX}{secret}");
    let record = row(json!({
        "name": name, "description": description, "user_uuid": user, "account_uuid": account,
        "kind": kind, "token_hash": hash_token(&token), "expires_at": expires_at,
    }));
    (token, record)
}

/// Makes a token for `user` and stores its hash.
pub(crate) async fn issue(
    kernel: &Kernel,
    user: &str,
    account: &str,
    (name, description): (&str, &str),
    kind: &str,
    expires_at: Option<String>,
) -> Result<Issued, Fault> {
    let (token, record) = new_token(user, account, (name, description), kind, expires_at);
    let inventory = TOKENS.create_row(kernel, record).await?;
    let uuid = inventory
        .get("uuid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Issued {
        uuid,
        token,
        inventory,
    })
}

/// `POST /v1/tokens`: a token for the caller (the API fills `user_uuid`), answered with
/// its secret this once.
pub(crate) async fn create(kernel: &Kernel, msg: CreateToken) -> Result<Inventory, Fault> {
    let user = msg
        .user_uuid
        .ok_or_else(|| Fault::invalid("user_uuid", "name the user the token is for"))?;
    if let Some(at) = &msg.expires_at {
        let parsed = OffsetDateTime::parse(at, &Rfc3339)
            .map_err(|_| Fault::invalid("expires_at", "expires_at must be an RFC 3339 time"))?;
        if parsed <= OffsetDateTime::now_utc() {
            return Err(Fault::invalid(
                "expires_at",
                "expires_at must be in the future",
            ));
        }
    }
    let mut tx = store(kernel)?.read().await?;
    let account = tx
        .get(crate::USERS.table, &user)
        .await?
        .and_then(|u| {
            u.get("account_uuid")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| Fault::invalid("user_uuid", format!("no user {user}")))?;
    drop(tx);
    let name = if msg.name.is_empty() {
        "api"
    } else {
        &msg.name
    };
    flatstack_store::resource::check_name(name)?;
    let label = (name, msg.description.as_str());
    let mut issued = issue(kernel, &user, &account, label, "api", msg.expires_at).await?;
    issued.inventory.insert("token".into(), json!(issued.token));
    Ok(issued.inventory)
}

/// An Argon2id hash of `password` (off the async threads: it takes tens of milliseconds
/// by design).
pub(crate) async fn hash_password(password: String) -> Result<String, Fault> {
    if password.chars().count() < MIN_PASSWORD || password.len() > 1024 {
        return Err(Fault::invalid(
            "password",
            format!("a password has {MIN_PASSWORD} to 1024 characters"),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Fault::internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Fault::internal(format!("hashing a password: {e}")))?
}

/// Whether `password` matches `stored`; with nothing stored, a hash is still computed.
async fn verify_password(password: String, stored: Option<String>) -> Result<bool, Fault> {
    tokio::task::spawn_blocking(move || {
        let argon = Argon2::default();
        match stored.as_deref().map(PasswordHash::new) {
            Some(Ok(hash)) => Ok(argon.verify_password(password.as_bytes(), &hash).is_ok()),
            Some(Err(e)) => Err(Fault::internal(format!("a stored password hash: {e}"))),
            None => {
                let salt = SaltString::generate(&mut OsRng);
                let _ = argon.hash_password(password.as_bytes(), &salt);
                Ok(false)
            }
        }
    })
    .await
    .map_err(|e| Fault::internal(format!("checking a password: {e}")))?
}

/// Writes `secret` to `path`, readable by its owner only, replacing it whole (a reader
/// never sees half a token).
pub(crate) fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension("token.partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}
