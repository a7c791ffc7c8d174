//! Publishers' payouts: the ledger, and the one step that decides and writes a payout.

use super::{Backend, SqlStore, finish};
use crate::{
    domain::payout::is_duplicate_for_publisher,
    store::{PayoutClaim, PayoutStore, StoreError},
};
use async_trait::async_trait;

/// The advisory lock class of one caller's payouts to one publisher on PostgreSQL ("PAYO").
const PAYOUT_LOCK_CLASS: i32 = 0x5041_594f;

#[async_trait]
impl PayoutStore for SqlStore {
    async fn pay_once(&self, claim: &PayoutClaim<'_>) -> Result<bool, StoreError> {
        let (call, publisher) = (claim.call.as_str(), claim.publisher.to_string());
        let caller = claim.caller.map(|caller| caller.as_str());
        let mut tx = match self.backend {
            // One writer at a time anyway; taken up front, so the mark read stays true.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(PAYOUT_LOCK_CLASS)
                    .bind(format!("{}:{publisher}", caller.unwrap_or(call)))
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        let result = async {
            // This call's own payout, asked again (its first answer lost, or a retried turn).
            let own: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM publisher_payouts p
                 WHERE call_sid = $1 AND publisher_id = $2 AND kind = 'paid'
                   AND NOT EXISTS (SELECT 1 FROM publisher_payouts r WHERE r.reverses = p.id)",
            )
            .bind(call)
            .bind(&publisher)
            .fetch_optional(&mut *tx)
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
                .fetch_optional(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
            Ok(true)
        }
        .await;
        finish(tx, result).await
    }
}
