//! Publishers' payouts: the ledger, and the one step that decides and writes a payout.

use super::{Backend, SqlStore, finish};
use crate::{
    domain::{call::CallSid, money::Money, payout::is_duplicate_for_publisher, plan::PublisherId},
    store::{PayoutClaim, PayoutStore, StoreError},
};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyConnection;

/// The advisory lock class of one caller's payouts to one publisher on PostgreSQL ("PAYO").
const PAYOUT_LOCK_CLASS: i32 = 0x5041_594f;

#[async_trait]
impl PayoutStore for SqlStore {
    async fn pay_once(&self, claim: &PayoutClaim<'_>) -> Result<bool, StoreError> {
        let mut tx = match self.backend {
            // One writer at a time anyway; taken up front, so the mark read stays true.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let result = pay_in(&mut tx, self.backend, claim).await;
        finish(tx, result).await
    }
}

/// [`PayoutStore::pay_once`], in a transaction the caller holds (which, on SQLite, must hold
/// the writer): on PostgreSQL, it takes the caller's and publisher's lock first.
pub(super) async fn pay_in(
    conn: &mut AnyConnection,
    backend: Backend,
    claim: &PayoutClaim<'_>,
) -> Result<bool, StoreError> {
    let (call, publisher) = (claim.call.as_str(), claim.publisher.to_string());
    let caller = claim.caller.map(|caller| caller.as_str());
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(PAYOUT_LOCK_CLASS)
            .bind(format!("{}:{publisher}", caller.unwrap_or(call)))
            .execute(&mut *conn)
            .await?;
    }
    // This call's own payout, asked again (its first answer lost, or a retried turn).
    let own: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM publisher_payouts p
         WHERE call_sid = $1 AND publisher_id = $2 AND kind = 'paid'
           AND NOT EXISTS (SELECT 1 FROM publisher_payouts r WHERE r.reverses = p.id)",
    )
    .bind(call)
    .bind(&publisher)
    .fetch_optional(&mut *conn)
    .await?;
    if own.is_some() {
        return Ok(true);
    }
    if let Some(caller) = caller {
        // The caller's mark: its latest payout to the publisher not reversed.
        let mark: Option<(i64,)> = sqlx::query_as(
            "SELECT at_ms FROM publisher_payouts p
             WHERE caller_number = $1 AND publisher_id = $2 AND kind = 'paid'
               AND NOT EXISTS (SELECT 1 FROM publisher_payouts r WHERE r.reverses = p.id)
             ORDER BY at_ms DESC LIMIT 1",
        )
        .bind(caller)
        .bind(&publisher)
        .fetch_optional(&mut *conn)
        .await?;
        let at = claim.at.as_millisecond();
        if is_duplicate_for_publisher(claim.terms, mark.map(|(at,)| at), at) {
            return Ok(false);
        }
    }
    sqlx::query(
        "INSERT INTO publisher_payouts
            (id, call_sid, publisher_id, caller_number, amount_cents, kind, at_ms)
         VALUES ($1, $2, $3, $4, $5, 'paid', $6)",
    )
    .bind(format!("{call}:{publisher}:paid"))
    .bind(call)
    .bind(&publisher)
    .bind(caller)
    .bind(claim.terms.amount.cents())
    .bind(claim.at.as_millisecond())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Reverses the call's payout to the publisher, if it was paid and not reversed yet, by a new
/// row (the paid one is never edited): the amount reversed.
pub(super) async fn reverse_in(
    conn: &mut AnyConnection,
    call: &CallSid,
    publisher: PublisherId,
    at: Timestamp,
) -> Result<Option<Money>, StoreError> {
    let publisher = publisher.to_string();
    let paid: Option<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT id, caller_number, amount_cents FROM publisher_payouts p
         WHERE call_sid = $1 AND publisher_id = $2 AND kind = 'paid'
           AND NOT EXISTS (SELECT 1 FROM publisher_payouts r WHERE r.reverses = p.id)",
    )
    .bind(call.as_str())
    .bind(&publisher)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, caller, cents)) = paid else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO publisher_payouts
            (id, call_sid, publisher_id, caller_number, amount_cents, kind, reverses, at_ms)
         VALUES ($1, $2, $3, $4, $5, 'reversed', $6, $7)",
    )
    .bind(format!("{id}:reversed"))
    .bind(call.as_str())
    .bind(&publisher)
    .bind(caller)
    .bind(-cents)
    .bind(&id)
    .bind(at.as_millisecond())
    .execute(&mut *conn)
    .await?;
    Money::from_cents(cents)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("publisher_payouts.amount_cents: {e}")))
}
