//! What the buyer hears and sees, outside in, beyond the replayed scenarios: the block list
//! through the API, recording callbacks that are forged, malformed, for unknown calls or
//! retried, a whisper callback out of order, plan settings refused with the field named, and
//! RTB pings judged by the caller's state.

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::{
    domain::call::CallSid,
    plan::Plan,
    simulate::twiml::{self, Document, Whisper},
    store::CallStore,
};

use crate::{
    helpers::{Engine, TestApp, expect_error, expect_json, on_both_engines},
    provider::{CALLER, MAIN, call_over, dial_ended, form, incoming, path_of, sid},
};

const PLAN: &str = include_str!("../fixtures/plans/acme.toml");

/// The replay fixtures' plan, with Main's calls recorded from the answer, a whisper for Acme
/// Auto, and an RTB key with a publisher for pings.
struct Acme(TestApp);

impl Acme {
    async fn start(engine: Engine) -> Option<Self> {
        let plan = PLAN
            .replace(
                "numbers = [\"+18005550100\"]",
                "numbers = [\"+18005550100\"]\nrecord = \"from-answer\"\nrtb_key = \"main-campaign-rtb-key-0001\"",
            )
            .replace(
                "destination = \"+14155550101\"",
                "destination = \"+14155550101\"\nwhisper = { say = \"Call from {campaign}.\" }",
            )
            .replace(
                "duplicate_caller_handling = true\n",
                "duplicate_caller_handling = true\n\n[[companies.publishers]]\nname = \"Search\"\nexternal_id = \"pub-1\"\n",
            );
        TestApp::start_with_plan(engine, &Plan::parse(&plan).unwrap())
            .await
            .map(Self)
    }
}

impl std::ops::Deref for Acme {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.0
    }
}

/// A call's TwiML, checked as the provider reads it.
async fn twiml_of(response: reqwest::Response, document: Document) -> twiml::Element {
    let body = text_of(response).await;
    twiml::check(&body, document).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn text_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// An attribute of the `<Dial>` (or its noun) a call was answered with.
fn dial_attribute<'a>(response: &'a twiml::Element, name: &str) -> Option<&'a str> {
    let dial = response.children.iter().find(|verb| verb.name == "Dial")?;
    dial.attribute(name)
        .or_else(|| dial.children.first()?.attribute(name))
}

fn recording(call: &str, recording: &str, status: &str) -> String {
    let url = format!("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{recording}");
    recording_with(call, recording, &url, status)
}

fn recording_with(call: &str, recording: &str, url: &str, status: &str) -> String {
    form(&[
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("CallSid", call),
        ("RecordingSid", recording),
        ("RecordingUrl", url),
        ("RecordingStatus", status),
        ("RecordingDuration", "131"),
        ("RecordingChannels", "2"),
        ("RecordingSource", "DialVerb"),
    ])
}

async fn call_view(app: &TestApp, sid: &str) -> Value {
    expect_json(app.read(&format!("/calls/{sid}")).await, StatusCode::OK).await
}

on_both_engines! {
    async fn the_block_list_is_kept_through_the_api_and_refuses_callers_at_once(app: Acme) {
        let company = app.id_of("/companies", "Acme Leads").await;
        let blocked = json!({"company_id": company, "pattern": "+1 (415) 555-0123", "reason": "chargebacks"});
        let created = app.post("/blocked_callers", blocked.clone()).await;
        let location = created.headers()["location"].to_str().unwrap().to_owned();
        let entry = expect_json(created, StatusCode::CREATED).await;
        assert_eq!((entry["pattern"].as_str(), entry["reason"].as_str()), (Some(CALLER), Some("chargebacks")));
        assert!(location.ends_with(entry["id"].as_str().unwrap()), "{location}");
        expect_error(app.post("/blocked_callers", blocked).await, StatusCode::CONFLICT, "conflict", Some("pattern")).await;
        let bad = json!({"company_id": company, "pattern": "415-555-0123"});
        let message = expect_error(app.post("/blocked_callers", bad).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("pattern")).await;
        assert!(message.contains("country code"), "{message}");
        let nobody = json!({"company_id": "0190c1a2-0000-7000-8000-000000000000", "pattern": "+1900*"});
        expect_error(app.post("/blocked_callers", nobody).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("company_id")).await;
        let by_supervisor = app.client.post(app.url("/api/v1/blocked_callers"))
            .bearer_auth(crate::helpers::SUPERVISOR_TOKEN)
            .json(&json!({"company_id": company, "pattern": "+1900*"}))
            .send().await.unwrap();
        assert_eq!(by_supervisor.status(), StatusCode::FORBIDDEN);
        let listed = expect_json(app.read(&format!("/blocked_callers?company_id={company}")).await, StatusCode::OK).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

        // Blocked at once: refused before it is answered, and recorded so.
        let refused = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(1), CALLER, MAIN)).await, Document::Call).await;
        let names: Vec<&str> = refused.children.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Reject"]);
        assert_eq!(refused.children[0].attribute("reason"), Some("rejected"));
        let view = call_view(&app, &sid(1)).await;
        assert_eq!((view["outcome"].as_str(), view["attempts"].as_u64()), (Some("blocked"), Some(0)), "{view}");
        // The record names the entry that refused it: which pattern, and why.
        let by = (view["timeline"].as_array().unwrap().iter())
            .find(|entry| entry["kind"] == "blocked")
            .unwrap_or_else(|| panic!("no `blocked` entry: {view}"));
        assert_eq!(
            (by["entry_id"].as_str(), by["pattern"].as_str(), by["reason"].as_str()),
            (entry["id"].as_str(), Some(CALLER), Some("chargebacks")),
            "{by}"
        );
        // Retried, or asked through the number's fallback URL: refused unanswered again, never
        // `<Hangup/>`, which answers (and bills) the call.
        let fallback = format!("{}&ErrorCode=11200&ErrorUrl={}", incoming(&sid(1), CALLER, MAIN), app.url("/voice/incoming"));
        for (url, body) in [("/voice/incoming", incoming(&sid(1), CALLER, MAIN)), ("/voice/fallback", fallback)] {
            let again = twiml_of(app.webhook(&app.url(url), &body).await, Document::Call).await;
            let names: Vec<&str> = again.children.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, ["Reject"], "{url}");
        }
        let stats = expect_json(app.read("/stats/campaigns").await, StatusCode::OK).await;
        assert_eq!(stats["data"][0]["blocked"], 1, "{stats}");
        // RTB pings for the caller get no bid.
        let ping = json!({"key": "main-campaign-rtb-key-0001", "publisher_id": "pub-1", "caller_number": CALLER});
        let answer = expect_json(app.client.post(app.url("/rtbs.json")).json(&ping).send().await.unwrap(), StatusCode::OK).await;
        assert_eq!((answer["status"].as_str(), answer["reason"].as_str()), (Some("no-target"), Some("blocked")), "{answer}");

        // Unblocked at once too.
        let one = format!("/blocked_callers/{}", entry["id"].as_str().unwrap());
        assert_eq!(expect_json(app.read(&one).await, StatusCode::OK).await, entry);
        assert_eq!(app.delete(&one).await.status(), StatusCode::NO_CONTENT);
        expect_error(app.delete(&one).await, StatusCode::NOT_FOUND, "not_found", None).await;
        let routed = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(2), CALLER, MAIN)).await, Document::Call).await;
        assert_eq!(routed.children[0].name, "Dial");
    }

    async fn recording_callbacks_are_signed_kept_once_and_never_invent_a_call(app: Acme) {
        let call = sid(3);
        let answer = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN)).await, Document::Call).await;
        assert_eq!(dial_attribute(&answer, "record"), Some("record-from-answer-dual"));
        let action = dial_attribute(&answer, "action").unwrap().to_owned();
        let url = dial_attribute(&answer, "recordingStatusCallback").unwrap().to_owned();
        assert!(path_of(&url).ends_with(&format!("/voice/calls/{call}/attempts/1/recording")), "{url}");
        assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 140)).await.status(), StatusCode::OK);
        assert_eq!(app.webhook(&app.url("/voice/status"), &call_over(&call)).await.status(), StatusCode::NO_CONTENT);

        // Forged: refused, and nothing is kept.
        let unsigned = app.client.post(&url).header("Content-Type", "application/x-www-form-urlencoded")
            .body(recording(&call, "RE01", "completed")).send().await.unwrap();
        assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
        // Malformed: a recording with no id, no address or no status cannot be stored right.
        let media = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE01";
        for body in [
            recording_with(&call, "", media, "completed"),
            recording_with(&call, "RE01", "javascript:alert(1)", "completed"),
            recording_with(&call, "RE01", media, "done"),
        ] {
            let response = app.webhook(&url, &body).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        }
        // For a call nobody knows: acknowledged, and no call is made up.
        let stranger = sid(4);
        let elsewhere = url.replace(&call, &stranger);
        assert_eq!(app.webhook(&elsewhere, &recording(&stranger, "RE02", "completed")).await.status(), StatusCode::NO_CONTENT);
        assert!(app.store.call(&CallSid::parse(&stranger).unwrap()).await.unwrap().is_none());
        let before = call_view(&app, &call).await;
        assert_eq!(before["recordings"], json!([]), "{before}");

        // The real one, after the call ended; then in-progress news late, and a retry: kept once.
        assert_eq!(app.webhook(&url, &recording(&call, "RE03", "completed")).await.status(), StatusCode::NO_CONTENT);
        let after = call_view(&app, &call).await;
        let kept = &after["recordings"][0];
        assert_eq!(kept["sid"], "RE03");
        assert_eq!((kept["status"].as_str(), kept["duration_seconds"].as_u64(), kept["channels"].as_u64()), (Some("completed"), Some(131), Some(2)));
        assert_eq!(kept["attempt"], 1);
        assert!(kept["url"].as_str().unwrap().starts_with("https://api.twilio.com/"), "{kept}");
        let recorded: Vec<&Value> = after["timeline"].as_array().unwrap().iter().filter(|e| e["kind"] == "recorded").collect();
        assert_eq!(recorded.len(), 1, "{after}");
        for retried in ["completed", "in-progress"] {
            assert_eq!(app.webhook(&url, &recording(&call, "RE03", retried)).await.status(), StatusCode::NO_CONTENT);
        }
        let again = call_view(&app, &call).await;
        assert_eq!(again["recordings"], after["recordings"]);
        assert_eq!(again["outcome"], "connected", "a recording does not move the call");
    }

    async fn a_whisper_callback_out_of_order_is_hung_up_and_changes_nothing(app: Acme) {
        let call = sid(5);
        let answer = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN)).await, Document::Call).await;
        let whisper_url = dial_attribute(&answer, "url").unwrap().to_owned();
        let leg = form(&[("CallSid", "CA99999999999999999999999999999999"), ("ParentCallSid", &call), ("CallStatus", "in-progress")]);
        let pressed = format!("{leg}&Digits=1");
        let before = call_view(&app, &call).await;
        // An attempt never made, and a press-1 answer for a buyer that has no prompt.
        for (url, body) in [
            (whisper_url.replace("/attempts/1/", "/attempts/7/"), leg.as_str()),
            (whisper_url.replace("/whisper", "/screen"), pressed.as_str()),
            (whisper_url.replace(&call, &sid(6)), leg.as_str()),
        ] {
            let answer = text_of(app.webhook(&url, body).await).await;
            assert_eq!(twiml::read_whisper(&answer), Ok(Whisper::Hangup), "{url}: {answer}");
        }
        let after = call_view(&app, &call).await;
        for field in ["state", "dials", "buyer_id", "attempts"] {
            assert_eq!(after[field], before[field], "{field}");
        }
        assert!(app.store.call(&CallSid::parse(&sid(6)).unwrap()).await.unwrap().is_none());
        // The real whisper: the buyer hears it, then the caller is put through.
        let heard = twiml_of(app.webhook(&whisper_url, &leg).await, Document::Leg).await;
        assert_eq!(heard.children[0].name, "Say");
        assert_eq!(heard.children[0].text, "Call from Main.");
    }

    async fn buyer_settings_are_checked_and_the_faulty_field_named(app: Acme) {
        let buyer = format!("/buyers/{}", app.id_of("/buyers", "Acme Auto").await);
        for (change, field) in [
            (json!({"states": ["CA", "XX"]}), "states[1]"),
            (json!({"states": []}), "states"),
            (json!({"area_codes": {"deny": ["012"]}}), "area_codes.deny[0]"),
            (json!({"area_codes": {"only": ["415"]}}), "area_codes.only"),
            (json!({"caller_id": "the caller"}), "caller_id"),
            (json!({"caller_id": "+15555550100"}), "caller_id"),
            (json!({"whisper": {"say": null, "play": "ftp://cdn.example/w.mp3"}}), "whisper.play"),
            (json!({"whisper": {"say": ""}}), "whisper.say"),
            (json!({"whisper": {"play": "https://cdn.example/w.mp3"}}), "whisper"),
            (json!({"record": "always"}), "record"),
            (json!({"screen": "press_1"}), "screen"),
        ] {
            expect_error(app.patch(&buyer, change).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field)).await;
        }
        let campaign = format!("/campaigns/{}", app.id_of("/campaigns", "Main").await);
        expect_error(app.patch(&campaign, json!({"answer_on_bridge": "yes"})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("answer_on_bridge")).await;

        let changed = json!({
            "states": ["tx", "CA"], "area_codes": {"allow": ["713", "415"]}, "caller_id": "+1 415 555 0100",
            "screen": "press-1", "record": "from-ringing", "whisper": {"say": null, "play": "https://cdn.example.com/w.mp3"},
        });
        let stored = expect_json(app.patch(&buyer, changed).await, StatusCode::OK).await;
        assert_eq!(stored["states"], json!(["CA", "TX"]));
        assert_eq!(stored["area_codes"], json!({"allow": ["415", "713"], "deny": []}));
        assert_eq!(stored["caller_id"], "+14155550100");
        assert_eq!((stored["screen"].as_str(), stored["record"].as_str()), (Some("press-1"), Some("from-ringing")));
        assert_eq!(expect_json(app.get(&buyer).await, StatusCode::OK).await, stored, "read back as written");

        // The next call's <Dial> carries it all.
        let answer = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(8), "+17135550100", MAIN)).await, Document::Call).await;
        assert_eq!(dial_attribute(&answer, "callerId"), Some("+14155550100"));
        assert_eq!(dial_attribute(&answer, "record"), Some("record-from-ringing-dual"));
        assert!(dial_attribute(&answer, "url").is_some_and(|url| path_of(url).ends_with("/attempts/1/whisper")));
    }

    async fn pings_bid_only_for_buyers_licensed_where_the_caller_is(app: Acme) {
        let acme = format!("/buyers/{}", app.id_of("/buyers", "Acme Auto").await);
        let budget = format!("/buyers/{}", app.id_of("/buyers", "Budget Cover").await);
        let fallback = format!("/buyers/{}", app.id_of("/buyers", "Fallback Center").await);
        expect_json(app.patch(&acme, json!({"states": ["TX"]})).await, StatusCode::OK).await;
        expect_json(app.patch(&budget, json!({"states": ["FL"]})).await, StatusCode::OK).await;
        expect_json(app.patch(&fallback, json!({"states": ["FL"]})).await, StatusCode::OK).await;
        let ping = |n: u32, extra: Value| {
            let mut body = json!({"key": "main-campaign-rtb-key-0001", "publisher_id": "pub-1", "caller_number": format!("+1415555{n:04}")});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let request = app.client.post(app.url("/rtbs.json")).json(&body);
            async move { request.send().await.unwrap() }
        };
        // A 415 number is Californian: nobody bids...
        let answer = expect_json(ping(1, json!({})).await, StatusCode::OK).await;
        assert_eq!((answer["status"].as_str(), answer["reason"].as_str()), (Some("no-target"), Some("geo")), "{answer}");
        // ...unless the publisher knows better: a state, or a ZIP code.
        let answer = expect_json(ping(2, json!({"state": "tx"})).await, StatusCode::OK).await;
        assert_eq!(answer["status"], "reserved", "{answer}");
        assert_eq!(answer["payout"], 10.0, "Acme Auto's payout: it is the Texas buyer");
        let answer = expect_json(ping(3, json!({"zip": "33101"})).await, StatusCode::OK).await;
        assert_eq!((answer["status"].as_str(), answer["payout"].as_f64()), (Some("reserved"), Some(8.0)), "Miami: Budget Cover");
        expect_error(ping(4, json!({"state": "XX"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state", Some("state")).await;
        expect_error(ping(5, json!({"zip": "3310"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_zip", Some("zip")).await;
        expect_error(ping(6, json!({"zip": "00000"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_zip", Some("zip")).await;
        let log = expect_json(app.read("/rtb?status=no-target").await, StatusCode::OK).await;
        assert_eq!(log["data"][0]["reason"], "geo", "{log}");
        // And the Californian's call itself: no buyer takes it, no redirect target does either.
        let ended = twiml_of(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(9), "+14155550001", MAIN)).await, Document::Call).await;
        assert_eq!(ended.children[0].name, "Redirect", "the overflow campaign takes anyone: {ended:?}");
    }
}
