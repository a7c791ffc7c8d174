//! API tokens issued, rotated and revoked through the API: what each opens, for how long, and
//! that the secret appears in the answer that issues it and nowhere else.

use std::sync::Arc;

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::clock::ManualClock;

use crate::helpers::{SUPERVISOR_TOKEN, TestApp, expect_error, expect_json, on_both_engines};

const PLAN: &str = include_str!("../fixtures/plans/acme.toml");

/// The service with its clock in the test's hands.
struct Keys {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl Keys {
    async fn start(engine: crate::helpers::Engine) -> Option<Self> {
        let (app, clock) = TestApp::start_clocked(engine, PLAN, "2026-11-24T12:00:00Z").await?;
        Some(Self { app, clock })
    }

    async fn issue(&self, body: Value) -> Value {
        let response = self.app.post("/tokens", body).await;
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "a secret must not be cached"
        );
        expect_json(response, StatusCode::CREATED).await
    }

    /// What `token` gets for a read and for a change.
    async fn opens(&self, token: &str) -> (StatusCode, StatusCode) {
        let app = &self.app;
        let read = (app
            .client
            .get(app.url("/api/v1/calls/live"))
            .bearer_auth(token)
            .send()
            .await)
            .unwrap();
        let change = (app.client.post(app.url("/api/v1/companies")).bearer_auth(token))
            .json(&json!({ "name": "Token Test Co" }))
            .send()
            .await
            .unwrap();
        let change = change.status();
        if change == StatusCode::CREATED {
            // Leave nothing behind that a second probe would collide with.
            let id = app.id_of("/companies", "Token Test Co").await;
            app.delete(&format!("/companies/{id}")).await;
        }
        (read.status(), change)
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(SignedDuration::from_secs(seconds));
    }
}

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

on_both_engines! {
    async fn issued_tokens_open_what_their_role_allows_and_are_never_shown_again(keys: Keys) {
        let grafana = keys.issue(json!({ "name": "grafana", "role": "supervisor" })).await;
        let secret = grafana["token"].as_str().expect("the secret, this once");
        assert!(secret.starts_with("sbt_"), "{grafana}");
        assert_eq!(grafana["name"], "grafana");
        assert_eq!(grafana["role"], "supervisor");
        assert_eq!(keys.opens(secret).await, (OK, FORBIDDEN));

        let ops = keys.issue(json!({ "name": "ops", "role": "admin" })).await;
        let ops_secret = ops["token"].as_str().unwrap();
        assert_eq!(keys.opens(ops_secret).await, (OK, CREATED));
        // An issued admin token manages tokens too; a supervisor's does not.
        let listed = (keys.app.client.get(keys.app.url("/api/v1/tokens")).bearer_auth(ops_secret).send().await)
            .unwrap();
        let listed = listed.text().await.unwrap();
        assert!(listed.contains("grafana") && listed.contains("ops"), "{listed}");
        assert!(!listed.contains(&secret[4..]) && !listed.contains(&ops_secret[4..]), "{listed}");
        let digest = switchboard::domain::access::KeyDigest::of(secret).to_hex();
        assert!(!listed.contains(&digest), "nor its digest: {listed}");
        for token in [secret, SUPERVISOR_TOKEN] {
            let refused = (keys.app.client.post(keys.app.url("/api/v1/tokens")).bearer_auth(token))
                .json(&json!({ "name": "mine", "role": "admin" }))
                .send()
                .await
                .unwrap();
            expect_error(refused, FORBIDDEN, "forbidden", None).await;
        }

        // Kept in the store: a restarted service knows them.
        let app = keys.app.restart().await;
        let read = (app.client.get(app.url("/api/v1/calls/live")).bearer_auth(secret).send().await).unwrap();
        assert_eq!(read.status(), OK);
    }

    async fn rotation_keeps_the_old_token_for_its_grace_and_revocation_is_immediate(keys: Keys) {
        let old = keys.issue(json!({ "name": "dashboard wall", "role": "supervisor" })).await;
        let (old_id, old_secret) = (old["id"].as_str().unwrap(), old["token"].as_str().unwrap());
        let rotated = (keys.app)
            .post(&format!("/tokens/{old_id}/rotate"), json!({ "grace_seconds": 60 }))
            .await;
        let new = expect_json(rotated, CREATED).await;
        let new_secret = new["token"].as_str().unwrap();
        assert_ne!(new_secret, old_secret);
        assert_eq!((new["name"].as_str(), new["role"].as_str()), (Some("dashboard wall"), Some("supervisor")));
        assert_eq!(new["replaces"], old_id);

        // Both work through the grace period; then only the new one.
        assert_eq!(keys.opens(old_secret).await.0, OK);
        assert_eq!(keys.opens(new_secret).await.0, OK);
        keys.advance(59);
        assert_eq!(keys.opens(old_secret).await.0, OK);
        keys.advance(1);
        assert_eq!(keys.opens(old_secret).await.0, UNAUTHORIZED);
        assert_eq!(keys.opens(new_secret).await.0, OK);
        let listed = expect_json(keys.app.get("/tokens").await, OK).await;
        let old_listed = (listed["data"].as_array().unwrap().iter()).find(|t| t["id"] == old_id).unwrap();
        assert_eq!(old_listed["expires_at"], "2026-11-24T12:01:00Z", "{listed}");
        // An expired token is not rotated again.
        let again = keys.app.post(&format!("/tokens/{old_id}/rotate"), json!({})).await;
        expect_error(again, StatusCode::CONFLICT, "conflict", None).await;

        // Rotating without a grace ends the old token at once.
        let new_id = new["id"].as_str().unwrap();
        let third = keys.app.admin(Method::POST, &format!("/tokens/{new_id}/rotate")).send().await.unwrap();
        let third = expect_json(third, CREATED).await;
        assert_eq!(keys.opens(new_secret).await.0, UNAUTHORIZED);

        let third_id = third["id"].as_str().unwrap();
        assert_eq!(keys.app.delete(&format!("/tokens/{third_id}")).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(keys.opens(third["token"].as_str().unwrap()).await.0, UNAUTHORIZED);
        let listed = expect_json(keys.app.get("/tokens").await, OK).await;
        let revoked = (listed["data"].as_array().unwrap().iter()).find(|t| t["id"] == third_id).unwrap();
        assert_eq!(revoked["revoked_at"], "2026-11-24T12:01:00Z", "{listed}");
    }

    async fn a_token_that_expires_stops_opening_the_api_then(keys: Keys) {
        let temp = keys.issue(json!({
            "name": "contractor", "role": "admin", "expires_at": "2026-11-24T13:00:00Z"
        }))
        .await;
        let secret = temp["token"].as_str().unwrap();
        assert_eq!(keys.opens(secret).await, (OK, CREATED));
        keys.advance(3600);
        assert_eq!(keys.opens(secret).await, (UNAUTHORIZED, UNAUTHORIZED));
    }

    async fn bad_token_requests_are_refused_naming_the_field(keys: Keys) {
        let app = &keys.app;
        let cases = [
            (json!({ "name": "x", "role": "owner" }), "role"),
            (json!({ "name": "", "role": "admin" }), "name"),
            (json!({ "role": "admin" }), "name"),
            (json!({ "name": "x", "role": "admin", "expires_at": "2026-11-24T11:00:00Z" }), "expires_at"),
            (json!({ "name": "x", "role": "admin", "token": "mine-0123456789abcdef" }), "token"),
        ];
        for (body, field) in cases {
            let refused = app.post("/tokens", body.clone()).await;
            expect_error(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field)).await;
        }
        let issued = keys.issue(json!({ "name": "x", "role": "admin" })).await;
        let id = issued["id"].as_str().unwrap();
        let long = app.post(&format!("/tokens/{id}/rotate"), json!({ "grace_seconds": 604_801 })).await;
        expect_error(long, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("grace_seconds")).await;
        for path in ["/tokens/not-an-id/rotate", "/tokens/0190a5d2-0000-7000-8000-000000000000/rotate"] {
            expect_error(app.post(path, json!({})).await, StatusCode::NOT_FOUND, "not_found", None).await;
        }
        let unknown = app.delete("/tokens/0190a5d2-0000-7000-8000-000000000000").await;
        expect_error(unknown, StatusCode::NOT_FOUND, "not_found", None).await;
        expect_json(app.get("/tokens").await, OK).await;
        expect_error(app.read("/tokens").await, FORBIDDEN, "forbidden", None).await;
    }
}
