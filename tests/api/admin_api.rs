//! The admin API over HTTP, on both engines: happy paths and every error class.

use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::helpers::{TestApp, expect_error, expect_json, on_both_engines};

on_both_engines! {
    async fn the_api_requires_the_admin_token(app: TestApp) {
        let anonymous = app.client.get(app.url("/api/v1/companies")).send().await.unwrap();
        assert_eq!(anonymous.headers()[header::WWW_AUTHENTICATE], "Bearer");
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

        let forged = app.client.get(app.url("/api/v1/companies")).bearer_auth("not-the-token-at-all").send().await.unwrap();
        expect_error(forged, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

        let mutation = app.client.post(app.url("/api/v1/companies")).json(&json!({"name": "Sneaky"})).send().await.unwrap();
        expect_error(mutation, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
        let listed = expect_json(app.get("/companies").await, StatusCode::OK).await;
        assert_eq!(listed["data"], json!([]), "an unauthenticated write changes nothing");
    }

    async fn a_company_is_created_read_changed_and_deleted(app: TestApp) {
        let response = app.post("/companies", json!({"name": "Acme Leads"})).await;
        let location = response.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let created = expect_json(response, StatusCode::CREATED).await;
        let id = created["id"].as_str().unwrap();
        assert_eq!(location, format!("/api/v1/companies/{id}"));
        assert_eq!(created["duplicate_caller_handling"], false, "off by default");

        let read = expect_json(app.get(&format!("/companies/{id}")).await, StatusCode::OK).await;
        assert_eq!(read, created);

        let patched = expect_json(app.patch(&format!("/companies/{id}"), json!({"duplicate_caller_handling": true})).await, StatusCode::OK).await;
        assert_eq!(patched["duplicate_caller_handling"], true);
        assert_eq!(patched["name"], "Acme Leads");

        // PUT replaces; sending back what was read (with its id and timestamps) is fine.
        let mut replacement = patched.clone();
        replacement["name"] = json!("Acme Calls");
        let replaced = expect_json(app.put(&format!("/companies/{id}"), replacement).await, StatusCode::OK).await;
        assert_eq!(replaced["name"], "Acme Calls");
        assert_eq!(replaced["created_at"], created["created_at"]);

        let response = app.delete(&format!("/companies/{id}")).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        expect_error(app.get(&format!("/companies/{id}")).await, StatusCode::NOT_FOUND, "not_found", None).await;
    }

    async fn buyers_are_validated_field_by_field(app: TestApp) {
        let company = app.create("/companies", json!({"name": "Acme"})).await;
        let buyer = expect_json(
            app.post("/buyers", json!({"company_id": company, "name": "A", "destination": "+1 (415) 555-0101"})).await,
            StatusCode::CREATED,
        ).await;
        assert_eq!(buyer["destination"], "+14155550101", "numbers are normalised to E.164");
        assert_eq!(buyer["ring_timeout_seconds"], 30);
        assert_eq!(buyer["conversion_seconds"], 90);
        assert_eq!(buyer["company_id"], company);

        let cases = [
            (json!({"company_id": company, "name": "B", "destination": "(415) 555-0101"}), "destination", "country code"),
            (json!({"company_id": company, "name": "B", "destination": "+15555550100"}), "destination", "numbering plan"),
            (json!({"company_id": company, "name": "B", "destination": "sip:nobody"}), "destination", "sip:user@host"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "ring_timeout_seconds": 2}), "ring_timeout_seconds", "between 5 and 600"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "caps": {"daily": -5}}), "caps.daily", ""),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "caps": {"daily": 0}}), "caps.daily", "between 1 and"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "duplicate_after": "sometimes"}), "duplicate_after", "unknown variant"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "payout": 1.005}), "payout", "two decimals"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "time_zone": "Moon/Base"}), "time_zone", "time zone"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "business_hours": {"monday": {"open": "9", "close": "17:00"}}}), "business_hours.monday.open", "HH:MM"),
            (json!({"company_id": company, "name": "B", "destination": "+14155550101", "dedupe_days": 30}), "dedupe_days", "unknown field"),
            (json!({"company_id": company, "destination": "+14155550101"}), "name", "missing field"),
            (json!({"name": "B", "destination": "+14155550101"}), "company_id", "missing field"),
            (json!({"company_id": "acme", "name": "B", "destination": "+14155550101"}), "company_id", "not a valid id"),
            (json!({"company_id": uuid::Uuid::now_v7(), "name": "B", "destination": "+14155550101"}), "company_id", "no company"),
        ];
        for (body, field, hint) in cases {
            let message = expect_error(app.post("/buyers", body.clone()).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field)).await;
            assert!(message.contains(hint), "{body}: {message}");
        }

        let duplicate = app.post("/buyers", json!({"company_id": company, "name": "A", "destination": "+14155550102"})).await;
        expect_error(duplicate, StatusCode::CONFLICT, "conflict", Some("name")).await;

        let listed = expect_json(app.get(&format!("/buyers?company_id={company}")).await, StatusCode::OK).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1, "refused requests created nothing");
    }

    async fn malformed_requests_get_json_errors(app: TestApp) {
        let broken = app.admin(Method::POST, "/companies").header(header::CONTENT_TYPE, "application/json").body("{\"name\": ").send().await.unwrap();
        expect_error(broken, StatusCode::BAD_REQUEST, "malformed_body", None).await;
        let not_object = app.post("/companies", json!(["Acme"])).await;
        expect_error(not_object, StatusCode::BAD_REQUEST, "malformed_body", None).await;
        expect_error(app.get("/companies/not-an-id").await, StatusCode::NOT_FOUND, "not_found", None).await;
        expect_error(app.get(&format!("/buyers/{}", uuid::Uuid::now_v7())).await, StatusCode::NOT_FOUND, "not_found", None).await;
        expect_error(app.get("/nothing-here").await, StatusCode::NOT_FOUND, "not_found", None).await;
        expect_error(app.get("/buyers?limit=0").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("limit")).await;
        expect_error(app.get("/buyers?company_id=zzz").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("query")).await;
    }

    async fn campaigns_report_conflicts_and_bad_references(app: TestApp) {
        let acme = app.create("/companies", json!({"name": "Acme"})).await;
        let other = app.create("/companies", json!({"name": "Other"})).await;
        let a = app.create("/buyers", json!({"company_id": acme, "name": "A", "destination": "+14155550101"})).await;
        let theirs = app.create("/buyers", json!({"company_id": other, "name": "T", "destination": "+14155550109"})).await;
        let main = app.create("/campaigns", json!({
            "company_id": acme, "name": "Main", "numbers": ["+1 800 555 0100"],
            "duplicate_caller_handling": "new_convertible_handler",
            "buyers": [{"buyer_id": a, "priority": 1, "weight": 2}],
        })).await;
        let read = expect_json(app.get(&format!("/campaigns/{main}")).await, StatusCode::OK).await;
        assert_eq!(read["numbers"], json!(["+18005550100"]));
        assert_eq!(read["duplicate_caller_handling"], "new_convertible_buyer");

        let taken = app.post("/campaigns", json!({"company_id": other, "name": "Grab", "numbers": ["+18005550100"]})).await;
        let message = expect_error(taken, StatusCode::CONFLICT, "conflict", Some("numbers")).await;
        assert!(message.contains("Main"), "{message}");

        let foreign = app.post("/campaigns", json!({"company_id": acme, "name": "X", "buyers": [{"buyer_id": theirs}]})).await;
        expect_error(foreign, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("buyers[0].buyer_id")).await;
        let twice = app.post("/campaigns", json!({"company_id": acme, "name": "X", "numbers": ["+18885550100", "+18885550100"]})).await;
        expect_error(twice, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("numbers")).await;

        let in_use = app.delete(&format!("/buyers/{a}")).await;
        let message = expect_error(in_use, StatusCode::CONFLICT, "conflict", None).await;
        assert!(message.contains("Main"), "{message}");
        let owner = app.delete(&format!("/companies/{acme}")).await;
        expect_error(owner, StatusCode::CONFLICT, "conflict", None).await;
    }

    async fn patch_merges_and_null_removes(app: TestApp) {
        let acme = app.create("/companies", json!({"name": "Acme"})).await;
        let buyer = app.create("/buyers", json!({
            "company_id": acme, "name": "A", "destination": "+14155550101",
            "caps": {"concurrency": 2, "daily": 10},
            "time_zone": "America/New_York",
            "business_hours": {"monday": {"open": "09:00", "close": "17:00"}},
        })).await;
        let patched = expect_json(app.patch(&format!("/buyers/{buyer}"), json!({
            "caps": {"daily": 20}, "business_hours": null, "payout": 12.5,
        })).await, StatusCode::OK).await;
        assert_eq!(patched["caps"]["concurrency"], 2, "untouched nested fields stay");
        assert_eq!(patched["caps"]["daily"], 20);
        assert_eq!(patched["business_hours"], json!(null));
        assert_eq!(patched["time_zone"], "America/New_York");
        assert_eq!(patched["payout"], 12.5);

        let invalid = app.patch(&format!("/buyers/{buyer}"), json!({"weight": 3})).await;
        expect_error(invalid, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("weight")).await;
        let moved = app.patch(&format!("/buyers/{buyer}"), json!({"company_id": uuid::Uuid::now_v7()})).await;
        expect_error(moved, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("company_id")).await;
        let still = expect_json(app.get(&format!("/buyers/{buyer}")).await, StatusCode::OK).await;
        assert_eq!(still, patched, "refused patches change nothing");
    }

    async fn concurrent_patches_of_different_fields_both_land(app: TestApp) {
        let acme = app.create("/companies", json!({"name": "Acme"})).await;
        let buyer = app.create("/buyers", json!({"company_id": acme, "name": "A", "destination": "+14155550101"})).await;
        let path = format!("/buyers/{buyer}");
        for round in 1..=5u32 {
            let (monthly, lifetime) = futures_util::join!(
                app.patch(&path, json!({"caps": {"monthly": round * 10}})),
                app.patch(&path, json!({"caps": {"lifetime": round * 100}})),
            );
            assert_eq!(monthly.status(), StatusCode::OK);
            assert_eq!(lifetime.status(), StatusCode::OK);
            let stored = expect_json(app.get(&path).await, StatusCode::OK).await;
            assert_eq!(stored["caps"]["monthly"], round * 10, "round {round}: {stored}");
            assert_eq!(stored["caps"]["lifetime"], round * 100, "round {round}: {stored}");
        }
    }

    async fn every_api_error_is_json(app: TestApp) {
        let wrong_method = app.admin(Method::DELETE, "/companies").send().await.unwrap();
        let status = wrong_method.status();
        assert!(status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED, "{status}");
        assert!(expect_json(wrong_method, status).await["error"]["code"].is_string());

        let huge = json!({"name": "x".repeat(300_000)});
        let too_large = app.post("/companies", huge).await;
        expect_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None).await;

        let slash = app.post("/companies/", json!({"name": "Trailing"})).await;
        assert_eq!(slash.status(), StatusCode::CREATED, "a trailing slash is the same endpoint");

        let lower = app
            .client
            .get(app.url("/api/v1/companies"))
            .header("Authorization", format!("bearer {}", crate::helpers::ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(lower.status(), StatusCode::OK, "the auth scheme is case-insensitive");

        let missing = uuid::Uuid::now_v7();
        let key = app.put(&format!("/campaigns/{missing}/rtb_key"), json!({})).await;
        expect_error(key, StatusCode::NOT_FOUND, "not_found", None).await;
    }

    async fn lists_are_paginated(app: TestApp) {
        for name in ["A", "B", "C", "D", "E"] {
            app.create("/companies", json!({"name": name})).await;
        }
        let mut names = Vec::new();
        let mut path = "/companies?limit=2".to_owned();
        loop {
            let page = expect_json(app.get(&path).await, StatusCode::OK).await;
            names.extend(page["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()));
            match page["next_after"].as_str() {
                Some(after) => path = format!("/companies?limit=2&after={after}"),
                None => break,
            }
        }
        assert_eq!(names, ["A", "B", "C", "D", "E"]);
    }

    async fn rtb_keys_are_shown_once_and_never_again(app: TestApp) {
        let acme = app.create("/companies", json!({"name": "Acme"})).await;
        let campaign = app.create("/campaigns", json!({"company_id": acme, "name": "Main"})).await;
        let path = format!("/campaigns/{campaign}/rtb_key");
        assert_eq!(expect_json(app.get(&path).await, StatusCode::OK).await["configured"], false);

        let issued = expect_json(app.put(&path, json!({})).await, StatusCode::OK).await;
        let key = issued["key"].as_str().unwrap().to_owned();
        assert_eq!(key.len(), 36, "a generated key: {key}");
        assert_eq!(expect_json(app.get(&path).await, StatusCode::OK).await["configured"], true);
        let record = app.get(&format!("/campaigns/{campaign}")).await.text().await.unwrap();
        assert!(!record.contains(&key), "the campaign never shows its key");
        let mut db = app.db.connect().await;
        let (stored,): (String,) = sqlx::query_as("SELECT rtb_key_sha256 FROM campaigns WHERE id = $1")
            .bind(&campaign)
            .fetch_one(&mut db)
            .await
            .unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
        assert_eq!(stored, digest, "only the digest is kept");

        let chosen = expect_json(app.put(&path, json!({"key": "publisher-agreed-key-2026"})).await, StatusCode::OK).await;
        assert_eq!(chosen["key"], "publisher-agreed-key-2026");
        let weak = app.put(&path, json!({"key": "short"})).await;
        expect_error(weak, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("key")).await;
        assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(expect_json(app.get(&path).await, StatusCode::OK).await["configured"], false);
    }

    async fn health_and_readiness(app: TestApp) {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(expect_json(health, StatusCode::OK).await["status"], "ok");
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(expect_json(ready, StatusCode::OK).await["status"], "ready");

        app.store.close().await;
        let unready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(expect_json(unready, StatusCode::SERVICE_UNAVAILABLE).await["status"], "unavailable");
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "the process is still up");
        let api = app.get("/companies").await;
        expect_error(api, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None).await;
    }
}

#[actix_web::test]
async fn without_an_admin_token_the_api_is_closed() {
    let webhooks_only = [("TWILIO_AUTH_TOKEN", crate::helpers::AUTH_TOKEN)];
    let app = TestApp::start_with(crate::helpers::Engine::Sqlite, &webhooks_only)
        .await
        .unwrap();
    let response = app.get("/companies").await;
    let message = expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    assert!(message.contains("ADMIN_TOKEN"), "{message}");
}
