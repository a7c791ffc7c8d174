//! Companies' block lists.

use async_trait::async_trait;
use sqlx::AnyConnection;
use uuid::Uuid;

use super::{SqlStore, bump_revision, finish, now, parse_id, parse_stored, timestamp};
use crate::{
    domain::{
        block::{BlockEntry, BlockedCaller},
        plan::CompanyId,
    },
    store::{BlockListStore, ListFilter, StoreError},
};

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: String,
    company_id: String,
    pattern: String,
    reason: Option<String>,
    created_at_ms: i64,
}

impl TryFrom<EntryRow> for BlockEntry {
    type Error = StoreError;

    fn try_from(row: EntryRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            company_id: parse_id(&row.company_id)?,
            blocked: BlockedCaller {
                pattern: parse_stored("pattern", row.pattern.into())?,
                reason: parse_stored("reason", row.reason.into())?,
            },
            created_at: timestamp(row.created_at_ms)?,
        })
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{text}` is not an id")))
}

fn not_found(id: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "blocked caller",
        id: id.to_string(),
    }
}

/// The one read, every filter optional: `$1` id, `$2` company, `$3` after, `$4` limit.
const FETCH: &str = "SELECT id, company_id, pattern, reason, created_at_ms FROM blocked_callers
     WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR company_id = $2) AND ($3 IS NULL OR id > $3)
     ORDER BY id LIMIT $4";

async fn fetch(
    conn: &mut AnyConnection,
    id: Option<Uuid>,
    filter: &ListFilter,
) -> Result<Vec<BlockEntry>, StoreError> {
    let rows: Vec<EntryRow> = sqlx::query_as(FETCH)
        .bind(id.map(|id| id.to_string()))
        .bind(filter.company_id.map(|id| id.to_string()))
        .bind(filter.after.map(|id| id.to_string()))
        .bind(i64::from(filter.limit))
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(BlockEntry::try_from).collect()
}

/// The company's entry for this pattern, if it has one.
async fn find_in(
    conn: &mut AnyConnection,
    company: CompanyId,
    blocked: &BlockedCaller,
) -> Result<Option<BlockEntry>, StoreError> {
    let row: Option<EntryRow> = sqlx::query_as(
        "SELECT id, company_id, pattern, reason, created_at_ms FROM blocked_callers
         WHERE company_id = $1 AND pattern = $2",
    )
    .bind(company.to_string())
    .bind(blocked.pattern.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(BlockEntry::try_from).transpose()
}

/// Adds a pattern the company does not list yet.
async fn insert_in(
    conn: &mut AnyConnection,
    company: CompanyId,
    blocked: &BlockedCaller,
) -> Result<BlockEntry, StoreError> {
    let company_known: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM companies WHERE id = $1")
        .bind(company.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    if company_known.is_none() {
        return Err(StoreError::invalid_reference(
            "company_id",
            format!("no company with id {company}"),
        ));
    }
    let entry = BlockEntry {
        id: Uuid::now_v7(),
        company_id: company,
        blocked: blocked.clone(),
        created_at: now(),
    };
    sqlx::query(
        "INSERT INTO blocked_callers (id, company_id, pattern, reason, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.id.to_string())
    .bind(company.to_string())
    .bind(blocked.pattern.to_string())
    .bind(blocked.reason.as_ref().map(|r| r.as_str().to_owned()))
    .bind(entry.created_at.as_millisecond())
    .execute(&mut *conn)
    .await?;
    bump_revision(conn).await?;
    Ok(entry)
}

/// A plan file's entry: added to `company`'s list, or, if the pattern is listed already, its
/// reason set. Whether it was added, changed, or left as it was.
pub(super) async fn upsert_in(
    conn: &mut AnyConnection,
    company: CompanyId,
    blocked: &BlockedCaller,
) -> Result<Upserted, StoreError> {
    let Some(entry) = find_in(conn, company, blocked).await? else {
        insert_in(conn, company, blocked).await?;
        return Ok(Upserted::Created);
    };
    if entry.blocked == *blocked {
        return Ok(Upserted::Unchanged);
    }
    // The reason is for people: routing, and so the plan's revision, does not change.
    sqlx::query("UPDATE blocked_callers SET reason = $1 WHERE id = $2")
        .bind(blocked.reason.as_ref().map(|r| r.as_str().to_owned()))
        .bind(entry.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Upserted::Updated)
}

/// What [`upsert_in`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upserted {
    Created,
    Updated,
    Unchanged,
}

#[async_trait]
impl BlockListStore for SqlStore {
    async fn blocked_callers(&self, filter: &ListFilter) -> Result<Vec<BlockEntry>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, None, filter).await
    }

    async fn blocked_caller(&self, id: Uuid) -> Result<BlockEntry, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let one = ListFilter {
            limit: 1,
            ..ListFilter::default()
        };
        fetch(&mut conn, Some(id), &one)
            .await?
            .pop()
            .ok_or_else(|| not_found(id))
    }

    async fn block_caller(
        &self,
        company: CompanyId,
        blocked: &BlockedCaller,
    ) -> Result<BlockEntry, StoreError> {
        let mut tx = self.write_tx().await?;
        let result = match find_in(&mut tx, company, blocked).await {
            Ok(None) => insert_in(&mut tx, company, blocked).await,
            Ok(Some(_)) => Err(StoreError::conflict(
                Some("pattern"),
                format!("the company blocks {} already", blocked.pattern),
            )),
            Err(error) => Err(error),
        };
        finish(tx, result).await
    }

    async fn unblock_caller(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let result = async {
            let deleted = sqlx::query("DELETE FROM blocked_callers WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(not_found(id));
            }
            bump_revision(&mut tx).await
        }
        .await;
        finish(tx, result).await
    }
}
