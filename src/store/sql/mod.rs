//! The SQL store: one implementation for SQLite and PostgreSQL through `sqlx::Any`.
//!
//! Queries are written once for both engines: `$n` placeholders, times as epoch milliseconds,
//! flags as 0/1 integers, ids as text. Each engine has its own migrations because their DDL
//! differs.

mod audit;
mod blocked;
mod buyers;
mod call_writer;
mod calls;
mod campaigns;
mod capacity;
mod cluster;
mod companies;
mod conversions;
mod health;
mod import;
mod marks;
mod payouts;
mod postbacks;
mod publishers;
mod rtb;
pub mod sealing;
mod sole_writer;
mod supervision;
mod tokens;

use crate::fresh::Generate;
use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;
use sqlx::{
    AnyConnection, AnyPool, Connection, Executor, Transaction,
    any::{Any, AnyConnectOptions, AnyPoolOptions},
    migrate::{MigrateDatabase, Migrator},
};
use uuid::Uuid;

use super::{ListFilter, PlanStore, PlanTable, StoreError};
use crate::{
    config::SecretsKey,
    domain::{
        access::KeyDigest,
        ids::Id,
        plan::{CampaignId, CompanyId, PlanEntity, Record},
        postback::EndpointId,
        values::Name,
    },
    plan::{ImportReport, Plan},
};

/// The advisory lock key of plan changes on PostgreSQL ("SWBD").
const PLAN_WRITE_LOCK: i64 = 0x5357_4244;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    call_writers: call_writer::CallWriters,
    /// Whether writes go through (readiness).
    health: Arc<health::WriteHealth>,
    /// One server per SQLite file.
    sole_writer: Arc<sole_writer::SoleWriterLock>,
    /// This process, as other nodes on the database know it, and where its news goes.
    newsroom: cluster::Newsroom,
    /// For the connection that hears other nodes (it may hold a password).
    url: SecretString,
    /// Encrypts the secrets stored in plan records (see [`sealing`]).
    seal: sealing::Sealer,
}

impl SqlStore {
    /// Connects (creating a missing SQLite file) without touching the schema. Secrets are
    /// encrypted with the SQLite file's key file (see [`sealing`]); on PostgreSQL, not at all
    /// (serving there needs [`SqlStore::connect_with_keys`]).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_keys(url, &[]).await
    }

    /// As [`SqlStore::connect`], secrets encrypted with `keys` (the first seals) when any are given.
    pub async fn connect_with_keys(url: &str, keys: &[SecretsKey]) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                "the database URL must start with sqlite: or postgres:".into(),
            ))
        })?;
        if backend == Backend::Sqlite && !Any::database_exists(url).await? {
            Any::create_database(url).await?;
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time in SQLite anyway; a few readers alongside it.
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            // Fail fast into a clear "unavailable" rather than hanging a request.
            .acquire_timeout(Duration::from_secs(5))
            .after_release(|conn, _| Box::pin(no_transaction_left(conn)))
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // Persistent in the file: readers no longer wait for the writer.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let newsroom = cluster::Newsroom::of(&pool, backend).await?;
        let health = Arc::new(health::WriteHealth::default());
        let sole_writer = Arc::new(sole_writer::SoleWriterLock::of(&pool, backend).await?);
        let call_writers = call_writer::CallWriters::start(&pool, backend, &newsroom, &health)?;
        let seal = match (keys, sealing::key_file_of(url)) {
            ([], Some(file)) => sealing::Sealer::new(&[sealing::key_from_file(&file).map_err(|e| {
                StoreError::Corrupt(format!("the secrets key file {}: {e}", file.display()))
            })?]),
            ([], None) if backend == Backend::Sqlite => sealing::Sealer::new(&[SecretsKey(rand::random())]),
            (keys, _) => sealing::Sealer::new(keys),
        };
        Ok(Self {
            seal,
            pool,
            backend,
            call_writers,
            health,
            sole_writer,
            newsroom,
            url: SecretString::from(url),
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn connect_and_migrate(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether secrets are stored encrypted.
    pub fn seals_secrets(&self) -> bool {
        self.seal.seals()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction that changes the routing plan. Plan changes are rare (operators, imports)
    /// and check-then-write (names, numbers, references), so they run one at a time: SQLite
    /// takes its write lock up front (a deferred transaction that reads first can fail to
    /// upgrade), PostgreSQL takes a transaction-scoped advisory lock, which also serialises
    /// several nodes importing at once.
    async fn write_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PLAN_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        })
    }

    /// A transaction that only reads, seeing one snapshot across its statements (a campaign
    /// is read in three).
    async fn read_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            // WAL readers see the snapshot of their first read.
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }
}

/// Whether a connection given back may be used again: only with no transaction open on it.
/// A transaction whose COMMIT or ROLLBACK failed (a full disk, an I/O error: SQLite may have
/// rolled it back by itself, or may still hold it and its write lock) is still counted open
/// by sqlx, and every later `BEGIN` on that connection would fail for good. Such a connection
/// is closed instead (closing rolls back whatever SQLite still holds); the pool opens a fresh
/// one when it needs one.
async fn no_transaction_left(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's rollback may still be queued (SQLite's connection runs its
    // commands in turn): once it has run, the count is true.
    conn.ping().await?;
    let open = conn.is_in_transaction();
    if open {
        tracing::debug!("a connection was given back with a transaction open; it is closed");
    }
    Ok(!open)
}

use sealing::Sealer;

/// Which records of a kind to fetch; every field narrows the result.
#[derive(Debug)]
pub(super) struct Query<'a, T> {
    pub id: Option<Id<T>>,
    pub company_id: Option<CompanyId>,
    pub name: Option<&'a Name>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl<T> Query<'_, T> {
    fn by_id(id: Id<T>) -> Self {
        Self {
            id: Some(id),
            company_id: None,
            name: None,
            after: None,
            limit: 1,
        }
    }

    fn list(filter: &ListFilter) -> Self {
        Self {
            id: None,
            company_id: filter.company_id,
            name: None,
            after: filter.after,
            limit: i64::from(filter.limit),
        }
    }

    /// `sql` with this query's filters bound: `$1` id, `$2` company, `$3` name, `$4` after (each
    /// text, `NULL` meaning "any"), `$5` limit.
    fn bind<'q, O>(&self, sql: &'static str) -> sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_as(sql)
            .bind(self.id.map(|id| id.to_string()))
            .bind(self.company_id.map(|id| id.to_string()))
            .bind(self.name.map(|name| name.as_str().to_owned()))
            .bind(self.after.map(|id| id.to_string()))
            .bind(self.limit)
    }
}

impl<'a, T> Query<'a, T> {
    fn by_name(company_id: Option<CompanyId>, name: &'a Name) -> Self {
        Self {
            id: None,
            company_id,
            name: Some(name),
            after: None,
            limit: 1,
        }
    }
}

/// How one kind of plan entity is kept in SQL. The generic code below does the rest once for
/// every kind: transactions, not-found, leaving unchanged records alone, name collisions.
#[async_trait]
pub(super) trait SqlEntity: PlanEntity {
    /// `DELETE` of one record by id (`$1`).
    const DELETE: &'static str;

    async fn fetch(
        conn: &mut AnyConnection,
        seal: &Sealer,
        query: &Query<'_, Self>,
    ) -> Result<Vec<Record<Self>>, StoreError>;

    /// Checks a new or changed record against the others (names are checked generically).
    async fn check(_conn: &mut AnyConnection, _record: &Record<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Inserts the record, or updates it in place (keeping `created_at`).
    async fn write(conn: &mut AnyConnection, seal: &Sealer, record: &Record<Self>) -> Result<(), StoreError>;

    /// Refuses deletion while other records refer to this one.
    async fn check_unreferenced(_conn: &mut AnyConnection, _id: Id<Self>) -> Result<(), StoreError> {
        Ok(())
    }

    /// What else goes with the record, in the transaction that deletes it.
    async fn removed(_conn: &mut AnyConnection, _id: Id<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Millisecond precision, as stored, so a record returned by a write equals the one read later.
/// A query written once with `IN_LIST(column, $n)` where a column is tested against a JSON array
/// of text bound at `$n`, spelt as each engine spells it: `(sqlite_query, postgres_query)`.
macro_rules! in_json_list {
    (@sqlite [$($done:expr),*] IN_LIST($column:literal, $param:literal) $($rest:tt)*) => {
        in_json_list!(@sqlite [$($done,)* $column, " IN (SELECT value FROM json_each(", $param, "))"] $($rest)*)
    };
    (@postgres [$($done:expr),*] IN_LIST($column:literal, $param:literal) $($rest:tt)*) => {
        in_json_list!(@postgres [$($done,)* $column, " IN (SELECT json_array_elements_text(CAST(", $param, " AS json)))"] $($rest)*)
    };
    (@$engine:ident [$($done:expr),*] $text:literal $($rest:tt)*) => {
        in_json_list!(@$engine [$($done,)* $text] $($rest)*)
    };
    (@$engine:ident [$($done:expr),*]) => {
        concat!($($done),*)
    };
    ($($part:tt)*) => {
        (
            in_json_list!(@sqlite [] $($part)*),
            in_json_list!(@postgres [] $($part)*),
        )
    };
}
pub(crate) use in_json_list;

impl Backend {
    /// The engine's spelling of a query written with [`in_json_list!`].
    fn pick(self, (sqlite, postgres): (&'static str, &'static str)) -> &'static str {
        match self {
            Self::Sqlite => sqlite,
            Self::Postgres => postgres,
        }
    }
}

/// A list of ids bound as one JSON array (see [`in_json_list!`]); `None` binds NULL, which the
/// queries read as "any".
fn json_list<T: std::fmt::Display>(ids: Option<impl IntoIterator<Item = T>>) -> Option<String> {
    ids.map(|ids| {
        serde_json::Value::from(ids.into_iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string()
    })
}

fn now() -> Timestamp {
    crate::clock::to_millisecond(Timestamp::now())
}

fn timestamp(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn parse_id<K>(text: &str) -> Result<Id<K>, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{text}` is not an id")))
}

/// Reads a stored text value back through the same parser that accepted it.
fn parse_stored<T: serde::de::DeserializeOwned>(
    column: &str,
    value: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// The text a unit enum serializes to, as its column stores it.
fn enum_text<T: serde::Serialize + std::fmt::Debug>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        _ => Err(StoreError::Corrupt(format!("{value:?} has no text form"))),
    }
}

async fn fetch_one<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    id: Id<T>,
) -> Result<Record<T>, StoreError> {
    T::fetch(conn, seal, &Query::by_id(id))
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found(id))
}

async fn find_by_name<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    company_id: Option<CompanyId>,
    name: &Name,
) -> Result<Option<Record<T>>, StoreError> {
    Ok(T::fetch(conn, seal, &Query::by_name(company_id, name))
        .await?
        .pop())
}

async fn check_record<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    record: &Record<T>,
) -> Result<(), StoreError> {
    if let Some((field, message)) = record.spec.contradiction() {
        return Err(StoreError::Invalid {
            field: field.to_owned(),
            message,
        });
    }
    let holder = find_by_name::<T>(conn, seal, record.company_id, record.spec.name()).await?;
    if holder.is_some_and(|other| other.id != record.id) {
        let scope = if T::OWNED_BY_COMPANY {
            " in this company"
        } else {
            ""
        };
        return Err(StoreError::conflict(
            Some("name"),
            format!(
                "a {} named {:?} already exists{scope}",
                T::KIND,
                record.spec.name().as_str()
            ),
        ));
    }
    T::check(conn, record).await
}

pub(super) async fn insert_in<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    company_id: Option<CompanyId>,
    spec: &T,
) -> Result<Record<T>, StoreError> {
    match (T::OWNED_BY_COMPANY, company_id) {
        (true, Some(company)) => match fetch_one(conn, seal, company).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                let message = format!("no company with id {company}");
                return Err(StoreError::invalid_reference("company_id", message));
            }
            Err(other) => return Err(other),
        },
        (false, None) => {}
        (owned, _) => {
            return Err(StoreError::Corrupt(format!(
                "a {} {} a company",
                T::KIND,
                if owned { "needs" } else { "cannot have" }
            )));
        }
    }
    let now = now();
    let mut spec = spec.clone();
    spec.keep_part_ids(None, &mut EndpointId::generate);
    let record = Record {
        id: Id::generate(),
        company_id,
        spec,
        created_at: now,
        updated_at: now,
    };
    check_record(conn, seal, &record).await?;
    T::write(conn, seal, &record).await?;
    bump_revision(conn).await?;
    Ok(record)
}

/// Returns the record as it now is and whether it changed. With `expected`, the change applies
/// only if the record still has those fields (optimistic concurrency for read-modify-write).
pub(super) async fn update_in<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    id: Id<T>,
    spec: &T,
    expected: Option<&T>,
) -> Result<(Record<T>, bool), StoreError> {
    let current = fetch_one(conn, seal, id).await?;
    if expected.is_some_and(|expected| *expected != current.spec) {
        return Err(StoreError::Stale);
    }
    // Before comparing: the same parts sent without their ids are no change.
    let mut spec = spec.clone();
    spec.keep_part_ids(Some(&current.spec), &mut EndpointId::generate);
    if current.spec == spec {
        return Ok((current, false));
    }
    let record = Record {
        spec,
        updated_at: now(),
        ..current
    };
    check_record(conn, seal, &record).await?;
    T::write(conn, seal, &record).await?;
    bump_revision(conn).await?;
    Ok((record, true))
}

/// Ends a transaction: committed when its work succeeded, rolled back at once when it failed.
/// A transaction merely dropped only queues its rollback until the connection is next used,
/// and until then PostgreSQL keeps every lock it took, the plan-write lock included.
async fn finish<R>(tx: Transaction<'static, Any>, result: Result<R, StoreError>) -> Result<R, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed; the connection is discarded");
            }
            Err(error)
        }
    }
}

#[async_trait]
impl<T: SqlEntity> PlanTable<T> for SqlStore {
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record<T>>, StoreError> {
        let mut tx = self.read_tx().await?;
        let result = T::fetch(&mut tx, &self.seal, &Query::list(filter)).await;
        finish(tx, result).await
    }

    async fn get(&self, id: Id<T>) -> Result<Record<T>, StoreError> {
        let mut tx = self.read_tx().await?;
        let result = fetch_one(&mut tx, &self.seal, id).await;
        finish(tx, result).await
    }

    async fn insert(&self, company_id: Option<CompanyId>, spec: &T) -> Result<Record<T>, StoreError> {
        let mut tx = self.write_tx().await?;
        let result = insert_in(&mut tx, &self.seal, company_id, spec).await;
        finish(tx, result).await
    }

    async fn update(&self, id: Id<T>, spec: &T, expected: Option<&T>) -> Result<Record<T>, StoreError> {
        let mut tx = self.write_tx().await?;
        let result = update_in(&mut tx, &self.seal, id, spec, expected).await;
        finish(tx, result.map(|(record, _)| record)).await
    }

    async fn delete(&self, id: Id<T>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let result = delete_in(&mut tx, &self.seal, id).await;
        finish(tx, result).await
    }
}

async fn delete_in<T: SqlEntity>(
    conn: &mut AnyConnection,
    seal: &Sealer,
    id: Id<T>,
) -> Result<(), StoreError> {
    fetch_one(conn, seal, id).await?;
    T::check_unreferenced(conn, id).await?;
    sqlx::query(T::DELETE)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    T::removed(conn, id).await?;
    bump_revision(conn).await
}

/// A value kept as JSON text.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

/// A JSON column read back; `column` names it when it does not read.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// Tells routing caches, in this process and others, that the plan changed.
pub(super) async fn bump_revision(conn: &mut AnyConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE plan_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl PlanStore for SqlStore {
    async fn plan_revision(&self) -> Result<i64, StoreError> {
        let (revision,): (i64,) = sqlx::query_as("SELECT revision FROM plan_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }

    async fn rtb_keys(&self) -> Result<Vec<(CampaignId, KeyDigest)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, rtb_key_sha256 FROM campaigns WHERE rtb_key_sha256 IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(id, digest)| {
                let digest = KeyDigest::from_hex(&digest)
                    .ok_or_else(|| StoreError::Corrupt(format!("campaign {id}: rtb_key_sha256")))?;
                Ok((parse_id(&id)?, digest))
            })
            .collect()
    }

    async fn set_rtb_key(&self, campaign: CampaignId, key_sha256: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let result = campaigns::set_rtb_key(&mut tx, campaign, key_sha256).await;
        finish(tx, result).await
    }

    async fn has_rtb_key(&self, campaign: CampaignId) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(campaigns::rtb_key_sha256(&mut conn, campaign).await?.is_some())
    }

    async fn import_plan(&self, plan: &Plan) -> Result<ImportReport, StoreError> {
        let mut tx = self.write_tx().await?;
        let result = import::apply(&mut tx, &self.seal, plan).await;
        finish(tx, result).await
    }
}
