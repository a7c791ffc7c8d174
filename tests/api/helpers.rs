//! Test fixtures: a fresh database on either engine, and the real service started on it.
//!
//! PostgreSQL tests use the server named by `TEST_POSTGRES_URL` (`.ci/run` starts one), each in
//! a schema of its own. Without the variable they are skipped with a notice, unless `CI` is set,
//! where a missing server is a failure: CI must run them.

use std::sync::Arc;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};
use switchboard::{config::Settings, startup::Application, store::SqlStore};
use tempfile::TempDir;
use url::Url;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The provider account's auth token in tests: every webhook is signed with it.
pub const AUTH_TOKEN: &str = "test-auth-token-5f4dcc3b5aa765d6";

#[derive(Debug, Clone, Copy)]
pub enum Engine {
    Sqlite,
    Postgres,
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
                    eprintln!("skipped: set TEST_POSTGRES_URL to run the PostgreSQL variant");
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
    pub db: TestDb,
}

impl TestApp {
    pub async fn start(engine: Engine) -> Option<Self> {
        Self::start_with(
            engine,
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("TWILIO_AUTH_TOKEN", AUTH_TOKEN)],
        )
        .await
    }

    /// Starts on a database that already holds `plan`, as a server restarted over its data.
    pub async fn start_with_plan(engine: Engine, plan: &switchboard::plan::Plan) -> Option<Self> {
        let db = TestDb::create(engine).await?;
        let store = SqlStore::connect_and_migrate(&db.url)
            .await
            .expect("connect and migrate");
        switchboard::store::Store::import_plan(&store, plan)
            .await
            .expect("import the plan");
        store.close().await;
        Self::start_on(
            db,
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("TWILIO_AUTH_TOKEN", AUTH_TOKEN)],
        )
        .await
    }

    /// Starts with these settings in addition to the database and a free port.
    pub async fn start_with(engine: Engine, settings: &[(&str, &str)]) -> Option<Self> {
        Self::start_on(TestDb::create(engine).await?, settings).await
    }

    /// Starts on an existing database.
    pub async fn start_on(db: TestDb, settings: &[(&str, &str)]) -> Option<Self> {
        let mut environment = vec![
            ("DATABASE_URL".to_owned(), db.url.clone()),
            ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        environment.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::from_sources(None, environment).expect("test settings");
        let store = Arc::new(
            SqlStore::connect_and_migrate(&db.url)
                .await
                .expect("connect and migrate"),
        );
        let app = Application::build(&settings, store.clone())
            .await
            .expect("start the service");
        let address = format!("http://{}", app.address());
        let calls = app.calls();
        actix_web::rt::spawn(app.run_until_stopped());
        Some(Self {
            address,
            client: reqwest::Client::new(),
            store,
            calls,
            db,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A second service on this one's database, as after a restart: everything it knows comes
    /// from the store. (The first keeps serving on its own port until the test ends.)
    pub async fn restart(self) -> Self {
        Self::start_on(
            self.db,
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("TWILIO_AUTH_TOKEN", AUTH_TOKEN)],
        )
        .await
        .expect("the database is still there")
    }

    /// A webhook as the provider sends it: the form body, signed for `url`.
    pub async fn webhook(&self, url: &str, body: &str) -> Response {
        let params: Vec<(String, String)> = serde_urlencoded::from_str(body).expect("a form body");
        let signature = switchboard::domain::signature::sign(
            AUTH_TOKEN,
            url,
            &params,
            switchboard::domain::signature::Algorithm::HmacSha1,
        );
        self.client
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook request")
    }

    /// An admin API request, authenticated.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(ADMIN_TOKEN)
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

    /// Creates a record and returns its id, failing the test if the API refuses.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let created = expect_json(self.post(path, body).await, StatusCode::CREATED).await;
        created["id"].as_str().expect("an id").to_owned()
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
            async fn postgres() {
                if let Some(fixture) = <$ty>::start($crate::helpers::Engine::Postgres).await {
                    run(fixture).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_engines;
