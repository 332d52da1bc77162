//! The operation journal. Every state-changing request is a durable operation — the job the
//! API answers with — recorded before its first side effect and closed with its result or
//! error. Multi-step handlers link what they create to it ([`Tx::link_operation`]) in the
//! transaction that creates it, so that after a crash recovery knows which resource an
//! interrupted operation was working on (see [`crate::recovery`]).
//!
//! What each step of an operation holds is recorded by the plugin that holds it, in the
//! transaction that takes it, keyed by its consumer (a VM's host capacity by the VM's uuid,
//! a volume's bytes by the volume's uuid...): an undo after a restart works from those
//! records, not from memory, and runs safely twice.

use crate::Repr;
use crate::{Store, StoreError, Tx};
use flatstack_kernel::{Fault, FaultCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Recorded; its work is under way (or was, when the node stopped: recovery closes it).
    Running,
    /// Done; `result` holds the reply.
    Succeeded,
    /// Done; `error` holds the fault.
    Failed,
}

impl OperationState {
    /// Its stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }

    /// The state of a stored name; `None` if it is none of them.
    pub fn parse(s: &str) -> Option<OperationState> {
        match s {
            "running" => Some(OperationState::Running),
            "succeeded" => Some(OperationState::Succeeded),
            "failed" => Some(OperationState::Failed),
            _ => None,
        }
    }
}

/// What an operation does to its resource, as the API's routes say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// `POST /v1/{kind}`: makes a resource.
    Create,
    /// `PATCH /v1/{kind}/{uuid}`.
    Update,
    /// `DELETE /v1/{kind}/{uuid}`.
    Delete,
    /// `POST /v1/{kind}/{uuid}/actions`, or a child collection's create.
    Action,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Action => "action",
        }
    }

    fn parse(s: &str) -> Verb {
        match s {
            "create" => Verb::Create,
            "update" => Verb::Update,
            "delete" => Verb::Delete,
            _ => Verb::Action,
        }
    }
}

/// An operation as the journal holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// The operation's uuid: the job's, in `/v1/jobs/{uuid}`.
    pub uuid: String,
    /// The request's message name, e.g. `vm.create`.
    pub kind: String,
    /// The service that handles it.
    pub service: String,
    /// What it does to its resource.
    pub verb: Verb,
    /// The resource it acts on: the addressed one, or for a create the one it made (once a
    /// handler linked it).
    pub resource_uuid: Option<String>,
    /// Running, succeeded or failed.
    pub state: OperationState,
    /// The request's body.
    pub request: Value,
    /// The reply, once it succeeded.
    pub result: Option<Value>,
    /// The fault, once it failed.
    pub error: Option<Fault>,
    /// The client's `Idempotency-Key`, if it sent one: unique among operations.
    pub idempotency_key: Option<String>,
    /// Closed by recovery after the node stopped while it ran.
    pub recovered: bool,
    /// The account of the caller that asked for it (`None`: asked by the node itself, or
    /// recorded before there were accounts).
    pub account_uuid: Option<String>,
    /// When it was recorded (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
    /// When it ended (RFC 3339, UTC); `None` while running.
    pub finished_at: Option<String>,
}

/// An operation about to start.
#[derive(Debug, Clone)]
pub struct NewOperation {
    /// The request's message name, e.g. `vm.create`.
    pub kind: String,
    /// The service that handles it.
    pub service: String,
    /// What it does to its resource.
    pub verb: Verb,
    /// The addressed resource, if any (none for a create).
    pub resource_uuid: Option<String>,
    /// The request's body, as sent to the service.
    pub request: Value,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// The caller's account.
    pub account_uuid: Option<String>,
}

/// What [`Store::begin_operation`] did.
#[derive(Debug)]
pub enum Begun {
    /// Recorded: the caller runs it.
    New(Operation),
    /// An operation with the same idempotency key and request exists: the caller answers
    /// with it instead of doing the work again.
    Existing(Operation),
}

/// Which operations [`Store::operations`] lists; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Operations in this state.
    pub state: Option<OperationState>,
    /// Operations of this message name, e.g. `vm.create`.
    pub kind: Option<String>,
    /// Operations on this resource.
    pub resource_uuid: Option<String>,
    /// Operations asked for by callers of this account.
    pub account_uuid: Option<String>,
}

/// The journal's table. Created with the store's own tables, before any plugin's.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS operations (
        uuid TEXT PRIMARY KEY, kind TEXT NOT NULL, service TEXT NOT NULL, verb TEXT NOT NULL,
        resource_uuid TEXT, state TEXT NOT NULL, request TEXT NOT NULL,
        result TEXT, error TEXT, idempotency_key TEXT UNIQUE, recovered BIGINT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT,
        account_uuid TEXT)",
    "CREATE INDEX IF NOT EXISTS operations_by_state ON operations (state, created_at, uuid)",
    "CREATE INDEX IF NOT EXISTS operations_by_resource ON operations (resource_uuid)",
    "CREATE INDEX IF NOT EXISTS operations_by_time ON operations (created_at, uuid)",
];

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

impl Store {
    /// Records `new` as running, before any of its work. With an idempotency key already
    /// used for the same request, answers that operation instead; for another request,
    /// `422`.
    pub async fn begin_operation(self: &Arc<Self>, new: NewOperation) -> Result<Begun, Fault> {
        if let Some(key) = &new.idempotency_key {
            check_key(key)?;
            if let Some(existing) = self.operation_by_key(key).await? {
                return same_request(existing, &new).map(Begun::Existing);
            }
        }
        let at = crate::now();
        let op = Operation {
            uuid: crate::resource::new_uuid(),
            kind: new.kind.clone(),
            service: new.service.clone(),
            verb: new.verb,
            resource_uuid: new.resource_uuid.clone(),
            state: OperationState::Running,
            request: new.request.clone(),
            result: None,
            error: None,
            idempotency_key: new.idempotency_key.clone(),
            recovered: false,
            account_uuid: new.account_uuid.clone(),
            created_at: at.clone(),
            updated_at: at,
            finished_at: None,
        };
        let row = to_row(&op)?;
        if new.idempotency_key.is_none() {
            self.journal(JournalWrite::Insert(row)).await?;
            return Ok(Begun::New(op));
        }
        // With a key, alone: two requests with one key at once, the first insert wins and
        // the other answers with it.
        let mut tx = self.begin().await?;
        match tx.insert("operations", &row).await {
            Ok(()) => {}
            Err(e) if e.is_unique_violation() => {
                drop(tx);
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                return match self.operation_by_key(key).await? {
                    Some(existing) => same_request(existing, &new).map(Begun::Existing),
                    None => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit_quietly().await?;
        Ok(Begun::New(op))
    }

    /// Commits `write` in the next group of journal writes (see [`JournalWrites`]).
    async fn journal(self: &Arc<Self>, write: JournalWrite) -> Result<(), StoreError> {
        let writes = self
            .journal_writes
            .get_or_init(|| JournalWrites::start(self));
        let (done, answer) = tokio::sync::oneshot::channel();
        writes
            .0
            .send((write, done))
            .map_err(|_| StoreError::io("the journal's writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::io("the journal's writer has stopped"))?
    }

    /// Closes a running operation with its outcome; `recovered` if recovery closed it.
    /// Closing one that is already closed changes nothing.
    pub async fn finish_operation(
        self: &Arc<Self>,
        uuid: &str,
        outcome: &Result<Value, Fault>,
        recovered: bool,
    ) -> Result<(), StoreError> {
        let (state, result, error) = match outcome {
            Ok(value) => (OperationState::Succeeded, Some(value.to_string()), None),
            Err(fault) => (
                OperationState::Failed,
                None,
                Some(serde_json::to_string(fault).map_err(|e| {
                    StoreError::from(Repr::Value {
                        column: "error".into(),
                        reason: e.to_string(),
                    })
                })?),
            ),
        };
        // The resource a create made, from its result, if no handler linked it.
        let made = outcome
            .as_ref()
            .ok()
            .and_then(|v| v.get("uuid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let at = crate::now();
        self.journal(JournalWrite::Finish(vec![
            json!(state.as_str()),
            json!(result),
            json!(error),
            json!(i64::from(recovered)),
            json!(at),
            json!(made),
            json!(uuid),
        ]))
        .await
    }

    /// The operation `uuid`, if the journal has it.
    pub async fn operation(self: &Arc<Self>, uuid: &str) -> Result<Option<Operation>, StoreError> {
        let mut tx = self.read().await?;
        tx.get("operations", uuid)
            .await?
            .map(|row| from_row(&row))
            .transpose()
    }

    async fn operation_by_key(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<Option<Operation>, StoreError> {
        let mut tx = self.read().await?;
        let rows = tx
            .query(
                "SELECT * FROM operations WHERE idempotency_key = $1",
                &[json!(key)],
            )
            .await?;
        rows.first().map(from_row).transpose()
    }

    /// Operations matching `filter`, newest first, at most `limit`, after `cursor` (the
    /// [`Operation::cursor`] of the last one of the previous page).
    pub async fn operations(
        self: &Arc<Self>,
        filter: &OperationFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Vec<Operation>, Fault> {
        let mut sql = String::from("SELECT * FROM operations WHERE 1 = 1");
        let mut params = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: Value| {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(state) = filter.state {
            condition(&mut sql, " AND state = ?", json!(state.as_str()));
        }
        if let Some(kind) = &filter.kind {
            condition(&mut sql, " AND kind = ?", json!(kind));
        }
        if let Some(resource) = &filter.resource_uuid {
            condition(&mut sql, " AND resource_uuid = ?", json!(resource));
        }
        if let Some(account) = &filter.account_uuid {
            condition(&mut sql, " AND account_uuid = ?", json!(account));
        }
        if let Some(cursor) = cursor {
            let (at, uuid) = cursor
                .split_once('~')
                .filter(|(at, uuid)| !at.is_empty() && uuid.len() == 32)
                .ok_or_else(|| Fault::invalid("cursor", "not a cursor this node gave"))?;
            condition(&mut sql, " AND (created_at < ?", json!(at));
            condition(&mut sql, " OR (created_at = ?", json!(at));
            condition(&mut sql, " AND uuid < ?))", json!(uuid));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, uuid DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut tx = self.read().await?;
        let rows = tx.query(&sql, &params).await?;
        Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
    }

    /// How many operations match `filter`.
    pub async fn count_operations(
        self: &Arc<Self>,
        filter: &OperationFilter,
    ) -> Result<i64, StoreError> {
        let mut sql = String::from("SELECT COUNT(*) AS n FROM operations WHERE 1 = 1");
        let mut params = Vec::new();
        for (column, value) in [
            ("state", filter.state.map(|s| s.as_str().to_owned())),
            ("kind", filter.kind.clone()),
            ("resource_uuid", filter.resource_uuid.clone()),
            ("account_uuid", filter.account_uuid.clone()),
        ] {
            if let Some(value) = value {
                params.push(json!(value));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        }
        let mut tx = self.read().await?;
        let rows = tx.query(&sql, &params).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("n"))
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }

    /// The operations still running, oldest first: at start, those a stopped node left.
    pub async fn running_operations(self: &Arc<Self>) -> Result<Vec<Operation>, StoreError> {
        let mut tx = self.read().await?;
        let rows = tx
            .query(
                "SELECT * FROM operations WHERE state = 'running' ORDER BY created_at, uuid",
                &[],
            )
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Removes operations that finished more than `age` ago, at most `batch` of them; how
    /// many went. Running ones are never removed.
    pub async fn prune_operations(
        self: &Arc<Self>,
        age: std::time::Duration,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let before = crate::tx::timestamp(time::OffsetDateTime::now_utc() - age);
        let mut tx = self.begin().await?;
        let gone = tx
            .statement(
                &format!(
                    "DELETE FROM operations WHERE uuid IN (SELECT uuid FROM operations
                     WHERE state <> 'running' AND finished_at < $1 LIMIT {})",
                    batch.max(1)
                ),
                &[json!(before)],
            )
            .await?;
        tx.commit_quietly().await?;
        Ok(gone)
    }
}

/// One write of the journal: a new operation's row, or the parameters of its close.
pub(crate) enum JournalWrite {
    Insert(Map<String, Value>),
    Finish(Vec<Value>),
}

const FINISH: &str = "UPDATE operations SET state = $1, result = $2, error = $3, recovered = $4,
         finished_at = $5, updated_at = $5, resource_uuid = COALESCE(resource_uuid, $6)
     WHERE uuid = $7 AND state = 'running'";

/// The most journal writes one transaction takes.
const GROUP: usize = 256;

type Pending = (
    JournalWrite,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// The journal's writer: a task that commits the writes waiting for it together, one
/// transaction for as many as have queued while the previous one committed (group commit).
/// Every request writes the journal twice (its operation recorded, then closed): alone,
/// that is two commits more per request, each taking the one writer; grouped, a few per
/// hundred requests under load, and no wait at all when idle. A write is answered only once
/// its group has committed, so what a caller is told is durable.
pub(crate) struct JournalWrites(tokio::sync::mpsc::UnboundedSender<Pending>);

impl JournalWrites {
    fn start(store: &Arc<Store>) -> JournalWrites {
        let (sender, mut queue) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        // Weak: the writer must not keep the store open; it ends when the store goes.
        let store = Arc::downgrade(store);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let Some(store) = store.upgrade() else {
                    break;
                };
                // The writer first: the writes that queue while this waits for it join
                // the group.
                let tx = store.begin().await;
                let mut group = vec![first];
                while group.len() < GROUP {
                    match queue.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let committed = match tx {
                    Ok(tx) => commit_group(tx, &group).await,
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(()) => {
                        for (_, done) in group {
                            let _ = done.send(Ok(()));
                        }
                    }
                    // One bad write must not fail the others: each alone, with its own
                    // answer.
                    Err(_) if group.len() > 1 => {
                        for (write, done) in group {
                            let alone = match store.begin().await {
                                Ok(tx) => commit_group(tx, &[(write, dummy())]).await,
                                Err(e) => Err(e),
                            };
                            let _ = done.send(alone);
                        }
                    }
                    Err(e) => {
                        for (_, done) in group {
                            let _ = done.send(Err(StoreError::io(e.to_string())));
                        }
                    }
                }
            }
        });
        JournalWrites(sender)
    }
}

/// A sender nobody waits on (for a write retried alone, whose caller waits on the first).
fn dummy() -> tokio::sync::oneshot::Sender<Result<(), StoreError>> {
    tokio::sync::oneshot::channel().0
}

async fn commit_group(mut tx: Tx, group: &[Pending]) -> Result<(), StoreError> {
    for (write, _) in group {
        match write {
            JournalWrite::Insert(row) => tx.insert("operations", row).await?,
            JournalWrite::Finish(params) => {
                tx.statement(FINISH, params).await?;
            }
        }
    }
    tx.commit_quietly().await
}

impl Operation {
    /// Where a page that ends with this operation continues.
    pub fn cursor(&self) -> String {
        format!("{}~{}", self.created_at, self.uuid)
    }
}

impl Tx {
    /// Records that operation `operation` works on `resource` (a create names what it
    /// made), in this transaction — the one that creates it, so that recovery finds the
    /// resource from the operation whatever instant the node stopped at.
    pub async fn link_operation(
        &mut self,
        operation: &str,
        resource: &str,
    ) -> Result<(), StoreError> {
        self.statement(
            "UPDATE operations SET resource_uuid = $1 WHERE uuid = $2",
            &[json!(resource), json!(operation)],
        )
        .await?;
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), Fault> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(Fault::invalid(
            "Idempotency-Key",
            format!("an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    Ok(())
}

/// `existing` if it was made by the same request as `new`; `422` otherwise.
fn same_request(existing: Operation, new: &NewOperation) -> Result<Operation, Fault> {
    // A create's operation names the resource it made, which its request did not.
    let same_target = match new.verb {
        Verb::Create => existing.verb == Verb::Create,
        _ => existing.resource_uuid == new.resource_uuid,
    };
    if existing.kind == new.kind && same_target && existing.request == new.request {
        return Ok(existing);
    }
    Err(Fault::new(
        FaultCode::Vetoed,
        format!(
            "idempotency key already used by another request (job {}): send a new key for a new request",
            existing.uuid
        ),
    )
    .with_detail("field", "Idempotency-Key")
    .with_detail("job_uuid", existing.uuid))
}

fn to_row(op: &Operation) -> Result<Map<String, Value>, StoreError> {
    Ok(crate::resource::row(json!({
        "uuid": op.uuid, "kind": op.kind, "service": op.service, "verb": op.verb.as_str(),
        "resource_uuid": op.resource_uuid, "state": op.state.as_str(),
        "request": op.request.to_string(), "result": null, "error": null,
        "idempotency_key": op.idempotency_key, "recovered": i64::from(op.recovered),
        "account_uuid": op.account_uuid,
        "created_at": op.created_at, "updated_at": op.updated_at, "finished_at": null,
    })))
}

fn from_row(row: &Map<String, Value>) -> Result<Operation, StoreError> {
    let text = |column: &str| row.get(column).and_then(Value::as_str).map(str::to_owned);
    let json_of = |column: &str| -> Result<Option<Value>, StoreError> {
        text(column)
            .map(|t| serde_json::from_str::<Value>(&t))
            .transpose()
            .map_err(|e| {
                StoreError::from(Repr::Value {
                    column: column.to_owned(),
                    reason: e.to_string(),
                })
            })
    };
    let state = text("state")
        .as_deref()
        .and_then(OperationState::parse)
        .ok_or_else(|| {
            StoreError::from(Repr::Value {
                column: "state".into(),
                reason: "not an operation state".into(),
            })
        })?;
    let error = json_of("error")?
        .map(serde_json::from_value::<Fault>)
        .transpose()
        .map_err(|e| {
            StoreError::from(Repr::Value {
                column: "error".into(),
                reason: e.to_string(),
            })
        })?;
    Ok(Operation {
        uuid: text("uuid").unwrap_or_default(),
        kind: text("kind").unwrap_or_default(),
        service: text("service").unwrap_or_default(),
        verb: Verb::parse(text("verb").as_deref().unwrap_or_default()),
        resource_uuid: text("resource_uuid"),
        state,
        request: json_of("request")?.unwrap_or(Value::Null),
        result: json_of("result")?,
        error,
        idempotency_key: text("idempotency_key"),
        recovered: row.get("recovered").and_then(Value::as_i64).unwrap_or(0) != 0,
        created_at: text("created_at").unwrap_or_default(),
        updated_at: text("updated_at").unwrap_or_default(),
        finished_at: text("finished_at"),
        account_uuid: text("account_uuid"),
    })
}
