//! The audit log: rows only ever added.

use async_trait::async_trait;

use super::{SqlStore, in_json_list, json_list, parse_id, timestamp};
use crate::{
    domain::{access::Role, audit::AuditEntry},
    store::{AuditFilter, AuditStore, StoreError},
};

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    at_ms: i64,
    actor: String,
    token_id: Option<String>,
    role: String,
    company_id: Option<String>,
    action: String,
    target_id: Option<String>,
    before_json: Option<String>,
    after_json: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        let corrupt = |column: &str| StoreError::Corrupt(format!("audit entry {}: {column}", row.id));
        let json = |text: Option<&String>, column: &str| {
            text.map(|text| serde_json::from_str(text).map_err(|_| corrupt(column)))
                .transpose()
        };
        Ok(Self {
            id: row.id.parse().map_err(|_| corrupt("id"))?,
            at: timestamp(row.at_ms)?,
            token_id: (row.token_id.as_deref())
                .map(|id| id.parse().map_err(|_| corrupt("token_id")))
                .transpose()?,
            role: Role::parse(&row.role).ok_or_else(|| corrupt("role"))?,
            company_id: row.company_id.as_deref().map(parse_id).transpose()?,
            before: json(row.before_json.as_ref(), "before_json")?,
            after: json(row.after_json.as_ref(), "after_json")?,
            actor: row.actor,
            action: row.action,
            target_id: row.target_id,
        })
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let json = |value: Option<&serde_json::Value>| value.map(serde_json::Value::to_string);
        sqlx::query(
            "INSERT INTO audit_log (id, at_ms, actor, token_id, role, company_id, action, target_id,
                                    before_json, after_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(entry.id.to_string())
        .bind(entry.at.as_millisecond())
        .bind(entry.actor.as_str())
        .bind(entry.token_id.map(|id| id.to_string()))
        .bind(entry.role.as_str())
        .bind(entry.company_id.map(|id| id.to_string()))
        .bind(entry.action.as_str())
        .bind(entry.target_id.as_deref())
        .bind(json(entry.before.as_ref()))
        .bind(json(entry.after.as_ref()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        const QUERY: (&str, &str) = in_json_list!(
            "SELECT id, at_ms, actor, token_id, role, company_id, action, target_id, before_json, after_json
             FROM audit_log
             WHERE ($1 IS NULL OR " IN_LIST("company_id", "$1") ")
               AND ($2 IS NULL OR company_id = $2)
               AND ($3 IS NULL OR action = $3 OR substr(action, 1, length($3) + 1) = $3 || '.')
               AND ($4 IS NULL OR target_id = $4)
               AND ($5 IS NULL OR at_ms >= $5) AND ($6 IS NULL OR at_ms < $6)
               AND ($7 IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8"
        );
        let rows: Vec<AuditRow> = sqlx::query_as(self.backend.pick(QUERY))
            .bind(json_list(filter.within.as_ref()))
            .bind(filter.company_id.map(|id| id.to_string()))
            .bind(filter.action.as_deref())
            .bind(filter.target_id.as_deref())
            .bind(filter.from.map(|at| at.as_millisecond()))
            .bind(filter.to.map(|at| at.as_millisecond()))
            .bind(filter.before.map(|id| id.to_string()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }
}
