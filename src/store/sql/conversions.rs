//! Buyers' reports of conversions and returns, each made in one transaction with its
//! idempotency key; and the buyers' conversion keys.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyConnection;

use super::{
    Backend, SqlStore,
    calls::{load_for_update, save_all},
    cluster::publish,
    finish, parse_id, payouts, timestamp,
};
use crate::{
    domain::{
        call::CallSid,
        cluster::News,
        conversion::{ReportAnswer, Reported},
        dedupe::Unconverted,
        money::Money,
        phone::E164,
        plan::BuyerId,
    },
    store::{
        CallChange, ConversionStore, PayoutClaim, Report, ReportChange, ReportOutcome, StoreError, Write,
    },
};

#[async_trait]
impl ConversionStore for SqlStore {
    async fn report(&self, report: &Report<'_>) -> Result<ReportOutcome, StoreError> {
        match self.report_once(report).await {
            // Another node claimed the key for another call at the same moment: its row is
            // committed now, and answers this one.
            Err(StoreError::Conflict { .. }) => self.report_once(report).await,
            outcome => outcome,
        }
    }

    async fn conversion_key_buyer(&self, key_sha256: &str) -> Result<Option<BuyerId>, StoreError> {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT id FROM buyers WHERE conversion_key_sha256 = $1")
                .bind(key_sha256)
                .fetch_optional(&self.pool)
                .await?;
        found.map(|(id,)| parse_id(&id)).transpose()
    }

    async fn set_conversion_key(&self, buyer: BuyerId, key_sha256: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let result = async {
            if let Some(digest) = key_sha256 {
                let holder: Option<(String,)> =
                    sqlx::query_as("SELECT name FROM buyers WHERE conversion_key_sha256 = $1 AND id <> $2")
                        .bind(digest)
                        .bind(buyer.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((name,)) = holder {
                    return Err(StoreError::conflict(
                        Some("key"),
                        format!("buyer {name:?} already uses this conversion key"),
                    ));
                }
            }
            let updated = sqlx::query("UPDATE buyers SET conversion_key_sha256 = $2 WHERE id = $1")
                .bind(buyer.to_string())
                .bind(key_sha256)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::not_found(buyer));
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn has_conversion_key(&self, buyer: BuyerId) -> Result<bool, StoreError> {
        let found: Option<(Option<String>,)> =
            sqlx::query_as("SELECT conversion_key_sha256 FROM buyers WHERE id = $1")
                .bind(buyer.to_string())
                .fetch_optional(&self.pool)
                .await?;
        match found {
            Some((digest,)) => Ok(digest.is_some()),
            None => Err(StoreError::not_found(buyer)),
        }
    }

    async fn latest_call_to(
        &self,
        caller: &E164,
        buyer: BuyerId,
        at: Timestamp,
    ) -> Result<Option<CallSid>, StoreError> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT c.call_sid FROM calls c
             WHERE c.caller_number = $1 AND c.started_at_ms <= $3
               AND EXISTS (SELECT 1 FROM call_attempts a
                           WHERE a.call_sid = c.call_sid AND a.buyer_id = $2
                             AND (a.answered_at_ms IS NOT NULL OR a.connected_seconds IS NOT NULL))
             ORDER BY c.started_at_ms DESC LIMIT 1",
        )
        .bind(caller.as_str())
        .bind(buyer.to_string())
        .bind(at.as_millisecond())
        .fetch_optional(&self.pool)
        .await?;
        found
            .map(|(sid,)| {
                CallSid::parse(&sid).map_err(|e| StoreError::Corrupt(format!("calls.call_sid: {e}")))
            })
            .transpose()
    }
}

impl SqlStore {
    async fn report_once(&self, report: &Report<'_>) -> Result<ReportOutcome, StoreError> {
        // SQLite: the writer, up front. PostgreSQL: the call's row, locked by the read below,
        // makes reports of one call wait for each other.
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let result = self.report_in(&mut tx, report).await;
        finish(tx, result).await
    }

    async fn report_in(
        &self,
        conn: &mut AnyConnection,
        report: &Report<'_>,
    ) -> Result<ReportOutcome, StoreError> {
        let Some(call) = load_for_update(conn, self.backend, report.call).await? else {
            return Err(StoreError::NotFound {
                kind: "call",
                id: report.call.to_string(),
            });
        };
        // Read after the call's lock is held: a report of this call that committed meanwhile
        // is seen.
        let claimed: Option<(String, String)> = sqlx::query_as(
            "SELECT request_sha256, response FROM conversion_requests
             WHERE buyer_id = $1 AND idempotency_key = $2",
        )
        .bind(report.buyer.to_string())
        .bind(report.key.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((request, response)) = claimed {
            if request != report.request {
                return Ok(ReportOutcome::KeyReused);
            }
            let answer: ReportAnswer = serde_json::from_str(&response)
                .map_err(|e| StoreError::Corrupt(format!("conversion_requests.response: {e}")))?;
            return Ok(ReportOutcome::Replayed(answer));
        }
        let reported = reported_of(conn, report.call).await?;
        let mut change = match report.steps.apply(&call, &reported) {
            Ok(change) => change,
            Err(refusal) => return Ok(ReportOutcome::Refused(refusal)),
        };
        if let (Some(terms), Some(publisher)) = (change.pay, change.record.publisher_id) {
            let claim = PayoutClaim {
                call: report.call,
                publisher,
                caller: change.record.caller.number(),
                terms: &terms,
                at: report.at,
            };
            let paid = payouts::pay_in(conn, self.backend, &claim).await?;
            report.steps.paid(&mut change, &terms, paid);
        }
        if change.reverse_payout
            && let Some(publisher) = change.record.publisher_id
        {
            let reversed = payouts::reverse_in(conn, report.call, publisher, report.at).await?;
            report.steps.reversed(&mut change, reversed);
        }
        write_reported(conn, &change, report.at).await?;
        let unconverted = retake_marks(conn, &change, report.at).await?;
        let postbacks = report.steps.postbacks(&change);
        change.record.timeline_len = call.timeline_len + change.timeline.len() as u32;
        let conversions: Vec<_> = change.conversion.iter().map(|(c, _)| c.clone()).collect();
        let saved = CallChange {
            call: &change.record,
            timeline: &change.timeline,
            conversions: &conversions,
            touched: &change.touched,
            load: &[],
            postbacks: &postbacks,
            write: Write::Replace,
        };
        save_all(conn, self.backend, &self.newsroom, &[saved]).await?;
        if self.backend == Backend::Postgres && !unconverted.is_empty() {
            publish(conn, &self.newsroom, [News::Unconverted(unconverted.clone())]).await?;
        }
        // The key is claimed last, with the answer: a second claim of it fails here, and
        // every change above is rolled back with it.
        let response =
            serde_json::to_string(&change.answer).map_err(|e| StoreError::Corrupt(format!("answer: {e}")))?;
        sqlx::query(
            "INSERT INTO conversion_requests
                (buyer_id, idempotency_key, action, call_sid, request_sha256, response, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(report.buyer.to_string())
        .bind(report.key.as_str())
        .bind(report.action.as_str())
        .bind(report.call.as_str())
        .bind(report.request)
        .bind(&response)
        .bind(report.at.as_millisecond())
        .execute(&mut *conn)
        .await?;
        Ok(ReportOutcome::Made {
            answer: change.answer,
            touched: change.touched,
            unconverted,
            postbacks: !postbacks.is_empty(),
        })
    }
}

/// What was reported of the call before.
async fn reported_of(conn: &mut AnyConnection, call: &CallSid) -> Result<Reported, StoreError> {
    let row: Option<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT r.converted_at_ms, r.revenue_cents, t.returned_at_ms
         FROM reported_conversions r LEFT JOIN conversion_returns t ON t.call_sid = r.call_sid
         WHERE r.call_sid = $1",
    )
    .bind(call.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((converted, revenue, returned)) = row else {
        return Ok(Reported::default());
    };
    Ok(Reported {
        converted_at: Some(timestamp(converted)?),
        returned_at: returned.map(timestamp).transpose()?,
        revenue: Some(
            Money::from_cents(revenue)
                .map_err(|e| StoreError::Corrupt(format!("reported_conversions.revenue_cents: {e}")))?,
        ),
    })
}

/// The report's own rows: the conversion (one per call, by its key), or its return.
async fn write_reported(
    conn: &mut AnyConnection,
    change: &ReportChange,
    at: Timestamp,
) -> Result<(), StoreError> {
    if let Some((conversion, external_id)) = &change.conversion {
        sqlx::query(
            "INSERT INTO reported_conversions
                (call_sid, attempt, buyer_id, caller_number, revenue_cents, external_id, converted_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(conversion.call_sid.as_str())
        .bind(i64::from(conversion.attempt))
        .bind(conversion.buyer_id.to_string())
        .bind(conversion.caller.as_ref().map(E164::as_str))
        .bind(conversion.revenue.cents())
        .bind(external_id.as_deref())
        .bind(conversion.at.as_millisecond())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(reason) = &change.returned {
        sqlx::query("INSERT INTO conversion_returns (call_sid, reason, returned_at_ms) VALUES ($1, $2, $3)")
            .bind(change.record.sid.as_str())
            .bind(reason)
            .bind(at.as_millisecond())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A return takes its conversion's de-dupe marks back: each scope's latest conversion of the
/// caller is read again from the conversions not returned.
async fn retake_marks(
    conn: &mut AnyConnection,
    change: &ReportChange,
    at: Timestamp,
) -> Result<Vec<Unconverted>, StoreError> {
    let Some(caller) = change.record.caller.number() else {
        return Ok(Vec::new());
    };
    let mut unconverted = Vec::new();
    for (scope, buyers) in &change.retaken {
        let mut last: Option<i64> = None;
        for buyer in buyers {
            let (latest,): (Option<i64>,) = sqlx::query_as(
                "SELECT MAX(c.converted_at_ms) FROM conversions c
                 WHERE c.caller_number = $1 AND c.buyer_id = $2
                   AND NOT EXISTS (SELECT 1 FROM conversion_returns r WHERE r.call_sid = c.call_sid)",
            )
            .bind(caller.as_str())
            .bind(buyer.to_string())
            .fetch_one(&mut *conn)
            .await?;
            last = last.max(latest);
        }
        sqlx::query("UPDATE dedupe_marks SET last_converted_ms = $3 WHERE caller_number = $1 AND scope = $2")
            .bind(caller.as_str())
            .bind(scope.key())
            .bind(last)
            .execute(&mut *conn)
            .await?;
        unconverted.push(Unconverted {
            caller: caller.clone(),
            scope: scope.clone(),
            // Any mark up to now was this conversion's or older: a later one is not lowered.
            returned: at,
            last_converted: last.map(timestamp).transpose()?,
        });
    }
    Ok(unconverted)
}
