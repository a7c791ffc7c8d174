//! What a real Twilio account does that the happy path does not: webhooks a Webhook Rule signs
//! with a shared key, the number's fallback URL, calls arriving through a SIP domain, leg
//! callbacks that carry what a lost dial action would have, and answering machines.

use reqwest::StatusCode;
use switchboard::{
    domain::signature::{self, Algorithm},
    plan::Plan,
};

use crate::{
    helpers::{AUTH_TOKEN, Engine, TestApp, on_both_engines},
    provider::{CALLER, MAIN, dialed, incoming, sid},
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
