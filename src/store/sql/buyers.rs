use async_trait::async_trait;
use sqlx::AnyConnection;

use super::{Query, SqlEntity, enum_text, parse_id, parse_stored, postbacks, sealing::Sealer, timestamp};
use crate::{
    domain::{
        destination::Destination,
        money::Money,
        plan::{Buyer, BuyerId, Caps, Record},
        postback::PostbackOwner,
        values::CapLimit,
    },
    store::StoreError,
};

#[derive(sqlx::FromRow)]
struct BuyerRow {
    id: String,
    company_id: String,
    name: String,
    destination: String,
    ring_timeout_seconds: i64,
    conversion_seconds: i64,
    conversion_rule: String,
    conversion_report_window_seconds: i64,
    return_window_seconds: i64,
    dedupe_seconds: i64,
    duplicate_after: String,
    dedupe_group: Option<String>,
    payout_cents: i64,
    revenue_cents: i64,
    cap_concurrency: Option<i64>,
    cap_hourly: Option<i64>,
    cap_daily: Option<i64>,
    cap_monthly: Option<i64>,
    cap_lifetime: Option<i64>,
    caps_counted_on: String,
    time_zone: String,
    business_hours: Option<String>,
    send_digits: Option<String>,
    paused: i64,
    caller_id: String,
    whisper: Option<String>,
    screen_mode: String,
    record: Option<String>,
    states: Option<String>,
    area_codes: Option<String>,
    postbacks: String,
    sip_auth: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn money(column: &str, cents: i64) -> Result<Money, StoreError> {
    Money::from_cents(cents).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A setting kept as JSON, read back through the parser that accepted it.
fn from_json<T: serde::de::DeserializeOwned>(
    column: &str,
    json: Option<String>,
) -> Result<Option<T>, StoreError> {
    json.map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn to_json<T: serde::Serialize>(column: &str, value: Option<&T>) -> Result<Option<String>, StoreError> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn cap(column: &str, value: Option<i64>) -> Result<Option<CapLimit>, StoreError> {
    value.map(|v| parse_stored(column, v.into())).transpose()
}

impl TryFrom<BuyerRow> for Record<Buyer> {
    type Error = StoreError;

    fn try_from(row: BuyerRow) -> Result<Self, Self::Error> {
        let business_hours = from_json("business_hours", row.business_hours)?;
        Ok(Record {
            id: parse_id(&row.id)?,
            company_id: Some(parse_id(&row.company_id)?),
            spec: Buyer {
                name: parse_stored("name", row.name.into())?,
                destination: Destination::from_stored(&row.destination)
                    .map_err(|e| StoreError::Corrupt(format!("destination: {e}")))?,
                ring_timeout_seconds: parse_stored("ring_timeout_seconds", row.ring_timeout_seconds.into())?,
                conversion_seconds: parse_stored("conversion_seconds", row.conversion_seconds.into())?,
                conversion_rule: parse_stored("conversion_rule", row.conversion_rule.into())?,
                conversion_report_window_seconds: parse_stored(
                    "conversion_report_window_seconds",
                    row.conversion_report_window_seconds.into(),
                )?,
                return_window_seconds: parse_stored(
                    "return_window_seconds",
                    row.return_window_seconds.into(),
                )?,
                dedupe_seconds: parse_stored("dedupe_seconds", row.dedupe_seconds.into())?,
                duplicate_after: parse_stored("duplicate_after", row.duplicate_after.into())?,
                dedupe_group: parse_stored("dedupe_group", row.dedupe_group.into())?,
                payout: money("payout_cents", row.payout_cents)?,
                revenue: money("revenue_cents", row.revenue_cents)?,
                caps: Caps {
                    concurrency: cap("cap_concurrency", row.cap_concurrency)?,
                    hourly: cap("cap_hourly", row.cap_hourly)?,
                    daily: cap("cap_daily", row.cap_daily)?,
                    monthly: cap("cap_monthly", row.cap_monthly)?,
                    lifetime: cap("cap_lifetime", row.cap_lifetime)?,
                    counted_on: parse_stored("caps_counted_on", row.caps_counted_on.into())?,
                },
                time_zone: parse_stored("time_zone", row.time_zone.into())?,
                business_hours,
                send_digits: parse_stored("send_digits", row.send_digits.into())?,
                paused: row.paused != 0,
                caller_id: parse_stored("caller_id", row.caller_id.into())?,
                whisper: from_json("whisper", row.whisper)?,
                screen: parse_stored("screen_mode", row.screen_mode.into())?,
                record: parse_stored("record", row.record.into())?,
                states: from_json("states", row.states)?,
                area_codes: from_json("area_codes", row.area_codes)?.unwrap_or_default(),
                postbacks: from_json("postbacks", Some(row.postbacks))?.unwrap_or_default(),
                sip_auth: from_json("sip_auth", row.sip_auth)?,
            },
            created_at: timestamp(row.created_at_ms)?,
            updated_at: timestamp(row.updated_at_ms)?,
        })
    }
}

#[async_trait]
impl SqlEntity for Buyer {
    const DELETE: &'static str = "DELETE FROM buyers WHERE id = $1";

    async fn fetch(
        conn: &mut AnyConnection,
        seal: &Sealer,
        query: &Query<'_, Self>,
    ) -> Result<Vec<Record<Self>>, StoreError> {
        let rows: Vec<BuyerRow> = query
            .bind(
                "SELECT id, company_id, name, destination, ring_timeout_seconds, conversion_seconds,
                    conversion_rule, conversion_report_window_seconds, return_window_seconds, dedupe_seconds, duplicate_after, dedupe_group, payout_cents, revenue_cents,
                    cap_concurrency, cap_hourly, cap_daily, cap_monthly, cap_lifetime, caps_counted_on,
                    time_zone, business_hours, send_digits, paused, caller_id, whisper, screen_mode,
                    record, states, area_codes, postbacks, sip_auth, created_at_ms, updated_at_ms
             FROM buyers
             WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR company_id = $2)
               AND ($3 IS NULL OR name = $3) AND ($4 IS NULL OR id > $4)
             ORDER BY id LIMIT $5",
            )
            .fetch_all(&mut *conn)
            .await?;
        (rows.into_iter())
            .map(|mut row| {
                row.postbacks = seal.open_fields_in(&row.postbacks, "secret", "a postback secret")?;
                row.sip_auth = (row.sip_auth)
                    .map(|json| seal.open_fields_in(&json, "password", "a SIP password"))
                    .transpose()?;
                Record::try_from(row)
            })
            .collect()
    }

    async fn write(conn: &mut AnyConnection, seal: &Sealer, record: &Record<Self>) -> Result<(), StoreError> {
        let buyer = &record.spec;
        let caps = &buyer.caps;
        let business_hours = to_json("business_hours", buyer.business_hours.as_ref())?;
        let area_codes = (!buyer.area_codes.is_empty()).then_some(&buyer.area_codes);
        // Secrets are stored encrypted (see `sealing`).
        let postbacks = to_json("postbacks", Some(&buyer.postbacks))?.unwrap_or_default();
        let sip_auth = to_json("sip_auth", buyer.sip_auth.as_ref())?;
        sqlx::query(
            "INSERT INTO buyers (id, company_id, name, destination, ring_timeout_seconds,
                conversion_seconds, dedupe_seconds, duplicate_after, dedupe_group, payout_cents,
                revenue_cents, cap_concurrency, cap_hourly, cap_daily, cap_monthly, cap_lifetime,
                caps_counted_on, time_zone, business_hours, send_digits, paused, caller_id, whisper,
                screen_mode, record, states, area_codes, postbacks, sip_auth, created_at_ms, updated_at_ms,
                conversion_rule, conversion_report_window_seconds, return_window_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, destination = excluded.destination,
                ring_timeout_seconds = excluded.ring_timeout_seconds,
                conversion_seconds = excluded.conversion_seconds,
                dedupe_seconds = excluded.dedupe_seconds, duplicate_after = excluded.duplicate_after,
                dedupe_group = excluded.dedupe_group, payout_cents = excluded.payout_cents,
                revenue_cents = excluded.revenue_cents, cap_concurrency = excluded.cap_concurrency,
                cap_hourly = excluded.cap_hourly, cap_daily = excluded.cap_daily,
                cap_monthly = excluded.cap_monthly, cap_lifetime = excluded.cap_lifetime,
                caps_counted_on = excluded.caps_counted_on, time_zone = excluded.time_zone,
                business_hours = excluded.business_hours,
                send_digits = excluded.send_digits, paused = excluded.paused,
                caller_id = excluded.caller_id, whisper = excluded.whisper, screen_mode = excluded.screen_mode,
                record = excluded.record, states = excluded.states, area_codes = excluded.area_codes,
                postbacks = excluded.postbacks, sip_auth = excluded.sip_auth, updated_at_ms = excluded.updated_at_ms,
                conversion_rule = excluded.conversion_rule,
                conversion_report_window_seconds = excluded.conversion_report_window_seconds,
                return_window_seconds = excluded.return_window_seconds",
        )
        .bind(record.id.to_string())
        .bind(record.company_id.map(|id| id.to_string()))
        .bind(buyer.name.as_str())
        .bind(buyer.destination.to_string())
        .bind(i64::from(buyer.ring_timeout_seconds.get()))
        .bind(i64::from(buyer.conversion_seconds.get()))
        .bind(i64::from(buyer.dedupe_seconds.get()))
        .bind(enum_text(&buyer.duplicate_after)?)
        .bind(buyer.dedupe_group.as_ref().map(|g| g.as_str().to_owned()))
        .bind(buyer.payout.cents())
        .bind(buyer.revenue.cents())
        .bind(caps.concurrency.map(|cap| i64::from(cap.get())))
        .bind(caps.hourly.map(|cap| i64::from(cap.get())))
        .bind(caps.daily.map(|cap| i64::from(cap.get())))
        .bind(caps.monthly.map(|cap| i64::from(cap.get())))
        .bind(caps.lifetime.map(|cap| i64::from(cap.get())))
        .bind(enum_text(&caps.counted_on)?)
        .bind(buyer.time_zone.as_str())
        .bind(business_hours)
        .bind(buyer.send_digits.as_ref().map(|d| d.as_str().to_owned()))
        .bind(i64::from(buyer.paused))
        .bind(buyer.caller_id.to_string())
        .bind(to_json("whisper", buyer.whisper.as_ref())?)
        .bind(enum_text(&buyer.screen)?)
        .bind(buyer.record.as_ref().map(enum_text).transpose()?)
        .bind(to_json("states", buyer.states.as_ref())?)
        .bind(to_json("area_codes", area_codes)?)
        .bind(seal.seal_fields_in(&postbacks, "secret")?)
        .bind(sip_auth.map(|json| seal.seal_fields_in(&json, "password")).transpose()?)
        .bind(record.created_at.as_millisecond())
        .bind(record.updated_at.as_millisecond())
        .bind(enum_text(&buyer.conversion_rule)?)
        .bind(i64::from(buyer.conversion_report_window_seconds.get()))
        .bind(i64::from(buyer.return_window_seconds.get()))
        .execute(&mut *conn)
        .await?;
        postbacks::cancel_unwanted(conn, PostbackOwner::Buyer(record.id), &buyer.postbacks).await
    }

    async fn removed(conn: &mut AnyConnection, id: BuyerId) -> Result<(), StoreError> {
        postbacks::cancel_all(conn, PostbackOwner::Buyer(id)).await
    }

    async fn check_unreferenced(conn: &mut AnyConnection, id: BuyerId) -> Result<(), StoreError> {
        let users: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM campaigns
             WHERE fallback_buyer_id = $1
                OR id IN (SELECT campaign_id FROM campaign_buyers WHERE buyer_id = $1)
             ORDER BY name",
        )
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        if users.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = users.into_iter().map(|(name,)| format!("{name:?}")).collect();
        Err(StoreError::conflict(
            None,
            format!(
                "the buyer is still used by campaign(s) {}: remove it there first",
                names.join(", ")
            ),
        ))
    }
}
