//! RTB: campaigns' key digests, the reservations bids hold, and the ping log.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use uuid::Uuid;

use super::{Backend, SqlStore, cluster::publish, finish, parse_id, parse_stored, timestamp};
use crate::{
    domain::{
        call::CallSid,
        cluster::News,
        money::Money,
        phone::E164,
        rtb::{Held, LoggedPing, PingOutcome, PingRecord, Reservation, RtbWrite},
    },
    store::{PingFilter, RtbStore, StoreError},
};

#[derive(sqlx::FromRow)]
struct ReservationRow {
    uuid: String,
    campaign_id: String,
    caller_number: Option<String>,
    buyer_id: String,
    publisher_id: Option<String>,
    payout_cents: i64,
    seconds: i64,
    inbound_number: String,
    reserved_at_ms: i64,
    expires_at_ms: i64,
    claimed_at_ms: Option<i64>,
    /// The call that claimed it.
    call_sid: Option<String>,
}

impl TryFrom<ReservationRow> for Reservation {
    type Error = StoreError;

    fn try_from(row: ReservationRow) -> Result<Self, Self::Error> {
        Ok(Self {
            uuid: uuid(&row.uuid)?,
            campaign_id: parse_id(&row.campaign_id)?,
            caller: row.caller_number.as_deref().map(number).transpose()?,
            buyer_id: parse_id(&row.buyer_id)?,
            publisher_id: row.publisher_id.as_deref().map(parse_id).transpose()?,
            payout: Money::from_cents(row.payout_cents).map_err(StoreError::Corrupt)?,
            seconds: u32::try_from(row.seconds)
                .map_err(|_| StoreError::Corrupt(format!("seconds {}", row.seconds)))?,
            inbound_number: number(&row.inbound_number)?,
            reserved_at: timestamp(row.reserved_at_ms)?,
            expires_at: timestamp(row.expires_at_ms)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct PingRow {
    id: String,
    received_at_ms: i64,
    campaign_id: String,
    publisher_id: Option<String>,
    caller_number: Option<String>,
    request: String,
    outcome: String,
    cached: i64,
    reason: Option<String>,
    reservation: Option<String>,
    answer: String,
    buyer_id: Option<String>,
    expires_at_ms: Option<i64>,
    claimed_at_ms: Option<i64>,
    call_sid: Option<String>,
}

impl TryFrom<PingRow> for LoggedPing {
    type Error = StoreError;

    fn try_from(row: PingRow) -> Result<Self, Self::Error> {
        let json = |column: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| StoreError::Corrupt(format!("rtb_pings.{column}: {e}")))
        };
        let reservation = row.reservation.as_deref().map(uuid).transpose()?;
        let held = match (reservation, row.buyer_id, row.expires_at_ms) {
            (Some(uuid), Some(buyer), Some(expires_at)) => Some(Held {
                uuid,
                buyer_id: parse_id(&buyer)?,
                expires_at: timestamp(expires_at)?,
                claimed_at: row.claimed_at_ms.map(timestamp).transpose()?,
                call_sid: (row.call_sid.as_deref())
                    .map(CallSid::parse)
                    .transpose()
                    .map_err(StoreError::Corrupt)?,
            }),
            _ => None,
        };
        Ok(Self {
            ping: PingRecord {
                id: uuid(&row.id)?,
                received_at: timestamp(row.received_at_ms)?,
                campaign_id: parse_id(&row.campaign_id)?,
                publisher_id: row.publisher_id.as_deref().map(parse_id).transpose()?,
                caller_number: row.caller_number.as_deref().map(number).transpose()?,
                request: parse_stored::<BTreeMap<String, String>>("request", json("request", &row.request)?)?,
                outcome: PingOutcome::parse(&row.outcome)
                    .ok_or_else(|| StoreError::Corrupt(format!("rtb_pings.outcome: {}", row.outcome)))?,
                cached: row.cached != 0,
                reason: row.reason,
                reservation,
                answer: json("answer", &row.answer)?,
            },
            held,
        })
    }
}

fn uuid(text: &str) -> Result<Uuid, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{text}` is not a UUID")))
}

fn number(text: &str) -> Result<E164, StoreError> {
    E164::from_provider(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl RtbStore for SqlStore {
    async fn save_rtb(&self, writes: &[RtbWrite]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            for write in writes {
                match write {
                    RtbWrite::Ping(ping) => insert_ping(&mut tx, ping).await?,
                    RtbWrite::Reserved(reservation) => insert_reservation(&mut tx, reservation).await?,
                    RtbWrite::Claimed {
                        reservation,
                        call_sid,
                        at,
                    } => {
                        sqlx::query(
                            "UPDATE rtb_reservations SET claimed_at_ms = $2, call_sid = $3
                             WHERE uuid = $1 AND claimed_at_ms IS NULL",
                        )
                        .bind(reservation.uuid.to_string())
                        .bind(at.as_millisecond())
                        .bind(call_sid.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            if self.backend == Backend::Postgres {
                // Other nodes' books learn of it: a call landing there honours it.
                let news = writes.iter().filter_map(|write| match write {
                    RtbWrite::Ping(_) => None,
                    RtbWrite::Reserved(held) => Some(News::Reserved((**held).clone())),
                    RtbWrite::Claimed {
                        reservation,
                        call_sid,
                        ..
                    } => Some(News::Claimed {
                        reservation: (**reservation).clone(),
                        call: call_sid.clone(),
                    }),
                });
                publish(&mut tx, &self.newsroom, news).await?;
            }
            Ok(())
        }
        .await;
        self.noted("the RTB log", finish(tx, result).await)
    }

    async fn held_reservations(
        &self,
        at: Timestamp,
    ) -> Result<Vec<(Reservation, Option<CallSid>)>, StoreError> {
        let rows: Vec<ReservationRow> = sqlx::query_as(
            "SELECT uuid, campaign_id, caller_number, buyer_id, publisher_id, payout_cents, seconds,
                    inbound_number, reserved_at_ms, expires_at_ms, claimed_at_ms, call_sid
             FROM rtb_reservations
             WHERE expires_at_ms > $1 AND caller_number IS NOT NULL",
        )
        .bind(at.as_millisecond())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let claimed = (row.claimed_at_ms.is_some())
                    .then(|| row.call_sid.as_deref().map(CallSid::parse))
                    .flatten()
                    .transpose()
                    .map_err(StoreError::Corrupt)?;
                Ok((Reservation::try_from(row)?, claimed))
            })
            .collect()
    }

    async fn rtb_pings(&self, filter: &PingFilter) -> Result<Vec<LoggedPing>, StoreError> {
        // A ping's status is judged here as `PingStatus::of` judges it, so that it can filter.
        let rows: Vec<PingRow> = sqlx::query_as(
            "SELECT p.id, p.received_at_ms, p.campaign_id, p.publisher_id, p.caller_number, p.request,
                    p.outcome, p.cached, p.reason, p.reservation, p.answer,
                    r.buyer_id, r.expires_at_ms, r.claimed_at_ms, r.call_sid
             FROM rtb_pings p LEFT JOIN rtb_reservations r ON r.uuid = p.reservation
             WHERE ($1 IS NULL OR p.campaign_id = $1) AND ($2 IS NULL OR p.publisher_id = $2)
               AND ($3 IS NULL OR p.caller_number = $3)
               AND ($4 IS NULL OR p.received_at_ms >= $4) AND ($5 IS NULL OR p.received_at_ms < $5)
               AND ($6 IS NULL OR p.id < $6)
               AND ($7 IS NULL OR $7 = CASE
                     WHEN p.outcome <> 'reserved' THEN p.outcome
                     WHEN r.claimed_at_ms IS NOT NULL THEN 'claimed'
                     WHEN r.expires_at_ms > $8 THEN 'reserved'
                     ELSE 'expired' END)
             ORDER BY p.id DESC LIMIT $9",
        )
        .bind(filter.campaign_id.map(|id| id.to_string()))
        .bind(filter.publisher_id.map(|id| id.to_string()))
        .bind(filter.caller.as_ref().map(|n| n.as_str().to_owned()))
        .bind(filter.from.map(Timestamp::as_millisecond))
        .bind(filter.to.map(Timestamp::as_millisecond))
        .bind(filter.before.map(|id| id.to_string()))
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .bind(filter.at.as_millisecond())
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(LoggedPing::try_from).collect()
    }
}

async fn insert_ping(conn: &mut sqlx::AnyConnection, ping: &PingRecord) -> Result<(), StoreError> {
    let request = serde_json::to_string(&ping.request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO rtb_pings (id, received_at_ms, campaign_id, publisher_id, caller_number, request,
            outcome, cached, reason, reservation, answer)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ping.id.to_string())
    .bind(ping.received_at.as_millisecond())
    .bind(ping.campaign_id.to_string())
    .bind(ping.publisher_id.map(|id| id.to_string()))
    .bind(ping.caller_number.as_ref().map(|n| n.as_str().to_owned()))
    .bind(request)
    .bind(ping.outcome.as_str())
    .bind(i64::from(ping.cached))
    .bind(ping.reason.clone())
    .bind(ping.reservation.map(|id| id.to_string()))
    .bind(ping.answer.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_reservation(conn: &mut sqlx::AnyConnection, held: &Reservation) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rtb_reservations (uuid, campaign_id, caller_number, buyer_id, payout_cents, seconds,
            inbound_number, reserved_at_ms, expires_at_ms, publisher_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(held.uuid.to_string())
    .bind(held.campaign_id.to_string())
    .bind(held.caller.as_ref().map(|n| n.as_str().to_owned()))
    .bind(held.buyer_id.to_string())
    .bind(held.payout.cents())
    .bind(i64::from(held.seconds))
    .bind(held.inbound_number.as_str())
    .bind(held.reserved_at.as_millisecond())
    .bind(held.expires_at.as_millisecond())
    .bind(held.publisher_id.map(|id| id.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
