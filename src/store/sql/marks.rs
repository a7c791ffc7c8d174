//! The de-dupe marks, read back a batch at a time. At start-up there may be tens of millions,
//! and through `sqlx` a row costs microseconds: so each batch comes back as one row, the
//! database aggregating its marks into one JSON array per column, which serde reads.

use std::{borrow::Cow, collections::HashMap};

use futures_util::future;
use jiff::Timestamp;
use serde::Deserialize;
use sqlx::{AnyConnection, Row, any::AnyRow};

use super::{Backend, SqlStore, finish};
use crate::{
    domain::{
        dedupe::{BatchMark, Mark, MarkBatch, Scope},
        phone::E164,
    },
    store::StoreError,
};

/// Marks per batch: enough for a statement's cost to be spread thin, few enough for a batch's
/// text (some 90 bytes a mark) to stay a few megabytes.
pub(super) const MARK_BATCH: u32 = 50_000;

// SQLite reads in rowid order, the table's own: the key's order would visit its pages at
// random (marks are written as calls come, in no order of number). `count(*)` tells the last
// batch (a short one) and `max(id)` where the next starts.
static SQLITE_BATCH: &str = "
    SELECT json_group_array(caller_number), json_group_array(scope),
        json_group_array(last_connected_ms), json_group_array(last_converted_ms), count(*), max(id)
    FROM (SELECT rowid AS id, caller_number, scope, last_connected_ms, last_converted_ms
          FROM dedupe_marks WHERE rowid > $1 ORDER BY rowid LIMIT $2) AS batch";

/// PostgreSQL has no rowid: batches follow the primary key, and the largest key of a batch
/// (the last, as arrays compare like the row) is where the next starts.
macro_rules! postgres_batch {
    ($after:literal, $limit:literal) => {
        concat!(
            "SELECT CAST(json_agg(caller_number) AS TEXT), CAST(json_agg(scope) AS TEXT),
                CAST(json_agg(last_connected_ms) AS TEXT), CAST(json_agg(last_converted_ms) AS TEXT),
                count(*), (max(ARRAY[caller_number, scope]))[1], (max(ARRAY[caller_number, scope]))[2]
             FROM (SELECT caller_number, scope, last_connected_ms, last_converted_ms FROM dedupe_marks ",
            $after,
            " ORDER BY caller_number, scope LIMIT ",
            $limit,
            ") AS batch"
        )
    };
}

static POSTGRES_FIRST_BATCH: &str = postgres_batch!("", "$1");
static POSTGRES_NEXT_BATCH: &str = postgres_batch!("WHERE (caller_number, scope) > ($1, $2)", "$3");

impl SqlStore {
    /// [`crate::store::CallStore::dedupe_marks`], in batches of `size` marks (tests choose it
    /// small).
    pub async fn dedupe_marks_by(
        &self,
        size: u32,
        each: &mut (dyn FnMut(MarkBatch) + Send),
    ) -> Result<(), StoreError> {
        // One snapshot: a mark written meanwhile neither moves between batches nor is read twice.
        let mut tx = self.read_tx().await?;
        let result = read_all(&mut tx, self.backend, size.max(1), each).await;
        finish(tx, result).await
    }
}

async fn read_all(
    conn: &mut AnyConnection,
    backend: Backend,
    size: u32,
    each: &mut (dyn FnMut(MarkBatch) + Send),
) -> Result<(), StoreError> {
    let mut fetched = fetch(conn, backend, &After::Start, size).await?;
    loop {
        let last = fetched.len < i64::from(size);
        let next = async {
            match (last, &fetched.next) {
                (false, Some(after)) => fetch(conn, backend, after, size).await.map(Some),
                _ => Ok(None),
            }
        };
        // The database reads the next batch while this one is parsed and used: `join` polls the
        // read first, which sends its statement, then does this batch's work.
        let this = async {
            let batch = fetched.parse()?;
            if !batch.marks.is_empty() {
                each(batch);
            }
            Ok::<_, StoreError>(())
        };
        let (next, this) = future::join(next, this).await;
        this?;
        match next? {
            Some(next) => fetched = next,
            None => return Ok(()),
        }
    }
}

/// Where a batch starts.
enum After {
    Start,
    /// SQLite: past this rowid.
    Rowid(i64),
    /// PostgreSQL: past this `(caller_number, scope)`.
    Key(String, String),
}

/// A batch as the database sends it: each column's values as a JSON array.
struct Fetched {
    callers: String,
    scopes: String,
    connected: String,
    converted: String,
    len: i64,
    /// Where the next batch starts; `None` after an empty one.
    next: Option<After>,
}

async fn fetch(
    conn: &mut AnyConnection,
    backend: Backend,
    after: &After,
    size: u32,
) -> Result<Fetched, StoreError> {
    let size = i64::from(size);
    // Only this engine's reads make its kind of boundary.
    let query = match after {
        After::Start if backend == Backend::Postgres => sqlx::query(POSTGRES_FIRST_BATCH).bind(size),
        After::Start => sqlx::query(SQLITE_BATCH).bind(i64::MIN).bind(size),
        After::Rowid(id) => sqlx::query(SQLITE_BATCH).bind(*id).bind(size),
        After::Key(caller, scope) => (sqlx::query(POSTGRES_NEXT_BATCH))
            .bind(caller.clone())
            .bind(scope.clone())
            .bind(size),
    };
    let row: AnyRow = query.fetch_one(&mut *conn).await?;
    // An empty batch aggregates to NULL on PostgreSQL.
    let column = |i: usize| -> Result<String, StoreError> {
        Ok(row
            .try_get::<Option<String>, _>(i)?
            .unwrap_or_else(|| "[]".to_owned()))
    };
    let next = match backend {
        Backend::Sqlite => row.try_get::<Option<i64>, _>(5)?.map(After::Rowid),
        Backend::Postgres => {
            let caller: Option<String> = row.try_get(5)?;
            let scope: Option<String> = row.try_get(6)?;
            caller.zip(scope).map(|(caller, scope)| After::Key(caller, scope))
        }
    };
    Ok(Fetched {
        callers: column(0)?,
        scopes: column(1)?,
        connected: column(2)?,
        converted: column(3)?,
        len: row.try_get(4)?,
        next,
    })
}

/// A JSON string, borrowed from the batch's text unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Fetched {
    fn parse(&self) -> Result<MarkBatch, StoreError> {
        let callers: Vec<Text> = column("dedupe_marks.caller_number", &self.callers)?;
        let scopes: Vec<Text> = column("dedupe_marks.scope", &self.scopes)?;
        let connected: Vec<Option<i64>> = column("dedupe_marks.last_connected_ms", &self.connected)?;
        let converted: Vec<Option<i64>> = column("dedupe_marks.last_converted_ms", &self.converted)?;
        let len = callers.len();
        if [scopes.len(), connected.len(), converted.len()] != [len; 3] {
            return Err(StoreError::Corrupt(
                "dedupe_marks: columns of unequal lengths".into(),
            ));
        }
        let mut batch = MarkBatch {
            scopes: Vec::new(),
            marks: Vec::with_capacity(len),
        };
        // Few scopes, each named by many marks: each is parsed once.
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let rows = callers.iter().zip(&scopes).zip(connected).zip(converted);
        for (((caller, scope), connected), converted) in rows {
            let caller = E164::digits_of(&caller.0)
                .map_err(|e| StoreError::Corrupt(format!("dedupe_marks.caller_number: {e}")))?;
            let scope = match ids.get(&*scope.0) {
                Some(&id) => id,
                None => {
                    let id = batch.scopes.len() as u32;
                    let parsed = Scope::parse_key(&scope.0)
                        .map_err(|e| StoreError::Corrupt(format!("dedupe_marks.scope: {e}")))?;
                    batch.scopes.push(parsed);
                    ids.insert(&scope.0, id);
                    id
                }
            };
            batch.marks.push(BatchMark {
                caller,
                scope,
                mark: Mark {
                    last_connected: at("dedupe_marks.last_connected_ms", connected)?,
                    last_converted: at("dedupe_marks.last_converted_ms", converted)?,
                },
            });
        }
        Ok(batch)
    }
}

/// A column's values, borrowing its strings from `text`.
fn column<'a, T: Deserialize<'a>>(name: &str, text: &'a str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

fn at(column: &str, ms: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    ms.map(|ms| Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))))
        .transpose()
}
