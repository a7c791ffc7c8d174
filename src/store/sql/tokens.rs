//! API tokens issued through the API: their digests and lifetimes, never their secrets.

use async_trait::async_trait;
use jiff::Timestamp;
use uuid::Uuid;

use super::{SqlStore, finish, timestamp};
use crate::{
    domain::access::{GrantFields, IssuedToken, KeyDigest, Role, TokenName},
    store::{StoreError, TokenStore},
};

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    scope: Option<String>,
    digest_sha256: String,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
}

impl TryFrom<TokenRow> for (IssuedToken, KeyDigest) {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self, StoreError> {
        let corrupt = |column: &str| StoreError::Corrupt(format!("api token {}: {column}", row.id));
        let token = IssuedToken {
            id: row.id.parse().map_err(|_| corrupt("id"))?,
            name: TokenName::try_from(row.name.clone()).map_err(|_| corrupt("name"))?,
            grant: grant(&row.role, row.scope.as_deref()).ok_or_else(|| corrupt("role/scope"))?,
            created_at: timestamp(row.created_at_ms)?,
            expires_at: row.expires_at_ms.map(timestamp).transpose()?,
            revoked_at: row.revoked_at_ms.map(timestamp).transpose()?,
        };
        let digest = KeyDigest::from_hex(&row.digest_sha256).ok_or_else(|| corrupt("digest_sha256"))?;
        Ok((token, digest))
    }
}

/// The stored role and scope (a JSON object of one of `companies`, `publishers`, `buyers`;
/// none: the install), checked again as they are read.
fn grant(role: &str, scope: Option<&str>) -> Option<crate::domain::access::Grant> {
    let mut fields: GrantFields = match scope {
        Some(scope) => serde_json::from_str(scope).ok()?,
        None => GrantFields::default(),
    };
    fields.role = Some(Role::parse(role)?);
    fields.grant().ok()
}

/// The scope as stored: the grant's fields without its role; `None` for the install.
fn scope_json(token: &IssuedToken) -> Result<Option<String>, StoreError> {
    let fields = GrantFields {
        role: None,
        ..GrantFields::of(&token.grant)
    };
    let install = fields.companies.is_none() && fields.publishers.is_none() && fields.buyers.is_none();
    if install {
        return Ok(None);
    }
    serde_json::to_string(&fields)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("api token {}: scope: {e}", token.id)))
}

fn not_found(id: Uuid) -> StoreError {
    StoreError::NotFound {
        kind: "token",
        id: id.to_string(),
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn api_tokens(&self) -> Result<Vec<(IssuedToken, KeyDigest)>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, scope, digest_sha256, created_at_ms, expires_at_ms, revoked_at_ms
             FROM api_tokens ORDER BY created_at_ms DESC, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    async fn issue_token(
        &self,
        token: &IssuedToken,
        digest: &KeyDigest,
        replacing: Option<(Uuid, Timestamp)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = async {
            if let Some((old, expires_at)) = replacing {
                let updated = sqlx::query(
                    "UPDATE api_tokens
                        SET expires_at_ms = CASE WHEN expires_at_ms IS NULL OR expires_at_ms > $2
                                                 THEN $2 ELSE expires_at_ms END
                      WHERE id = $1 AND revoked_at_ms IS NULL",
                )
                .bind(old.to_string())
                .bind(expires_at.as_millisecond())
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(not_found(old));
                }
            }
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, digest_sha256, created_at_ms, expires_at_ms, scope)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(token.id.to_string())
            .bind(token.name.as_str())
            .bind(token.grant.role().as_str())
            .bind(digest.to_hex())
            .bind(token.created_at.as_millisecond())
            .bind(token.expires_at.map(|at| at.as_millisecond()))
            .bind(scope_json(token)?)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<IssuedToken, StoreError> {
        sqlx::query("UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL")
            .bind(id.to_string())
            .bind(at.as_millisecond())
            .execute(&self.pool)
            .await?;
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, scope, digest_sha256, created_at_ms, expires_at_ms, revoked_at_ms
             FROM api_tokens WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let (token, _) = row.ok_or_else(|| not_found(id))?.try_into()?;
        Ok(token)
    }
}
