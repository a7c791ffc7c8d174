use async_trait::async_trait;
use sqlx::AnyConnection;

use super::{Query, SqlEntity, parse_id, parse_stored, sealing::Sealer, timestamp};
use crate::{
    domain::plan::{Company, CompanyId, Record},
    store::StoreError,
};

#[derive(sqlx::FromRow)]
struct CompanyRow {
    id: String,
    name: String,
    duplicate_caller_handling: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<CompanyRow> for Record<Company> {
    type Error = StoreError;

    fn try_from(row: CompanyRow) -> Result<Self, Self::Error> {
        Ok(Record {
            id: parse_id(&row.id)?,
            company_id: None,
            spec: Company {
                name: parse_stored("name", row.name.into())?,
                duplicate_caller_handling: row.duplicate_caller_handling != 0,
            },
            created_at: timestamp(row.created_at_ms)?,
            updated_at: timestamp(row.updated_at_ms)?,
        })
    }
}

#[async_trait]
impl SqlEntity for Company {
    const DELETE: &'static str = "DELETE FROM companies WHERE id = $1";

    async fn fetch(
        conn: &mut AnyConnection,
        _seal: &Sealer,
        query: &Query<'_, Self>,
    ) -> Result<Vec<Record<Self>>, StoreError> {
        // A company filter on companies narrows to that company.
        let rows: Vec<CompanyRow> = query
            .bind(
                "SELECT id, name, duplicate_caller_handling, created_at_ms, updated_at_ms
                 FROM companies
                 WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR id = $2)
                   AND ($3 IS NULL OR name = $3) AND ($4 IS NULL OR id > $4)
                 ORDER BY id LIMIT $5",
            )
            .fetch_all(&mut *conn)
            .await?;
        rows.into_iter().map(Record::try_from).collect()
    }

    async fn write(
        conn: &mut AnyConnection,
        _seal: &Sealer,
        record: &Record<Self>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO companies (id, name, duplicate_caller_handling, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name,
                duplicate_caller_handling = excluded.duplicate_caller_handling,
                updated_at_ms = excluded.updated_at_ms",
        )
        .bind(record.id.to_string())
        .bind(record.spec.name.as_str())
        .bind(i64::from(record.spec.duplicate_caller_handling))
        .bind(record.created_at.as_millisecond())
        .bind(record.updated_at.as_millisecond())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn check_unreferenced(conn: &mut AnyConnection, id: CompanyId) -> Result<(), StoreError> {
        let (buyers, campaigns, publishers): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM buyers WHERE company_id = $1),
                    (SELECT COUNT(*) FROM campaigns WHERE company_id = $1),
                    (SELECT COUNT(*) FROM publishers WHERE company_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(&mut *conn)
        .await?;
        if buyers + campaigns + publishers > 0 {
            return Err(StoreError::conflict(
                None,
                format!(
                    "the company still has {buyers} buyer(s), {campaigns} campaign(s) and \
                     {publishers} publisher(s): delete them first"
                ),
            ));
        }
        Ok(())
    }
}
