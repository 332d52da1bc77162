//! The audit trail: every mutating request, written in batches (a request never waits for
//! its record), kept for `identity.audit_retention_days`, listed newest first by admins.

use crate::AUDIT_RETENTION;
use flatstack_header::identity::{AuditPage, AuditRecord, AuditSink, ListAudit};
use flatstack_kernel::{Fault, Kernel, KernelRef};
use flatstack_store::resource::{decode_cursor, encode_cursor, new_uuid, store};
use serde_json::{json, Value};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// How long records gather before a batch is written.
const LINGER: Duration = Duration::from_millis(100);

/// The most records held while the store cannot take them; older ones are dropped (and
/// the loss logged) past that.
const MAX_PENDING: usize = 100_000;

/// The order of a page, newest first, as its cursor holds it.
const ORDER: [(&str, bool); 2] = [("at", true), ("uuid", true)];

/// The most records a page holds.
const MAX_PAGE: u32 = 1000;

#[derive(Default)]
pub(crate) struct Audit {
    kernel: OnceLock<KernelRef>,
    pending: Mutex<Vec<AuditRecord>>,
    wake: Notify,
}

impl AuditSink for Audit {
    fn record(&self, mut record: AuditRecord) {
        if record.at.is_empty() {
            record.at = flatstack_store::now();
        }
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            tracing::error!("the audit trail cannot be written; dropping its oldest record");
            pending.remove(0);
        }
        pending.push(record);
        drop(pending);
        self.wake.notify_one();
    }
}

impl Audit {
    pub(crate) fn bind(&self, kernel: KernelRef) {
        let _ = self.kernel.set(kernel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the writer: a batch after each wake-up (and its linger), and the pruning of
    /// records past the retention window once an hour.
    pub(crate) fn start(self: &std::sync::Arc<Self>, kernel: &Kernel) {
        let audit = self.clone();
        let weak = kernel.downgrade();
        tokio::spawn(async move {
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(60), audit.wake.notified()).await;
                tokio::time::sleep(LINGER).await;
                let Some(kernel) = weak.upgrade() else {
                    return;
                };
                audit.flush(&kernel).await;
                if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                    if let Err(fault) = prune(&kernel).await {
                        tracing::warn!(%fault, "pruning the audit trail");
                    }
                    last_prune = Some(tokio::time::Instant::now());
                }
            }
        });
    }

    /// Writes what is pending; on failure keeps it for the next try.
    pub(crate) async fn flush(&self, kernel: &Kernel) {
        let batch = std::mem::take(&mut *self.lock());
        if batch.is_empty() {
            return;
        }
        if let Err(fault) = write(kernel, &batch).await {
            tracing::warn!(%fault, records = batch.len(), "writing the audit trail; will retry");
            let mut pending = self.lock();
            let newer = std::mem::take(&mut *pending);
            *pending = batch;
            pending.extend(newer);
        }
    }

    /// `GET /v1/audit`: newest first, filtered, paged by an opaque cursor.
    pub(crate) async fn list(&self, kernel: &Kernel, q: ListAudit) -> Result<AuditPage, Fault> {
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Fault::invalid("limit", format!("limit is 1 to {MAX_PAGE}")));
        }
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        for (column, value) in [
            ("user_uuid", &q.user_uuid),
            ("account_uuid", &q.account_uuid),
            ("method", &q.method),
        ] {
            if let Some(value) = value {
                params.push(json!(value));
                conditions.push(format!("{column} = ${}", params.len()));
            }
        }
        let filtered = if conditions.is_empty() {
            "1 = 1".to_owned()
        } else {
            conditions.join(" AND ")
        };
        let mut tx = store(kernel)?.read().await?;
        let count = tx
            .query(
                &format!("SELECT COUNT(*) AS n FROM audit_records WHERE {filtered}"),
                &params,
            )
            .await?;
        let total = count
            .first()
            .and_then(|r| r.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or_default();
        let mut page_conditions = filtered;
        if let Some(cursor) = &q.cursor {
            let after = decode_cursor(cursor, ORDER.len())?;
            // A time and a record's uuid, as this list gave them.
            let ours = matches!(after.as_slice(), [Value::String(_), Value::String(uuid)]
                if uuid.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ours {
                return Err(Fault::invalid("cursor", "not a cursor this list gave"));
            }
            params.extend(after);
            let (a, u) = (params.len() - 1, params.len());
            page_conditions =
                format!("{page_conditions} AND (at < ${a} OR (at = ${a} AND uuid < ${u}))");
        }
        params.push(json!(i64::from(limit) + 1));
        let rows = tx
            .query(
                &format!(
                    "SELECT * FROM audit_records WHERE {page_conditions}
                     ORDER BY at DESC, uuid DESC LIMIT ${}",
                    params.len()
                ),
                &params,
            )
            .await?;
        let more = rows.len() > limit as usize;
        let rows: Vec<_> = rows.into_iter().take(limit as usize).collect();
        let next = match (more, rows.last()) {
            (true, Some(last)) => Some(encode_cursor(last, &ORDER)),
            _ => None,
        };
        let inventories = rows
            .into_iter()
            .map(|mut r| {
                r.remove("uuid");
                serde_json::from_value(Value::Object(r))
                    .map_err(|e| Fault::internal(format!("an audit record does not read: {e}")))
            })
            .collect::<Result<Vec<AuditRecord>, Fault>>()?;
        Ok(AuditPage {
            inventories,
            total,
            next,
        })
    }
}

/// Columns of a record, in the order `write` binds them.
const COLUMNS: &str =
    "uuid, at, user_uuid, user_name, account_uuid, remote, method, path, status, job_uuid";

/// Rows per `INSERT`: one statement per 100 records, not one per record.
const ROWS_PER_INSERT: usize = 100;

async fn write(kernel: &Kernel, batch: &[AuditRecord]) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut params = Vec::with_capacity(chunk.len() * 10);
        for record in chunk {
            let first = params.len();
            params.extend([
                json!(new_uuid()),
                json!(record.at),
                json!(record.user_uuid),
                json!(record.user_name),
                json!(record.account_uuid),
                json!(record.remote),
                json!(record.method),
                json!(record.path),
                json!(record.status),
                json!(record.job_uuid),
            ]);
            let marks: Vec<String> = (first + 1..=params.len())
                .map(|i| format!("${i}"))
                .collect();
            values.push(format!("({})", marks.join(", ")));
        }
        let sql = format!(
            "INSERT INTO audit_records ({COLUMNS}) VALUES {}",
            values.join(", ")
        );
        tx.statement(&sql, &params).await?;
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}

async fn prune(kernel: &Kernel) -> Result<(), Fault> {
    let days = kernel.config().get(&AUDIT_RETENTION);
    let cutoff = (OffsetDateTime::now_utc() - Duration::from_secs(days * 86_400))
        .format(&Rfc3339)
        .map_err(|e| Fault::internal(format!("formatting a time: {e}")))?;
    let mut tx = store(kernel)?.begin().await?;
    let removed = tx
        .statement("DELETE FROM audit_records WHERE at < $1", &[json!(cutoff)])
        .await?;
    tx.commit(kernel.bus()).await?;
    if removed > 0 {
        tracing::info!(removed, "audit records past the retention window removed");
    }
    Ok(())
}
