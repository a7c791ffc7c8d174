//! The postback outbox: leased to delivery workers, read and re-queued through the API.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use uuid::Uuid;

use sqlx::AnyConnection;

use super::{Backend, SqlStore, finish, from_json, sealing::Sealer, timestamp};
use crate::{
    domain::{
        call::CallSid,
        postback::{
            Due, EndpointId, Gone, PostbackEvent, PostbackOwner, PostbackRecord, PostbackSecret,
            PostbackStatus, Postbacks, endpoint_now,
        },
    },
    store::{PostbackFilter, PostbackStore, StoreError, Tried, TryOutcome},
};

/// The endpoints of a postback's owner as they are now, from a statement over `postbacks`:
/// `NULL` once the owner is removed.
macro_rules! owners_endpoints {
    () => {
        "CASE postbacks.owner_kind
            WHEN 'buyer' THEN (SELECT b.postbacks FROM buyers b WHERE b.id = postbacks.owner_id)
            WHEN 'publisher' THEN (SELECT p.postbacks FROM publishers p WHERE p.id = postbacks.owner_id)
         END"
    };
}

/// Leases what is due, oldest due first: the statement for SQLite, then for PostgreSQL, where
/// rows another node is leasing at this very moment are skipped rather than waited for. Each
/// comes with its owner's endpoints as they are now: a try goes to its endpoint as it is then.
macro_rules! lease_due {
    ($($lock:literal)?) => {
        concat!(
            "UPDATE postbacks SET lease_owner = $1, lease_until_ms = $2 WHERE id IN (
                SELECT id FROM postbacks WHERE status = 'pending' AND next_attempt_at_ms <= $3
                    AND (lease_until_ms IS NULL OR lease_until_ms <= $3)
                ORDER BY next_attempt_at_ms LIMIT $4", $(" ", $lock,)? "
            ) RETURNING id, event, url, secret, body, attempts, endpoint_id, ",
            owners_endpoints!(),
            " AS endpoints"
        )
    };
}

const LEASE_DUE: [&str; 2] = [lease_due!(), lease_due!("FOR UPDATE SKIP LOCKED")];

/// A postback as the API shows it, where `$where` narrows them.
macro_rules! select_postbacks {
    ($where:literal) => {
        concat!(
            "SELECT id, event, call_sid, endpoint, url, status, attempts, next_attempt_at_ms,
                last_error, last_status_code, created_at_ms, delivered_at_ms, body
             FROM postbacks ",
            $where
        )
    };
}

#[derive(sqlx::FromRow)]
struct PostbackRow {
    id: String,
    event: String,
    call_sid: String,
    endpoint: String,
    url: String,
    status: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    last_status_code: Option<i64>,
    created_at_ms: i64,
    delivered_at_ms: Option<i64>,
    body: String,
}

fn corrupt(what: &str) -> impl FnOnce(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("postbacks.{what}: {e}"))
}

fn uuid(text: &str) -> Result<Uuid, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{text}` is not a UUID")))
}

fn event(text: &str) -> Result<PostbackEvent, StoreError> {
    PostbackEvent::parse(text).ok_or_else(|| StoreError::Corrupt(format!("postbacks.event: {text}")))
}

impl TryFrom<PostbackRow> for PostbackRecord {
    type Error = StoreError;

    fn try_from(row: PostbackRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: uuid(&row.id)?,
            event: event(&row.event)?,
            call_sid: CallSid::parse(&row.call_sid).map_err(corrupt("call_sid"))?,
            endpoint: row.endpoint,
            url: row.url,
            status: PostbackStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("postbacks.status: {}", row.status)))?,
            attempts: u32::try_from(row.attempts).map_err(|e| corrupt("attempts")(e.to_string()))?,
            next_attempt_at: timestamp(row.next_attempt_at_ms)?,
            last_error: row.last_error,
            last_status_code: (row.last_status_code)
                .map(|code| u16::try_from(code).map_err(|e| corrupt("last_status_code")(e.to_string())))
                .transpose()?,
            created_at: timestamp(row.created_at_ms)?,
            delivered_at: row.delivered_at_ms.map(timestamp).transpose()?,
            body: serde_json::from_str(&row.body).map_err(|e| corrupt("body")(e.to_string()))?,
        })
    }
}

#[async_trait]
impl PostbackStore for SqlStore {
    async fn lease_due_postbacks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => LEASE_DUE[0],
            Backend::Postgres => LEASE_DUE[1],
        };
        let leased = sqlx::query_as(sql)
            .bind(self.newsroom.node.as_str())
            .bind(lease_until.as_millisecond())
            .bind(now.as_millisecond())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await;
        let rows: Vec<LeasedRow> = self.noted("the postback outbox", leased.map_err(StoreError::from))?;
        let mut due = Vec::with_capacity(rows.len());
        let mut cancelled = Vec::new();
        // A lease takes many postbacks of few owners: each owner's endpoints are read once.
        let mut owners: HashMap<String, Postbacks> = HashMap::new();
        for json in rows.iter().filter_map(|row| row.endpoints.as_deref()) {
            if !owners.contains_key(json) {
                owners.insert(json.to_owned(), owners_endpoints(&self.seal, json)?);
            }
        }
        for row in rows {
            let event = event(&row.event)?;
            let endpoints = row.endpoints.as_deref().and_then(|json| owners.get(json));
            let to = match row.endpoint_id.as_deref().map(endpoint_id).transpose()? {
                Some(id) => endpoint_now(endpoints, id, event)
                    .map(|endpoint| (endpoint.url.as_str().to_owned(), endpoint.secret.clone())),
                None => queued_before_ids(endpoints, row.url, row.secret)?,
                // (Such a row keeps the secret it was queued with, in clear: only rows queued
                // before endpoints had ids, and read as they are.)
            };
            match to {
                Ok((url, secret)) => due.push(Due {
                    id: uuid(&row.id)?,
                    event,
                    url,
                    secret,
                    body: row.body,
                    attempts: u32::try_from(row.attempts).map_err(|e| corrupt("attempts")(e.to_string()))?,
                }),
                Err(gone) => cancelled.push((row.id, gone.reason())),
            }
        }
        // Queued by a save that still read the plan from before its endpoint's removal (or
        // left over from one): never sent, whatever the save's plan said.
        for (id, why) in cancelled {
            sqlx::query(
                "UPDATE postbacks SET status = 'cancelled', last_error = $2, lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = $1 AND status = 'pending' AND lease_owner = $3",
            )
            .bind(id)
            .bind(why)
            .bind(self.newsroom.node.as_str())
            .execute(&self.pool)
            .await?;
        }
        Ok(due)
    }

    async fn record_tries(&self, tries: &[Tried]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            for tried in tries {
                record(&mut tx, self.newsroom.node.as_str(), tried).await?;
            }
            Ok(())
        }
        .await;
        self.noted("the postback outbox", finish(tx, result).await)
    }

    async fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let (pending, failed): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM postbacks WHERE status IN ('pending', 'failed')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((pending.unsigned_abs(), failed.unsigned_abs()))
    }

    async fn release_postbacks(&self, ids: &[Uuid], due_at: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            for id in ids {
                sqlx::query(
                    "UPDATE postbacks SET lease_owner = NULL, lease_until_ms = NULL, next_attempt_at_ms = $2
                     WHERE id = $1 AND status = 'pending' AND lease_owner = $3",
                )
                .bind(id.to_string())
                .bind(due_at.as_millisecond())
                .bind(self.newsroom.node.as_str())
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn postbacks(&self, filter: &PostbackFilter) -> Result<Vec<PostbackRecord>, StoreError> {
        let rows: Vec<PostbackRow> = sqlx::query_as(select_postbacks!(
            "WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR call_sid = $2)
                AND ($3 IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.status.map(PostbackStatus::as_str))
        .bind(filter.call_sid.as_ref().map(CallSid::as_str))
        .bind(filter.before.map(|id| id.to_string()))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(PostbackRecord::try_from).collect()
    }

    async fn postback(&self, id: Uuid) -> Result<PostbackRecord, StoreError> {
        let row: Option<PostbackRow> = sqlx::query_as(select_postbacks!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or_else(|| StoreError::NotFound {
            kind: "postback",
            id: id.to_string(),
        })?
        .try_into()
    }

    async fn retry_postback(&self, id: Uuid, at: Timestamp) -> Result<PostbackRecord, StoreError> {
        let (status, kind, endpoint, endpoints, why): (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(concat!(
            "SELECT status, event, endpoint_id, ",
            owners_endpoints!(),
            ", last_error FROM postbacks WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "postback",
            id: id.to_string(),
        })?;
        if status == PostbackStatus::Cancelled.as_str() {
            let why = why.unwrap_or_else(|| "cancelled".to_owned());
            return Err(StoreError::conflict(
                None,
                format!("the postback was {why}; it is not sent again"),
            ));
        }
        // Refused now rather than queued to be cancelled at its next try.
        let endpoints = (endpoints.as_deref())
            .map(|json| owners_endpoints(&self.seal, json))
            .transpose()?;
        let gone = match endpoint.as_deref().map(endpoint_id).transpose()? {
            Some(endpoint) => endpoint_now(endpoints.as_ref(), endpoint, event(&kind)?).err(),
            None => endpoints.is_none().then_some(Gone::Owner),
        };
        if let Some(gone) = gone {
            return Err(StoreError::conflict(
                None,
                format!("the postback cannot be sent again: {gone}"),
            ));
        }
        // Not one a node is sending this moment: that try's result would undo the retry.
        let queued = sqlx::query(
            "UPDATE postbacks SET status = 'pending', attempts = 0, next_attempt_at_ms = $2,
                delivered_at_ms = NULL, lease_owner = NULL, lease_until_ms = NULL
             WHERE id = $1 AND status <> 'cancelled' AND NOT (status = 'pending' AND lease_until_ms > $2)",
        )
        .bind(id.to_string())
        .bind(at.as_millisecond())
        .execute(&self.pool)
        .await?;
        let postback = self.postback(id).await?;
        if queued.rows_affected() == 0 {
            return Err(StoreError::conflict(
                None,
                "the postback is being sent now; wait for this try's result",
            ));
        }
        Ok(postback)
    }
}

/// A leased postback, and its owner's endpoints as they are now.
#[derive(sqlx::FromRow)]
struct LeasedRow {
    id: String,
    event: String,
    url: String,
    body: String,
    attempts: i64,
    /// Kept only for postbacks queued before endpoints had ids.
    secret: Option<String>,
    endpoint_id: Option<String>,
    endpoints: Option<String>,
}

fn endpoint_id(text: &str) -> Result<EndpointId, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("postbacks.endpoint_id: `{text}` is not an id")))
}

/// The owner's endpoints, their secrets decrypted.
fn owners_endpoints(seal: &Sealer, json: &str) -> Result<Postbacks, StoreError> {
    let opened = seal.open_fields_in(json, "secret", "a postback secret")?;
    from_json("postbacks (the owner's endpoints)", &opened)
}

/// Where a postback queued before endpoints had ids goes, when the migration that gave them ids
/// could not tell which was its: where it was queued to, unless its owner was removed since.
fn queued_before_ids(
    endpoints: Option<&Postbacks>,
    url: String,
    secret: Option<String>,
) -> Result<Result<(String, PostbackSecret), Gone>, StoreError> {
    if endpoints.is_none() {
        return Ok(Err(Gone::Owner));
    }
    let secret = (secret.ok_or_else(|| "missing".to_owned()))
        .and_then(PostbackSecret::try_from)
        .map_err(corrupt("secret"))?;
    Ok(Ok((url, secret)))
}

/// Cancels what is queued for `owner`'s endpoints that `endpoints` (its list as now written)
/// no longer has, or that no longer take the event. Run in the transaction that writes the
/// owner, so the outbox shows it at once; a save still holding the old plan may queue one more,
/// which its lease then cancels.
pub(super) async fn cancel_unwanted(
    conn: &mut AnyConnection,
    owner: PostbackOwner,
    endpoints: &Postbacks,
) -> Result<(), StoreError> {
    let queued: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT endpoint_id, event FROM postbacks
         WHERE owner_id = $1 AND status = 'pending' AND endpoint_id IS NOT NULL",
    )
    .bind(owner.id().to_string())
    .fetch_all(&mut *conn)
    .await?;
    for (endpoint, kind) in queued {
        if let Err(gone) = endpoint_now(Some(endpoints), endpoint_id(&endpoint)?, event(&kind)?) {
            sqlx::query(
                "UPDATE postbacks SET status = 'cancelled', last_error = $4, lease_owner = NULL, lease_until_ms = NULL
                 WHERE owner_id = $1 AND endpoint_id = $2 AND event = $3 AND status = 'pending'",
            )
            .bind(owner.id().to_string())
            .bind(endpoint)
            .bind(kind)
            .bind(gone.reason())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Cancels everything queued for a removed owner's endpoints, in the transaction that removes it.
pub(super) async fn cancel_all(conn: &mut AnyConnection, owner: PostbackOwner) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE postbacks SET status = 'cancelled', last_error = $2, lease_owner = NULL, lease_until_ms = NULL
         WHERE owner_id = $1 AND status = 'pending'",
    )
    .bind(owner.id().to_string())
    .bind(Gone::Owner.reason())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records one try. A failure counts only while this node still holds the lease: a node that
/// outlived its lease has another node's try to respect. A delivery is a fact whoever made it.
async fn record(conn: &mut AnyConnection, node: &str, tried: &Tried) -> Result<(), StoreError> {
    match &tried.outcome {
        TryOutcome::Delivered { status_code } => {
            sqlx::query(
                "UPDATE postbacks SET status = 'delivered', attempts = attempts + 1, delivered_at_ms = $2,
                    last_status_code = $3, last_error = NULL, lease_owner = NULL, lease_until_ms = NULL,
                    url = $4
                 WHERE id = $1",
            )
            .bind(tried.id.to_string())
            .bind(tried.at.as_millisecond())
            .bind(i64::from(*status_code))
            .bind(&tried.url)
            .execute(&mut *conn)
            .await?;
        }
        TryOutcome::Failed(failure) => {
            sqlx::query(
                "UPDATE postbacks SET attempts = attempts + 1, last_error = $2, last_status_code = $3,
                    status = CASE WHEN $4 IS NULL THEN 'failed' ELSE 'pending' END,
                    next_attempt_at_ms = COALESCE($4, next_attempt_at_ms),
                    lease_owner = NULL, lease_until_ms = NULL, url = $6
                 WHERE id = $1 AND status = 'pending' AND lease_owner = $5",
            )
            .bind(tried.id.to_string())
            .bind(&failure.error)
            .bind(failure.status_code.map(i64::from))
            .bind(failure.retry_at.map(|at| at.as_millisecond()))
            .bind(node)
            .bind(&tried.url)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
