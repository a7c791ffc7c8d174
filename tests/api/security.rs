//! The security a money system needs (issue 31), outside in: postback URLs refused when saved
//! and again when delivered, after their name is resolved (so DNS rebinding reaches nothing
//! inside); receivers' answers shown to admin tokens only; RTB pings limited per key.
//!
//! No test here opens a connection outside 127.0.0.0/8 or resolves a public name: names are
//! resolved by a resolver the test holds, and the step after the guard records the addresses it
//! is handed and opens no socket.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use reqwest::{StatusCode, dns::Resolve};
use serde_json::{Value, json};
use switchboard::{
    domain::postback::ERROR_FOR_ADMINS,
    plan::Plan,
    postbacks::Network,
    store::{PlanStore, SqlStore},
};

use crate::{
    helpers::{
        Engine, TEST_SETTINGS, TestApp, TestDb, expect_error, expect_json, on_both_engines, test_runtime,
    },
    money_flows::{PLAN, QUICK_RETRIES, Receiver, checks_out, connected_call},
    provider::{CALLER, sid},
};

const SECRET: &str = "whsec_security_0123456789";

/// The test settings with the guard on, as a deployment has it: https to public addresses only.
fn guard_on() -> Vec<(&'static str, &'static str)> {
    (TEST_SETTINGS.iter().chain(&QUICK_RETRIES))
        .copied()
        .chain([
            ("POSTBACK_ALLOW_HTTP", "false"),
            ("POSTBACK_ALLOW_PRIVATE_NETWORKS", "false"),
        ])
        .collect()
}

/// The replay plan, with Acme Auto told of its calls at `urls`.
fn plan_posting_to(urls: &[String]) -> Plan {
    let endpoints: Vec<String> = (urls.iter())
        .map(|url| format!("{{ url = \"{url}\", secret = \"{SECRET}\" }}"))
        .collect();
    let plan = PLAN.replace(
        "destination = \"+14155550101\"",
        &format!(
            "destination = \"+14155550101\"\npostbacks = [{}]",
            endpoints.join(", ")
        ),
    );
    Plan::parse(&plan).unwrap()
}

/// The service on a database already holding `plan` (written to the store directly: the API
/// would refuse its URLs), with `settings` and `network`.
async fn start_holding(
    engine: Engine,
    plan: &Plan,
    settings: &[(&str, &str)],
    network: Network,
) -> Option<TestApp> {
    let db = TestDb::create(engine).await?;
    let store = SqlStore::connect_and_migrate(&db.url)
        .await
        .expect("connect and migrate");
    PlanStore::import_plan(&store, plan)
        .await
        .expect("import the plan");
    store.close().await;
    let runtime = switchboard::startup::Runtime {
        postback_network: network,
        ..test_runtime()
    };
    TestApp::start_on_with(db, settings, runtime).await
}

/// Call 1's postbacks as an admin reads them, once each has failed for good.
async fn failed_for_good(app: &TestApp, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let path = format!("/postbacks?call_sid={}", sid(1));
        let page = expect_json(app.get(&path).await, StatusCode::OK).await;
        let rows = page["data"].as_array().unwrap().clone();
        if rows.len() == expected && rows.iter().all(|row| row["status"] == "failed") {
            return rows;
        }
        assert!(Instant::now() < deadline, "{page}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

// -- At save ----------------------------------------------------------------------------------

/// The service with the guard on and an empty plan.
struct Guarded(TestApp);

impl Guarded {
    async fn start(engine: Engine) -> Option<Self> {
        TestApp::start_with(engine, &guard_on()).await.map(Self)
    }
}

on_both_engines! {
    async fn postback_urls_to_private_addresses_or_over_http_are_refused_at_save(g: Guarded) {
        let app = &g.0;
        let company = app.create("/companies", json!({"name": "Acme"})).await;
        let buyer = |url: &str| json!({
            "company_id": company,
            "name": "A",
            "destination": "+14155550101",
            "postbacks": [
                {"url": "https://hooks.example.com/fine", "secret": SECRET},
                {"url": url, "secret": SECRET},
            ],
        });
        for (url, says) in [
            ("https://127.0.0.1/hook", "loopback"),
            ("https://10.0.0.1/hook", "private"),
            ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
            ("https://[::ffff:169.254.169.254]/hook", "cloud metadata"),
            ("https://[fd00:ec2::254]/hook", "cloud metadata"),
            ("https://100.64.1.1/hook", "carrier-grade NAT"),
            ("https://localhost:8443/hook", "localhost"),
            ("http://hooks.example.com/hook", "POSTBACK_ALLOW_HTTP"),
        ] {
            let refused = app.post("/buyers", buyer(url)).await;
            let message = expect_error(
                refused,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                Some("postbacks[1].url"),
            )
            .await;
            assert!(message.contains(says), "{url}: {message}");
        }
        // A name is taken as it is (it is not resolved now), and nothing is sent to it.
        let created = app.post("/buyers", buyer("https://hooks.example.com/other")).await;
        let created = expect_json(created, StatusCode::CREATED).await;
        let id = created["id"].as_str().unwrap();
        // A change to a refused URL is refused as a new one is, by PATCH and by PUT.
        let patch = json!({"postbacks": [{"url": "https://10.1.2.3/x", "secret": SECRET}]});
        let patched = app.patch(&format!("/buyers/{id}"), patch).await;
        expect_error(patched, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks[0].url")).await;
        let mut put = buyer("https://192.168.0.10/x");
        put.as_object_mut().unwrap().remove("company_id");
        let replaced = app.put(&format!("/buyers/{id}"), put).await;
        expect_error(replaced, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks[1].url")).await;
        let publisher = json!({
            "company_id": company,
            "name": "P",
            "postbacks": [{"url": "https://172.16.0.9/x", "secret": SECRET}],
        });
        let refused = app.post("/publishers", publisher).await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks[0].url")).await;
    }
}

// -- At delivery --------------------------------------------------------------------------------

/// Resolves `rebind.example` to the addresses the test says, and nothing else.
#[derive(Default)]
struct Rebinding {
    to: Mutex<Vec<IpAddr>>,
}

impl Resolve for Rebinding {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found: Result<Vec<SocketAddr>, String> = if name.as_str() == "rebind.example" {
            let to = self.to.lock().unwrap();
            Ok(to.iter().map(|ip| SocketAddr::new(*ip, 0)).collect())
        } else {
            Err(format!("no public names in tests: {}", name.as_str()))
        };
        Box::pin(async move {
            let found = found?;
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The service with the guard on, its buyer's endpoint at `https://rebind.example/hook`, names
/// resolved by [`Rebinding`], and the addresses handed on to be connected to recorded (and no
/// socket opened).
struct Rebound {
    app: TestApp,
    resolver: Arc<Rebinding>,
    connects: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Rebound {
    async fn start(engine: Engine) -> Option<Self> {
        let resolver = Arc::new(Rebinding::default());
        let connects = Arc::new(Mutex::new(Vec::new()));
        let recorded = connects.clone();
        let network = Network {
            resolver: resolver.clone(),
            before_connect: Some(Arc::new(move |addresses: &[SocketAddr]| {
                recorded.lock().unwrap().extend_from_slice(addresses);
                Err("no sockets in tests".to_owned())
            })),
        };
        let plan = plan_posting_to(&["https://rebind.example/hook".to_owned()]);
        let app = start_holding(engine, &plan, &guard_on(), network).await?;
        Some(Self {
            app,
            resolver,
            connects,
        })
    }

    fn resolve_to(&self, ips: &[&str]) {
        *self.resolver.to.lock().unwrap() = ips.iter().map(|ip| ip.parse().unwrap()).collect();
    }

    fn connects(&self) -> Vec<SocketAddr> {
        self.connects.lock().unwrap().clone()
    }
}

on_both_engines! {
    async fn a_name_rebound_to_a_private_address_is_refused_after_resolution(r: Rebound) {
        r.resolve_to(&["10.0.0.1", "169.254.169.254", "127.0.0.1", "::1"]);
        connected_call(&r.app, 1, CALLER, 120).await;
        // Connected, converted, ended: each refused at its first try, and not tried again.
        let failed = failed_for_good(&r.app, 3).await;
        for postback in &failed {
            let error = postback["last_error"].as_str().unwrap();
            assert!(
                error.starts_with("refused by the outbound rules: rebind.example resolves to no public address")
                    && error.contains("10.0.0.1") && error.contains("169.254.169.254"),
                "{postback}"
            );
            assert_eq!(postback["attempts"], 1, "refused for good: {postback}");
        }
        assert!(r.connects().is_empty(), "nothing connected to: {:?}", r.connects());
    }

    async fn a_name_resolving_to_a_public_address_is_connected_to_and_only_there(r: Rebound) {
        // A documentation address stands for a public one; the private one beside it is dropped.
        r.resolve_to(&["10.0.0.1", "203.0.113.7"]);
        connected_call(&r.app, 1, CALLER, 120).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while r.connects().is_empty() {
            assert!(Instant::now() < deadline, "the connector was never asked");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let connects = r.connects();
        assert!(
            connects.iter().all(|at| at.ip() == "203.0.113.7".parse::<IpAddr>().unwrap()),
            "{connects:?}"
        );
        // The try failed where the test stopped it, and is retried as any unreachable receiver.
        loop {
            let page = expect_json(r.app.get(&format!("/postbacks?call_sid={}", sid(1))).await, StatusCode::OK).await;
            let stopped = (page["data"].as_array().unwrap().iter())
                .filter_map(|row| row["last_error"].as_str())
                .any(|error| error.ends_with("no sockets in tests"));
            if stopped {
                break;
            }
            assert!(Instant::now() < deadline, "{page}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TCP listener on loopback that counts connections (and answers none).
struct Counting {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Counting {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        actix_web::rt::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { port, accepted }
    }
}

/// The service with the guard on and the system's resolver, its buyer's endpoints on a
/// counting listener on loopback, written every way a URL can name it.
struct Loopback {
    app: TestApp,
    listener: Counting,
}

impl Loopback {
    async fn start(engine: Engine) -> Option<Self> {
        let listener = Counting::start().await;
        let port = listener.port;
        let urls = [
            format!("http://127.0.0.1:{port}/plain"),
            format!("https://127.0.0.1:{port}/tls"),
            format!("https://[::ffff:127.0.0.1]:{port}/mapped"),
            format!("https://localhost:{port}/named"),
        ];
        let app = start_holding(engine, &plan_posting_to(&urls), &guard_on(), Network::default()).await?;
        Some(Self { app, listener })
    }
}

on_both_engines! {
    async fn a_receiver_on_loopback_is_never_connected_to_with_the_guard_on(l: Loopback) {
        connected_call(&l.app, 1, CALLER, 120).await;
        let failed = failed_for_good(&l.app, 12).await;
        for postback in &failed {
            let error = postback["last_error"].as_str().unwrap();
            assert!(error.starts_with("refused by the outbound rules"), "{postback}");
        }
        assert_eq!(l.listener.accepted.load(Ordering::SeqCst), 0, "no connection reached it");
    }
}

// -- Receivers' answers -------------------------------------------------------------------------

/// A receiver on loopback that always answers 500 with an internal detail in its body.
async fn failing_receiver() -> String {
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::InternalServerError().body("db password hunter2 rejected")
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    base
}

/// The service (receivers on loopback allowed) telling a receiver that always fails.
struct Failing(TestApp);

impl Failing {
    async fn start(engine: Engine) -> Option<Self> {
        let receiver = failing_receiver().await;
        let plan = plan_posting_to(&[format!("{receiver}/hook")]);
        let settings: Vec<(&str, &str)> = TEST_SETTINGS.iter().chain(&QUICK_RETRIES).copied().collect();
        start_holding(engine, &plan, &settings, Network::default())
            .await
            .map(Self)
    }
}

on_both_engines! {
    async fn a_receivers_answer_is_shown_to_admin_tokens_only(f: Failing) {
        let app = &f.0;
        connected_call(app, 1, CALLER, 120).await;
        let failed = failed_for_good(app, 3).await;
        let id = failed[0]["id"].as_str().unwrap();
        let admin = expect_json(app.get(&format!("/postbacks/{id}")).await, StatusCode::OK).await;
        assert_eq!(
            admin["last_error"],
            "the receiver answered 500 Internal Server Error: db password hunter2 rejected"
        );
        let supervisor = expect_json(app.read(&format!("/postbacks/{id}")).await, StatusCode::OK).await;
        assert_eq!(supervisor["last_error"], format!("the receiver answered 500; {ERROR_FOR_ADMINS}"));
        assert_eq!(supervisor["last_status_code"], 500, "the status is no secret");
        let listed = expect_json(app.read(&format!("/postbacks?call_sid={}", sid(1))).await, StatusCode::OK).await;
        let shown = listed.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(ERROR_FOR_ADMINS), "{shown}");
    }
}

// -- Rate limits ----------------------------------------------------------------------------------

const RTB_PLAN: &str = r#"
[[companies]]
name = "Acme Leads"

[[companies.publishers]]
name = "Search Partners"
external_id = "pub-1"

[[companies.buyers]]
name = "Acme"
destination = "+14155550101"

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Acme" }]
rtb_key = "main-campaign-rtb-key-0001"

[[companies.campaigns]]
name = "Second"
numbers = ["+18005550200"]
buyers = [{ buyer = "Acme" }]
rtb_key = "second-campaign-rtb-key-02"
"#;

/// Three pings at once per key, then one a second.
struct Limited(TestApp);

impl Limited {
    async fn start(engine: Engine) -> Option<Self> {
        let settings: Vec<(&str, &str)> = (TEST_SETTINGS.iter().copied())
            .chain([("RTB_RATE_PER_SECOND", "1"), ("RTB_RATE_BURST", "3")])
            .collect();
        let plan = Plan::parse(RTB_PLAN).unwrap();
        start_holding(engine, &plan, &settings, Network::default())
            .await
            .map(Self)
    }
}

on_both_engines! {
    async fn a_burst_over_the_limit_is_refused_for_its_key_only(l: Limited) {
        let app = &l.0;
        let ping = |key: &str| {
            let url = app.url(&format!("/rtbs.json?key={key}&publisher_id=pub-1&caller_number=%2B14155550123"));
            let client = app.client.clone();
            async move { client.post(url).send().await.expect("ping") }
        };
        for _ in 0..3 {
            assert_eq!(ping("main-campaign-rtb-key-0001").await.status(), StatusCode::OK);
        }
        let refused = ping("main-campaign-rtb-key-0001").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        // Another campaign's key is not held up by it.
        for _ in 0..3 {
            assert_eq!(ping("second-campaign-rtb-key-02").await.status(), StatusCode::OK);
        }
        // A refused ping is not logged as a ping: the log shows the three taken per key.
        let log = expect_json(app.read("/rtb?limit=100").await, StatusCode::OK).await;
        assert_eq!(log["data"].as_array().unwrap().len(), 6, "{log}");
    }
}

// -- Secrets at rest ------------------------------------------------------------------------------

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const BUYER_SECRET: &str = "whsec_AtRestBuyer_0123456789";
const PUBLISHER_SECRET: &str = "whsec_AtRestPublisher_01234";
const SIP_PASSWORD: &str = "sip-pass-AtRest-4242";

/// The service with `SECRETS_KEY` set (receivers on loopback allowed), and a receiver.
struct AtRest {
    app: TestApp,
    receiver: Receiver,
}

impl AtRest {
    async fn start(engine: Engine) -> Option<Self> {
        let settings: Vec<(&str, &str)> = (TEST_SETTINGS.iter().copied())
            .chain([("SECRETS_KEY", KEY)])
            .collect();
        let app = TestApp::start_with(engine, &settings).await?;
        Some(Self {
            app,
            receiver: Receiver::start().await,
        })
    }
}

/// Every text column of the rows `sql` selects, run together (what someone with the database reads).
async fn raw_rows(app: &TestApp, sql: &'static str) -> String {
    use sqlx::Row;
    let mut conn = app.db.connect().await;
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
    let mut all = String::new();
    for row in &rows {
        for i in 0..row.len() {
            if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                all.push_str(&text);
                all.push('\n');
            }
        }
    }
    all
}

on_both_engines! {
    async fn secrets_are_stored_encrypted_and_read_back_in_clear(a: AtRest) {
        let (app, receiver) = (&a.app, &a.receiver);
        let company = app.create("/companies", json!({"name": "Acme"})).await;
        let buyer = app.create("/buyers", json!({
            "company_id": company, "name": "Acme Auto", "destination": "+14155550101",
            "conversion_seconds": 90,
            "postbacks": [{"url": receiver.url("/buyer"), "secret": BUYER_SECRET}],
        })).await;
        let sip = app.create("/buyers", json!({
            "company_id": company, "name": "PBX", "destination": "sip:intake@pbx.example",
            "sip_auth": {"username": "intake", "password": SIP_PASSWORD},
        })).await;
        app.create("/campaigns", json!({
            "company_id": company, "name": "Main", "numbers": [crate::provider::MAIN],
            "buyers": [{"buyer_id": buyer, "priority": 1}, {"buyer_id": sip, "priority": 2}],
        })).await;
        app.create("/publishers", json!({
            "company_id": company, "name": "Search", "numbers": [crate::provider::MAIN],
            "postbacks": [{"url": receiver.url("/publisher"), "secret": PUBLISHER_SECRET}],
        })).await;

        // Delivered, signed with the secrets read back.
        connected_call(app, 1, CALLER, 120).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while receiver.received().iter().filter(|r| r.acknowledged).count() < 6 {
            assert!(Instant::now() < deadline, "{:?}", receiver.received());
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        for received in receiver.received() {
            let secret = if received.path == "/buyer" { BUYER_SECRET } else { PUBLISHER_SECRET };
            assert!(checks_out(&received, secret), "{received:?}");
        }

        // The database holds none of them in clear: not the plan, not the outbox.
        let stored = [
            raw_rows(app, "SELECT postbacks, sip_auth FROM buyers").await,
            raw_rows(app, "SELECT postbacks FROM publishers").await,
            raw_rows(app, "SELECT url, secret, body, last_error FROM postbacks").await,
        ]
        .join("\n");
        for secret in [BUYER_SECRET, PUBLISHER_SECRET, SIP_PASSWORD] {
            assert!(!stored.contains(secret), "{secret} stored in clear: {stored}");
        }
        assert_eq!(stored.matches("\"sb1:").count(), 3, "each secret stored sealed: {stored}");

        // An admin reads them in clear; a supervisor, redacted.
        let read = expect_json(app.get(&format!("/buyers/{sip}")).await, StatusCode::OK).await;
        assert_eq!(read["sip_auth"]["password"], SIP_PASSWORD);
        let read = expect_json(app.read(&format!("/buyers/{buyer}")).await, StatusCode::OK).await;
        assert_eq!(read["postbacks"][0]["secret"], "********");

        // A value stored before encryption is read as it is, and sealed at its next write.
        let mut conn = app.db.connect().await;
        sqlx::query("UPDATE buyers SET sip_auth = $1 WHERE id = $2")
            .bind(r#"{"username":"intake","password":"stored-in-clear-1"}"#)
            .bind(&sip)
            .execute(&mut conn)
            .await
            .unwrap();
        let read = expect_json(app.get(&format!("/buyers/{sip}")).await, StatusCode::OK).await;
        assert_eq!(read["sip_auth"]["password"], "stored-in-clear-1");
        expect_json(app.patch(&format!("/buyers/{sip}"), json!({"paused": true})).await, StatusCode::OK).await;
        let stored = raw_rows(app, "SELECT sip_auth FROM buyers").await;
        assert!(!stored.contains("stored-in-clear-1"), "{stored}");
        let read = expect_json(app.get(&format!("/buyers/{sip}")).await, StatusCode::OK).await;
        assert_eq!(read["sip_auth"]["password"], "stored-in-clear-1");
    }
}
