//! The decision budget: a call is answered within it however the service is held up, with the
//! fallback buyer or the campaign's explicit end, and its record says so.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Engine, TEST_SETTINGS, TestApp, TestDb, expect_json, on_both_engines, test_runtime},
    provider::{CALLER, dialed, incoming, sid},
};

const PLAN: &str = r#"
[[companies]]
name = "Acme Leads"
duplicate_caller_handling = true

[[companies.publishers]]
name = "Search Partners"
external_id = "pub-1"

[[companies.buyers]]
name = "Acme"
destination = "+14155550101"

[[companies.buyers]]
name = "Night Desk"
destination = "+14155550199"

[[companies.buyers]]
name = "Capped Desk"
destination = "+14155550198"
caps = { daily = 5 }

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Acme" }]
fallback_buyer = "Night Desk"
rtb_key = "main-campaign-rtb-key-0001"

[[companies.campaigns]]
name = "No Fallback"
numbers = ["+18005550200"]
buyers = [{ buyer = "Acme" }]

[[companies.campaigns]]
name = "Capped Fallback"
numbers = ["+18005550300"]
buyers = [{ buyer = "Acme" }]
fallback_buyer = "Capped Desk"
"#;

const MAIN: &str = "+18005550100";
const NO_FALLBACK: &str = "+18005550200";
const CAPPED_FALLBACK: &str = "+18005550300";
const ACME: &str = "+14155550101";
const NIGHT_DESK: &str = "+14155550199";

/// The budget in these tests: short, so that a test waits little for it.
const BUDGET: Duration = Duration::from_millis(400);
/// Answered within the budget, give or take the time of the request itself.
const PROMPTLY: Duration = Duration::from_millis(1200);

struct Budgeted(TestApp);

impl Budgeted {
    async fn start(engine: Engine) -> Option<Self> {
        Self::start_with(engine, test_runtime()).await
    }

    async fn start_with(engine: Engine, runtime: switchboard::startup::Runtime) -> Option<Self> {
        let db = TestDb::create(engine).await?;
        let store = switchboard::store::SqlStore::connect_and_migrate(&db.url)
            .await
            .unwrap();
        let plan = switchboard::plan::Plan::parse(PLAN).unwrap();
        switchboard::store::PlanStore::import_plan(&store, &plan)
            .await
            .unwrap();
        store.close().await;
        let budget = BUDGET.as_millis().to_string();
        let mut settings = TEST_SETTINGS.to_vec();
        settings.push(("DECISION_BUDGET_MS", &budget));
        TestApp::start_on_with(db, &settings, runtime).await.map(Self)
    }

    /// A call arrives on `number`: the answer, and how long it took.
    async fn arrive(&self, n: u32, number: &str) -> (reqwest::Response, Duration) {
        let started = Instant::now();
        let response = self
            .0
            .webhook(&self.0.url("/voice/incoming"), &incoming(&sid(n), CALLER, number))
            .await;
        (response, started.elapsed())
    }

    async fn call(&self, n: u32) -> Value {
        expect_json(self.0.get(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await
    }
}

/// The explicit end: said, then hung up, nobody dialed.
async fn is_the_explicit_end(response: reqwest::Response) -> bool {
    let twiml = response.text().await.unwrap();
    twiml.contains("<Say") && twiml.contains("<Hangup") && !twiml.contains("<Dial")
}

on_both_engines! {
    async fn held_up_indexes_get_the_fallback_buyer_or_the_explicit_end_within_the_budget(app: Budgeted) {
        // The de-dupe and capacity indexes stop answering for a while (long enough for every
        // request below, however slow the machine).
        app.0.indexes.0.hold_for(Duration::from_secs(6));
        app.0.indexes.1.hold_for(Duration::from_secs(6));
        let stalled_until = Instant::now() + Duration::from_secs(6);

        let (response, took) = app.arrive(1, MAIN).await;
        assert!(took < PROMPTLY, "answered after {took:?}");
        assert_eq!(dialed(response).await.0, NIGHT_DESK, "the fallback buyer takes it");
        let call = app.call(1).await;
        assert_eq!(call["used_fallback"], true);
        let decision = (call["timeline"].as_array().unwrap().iter()).find(|e| e["kind"] == "decision").unwrap();
        assert_eq!(decision["in_haste"], true, "{decision}");
        assert_eq!(decision["considered"][0]["verdict"], "unchecked", "{decision}");
        assert_eq!(call["duplicates_avoided"], 0, "nobody was judged a duplicate");

        // No fallback, or one whose caps cannot be counted now: the campaign's explicit end.
        for (n, number) in [(2, NO_FALLBACK), (3, CAPPED_FALLBACK)] {
            let (response, took) = app.arrive(n, number).await;
            assert!(took < PROMPTLY, "answered after {took:?}");
            assert!(is_the_explicit_end(response).await);
            let call = app.call(n).await;
            assert_eq!((call["outcome"].as_str(), call["drop_reason"].as_str()), (Some("dropped"), Some("overloaded")));
        }

        // A publisher asking meanwhile gets no bid rather than a guess.
        let ping = (app.0.client.post(app.0.url("/rtbs.json")))
            .json(&json!({"key": "main-campaign-rtb-key-0001", "publisher_id": "pub-1", "caller_number": "+14155550177"}))
            .send()
            .await
            .unwrap();
        let ping = expect_json(ping, StatusCode::OK).await;
        assert_eq!((ping["status"].as_str(), ping["reason"].as_str()), (Some("no-target"), Some("overloaded")), "{ping}");

        // Once the indexes answer again, calls are routed in full.
        tokio::time::sleep(stalled_until.saturating_duration_since(Instant::now())).await;
        let body = incoming(&sid(4), "+14155550144", MAIN);
        let (number, _) = dialed(app.0.webhook(&app.0.url("/voice/incoming"), &body).await).await;
        assert_eq!(number, ACME);
    }
}

/// The call's actor cannot take the webhook up (the thread it runs on, this test's, is held
/// up): the provider still gets the explicit end within the budget, and once the actor gets the
/// webhook it records that end rather than route the call.
#[actix_web::test]
async fn a_call_no_actor_takes_up_in_time_gets_the_explicit_end_and_it_is_recorded() {
    let runtime = switchboard::startup::Runtime {
        call_actors: Some(actix::Arbiter::current()),
        ..test_runtime()
    };
    let Some(app) = Budgeted::start_with(Engine::Sqlite, runtime).await else {
        return;
    };
    // The server starts serving on this thread's first await.
    let health = app.0.client.get(app.0.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let url = app.0.url("/voice/incoming");
    let body = incoming(&sid(9), CALLER, MAIN);
    let provider = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let started = Instant::now();
            let response = TestApp::signing_client().webhook(&url, &body).await;
            let status = response.status();
            (status, is_the_explicit_end(response).await, started.elapsed())
        })
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (status, ended, took) = provider.join().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(ended, "the explicit end");
    assert!(took < PROMPTLY, "answered after {took:?}");

    let mut call = Value::Null;
    for _ in 0..50 {
        let response = app.0.get(&format!("/calls/{}", sid(9))).await;
        if response.status() == StatusCode::OK {
            call = response.json().await.unwrap();
            if call["outcome"] != Value::Null {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (call["outcome"].as_str(), call["drop_reason"].as_str()),
        (Some("dropped"), Some("overloaded")),
        "{call}"
    );
    assert_eq!(call["attempts"], 0, "nobody was dialed: {call}");
}
