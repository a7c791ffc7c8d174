use async_trait::async_trait;
use sqlx::AnyConnection;

use super::{
    Query, SqlEntity, from_json, parse_id, parse_stored, postbacks, sealing::Sealer, timestamp, to_json,
};
use crate::{
    domain::{
        plan::{Publisher, PublisherId, Record},
        postback::PostbackOwner,
    },
    store::StoreError,
};

#[derive(sqlx::FromRow)]
struct PublisherRow {
    id: String,
    company_id: String,
    name: String,
    external_id: Option<String>,
    numbers: String,
    payout: Option<String>,
    postbacks: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<PublisherRow> for Record<Publisher> {
    type Error = StoreError;

    fn try_from(row: PublisherRow) -> Result<Self, Self::Error> {
        Ok(Record {
            id: parse_id(&row.id)?,
            company_id: Some(parse_id(&row.company_id)?),
            spec: Publisher {
                name: parse_stored("name", row.name.into())?,
                external_id: parse_stored("external_id", row.external_id.into())?,
                numbers: from_json("publishers.numbers", &row.numbers)?,
                payout: row
                    .payout
                    .as_deref()
                    .map(|p| from_json("publishers.payout", p))
                    .transpose()?,
                postbacks: from_json("publishers.postbacks", &row.postbacks)?,
            },
            created_at: timestamp(row.created_at_ms)?,
            updated_at: timestamp(row.updated_at_ms)?,
        })
    }
}

#[async_trait]
impl SqlEntity for Publisher {
    const DELETE: &'static str = "DELETE FROM publishers WHERE id = $1";

    async fn fetch(
        conn: &mut AnyConnection,
        seal: &Sealer,
        query: &Query<'_, Self>,
    ) -> Result<Vec<Record<Self>>, StoreError> {
        let rows: Vec<PublisherRow> = query
            .bind(
                "SELECT id, company_id, name, external_id, numbers, payout, postbacks, created_at_ms,
                    updated_at_ms
             FROM publishers
             WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR company_id = $2)
               AND ($3 IS NULL OR name = $3) AND ($4 IS NULL OR id > $4)
             ORDER BY id LIMIT $5",
            )
            .fetch_all(&mut *conn)
            .await?;
        (rows.into_iter())
            .map(|mut row| {
                row.postbacks = seal.open_fields_in(&row.postbacks, "secret", "a postback secret")?;
                Record::try_from(row)
            })
            .collect()
    }

    async fn check(conn: &mut AnyConnection, record: &Record<Self>) -> Result<(), StoreError> {
        check_numbers(conn, record).await?;
        let Some(external_id) = &record.spec.external_id else {
            return Ok(());
        };
        let holder: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM publishers WHERE company_id = $1 AND external_id = $2 AND id <> $3",
        )
        .bind(record.company_id.map(|id| id.to_string()))
        .bind(external_id.as_str())
        .bind(record.id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        match holder {
            Some((name,)) => Err(StoreError::conflict(
                Some("external_id"),
                format!(
                    "publisher {name:?} already has external id {:?}",
                    external_id.as_str()
                ),
            )),
            None => Ok(()),
        }
    }

    async fn write(conn: &mut AnyConnection, seal: &Sealer, record: &Record<Self>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO publishers (id, company_id, name, external_id, numbers, payout, postbacks,
                created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, external_id = excluded.external_id,
                numbers = excluded.numbers, payout = excluded.payout,
                postbacks = excluded.postbacks, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(record.id.to_string())
        .bind(record.company_id.map(|id| id.to_string()))
        .bind(record.spec.name.as_str())
        .bind(record.spec.external_id.as_ref().map(|id| id.as_str().to_owned()))
        .bind(to_json(&record.spec.numbers)?)
        .bind(record.spec.payout.as_ref().map(to_json).transpose()?)
        // Secrets are stored encrypted (see `sealing`).
        .bind(seal.seal_fields_in(&to_json(&record.spec.postbacks)?, "secret")?)
        .bind(record.created_at.as_millisecond())
        .bind(record.updated_at.as_millisecond())
        .execute(&mut *conn)
        .await?;
        let owner = PostbackOwner::Publisher(record.id);
        postbacks::cancel_unwanted(conn, owner, &record.spec.postbacks).await
    }

    async fn removed(conn: &mut AnyConnection, id: PublisherId) -> Result<(), StoreError> {
        postbacks::cancel_all(conn, PostbackOwner::Publisher(id)).await
    }
}

/// A tracking number is given to one publisher at most: a call to it has one publisher to pay.
async fn check_numbers(conn: &mut AnyConnection, record: &Record<Publisher>) -> Result<(), StoreError> {
    if record.spec.numbers.as_slice().is_empty() {
        return Ok(());
    }
    let others: Vec<(String, String)> =
        sqlx::query_as("SELECT name, numbers FROM publishers WHERE id <> $1 AND numbers <> '[]'")
            .bind(record.id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    for (name, numbers) in others {
        let theirs: Vec<String> = from_json("publishers.numbers", &numbers)?;
        if let Some(taken) =
            (record.spec.numbers.as_slice().iter()).find(|n| theirs.iter().any(|t| t == n.as_str()))
        {
            return Err(StoreError::conflict(
                Some("numbers"),
                format!("{taken} is already given to publisher {name:?}"),
            ));
        }
    }
    Ok(())
}
