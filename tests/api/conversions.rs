//! Buyer-reported conversions, outside in: a `reported` buyer's call converts only on its
//! report, once however the report is retried or raced; a return inside the window reverses
//! the conversion and the publisher's payout and frees the caller for the buyer, and one
//! outside it is refused; `seconds_and_reported` needs both; a conversion key reports by URL.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::plan::Plan;

use crate::{
    helpers::{Engine, TestApp, expect_error, expect_json, on_both_engines},
    money_flows::{PLAN, Receiver, connected_call},
    provider::{CALLER, MAIN, sid},
};

const OTHER_CALLER: &str = "+14155550177";
const SECRET: &str = "whsec_conversions_0123456789";

/// The replay plan with Acme Auto (first in the main campaign) converting only on its
/// reports, and a publisher paid 12 per conversion on the main number; both hear of
/// everything.
fn plan_with(receiver: &Receiver) -> Plan {
    let plan = PLAN
        .replacen(
            "conversion_seconds = 90\n",
            &format!(
                "conversion_seconds = 90\nconversion_rule = \"reported\"\npostbacks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n",
                receiver.url("/buyer")
            ),
            1,
        )
        .replace(
            "duplicate_caller_handling = true\n",
            &format!(
                "duplicate_caller_handling = true\n\n[[companies.publishers]]\nname = \"Search\"\nnumbers = [\"{MAIN}\"]\n\
                 payout = {{ rule = \"per_conversion\", amount = 12 }}\n\
                 postbacks = [{{ url = \"{}\", secret = \"{SECRET}\" }}]\n",
                receiver.url("/publisher")
            ),
        );
    Plan::parse(&plan).unwrap()
}

struct Reports {
    app: TestApp,
    _receiver: Receiver,
}

impl Reports {
    async fn start(engine: Engine) -> Option<Self> {
        let receiver = Receiver::start().await;
        let app = TestApp::start_with_plan_and(engine, &plan_with(&receiver), &[]).await?;
        Some(Self {
            app,
            _receiver: receiver,
        })
    }
}

const ACME: &str = "+14155550101";
const BUDGET: &str = "+14155550102";

async fn report(app: &TestApp, n: u32, key: &str, body: Value) -> reqwest::Response {
    app.admin(Method::POST, &format!("/calls/{}/conversion", sid(n)))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn return_call(app: &TestApp, n: u32, key: &str, reason: &str) -> reqwest::Response {
    app.admin(Method::POST, &format!("/calls/{}/return", sid(n)))
        .header("Idempotency-Key", key)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .expect("request")
}

async fn call_json(app: &TestApp, n: u32) -> Value {
    expect_json(app.read(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await
}

/// What the store holds of call `n`: its conversions, its ledger rows (amounts), and its
/// postbacks per event.
async fn effects(app: &TestApp, n: u32) -> (i64, Vec<i64>, Vec<String>) {
    let mut conn = app.db.connect().await;
    let call = sid(n);
    let (conversions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversions WHERE call_sid = $1")
        .bind(&call)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let ledger: Vec<(i64,)> =
        sqlx::query_as("SELECT amount_cents FROM publisher_payouts WHERE call_sid = $1 ORDER BY at_ms, kind")
            .bind(&call)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let postbacks: Vec<(String, String)> = sqlx::query_as(
        "SELECT event, owner_kind FROM postbacks WHERE call_sid = $1 ORDER BY event, owner_kind",
    )
    .bind(&call)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    (
        conversions,
        ledger.into_iter().map(|(cents,)| cents).collect(),
        postbacks
            .into_iter()
            .map(|(event, owner)| format!("{event} {owner}"))
            .collect(),
    )
}

fn converted_postbacks(postbacks: &[String]) -> Vec<&String> {
    postbacks
        .iter()
        .filter(|p| p.starts_with("call.converted"))
        .collect()
}

on_both_engines! {
    async fn a_reported_buyers_long_call_converts_only_when_the_buyer_reports_it(r: Reports) {
        let app = &r.app;
        assert_eq!(connected_call(app, 1, CALLER, 600).await, ACME);
        let before = call_json(app, 1).await;
        assert_eq!(before["converted"], false, "ten minutes do not convert a `reported` buyer's call: {before}");
        assert_eq!(before["publisher_payout"].as_f64(), Some(0.0), "{before}");
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!((conversions, ledger.len()), (0, 0));
        assert!(converted_postbacks(&postbacks).is_empty(), "{postbacks:?}");

        let answer = expect_json(report(app, 1, "order-1", json!({"converted": true, "revenue": 42.5, "external_id": "A-1"})).await, StatusCode::OK).await;
        assert_eq!((answer["status"].as_str(), answer["recorded"].as_bool(), answer["revenue"].as_f64()), (Some("converted"), Some(true), Some(42.5)), "{answer}");
        let after = call_json(app, 1).await;
        assert_eq!(after["converted"], true, "{after}");
        assert_eq!(after["publisher_payout"].as_f64(), Some(12.0), "{after}");
        let reported = after["timeline"].as_array().unwrap().iter()
            .find(|e| e["kind"] == "conversion_reported").expect("the report is on the timeline");
        assert_eq!((reported["revenue"].as_f64(), reported["external_id"].as_str()), (Some(42.5), Some("A-1")));
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!((conversions, ledger), (1, vec![1200]));
        assert_eq!(converted_postbacks(&postbacks), ["call.converted buyer", "call.converted publisher"]);
        // The buyer is told the revenue it reported, not its configured 20.
        let mut conn = app.db.connect().await;
        let (body,): (String,) = sqlx::query_as("SELECT body FROM postbacks WHERE call_sid = $1 AND event = 'call.converted' AND owner_kind = 'buyer'")
            .bind(sid(1)).fetch_one(&mut conn).await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["revenue"].as_f64(), Some(42.5), "{body}");
    }

    async fn a_report_retried_with_its_key_converts_once_pays_once_and_posts_back_once(r: Reports) {
        let app = &r.app;
        connected_call(app, 1, CALLER, 120).await;
        let body = json!({"converted": true});
        let first = report(app, 1, "order-1", body.clone()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let first = first.json::<Value>().await.unwrap();
        // The reply was lost: the buyer sends it again, with the same key.
        for _ in 0..2 {
            let again = report(app, 1, "order-1", body.clone()).await;
            assert_eq!(again.status(), StatusCode::OK);
            assert_eq!(again.headers().get("Idempotent-Replayed").map(|v| v.to_str().unwrap()), Some("true"));
            assert_eq!(again.json::<Value>().await.unwrap(), first, "the first answer, again");
        }
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!((conversions, ledger), (1, vec![1200]));
        assert_eq!(converted_postbacks(&postbacks).len(), 2, "one per endpoint: {postbacks:?}");

        // The same key with another request is refused; another key changes nothing more.
        let message = expect_error(report(app, 1, "order-1", json!({"converted": true, "revenue": 99})).await,
            StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("Idempotency-Key")).await;
        assert!(message.contains("used for another request"), "{message}");
        let other = expect_json(report(app, 1, "order-2", body).await, StatusCode::OK).await;
        assert_eq!((other["status"].as_str(), other["recorded"].as_bool()), (Some("converted"), Some(false)), "{other}");
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!((conversions, ledger), (1, vec![1200]));
        assert_eq!(converted_postbacks(&postbacks).len(), 2);
        // No key at all: refused, nothing done.
        let keyless = app.admin(Method::POST, &format!("/calls/{}/conversion", sid(1)))
            .json(&json!({"converted": true})).send().await.unwrap();
        expect_error(keyless, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("Idempotency-Key")).await;
    }

    async fn two_identical_reports_at_once_convert_the_call_once(r: Reports) {
        let app = &r.app;
        connected_call(app, 1, CALLER, 120).await;
        let body = json!({"converted": true, "revenue": 30});
        let (a, b) = tokio::join!(report(app, 1, "race", body.clone()), report(app, 1, "race", body.clone()));
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        let (a, b) = (a.json::<Value>().await.unwrap(), b.json::<Value>().await.unwrap());
        assert_eq!(a, b, "both get the one answer");
        assert_eq!(a["recorded"], true, "{a}");
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!((conversions, ledger), (1, vec![1200]));
        assert_eq!(converted_postbacks(&postbacks).len(), 2, "{postbacks:?}");
    }

    async fn a_return_inside_the_window_reverses_the_conversion_and_frees_the_caller_for_the_buyer(r: Reports) {
        let app = &r.app;
        let buyer = app.id_of("/buyers", "Acme Auto").await;
        // Disputes take days: a day's window.
        let patched = app.patch(&format!("/buyers/{buyer}"), json!({"return_window_seconds": 86_400})).await;
        assert_eq!(patched.status(), StatusCode::OK);
        assert_eq!(connected_call(app, 1, CALLER, 120).await, ACME);
        expect_json(report(app, 1, "order-1", json!({"converted": true})).await, StatusCode::OK).await;
        // Converted, the caller is a duplicate for Acme Auto: the next call goes to Budget Cover.
        assert_eq!(connected_call(app, 2, CALLER, 30).await, BUDGET);

        let returned = expect_json(return_call(app, 1, "return-1", "the caller cancelled").await, StatusCode::OK).await;
        assert_eq!((returned["status"].as_str(), returned["recorded"].as_bool()), (Some("returned"), Some(true)), "{returned}");
        let again = return_call(app, 1, "return-1", "the caller cancelled").await;
        assert_eq!(again.json::<Value>().await.unwrap(), returned, "a retried return, answered again");
        let call = call_json(app, 1).await;
        assert_eq!((call["converted"].as_bool(), call["publisher_payout"].as_f64()), (Some(false), Some(0.0)), "{call}");
        let (conversions, ledger, postbacks) = effects(app, 1).await;
        assert_eq!(conversions, 1, "the conversion is history: reversed, not deleted");
        assert_eq!(ledger, vec![1200, -1200], "a reversal row, the paid one kept");
        let returns: Vec<&String> = postbacks.iter().filter(|p| p.starts_with("call.returned")).collect();
        assert_eq!(returns, ["call.returned buyer", "call.returned publisher"]);

        // The caller is no longer a duplicate for Acme Auto: it is dialed again.
        assert_eq!(connected_call(app, 3, CALLER, 30).await, ACME);
        // After a restart too (the index is rebuilt from the stored marks).
        let app = r.app.restart().await;
        assert_eq!(connected_call(&app, 4, CALLER, 30).await, ACME);
    }

    async fn a_return_outside_the_window_is_refused_and_changes_nothing(r: Reports) {
        let app = &r.app;
        let buyer = app.id_of("/buyers", "Acme Auto").await;
        let patched = app.patch(&format!("/buyers/{buyer}"), json!({"return_window_seconds": 0})).await;
        assert_eq!(patched.status(), StatusCode::OK);
        connected_call(app, 1, CALLER, 120).await;
        expect_json(report(app, 1, "order-1", json!({"converted": true})).await, StatusCode::OK).await;
        let message = expect_error(return_call(app, 1, "return-1", "too late").await,
            StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("at")).await;
        assert!(message.contains("return window closed"), "{message}");
        let call = call_json(app, 1).await;
        assert_eq!((call["converted"].as_bool(), call["publisher_payout"].as_f64()), (Some(true), Some(12.0)), "{call}");
        let (_, ledger, postbacks) = effects(app, 1).await;
        assert_eq!(ledger, vec![1200]);
        assert!(!postbacks.iter().any(|p| p.starts_with("call.returned")), "{postbacks:?}");
        // Still a duplicate for Acme Auto.
        assert_eq!(connected_call(app, 2, CALLER, 30).await, BUDGET);
    }

    async fn seconds_and_reported_needs_both_and_a_seconds_buyer_takes_no_reports(r: Reports) {
        let app = &r.app;
        let buyer = app.id_of("/buyers", "Acme Auto").await;
        let patched = app.patch(&format!("/buyers/{buyer}"), json!({"conversion_rule": "seconds_and_reported"})).await;
        assert_eq!(patched.status(), StatusCode::OK);
        // Long enough, but not reported: no conversion.
        connected_call(app, 1, CALLER, 120).await;
        assert_eq!(call_json(app, 1).await["converted"], false);
        // Reported, but too short: none either.
        connected_call(app, 2, OTHER_CALLER, 30).await;
        let message = expect_error(report(app, 2, "short", json!({"converted": true})).await,
            StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("at")).await;
        assert!(message.contains("talked 30 s, less than the 90 s"), "{message}");
        assert_eq!(call_json(app, 2).await["converted"], false);
        // Both: converted.
        expect_json(report(app, 1, "long", json!({"converted": true})).await, StatusCode::OK).await;
        assert_eq!(call_json(app, 1).await["converted"], true);

        let patched = app.patch(&format!("/buyers/{buyer}"), json!({"conversion_rule": "seconds"})).await;
        assert_eq!(patched.status(), StatusCode::OK);
        let message = expect_error(report(app, 2, "seconds", json!({"converted": true})).await,
            StatusCode::CONFLICT, "conflict", None).await;
        assert!(message.contains("conversion_rule is `seconds`"), "{message}");
    }

    async fn a_buyers_conversion_key_reports_by_url_for_that_buyer_only(r: Reports) {
        let app = &r.app;
        let acme = app.id_of("/buyers", "Acme Auto").await;
        let budget = app.id_of("/buyers", "Budget Cover").await;
        let shown = expect_json(app.put(&format!("/buyers/{acme}/conversion_key"), json!({})).await, StatusCode::OK).await;
        let key = shown["key"].as_str().unwrap().to_owned();
        let other = expect_json(app.put(&format!("/buyers/{budget}/conversion_key"), json!({})).await, StatusCode::OK).await;
        let other = other["key"].as_str().unwrap().to_owned();
        let status = expect_json(app.get(&format!("/buyers/{acme}/conversion_key")).await, StatusCode::OK).await;
        assert_eq!(status, json!({"configured": true}));
        connected_call(app, 1, CALLER, 120).await;

        let fire = |query: String| app.client.post(app.url(&format!("/api/v1/conversions?{query}"))).send();
        let caller = CALLER.replace('+', "%2B");
        // Another buyer's key cannot report Acme Auto's call.
        let refused = fire(format!("key={other}&call_sid={}", sid(1))).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let wrong = fire(format!("key=not-a-key-at-all-000000&call_sid={}", sid(1))).await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        // By caller: the latest call from it connected to the buyer. Fired twice, one report.
        let url = format!("key={key}&caller={caller}&revenue=25");
        let first = expect_json(fire(url.clone()).await.unwrap(), StatusCode::OK).await;
        assert_eq!((first["call_sid"].as_str(), first["recorded"].as_bool()), (Some(sid(1).as_str()), Some(true)), "{first}");
        let again = fire(url).await.unwrap();
        assert_eq!(again.headers().get("Idempotent-Replayed").map(|v| v.to_str().unwrap()), Some("true"));
        let (conversions, ledger, _) = effects(app, 1).await;
        assert_eq!((conversions, ledger), (1, vec![1200]));

        let removed = app.delete(&format!("/buyers/{acme}/conversion_key")).await;
        assert_eq!(removed.status(), StatusCode::NO_CONTENT);
        let gone = fire(format!("key={key}&call_sid={}", sid(1))).await.unwrap();
        assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    }
}
