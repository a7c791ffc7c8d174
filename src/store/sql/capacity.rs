//! What buyers' caps count: rebuilt from the calls at start-up, plus operators' resets.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{Backend, SqlStore, finish, from_json, parse_id, parse_stored, timestamp};
use crate::{
    domain::{
        call::CallSid,
        capacity::{CapPeriod, Leg, LoadHistory, OpenLeg},
        plan::{Buyer, BuyerId, CapCounting},
    },
    store::{CapacityStore, StoreError},
};

/// Calls connected or converted since `$1`: a row per buyer and kind, its times (in order) as
/// one JSON array. Within 32 days there may be millions, and through `sqlx` a row costs
/// microseconds.
static RECENT: [&str; 2] = [
    "SELECT buyer_id, 'connected', json_group_array(answered_at_ms ORDER BY answered_at_ms)
     FROM call_attempts WHERE answered_at_ms IS NOT NULL AND answered_at_ms >= $1 GROUP BY buyer_id
     UNION ALL
     SELECT buyer_id, 'converted', json_group_array(converted_at_ms ORDER BY converted_at_ms)
     FROM conversions WHERE converted_at_ms >= $1 GROUP BY buyer_id",
    "SELECT buyer_id, 'connected', CAST(json_agg(answered_at_ms ORDER BY answered_at_ms) AS TEXT)
     FROM call_attempts WHERE answered_at_ms IS NOT NULL AND answered_at_ms >= $1 GROUP BY buyer_id
     UNION ALL
     SELECT buyer_id, 'converted', CAST(json_agg(converted_at_ms ORDER BY converted_at_ms) AS TEXT)
     FROM conversions WHERE converted_at_ms >= $1 GROUP BY buyer_id",
];

#[async_trait]
impl CapacityStore for SqlStore {
    async fn load_history(
        &self,
        ringing_since: Timestamp,
        talking_since: Timestamp,
        counted_since: Timestamp,
    ) -> Result<LoadHistory, StoreError> {
        // One snapshot, so a call answered meanwhile is not counted twice or missed.
        let mut tx = self.read_tx().await?;
        let result = async {
            let open: Vec<(String, String, i64, i64, Option<i64>)> = sqlx::query_as(
                "SELECT a.buyer_id, a.call_sid, a.number, a.started_at_ms, a.answered_at_ms
                 FROM call_attempts a JOIN calls c ON c.call_sid = a.call_sid
                 WHERE a.dial_status IS NULL AND a.ended_at_ms IS NULL AND c.state <> 'ended'
                   AND ((a.answered_at_ms IS NULL AND a.started_at_ms >= $1)
                        OR a.answered_at_ms >= $2)",
            )
            .bind(ringing_since.as_millisecond())
            .bind(talking_since.as_millisecond())
            .fetch_all(&mut *tx)
            .await?;
            let recent: Vec<(String, String, Option<String>)> = sqlx::query_as(match self.backend {
                Backend::Sqlite => RECENT[0],
                Backend::Postgres => RECENT[1],
            })
            .bind(counted_since.as_millisecond())
            .fetch_all(&mut *tx)
            .await?;
            let lifetime: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT a.buyer_id, 'connected', COUNT(*) FROM call_attempts a
                 LEFT JOIN cap_resets r ON r.buyer_id = a.buyer_id AND r.cap = 'lifetime'
                 WHERE a.answered_at_ms IS NOT NULL AND a.answered_at_ms > COALESCE(r.reset_at_ms, -1)
                 GROUP BY a.buyer_id
                 UNION ALL
                 SELECT v.buyer_id, 'converted', COUNT(*) FROM conversions v
                 LEFT JOIN cap_resets r ON r.buyer_id = v.buyer_id AND r.cap = 'lifetime'
                 WHERE v.converted_at_ms > COALESCE(r.reset_at_ms, -1)
                 GROUP BY v.buyer_id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let resets: Vec<(String, String, i64)> =
                sqlx::query_as("SELECT buyer_id, cap, reset_at_ms FROM cap_resets")
                    .fetch_all(&mut *tx)
                    .await?;

            let counting = |text: String| parse_stored::<CapCounting>("counted_on", text.into());
            Ok(LoadHistory {
                open_legs: open
                    .into_iter()
                    .map(|(buyer, sid, attempt, dialed, answered)| {
                        let leg = Leg {
                            call: CallSid::parse(&sid).map_err(StoreError::Corrupt)?,
                            attempt: u32::try_from(attempt)
                                .map_err(|_| StoreError::Corrupt(format!("attempt {attempt}")))?,
                        };
                        Ok(OpenLeg {
                            buyer: parse_id::<Buyer>(&buyer)?,
                            leg,
                            dialed_at: timestamp(dialed)?,
                            answered_at: answered.map(timestamp).transpose()?,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                recent: {
                    let mut all = Vec::new();
                    for (buyer, kind, times) in recent {
                        let (buyer, counting) = (parse_id(&buyer)?, counting(kind)?);
                        let column = match counting {
                            CapCounting::Connected => "call_attempts.answered_at_ms",
                            CapCounting::Converted => "conversions.converted_at_ms",
                        };
                        let times: Vec<i64> = from_json(column, times.as_deref().unwrap_or("[]"))?;
                        for at in times {
                            all.push((buyer, counting, timestamp(at)?));
                        }
                    }
                    all
                },
                lifetime: lifetime
                    .into_iter()
                    .map(|(buyer, kind, n)| Ok((parse_id(&buyer)?, counting(kind)?, n.unsigned_abs())))
                    .collect::<Result<_, StoreError>>()?,
                resets: resets
                    .into_iter()
                    .map(|(buyer, cap, at)| {
                        let period = CapPeriod::parse(&cap)
                            .ok_or_else(|| StoreError::Corrupt(format!("cap_resets.cap: {cap}")))?;
                        Ok((parse_id(&buyer)?, period, timestamp(at)?))
                    })
                    .collect::<Result<_, StoreError>>()?,
            })
        }
        .await;
        finish(tx, result).await
    }

    async fn reset_cap(&self, buyer: BuyerId, period: CapPeriod, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cap_resets (buyer_id, cap, reset_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (buyer_id, cap) DO UPDATE SET reset_at_ms = excluded.reset_at_ms",
        )
        .bind(buyer.to_string())
        .bind(period.as_str())
        .bind(at.as_millisecond())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
