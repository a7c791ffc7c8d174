//! What supervisors read: calls at a glance and statistics, aggregated by the database.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{
    Backend, SqlStore, enum_text, finish, in_json_list, json_list, parse_id, parse_stored, timestamp,
};
use crate::{
    domain::{
        call::CallSid,
        money::{Money, Total},
        plan::{BuyerId, CampaignId},
        series::{BucketCounts, Counts, Window},
        supervision::{BuyerStats, CallSummary, CampaignStats, PublisherStats, mean_ms},
    },
    store::{CallFilter, StoreError, SupervisionStore, Within},
};

#[derive(sqlx::FromRow)]
struct SummaryRow {
    call_sid: String,
    caller: String,
    called: String,
    company_id: Option<String>,
    entry_campaign_id: Option<String>,
    campaign_id: Option<String>,
    buyer_id: Option<String>,
    state: String,
    outcome: Option<String>,
    drop_reason: Option<String>,
    attempts: i64,
    converted: i64,
    duplicate: Option<i64>,
    used_fallback: i64,
    redirects: i64,
    duplicates_avoided: i64,
    started_at_ms: i64,
    state_changed_at_ms: i64,
    ended_at_ms: Option<i64>,
    timeline_len: i64,
    caller_state: Option<String>,
    publisher_id: Option<String>,
    publisher_payout_cents: Option<i64>,
    publisher_duplicate: Option<i64>,
}

impl TryFrom<SummaryRow> for CallSummary {
    type Error = StoreError;

    fn try_from(row: SummaryRow) -> Result<Self, StoreError> {
        let count = |column: &str, n: i64| {
            u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("calls.{column}: {n}")))
        };
        Ok(Self {
            call_sid: CallSid::parse(&row.call_sid).map_err(StoreError::Corrupt)?,
            caller: row.caller,
            called: row.called,
            company_id: row.company_id.as_deref().map(parse_id).transpose()?,
            entry_campaign_id: row.entry_campaign_id.as_deref().map(parse_id).transpose()?,
            campaign_id: row.campaign_id.as_deref().map(parse_id).transpose()?,
            buyer_id: row.buyer_id.as_deref().map(parse_id).transpose()?,
            state: text("calls.state", row.state)?,
            outcome: row.outcome.map(|o| text("calls.outcome", o)).transpose()?,
            drop_reason: (row.drop_reason)
                .map(|r| text("calls.drop_reason", r))
                .transpose()?,
            attempts: count("attempts", row.attempts)?,
            converted: row.converted != 0,
            duplicate: row.duplicate.map(|d| d != 0),
            used_fallback: row.used_fallback != 0,
            redirects: count("redirects", row.redirects)?,
            duplicates_avoided: count("duplicates_avoided", row.duplicates_avoided)?,
            started_at: timestamp(row.started_at_ms)?,
            state_changed_at: timestamp(row.state_changed_at_ms)?,
            ended_at: row.ended_at_ms.map(timestamp).transpose()?,
            version: count("timeline_len", row.timeline_len)?,
            caller_state: parse_stored("calls.caller_state", row.caller_state.into())?,
            publisher_id: row.publisher_id.as_deref().map(parse_id).transpose()?,
            publisher_payout: (row.publisher_payout_cents)
                .map(|cents| Money::from_cents(cents).map_err(StoreError::Corrupt))
                .transpose()?,
            publisher_duplicate: row.publisher_duplicate.map(|d| d != 0),
        })
    }
}

/// An enum stored as its text.
fn text<T: serde::de::DeserializeOwned>(column: &str, value: String) -> Result<T, StoreError> {
    parse_stored(column, serde_json::Value::String(value))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// SQLite and PostgreSQL spell "each element of a JSON array" differently.
fn duplicate_buyers_query(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "SELECT j.value, COUNT(*) FROM calls c, json_each(c.duplicate_buyers) j
             WHERE c.duplicates_avoided > 0 AND c.started_at_ms >= $1 AND c.started_at_ms < $2
             GROUP BY j.value"
        }
        Backend::Postgres => {
            "SELECT j.value, COUNT(*)
             FROM calls c CROSS JOIN LATERAL json_array_elements_text(c.duplicate_buyers::json) AS j(value)
             WHERE c.duplicates_avoided > 0 AND c.started_at_ms >= $1 AND c.started_at_ms < $2
             GROUP BY j.value"
        }
    }
}

#[async_trait]
impl SupervisionStore for SqlStore {
    async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError> {
        const QUERY: (&str, &str) = in_json_list!(
            "SELECT c.call_sid, c.caller, c.called, c.company_id, c.entry_campaign_id, c.campaign_id,
                    c.buyer_id, c.state, c.outcome, c.drop_reason, c.attempts, c.converted, c.duplicate,
                    c.used_fallback, c.redirects, c.duplicates_avoided, c.started_at_ms,
                    c.state_changed_at_ms, c.ended_at_ms, c.timeline_len, c.caller_state,
                    c.publisher_id, c.publisher_payout_cents, c.publisher_duplicate
             FROM calls c
             WHERE ($1 = 0 OR c.state <> 'ended')
               AND ($2 IS NULL OR c.entry_campaign_id = $2 OR c.campaign_id = $2)
               AND ($3 IS NULL OR c.buyer_id = $3)
               AND ($4 IS NULL OR c.state = $4)
               AND ($5 IS NULL OR c.outcome = $5)
               AND ($6 IS NULL OR c.caller_number = $6)
               AND ($7 IS NULL OR c.started_at_ms >= $7) AND ($8 IS NULL OR c.started_at_ms < $8)
               AND ($9 IS NULL OR EXISTS (
                     SELECT 1 FROM calls k WHERE k.call_sid = $9
                        AND (c.started_at_ms < k.started_at_ms
                             OR (c.started_at_ms = k.started_at_ms AND c.call_sid < k.call_sid))))
               AND ($11 IS NULL OR c.publisher_id = $11)
               AND ($12 IS NULL OR " IN_LIST("c.company_id", "$12") ")
               AND ($13 IS NULL OR " IN_LIST("c.publisher_id", "$13") ")
               AND ($14 IS NULL OR " IN_LIST("c.buyer_id", "$14") ")
             ORDER BY c.started_at_ms DESC, c.call_sid DESC LIMIT $10"
        );
        let rows: Vec<SummaryRow> = sqlx::query_as(self.backend.pick(QUERY))
            .bind(i64::from(filter.live))
            .bind(filter.campaign_id.map(|id| id.to_string()))
            .bind(filter.buyer_id.map(|id| id.to_string()))
            .bind(filter.state.as_ref().map(enum_text).transpose()?)
            .bind(filter.outcome.as_ref().map(enum_text).transpose()?)
            .bind(filter.caller.as_ref().map(|n| n.as_str().to_owned()))
            .bind(filter.from.map(Timestamp::as_millisecond))
            .bind(filter.to.map(Timestamp::as_millisecond))
            .bind(filter.before.as_ref().map(|sid| sid.as_str().to_owned()))
            .bind(i64::from(filter.limit))
            .bind(filter.publisher_id.map(|id| id.to_string()))
            .bind(json_list(filter.within.companies.as_ref()))
            .bind(json_list(filter.within.publishers.as_ref()))
            .bind(json_list(filter.within.buyers.as_ref()))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(CallSummary::try_from).collect()
    }

    async fn campaign_stats(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CampaignStats>, StoreError> {
        let (from, to) = (from.as_millisecond(), to.as_millisecond());
        let mut tx = self.read_tx().await?;
        let result = async {
            type Totals = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64);
            let totals: Vec<Totals> = sqlx::query_as(
                "SELECT entry_campaign_id, COUNT(*),
                    CAST(SUM(CASE WHEN state <> 'ended' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM call_attempts a
                                              WHERE a.call_sid = calls.call_sid AND a.answered_at_ms IS NOT NULL)
                                  THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(converted) AS BIGINT),
                    CAST(SUM(duplicates_avoided) AS BIGINT),
                    CAST(SUM(used_fallback) AS BIGINT),
                    CAST(SUM(CASE WHEN redirects > 0 THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN outcome = 'abandoned' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS BIGINT)
                 FROM calls
                 WHERE entry_campaign_id IS NOT NULL AND started_at_ms >= $1 AND started_at_ms < $2
                 GROUP BY entry_campaign_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            let mut stats: HashMap<CampaignId, CampaignStats> = HashMap::new();
            for (id, calls, live, connected, converted, duplicates, fallback, redirected, abandoned, blocked) in
                totals
            {
                let id = parse_id(&id)?;
                let mut campaign = CampaignStats::new(id);
                campaign.calls = count(calls);
                campaign.live = count(live);
                campaign.connected = count(connected);
                campaign.converted = count(converted);
                campaign.duplicates_avoided = count(duplicates);
                campaign.fallback_used = count(fallback);
                campaign.redirected = count(redirected);
                campaign.abandoned = count(abandoned);
                campaign.blocked = count(blocked);
                stats.insert(id, campaign);
            }

            let drops: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT entry_campaign_id, drop_reason, COUNT(*) FROM calls
                 WHERE entry_campaign_id IS NOT NULL AND outcome = 'dropped' AND drop_reason IS NOT NULL
                   AND started_at_ms >= $1 AND started_at_ms < $2
                 GROUP BY entry_campaign_id, drop_reason",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            for (id, reason, n) in drops {
                let reason = text("calls.drop_reason", reason)?;
                if let Some(campaign) = stats.get_mut(&parse_id(&id)?) {
                    campaign.dropped.insert(reason, count(n));
                }
            }

            // The first answer of each call: a call connects once.
            let connects: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT c.entry_campaign_id, CAST(SUM(a.answered_at_ms - c.started_at_ms) AS BIGINT), COUNT(*)
                 FROM calls c JOIN call_attempts a ON a.call_sid = c.call_sid
                 WHERE c.entry_campaign_id IS NOT NULL AND c.started_at_ms >= $1 AND c.started_at_ms < $2
                   AND a.answered_at_ms IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM call_attempts e
                                   WHERE e.call_sid = a.call_sid AND e.answered_at_ms IS NOT NULL
                                     AND e.number < a.number)
                 GROUP BY c.entry_campaign_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            for (id, total, n) in connects {
                if let Some(campaign) = stats.get_mut(&parse_id(&id)?) {
                    campaign.average_time_to_connect_ms = mean_ms(total, n);
                }
            }

            let money_rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT c.entry_campaign_id, CAST(SUM(v.revenue_cents) AS BIGINT),
                        CAST(SUM(v.payout_cents) AS BIGINT)
                 FROM conversions v JOIN calls c ON c.call_sid = v.call_sid
                 WHERE c.entry_campaign_id IS NOT NULL AND c.started_at_ms >= $1 AND c.started_at_ms < $2
                 GROUP BY c.entry_campaign_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            for (id, revenue, payout) in money_rows {
                if let Some(campaign) = stats.get_mut(&parse_id(&id)?) {
                    campaign.revenue = Total::from_cents(revenue);
                    campaign.payout = Total::from_cents(payout);
                }
            }
            let mut stats: Vec<CampaignStats> = stats.into_values().collect();
            stats.sort_by_key(|s| s.campaign_id);
            Ok(stats)
        }
        .await;
        finish(tx, result).await
    }

    async fn campaign_series(
        &self,
        window: &Window,
        within: &Within,
    ) -> Result<Vec<BucketCounts>, StoreError> {
        // Integer division floors for the non-negative epoch milliseconds calls start at, on
        // both engines, so a bucket's start is computed where the rows are.
        type Row = (String, i64, i64, i64, i64, i64, i64);
        const QUERY: (&str, &str) = in_json_list!(
            "SELECT entry_campaign_id, (started_at_ms / $3) * $3, COUNT(*),
                CAST(SUM(CASE WHEN EXISTS (SELECT 1 FROM call_attempts a
                                          WHERE a.call_sid = calls.call_sid AND a.answered_at_ms IS NOT NULL)
                              THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(converted) AS BIGINT),
                CAST(SUM(duplicates_avoided) AS BIGINT),
                CAST(SUM(CASE WHEN outcome = 'dropped' THEN 1 ELSE 0 END) AS BIGINT)
             FROM calls
             WHERE entry_campaign_id IS NOT NULL AND started_at_ms >= $1 AND started_at_ms < $2
               AND ($4 IS NULL OR " IN_LIST("company_id", "$4") ")
               AND ($5 IS NULL OR " IN_LIST("publisher_id", "$5") ")
               AND ($6 IS NULL OR " IN_LIST("buyer_id", "$6") ")
             GROUP BY 1, 2"
        );
        let rows: Vec<Row> = sqlx::query_as(self.backend.pick(QUERY))
            .bind(window.from().as_millisecond())
            .bind(window.to().as_millisecond())
            .bind(window.bucket().millis())
            .bind(json_list(within.companies.as_ref()))
            .bind(json_list(within.publishers.as_ref()))
            .bind(json_list(within.buyers.as_ref()))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(id, start, calls, connected, converted, duplicates, dropped)| {
                Ok(BucketCounts {
                    campaign_id: parse_id(&id)?,
                    start: timestamp(start)?,
                    counts: Counts {
                        calls: count(calls),
                        connected: count(connected),
                        converted: count(converted),
                        duplicates_avoided: count(duplicates),
                        dropped: count(dropped),
                    },
                })
            })
            .collect()
    }

    async fn publisher_stats(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PublisherStats>, StoreError> {
        type Totals = (String, i64, i64, i64, i64, i64, i64, i64);
        let rows: Vec<Totals> = sqlx::query_as(
            "SELECT publisher_id, COUNT(*),
                CAST(SUM(CASE WHEN outcome = 'connected' THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(converted) AS BIGINT),
                CAST(SUM(CASE WHEN publisher_payout_cents > 0 THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(CASE WHEN publisher_duplicate = 1 THEN 1 ELSE 0 END) AS BIGINT),
                CAST(SUM(CASE WHEN publisher_payout_cents IS NULL THEN 1 ELSE 0 END) AS BIGINT),
                CAST(COALESCE(SUM(publisher_payout_cents), 0) AS BIGINT)
             FROM calls
             WHERE publisher_id IS NOT NULL AND started_at_ms >= $1 AND started_at_ms < $2
             GROUP BY publisher_id ORDER BY publisher_id",
        )
        .bind(from.as_millisecond())
        .bind(to.as_millisecond())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(id, calls, connected, converted, paid, duplicates, unsettled, payout)| {
                    Ok(PublisherStats {
                        publisher_id: parse_id(&id)?,
                        calls: count(calls),
                        connected: count(connected),
                        converted: count(converted),
                        paid: count(paid),
                        duplicates: count(duplicates),
                        unsettled: count(unsettled),
                        payout: Total::from_cents(payout),
                    })
                },
            )
            .collect()
    }

    async fn buyer_stats(&self, from: Timestamp, to: Timestamp) -> Result<Vec<BuyerStats>, StoreError> {
        let (from, to) = (from.as_millisecond(), to.as_millisecond());
        let mut tx = self.read_tx().await?;
        let result = async {
            type Totals = (String, i64, i64, i64, i64, i64, i64, i64);
            let totals: Vec<Totals> = sqlx::query_as(
                "SELECT a.buyer_id, COUNT(*),
                    CAST(SUM(CASE WHEN a.dial_status IS NULL AND c.state <> 'ended' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN a.answered_at_ms IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(a.converted) AS BIGINT),
                    CAST(SUM(CASE WHEN a.kind = 'fallback' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN a.answered_at_ms IS NOT NULL
                                  THEN a.answered_at_ms - a.started_at_ms ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN a.answered_at_ms IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT)
                 FROM call_attempts a JOIN calls c ON c.call_sid = a.call_sid
                 WHERE c.started_at_ms >= $1 AND c.started_at_ms < $2
                 GROUP BY a.buyer_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            let mut stats: HashMap<BuyerId, BuyerStats> = HashMap::new();
            for (id, dialed, live, connected, converted, fallback, answer_ms, answered) in totals {
                let id = parse_id(&id)?;
                let mut buyer = BuyerStats::new(id);
                buyer.dialed = count(dialed);
                buyer.live = count(live);
                buyer.connected = count(connected);
                buyer.converted = count(converted);
                buyer.as_fallback = count(fallback);
                buyer.average_time_to_answer_ms = mean_ms(answer_ms, answered);
                stats.insert(id, buyer);
            }

            let skipped: Vec<(String, i64)> = sqlx::query_as(duplicate_buyers_query(self.backend))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await?;
            for (id, n) in skipped {
                let id = parse_id(&id)?;
                stats.entry(id).or_insert_with(|| BuyerStats::new(id)).duplicates_avoided = count(n);
            }

            let money_rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT v.buyer_id, CAST(SUM(v.revenue_cents) AS BIGINT), CAST(SUM(v.payout_cents) AS BIGINT)
                 FROM conversions v JOIN calls c ON c.call_sid = v.call_sid
                 WHERE c.started_at_ms >= $1 AND c.started_at_ms < $2
                 GROUP BY v.buyer_id",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
            for (id, revenue, payout) in money_rows {
                if let Some(buyer) = stats.get_mut(&parse_id(&id)?) {
                    buyer.revenue = Total::from_cents(revenue);
                    buyer.payout = Total::from_cents(payout);
                }
            }
            let mut stats: Vec<BuyerStats> = stats.into_values().collect();
            stats.sort_by_key(|s| s.buyer_id);
            Ok(stats)
        }
        .await;
        finish(tx, result).await
    }
}
