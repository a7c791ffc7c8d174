//! Test fixtures: a fresh database on either engine, and the real service started on it.
//!
//! PostgreSQL tests use the server named by `TEST_POSTGRES_URL` (`.ci/run` starts one), each in
//! a schema of its own. Without the variable they are skipped with a notice, unless `CI` is set,
//! where a missing server is a failure: CI must run them.

use std::sync::Arc;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};
use switchboard::{
    calls::CallTimings,
    clock::SystemClock,
    config::Settings,
    domain::{
        dedupe::{Mark, MarkBatch, Scope},
        phone::E164,
    },
    startup::{Application, Runtime},
    store::{SqlStore, Stores},
};
use tempfile::TempDir;
use url::Url;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A read-only supervisor token.
pub const SUPERVISOR_TOKEN: &str = "test-supervisor-token-0123456789";
/// The provider account's auth token in tests: every webhook is signed with it.
pub const AUTH_TOKEN: &str = "test-auth-token-5f4dcc3b5aa765d6";
/// What every test service is started with.
pub const TEST_SETTINGS: [(&str, &str); 6] = [
    ("ADMIN_TOKEN", ADMIN_TOKEN),
    ("SUPERVISOR_TOKENS", SUPERVISOR_TOKEN),
    ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
    // A restart stops the first server at once (the drain has a test of its own).
    ("DRAIN_SECONDS", "0"),
    // Receivers in tests listen on 127.0.0.1 over plain http (the guard has tests of its own).
    ("POSTBACK_ALLOW_HTTP", "true"),
    ("POSTBACK_ALLOW_PRIVATE_NETWORKS", "true"),
];

#[derive(Debug, Clone, Copy)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Call actors on a short leash, so tests see them stop and retry without waiting long.
pub fn test_timings() -> CallTimings {
    CallTimings {
        ended_grace: std::time::Duration::from_millis(300),
        save_retry: std::time::Duration::from_millis(100),
        sweep_every: std::time::Duration::from_millis(100),
        settle_after: std::time::Duration::from_millis(500),
        ..CallTimings::default()
    }
}

/// A machine's clock that runs apart from the others' by `0` (ahead when positive).
pub struct SkewedClock(pub jiff::SignedDuration);

impl switchboard::clock::Clock for SkewedClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now() + self.0
    }

    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// The system clock, test timings and a fixed routing seed.
pub fn test_runtime() -> Runtime {
    Runtime {
        clock: Arc::new(SystemClock),
        timings: test_timings(),
        routing_seed: 1,
        call_actors: None,
        postback_network: switchboard::postbacks::Network::default(),
    }
}

/// A database nobody else uses, kept until the test ends.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
    /// PostgreSQL: the server and the schema to drop afterwards.
    schema: Option<(String, String)>,
}

impl TestDb {
    /// A connection of its own, for looking at what the service stored.
    pub async fn connect(&self) -> AnyConnection {
        AnyConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop is not async, and the test's runtime may be gone: a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = AnyConnection::connect(&base).await?;
                // Cleanup must never hang a test run; a schema left behind is harmless.
                admin.execute("SET lock_timeout = '5s'").await?;
                admin
                    .execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .await?;
                admin.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop a test schema: {error}");
        }
    }
}

impl TestDb {
    /// `None` when the engine is not available here (see the module documentation).
    pub async fn create(engine: Engine) -> Option<Self> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("switchboard.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    schema: None,
                })
            }
            Engine::Postgres => {
                let Ok(base) = std::env::var("TEST_POSTGRES_URL") else {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI must run the PostgreSQL tests: set TEST_POSTGRES_URL"
                    );
                    skipped("set TEST_POSTGRES_URL to run the PostgreSQL variant");
                    return None;
                };
                sqlx::any::install_default_drivers();
                let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = AnyConnection::connect(&base)
                    .await
                    .expect("TEST_POSTGRES_URL must be reachable");
                // The schema name is ours, not input.
                admin
                    .execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .await
                    .expect("create the test schema");
                admin.close().await.ok();
                let mut url = Url::parse(&base).expect("TEST_POSTGRES_URL is a URL");
                url.query_pairs_mut().append_pair("options[search_path]", &schema);
                Some(Self {
                    url: url.into(),
                    _dir: None,
                    schema: Some((base, schema)),
                })
            }
        }
    }
}

/// A stored de-dupe mark, as tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMark {
    pub caller: E164,
    pub scope: Scope,
    pub mark: Mark,
}

/// Every stored de-dupe mark, read `size` at a time.
pub async fn stored_marks_by(store: &SqlStore, size: u32) -> (Vec<MarkBatch>, Vec<StoredMark>) {
    let mut batches = Vec::new();
    store
        .dedupe_marks_by(size, &mut |batch| batches.push(batch))
        .await
        .unwrap();
    let marks = (batches.iter())
        .flat_map(|batch| {
            batch.marks.iter().map(|stored| StoredMark {
                caller: E164::from_provider(&format!("+{}", stored.caller)).unwrap(),
                scope: batch.scopes[stored.scope as usize].clone(),
                mark: stored.mark,
            })
        })
        .collect();
    (batches, marks)
}

/// Every stored de-dupe mark.
pub async fn stored_marks(store: &SqlStore) -> Vec<StoredMark> {
    stored_marks_by(store, 1000).await.1
}

/// A migrated store on a fresh database.
pub struct TestStore {
    pub store: SqlStore,
    pub db: TestDb,
}

impl TestStore {
    pub async fn start(engine: Engine) -> Option<Self> {
        let db = TestDb::create(engine).await?;
        let store = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        Some(Self { store, db })
    }
}

/// The real service on a free loopback port, with its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Arc<SqlStore>,
    pub calls: switchboard::calls::Calls,
    /// Where the de-dupe and capacity indexes run: a test may hold it up.
    /// The de-dupe and capacity indexes, which tests hold up.
    pub indexes: (switchboard::decide::Dedupe, switchboard::decide::Capacity),
    pub db: TestDb,
    /// Kept across a restart: the same clock goes on.
    pub runtime: Runtime,
    /// What it was started with (the test settings included): another node gets the same.
    settings: Vec<(String, String)>,
    stopper: switchboard::startup::Stopper,
    served: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub async fn start(engine: Engine) -> Option<Self> {
        Self::start_with(engine, &TEST_SETTINGS).await
    }

    /// Starts on a database that already holds `plan`, as a server restarted over its data.
    pub async fn start_with_plan(engine: Engine, plan: &switchboard::plan::Plan) -> Option<Self> {
        Self::start_with_plan_on(engine, plan, test_runtime()).await
    }

    /// As [`TestApp::start_with_plan`], with settings in addition to the test ones.
    pub async fn start_with_plan_and(
        engine: Engine,
        plan: &switchboard::plan::Plan,
        settings: &[(&str, &str)],
    ) -> Option<Self> {
        let db = TestDb::create(engine).await?;
        let store = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        switchboard::store::PlanStore::import_plan(&store, plan)
            .await
            .expect("import the plan");
        store.close().await;
        let settings: Vec<(&str, &str)> = TEST_SETTINGS.iter().chain(settings).copied().collect();
        Self::start_on_with(db, &settings, test_runtime()).await
    }

    /// As [`TestApp::start_with_plan`], with a clock (and timings, seed) of the test's choosing.
    pub async fn start_with_plan_on(
        engine: Engine,
        plan: &switchboard::plan::Plan,
        runtime: Runtime,
    ) -> Option<Self> {
        let db = TestDb::create(engine).await?;
        let store = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        switchboard::store::PlanStore::import_plan(&store, plan)
            .await
            .expect("import the plan");
        store.close().await;
        Self::start_on_with(db, &TEST_SETTINGS, runtime).await
    }

    /// Starts with these settings in addition to the database and a free port.
    pub async fn start_with(engine: Engine, settings: &[(&str, &str)]) -> Option<Self> {
        Self::start_on(TestDb::create(engine).await?, settings).await
    }

    /// Starts on an existing database.
    pub async fn start_on(db: TestDb, settings: &[(&str, &str)]) -> Option<Self> {
        Self::start_on_with(db, settings, test_runtime()).await
    }

    pub async fn start_on_with(db: TestDb, settings: &[(&str, &str)], runtime: Runtime) -> Option<Self> {
        Self::start_on_through(db, settings, runtime, |store| Stores::of(store)).await
    }

    /// Starts on a database holding `plan`, with its call store behind a switch the test holds
    /// (see [`FlakyStore`]).
    pub async fn start_flaky(engine: Engine, plan: &str) -> Option<(Self, Arc<FlakyStore>)> {
        let db = TestDb::create(engine).await?;
        let store = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        let plan = switchboard::plan::Plan::parse(plan).expect("a valid plan");
        switchboard::store::PlanStore::import_plan(&store, &plan)
            .await
            .expect("import the plan");
        store.close().await;
        Some(Self::start_flaky_on(db, test_runtime()).await)
    }

    async fn start_flaky_on(db: TestDb, runtime: Runtime) -> (Self, Arc<FlakyStore>) {
        let mut flaky = None;
        let app = Self::start_on_through(db, &TEST_SETTINGS, runtime, |store| {
            let switch = Arc::new(FlakyStore::new((*store).clone()));
            flaky = Some(switch.clone());
            Stores {
                calls: switch.clone(),
                payouts: switch,
                ..Stores::of(store)
            }
        })
        .await
        .expect("the database is there");
        (app, flaky.expect("the store was switched"))
    }

    /// As [`TestApp::restart`], with the new service's call store behind a switch.
    pub async fn restart_flaky(self) -> (Self, Arc<FlakyStore>) {
        let (db, runtime) = self.stop().await;
        Self::start_flaky_on(db, runtime).await
    }

    async fn start_on_through(
        db: TestDb,
        settings: &[(&str, &str)],
        runtime: Runtime,
        stores: impl FnOnce(Arc<SqlStore>) -> Stores,
    ) -> Option<Self> {
        let given: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut environment = vec![
            ("DATABASE_URL".to_owned(), db.url.clone()),
            ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        environment.extend(given.iter().cloned());
        let settings = Settings::from_sources(None, environment).expect("test settings");
        // As `serve` opens it: with SECRETS_KEY if given.
        let store = SqlStore::connect_with_keys(&db.url, &settings.secrets_keys)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let store = Arc::new(store);
        let app = Application::build_with(&settings, stores(store.clone()), runtime.clone())
            .await
            .expect("start the service");
        let address = format!("http://{}", app.address());
        let calls = app.calls();
        let indexes = app.indexes();
        let stopper = app.stopper();
        let served = actix_web::rt::spawn(app.run_until_stopped());
        Some(Self {
            address,
            client: reqwest::Client::new(),
            store,
            calls,
            indexes,
            db,
            runtime,
            settings: given,
            stopper,
            served,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Another node on this one's database (several nodes on one PostgreSQL), serving until the
    /// test ends: its address.
    pub async fn another_node(&self) -> String {
        self.another_node_with(self.runtime.clone()).await
    }

    /// As [`TestApp::another_node`], keeping time by `runtime`'s clock.
    pub async fn another_node_with(&self, runtime: Runtime) -> String {
        let environment = [
            ("DATABASE_URL".to_owned(), self.db.url.clone()),
            ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let environment = environment.into_iter().chain(self.settings.iter().cloned());
        let settings = Settings::from_sources(None, environment).expect("test settings");
        let store = Arc::new(
            SqlStore::connect_and_migrate(&self.db.url)
                .await
                .expect("connect and migrate"),
        );
        let app = Application::build_with(&settings, Stores::of(store), runtime)
            .await
            .expect("start another node");
        let address = format!("http://{}", app.address());
        actix_web::rt::spawn(app.run_until_stopped());
        address
    }

    /// A second service on this one's database, as after a restart: everything it knows comes
    /// from the store. The first is stopped first, as SIGTERM stops it (what it held back is
    /// written on the way out).
    pub async fn restart(self) -> Self {
        let (db, runtime) = self.stop().await;
        Self::start_on_with(db, &TEST_SETTINGS, runtime)
            .await
            .expect("the database is still there")
    }

    /// Stops the service as SIGTERM stops it (what it held back is written on the way out):
    /// its database and runtime, for another to start on.
    async fn stop(self) -> (TestDb, Runtime) {
        self.stopper.stop();
        let stopped = actix_web::rt::time::timeout(std::time::Duration::from_secs(30), self.served).await;
        let served = stopped.expect("the first server stops within 30 s");
        served
            .expect("the first server's task")
            .expect("the first server stops cleanly");
        let refused = self.client.get(format!("{}/healthz", self.address)).send().await;
        assert!(refused.is_err(), "the first server no longer answers");
        (self.db, self.runtime)
    }

    /// A client that signs webhooks, for a service started by hand.
    pub fn signing_client() -> SigningClient {
        SigningClient(reqwest::Client::new())
    }

    /// A webhook as the provider sends it: the form body, signed for `url`.
    pub async fn webhook(&self, url: &str, body: &str) -> Response {
        SigningClient(self.client.clone()).webhook(url, body).await
    }

    /// An admin API request, authenticated.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// A supervisor's read of the API.
    pub async fn read(&self, path: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/v1{path}")))
            .bearer_auth(SUPERVISOR_TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.admin(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.admin(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.admin(reqwest::Method::PATCH, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.admin(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.admin(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("request")
    }

    /// Starts on a database holding the plan file `plan`, with a manual clock set to `at`.
    pub async fn start_clocked(
        engine: Engine,
        plan: &str,
        at: &str,
    ) -> Option<(Self, Arc<switchboard::clock::ManualClock>)> {
        let clock = Arc::new(switchboard::clock::ManualClock::new(at.parse().expect("a time")));
        let runtime = Runtime {
            clock: clock.clone(),
            ..test_runtime()
        };
        let plan = switchboard::plan::Plan::parse(plan).expect("a valid plan");
        let app = Self::start_with_plan_on(engine, &plan, runtime).await?;
        Some((app, clock))
    }

    /// The id of the record of a kind (`/buyers`) with this name.
    pub async fn id_of(&self, kind: &str, name: &str) -> String {
        let page = expect_json(self.get(kind).await, StatusCode::OK).await;
        (page["data"].as_array().expect("a page").iter())
            .find(|record| record["name"] == name)
            .and_then(|record| record["id"].as_str())
            .unwrap_or_else(|| panic!("no record named {name} in {kind}"))
            .to_owned()
    }

    /// Creates a record and returns its id, failing the test if the API refuses.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let created = expect_json(self.post(path, body).await, StatusCode::CREATED).await;
        created["id"].as_str().expect("an id").to_owned()
    }
}

pub struct SigningClient(reqwest::Client);

impl SigningClient {
    /// A webhook as the provider sends it: the form body, signed for `url`.
    pub async fn webhook(&self, url: &str, body: &str) -> Response {
        self.webhook_to(url, url, body).await
    }

    /// A webhook signed for `url` that reaches `send_to` instead (a load balancer sent it to
    /// another node).
    pub async fn webhook_to(&self, send_to: &str, url: &str, body: &str) -> Response {
        let params: Vec<(String, String)> = serde_urlencoded::from_str(body).expect("a form body");
        let signature = switchboard::domain::signature::sign(
            AUTH_TOKEN,
            url,
            &params,
            switchboard::domain::signature::Algorithm::HmacSha1,
        );
        self.0
            .post(send_to)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook request")
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "unexpected status; body: {body}");
    body
}

/// Asserts an API error: its status, `code` and, when given, the field it names.
pub async fn expect_error(response: Response, status: StatusCode, code: &str, field: Option<&str>) -> String {
    let body = expect_json(response, status).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
    body["error"]["message"].as_str().unwrap_or_default().to_owned()
}

/// Runs each test once per database engine: `name::sqlite` and `name::postgres`.
/// The fixture type provides `start(Engine) -> Option<Self>`; `None` skips.
/// Says in the test run's output (not captured with the passing test's) that a test did not
/// run, and why.
pub fn skipped(why: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    writeln!(std::io::stderr(), "SKIPPED {name}: {why}").ok();
}

macro_rules! on_both_engines {
    ($(async fn $name:ident($fixture:ident: $ty:ty) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($fixture: $ty) $body

            #[actix_web::test]
            async fn sqlite() {
                if let Some(fixture) = <$ty>::start($crate::helpers::Engine::Sqlite).await {
                    run(fixture).await
                }
            }

            #[actix_web::test]
            #[cfg_attr(not(test_postgres), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
            async fn postgres() {
                if let Some(fixture) = <$ty>::start($crate::helpers::Engine::Postgres).await {
                    run(fixture).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_engines;

/// The service on SQLite holding `plan`, through a store whose database a test can take away
/// (`store.set_down`).
pub struct FlakyApp {
    pub store: Arc<FlakyStore>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    _db: TestDb,
}

impl FlakyApp {
    pub async fn start(plan: &str) -> Self {
        let db = TestDb::create(Engine::Sqlite)
            .await
            .expect("SQLite is always there");
        let sql = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        let plan = switchboard::plan::Plan::parse(plan).expect("a valid plan");
        switchboard::store::PlanStore::import_plan(&sql, &plan)
            .await
            .expect("import the plan");
        let store = Arc::new(FlakyStore::new(sql.clone()));
        // Only the parts an outage shows in go through the switch.
        let stores = Stores {
            calls: store.clone(),
            rtb: store.clone(),
            supervision: store.clone(),
            ..Stores::of(Arc::new(sql))
        };
        let environment = (TEST_SETTINGS.iter())
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .chain([("BIND".to_owned(), "127.0.0.1:0".to_owned())]);
        let settings = Settings::from_sources(None, environment).expect("test settings");
        let app = Application::build_with(&settings, stores, test_runtime())
            .await
            .expect("start the service");
        let base = format!("http://{}", app.address());
        actix_web::rt::spawn(app.run_until_stopped());
        Self { store, base, _db: db }
    }
}

/// What a test does to the database behind a [`FlakyStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It answers as it does.
    None,
    /// It has gone away: everything fails at once.
    Down,
    /// It is slow: a read waits this long before the database is asked; a save is made at once
    /// but its answer held back this long (lost, for whoever stopped waiting, after its effect).
    Slow(std::time::Duration),
}

/// A store that can be switched off for calls, as a database that goes away and comes back, or
/// slowed down. The plan stays readable (it is cached in memory anyway).
pub struct FlakyStore {
    pub inner: SqlStore,
    fault: std::sync::Mutex<Fault>,
}

impl FlakyStore {
    pub fn new(inner: SqlStore) -> Self {
        Self {
            inner,
            fault: std::sync::Mutex::new(Fault::None),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.set(if down { Fault::Down } else { Fault::None });
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    fn check(&self) -> Result<(), switchboard::store::StoreError> {
        if self.fault() == Fault::Down {
            Err(switchboard::store::StoreError::Unavailable(
                sqlx::Error::PoolTimedOut,
            ))
        } else {
            Ok(())
        }
    }

    /// A read, as slow as the database is now.
    async fn read_slowly(&self) -> Result<(), switchboard::store::StoreError> {
        if let Fault::Slow(delay) = self.fault() {
            actix_web::rt::time::sleep(delay).await;
        }
        self.check()
    }
}

mod flaky {
    //! The store parts a database outage shows in: calls, the RTB log, supervisors' reads.
    //! (The plan is cached in memory and everything else goes to the database as is.)
    use async_trait::async_trait;
    use jiff::Timestamp;
    use switchboard::{
        domain::{
            call::{CallRecord, CallSid},
            dedupe::MarkBatch,
            rtb::{LoggedPing, Reservation, RtbWrite},
            series::{BucketCounts, Window},
            supervision::{BuyerStats, CallSummary, CampaignStats, PublisherStats},
            timeline::TimelineEntry,
        },
        store::{
            CallChange, CallFilter, CallStore, PayoutClaim, PayoutStore, PingFilter, RtbStore, Saved,
            StoreError, SupervisionStore, Within,
        },
    };

    use super::{Fault, FlakyStore};

    #[async_trait]
    impl CallStore for FlakyStore {
        async fn save_call(&self, change: &CallChange<'_>) -> Result<Saved, StoreError> {
            self.check()?;
            let saved = self.inner.save_call(change).await;
            if let Fault::Slow(delay) = self.fault() {
                actix_web::rt::time::sleep(delay).await;
            }
            saved
        }
        async fn call(&self, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
            self.read_slowly().await?;
            self.inner.call(sid).await
        }
        async fn timeline(&self, sid: &CallSid) -> Result<Vec<TimelineEntry>, StoreError> {
            self.check()?;
            self.inner.timeline(sid).await
        }
        async fn dedupe_marks(&self, each: &mut (dyn FnMut(MarkBatch) + Send)) -> Result<(), StoreError> {
            self.check()?;
            self.inner.dedupe_marks(each).await
        }
        async fn unended_before(&self, before: Timestamp, limit: u32) -> Result<Vec<CallSid>, StoreError> {
            self.check()?;
            self.inner.unended_before(before, limit).await
        }
        async fn unsettled(
            &self,
            since: Timestamp,
            before: Timestamp,
            limit: u32,
        ) -> Result<Vec<CallSid>, StoreError> {
            self.check()?;
            self.inner.unsettled(since, before, limit).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.check()?;
            self.inner.ping().await
        }
    }

    #[async_trait]
    impl PayoutStore for FlakyStore {
        async fn pay_once(&self, claim: &PayoutClaim<'_>) -> Result<bool, StoreError> {
            self.check()?;
            let paid = self.inner.pay_once(claim).await;
            if let Fault::Slow(delay) = self.fault() {
                actix_web::rt::time::sleep(delay).await;
            }
            paid
        }
    }

    #[async_trait]
    impl RtbStore for FlakyStore {
        async fn save_rtb(&self, writes: &[RtbWrite]) -> Result<(), StoreError> {
            self.check()?;
            self.inner.save_rtb(writes).await
        }
        async fn held_reservations(
            &self,
            at: Timestamp,
        ) -> Result<Vec<(Reservation, Option<CallSid>)>, StoreError> {
            self.check()?;
            self.inner.held_reservations(at).await
        }
        async fn rtb_pings(&self, filter: &PingFilter) -> Result<Vec<LoggedPing>, StoreError> {
            self.check()?;
            self.inner.rtb_pings(filter).await
        }
    }

    #[async_trait]
    impl SupervisionStore for FlakyStore {
        async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError> {
            self.check()?;
            self.inner.calls(filter).await
        }
        async fn campaign_stats(
            &self,
            from: Timestamp,
            to: Timestamp,
        ) -> Result<Vec<CampaignStats>, StoreError> {
            self.check()?;
            self.inner.campaign_stats(from, to).await
        }
        async fn buyer_stats(&self, from: Timestamp, to: Timestamp) -> Result<Vec<BuyerStats>, StoreError> {
            self.check()?;
            self.inner.buyer_stats(from, to).await
        }
        async fn campaign_series(
            &self,
            window: &Window,
            within: &Within,
        ) -> Result<Vec<BucketCounts>, StoreError> {
            self.check()?;
            self.inner.campaign_series(window, within).await
        }
        async fn publisher_stats(
            &self,
            from: Timestamp,
            to: Timestamp,
        ) -> Result<Vec<PublisherStats>, StoreError> {
            self.check()?;
            self.inner.publisher_stats(from, to).await
        }
    }
}
