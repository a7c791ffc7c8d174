//! What supervisors see: live and recent calls, statistics, buyer load, the live event stream,
//! metrics and the OpenAPI document, each read with a supervisor's read-only token.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

const WAIT: Duration = Duration::from_secs(5);

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::clock::ManualClock;

use crate::{
    helpers::{SUPERVISOR_TOKEN, TestApp, expect_error, expect_json, on_both_engines},
    provider::{MAIN, call_over, dial_ended, dialed, incoming, leg_status, sid},
};

/// Acme before Budget; Acme pays 25 and is paid out 10 per conversion; Second is another
/// campaign with Acme alone.
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
conversion_seconds = 60
dedupe_seconds = 2592000
payout = 10
revenue = 25
caps = { concurrency = 2 }

[[companies.buyers]]
name = "Budget"
destination = "+14155550102"
conversion_seconds = 60
dedupe_seconds = 2592000
payout = 8
revenue = 20

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
duplicate_caller_handling = "new_convertible_buyer"
buyers = [{ buyer = "Acme", priority = 1 }, { buyer = "Budget", priority = 2 }]

[[companies.campaigns]]
name = "Second"
numbers = ["+18005550200"]
buyers = [{ buyer = "Acme" }]
rtb_key = "second-campaign-rtb-key-02"
"#;

const SECOND: &str = "+18005550200";
const ANNA: &str = "+14155550111";
const BORIS: &str = "+14155550122";
const CARLA: &str = "+14155550133";
const START: &str = "2026-11-24T20:00:00Z";

/// The service on [`PLAN`], its clock in the test's hands.
struct Floor {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl Floor {
    async fn start(engine: crate::helpers::Engine) -> Option<Self> {
        let (app, clock) = TestApp::start_clocked(engine, PLAN, START).await?;
        Some(Self { app, clock })
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(SignedDuration::from_secs(seconds));
    }

    /// A call arrives and is dialed: the dial's action URL.
    async fn arrive(&self, n: u32, caller: &str, number: &str) -> String {
        let response = self
            .webhook("/voice/incoming", &incoming(&sid(n), caller, number))
            .await;
        dialed(response).await.1
    }

    async fn webhook(&self, path: &str, body: &str) -> reqwest::Response {
        self.app.webhook(&self.app.url(path), body).await
    }

    /// The day of the seed's floor: Anna converts with Acme, calls again and is kept from
    /// Acme (Budget is busy, so the call is dropped), Boris hangs up while Acme rings, and Carla
    /// is talking to Acme (live).
    async fn a_day(&self) {
        let action = self.arrive(1, ANNA, MAIN).await;
        self.advance(5);
        self.app
            .webhook(&action, &dial_ended(&sid(1), "completed", 120))
            .await;
        self.webhook("/voice/status", &call_over(&sid(1))).await;

        self.advance(60);
        let action = self.arrive(2, ANNA, MAIN).await;
        self.app.webhook(&action, &dial_ended(&sid(2), "busy", 0)).await;
        self.webhook("/voice/status", &call_over(&sid(2))).await;

        self.advance(60);
        self.arrive(3, BORIS, MAIN).await;
        self.webhook("/voice/status", &call_over(&sid(3))).await;

        self.advance(60);
        self.arrive(4, CARLA, MAIN).await;
        self.advance(3);
        let status = format!("/voice/calls/{}/attempts/1/status", sid(4));
        self.webhook(&status, &leg_status(&sid(4), "in-progress")).await;
    }

    async fn read(&self, path: &str) -> Value {
        expect_json(self.app.read(path).await, StatusCode::OK).await
    }

    async fn id(&self, kind: &str, name: &str) -> String {
        self.app.id_of(kind, name).await
    }
}

/// A supervisor's event stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, query: &str) -> Self {
        let response = (app.client.get(app.url(&format!("/api/v1/events{query}"))))
            .bearer_auth(SUPERVISOR_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next `call` event's id and data; `None` if none comes within `wait`.
    async fn next_call(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    (block.lines())
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim_start().to_owned())
                };
                if field("event:").as_deref() == Some("call") {
                    let data = serde_json::from_str(&field("data:").expect("data")).expect("JSON data");
                    return Some((field("id:").expect("an id"), data));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            let chunk = chunk.expect("the stream stays open")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

fn data(page: &Value) -> &Vec<Value> {
    page["data"].as_array().expect("a list")
}

fn sids(page: &Value) -> Vec<String> {
    data(page)
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap().to_owned())
        .collect()
}

on_both_engines! {
    async fn supervisor_tokens_read_everything_and_change_nothing(floor: Floor) {
        let app = &floor.app;
        for path in ["/calls/live", "/calls", "/stats/campaigns", "/stats/buyers", "/load", "/rtb", "/buyers"] {
            expect_json(app.read(path).await, StatusCode::OK).await;
            // The admin token reads too.
            expect_json(app.get(path).await, StatusCode::OK).await;
            let anonymous = app.client.get(app.url(&format!("/api/v1{path}"))).send().await.unwrap();
            expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
            let wrong = (app.client.get(app.url(&format!("/api/v1{path}"))))
                .bearer_auth("not-a-token-of-this-service")
                .send()
                .await
                .unwrap();
            expect_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
        }
        // Every change the API offers, on records that exist.
        let acme = floor.id("/buyers", "Acme").await;
        let main = floor.id("/campaigns", "Main").await;
        let writes = (switchboard::http::api_routes().into_iter()).filter(|route| route.method.as_str() != "GET");
        for route in writes {
            let path = (route.path)
                .replace("/buyers/{id}", &format!("/buyers/{acme}"))
                .replace("/campaigns/{id}", &format!("/campaigns/{main}"))
                .replace("{id}", &acme)
                .replace("{cap}", "daily");
            let method: Method = route.method.as_str().parse().unwrap();
            let response = (app.client.request(method, app.url(&format!("/api/v1{path}"))))
                .bearer_auth(SUPERVISOR_TOKEN)
                .json(&json!({"name": "Mallory", "destination": "+14155550199", "paused": true}))
                .send()
                .await
                .unwrap();
            expect_error(response, StatusCode::FORBIDDEN, "forbidden", None).await;
        }
        let buyer = floor.read(&format!("/buyers/{acme}")).await;
        assert_eq!(buyer["paused"], false, "nothing changed");
        assert_eq!(data(&floor.read("/buyers").await).len(), 2);
        assert_eq!(data(&floor.read("/campaigns").await).len(), 2);
    }

    async fn live_calls_show_where_each_call_stands_and_leave_when_it_ends(floor: Floor) {
        let empty = floor.read("/calls/live").await;
        assert!(data(&empty).is_empty(), "{empty}");

        floor.arrive(1, ANNA, MAIN).await;
        floor.advance(2);
        floor.arrive(2, BORIS, SECOND).await;
        floor.advance(3);
        let live = floor.read("/calls/live").await;
        assert_eq!(sids(&live), [sid(1), sid(2)], "oldest first: {live}");
        let anna = &data(&live)[0];
        let (acme, main) = (floor.id("/buyers", "Acme").await, floor.id("/campaigns", "Main").await);
        assert_eq!(anna["caller"], ANNA);
        assert_eq!(anna["campaign_id"], main.as_str());
        assert_eq!(anna["buyer_id"], acme.as_str());
        assert_eq!(anna["state"], "dialing");
        assert_eq!(anna["attempts"], 1);
        assert_eq!(anna["in_state_ms"], 5000, "dialing since the call arrived");

        // Filters: campaign, buyer, state.
        let second = floor.id("/campaigns", "Second").await;
        assert_eq!(sids(&floor.read(&format!("/calls/live?campaign_id={second}")).await), [sid(2)]);
        assert_eq!(sids(&floor.read(&format!("/calls/live?buyer_id={acme}")).await).len(), 2);
        let budget = floor.id("/buyers", "Budget").await;
        assert!(data(&floor.read(&format!("/calls/live?buyer_id={budget}")).await).is_empty());
        assert!(data(&floor.read("/calls/live?state=connected").await).is_empty());

        // Anna's buyer answers: connected, from now.
        let status = format!("/voice/calls/{}/attempts/1/status", sid(1));
        floor.webhook(&status, &leg_status(&sid(1), "in-progress")).await;
        floor.advance(1);
        let connected = floor.read("/calls/live?state=connected").await;
        assert_eq!(sids(&connected), [sid(1)]);
        assert_eq!(data(&connected)[0]["in_state_ms"], 1000);

        // Boris hangs up: his call leaves the live list.
        floor.webhook("/voice/status", &call_over(&sid(2))).await;
        assert_eq!(sids(&floor.read("/calls/live").await), [sid(1)]);

        let refused = floor.app.read("/calls/live?state=ended").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("state")).await;
        let refused = floor.app.read("/calls/live?campaign_id=nope").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("query")).await;
    }

    async fn recent_calls_are_searched_by_caller_outcome_campaign_buyer_and_time_a_page_at_a_time(floor: Floor) {
        floor.a_day().await;
        let all = floor.read("/calls").await;
        assert_eq!(sids(&all), [sid(4), sid(3), sid(2), sid(1)], "newest first: {all}");
        assert!(all.get("next_before").is_none(), "one page");

        assert_eq!(sids(&floor.read(&format!("/calls?caller={ANNA}")).await), [sid(2), sid(1)]);
        // A `+` left unencoded arrives as a space, and is read as the `+` it was.
        assert_eq!(sids(&floor.read("/calls?caller=+14155550111").await), [sid(2), sid(1)]);
        assert_eq!(sids(&floor.read("/calls?outcome=dropped").await), [sid(2)]);
        assert_eq!(sids(&floor.read("/calls?outcome=abandoned").await), [sid(3)]);
        assert_eq!(sids(&floor.read("/calls?state=connected").await), [sid(4)]);
        let budget = floor.id("/buyers", "Budget").await;
        assert_eq!(sids(&floor.read(&format!("/calls?buyer_id={budget}")).await), [sid(2)]);
        let main = floor.id("/campaigns", "Main").await;
        assert_eq!(sids(&floor.read(&format!("/calls?campaign_id={main}")).await).len(), 4);
        let second = floor.id("/campaigns", "Second").await;
        assert!(data(&floor.read(&format!("/calls?campaign_id={second}")).await).is_empty());

        // Anna's second call started at 20:01:05; Boris's at 20:02:05.
        let window = floor.read("/calls?from=2026-11-24T20:01:05Z&to=2026-11-24T20:02:05Z").await;
        assert_eq!(sids(&window), [sid(2)]);
        assert!(data(&floor.read("/calls?from=2026-11-25T00:00:00Z").await).is_empty());

        // Pages of one, to the end.
        let mut seen = Vec::new();
        let mut query = "/calls?limit=1".to_owned();
        loop {
            let page = floor.read(&query).await;
            seen.extend(sids(&page));
            match page["next_before"].as_str() {
                Some(before) => query = format!("/calls?limit=1&before={before}"),
                None => break,
            }
        }
        assert_eq!(seen, [sid(4), sid(3), sid(2), sid(1)]);

        let refused = floor.app.read("/calls?caller=not-a-number").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("caller")).await;
        let refused = floor.app.read("/calls?limit=0").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("limit")).await;
        let refused = floor.app.read("/calls?before=../x").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("before")).await;
        // A page after a call that does not exist is not an empty last page.
        let refused = floor.app.read(&format!("/calls?before={}", sid(99))).await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("before")).await;
        let refused = floor.app.read("/calls?from=2026-11-24T21:00:00Z&to=2026-11-24T20:00:00Z").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("from")).await;

        // One call: its summary, its dials and its timeline, decisions with skip reasons.
        let call = floor.read(&format!("/calls/{}", sid(2))).await;
        assert_eq!(call["outcome"], "dropped");
        assert_eq!(call["duplicates_avoided"], 1);
        assert_eq!(call["dials"].as_array().unwrap().len(), 1);
        let kinds: Vec<&str> = (call["timeline"].as_array().unwrap().iter())
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"webhook"));
        assert!(kinds.contains(&"decision") && kinds.contains(&"ended"), "{kinds:?}");
        assert!(call["timeline"].to_string().contains("duplicate"), "the skip reason is shown");
    }

    async fn statistics_count_each_campaigns_and_buyers_calls_over_a_time_range(floor: Floor) {
        let empty = floor.read("/stats/campaigns").await;
        assert!(data(&empty).is_empty(), "{empty}");
        floor.a_day().await;
        let (main, acme, budget) = (
            floor.id("/campaigns", "Main").await,
            floor.id("/buyers", "Acme").await,
            floor.id("/buyers", "Budget").await,
        );
        let campaigns = floor.read("/stats/campaigns").await;
        assert_eq!(data(&campaigns).len(), 1, "only campaigns with calls: {campaigns}");
        let stats = &data(&campaigns)[0];
        assert_eq!(stats["campaign_id"], main.as_str());
        let expected = json!({
            // Anna's first call, and Carla's (talking now).
            "campaign_id": main, "calls": 4, "live": 1, "connected": 2, "converted": 1,
            "duplicates_avoided": 1, "fallback_used": 0, "redirected": 0, "abandoned": 1,
            "blocked": 0, "dropped": {"duplicate": 1},
            // Anna's first call was answered 5 s after it arrived, Carla's 3 s.
            "average_time_to_connect_ms": 4000,
            "revenue": 25.0, "payout": 10.0,
        });
        assert_eq!(stats, &expected);

        let buyers = floor.read("/stats/buyers").await;
        let by_id = |id: &str| data(&buyers).iter().find(|b| b["buyer_id"] == id).cloned().unwrap();
        assert_eq!(
            by_id(&acme),
            json!({
                "buyer_id": acme, "dialed": 3, "live": 1, "connected": 2, "converted": 1,
                "duplicates_avoided": 1, "as_fallback": 0, "average_time_to_answer_ms": 4000,
                "revenue": 25.0, "payout": 10.0,
            })
        );
        assert_eq!(by_id(&budget)["dialed"], 1);
        assert_eq!(by_id(&budget)["connected"], 0);
        assert_eq!(by_id(&budget)["duplicates_avoided"], 0);

        // The range: calls count by when they started.
        let later = floor.read("/stats/campaigns?from=2026-11-24T20:01:00Z&to=2026-11-24T20:03:00Z").await;
        assert_eq!(data(&later)[0]["calls"], 2, "Anna's second call and Boris's: {later}");
        assert_eq!(data(&later)[0]["converted"], 0);
        let before = floor.read("/stats/buyers?to=2026-11-24T19:00:00Z").await;
        assert!(data(&before).is_empty());
        let refused = floor.app.read("/stats/campaigns?from=2026-11-24T21:00:00Z&to=2026-11-24T20:00:00Z").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("from")).await;
    }

    async fn the_timeline_counts_each_campaigns_calls_per_minute_and_per_hour(floor: Floor) {
        let empty = floor.read("/stats/timeline").await;
        assert!(data(&empty).is_empty(), "{empty}");
        floor.a_day().await;
        let main = floor.id("/campaigns", "Main").await;

        // Now is 20:03:08: the last hour by minute, rounded out to whole minutes.
        let timeline = floor.read("/stats/timeline").await;
        assert_eq!(
            (&timeline["bucket"], &timeline["from"], &timeline["to"]),
            (&json!("minute"), &json!("2026-11-24T19:03:00Z"), &json!("2026-11-24T20:04:00Z"))
        );
        let series = &data(&timeline)[0];
        assert_eq!(series["campaign_id"], main.as_str());
        let last = |name: &str| {
            let values = series[name].as_array().unwrap();
            assert_eq!(values.len(), 61, "{name}: one value per minute");
            assert!(values[..57].iter().all(|v| v == 0), "{name}: nothing before 20:00");
            values[57..].to_vec()
        };
        // 20:00 Anna converts; 20:01 Anna again, kept from Acme and dropped; 20:02 Boris hangs
        // up while Acme rings; 20:03 Carla is talking to Acme.
        assert_eq!(last("calls"), [json!(1), json!(1), json!(1), json!(1)]);
        assert_eq!(last("connected"), [json!(1), json!(0), json!(0), json!(1)]);
        assert_eq!(last("converted"), [json!(1), json!(0), json!(0), json!(0)]);
        assert_eq!(last("duplicates_avoided"), [json!(0), json!(1), json!(0), json!(0)]);
        assert_eq!(last("dropped"), [json!(0), json!(1), json!(0), json!(0)]);

        // The same calls as the campaign statistics over the same range.
        let stats = floor.read("/stats/campaigns?from=2026-11-24T19:03:00Z&to=2026-11-24T20:04:00Z").await;
        let total = |name: &str| series[name].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>();
        let stats = &data(&stats)[0];
        for name in ["calls", "connected", "converted", "duplicates_avoided"] {
            assert_eq!(json!(total(name)), stats[name], "{name}");
        }
        assert_eq!(json!(total("dropped")), stats["dropped"]["duplicate"]);

        // By hour, the last day: all four in the 20:00 hour.
        let hours = floor.read("/stats/timeline?bucket=hour").await;
        assert_eq!((&hours["from"], &hours["to"]), (&json!("2026-11-23T20:00:00Z"), &json!("2026-11-24T21:00:00Z")));
        let calls = data(&hours)[0]["calls"].as_array().unwrap().clone();
        assert_eq!(calls.len(), 25);
        assert_eq!(calls.last(), Some(&json!(4)));
        // A range of its own.
        let range = floor.read("/stats/timeline?bucket=minute&from=2026-11-24T20:01:30Z&to=2026-11-24T20:02:30Z").await;
        assert_eq!(data(&range)[0]["calls"], json!([1, 1]), "20:01 and 20:02: {range}");

        let refused = floor.app.read("/stats/timeline?from=2026-11-24T00:00:00Z&to=2026-11-26T00:00:00Z").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("from")).await;
        let refused = floor.app.read("/stats/timeline?bucket=week").await;
        expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("query")).await;
    }

    async fn buyer_load_shows_live_calls_against_caps(floor: Floor) {
        floor.arrive(1, ANNA, MAIN).await;
        floor.arrive(2, BORIS, MAIN).await;
        let load = floor.read("/load").await;
        let names: Vec<&str> = data(&load).iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Acme", "Budget"], "busiest first");
        let acme = &data(&load)[0];
        assert_eq!(acme["concurrency"], json!({"limit": 2, "live": 2}));
        assert_eq!(acme["blocked"], "concurrency");
        assert_eq!(data(&load)[1]["concurrency"], json!({"limit": null, "live": 0}));
        let other_company = "01890000-0000-7000-8000-000000000000";
        assert!(data(&floor.read(&format!("/load?company_id={other_company}")).await).is_empty());
    }
}

on_both_engines! {
    async fn the_event_stream_opens_with_the_live_calls_then_sends_every_change(floor: Floor) {
        let app = &floor.app;
        // Anna's call is live before anyone watches.
        floor.arrive(1, ANNA, MAIN).await;
        let mut events = Events::open(app, "").await;
        let (id, snapshot) = events.next_call(WAIT).await.expect("the snapshot");
        assert_eq!(snapshot["call_sid"], sid(1));
        assert_eq!(snapshot["state"], "dialing");
        assert_eq!(id, format!("{}:{}", sid(1), snapshot["version"]));

        // A watcher of the second campaign hears only of its calls.
        let second = floor.id("/campaigns", "Second").await;
        let mut second_only = Events::open(app, &format!("?campaign_id={second}")).await;

        floor.arrive(2, BORIS, MAIN).await;
        let (_, arrived) = events.next_call(WAIT).await.expect("Boris's call");
        assert_eq!((arrived["call_sid"].as_str(), arrived["state"].as_str()), (Some(&*sid(2)), Some("dialing")));
        assert_eq!(arrived["caller"], BORIS);

        let status = format!("/voice/calls/{}/attempts/1/status", sid(1));
        floor.webhook(&status, &leg_status(&sid(1), "in-progress")).await;
        let (_, answered) = events.next_call(WAIT).await.expect("Anna's buyer answers");
        assert_eq!((answered["call_sid"].as_str(), answered["state"].as_str()), (Some(&*sid(1)), Some("connected")));
        assert!(answered["version"].as_u64() > snapshot["version"].as_u64());

        floor.webhook("/voice/status", &call_over(&sid(2))).await;
        let (_, ended) = events.next_call(WAIT).await.expect("Boris hangs up");
        assert_eq!(ended["state"], "ended");
        assert_eq!(ended["outcome"], "abandoned");

        floor.arrive(3, CARLA, SECOND).await;
        let (_, first_heard) = second_only.next_call(WAIT).await.expect("Carla's call");
        assert_eq!(first_heard["call_sid"], sid(3), "calls of Main are not sent to a Second watcher");

        let anonymous = app.client.get(app.url("/api/v1/events")).send().await.unwrap();
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    }
}

/// One sample of the exposition, e.g. `switchboard_conversions_total` or
/// `switchboard_webhooks_total{webhook="incoming",outcome="dial"}`.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    (exposition.lines())
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

on_both_engines! {
    async fn metrics_count_webhooks_decisions_calls_and_pings(floor: Floor) {
        let app = &floor.app;
        floor.a_day().await;
        // A call to a number of no campaign, which ends on its first webhook.
        let rejected = floor.webhook("/voice/incoming", &incoming(&sid(8), ANNA, "+18005550999")).await;
        assert_eq!(rejected.status(), StatusCode::OK);
        // A forged webhook, and two pings: one refused, one bid.
        let forged = (app.client.post(app.url("/voice/incoming")))
            .header("X-Twilio-Signature", "forged")
            .form(&[("CallSid", sid(9)), ("From", ANNA.into()), ("To", MAIN.into())])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        for key in ["no-such-key-0000000000", "second-campaign-rtb-key-02"] {
            let ping = json!({"key": key, "publisher_id": "pub-1", "caller_number": "+19175470066"});
            app.client.post(app.url("/rtbs.json")).json(&ping).send().await.unwrap();
        }

        let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let response = app.client.get(app.url("/metrics")).bearer_auth(SUPERVISOR_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("# EOF"), "{text}");

        let expected = [
            (r#"switchboard_webhooks_total{webhook="incoming",outcome="dial"}"#, 4.0),
            (r#"switchboard_webhooks_total{webhook="incoming",outcome="forbidden"}"#, 1.0),
            (r#"switchboard_webhooks_total{webhook="incoming",outcome="reject"}"#, 1.0),
            (r#"switchboard_webhooks_total{webhook="dial_action",outcome="hangup"}"#, 1.0),
            (r#"switchboard_webhooks_total{webhook="dial_action",outcome="end"}"#, 1.0),
            (r#"switchboard_webhooks_total{webhook="status",outcome="acknowledge"}"#, 3.0),
            (r#"switchboard_webhooks_total{webhook="leg_status",outcome="acknowledge"}"#, 1.0),
            (r#"switchboard_decision_duration_seconds_count{webhook="incoming"}"#, 5.0),
            (r#"switchboard_decision_duration_seconds_count{webhook="dial_action"}"#, 2.0),
            ("switchboard_live_calls", 1.0),
            ("switchboard_calls_started_total", 5.0),
            (r#"switchboard_calls_ended_total{outcome="rejected"}"#, 1.0),
            (r#"switchboard_calls_ended_total{outcome="connected"}"#, 1.0),
            (r#"switchboard_calls_ended_total{outcome="dropped"}"#, 1.0),
            (r#"switchboard_calls_ended_total{outcome="abandoned"}"#, 1.0),
            ("switchboard_conversions_total", 1.0),
            ("switchboard_duplicates_avoided_total", 1.0),
            (r#"switchboard_calls_dropped_total{reason="duplicate"}"#, 1.0),
            (r#"switchboard_rtb_pings_total{status="rejected",reason="unknown_key"}"#, 1.0),
            (r#"switchboard_rtb_pings_total{status="reserved",reason=""}"#, 1.0),
        ];
        for (series, value) in expected {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        let slowest = sample(&text, r#"switchboard_decision_duration_seconds_bucket{le="+Inf",webhook="incoming"}"#)
            .or_else(|| sample(&text, r#"switchboard_decision_duration_seconds_bucket{webhook="incoming",le="+Inf"}"#));
        assert_eq!(slowest, Some(5.0), "a histogram with buckets: {text}");
    }
}

/// The document served, and the routes the server has, are the same set, and every documented
/// operation reaches a handler.
#[actix_web::test]
async fn the_openapi_document_describes_exactly_the_routes_that_exist() {
    let Some(app) = TestApp::start(crate::helpers::Engine::Sqlite).await else {
        return;
    };
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let document = expect_json(response, StatusCode::OK).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["servers"][0]["url"], "/api/v1");

    let documented: BTreeSet<(String, String)> = (document["paths"].as_object().unwrap().iter())
        .flat_map(|(path, operations)| {
            (operations.as_object().unwrap().keys()).map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = (switchboard::http::api_routes().into_iter())
        .map(|route| (route.method.to_string(), route.path))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "documented but not served: {unserved:?}");

    // Clients generated from the document name their methods by operation id.
    let ids: Vec<&str> = (documented.iter())
        .filter_map(|(method, path)| document["paths"][path][method.to_lowercase()]["operationId"].as_str())
        .collect();
    assert_eq!(ids.len(), documented.len(), "every operation has an id");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "ids repeated: {ids:?}"
    );

    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    for (method, path) in &documented {
        let operation = &document["paths"][path][method.to_lowercase()];
        assert!(
            operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(
                    schemes.contains_key(scheme),
                    "{method} {path}: no scheme {scheme}"
                );
            }
        }
        // Every reference resolves.
        for reference in references(operation) {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(
                document.pointer(pointer).is_some(),
                "{method} {path}: {reference}"
            );
        }
        // Supervisors are refused exactly where the document says only admins may go.
        let for_supervisors = (operation["security"].as_array().unwrap().iter()).any(|requirement| {
            requirement.get("supervisor").is_some() || requirement.as_object().unwrap().is_empty()
        }) || operation["security"].as_array().unwrap().is_empty();
        let url = path
            .replace("{id}", "01890000-0000-7000-8000-000000000000")
            .replace("{sid}", &sid(1))
            .replace("{cap}", "daily");
        if *path != "/events" {
            let as_supervisor = (app
                .client
                .request(method.parse().unwrap(), app.url(&format!("/api/v1{url}"))))
            .bearer_auth(SUPERVISOR_TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
            assert_eq!(
                as_supervisor.status() == StatusCode::FORBIDDEN,
                !for_supervisors,
                "{method} {path}"
            );
        }
        // The route reaches a handler: neither the API's not-found nor method-not-allowed.
        let response = app
            .admin(method.parse().unwrap(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap();
            assert_ne!(
                body["error"]["message"], "no such API endpoint",
                "{method} {path}"
            );
        }
    }
}

/// Every `$ref` in a JSON value.
fn references(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => (map.iter())
            .flat_map(|(key, value)| match (key.as_str(), value) {
                ("$ref", Value::String(reference)) => vec![reference.clone()],
                _ => references(value),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(references).collect(),
        _ => Vec::new(),
    }
}

/// While the database is away, the status API says so (503) rather than showing nothing, and
/// the event stream still tells of calls, which are listed once the database returns.
#[actix_web::test]
async fn while_the_database_is_down_the_status_api_says_so_and_the_stream_goes_on() {
    use crate::helpers::FlakyApp;

    let FlakyApp { store, base, .. } = &FlakyApp::start(PLAN).await;
    let client = reqwest::Client::new();
    let read = |path: &str| {
        client
            .get(format!("{base}/api/v1{path}"))
            .bearer_auth(SUPERVISOR_TOKEN)
            .send()
    };

    let mut events = {
        let response = read("/events").await.unwrap();
        Events {
            response,
            buffer: String::new(),
        }
    };
    store.set_down(true);
    for path in ["/calls/live", "/calls", "/stats/campaigns", "/stats/buyers"] {
        let response = read(path).await.unwrap();
        expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None).await;
    }
    let signed = TestApp::signing_client();
    let url = format!("{base}/voice/incoming");
    let (number, _) = dialed(signed.webhook(&url, &incoming(&sid(1), ANNA, MAIN)).await).await;
    assert_eq!(number, "+14155550101", "the call is routed all the same");
    let (_, heard) = events.next_call(WAIT).await.expect("the change is streamed");
    assert_eq!(heard["state"], "dialing");

    store.set_down(false);
    let mut listed = Vec::new();
    for _ in 0..60 {
        listed = sids(&expect_json(read("/calls/live").await.unwrap(), StatusCode::OK).await);
        if !listed.is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, [sid(1)], "saved once the database returned");
}

/// What the API answers is what the document says: each read, on a day's worth of calls (with
/// a postback to send, an RTB ping and a blocked caller), is validated against the schema of its
/// documented 200 answer, and so are the answers to changes.
#[actix_web::test]
async fn answers_match_the_schemas_of_the_openapi_document() {
    let Some(floor) = Floor::start(crate::helpers::Engine::Sqlite).await else {
        return;
    };
    let document = floor.read("/openapi.json").await;
    let (acme, main) = (
        floor.id("/buyers", "Acme").await,
        floor.id("/campaigns", "Main").await,
    );
    let company = floor.id("/companies", "Acme Leads").await;
    let publisher = floor.id("/publishers", "Search Partners").await;
    let matches = |documented: &str, operation: &str, answer: &Value| {
        // A JSON pointer (RFC 6901) in a URI fragment (RFC 3986).
        let escaped = (documented.replace('~', "~0").replace('/', "~1"))
            .replace('{', "%7B")
            .replace('}', "%7D");
        let pointer = format!("#/paths/{escaped}/{operation}/content/application~1json/schema");
        let mut schema = document.clone();
        schema["$ref"] = json!(pointer);
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{documented}: {e}"));
        let errors: Vec<String> = validator.iter_errors(answer).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{operation} {documented} does not match its schema: {errors:?}\n{answer}"
        );
    };

    // Acme is told of its conversions, at an address where nothing listens: the postback waits
    // in the outbox to be read.
    let endpoint = json!({"postbacks": [{"url": "http://127.0.0.1:9/postbacks", "secret": "0123456789abcdef", "events": ["call.converted"]}]});
    let patched = floor.app.patch(&format!("/buyers/{acme}"), endpoint).await;
    matches(
        "/buyers/{id}",
        "patch/responses/200",
        &expect_json(patched, StatusCode::OK).await,
    );
    floor.a_day().await;
    let ping = (floor.app.client.post(floor.app.url("/rtbs.json")))
        .json(&json!({"key": "second-campaign-rtb-key-02", "publisher_id": "pub-1", "caller_number": "+14155550144"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK, "the ping is answered and logged");
    let blocked = floor
        .app
        .post(
            "/blocked_callers",
            json!({"company_id": company, "pattern": "+1900*", "reason": "premium rate"}),
        )
        .await;
    let blocked = expect_json(blocked, StatusCode::CREATED).await;
    matches("/blocked_callers", "post/responses/201", &blocked);
    let deadline = std::time::Instant::now() + WAIT;
    let postback = loop {
        let page = floor.read("/postbacks").await;
        if let Some(first) = data(&page).first() {
            matches("/postbacks", "get/responses/200", &page);
            break first["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Anna's conversion queued no postback"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!data(&floor.read("/rtb").await).is_empty(), "the ping is logged");

    let reads = [
        ("/calls/live", "/calls/live".to_owned()),
        ("/calls", "/calls".to_owned()),
        ("/calls/{sid}", format!("/calls/{}", sid(2))),
        ("/stats/campaigns", "/stats/campaigns".to_owned()),
        ("/stats/timeline", "/stats/timeline".to_owned()),
        ("/stats/timeline", "/stats/timeline?bucket=hour".to_owned()),
        ("/stats/buyers", "/stats/buyers".to_owned()),
        ("/stats/publishers", "/stats/publishers".to_owned()),
        ("/load", "/load".to_owned()),
        ("/buyers/{id}/caps", format!("/buyers/{acme}/caps")),
        ("/rtb", "/rtb".to_owned()),
        ("/companies", "/companies".to_owned()),
        ("/companies/{id}", format!("/companies/{company}")),
        ("/buyers", "/buyers".to_owned()),
        ("/buyers/{id}", format!("/buyers/{acme}")),
        ("/campaigns", "/campaigns".to_owned()),
        ("/campaigns/{id}", format!("/campaigns/{main}")),
        ("/publishers", "/publishers".to_owned()),
        ("/publishers/{id}", format!("/publishers/{publisher}")),
        ("/blocked_callers", "/blocked_callers".to_owned()),
        (
            "/blocked_callers/{id}",
            format!("/blocked_callers/{}", blocked["id"].as_str().unwrap()),
        ),
        ("/postbacks/{id}", format!("/postbacks/{postback}")),
    ];
    // `/events` is a stream of server-sent events, not JSON: the event stream's own test reads it.
    for (documented, path) in reads {
        matches(documented, "get/responses/200", &floor.read(&path).await);
    }
    // What only admins read, and the answers to changes.
    let key = expect_json(
        floor.app.get(&format!("/campaigns/{main}/rtb_key")).await,
        StatusCode::OK,
    )
    .await;
    matches("/campaigns/{id}/rtb_key", "get/responses/200", &key);
    let reset = floor
        .app
        .post(&format!("/buyers/{acme}/caps/daily/reset"), json!({}))
        .await;
    matches(
        "/buyers/{id}/caps/{cap}/reset",
        "post/responses/200",
        &expect_json(reset, StatusCode::OK).await,
    );
    let created = floor
        .app
        .post(
            "/publishers",
            json!({"company_id": company, "name": "Mail Partners", "numbers": ["+18005550300"]}),
        )
        .await;
    matches(
        "/publishers",
        "post/responses/201",
        &expect_json(created, StatusCode::CREATED).await,
    );
    // Tokens are the admin's to see.
    let issued = floor
        .app
        .post("/tokens", json!({ "name": "grafana", "role": "supervisor" }))
        .await;
    let issued = expect_json(issued, StatusCode::CREATED).await;
    matches("/tokens", "post/responses/201", &issued);
    let id = issued["id"].as_str().unwrap();
    let rotated = floor
        .app
        .post(&format!("/tokens/{id}/rotate"), json!({ "grace_seconds": 60 }))
        .await;
    matches(
        "/tokens/{id}/rotate",
        "post/responses/201",
        &expect_json(rotated, StatusCode::CREATED).await,
    );
    matches(
        "/tokens",
        "get/responses/200",
        &expect_json(floor.app.get("/tokens").await, StatusCode::OK).await,
    );
}

on_both_engines! {
    async fn a_call_whose_end_never_comes_is_ended_and_frees_its_buyer(floor: Floor) {
        let app = &floor.app;
        floor.arrive(1, ANNA, MAIN).await;
        floor.arrive(2, BORIS, MAIN).await;
        let load = floor.read("/load").await;
        assert_eq!(data(&load)[0]["concurrency"], json!({"limit": 2, "live": 2}), "Acme is full");

        // No callback ever comes. Past the longest a call can last (4 h 30 min), both are ended.
        floor.advance(4 * 3600 + 30 * 60 + 1);
        let mut live = Vec::new();
        for _ in 0..100 {
            live = sids(&floor.read("/calls/live").await);
            if live.is_empty() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(live.is_empty(), "still live: {live:?}");
        let call = floor.read(&format!("/calls/{}", sid(1))).await;
        assert_eq!(call["outcome"], "timed_out", "marked as such");
        let last = call["timeline"].as_array().unwrap().last().cloned().unwrap();
        assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("ended"), Some("timed_out")));
        let load = floor.read("/load").await;
        assert_eq!(data(&load)[0]["concurrency"]["live"], 0, "its slots are free: {load}");

        // The next caller gets Acme again.
        let response = floor.webhook("/voice/incoming", &incoming(&sid(3), CARLA, MAIN)).await;
        assert_eq!(dialed(response).await.0, "+14155550101");
        let text = (app.client.get(app.url("/metrics")).bearer_auth(SUPERVISOR_TOKEN).send().await.unwrap())
            .text()
            .await
            .unwrap();
        assert_eq!(sample(&text, r#"switchboard_calls_ended_total{outcome="timed_out"}"#), Some(2.0));
    }
}
