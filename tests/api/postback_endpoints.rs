//! Postback endpoints have ids: a postback queued for an endpoint goes to that endpoint as it is
//! at each try (its URL and secret as they are then), never to another one after a reorder, and
//! is cancelled, never sent, once its endpoint (or its owner) is removed. The ids survive an API
//! client putting back what it read.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::plan::Plan;

use crate::{
    helpers::{Engine, SUPERVISOR_TOKEN, TestApp, expect_error, expect_json, on_both_engines},
    money_flows::{Behaviour, PLAN, PUBLISHER_SECRET, QUICK_RETRIES, Receiver, checks_out, connected_call},
    provider::{CALLER, MAIN, sid},
};

const FIRST_SECRET: &str = "whsec_first_0123456789abcdef";
const SECOND_SECRET: &str = "whsec_second_0123456789abcdef";
const ROTATED_SECRET: &str = "whsec_rotated_0123456789abcdef";

/// Retries a second and a half apart at first: time enough to change the plan between two
/// tries.
const SLOW_RETRIES: [(&str, &str); 3] = [
    ("POSTBACK_RETRY_BASE_MS", "1500"),
    ("POSTBACK_TIMEOUT_MS", "2000"),
    ("POSTBACK_MAX_TRIES", "10"),
];

/// The replay plan where Acme Auto has two endpoints for its conversions (`/first` and
/// `/second`), and a publisher of the main number is told of everything (`/publisher`).
fn plan(receiver: &Receiver) -> Plan {
    let endpoint = |path: &str, secret: &str| {
        format!(
            "{{ url = \"{}\", secret = \"{secret}\", events = [\"call.converted\"] }}",
            receiver.url(path)
        )
    };
    let plan = PLAN
        .replace(
            "destination = \"+14155550101\"",
            &format!(
                "destination = \"+14155550101\"\npostbacks = [{}, {}]",
                endpoint("/first", FIRST_SECRET),
                endpoint("/second", SECOND_SECRET)
            ),
        )
        .replace(
            "duplicate_caller_handling = true\n",
            &format!(
                "duplicate_caller_handling = true\n\n[[companies.publishers]]\nname = \"Search\"\nnumbers = [\"{MAIN}\"]\n\
                 postbacks = [{{ url = \"{}\", secret = \"{PUBLISHER_SECRET}\" }}]\n",
                receiver.url("/publisher")
            ),
        );
    Plan::parse(&plan).unwrap()
}

struct Endpoints {
    app: TestApp,
    receiver: Receiver,
}

impl Endpoints {
    async fn start_with(engine: Engine, retries: &[(&str, &str)]) -> Option<Self> {
        let receiver = Receiver::start().await;
        let app = TestApp::start_with_plan_and(engine, &plan(&receiver), retries).await?;
        Some(Self { app, receiver })
    }

    /// Acme Auto as the API shows it, and its id.
    async fn acme(&self) -> (String, Value) {
        let id = self.app.id_of("/buyers", "Acme Auto").await;
        let read = expect_json(self.app.get(&format!("/buyers/{id}")).await, StatusCode::OK).await;
        (id, read)
    }

    /// Call 1's postbacks now.
    async fn outbox_now(&self, query: &str) -> Vec<Value> {
        let path = format!("/postbacks?call_sid={}{query}", sid(1));
        let page = expect_json(self.app.read(&path).await, StatusCode::OK).await;
        page["data"].as_array().unwrap().clone()
    }

    /// Call 1's postbacks, once `settled` holds of them.
    async fn outbox_once(&self, query: &str, settled: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let path = format!("/postbacks?call_sid={}{query}", sid(1));
            let page = expect_json(self.app.read(&path).await, StatusCode::OK).await;
            let rows = page["data"].as_array().unwrap().clone();
            if settled(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "{page}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Five quick tries: a postback fails for good within a second.
struct Quick(Endpoints);

impl Quick {
    async fn start(engine: Engine) -> Option<Self> {
        Endpoints::start_with(engine, &QUICK_RETRIES).await.map(Self)
    }
}

/// Tries far enough apart to change the plan between them.
struct Slow(Endpoints);

impl Slow {
    async fn start(engine: Engine) -> Option<Self> {
        Endpoints::start_with(engine, &SLOW_RETRIES).await.map(Self)
    }
}

fn ids(record: &Value) -> Vec<Value> {
    (record["postbacks"].as_array().unwrap().iter())
        .map(|endpoint| endpoint["id"].clone())
        .collect()
}

on_both_engines! {
    async fn reordered_endpoints_keep_each_postback_on_its_url_and_secret(q: Quick) {
        let Quick(e) = &q;
        let (app, receiver) = (&e.app, &e.receiver);
        receiver.behave("/first", Behaviour { fail_first: 1000, ..Behaviour::default() });
        receiver.behave("/second", Behaviour { fail_first: 1000, ..Behaviour::default() });
        connected_call(app, 1, CALLER, 120).await;
        let failed = e.outbox_once("&status=failed", |rows| rows.len() == 2).await;
        let key_of = |path: &str| {
            let url = receiver.url(path);
            failed.iter().find(|row| row["url"] == url.as_str()).unwrap()["id"].as_str().unwrap().to_owned()
        };
        let (first, second) = (key_of("/first"), key_of("/second"));

        // The operator reorders the endpoints: the buyer as read, put back with its list
        // reversed. Each endpoint keeps its id.
        let (acme, mut read) = e.acme().await;
        let before = ids(&read);
        read["postbacks"].as_array_mut().unwrap().reverse();
        let written = expect_json(app.put(&format!("/buyers/{acme}"), read).await, StatusCode::OK).await;
        assert_eq!(ids(&written), before.into_iter().rev().collect::<Vec<_>>());

        // Fixed receivers, and both postbacks sent again: each to its own endpoint.
        receiver.behave("/first", Behaviour::default());
        receiver.behave("/second", Behaviour::default());
        for id in [&first, &second] {
            expect_json(app.post(&format!("/postbacks/{id}/retry"), Value::Null).await, StatusCode::OK).await;
        }
        receiver.wait_until("both retried postbacks delivered", |all| {
            ["/first", "/second"].iter().all(|path| all.iter().any(|r| r.path == *path && r.acknowledged))
        }).await;
        e.outbox_once("", |rows| rows.iter().all(|row| row["status"] == "delivered")).await;
        for (path, key, secret) in [("/first", &first, FIRST_SECRET), ("/second", &second, SECOND_SECRET)] {
            let tries = receiver.at(path);
            assert_eq!(tries.len(), 6, "five failed tries and the retry: {tries:#?}");
            assert!(tries.iter().all(|r| r.key == *key), "{path} got only its own postback: {tries:#?}");
            assert!(tries.iter().all(|r| checks_out(r, secret)), "{path}: every try signed with its own secret");
        }
    }

    async fn a_rotated_secret_signs_the_next_try(s: Slow) {
        let Slow(e) = &s;
        let (app, receiver) = (&e.app, &e.receiver);
        receiver.behave("/first", Behaviour { fail_first: 1000, ..Behaviour::default() });
        connected_call(app, 1, CALLER, 120).await;
        receiver.wait_until("the first try", |all| all.iter().any(|r| r.path == "/first")).await;

        // While the postback waits for its next try, the first endpoint's secret is rotated
        // (the endpoint as read, its id kept), and its receiver learns the new one.
        let (acme, read) = e.acme().await;
        let mut endpoints = read["postbacks"].clone();
        endpoints[0]["secret"] = ROTATED_SECRET.into();
        let patched = app.patch(&format!("/buyers/{acme}"), json!({"postbacks": endpoints})).await;
        assert_eq!(ids(&expect_json(patched, StatusCode::OK).await), ids(&read));
        receiver.behave("/first", Behaviour::default());

        let tries = receiver.wait_until("the postback delivered", |all| {
            all.iter().any(|r| r.path == "/first" && r.acknowledged)
        }).await;
        let tries: Vec<_> = tries.into_iter().filter(|r| r.path == "/first").collect();
        assert!(tries.iter().all(|r| r.key == tries[0].key), "one postback: {tries:#?}");
        assert!(checks_out(&tries[0], FIRST_SECRET), "tried first with the secret of its day");
        for later in &tries[1..] {
            assert!(checks_out(later, ROTATED_SECRET), "signed with the new secret: {later:#?}");
            assert!(!checks_out(later, FIRST_SECRET));
        }
    }

    async fn a_removed_endpoint_or_owner_has_its_postbacks_cancelled_and_sent_nothing(s: Slow) {
        let Slow(e) = &s;
        let (app, receiver) = (&e.app, &e.receiver);
        for path in ["/first", "/second", "/publisher"] {
            receiver.behave(path, Behaviour { fail_first: 1000, ..Behaviour::default() });
        }
        connected_call(app, 1, CALLER, 120).await;
        let keys = |path: &str, all: &[crate::money_flows::Received]| {
            let mut keys: Vec<String> = all.iter().filter(|r| r.path == path).map(|r| r.key.clone()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len()
        };
        receiver.wait_until("every postback tried once", |all| {
            keys("/first", all) == 1 && keys("/second", all) == 1 && keys("/publisher", all) == 3
        }).await;

        // Acme's second endpoint is removed (the first kept as read), then the publisher.
        let (acme, read) = e.acme().await;
        let kept = json!({"postbacks": [read["postbacks"][0].clone()]});
        expect_json(app.patch(&format!("/buyers/{acme}"), kept).await, StatusCode::OK).await;
        // Cancelled with the change itself, not at its next try.
        let cancelled = e.outbox_now("&status=cancelled").await;
        assert_eq!(cancelled.len(), 1, "{cancelled:#?}");
        assert_eq!(cancelled[0]["url"], receiver.url("/second").as_str());
        assert_eq!(cancelled[0]["last_error"], "cancelled: its endpoint was removed");
        let id = cancelled[0]["id"].as_str().unwrap();
        let message = expect_error(app.post(&format!("/postbacks/{id}/retry"), Value::Null).await, StatusCode::CONFLICT, "conflict", None).await;
        assert!(message.contains("cancelled: its endpoint was removed"), "{message}");

        let publisher = app.id_of("/publishers", "Search").await;
        let removed = app.delete(&format!("/publishers/{publisher}")).await;
        assert_eq!(removed.status(), StatusCode::NO_CONTENT);
        let cancelled = e.outbox_now("&status=cancelled").await;
        assert_eq!(cancelled.len(), 4, "{cancelled:#?}");
        let owner_gone = cancelled.iter().filter(|row| row["last_error"] == "cancelled: its buyer or publisher was removed");
        assert!(owner_gone.map(|row| &row["url"]).all(|url| *url == receiver.url("/publisher").as_str()));

        // The receivers come back: the first endpoint's postback is delivered; nothing more
        // reaches the others, past two more retry periods.
        let sent_before = (receiver.at("/second").len(), receiver.at("/publisher").len());
        for path in ["/first", "/second", "/publisher"] {
            receiver.behave(path, Behaviour::default());
        }
        receiver.wait_until("the first endpoint's postback delivered", |all| {
            all.iter().any(|r| r.path == "/first" && r.acknowledged)
        }).await;
        actix_web::rt::time::sleep(Duration::from_secs(4)).await;
        assert_eq!((receiver.at("/second").len(), receiver.at("/publisher").len()), sent_before);
        let rows = e.outbox_once("", |rows| rows.iter().all(|row| row["status"] != "pending")).await;
        let status = |status: &str| rows.iter().filter(|row| row["status"] == status).count();
        assert_eq!((status("delivered"), status("cancelled")), (1, 4), "{rows:#?}");
        let metrics = (app.client.get(app.url("/metrics")).bearer_auth(SUPERVISOR_TOKEN).send().await.unwrap())
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("switchboard_postback_outbox{status=\"pending\"} 0"), "cancelled is not pending: {metrics}");
    }

    async fn an_api_client_that_puts_back_what_it_read_keeps_endpoint_ids(app: TestApp) {
        let company = app.create("/companies", json!({"name": "Acme Leads"})).await;
        let endpoint = |path: &str| json!({"url": format!("https://partner.example{path}"), "secret": FIRST_SECRET});
        let created = app.post("/publishers", json!({
            "company_id": company, "name": "Search", "postbacks": [endpoint("/a"), endpoint("/b")],
        })).await;
        let created = expect_json(created, StatusCode::CREATED).await;
        let [a, b] = &ids(&created)[..] else { panic!("two endpoints: {created}") };
        assert!(a.is_string() && b.is_string() && a != b, "each endpoint given an id: {created}");
        let path = format!("/publishers/{}", created["id"].as_str().unwrap());

        // What was read, put back: nothing changes, not even `updated_at`.
        let read = expect_json(app.get(&path).await, StatusCode::OK).await;
        let put = expect_json(app.put(&path, read.clone()).await, StatusCode::OK).await;
        assert_eq!(put, read);

        // Endpoints sent without ids are the stored ones of the same URL; a new URL is a new
        // endpoint.
        let patched = app.patch(&path, json!({"postbacks": [endpoint("/c"), endpoint("/b"), endpoint("/a")]})).await;
        let patched = expect_json(patched, StatusCode::OK).await;
        let now = ids(&patched);
        assert_eq!((&now[1], &now[2]), (b, a));
        assert!(now[0].is_string() && now[0] != *a && now[0] != *b, "{patched}");

        // Sent with its id, an endpoint keeps it through a change of URL.
        let mut moved = patched["postbacks"].clone();
        moved[2]["url"] = "https://partner.example/a2".into();
        let moved = expect_json(app.patch(&path, json!({"postbacks": moved})).await, StatusCode::OK).await;
        assert_eq!(ids(&moved), now);
        assert_eq!(moved["postbacks"][2]["url"], "https://partner.example/a2");

        // A supervisor sees the ids, not the secrets; one id twice is refused.
        let seen = (app.client.get(app.url(&format!("/api/v1{path}"))).bearer_auth(SUPERVISOR_TOKEN).send().await.unwrap())
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!((ids(&seen), &seen["postbacks"][0]["secret"]), (now.clone(), &json!("********")));
        let twice = json!({"postbacks": [{"id": a, "url": "https://x.example/", "secret": FIRST_SECRET}, {"id": a, "url": "https://y.example/", "secret": FIRST_SECRET}]});
        expect_error(app.patch(&path, twice).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks")).await;
    }
}
