//! Faults, tried as a provider and an operator meet them: a restart, then a store slower than
//! every budget or one that fails, while several calls' next webhooks arrive at once. A known
//! call is never rebuilt from nothing and written over what the store holds; no buyer is
//! dialed twice; every answer is valid TwiML within the provider's deadline.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    helpers::{Engine, Fault, FlakyStore, TestApp, on_both_engines},
    provider::{CALLER, MAIN, call_over, dial_ended, dialed, form, incoming, sid},
};

/// The replay fixtures' plan (Main: Acme Auto, then Budget Cover, the fallback Fallback
/// Center, a redirect to Overflow), with a publisher given Main's number, paid per
/// conversion.
const PLAN: &str = concat!(
    include_str!("../fixtures/plans/acme.toml"),
    r#"
[[companies.publishers]]
name = "Pub One"
external_id = "pub-001"
numbers = ["+18005550100"]
payout = { rule = "per_conversion", amount = 5.00 }
"#
);

const ACME: &str = "+14155550101";
const BUDGET: &str = "+14155550102";
const FALLBACK: &str = "+14155550199";

/// The provider waits this long for TwiML; Switchboard must answer well within it.
const PROVIDER_DEADLINE: Duration = Duration::from_secs(15);

/// The service on [`PLAN`], its call store behind a switch.
struct Faulty {
    app: TestApp,
    store: std::sync::Arc<FlakyStore>,
}

impl Faulty {
    async fn start(engine: Engine) -> Option<Self> {
        let (app, store) = TestApp::start_flaky(engine, PLAN).await?;
        Some(Self { app, store })
    }

    /// Stopped and started again on the same database, as after a restart.
    async fn restart(self) -> Self {
        let (app, store) = self.app.restart_flaky().await;
        Self { app, store }
    }

    /// The call as `GET /api/v1/calls/{sid}` shows it.
    async fn call(&self, sid: &str) -> Value {
        let response = self.app.get(&format!("/calls/{sid}")).await;
        assert_eq!(response.status(), StatusCode::OK, "call {sid}");
        response.json().await.unwrap()
    }

    /// Waits until `done` holds of the call as the API shows it (the store read directly, past
    /// the switch), at most `patience`.
    async fn call_once(&self, sid: &str, patience: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let call = self.call(sid).await;
            if done(&call) {
                return call;
            }
            assert!(
                started.elapsed() < patience,
                "waited {patience:?} for call {sid}: {call:#}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A webhook's answer, timed: its status, its body, and how long it took.
async fn timed(app: &TestApp, url: &str, body: &str) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let response = app.webhook(url, body).await;
    let status = response.status();
    (status, response.text().await.unwrap(), started.elapsed())
}

/// TwiML a provider can follow: a document, `<Response>` first, nothing before `<?xml`.
fn assert_valid_twiml(body: &str, what: &str) {
    assert!(body.starts_with("<?xml"), "{what}: {body}");
    let document = xml::reader::EventReader::from_str(body);
    let mut root = None;
    for event in document {
        match event.unwrap_or_else(|e| panic!("{what}: not XML ({e}): {body}")) {
            xml::reader::XmlEvent::StartElement { name, .. } if root.is_none() => {
                root = Some(name.local_name)
            }
            _ => {}
        }
    }
    assert_eq!(root.as_deref(), Some("Response"), "{what}: {body}");
}

/// The numbers dialed (`<Number>` texts) in a `<Dial>`.
fn numbers_dialed(body: &str) -> Vec<String> {
    body.split("<Number")
        .skip(1)
        .filter_map(|rest| rest.split_once('>').and_then(|(_, text)| text.split('<').next()))
        .map(str::to_owned)
        .collect()
}

/// The dial action URL of the `<Dial>` in `body`.
fn action_of(body: &str) -> String {
    body.split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&")
}

/// The fallback URL's request after a failed dial action, as Twilio sends it.
fn fallback_after(sid: &str, failed: &str) -> String {
    form(&[
        ("CallSid", sid),
        ("CallStatus", "in-progress"),
        ("DialCallStatus", "no-answer"),
        ("DialCallDuration", "0"),
        ("ErrorCode", "11205"),
        ("ErrorUrl", failed),
        ("From", CALLER),
        ("To", MAIN),
    ])
}

/// Each attempt as `(buyer destination, dial status)`, in order.
fn dials(call: &Value, buyers: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let destination = |id: &str| {
        buyers
            .iter()
            .find(|(buyer, _)| buyer == id)
            .map_or_else(|| id.to_owned(), |(_, number)| number.clone())
    };
    call["dials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dial| {
            (
                destination(dial["buyer_id"].as_str().unwrap()),
                dial["status"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Every buyer's id and destination.
async fn buyers(app: &TestApp) -> Vec<(String, String)> {
    let listed: Value = app.get("/buyers").await.json().await.unwrap();
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["destination"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn timeline(call: &Value) -> Vec<Value> {
    call["timeline"].as_array().unwrap().clone()
}

/// Four calls dialed Acme Auto and were saved; the service restarts, and the store turns slow
/// (or fails) while their next webhooks arrive together: calls 1 and 2 hear Acme Auto did not
/// answer, call 3 that it talked two minutes, call 4's action fails and the provider asks the
/// fallback URL. Then the store recovers.
async fn a_restart_then_a_faulty_store(engine_fixture: Faulty, fault: Fault) {
    let mut fixture = engine_fixture;
    let calls: Vec<String> = (1..=4).map(sid).collect();
    let mut actions = Vec::new();
    for (n, call) in calls.iter().enumerate() {
        let caller = format!("+1415555{:04}", 200 + n);
        let arrived = fixture
            .app
            .webhook(
                &fixture.app.url("/voice/incoming"),
                &incoming(call, &caller, MAIN),
            )
            .await;
        let (number, action) = dialed(arrived).await;
        assert_eq!(number, ACME, "call {call} dials Acme Auto first");
        actions.push(action);
    }
    let mut before = Vec::new();
    for call in &calls {
        before.push(fixture.call(call).await);
    }

    fixture = fixture.restart().await;
    // The same URLs, on the restarted server (in production, the same PUBLIC_URL).
    let actions: Vec<String> = actions
        .iter()
        .map(|url| fixture.app.url(&url[url.find("/voice").unwrap()..]))
        .collect();
    let buyers = buyers(&fixture.app).await;
    fixture.store.set(fault);
    let app = &fixture.app;
    let answers =
        futures_util::future::join_all(calls.iter().zip(&actions).enumerate().map(|(n, (call, action))| {
            let caller = format!("+1415555{:04}", 200 + n);
            async move {
                match n {
                    0 | 1 => {
                        timed(
                            app,
                            action,
                            &form(&[
                                ("CallSid", call),
                                ("CallStatus", "in-progress"),
                                ("DialCallStatus", "no-answer"),
                                ("DialCallDuration", "0"),
                                ("From", &caller),
                                ("To", MAIN),
                            ]),
                        )
                        .await
                    }
                    2 => timed(app, action, &dial_ended(call, "completed", 120)).await,
                    _ => timed(app, &app.url("/voice/fallback"), &fallback_after(call, action)).await,
                }
            }
        }))
        .await;
    for (n, (status, body, took)) in answers.iter().enumerate() {
        let what = format!("call {} after the restart", n + 1);
        assert_eq!(*status, StatusCode::OK, "{what}: {body}");
        assert_valid_twiml(body, &what);
        assert!(
            *took < PROVIDER_DEADLINE - Duration::from_secs(3),
            "{what} took {took:?}"
        );
        let dialed = numbers_dialed(body);
        assert!(
            !dialed.contains(&ACME.to_owned()),
            "{what}: Acme Auto, which just did not answer, dialed again: {body}"
        );
        match n {
            2 => assert!(
                body.contains("<Hangup"),
                "{what}: the conversation is over: {body}"
            ),
            // Decided without the stored record: only the fallback buyer (who takes duplicates).
            _ => assert_eq!(dialed, [FALLBACK], "{what}: {body}"),
        }
    }

    fixture.store.set(Fault::None);
    let patience = Duration::from_secs(20);
    for (n, call) in calls.iter().enumerate() {
        let stored = fixture
            .call_once(call, patience, |c| match n {
                2 => c["converted"] == true && c["state"] == "ended" && c["publisher_payout"].is_number(),
                _ => c["dials"].as_array().is_some_and(|d| d.len() == 2),
            })
            .await;
        let what = format!("call {}", n + 1);
        let dials = dials(&stored, &buyers);
        match n {
            2 => assert_eq!(dials, [(ACME.to_owned(), Some("completed".to_owned()))], "{what}"),
            // The stored first dial keeps its result; the fallback's dial is added after it.
            _ => assert_eq!(
                dials,
                [
                    (ACME.to_owned(), Some("no-answer".to_owned())),
                    (FALLBACK.to_owned(), None)
                ],
                "{what}"
            ),
        }
        // What the store held is still there, first, as it was; the new entries follow.
        let (was, is) = (timeline(&before[n]), timeline(&stored));
        assert!(is.len() > was.len(), "{what}: nothing was added to the timeline");
        assert_eq!(
            &is[..was.len()],
            &was[..],
            "{what}: the stored timeline was rewritten"
        );
        assert_eq!(stored["started_at"], before[n]["started_at"], "{what}");
    }
    // The conversion, once; the publisher paid once.
    let converted = fixture.call(&calls[2]).await;
    assert_eq!(converted["publisher_payout"].as_f64(), Some(5.0), "{converted:#}");
    let stats: Value = fixture.app.get("/stats/publishers").await.json().await.unwrap();
    let paid = &stats["data"][0];
    assert_eq!(
        (paid["paid"].as_u64(), paid["payout"].as_f64()),
        (Some(1), Some(5.0)),
        "{stats:#}"
    );

    // The calls go on as the store has them: the fallback does not answer call 1 either, and
    // the next buyer never dialed (Budget Cover) is; nobody is dialed twice.
    let second = fixture.call(&calls[0]).await;
    let fallback_action = format!(
        "{}/voice/calls/{}/attempts/{}/action",
        fixture.app.address, calls[0], second["dials"][1]["number"]
    );
    let (status, body, _) = timed(
        &fixture.app,
        &fallback_action,
        &dial_ended(&calls[0], "no-answer", 0),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(numbers_dialed(&body), [BUDGET], "{body}");
    let (_, body, _) = timed(
        &fixture.app,
        &action_of(&body),
        &dial_ended(&calls[0], "no-answer", 0),
    )
    .await;
    assert!(
        !numbers_dialed(&body)
            .iter()
            .any(|n| [ACME, BUDGET, FALLBACK].contains(&n.as_str())),
        "{body}"
    );
    assert_eq!(
        fixture
            .app
            .webhook(&fixture.app.url("/voice/status"), &call_over(&calls[0]))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    for call in &calls {
        let stored = fixture.call(call).await;
        let dialed: Vec<_> = dials(&stored, &buyers)
            .into_iter()
            .map(|(buyer, _)| buyer)
            .collect();
        let distinct: std::collections::HashSet<_> = dialed.iter().collect();
        assert_eq!(
            distinct.len(),
            dialed.len(),
            "call {call}: a buyer dialed twice: {dialed:?}"
        );
    }
}

on_both_engines! {
    async fn after_a_restart_a_store_slower_than_every_budget_never_redials_a_buyer_nor_rewrites_a_call(fixture: Faulty) {
        a_restart_then_a_faulty_store(fixture, Fault::Slow(Duration::from_secs(7))).await;
    }

    async fn after_a_restart_a_store_that_fails_never_redials_a_buyer_nor_rewrites_a_call(fixture: Faulty) {
        a_restart_then_a_faulty_store(fixture, Fault::Down).await;
    }
}

on_both_engines! {
    async fn a_payout_the_store_could_not_settle_when_the_call_ended_is_settled_by_the_reaper(fixture: Faulty) {
        let app = &fixture.app;
        let call = sid(21);
        let (number, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN)).await).await;
        assert_eq!(number, ACME);
        // The store goes away as the call converts and ends: the caller is answered all the
        // same, and nothing can be settled.
        fixture.store.set(Fault::Down);
        let (status, body, _) = timed(app, &action, &dial_ended(&call, "completed", 120)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<Hangup"), "{body}");
        fixture.store.set(Fault::None);
        // Nothing more comes from the provider: the reaper settles it.
        let settled = fixture
            .call_once(&call, Duration::from_secs(15), |c| c["publisher_payout"].is_number())
            .await;
        assert_eq!(
            (settled["converted"].as_bool(), settled["publisher_payout"].as_f64(), settled["publisher_duplicate"].as_bool()),
            (Some(true), Some(5.0), Some(false)),
            "{settled:#}"
        );
        let stats: Value = app.get("/stats/publishers").await.json().await.unwrap();
        assert_eq!((stats["data"][0]["paid"].as_u64(), stats["data"][0]["unsettled"].as_u64()), (Some(1), Some(0)), "{stats:#}");
    }
}
