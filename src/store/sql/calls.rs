//! Calls, their attempts and timelines, conversions and de-dupe marks.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyConnection;

use super::{Backend, SqlStore, enum_text, finish, parse_id, parse_stored, timestamp};
use crate::{
    domain::{
        call::{Attempt, CallRecord, CallSid, Caller, Conversion},
        dedupe::{Mark, Scope, StoredMark, Touch, Touched},
        phone::E164,
        timeline::TimelineEntry,
    },
    store::{CallChange, CallStore, StoreError},
};

fn ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn optional_timestamp(ms: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    ms.map(timestamp).transpose()
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

impl SqlStore {
    /// A transaction that records calls. Unlike plan changes these need no global order: a call
    /// is changed by its own actor only.
    async fn call_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

#[async_trait]
impl CallStore for SqlStore {
    async fn save_call(&self, change: &CallChange<'_>) -> Result<(), StoreError> {
        let mut tx = self.call_tx().await?;
        let result = save_in(&mut tx, change).await;
        finish(tx, result).await
    }

    async fn call(&self, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
        let mut tx = self.read_tx().await?;
        let result = load_in(&mut tx, sid).await;
        finish(tx, result).await
    }

    async fn timeline(&self, sid: &CallSid) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT detail FROM call_events WHERE call_sid = $1 ORDER BY seq")
                .bind(sid.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|(detail,)| from_json("call_events.detail", detail))
            .collect()
    }

    async fn dedupe_marks(&self) -> Result<Vec<StoredMark>, StoreError> {
        let rows: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT caller_number, scope, last_connected_ms, last_converted_ms FROM dedupe_marks",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(caller, scope, connected, converted)| {
                Ok(StoredMark {
                    caller: E164::from_provider(&caller)
                        .map_err(|e| StoreError::Corrupt(format!("dedupe_marks.caller_number: {e}")))?,
                    scope: Scope::parse_key(&scope).map_err(StoreError::Corrupt)?,
                    mark: Mark {
                        last_connected: optional_timestamp(connected)?,
                        last_converted: optional_timestamp(converted)?,
                    },
                })
            })
            .collect()
    }

    async fn plan_revision(&self) -> Result<i64, StoreError> {
        let (revision,): (i64,) = sqlx::query_as("SELECT revision FROM plan_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }
}

async fn save_in(conn: &mut AnyConnection, change: &CallChange<'_>) -> Result<(), StoreError> {
    let call = change.call;
    let reached = call.connected_attempt().or(call.current_attempt());
    sqlx::query(
        "INSERT INTO calls (call_sid, caller, caller_number, called, company_id, campaign_id,
            visited_campaigns, state, outcome, drop_reason, buyer_id, duplicate, converted, attempts,
            duplicate_buyers, used_fallback, redirects, timeline_len, started_at_ms,
            state_changed_at_ms, ended_at_ms, entry_campaign_id, duplicates_avoided, status_callbacks)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
            $19, $20, $21, $22, $23, $24)
         ON CONFLICT (call_sid) DO UPDATE SET
            company_id = excluded.company_id, campaign_id = excluded.campaign_id,
            visited_campaigns = excluded.visited_campaigns, state = excluded.state,
            outcome = excluded.outcome, drop_reason = excluded.drop_reason,
            buyer_id = excluded.buyer_id, duplicate = excluded.duplicate,
            converted = excluded.converted, attempts = excluded.attempts,
            duplicate_buyers = excluded.duplicate_buyers, used_fallback = excluded.used_fallback,
            redirects = excluded.redirects, timeline_len = excluded.timeline_len,
            state_changed_at_ms = excluded.state_changed_at_ms, ended_at_ms = excluded.ended_at_ms,
            entry_campaign_id = excluded.entry_campaign_id,
            duplicates_avoided = excluded.duplicates_avoided,
            status_callbacks = excluded.status_callbacks",
    )
    .bind(call.sid.as_str())
    .bind(call.caller.raw())
    .bind(call.caller.number().map(|n| n.as_str().to_owned()))
    .bind(&call.called)
    .bind(call.company_id.map(|id| id.to_string()))
    .bind(call.campaign_id.map(|id| id.to_string()))
    .bind(json(&call.visited)?)
    .bind(enum_text(&call.state)?)
    .bind(call.outcome.as_ref().map(enum_text).transpose()?)
    .bind(call.drop_reason.as_ref().map(enum_text).transpose()?)
    .bind(reached.map(|a| a.buyer_id.to_string()))
    .bind(call.duplicate().map(i64::from))
    .bind(i64::from(call.converted()))
    .bind(call.attempts.len() as i64)
    .bind(json(&call.duplicate_buyers)?)
    .bind(i64::from(call.used_fallback()))
    .bind(call.redirects() as i64)
    .bind(i64::from(call.timeline_len))
    .bind(ms(call.started_at))
    .bind(ms(call.state_changed_at))
    .bind(call.ended_at.map(ms))
    .bind(call.visited.first().map(|id| id.to_string()))
    .bind(call.duplicate_buyers.len() as i64)
    .bind(json(&call.status_callbacks)?)
    .execute(&mut *conn)
    .await?;

    for attempt in &call.attempts {
        save_attempt(conn, &call.sid, attempt).await?;
    }

    let first_seq = i64::from(call.timeline_len) - change.timeline.len() as i64;
    for (seq, entry) in (first_seq..).zip(change.timeline) {
        // A retried save must not duplicate entries.
        sqlx::query(
            "INSERT INTO call_events (call_sid, seq, at_ms, kind, detail) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (call_sid, seq) DO NOTHING",
        )
        .bind(call.sid.as_str())
        .bind(seq)
        .bind(ms(entry.at))
        .bind(entry.event.kind())
        .bind(json(entry)?)
        .execute(&mut *conn)
        .await?;
    }

    for conversion in change.conversions {
        save_conversion(conn, conversion).await?;
    }
    for touched in change.touched {
        save_touch(conn, touched).await?;
    }
    Ok(())
}

async fn save_attempt(conn: &mut AnyConnection, sid: &CallSid, attempt: &Attempt) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO call_attempts (call_sid, number, buyer_id, campaign_id, kind, duplicate,
            dial_status, connected_seconds, converted, started_at_ms, answered_at_ms, ended_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (call_sid, number) DO UPDATE SET
            duplicate = excluded.duplicate, dial_status = excluded.dial_status,
            connected_seconds = excluded.connected_seconds, converted = excluded.converted,
            answered_at_ms = excluded.answered_at_ms, ended_at_ms = excluded.ended_at_ms",
    )
    .bind(sid.as_str())
    .bind(i64::from(attempt.number))
    .bind(attempt.buyer_id.to_string())
    .bind(attempt.campaign_id.to_string())
    .bind(enum_text(&attempt.kind)?)
    .bind(attempt.duplicate.map(i64::from))
    .bind(attempt.status.as_ref().map(enum_text).transpose()?)
    .bind(attempt.connected_seconds.map(i64::from))
    .bind(i64::from(attempt.converted))
    .bind(ms(attempt.started_at))
    .bind(attempt.answered_at.map(ms))
    .bind(attempt.ended_at.map(ms))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn save_conversion(conn: &mut AnyConnection, conversion: &Conversion) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversions (call_sid, attempt, buyer_id, campaign_id, caller_number,
            connected_seconds, payout_cents, revenue_cents, converted_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (call_sid, attempt) DO NOTHING",
    )
    .bind(conversion.call_sid.as_str())
    .bind(i64::from(conversion.attempt))
    .bind(conversion.buyer_id.to_string())
    .bind(conversion.campaign_id.to_string())
    .bind(conversion.caller.as_ref().map(|n| n.as_str().to_owned()))
    .bind(i64::from(conversion.connected_seconds))
    .bind(conversion.payout.cents())
    .bind(conversion.revenue.cents())
    .bind(ms(conversion.at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Keeps the latest of each touch: older news (a retried or reordered save) never wins.
async fn save_touch(conn: &mut AnyConnection, touched: &Touched) -> Result<(), StoreError> {
    let at = ms(touched.at);
    let converted = (touched.touch == Touch::Converted).then_some(at);
    sqlx::query(
        "INSERT INTO dedupe_marks (caller_number, scope, last_connected_ms, last_converted_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (caller_number, scope) DO UPDATE SET
            last_connected_ms = CASE
                WHEN COALESCE(excluded.last_connected_ms, -1) > COALESCE(dedupe_marks.last_connected_ms, -1)
                THEN excluded.last_connected_ms ELSE dedupe_marks.last_connected_ms END,
            last_converted_ms = CASE
                WHEN COALESCE(excluded.last_converted_ms, -1) > COALESCE(dedupe_marks.last_converted_ms, -1)
                THEN excluded.last_converted_ms ELSE dedupe_marks.last_converted_ms END",
    )
    .bind(touched.caller.as_str())
    .bind(touched.scope.key())
    .bind(at)
    .bind(converted)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CallRow {
    call_sid: String,
    caller: String,
    called: String,
    company_id: Option<String>,
    campaign_id: Option<String>,
    visited_campaigns: String,
    state: String,
    outcome: Option<String>,
    drop_reason: Option<String>,
    duplicate_buyers: String,
    timeline_len: i64,
    status_callbacks: String,
    started_at_ms: i64,
    state_changed_at_ms: i64,
    ended_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    number: i64,
    buyer_id: String,
    campaign_id: String,
    kind: String,
    duplicate: Option<i64>,
    dial_status: Option<String>,
    connected_seconds: Option<i64>,
    converted: i64,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
}

fn small(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} is out of range")))
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Self, Self::Error> {
        Ok(Self {
            number: small("number", row.number)?,
            buyer_id: parse_id(&row.buyer_id)?,
            campaign_id: parse_id(&row.campaign_id)?,
            kind: parse_stored("kind", row.kind.into())?,
            duplicate: row.duplicate.map(|d| d != 0),
            status: row
                .dial_status
                .map(|s| parse_stored("dial_status", s.into()))
                .transpose()?,
            connected_seconds: row
                .connected_seconds
                .map(|s| small("connected_seconds", s))
                .transpose()?,
            converted: row.converted != 0,
            started_at: timestamp(row.started_at_ms)?,
            answered_at: optional_timestamp(row.answered_at_ms)?,
            ended_at: optional_timestamp(row.ended_at_ms)?,
        })
    }
}

async fn load_in(conn: &mut AnyConnection, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
    let row: Option<CallRow> = sqlx::query_as(
        "SELECT call_sid, caller, called, company_id, campaign_id, visited_campaigns, state, outcome,
                drop_reason, duplicate_buyers, timeline_len, status_callbacks, started_at_ms,
                state_changed_at_ms, ended_at_ms
         FROM calls WHERE call_sid = $1",
    )
    .bind(sid.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT number, buyer_id, campaign_id, kind, duplicate, dial_status, connected_seconds,
                converted, started_at_ms, answered_at_ms, ended_at_ms
         FROM call_attempts WHERE call_sid = $1 ORDER BY number",
    )
    .bind(sid.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(CallRecord {
        sid: parse_stored("call_sid", row.call_sid.into())?,
        caller: Caller::from_provider(&row.caller),
        called: row.called,
        company_id: row.company_id.as_deref().map(parse_id).transpose()?,
        campaign_id: row.campaign_id.as_deref().map(parse_id).transpose()?,
        visited: from_json("visited_campaigns", &row.visited_campaigns)?,
        state: parse_stored("state", row.state.into())?,
        outcome: row
            .outcome
            .map(|o| parse_stored("outcome", o.into()))
            .transpose()?,
        drop_reason: row
            .drop_reason
            .map(|r| parse_stored("drop_reason", r.into()))
            .transpose()?,
        attempts: attempts
            .into_iter()
            .map(Attempt::try_from)
            .collect::<Result<_, _>>()?,
        duplicate_buyers: from_json("duplicate_buyers", &row.duplicate_buyers)?,
        started_at: timestamp(row.started_at_ms)?,
        state_changed_at: timestamp(row.state_changed_at_ms)?,
        ended_at: optional_timestamp(row.ended_at_ms)?,
        timeline_len: small("timeline_len", row.timeline_len)?,
        status_callbacks: from_json("status_callbacks", &row.status_callbacks)?,
    }))
}
