//! Several nodes on one database: buyers' concurrency slots held in it, the nodes, and the
//! news they send each other (PostgreSQL's `NOTIFY`, sent in the transaction of the change).

use crate::fresh::Generate;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AnyConnection;

use super::{Backend, SqlStore, finish, timestamp};
use crate::{
    domain::{
        capacity::{Block, CapPeriod, LEG_LEASE, Standing},
        cluster::{Bulletin, News, NodeId, NodeInfo},
        plan::CapCounting,
    },
    store::{ClusterStore, NewsChannel, SlotHold, SoleWriter, StoreError},
};

/// Who sends news, and on which channel: one per schema, so that clusters (or test runs)
/// in schemas of one database do not hear each other.
#[derive(Debug, Clone)]
pub(super) struct Newsroom {
    pub node: NodeId,
    pub channel: String,
}

impl Newsroom {
    pub(super) async fn of(pool: &sqlx::AnyPool, backend: Backend) -> Result<Self, StoreError> {
        let channel = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => {
                let (schema,): (String,) = sqlx::query_as("SELECT CAST(current_schema() AS text)")
                    .fetch_one(pool)
                    .await?;
                // PostgreSQL's names are at most 63 bytes.
                let mut channel = format!("switchboard_news:{schema}");
                while channel.len() > 63 {
                    channel.pop();
                }
                channel
            }
        };
        Ok(Self {
            node: NodeId::generate(),
            channel,
        })
    }
}

/// PostgreSQL refuses a notification of 8000 bytes or more.
const MOST_NEWS_BYTES: usize = 7900;

/// The first key of the advisory locks that make one buyer's holds run one at a time (the
/// second is the buyer's hash).
const SLOT_LOCK_CLASS: i32 = 0x534C_4F54; // "SLOT"

#[async_trait]
impl ClusterStore for SqlStore {
    fn node(&self) -> &NodeId {
        &self.newsroom.node
    }

    fn is_shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    async fn hold_slot(&self, hold: &SlotHold<'_>) -> Result<Option<Block>, StoreError> {
        let buyer_id = hold.buyer.id.to_string();
        let mut tx = match self.backend {
            // One writer at a time anyway; taken up front, so the counts read stay true.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(SLOT_LOCK_CLASS)
                    .bind(&buyer_id)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        let result = async {
            let (call, attempt) = (hold.leg.call.as_str(), i64::from(hold.leg.attempt));
            let held: Option<(String,)> =
                sqlx::query_as("SELECT buyer_id FROM capacity_slots WHERE call_sid = $1 AND attempt = $2")
                    .bind(call)
                    .bind(attempt)
                    .fetch_optional(&mut *tx)
                    .await?;
            if held.as_ref().is_some_and(|(held,)| *held == buyer_id) {
                return Ok(None);
            }
            if let Some(block) = standing(&mut tx, hold).await?.block(&hold.buyer.spec.caps) {
                return Ok(Some(block));
            }
            let ring = i64::from(hold.buyer.spec.ring_timeout_seconds.get()) * 1000 + 60_000;
            sqlx::query(
                "INSERT INTO capacity_slots (call_sid, attempt, buyer_id, held_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (call_sid, attempt) DO UPDATE SET buyer_id = excluded.buyer_id,
                    held_at_ms = excluded.held_at_ms, expires_at_ms = excluded.expires_at_ms",
            )
            .bind(call)
            .bind(attempt)
            .bind(&buyer_id)
            .bind(hold.at.as_millisecond())
            .bind(hold.at.as_millisecond().saturating_add(ring))
            .execute(&mut *tx)
            .await?;
            if self.backend == Backend::Postgres {
                let held = News::Held {
                    buyer: hold.buyer.id,
                    leg: hold.leg.clone(),
                    at: hold.at,
                };
                publish(&mut tx, &self.newsroom, [held]).await?;
            }
            Ok(None)
        }
        .await;
        finish(tx, result).await
    }

    async fn database_now(&self) -> Result<Timestamp, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(Timestamp::now()),
            Backend::Postgres => {
                let (micros,): (i64,) =
                    sqlx::query_as("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)")
                        .fetch_one(&self.pool)
                        .await?;
                timestamp_of_micros(micros)
            }
        }
    }

    async fn announce(
        &self,
        public_url: &str,
        started_at: Timestamp,
        seen_since: Timestamp,
    ) -> Result<Vec<NodeInfo>, StoreError> {
        let now = Timestamp::now().as_millisecond();
        let mut tx = self.pool.begin().await?;
        let result = async {
            sqlx::query(
                "INSERT INTO cluster_nodes (node_id, public_url, started_at_ms, seen_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (node_id) DO UPDATE SET public_url = excluded.public_url,
                    seen_at_ms = excluded.seen_at_ms",
            )
            .bind(self.newsroom.node.as_str())
            .bind(public_url)
            .bind(started_at.as_millisecond())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if self.backend == Backend::Postgres {
                // The others learn of a new node now, not at their next heartbeat.
                let up = News::Up {
                    public_url: public_url.to_owned(),
                };
                publish(&mut tx, &self.newsroom, [up]).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await?;
        // Nodes long gone are of no use to anyone: no call of theirs can still be going.
        sqlx::query("DELETE FROM cluster_nodes WHERE seen_at_ms < $1")
            .bind(seen_since.as_millisecond())
            .execute(&self.pool)
            .await?;
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT node_id, public_url, started_at_ms, seen_at_ms FROM cluster_nodes
             ORDER BY started_at_ms, node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, public_url, started, seen)| {
                Ok(NodeInfo {
                    id: NodeId::parse(&id).map_err(StoreError::Corrupt)?,
                    public_url,
                    started_at: timestamp(started)?,
                    seen_at: timestamp(seen)?,
                })
            })
            .collect()
    }

    fn claim_sole_writer(&self) -> Result<Option<SoleWriter>, StoreError> {
        self.sole_writer.claim()
    }

    fn news_channel(&self) -> Option<NewsChannel> {
        (self.backend == Backend::Postgres).then(|| NewsChannel {
            database_url: self.url.clone(),
            channel: self.newsroom.channel.clone(),
        })
    }
}

/// Where the buyer stands as every node's saved calls and held slots count it.
async fn standing(conn: &mut AnyConnection, hold: &SlotHold<'_>) -> Result<Standing, StoreError> {
    let (buyer, spec, at) = (hold.buyer.id.to_string(), &hold.buyer.spec, hold.at);
    let now = at.as_millisecond();
    let answered_since = at
        .checked_sub(LEG_LEASE)
        .unwrap_or(Timestamp::MIN)
        .as_millisecond();
    // A slot is live while its lease runs: the ring lease until an answer, then the answer's.
    let (live, unanswered): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN a.answered_at_ms IS NULL THEN 1 ELSE 0 END), 0)
         FROM capacity_slots s
         LEFT JOIN call_attempts a ON a.call_sid = s.call_sid AND a.number = s.attempt
         WHERE s.buyer_id = $1
           AND ((a.answered_at_ms IS NULL AND s.expires_at_ms > $2) OR a.answered_at_ms > $3)",
    )
    .bind(&buyer)
    .bind(now)
    .bind(answered_since)
    .fetch_one(&mut *conn)
    .await?;
    let caps = &spec.caps;
    let mut standing = Standing {
        live: u32::try_from(live).unwrap_or(u32::MAX),
        // A connection counts at the answer; a conversion only once the leg ended.
        pending: match caps.counted_on {
            CapCounting::Connected => unanswered,
            CapCounting::Converted => live,
        }
        .unsigned_abs(),
        counted: [0; 4],
    };
    if CapPeriod::ALL.iter().all(|period| period.limit(caps).is_none()) {
        return Ok(standing);
    }
    let resets: Vec<(String, i64)> =
        sqlx::query_as("SELECT cap, reset_at_ms FROM cap_resets WHERE buyer_id = $1")
            .bind(&buyer)
            .fetch_all(&mut *conn)
            .await?;
    let count = match caps.counted_on {
        CapCounting::Connected => {
            "SELECT COUNT(*) FROM call_attempts
             WHERE buyer_id = $1 AND answered_at_ms >= $2 AND answered_at_ms > $3"
        }
        CapCounting::Converted => {
            "SELECT COUNT(*) FROM conversions
             WHERE buyer_id = $1 AND converted_at_ms >= $2 AND converted_at_ms > $3"
        }
    };
    let zone = spec.time_zone.zone();
    for (slot, period) in CapPeriod::ALL.into_iter().enumerate() {
        if period.limit(caps).is_none() {
            continue;
        }
        // As the in-memory index counts: from the period's start, and strictly after a reset.
        let start = period
            .start(at, zone)
            .map_or(i64::MIN, |start| start.as_millisecond());
        let reset = (resets.iter())
            .find(|(cap, _)| cap == period.as_str())
            .map_or(i64::MIN, |(_, at)| *at);
        let (counted,): (i64,) = sqlx::query_as(count)
            .bind(&buyer)
            .bind(start)
            .bind(reset)
            .fetch_one(&mut *conn)
            .await?;
        standing.counted[slot] = counted.unsigned_abs();
    }
    Ok(standing)
}

/// Sends `news` to the other nodes, on the commit of the transaction `conn` is in (and not at
/// all if it rolls back). A bulletin too large for a notification is not sent: the others'
/// indexes miss it (the database has it).
pub(super) async fn publish(
    conn: &mut AnyConnection,
    newsroom: &Newsroom,
    news: impl IntoIterator<Item = News>,
) -> Result<(), StoreError> {
    let mut bulletins = Vec::new();
    for news in news {
        let bulletin = Bulletin {
            from: newsroom.node.clone(),
            news,
        };
        let text = serde_json::to_string(&bulletin)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode news: {e}")))?;
        if text.len() > MOST_NEWS_BYTES {
            tracing::warn!(bytes = text.len(), "news too large to send to other nodes");
            continue;
        }
        bulletins.push(text);
    }
    if bulletins.is_empty() {
        return Ok(());
    }
    // One statement for all: each array element becomes one notification.
    let array = format!("[{}]", bulletins.join(","));
    sqlx::query(
        "SELECT pg_notify($2, CAST(j.value AS text)) FROM json_array_elements(CAST($1 AS json)) AS j(value)",
    )
    .bind(array)
    .bind(&newsroom.channel)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn timestamp_of_micros(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(micros)
        .map_err(|e| StoreError::Corrupt(format!("the database's time {micros}: {e}")))
}
