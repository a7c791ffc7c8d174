//! Voice webhooks beyond the replayed scenarios: forged and malformed requests, retries,
//! restarts, plan changes, TwiML templates, and call actors' lives.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::{
    config::Settings,
    domain::call::CallSid,
    plan::Plan,
    startup::Application,
    store::{CallStore, SqlStore},
};

use crate::{
    helpers::{AUTH_TOKEN, Engine, TestApp, TestDb, expect_json, on_both_engines},
    provider::{CALLER, MAIN, call_over, dial_ended, dialed, form, incoming, leg_status, sid},
};

const PLAN: &str = include_str!("../fixtures/plans/acme.toml");

/// The service on the replay fixtures' base plan.
struct Acme(TestApp);

impl Acme {
    async fn start(engine: Engine) -> Option<Self> {
        TestApp::start_with_plan(engine, &Plan::parse(PLAN).unwrap())
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

/// How many calls still have an actor, once ended calls' actors had time to stop.
async fn live_calls_once_settled(app: &TestApp) -> usize {
    let mut live = usize::MAX;
    for _ in 0..50 {
        live = app.calls.live();
        if live == 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    live
}

/// A whole call from `caller` that talks `seconds` to whoever picks up; returns who did.
async fn whole_call(app: &TestApp, sid: &str, caller: &str, seconds: u32) -> String {
    let (number, action) = dialed(
        app.webhook(&app.url("/voice/incoming"), &incoming(sid, caller, MAIN))
            .await,
    )
    .await;
    assert_eq!(
        app.webhook(&action, &dial_ended(sid, "completed", seconds))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.webhook(&app.url("/voice/status"), &call_over(sid))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    number
}

on_both_engines! {
    async fn forged_or_unsigned_webhooks_are_refused_and_change_nothing(app: Acme) {
        let url = app.url("/voice/incoming");
        let body = incoming(&sid(1), CALLER, MAIN);
        let send = |signature: Option<String>, body: String| {
            let mut request = app.client.post(&url).header("Content-Type", "application/x-www-form-urlencoded").body(body);
            if let Some(signature) = signature {
                request = request.header("X-Twilio-Signature", signature);
            }
            request.send()
        };
        let params: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        let sign = |url: &str, params: &[(String, String)]| {
            switchboard::domain::signature::sign(AUTH_TOKEN, url, params, switchboard::domain::signature::Algorithm::HmacSha1)
        };
        assert_eq!(send(None, body.clone()).await.unwrap().status(), StatusCode::FORBIDDEN, "unsigned");
        assert_eq!(send(Some("bm90IGEgc2lnbmF0dXJl".into()), body.clone()).await.unwrap().status(), StatusCode::FORBIDDEN);
        let elsewhere = sign("https://attacker.example/voice/incoming", &params);
        assert_eq!(send(Some(elsewhere), body.clone()).await.unwrap().status(), StatusCode::FORBIDDEN, "signed for another URL");
        let tampered = body.replace("%2B14155550123", "%2B14155550999");
        assert_eq!(send(Some(sign(&url, &params)), tampered).await.unwrap().status(), StatusCode::FORBIDDEN, "tampered");
        let stored = app.store.call(&CallSid::parse(&sid(1)).unwrap()).await.unwrap();
        assert!(stored.is_none(), "a refused webhook records nothing");

        assert_eq!(send(Some(sign(&url, &params)), body).await.unwrap().status(), StatusCode::OK, "the genuine one");
    }

    async fn retried_and_reordered_callbacks_change_nothing_twice(app: Acme) {
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(50), CALLER, MAIN)).await).await;
        // The dial's action, retried (same attempt, same result): the same TwiML both times.
        let first = app.webhook(&action, &dial_ended(&sid(50), "completed", 120)).await.text().await.unwrap();
        let again = app.webhook(&action, &dial_ended(&sid(50), "completed", 120)).await.text().await.unwrap();
        assert_eq!(first, again);
        // The call's status callbacks, out of order and the last one retried.
        let status = app.url("/voice/status");
        for (sequence, call_status) in [("2", "completed"), ("0", "ringing"), ("1", "in-progress"), ("2", "completed")] {
            let body = crate::provider::form(&[("CallSid", &sid(50)), ("CallStatus", call_status), ("SequenceNumber", sequence)]);
            assert_eq!(app.webhook(&status, &body).await.status(), StatusCode::NO_CONTENT);
        }
        let call = expect_json(app.get(&format!("/calls/{}", sid(50))).await, StatusCode::OK).await;
        assert_eq!((call["state"].as_str(), call["outcome"].as_str()), (Some("ended"), Some("connected")), "never moved back from its end");
        assert_eq!(call["dials"].as_array().unwrap().len(), 1, "no second attempt");
        assert_eq!(call["converted"], true);
        let ended = (call["timeline"].as_array().unwrap().iter()).filter(|e| e["kind"] == "ended").count();
        assert_eq!(ended, 1, "ended once");
        // Keyed on (CallSid, SequenceNumber): the retried callback left no trace at all.
        let statuses = (call["timeline"].as_array().unwrap().iter())
            .filter(|e| e["kind"] == "webhook" && e["endpoint"] == "status")
            .count();
        assert_eq!(statuses, 3, "{call}");
        let buyers = expect_json(app.get("/stats/buyers").await, StatusCode::OK).await;
        let acme = &buyers["data"][0];
        assert_eq!((acme["dialed"].as_u64(), acme["converted"].as_u64()), (Some(1), Some(1)), "one conversion: {buyers}");
    }

    async fn a_buyer_legs_status_callbacks_are_keyed_by_leg_and_sequence_across_a_restart(app: Acme) {
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(51), CALLER, MAIN)).await).await;
        // The buyer leg's status callback, as a path: the restarted service has another address.
        let leg_path = action.replace("/action", "/status");
        let leg_path = &leg_path[leg_path.find("/voice/").unwrap()..];
        let leg = |status: &str, sequence: &str| {
            let mut params = serde_urlencoded::from_str::<Vec<(String, String)>>(&leg_status(&sid(51), status)).unwrap();
            params.push(("SequenceNumber".into(), sequence.into()));
            serde_urlencoded::to_string(params).unwrap()
        };
        let parent = |status: &str, sequence: &str| {
            crate::provider::form(&[("CallSid", &sid(51)), ("CallStatus", status), ("SequenceNumber", sequence)])
        };
        let webhooks = |call: &Value| {
            (call["timeline"].as_array().unwrap().iter()).filter(|e| e["kind"] == "webhook").count()
        };
        let initial = webhooks(&expect_json(app.get(&format!("/calls/{}", sid(51))).await, StatusCode::OK).await);
        // Each leg numbers its own callbacks: the buyer leg's 1 is not the call's 1.
        assert_eq!(app.webhook(&app.url(leg_path), &leg("in-progress", "1")).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.webhook(&app.url("/voice/status"), &parent("in-progress", "1")).await.status(), StatusCode::NO_CONTENT);
        let call = expect_json(app.get(&format!("/calls/{}", sid(51))).await, StatusCode::OK).await;
        assert_eq!(call["state"], "connected");
        let before = webhooks(&call);
        assert_eq!(before, initial + 2, "both applied: {call}");

        // A new process, knowing only the store, still recognises the retries.
        let app = Acme(app.0.restart().await);
        assert_eq!(app.webhook(&app.url(leg_path), &leg("in-progress", "1")).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.webhook(&app.url("/voice/status"), &parent("in-progress", "1")).await.status(), StatusCode::NO_CONTENT);
        let call = expect_json(app.get(&format!("/calls/{}", sid(51))).await, StatusCode::OK).await;
        assert_eq!(webhooks(&call), before, "retries change nothing: {call}");
        // A callback numbered anew is applied.
        assert_eq!(app.webhook(&app.url("/voice/status"), &parent("completed", "2")).await.status(), StatusCode::NO_CONTENT);
        let call = expect_json(app.get(&format!("/calls/{}", sid(51))).await, StatusCode::OK).await;
        assert_eq!((webhooks(&call), call["state"].as_str()), (before + 1, Some("ended")));
    }

    async fn a_json_webhook_is_signed_through_the_hash_of_its_body_in_the_url(app: Acme) {
        use sha2::{Digest, Sha256};
        use switchboard::domain::signature::{Algorithm, sign};

        let body = json!({"CallSid": sid(2), "From": CALLER, "To": MAIN, "CallStatus": "ringing"}).to_string();
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let url = app.url(&format!("/voice/incoming?bodySHA256={hash}"));
        // The signature covers the URL alone; the hash in it covers the body.
        let signature = sign(AUTH_TOKEN, &url, &[], Algorithm::HmacSha1);
        let send = |body: String| {
            (app.client.post(&url))
                .header("Content-Type", "application/json")
                .header("X-Twilio-Signature", signature.clone())
                .body(body)
                .send()
        };
        let tampered = body.replace(CALLER, "+14155550999");
        assert_eq!(send(tampered).await.unwrap().status(), StatusCode::FORBIDDEN, "another body");
        let stored = app.store.call(&CallSid::parse(&sid(2)).unwrap()).await.unwrap();
        assert!(stored.is_none(), "a refused webhook records nothing");

        let (number, _) = dialed(send(body).await.unwrap()).await;
        assert_eq!(number, "+14155550101", "the genuine one is routed");
    }

    async fn malformed_webhooks_get_a_clear_client_error(app: Acme) {
        let url = app.url("/voice/incoming");
        let missing = app.webhook(&url, &form(&[("From", CALLER), ("To", MAIN)])).await;
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        assert!(missing.text().await.unwrap().contains("CallSid"));
        let hostile = app.webhook(&url, &incoming("../../etc/passwd", CALLER, MAIN)).await;
        assert_eq!(hostile.status(), StatusCode::BAD_REQUEST);
        let no_to = app.webhook(&url, &form(&[("CallSid", &sid(2)), ("From", CALLER)])).await;
        assert_eq!(no_to.status(), StatusCode::OK, "a live call still gets TwiML");
        assert!(no_to.text().await.unwrap().contains("<Reject"), "nothing to route to: rejected");
        let unknown = app.webhook(&app.url("/voice/status"), &call_over(&sid(3))).await;
        assert_eq!(unknown.status(), StatusCode::NO_CONTENT, "a status for a call never seen is acknowledged");

        // A caller id that is not UTF-8 is read with replacement characters: an unknown caller,
        // routed all the same.
        let garbled = format!("CallSid={}&From=%FF%FE&To=%2B18005550100", sid(4));
        let (number, _) = dialed(app.webhook(&url, &garbled).await).await;
        assert_eq!(number, "+14155550101");
        let call = expect_json(app.get(&format!("/calls/{}", sid(4))).await, StatusCode::OK).await;
        assert_eq!(call["caller_known"], false);
        // Far larger than any webhook: refused before it is read.
        let huge = format!("CallSid={}&From={}&To=%2B18005550100", sid(5), "1".repeat(100_000));
        let response = (app.client.post(&url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(huge)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A long caller id within the limit is an unknown caller, and the call is routed.
        let long = form(&[("CallSid", &sid(6)), ("From", &"9".repeat(10_000)), ("To", MAIN)]);
        let (number, _) = dialed(app.webhook(&url, &long).await).await;
        assert_eq!(number, "+14155550101");
    }

    async fn a_retried_unanswered_dial_action_while_the_next_buyer_rings_dials_no_one_else(app: Acme) {
        for (n, status) in [(60, "no-answer"), (61, "busy")] {
            let (first, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(n), CALLER, MAIN)).await).await;
            assert_eq!(first, "+14155550101", "Acme first");
            // Acme does not answer: the next buyer rings. The provider, not having heard the
            // answer in time, sends the same action again while it rings.
            let next = app.webhook(&action, &dial_ended(&sid(n), status, 0)).await.text().await.unwrap();
            assert!(next.contains("+14155550102"), "{status}: the next buyer: {next}");
            let again = app.webhook(&action, &dial_ended(&sid(n), status, 0)).await.text().await.unwrap();
            assert_eq!(again, next, "{status}: the same TwiML, the same attempt");
            let call = expect_json(app.get(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await;
            let dials: Vec<(&str, &str)> = (call["dials"].as_array().unwrap().iter())
                .map(|d| (d["buyer_id"].as_str().unwrap(), d["status"].as_str().unwrap_or("ringing")))
                .collect();
            assert_eq!(dials.len(), 2, "{status}: no third dial: {call}");
            assert_eq!(dials[0].1, status);
            assert_eq!(dials[1].1, "ringing", "{status}: the next buyer still rings: {call}");
            assert_eq!(call["attempts"], 2);
        }
    }

    async fn a_call_status_the_provider_does_not_document_is_recorded_and_changes_nothing(app: Acme) {
        dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(62), CALLER, MAIN)).await).await;
        let status = app.url("/voice/status");
        let odd = form(&[("CallSid", &sid(62)), ("CallStatus", "hung-up-maybe"), ("SequenceNumber", "0")]);
        assert_eq!(app.webhook(&status, &odd).await.status(), StatusCode::NO_CONTENT, "acknowledged");
        let call = expect_json(app.get(&format!("/calls/{}", sid(62))).await, StatusCode::OK).await;
        assert_eq!(call["state"], "dialing", "not taken for an end: {call}");
        let recorded = (call["timeline"].as_array().unwrap().iter())
            .any(|e| e["kind"] == "webhook" && e["params"]["CallStatus"] == "hung-up-maybe");
        assert!(recorded, "the webhook is in the call's timeline: {call}");
        let over = form(&[("CallSid", &sid(62)), ("CallStatus", "completed"), ("SequenceNumber", "1")]);
        assert_eq!(app.webhook(&status, &over).await.status(), StatusCode::NO_CONTENT);
        let call = expect_json(app.get(&format!("/calls/{}", sid(62))).await, StatusCode::OK).await;
        assert_eq!((call["state"].as_str(), call["outcome"].as_str()), (Some("ended"), Some("abandoned")), "{call}");
    }

    async fn a_retried_first_webhook_gets_the_same_twiml_and_dials_once(app: Acme) {
        let url = app.url("/voice/incoming");
        let body = incoming(&sid(4), CALLER, MAIN);
        let first = app.webhook(&url, &body).await.text().await.unwrap();
        let retry = app.webhook(&url, &body).await.text().await.unwrap();
        assert_eq!(first, retry);
        let call = app.store.call(&CallSid::parse(&sid(4)).unwrap()).await.unwrap().unwrap();
        assert_eq!(call.attempts.len(), 1, "no second attempt");
    }

    async fn a_converted_caller_stays_a_duplicate_after_a_restart(app: Acme) {
        assert_eq!(whole_call(&app, &sid(5), CALLER, 120).await, "+14155550101");
        let app = app.0.restart().await;
        assert_eq!(whole_call(&app, &sid(6), CALLER, 30).await, "+14155550102", "the de-dupe index is rebuilt from the store");
    }

    async fn a_call_finds_its_actor_gone_once_it_ends(app: Acme) {
        let url = app.url("/voice/incoming");
        let (_, action) = dialed(app.webhook(&url, &incoming(&sid(7), CALLER, MAIN)).await).await;
        assert_eq!(app.calls.live(), 1);
        app.webhook(&action, &dial_ended(&sid(7), "completed", 100)).await;
        app.webhook(&app.url("/voice/status"), &call_over(&sid(7))).await;
        let live = live_calls_once_settled(&app).await;
        assert_eq!(live, 0, "an ended call's actor stops");

        // A late callback still lands: a new actor resumes the call from the store.
        let late = app.webhook(&action, &dial_ended(&sid(7), "completed", 100)).await;
        assert!(late.text().await.unwrap().contains("<Hangup"));
        let call = app.store.call(&CallSid::parse(&sid(7)).unwrap()).await.unwrap().unwrap();
        assert_eq!(call.attempts.len(), 1);
        assert!(call.converted());
    }
}

on_both_engines! {
    async fn a_plan_changed_through_the_api_routes_the_very_next_call(app: TestApp) {
        let company = app.create("/companies", json!({"name": "Fresh", "duplicate_caller_handling": true})).await;
        let buyer = app.create("/buyers", json!({"company_id": company, "name": "New Buyer", "destination": "+14155550177"})).await;
        let campaign = app.create("/campaigns", json!({"company_id": company, "name": "New", "numbers": ["+18885550177"]})).await;
        let patch = json!({"buyers": [{"buyer_id": buyer}]});
        expect_json(app.patch(&format!("/campaigns/{campaign}"), patch).await, StatusCode::OK).await;
        let response = app.webhook(&app.url("/voice/incoming"), &incoming(&sid(8), CALLER, "+18885550177")).await;
        assert_eq!(dialed(response).await.0, "+14155550177");
    }
}

/// The load benchmark's floor answers only when asked for, and records nothing.
#[actix_web::test]
async fn the_benchmark_floor_is_served_only_with_bench_floor_on() {
    let plain = TestApp::start(Engine::Sqlite).await.unwrap();
    let refused = plain
        .webhook(&plain.url("/voice/floor"), &incoming(&sid(1), CALLER, MAIN))
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    let mut settings = crate::helpers::TEST_SETTINGS.to_vec();
    settings.push(("BENCH_FLOOR", "on"));
    let app = TestApp::start_with(Engine::Sqlite, &settings).await.unwrap();
    let answered = app
        .webhook(&app.url("/voice/floor"), &incoming(&sid(1), CALLER, MAIN))
        .await;
    assert_eq!(answered.status(), StatusCode::OK);
    assert!(answered.text().await.unwrap().contains("<Hangup"));
    let unsigned = (app.client.post(app.url("/voice/floor")))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(incoming(&sid(2), CALLER, MAIN))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned.status(),
        StatusCode::FORBIDDEN,
        "checked like any webhook"
    );
    let stored = app.store.call(&CallSid::parse(&sid(1)).unwrap()).await.unwrap();
    assert!(stored.is_none(), "no call is recorded");
}

#[actix_web::test]
async fn templates_in_a_directory_replace_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("end.xml"),
        "<Response>\n  <Say voice=\"alice\">Acme says: {message}</Say>\n  <Hangup/>\n</Response>\n",
    )
    .unwrap();
    let settings = [
        ("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWIML_TEMPLATES_DIR", dir.path().to_str().unwrap()),
        ("END_MESSAGE", "Please call back tomorrow & thank you."),
    ];
    let app = TestApp::start_with(Engine::Sqlite, &settings).await.unwrap();
    let company = app.create("/companies", json!({"name": "Acme"})).await;
    app.create(
        "/campaigns",
        json!({"company_id": company, "name": "Empty", "numbers": ["+18885550188"]}),
    )
    .await;
    let response = app
        .webhook(
            &app.url("/voice/incoming"),
            &incoming(&sid(9), CALLER, "+18885550188"),
        )
        .await;
    let twiml = response.text().await.unwrap();
    assert!(
        twiml.ends_with(r#"<Response><Say voice="alice">Acme says: Please call back tomorrow &amp; thank you.</Say><Hangup /></Response>"#),
        "{twiml}"
    );
}

#[actix_web::test]
async fn a_bad_template_stops_start_up_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("end.xml"),
        "<Response>\n  <Say>{mesage}</Say>\n</Response>\n",
    )
    .unwrap();
    let error = start_with_templates(dir.path()).await;
    assert!(error.contains("end.xml:2:"), "{error}");
    assert!(error.contains("unknown placeholder {mesage}"), "{error}");

    std::fs::remove_file(dir.path().join("end.xml")).unwrap();
    std::fs::write(dir.path().join("dial-number.xml"), "<Response/>").unwrap();
    let error = start_with_templates(dir.path()).await;
    assert!(
        error.contains("dial-number.xml") && error.contains("dial_number.xml"),
        "{error}"
    );
}

async fn start_with_templates(dir: &std::path::Path) -> String {
    let db = TestDb::create(Engine::Sqlite).await.unwrap();
    let store = std::sync::Arc::new(SqlStore::connect_and_migrate(&db.url).await.unwrap());
    let environment = [
        ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ("TWIML_TEMPLATES_DIR".to_owned(), dir.display().to_string()),
    ];
    let settings = Settings::from_sources(None, environment).unwrap();
    match Application::build(&settings, store).await {
        Ok(_) => panic!("a bad template must stop start-up"),
        Err(error) => error.to_string(),
    }
}

on_both_engines! {
    async fn a_call_can_be_read_back_with_its_timeline(app: Acme) {
        whole_call(&app, &sid(10), CALLER, 120).await;
        whole_call(&app, &sid(11), CALLER, 30).await;
        let call = expect_json(app.get(&format!("/calls/{}", sid(11))).await, StatusCode::OK).await;
        assert_eq!(call["outcome"], "connected");
        assert_eq!(call["duplicates_avoided"], 1);
        assert_eq!(call["caller_known"], true);
        let timeline = call["timeline"].as_array().unwrap();
        let kinds: Vec<&str> = timeline.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        // The call ends with its conversation; the status callback comes after.
        assert_eq!(kinds, ["webhook", "decision", "webhook", "dial_ended", "ended", "webhook"]);
        let decision = &timeline[1];
        assert_eq!(decision["action"]["type"], "dial");
        let verdicts: Vec<(&str, &str)> = decision["considered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["verdict"].as_str().unwrap()))
            .collect();
        assert_eq!(verdicts, [("Acme Auto", "duplicate"), ("Budget Cover", "chosen")]);
        assert_eq!(timeline[0]["params"]["From"], CALLER, "each webhook keeps its parameters");

        let missing = app.get(&format!("/calls/{}", sid(99))).await;
        crate::helpers::expect_error(missing, StatusCode::NOT_FOUND, "not_found", None).await;
        let anonymous = app.client.get(app.url(&format!("/api/v1/calls/{}", sid(10)))).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
}

on_both_engines! {
    async fn callbacks_arriving_together_after_the_end_lose_no_conversion(app: Acme) {
        // At hang-up the call's status, the leg's last status and the dial's action come at
        // once, in any order.
        let calls: Vec<String> = (20..30).map(sid).collect();
        for (i, call) in calls.iter().enumerate() {
            let caller = format!("+1415555{:04}", 1000 + i);
            let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(call, &caller, MAIN)).await).await;
            let leg_url = action.replace("/action", "/status");
            let leg_done = form(&[("CallSid", "CA0000000000000000000000000000ffff"), ("ParentCallSid", call), ("CallStatus", "completed")]);
            let (status_url, over, talked) = (app.url("/voice/status"), call_over(call), dial_ended(call, "completed", 120));
            let (status, leg, dial) = futures_util::join!(
                app.webhook(&status_url, &over),
                app.webhook(&leg_url, &leg_done),
                app.webhook(&action, &talked),
            );
            assert_eq!(status.status(), StatusCode::NO_CONTENT);
            assert_eq!(leg.status(), StatusCode::NO_CONTENT);
            assert!(dial.text().await.unwrap().contains("<Hangup"), "the conversation is over");
        }
        for call in &calls {
            let record = app.store.call(&CallSid::parse(call).unwrap()).await.unwrap().unwrap();
            assert!(record.converted(), "{call}: the conversion was recorded");
            assert_eq!(record.outcome, Some(switchboard::domain::call::Outcome::Connected), "{call}");
        }
    }

    async fn a_call_ends_when_its_conversation_does_even_without_a_status_callback(app: Acme) {
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&sid(31), CALLER, MAIN)).await).await;
        app.webhook(&action, &dial_ended(&sid(31), "completed", 45)).await;
        let call = app.store.call(&CallSid::parse(&sid(31)).unwrap()).await.unwrap().unwrap();
        assert!(call.is_ended(), "answering <Hangup/> ends the call");
        assert_eq!(call.outcome, Some(switchboard::domain::call::Outcome::Connected));
        let live = live_calls_once_settled(&app).await;
        assert_eq!(live, 0, "its actor stops after the grace period");
    }
}

#[actix_web::test]
async fn a_call_handled_while_the_database_is_down_is_saved_once_it_returns() {
    use crate::helpers::FlakyApp;

    let FlakyApp { store, base, .. } = &FlakyApp::start(PLAN).await;
    let client = TestApp::signing_client();

    store.set_down(true);
    let started = std::time::Instant::now();
    let (number, action) = dialed(
        client
            .webhook(
                &format!("{base}/voice/incoming"),
                &incoming(&sid(40), CALLER, MAIN),
            )
            .await,
    )
    .await;
    assert_eq!(number, "+14155550101", "the call is routed all the same");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "and answered within the budget: {:?}",
        started.elapsed()
    );
    let hangup = client
        .webhook(&action, &dial_ended(&sid(40), "completed", 120))
        .await;
    assert!(hangup.text().await.unwrap().contains("<Hangup"));
    let sid40 = CallSid::parse(&sid(40)).unwrap();
    assert!(
        store.inner.call(&sid40).await.unwrap().is_none(),
        "nothing could be written yet"
    );

    store.set_down(false);
    let mut saved = None;
    for _ in 0..50 {
        saved = store.inner.call(&sid40).await.unwrap();
        if saved.as_ref().is_some_and(|call| call.converted()) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let saved = saved.expect("written once the database returned");
    assert!(saved.converted() && saved.is_ended());
    let timeline = store.inner.timeline(&sid40).await.unwrap();
    assert_eq!(
        timeline.len(),
        5,
        "webhook, decision, webhook, dial ended, ended: {timeline:?}"
    );
    assert_eq!(
        crate::helpers::stored_marks(&store.inner).await.len(),
        1,
        "the conversion's de-dupe mark too"
    );
}
