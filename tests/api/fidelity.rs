//! What a real Twilio account does that the happy path does not: webhooks a Webhook Rule signs
//! with a shared key, the number's fallback URL, calls arriving through a SIP domain, leg
//! callbacks that carry what a lost dial action would have, and answering machines.

use reqwest::StatusCode;
use serde_json::Value;
use switchboard::{
    domain::signature::{self, Algorithm},
    plan::Plan,
};

use crate::{
    helpers::{AUTH_TOKEN, Engine, TestApp, expect_error, expect_json, on_both_engines},
    provider::{CALLER, MAIN, dialed, form, incoming, sid},
};

const PLAN: &str = include_str!("../fixtures/plans/acme.toml");
const SHARED_KEY: &str = "whsk_shared_key_secret_0001";
const NEXT_SHARED_KEY: &str = "whsk_shared_key_secret_0002";

/// The replay plan, served with the account's shared keys as well as its auth token.
struct Rules(TestApp);

impl Rules {
    async fn start(engine: Engine) -> Option<Self> {
        let keys = format!("{SHARED_KEY},{NEXT_SHARED_KEY}");
        TestApp::start_with_plan_and(
            engine,
            &Plan::parse(PLAN).unwrap(),
            &[("TWILIO_WEBHOOK_SHARED_KEYS", &keys)],
        )
        .await
        .map(Self)
    }
}

/// A webhook signed with `secret` and `algorithm`, with the settings header if given.
async fn signed_with(
    app: &TestApp,
    url: &str,
    body: &str,
    secret: &str,
    algorithm: Algorithm,
    settings: Option<&str>,
) -> reqwest::Response {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
    let mut request = (app.client.post(url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(
            "X-Twilio-Signature",
            signature::sign(secret, url, &params, algorithm),
        )
        .body(body.to_owned());
    if let Some(settings) = settings {
        request = request.header("X-Twilio-Webhooks-Signature-Settings", settings);
    }
    request.send().await.unwrap()
}

on_both_engines! {
    async fn a_webhook_rule_signs_with_a_shared_key_and_only_that_key_passes(app: Rules) {
        let app = &app.0;
        let url = app.url("/voice/incoming");
        let sha256 = Some("key=KS00000000000000000000000000000001,algorithm=HMAC_SHA256");
        // Either secret of a rotation, with the algorithm the header names.
        for (n, secret) in [(1, SHARED_KEY), (2, NEXT_SHARED_KEY)] {
            let body = incoming(&sid(n), CALLER, MAIN);
            let answered = signed_with(app, &url, &body, secret, Algorithm::HmacSha256, sha256).await;
            assert_eq!(dialed(answered).await.0, "+14155550101");
        }
        let sha1 = Some("key=KS1,algorithm=HMAC_SHA1");
        let body = incoming(&sid(3), "+14155550103", MAIN);
        assert_eq!(signed_with(app, &url, &body, SHARED_KEY, Algorithm::HmacSha1, sha1).await.status(), StatusCode::OK);

        // With the header, the auth token signs nothing; an unknown algorithm is refused, not
        // guessed; without the header, the auth token and HMAC-SHA1 as ever.
        let body = incoming(&sid(4), "+14155550104", MAIN);
        let forged = signed_with(app, &url, &body, AUTH_TOKEN, Algorithm::HmacSha256, sha256).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let unknown = signed_with(app, &url, &body, SHARED_KEY, Algorithm::HmacSha256, Some("key=KS1,algorithm=HMAC_SHA512")).await;
        assert_eq!(unknown.status(), StatusCode::FORBIDDEN);
        let shared_without_header = signed_with(app, &url, &body, SHARED_KEY, Algorithm::HmacSha1, None).await;
        assert_eq!(shared_without_header.status(), StatusCode::FORBIDDEN);
        let refused = app.read(&format!("/calls/{}", sid(4))).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND, "nothing refused was recorded");
        let body = incoming(&sid(5), "+14155550105", MAIN);
        assert_eq!(app.webhook(&url, &body).await.status(), StatusCode::OK, "the auth token's own");
    }

    async fn without_shared_keys_a_rule_signed_webhook_is_refused(app: TestApp) {
        let url = app.url("/voice/incoming");
        let body = incoming(&sid(1), CALLER, MAIN);
        let settings = Some("key=KS1,algorithm=HMAC_SHA256");
        for secret in [SHARED_KEY, AUTH_TOKEN] {
            let refused = signed_with(&app, &url, &body, secret, Algorithm::HmacSha256, settings).await;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
    }
}

/// The replay plan with a SIP buyer that asks for credentials.
struct Pbx(TestApp);

impl Pbx {
    async fn start(engine: Engine) -> Option<Self> {
        let plan = PLAN.replace(
            "destination = \"sip:intake@pbx.overflow.example\"",
            "destination = \"sip:intake@pbx.overflow.example\"\nsip_auth = { username = \"switchboard\", password = \"pbx-secret-0001\" }",
        );
        TestApp::start_with_plan(engine, &Plan::parse(&plan).unwrap())
            .await
            .map(Self)
    }
}

on_both_engines! {
    async fn buyer_settings_the_provider_cannot_honour_are_refused_naming_the_field(app: Acme) {
        let app = &app.0;
        let company = app.id_of("/companies", "Acme Leads").await;
        let buyer = |extra: serde_json::Value| {
            let mut body = serde_json::json!({"company_id": company, "name": "New", "destination": "sip:sales@pbx.example.com"});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        for (extra, field, needle) in [
            (serde_json::json!({"send_digits": "ww42#"}), "send_digits", "SIP destination takes no send_digits"),
            (serde_json::json!({"destination": "+14155550177", "sip_auth": {"username": "a", "password": "b"}}), "sip_auth", "SIP destinations only"),
            (serde_json::json!({"destination": "+14155550177", "send_digits": "1", "screen": "machine-detection"}), "screen", "skips detection"),
        ] {
            let message = expect_error(app.post("/buyers", buyer(extra)).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field)).await;
            assert!(message.contains(needle), "{message}");
        }
        // The same through a plan file, with the entry named.
        let plan = PLAN.replace("destination = \"sip:intake@pbx.overflow.example\"", "destination = \"sip:intake@pbx.overflow.example\"\nsend_digits = \"1\"");
        let refused = switchboard::store::PlanStore::import_plan(app.store.as_ref(), &Plan::parse(&plan).unwrap()).await.unwrap_err();
        assert!(refused.to_string().contains("companies[0].buyers[3].send_digits"), "{refused}");
        let accepted = buyer(serde_json::json!({"screen": "machine-detection", "sip_auth": {"username": "sb", "password": "pbx-secret"}}));
        expect_json(app.post("/buyers", accepted).await, StatusCode::CREATED).await;
    }

    async fn a_sip_buyer_gets_its_credentials_and_only_admins_read_them(app: Pbx) {
        let app = &app.0;
        // A call to the Overflow campaign's number dials its one buyer, Overflow Partner.
        let call = sid(1);
        let body = incoming(&call, CALLER, "+18775550100");
        let answer = app.webhook(&app.url("/voice/incoming"), &body).await.text().await.unwrap();
        let dial = switchboard::simulate::twiml::check(&answer, switchboard::simulate::twiml::Document::Call).unwrap();
        let sip = &dial.children[0].children[0];
        assert_eq!(sip.name, "Sip", "{answer}");
        assert_eq!((sip.attribute("username"), sip.attribute("password")), (Some("switchboard"), Some("pbx-secret-0001")));
        // A leg reports only what routing uses: its answer and its end.
        assert_eq!(sip.attribute("statusCallbackEvent"), Some("answered completed"), "{answer}");

        let id = app.id_of("/buyers", "Overflow Partner").await;
        let as_admin = expect_json(app.get(&format!("/buyers/{id}")).await, StatusCode::OK).await;
        assert_eq!(as_admin["sip_auth"]["password"], "pbx-secret-0001");
        let as_supervisor = expect_json(app.read(&format!("/buyers/{id}")).await, StatusCode::OK).await;
        assert_eq!(as_supervisor["sip_auth"], serde_json::json!({"username": "switchboard", "password": "********"}));
        let listed = expect_json(app.read("/buyers").await, StatusCode::OK).await;
        assert!(!listed.to_string().contains("pbx-secret-0001"), "{listed}");
    }

    async fn a_legs_answer_and_end_are_the_providers_timestamps(app: Acme) {
        let app = &app.0;
        let call = sid(1);
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN)).await).await;
        let status_url = action.replace("/action", "/status");
        let answered = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90);
        let ended = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
        let rfc2822 = |at: jiff::Timestamp| jiff::fmt::rfc2822::to_string(&at.to_zoned_datetime(jiff::tz::TimeZone::UTC)).unwrap();
        for (status, at, extra) in [("in-progress", answered, ""), ("completed", ended, "&CallDuration=85")] {
            let body = format!(
                "CallSid=CA99999999999999999999999999999999&ParentCallSid={call}&CallStatus={status}&Timestamp={}{extra}",
                form(&[("t", &rfc2822(at))]).trim_start_matches("t=")
            );
            assert_eq!(app.webhook(&status_url, &body).await.status(), StatusCode::NO_CONTENT);
        }
        let stored = expect_json(app.read(&format!("/calls/{call}")).await, StatusCode::OK).await;
        let dial = &stored["dials"][0];
        let second = |text: &Value| text.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_second();
        assert_eq!((second(&dial["answered_at"]), second(&dial["ended_at"])), (answered.as_second(), ended.as_second()), "{dial}");
        assert_eq!(dial["leg_seconds"], 85);
    }
}

/// The replay plan, as it is.
struct Acme(TestApp);

impl Acme {
    async fn start(engine: Engine) -> Option<Self> {
        TestApp::start_with_plan(engine, &Plan::parse(PLAN).unwrap())
            .await
            .map(Self)
    }
}
