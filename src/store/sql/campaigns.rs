use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::AnyConnection;

use super::{Query, SqlEntity, enum_text, parse_id, parse_stored, sealing::Sealer, timestamp};
use crate::{
    domain::{
        ids::Id,
        phone::E164,
        plan::{BuyerId, Campaign, CampaignBuyer, CampaignId, CompanyId, Record, TrackingNumbers},
    },
    store::StoreError,
};

/// The campaigns a [`Query`] selects, shared by the three reads that assemble them.
macro_rules! selected_campaigns {
    () => {
        "SELECT id FROM campaigns
         WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR company_id = $2)
           AND ($3 IS NULL OR name = $3) AND ($4 IS NULL OR id > $4)
         ORDER BY id LIMIT $5"
    };
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: String,
    company_id: String,
    name: String,
    duplicate_caller_handling: String,
    fallback_buyer_id: Option<String>,
    redirect_campaign_id: Option<String>,
    rtb_reservation_seconds: i64,
    rtb_caller_number_optional: i64,
    answer_on_bridge: i64,
    record: String,
    whisper: Option<String>,
    publisher_payout: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct NumberRow {
    campaign_id: String,
    number: String,
}

#[derive(sqlx::FromRow)]
struct BuyerLinkRow {
    campaign_id: String,
    buyer_id: String,
    priority: i64,
    weight: i64,
}

#[async_trait]
impl SqlEntity for Campaign {
    // Numbers and buyer links go with it (ON DELETE CASCADE).
    const DELETE: &'static str = "DELETE FROM campaigns WHERE id = $1";

    async fn fetch(
        conn: &mut AnyConnection,
        _seal: &Sealer,
        query: &Query<'_, Self>,
    ) -> Result<Vec<Record<Self>>, StoreError> {
        let campaigns: Vec<CampaignRow> = query
            .bind(concat!(
                "SELECT id, company_id, name, duplicate_caller_handling, fallback_buyer_id,
                    redirect_campaign_id, rtb_reservation_seconds, rtb_caller_number_optional,
                    answer_on_bridge, record, whisper, publisher_payout, created_at_ms, updated_at_ms
             FROM campaigns WHERE id IN (",
                selected_campaigns!(),
                ") ORDER BY id"
            ))
            .fetch_all(&mut *conn)
            .await?;
        if campaigns.is_empty() {
            return Ok(Vec::new());
        }
        let numbers: Vec<NumberRow> = query
            .bind(concat!(
                "SELECT campaign_id, number FROM campaign_numbers WHERE campaign_id IN (",
                selected_campaigns!(),
                ") ORDER BY campaign_id, position"
            ))
            .fetch_all(&mut *conn)
            .await?;
        let links: Vec<BuyerLinkRow> = query
            .bind(concat!(
                "SELECT campaign_id, buyer_id, priority, weight FROM campaign_buyers WHERE campaign_id IN (",
                selected_campaigns!(),
                ") ORDER BY campaign_id, position"
            ))
            .fetch_all(&mut *conn)
            .await?;

        let mut numbers_of: HashMap<String, Vec<String>> = HashMap::new();
        for row in numbers {
            numbers_of.entry(row.campaign_id).or_default().push(row.number);
        }
        let mut buyers_of: HashMap<String, Vec<CampaignBuyer>> = HashMap::new();
        for row in links {
            let link = CampaignBuyer {
                buyer_id: parse_id(&row.buyer_id)?,
                priority: parse_stored("priority", row.priority.into())?,
                weight: parse_stored("weight", row.weight.into())?,
            };
            buyers_of.entry(row.campaign_id).or_default().push(link);
        }
        campaigns
            .into_iter()
            .map(|row| {
                let numbers = numbers_of.remove(&row.id).unwrap_or_default();
                let buyers = buyers_of.remove(&row.id).unwrap_or_default();
                Ok(Record {
                    id: parse_id(&row.id)?,
                    company_id: Some(parse_id(&row.company_id)?),
                    spec: Campaign {
                        name: parse_stored("name", row.name.into())?,
                        numbers: stored_numbers(numbers)?,
                        duplicate_caller_handling: parse_stored(
                            "duplicate_caller_handling",
                            row.duplicate_caller_handling.into(),
                        )?,
                        buyers: buyers
                            .try_into()
                            .map_err(|e: String| StoreError::Corrupt(format!("campaign_buyers: {e}")))?,
                        fallback_buyer_id: row.fallback_buyer_id.as_deref().map(parse_id).transpose()?,
                        redirect_campaign_id: row
                            .redirect_campaign_id
                            .as_deref()
                            .map(parse_id)
                            .transpose()?,
                        rtb_reservation_seconds: parse_stored(
                            "rtb_reservation_seconds",
                            row.rtb_reservation_seconds.into(),
                        )?,
                        rtb_caller_number_optional: row.rtb_caller_number_optional != 0,
                        answer_on_bridge: row.answer_on_bridge != 0,
                        record: parse_stored("record", row.record.into())?,
                        whisper: (row.whisper.as_deref())
                            .map(serde_json::from_str)
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(format!("whisper: {e}")))?,
                        publisher_payout: (row.publisher_payout.as_deref())
                            .map(serde_json::from_str)
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(format!("publisher_payout: {e}")))?,
                    },
                    created_at: timestamp(row.created_at_ms)?,
                    updated_at: timestamp(row.updated_at_ms)?,
                })
            })
            .collect()
    }

    async fn check(conn: &mut AnyConnection, record: &Record<Self>) -> Result<(), StoreError> {
        let campaign = &record.spec;
        let company = record.company_id;
        for number in campaign.numbers.as_slice() {
            let holder: Option<(String,)> = sqlx::query_as(
                "SELECT c.name FROM campaign_numbers n JOIN campaigns c ON c.id = n.campaign_id
                 WHERE n.number = $1 AND n.campaign_id <> $2",
            )
            .bind(number.as_str())
            .bind(record.id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((name,)) = holder {
                return Err(StoreError::conflict(
                    Some("numbers"),
                    format!("{number} is already a tracking number of campaign {name:?}"),
                ));
            }
        }
        for (i, link) in campaign.buyers.as_slice().iter().enumerate() {
            check_buyer(conn, link.buyer_id, company, &format!("buyers[{i}].buyer_id")).await?;
        }
        if let Some(fallback) = campaign.fallback_buyer_id {
            check_buyer(conn, fallback, company, "fallback_buyer_id").await?;
        }
        if let Some(redirect) = campaign.redirect_campaign_id {
            let field = "redirect_campaign_id";
            if redirect == record.id {
                return Err(StoreError::invalid_reference(
                    field,
                    "a campaign cannot redirect to itself",
                ));
            }
            if owner_of(conn, "SELECT company_id FROM campaigns WHERE id = $1", redirect).await? != company {
                return Err(StoreError::invalid_reference(
                    field,
                    format!("no campaign {redirect} in this campaign's company"),
                ));
            }
        }
        Ok(())
    }

    async fn write(
        conn: &mut AnyConnection,
        _seal: &Sealer,
        record: &Record<Self>,
    ) -> Result<(), StoreError> {
        let campaign = &record.spec;
        let id = record.id.to_string();
        sqlx::query(
            "INSERT INTO campaigns (id, company_id, name, duplicate_caller_handling, fallback_buyer_id,
                redirect_campaign_id, rtb_reservation_seconds, rtb_caller_number_optional,
                answer_on_bridge, record, whisper, publisher_payout, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, duplicate_caller_handling = excluded.duplicate_caller_handling,
                fallback_buyer_id = excluded.fallback_buyer_id,
                redirect_campaign_id = excluded.redirect_campaign_id,
                rtb_reservation_seconds = excluded.rtb_reservation_seconds,
                rtb_caller_number_optional = excluded.rtb_caller_number_optional,
                answer_on_bridge = excluded.answer_on_bridge, record = excluded.record,
                whisper = excluded.whisper, publisher_payout = excluded.publisher_payout,
                updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&id)
        .bind(record.company_id.map(|id| id.to_string()))
        .bind(campaign.name.as_str())
        .bind(enum_text(&campaign.duplicate_caller_handling)?)
        .bind(campaign.fallback_buyer_id.map(|id| id.to_string()))
        .bind(campaign.redirect_campaign_id.map(|id| id.to_string()))
        .bind(i64::from(campaign.rtb_reservation_seconds.get()))
        .bind(i64::from(campaign.rtb_caller_number_optional))
        .bind(i64::from(campaign.answer_on_bridge))
        .bind(enum_text(&campaign.record)?)
        .bind(
            (campaign.whisper.as_ref())
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("whisper: {e}")))?,
        )
        .bind(
            (campaign.publisher_payout.as_ref())
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("publisher_payout: {e}")))?,
        )
        .bind(record.created_at.as_millisecond())
        .bind(record.updated_at.as_millisecond())
        .execute(&mut *conn)
        .await?;

        // The lists are small and replaced whole; order is kept in `position`.
        sqlx::query("DELETE FROM campaign_numbers WHERE campaign_id = $1")
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        for (position, number) in (0_i64..).zip(campaign.numbers.as_slice()) {
            sqlx::query("INSERT INTO campaign_numbers (number, campaign_id, position) VALUES ($1, $2, $3)")
                .bind(number.as_str())
                .bind(&id)
                .bind(position)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("DELETE FROM campaign_buyers WHERE campaign_id = $1")
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        for (position, link) in (0_i64..).zip(campaign.buyers.as_slice()) {
            sqlx::query(
                "INSERT INTO campaign_buyers (campaign_id, buyer_id, position, priority, weight)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&id)
            .bind(link.buyer_id.to_string())
            .bind(position)
            .bind(i64::from(link.priority.get()))
            .bind(i64::from(link.weight.get()))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn check_unreferenced(conn: &mut AnyConnection, id: CampaignId) -> Result<(), StoreError> {
        let redirecting: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM campaigns WHERE redirect_campaign_id = $1 AND id <> $1 ORDER BY name",
        )
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        if redirecting.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = redirecting
            .into_iter()
            .map(|(name,)| format!("{name:?}"))
            .collect();
        Err(StoreError::conflict(
            None,
            format!(
                "campaign(s) {} redirect to this campaign: change them first",
                names.join(", ")
            ),
        ))
    }
}

/// Stored numbers were checked against the numbering plan when written; reading them back only
/// checks their shape, so a newer numbering-plan database can never make stored data unreadable.
fn stored_numbers(numbers: Vec<String>) -> Result<TrackingNumbers, StoreError> {
    let numbers = numbers
        .iter()
        .map(|n| E164::from_provider(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(format!("campaign_numbers: {e}")))?;
    numbers
        .try_into()
        .map_err(|e: String| StoreError::Corrupt(format!("campaign_numbers: {e}")))
}

/// The company a record belongs to, `None` if there is no such record.
async fn owner_of<K>(
    conn: &mut AnyConnection,
    sql: &'static str,
    id: Id<K>,
) -> Result<Option<CompanyId>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(sql)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|(company,)| parse_id(&company)).transpose()
}

async fn check_buyer(
    conn: &mut AnyConnection,
    buyer: BuyerId,
    company: Option<CompanyId>,
    field: &str,
) -> Result<(), StoreError> {
    if owner_of(conn, "SELECT company_id FROM buyers WHERE id = $1", buyer).await? == company {
        Ok(())
    } else {
        Err(StoreError::invalid_reference(
            field,
            format!("no buyer {buyer} in this campaign's company"),
        ))
    }
}

pub(super) async fn rtb_key_sha256(
    conn: &mut AnyConnection,
    campaign: CampaignId,
) -> Result<Option<String>, StoreError> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT rtb_key_sha256 FROM campaigns WHERE id = $1")
        .bind(campaign.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some((digest,)) => Ok(digest),
        None => Err(StoreError::not_found(campaign)),
    }
}

pub(super) async fn set_rtb_key(
    conn: &mut AnyConnection,
    campaign: CampaignId,
    key_sha256: Option<&str>,
) -> Result<(), StoreError> {
    rtb_key_sha256(conn, campaign).await?;
    if let Some(digest) = key_sha256 {
        let holder: Option<(String,)> =
            sqlx::query_as("SELECT name FROM campaigns WHERE rtb_key_sha256 = $1 AND id <> $2")
                .bind(digest)
                .bind(campaign.to_string())
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((name,)) = holder {
            return Err(StoreError::conflict(
                Some("rtb_key"),
                format!("campaign {name:?} already uses this RTB key"),
            ));
        }
    }
    let updated = sqlx::query("UPDATE campaigns SET rtb_key_sha256 = $2 WHERE id = $1")
        .bind(campaign.to_string())
        .bind(key_sha256)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::not_found(campaign));
    }
    super::bump_revision(conn).await
}
