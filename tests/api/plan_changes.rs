//! A plan change binds every call that arrives after it, bursts included: on the node that made
//! it, every call after the API's answer; on another node, every call once its plan revision
//! (`switchboard_plan_revision` in `/metrics`) shows the change, and a number it does not know
//! yet is looked up in the store before any call is refused.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::{
    plan::Plan,
    store::{PlanStore, SqlStore},
};

use crate::{
    helpers::{Engine, SUPERVISOR_TOKEN, TestApp, expect_json, on_both_engines},
    provider::{MAIN, incoming, sid},
};

/// Main sends its calls to Old first, New second.
const PLAN: &str = r#"
[[companies]]
name = "Acme Leads"

[[companies.buyers]]
name = "Old"
destination = "+14155550101"

[[companies.buyers]]
name = "New"
destination = "+14155550102"

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Old", priority = 1 }, { buyer = "New", priority = 2 }]
"#;

const OLD: &str = "+14155550101";
const NEW: &str = "+14155550102";
/// A number no campaign has until a test creates one.
const SPRING: &str = "+18885550111";

/// How many first calls arrive at once.
const BURST: u32 = 24;

/// What a call was answered: the number dialed, or the TwiML when it was not a dial.
async fn answered(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let twiml = response.text().await.unwrap();
    let dialed = twiml
        .contains("<Dial")
        .then(|| twiml.split("\">").nth(2)?.split('<').next())
        .flatten();
    dialed.map_or(twiml.clone(), str::to_owned)
}

/// `BURST` first calls at once to `number` on the node at `base`, from callers of their own
/// (calls `first`, `first + 1`…): what each was answered.
async fn burst(base: &str, number: &str, first: u32) -> Vec<String> {
    let provider = TestApp::signing_client();
    let url = format!("{base}/voice/incoming");
    let calls = (first..first + BURST).map(|n| {
        let body = incoming(&sid(n), &format!("+1415666{n:04}"), number);
        let (provider, url) = (&provider, &url);
        async move { answered(provider.webhook(url, &body).await).await }
    });
    join_all(calls).await
}

/// Every call of a burst dialed `buyer`.
fn all_dialed(answers: &[String], buyer: &str) {
    let others: Vec<&String> = answers.iter().filter(|answer| *answer != buyer).collect();
    assert!(
        others.is_empty(),
        "{} of {BURST} calls not sent to {buyer}: {others:?}",
        others.len()
    );
}

/// The service on [`PLAN`].
struct Changing {
    app: TestApp,
}

impl Changing {
    async fn start(engine: Engine) -> Option<Self> {
        let app = TestApp::start_with_plan(engine, &Plan::parse(PLAN).unwrap()).await?;
        Some(Self { app })
    }

    async fn set_buyers(&self, buyers: Value) {
        let main = self.app.id_of("/campaigns", "Main").await;
        let changed = self
            .app
            .patch(&format!("/campaigns/{main}"), json!({ "buyers": buyers }))
            .await;
        expect_json(changed, StatusCode::OK).await;
    }
}

/// A new campaign on `SPRING`, with New as its buyer, created through `node`'s API.
async fn spring_campaign_created(node: &TestApp) {
    let company = node.id_of("/companies", "Acme Leads").await;
    let new = node.id_of("/buyers", "New").await;
    let campaign = json!({
        "company_id": company, "name": "Spring Promo", "numbers": [SPRING],
        "buyers": [{"buyer_id": new}],
    });
    expect_json(node.post("/campaigns", campaign).await, StatusCode::CREATED).await;
}

/// The plan revision the node at `base` routes on, as `/metrics` shows it.
async fn plan_revision_of(client: &reqwest::Client, base: &str) -> i64 {
    let metrics = (client
        .get(format!("{base}/metrics"))
        .bearer_auth(SUPERVISOR_TOKEN))
    .send()
    .await
    .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    (text.lines())
        .find_map(|line| line.strip_prefix("switchboard_plan_revision "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no plan revision in\n{text}"))
}

/// Waits until the node at `base` routes on the plan of `revision` or later.
async fn until_revision(client: &reqwest::Client, base: &str, revision: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = plan_revision_of(client, base).await;
        if shown >= revision {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} still on revision {shown}, not {revision}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_engines! {
    async fn a_burst_of_first_calls_right_after_a_campaign_is_created_is_routed_not_refused(changing: Changing) {
        let app = &changing.app;
        // The plan is in hand: a call routes on it.
        assert_eq!(burst(&app.url(""), MAIN, 1).await[0], OLD);
        spring_campaign_created(app).await;
        let answers = burst(&app.url(""), SPRING, 100).await;
        all_dialed(&answers, NEW);
    }

    async fn a_burst_to_a_number_another_process_just_imported_is_routed_not_refused(changing: Changing) {
        // A campaign imported by another process (as `switchboard import` does), which on
        // SQLite sends no news: the calls to its number, arriving while the plan in hand is
        // fresh, look in the store before being refused.
        let app = &changing.app;
        // The plan in hand was just looked at: the next calls route on it without a look.
        all_dialed(&burst(&app.url(""), MAIN, 1).await, OLD);
        let importer = SqlStore::connect(&app.db.url).await.unwrap();
        let spring = format!(
            "{PLAN}\n[[companies.campaigns]]\nname = \"Spring Promo\"\nnumbers = [\"{SPRING}\"]\nbuyers = [{{ buyer = \"New\" }}]\n"
        );
        importer.import_plan(&Plan::parse(&spring).unwrap()).await.unwrap();
        importer.close().await;
        all_dialed(&burst(&app.url(""), SPRING, 100).await, NEW);
    }

    async fn a_burst_right_after_the_buyers_change_routes_on_the_new_buyers(changing: Changing) {
        let app = &changing.app;
        all_dialed(&burst(&app.url(""), MAIN, 1).await, OLD);
        let (old, new) = (app.id_of("/buyers", "Old").await, app.id_of("/buyers", "New").await);

        changing.set_buyers(json!([{"buyer_id": new}])).await;
        all_dialed(&burst(&app.url(""), MAIN, 100).await, NEW);

        changing.set_buyers(json!([{"buyer_id": old, "priority": 1}, {"buyer_id": new, "priority": 2}])).await;
        all_dialed(&burst(&app.url(""), MAIN, 200).await, OLD);

        let paused = app.patch(&format!("/buyers/{old}"), json!({"paused": true})).await;
        expect_json(paused, StatusCode::OK).await;
        all_dialed(&burst(&app.url(""), MAIN, 300).await, NEW);

        // The node shows the revision it routes on: the store's, after the last change.
        let revision = app.store.plan_revision().await.unwrap();
        assert_eq!(plan_revision_of(&app.client, &app.url("")).await, revision);
    }
}

/// Two nodes on one PostgreSQL: a buyer paused through the first binds the second's calls once
/// its plan revision shows the change (none routes on the old plan then), and a campaign created
/// through the first is routed by the second at once, before its news may have arrived.
#[actix_web::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "set TEST_POSTGRES_URL: several nodes share a PostgreSQL"
)]
async fn a_change_on_one_node_binds_a_burst_on_another() {
    let Some(first) = TestApp::start_with_plan(Engine::Postgres, &Plan::parse(PLAN).unwrap()).await else {
        return;
    };
    let second = first.another_node().await;
    let client = reqwest::Client::new();
    all_dialed(&burst(&second, MAIN, 1).await, OLD);
    let before = plan_revision_of(&client, &second).await;

    let old = first.id_of("/buyers", "Old").await;
    let paused = first
        .patch(&format!("/buyers/{old}"), json!({"paused": true}))
        .await;
    expect_json(paused, StatusCode::OK).await;
    let revision = first.store.plan_revision().await.unwrap();
    assert!(revision > before);
    until_revision(&client, &second, revision).await;
    all_dialed(&burst(&second, MAIN, 100).await, NEW);

    // A number the second node cannot know yet: looked up in the store, not refused. Its news
    // is held back (the database sends none while the trigger is off), so that the second node
    // has not heard of it; its plan in hand was looked at a moment ago (the call before).
    let mut db = first.db.connect().await;
    let news = |on: bool| {
        let sql = match on {
            true => "ALTER TABLE plan_revision ENABLE TRIGGER plan_changed",
            false => "ALTER TABLE plan_revision DISABLE TRIGGER plan_changed",
        };
        sqlx::query(sql)
    };
    news(false).execute(&mut db).await.unwrap();
    all_dialed(&burst(&second, MAIN, 200).await, NEW);
    spring_campaign_created(&first).await;
    news(true).execute(&mut db).await.unwrap();
    all_dialed(&burst(&second, SPRING, 300).await, NEW);
}
