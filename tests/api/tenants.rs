//! Tenants: every role, on every kind of endpoint, against its own and another company's or
//! partner's data: the status it gets, and no field it must not see.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::plan::Plan;

use crate::{
    helpers::{ADMIN_TOKEN, Engine, SUPERVISOR_TOKEN, TestApp, expect_json, on_both_engines},
    provider::{call_over, dial_ended, dialed, incoming, sid},
};

/// Two companies. Acme has two publishers, each on its own campaign and buyer; Globex has one
/// of each.
const PLAN: &str = r#"
[[companies]]
name = "Acme Leads"

[[companies.publishers]]
name = "Search"
numbers = ["+18005550100"]
payout = { rule = "per_call", amount = 5.00, dedupe_seconds = 86400 }

[[companies.publishers]]
name = "Social"
numbers = ["+18005550101"]
payout = { rule = "per_call", amount = 3.00, dedupe_seconds = 86400 }

[[companies.buyers]]
name = "Acme Auto"
destination = "+14155550101"
revenue = 20
payout = 10

[[companies.buyers]]
name = "Budget Cover"
destination = "+14155550102"
revenue = 15
payout = 7

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Acme Auto" }]

[[companies.campaigns]]
name = "Second"
numbers = ["+18005550101"]
buyers = [{ buyer = "Budget Cover" }]

[[companies]]
name = "Globex"

[[companies.buyers]]
name = "Globex Buyer"
destination = "+14155550201"
revenue = 30

[[companies.campaigns]]
name = "Globex Main"
numbers = ["+18005550200"]
buyers = [{ buyer = "Globex Buyer" }]
"#;

const SEARCH_NUMBER: &str = "+18005550100";

/// Who asks, in the order of every row of expectations below.
const WHO: [&str; 7] = [
    "install admin",
    "install supervisor",
    "Acme admin",
    "Acme analyst",
    "Acme supervisor",
    "Search (publisher)",
    "Acme Auto (buyer)",
];

struct Tenants {
    app: TestApp,
    tokens: [String; 7],
    acme: String,
    globex: String,
    acme_auto: String,
    globex_buyer: String,
    /// Search's call, taken by Acme Auto; Social's, taken by Budget Cover; Globex's.
    search_call: String,
    social_call: String,
    globex_call: String,
    /// Still ringing: Search's, and Globex's.
    search_live: String,
    globex_live: String,
}

impl Tenants {
    async fn start(engine: Engine) -> Option<Self> {
        let app = TestApp::start_with_plan(engine, &Plan::parse(PLAN).unwrap()).await?;
        let acme = app.id_of("/companies", "Acme Leads").await;
        let globex = app.id_of("/companies", "Globex").await;
        let search = app.id_of("/publishers", "Search").await;
        let acme_auto = app.id_of("/buyers", "Acme Auto").await;
        let globex_buyer = app.id_of("/buyers", "Globex Buyer").await;
        let issue = |body: Value| {
            let app = &app;
            async move {
                let issued = expect_json(app.post("/tokens", body).await, StatusCode::CREATED).await;
                issued["token"].as_str().unwrap().to_owned()
            }
        };
        let tokens = [
            ADMIN_TOKEN.to_owned(),
            SUPERVISOR_TOKEN.to_owned(),
            issue(json!({"name": "acme admin", "role": "admin", "companies": [acme]})).await,
            issue(json!({"name": "acme analyst", "role": "analyst", "companies": [acme]})).await,
            issue(json!({"name": "acme floor", "role": "supervisor", "companies": [acme]})).await,
            issue(json!({"name": "search portal", "role": "publisher", "publishers": [search]})).await,
            issue(json!({"name": "acme auto portal", "role": "buyer", "buyers": [acme_auto]})).await,
        ];
        let mut tenants = Self {
            app,
            tokens,
            acme,
            globex,
            acme_auto,
            globex_buyer,
            search_call: sid(1),
            social_call: sid(2),
            globex_call: sid(3),
            search_live: sid(4),
            globex_live: sid(5),
        };
        tenants.calls().await;
        Some(tenants)
    }

    /// Three calls that connect, convert and end, and two that ring on.
    async fn calls(&mut self) {
        for (n, caller, number) in [
            (1, "+14155550111", SEARCH_NUMBER),
            (2, "+14155550122", "+18005550101"),
            (3, "+14155550133", "+18005550200"),
        ] {
            let response = self
                .webhook("/voice/incoming", &incoming(&sid(n), caller, number))
                .await;
            let (_, action) = dialed(response).await;
            self.app
                .webhook(&action, &dial_ended(&sid(n), "completed", 120))
                .await;
            self.webhook("/voice/status", &call_over(&sid(n))).await;
        }
        for (n, caller, number) in [
            (4, "+14155550144", SEARCH_NUMBER),
            (5, "+14155550155", "+18005550200"),
        ] {
            dialed(
                self.webhook("/voice/incoming", &incoming(&sid(n), caller, number))
                    .await,
            )
            .await;
        }
    }

    async fn webhook(&self, path: &str, body: &str) -> reqwest::Response {
        self.app.webhook(&self.app.url(path), body).await
    }

    async fn ask(&self, who: usize, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let url = match path.strip_prefix('!') {
            Some(outside_the_api) => self.app.url(outside_the_api),
            None => self.app.url(&format!("/api/v1{path}")),
        };
        let mut request = self
            .app
            .client
            .request(method, url)
            .bearer_auth(&self.tokens[who])
            // Conversions and returns ask for one; nothing else reads it.
            .header("Idempotency-Key", format!("tenants-{who}-{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// The call sids a page of calls (or an event stream) names.
    fn sids(text: &str, among: &[&String]) -> Vec<String> {
        among
            .iter()
            .filter(|sid| text.contains(sid.as_str()))
            .map(|sid| sid.to_string())
            .collect()
    }

    /// What `/events` sends a token at once: the live calls it may see.
    async fn events(&self, who: usize) -> String {
        let mut response = (self.app.client.get(self.app.url("/api/v1/events")))
            .bearer_auth(&self.tokens[who])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", WHO[who]);
        let mut text = String::new();
        // The snapshot comes at once; then the stream is quiet for 15 s.
        while let Ok(Ok(Some(chunk))) =
            actix_web::rt::time::timeout(Duration::from_millis(800), response.chunk()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    }
}

/// Keys of any object anywhere in `value`.
fn keys(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                found.push(key.clone());
                keys(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys(item, found)),
        _ => {}
    }
}

fn has_key(text: &str, key: &str) -> bool {
    let mut found = Vec::new();
    keys(&serde_json::from_str(text).unwrap_or(Value::Null), &mut found);
    found.iter().any(|k| k == key)
}

on_both_engines! {
    async fn every_role_reaches_exactly_its_own_data_on_every_endpoint(t: Tenants) {
        let (ok, created, forbidden, missing) =
            (StatusCode::OK, StatusCode::CREATED, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND);
        let (acme, globex) = (t.acme.clone(), t.globex.clone());
        // A change to Globex by the install's administrator, so that its audit log has an entry
        // no Acme token may read.
        let (status, _) = t.ask(0, Method::PATCH, &format!("/buyers/{}", t.globex_buyer), Some(json!({"paused": false}))).await;
        assert_eq!(status, ok);

        // Reads: the path, and the status each of WHO gets.
        let reads: Vec<(String, [StatusCode; 7])> = vec![
            ("/me".into(), [ok, ok, ok, ok, ok, ok, ok]),
            ("/calls".into(), [ok, ok, ok, ok, ok, ok, ok]),
            ("/calls/live".into(), [ok, ok, ok, ok, ok, ok, ok]),
            ("/calls.csv".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            (format!("/calls/{}", t.search_call), [ok, ok, ok, ok, ok, ok, ok]),
            (format!("/calls/{}", t.social_call), [ok, ok, ok, ok, ok, missing, missing]),
            (format!("/calls/{}", t.globex_call), [ok, ok, missing, missing, missing, missing, missing]),
            ("/rtb".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/rtb.csv".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/stats/timeline".into(), [ok, ok, ok, ok, ok, ok, ok]),
            ("/stats/campaigns".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/stats/buyers".into(), [ok, ok, ok, ok, ok, forbidden, ok]),
            ("/stats/publishers".into(), [ok, ok, ok, ok, ok, ok, forbidden]),
            ("/companies".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/buyers".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/campaigns".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/publishers".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            (format!("/buyers/{}", t.acme_auto), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            (format!("/buyers/{}", t.globex_buyer), [ok, ok, missing, missing, missing, forbidden, forbidden]),
            (format!("/companies/{globex}"), [ok, ok, missing, missing, missing, forbidden, forbidden]),
            (format!("/buyers/{}/caps", t.globex_buyer), [ok, ok, missing, missing, missing, forbidden, forbidden]),
            ("/blocked_callers".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/postbacks".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/load".into(), [ok, ok, ok, ok, ok, forbidden, forbidden]),
            ("/audit".into(), [ok, forbidden, ok, ok, forbidden, forbidden, forbidden]),
            (format!("/audit?company_id={globex}"), [ok, forbidden, missing, missing, forbidden, forbidden, forbidden]),
            ("/tokens".into(), [ok, forbidden, ok, forbidden, forbidden, forbidden, forbidden]),
            ("!/metrics".into(), [ok, ok, forbidden, forbidden, forbidden, forbidden, forbidden]),
        ];
        let mut answers = Vec::new();
        for (path, expected) in &reads {
            for (who, expected) in expected.iter().enumerate() {
                let (status, body) = t.ask(who, Method::GET, path, None).await;
                assert_eq!(status, *expected, "{} GET {path}: {body}", WHO[who]);
                if status == ok {
                    answers.push((who, path.clone(), body));
                }
            }
        }

        // Whose calls each sees: in the list, in the live list and on the event stream.
        let all = [&t.search_call, &t.social_call, &t.globex_call];
        let visible: [&[&String]; 7] = [
            &all,
            &all,
            &[&t.search_call, &t.social_call],
            &[&t.search_call, &t.social_call],
            &[&t.search_call, &t.social_call],
            &[&t.search_call],
            &[&t.search_call],
        ];
        let live = [&t.search_live, &t.globex_live];
        let live_visible: [&[&String]; 7] = [&live, &live, &[&t.search_live], &[&t.search_live], &[&t.search_live], &[&t.search_live], &[&t.search_live]];
        for who in 0..WHO.len() {
            let (_, page) = t.ask(who, Method::GET, "/calls", None).await;
            let seen = Tenants::sids(&page, &all);
            let expected: Vec<String> = visible[who].iter().map(|s| s.to_string()).collect();
            assert_eq!(seen, expected, "{} GET /calls", WHO[who]);
            let expected_live: Vec<String> = live_visible[who].iter().map(|s| s.to_string()).collect();
            let (_, page) = t.ask(who, Method::GET, "/calls/live", None).await;
            assert_eq!(Tenants::sids(&page, &live), expected_live, "{} GET /calls/live", WHO[who]);
            let stream = t.events(who).await;
            assert_eq!(Tenants::sids(&stream, &live), expected_live, "{} GET /events", WHO[who]);
            if who == 5 {
                assert!(!stream.contains("buyer_id"), "a publisher's stream names no buyer: {stream}");
            }
            if who == 6 {
                assert!(!stream.contains("publisher_id") && !stream.contains(SEARCH_NUMBER), "{stream}");
            }
        }

        // What partners must never see, in anything they may read.
        for (who, path, body) in &answers {
            match *who {
                5 => {
                    for key in ["revenue", "buyer_id"] {
                        assert!(!has_key(body, key), "the publisher read `{key}` at {path}: {body}");
                    }
                    assert!(!body.contains(&t.acme_auto), "the publisher learnt the buyer at {path}: {body}");
                }
                6 => {
                    for key in ["publisher_id", "publisher_payout", "publisher_duplicate", "payout", "called"] {
                        assert!(!has_key(body, key), "the buyer read `{key}` at {path}: {body}");
                    }
                    assert!(!body.contains(SEARCH_NUMBER), "the buyer read the tracking number at {path}: {body}");
                }
                2..=4 => {
                    assert!(!body.contains(&t.globex_buyer) && !body.contains(&t.globex_call), "{} read Globex's at {path}: {body}", WHO[*who]);
                    assert!(!body.contains(&globex) || path.starts_with("/me"), "{} read Globex at {path}: {body}", WHO[*who]);
                }
                _ => {}
            }
        }
        // The publisher sees its call's payout, duplicate flag and connected seconds.
        let (_, story) = t.ask(5, Method::GET, &format!("/calls/{}", t.search_call), None).await;
        let story: Value = serde_json::from_str(&story).unwrap();
        assert_eq!(story["publisher_payout"], 5.0, "{story}");
        assert_eq!(story["dials"][0]["connected_seconds"], 120, "{story}");
        assert!(story.get("duplicate").is_some(), "{story}");
        // The buyer sees what it pays, and the caller.
        let (_, stats) = t.ask(6, Method::GET, "/stats/buyers", None).await;
        let stats: Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["data"].as_array().unwrap().len(), 1, "its own row only: {stats}");
        assert_eq!(stats["data"][0]["buyer_id"], t.acme_auto.as_str());
        assert_eq!(stats["data"][0]["revenue"], 20.0, "{stats}");
        let (_, call) = t.ask(6, Method::GET, &format!("/calls/{}", t.search_call), None).await;
        assert!(call.contains("+14155550111"), "the caller: {call}");

        // Changes: an admin within its companies only; nobody else.
        let patch = Some(json!({"paused": false}));
        let writes: Vec<(Method, String, Option<Value>, [StatusCode; 7])> = vec![
            (Method::PATCH, format!("/buyers/{}", t.acme_auto), patch.clone(), [ok, forbidden, ok, forbidden, forbidden, forbidden, forbidden]),
            (Method::PATCH, format!("/buyers/{}", t.globex_buyer), patch.clone(), [ok, forbidden, missing, forbidden, forbidden, forbidden, forbidden]),
            (Method::POST, "/blocked_callers".into(), None, [created, forbidden, StatusCode::UNPROCESSABLE_ENTITY, forbidden, forbidden, forbidden, forbidden]),
            (Method::POST, "/companies".into(), Some(json!({"name": "Initech"})), [created, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden]),
            (Method::POST, "/tokens".into(), Some(json!({"name": "globex floor", "role": "supervisor", "companies": [globex]})), [created, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden]),
            (Method::POST, "/tokens".into(), Some(json!({"name": "acme floor 2", "role": "supervisor", "companies": [acme]})), [created, forbidden, created, forbidden, forbidden, forbidden, forbidden]),
            (Method::POST, "/tokens".into(), Some(json!({"name": "install floor", "role": "supervisor"})), [created, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden]),
        ];
        // Conversions: a buyer's token for its own calls, its company's admins; Acme Auto converts
        // on seconds alone, so those allowed hear why the report is refused (409), others never
        // learn that much.
        let conflict = StatusCode::CONFLICT;
        let report = Some(json!({"converted": true}));
        let search_report = format!("/calls/{}/conversion", t.search_call);
        let social_report = format!("/calls/{}/conversion", t.social_call);
        let globex_report = format!("/calls/{}/conversion", t.globex_call);
        let reports: Vec<(Method, String, Option<Value>, [StatusCode; 7])> = vec![
            (Method::POST, search_report, report.clone(), [conflict, forbidden, conflict, forbidden, forbidden, forbidden, conflict]),
            (Method::POST, social_report, report.clone(), [conflict, forbidden, conflict, forbidden, forbidden, forbidden, missing]),
            (Method::POST, globex_report, report.clone(), [conflict, forbidden, missing, forbidden, forbidden, forbidden, missing]),
        ];
        let writes = writes.into_iter().chain(reports);
        for (method, path, body, expected) in writes {
            for (who, expected) in expected.iter().enumerate() {
                // A block-list entry for Globex: the install's administrator may, Acme's may not.
                let body = body.clone().or_else(|| {
                    (path == "/blocked_callers").then(|| json!({"company_id": globex, "pattern": format!("+1900555{who:04}")}))
                });
                let (status, answer) = t.ask(who, method.clone(), &path, body).await;
                assert_eq!(status, *expected, "{} {method} {path}: {answer}", WHO[who]);
            }
        }

        // Every change is in the audit log, who made it and how it was before; Acme's admin
        // reads Acme's entries only.
        let (_, audit) = t.ask(0, Method::GET, &format!("/audit?action=buyer&target_id={}", t.acme_auto), None).await;
        let audit: Value = serde_json::from_str(&audit).unwrap();
        let actors: Vec<&str> = audit["data"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
        assert_eq!(actors, ["token acme admin", "ADMIN_TOKEN"], "newest first: {audit}");
        assert_eq!(audit["data"][0]["before"]["name"], "Acme Auto");
        assert_eq!(audit["data"][0]["company_id"], acme.as_str());
        let (_, audit) = t.ask(2, Method::GET, "/audit?limit=1000", None).await;
        let audit: Value = serde_json::from_str(&audit).unwrap();
        let entries = audit["data"].as_array().unwrap();
        assert!(!entries.is_empty());
        assert!(entries.iter().all(|e| e["company_id"] == acme.as_str()), "{audit}");
        assert!(entries.iter().any(|e| e["action"] == "token.issue"), "{audit}");
    }
}

#[actix_web::test]
async fn failed_token_checks_are_slowed_down_and_a_valid_token_never_is() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let guess = |n: usize| {
        (app.client.get(app.url("/api/v1/calls")))
            .bearer_auth(format!("sbt_guess{n:040}"))
            .send()
    };
    let burst = switchboard::http::auth::AuthFailures::RATE.burst as usize;
    let mut statuses = Vec::new();
    for n in 0..burst + 5 {
        statuses.push(guess(n).await.unwrap().status());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        refused >= burst && refused < burst + 5,
        "a burst of 401s, then 429s: {statuses:?}"
    );
    let limited = guess(0).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    // The operators' own token goes through all the while.
    assert_eq!(app.read("/calls").await.status(), StatusCode::OK);
}
