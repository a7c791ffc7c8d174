//! Routing policy on the real service: caps that block and reopen as the buyer's clock turns,
//! concurrency slots freed however a leg ends, business hours, counters that survive a
//! restart and an operator's reset, and the reason for every skip in the call's timeline.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::Value;
use switchboard::{
    clock::ManualClock,
    domain::{call::CallSid, timeline::Event},
    store::CallStore,
};

use crate::{
    helpers::{Engine, TestApp, expect_error, expect_json, on_both_engines},
    provider::{CALLER, MAIN, call_over, call_status, dial_ended, dialed, incoming, leg_status, sid},
};

/// `Capped` (New York time) comes first, `Spare` second. The tests set Capped's limits.
const PLAN: &str = r#"
[[companies]]
name = "Acme"

[[companies.buyers]]
name = "Capped"
destination = "+14155550101"
conversion_seconds = 60
time_zone = "America/New_York"
caps = { concurrency = 1, daily = 1, counted_on = "converted" }
business_hours.monday = { open = "09:00", close = "17:00" }
business_hours.tuesday = { open = "00:00", close = "24:00" }
business_hours.wednesday = { open = "00:00", close = "24:00" }

[[companies.buyers]]
name = "Spare"
destination = "+14155550102"

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Capped", priority = 1 }, { buyer = "Spare", priority = 2 }]
"#;

const CAPPED: &str = "+14155550101";
const SPARE: &str = "+14155550102";

/// The service on [`PLAN`], its clock in the test's hands.
struct Policy {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl Policy {
    /// Starts on Tuesday 2026-11-24, 15:00 in New York.
    async fn start(engine: Engine) -> Option<Self> {
        let (app, clock) = TestApp::start_clocked(engine, PLAN, "2026-11-24T20:00:00Z").await?;
        Some(Self { app, clock })
    }

    fn set_time(&self, at: &str) {
        self.clock.set(at.parse::<Timestamp>().unwrap());
    }

    /// A call arrives; returns the number dialed and the dial's action URL.
    async fn arrive(&self, n: u32) -> (String, String) {
        dialed(
            self.app
                .webhook(&self.app.url("/voice/incoming"), &incoming(&sid(n), CALLER, MAIN))
                .await,
        )
        .await
    }

    /// A whole call that talks `seconds`; returns who took it.
    async fn whole_call(&self, n: u32, seconds: u32) -> String {
        let (number, action) = self.arrive(n).await;
        self.app
            .webhook(&action, &dial_ended(&sid(n), "completed", seconds))
            .await;
        self.app
            .webhook(&self.app.url("/voice/status"), &call_over(&sid(n)))
            .await;
        number
    }

    /// Each buyer's verdict in the call's first decision, as the API shows it.
    async fn first_verdicts(&self, n: u32) -> Vec<(String, String)> {
        let call = expect_json(self.app.get(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await;
        let decision = call["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["kind"] == "decision")
            .unwrap_or_else(|| panic!("no decision in {call}"))
            .clone();
        decision["considered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn buyer_id(&self, name: &str) -> String {
        self.app.id_of("/buyers", name).await
    }

    async fn caps(&self, buyer: &str) -> Value {
        expect_json(
            self.app.get(&format!("/buyers/{buyer}/caps")).await,
            StatusCode::OK,
        )
        .await
    }
}

fn pair(name: &str, verdict: &str) -> (String, String) {
    (name.to_owned(), verdict.to_owned())
}

on_both_engines! {
    async fn a_daily_cap_blocks_at_its_limit_survives_a_restart_and_reopens_at_local_midnight(policy: Policy) {
        policy.set_time("2026-11-24T20:00:00Z");
        assert_eq!(policy.whole_call(1, 90).await, CAPPED, "converts: 1 of 1 today");
        assert_eq!(policy.whole_call(2, 90).await, SPARE);
        assert_eq!(policy.first_verdicts(2).await, [pair("Capped", "cap:daily"), pair("Spare", "chosen")]);

        // A restart rebuilds the count from the store.
        let Policy { app, clock } = policy;
        let policy = Policy { app: app.restart().await, clock };
        let capped = policy.buyer_id("Capped").await;
        let caps = policy.caps(&capped).await;
        assert_eq!((caps["daily"]["limit"].as_u64(), caps["daily"]["count"].as_u64()), (Some(1), Some(1)));
        assert_eq!(caps["blocked"], "cap:daily");
        assert_eq!(caps["daily"]["next_period_at"], "2026-11-25T05:00:00Z", "midnight in New York");
        assert_eq!(policy.whole_call(3, 90).await, SPARE);

        // One second before midnight in New York it is still blocked; at midnight it reopens.
        policy.set_time("2026-11-25T04:59:59Z");
        assert_eq!(policy.whole_call(4, 90).await, SPARE);
        assert_eq!(policy.first_verdicts(4).await[0], pair("Capped", "cap:daily"));
        policy.set_time("2026-11-25T05:00:00Z");
        let caps = policy.caps(&capped).await;
        assert_eq!(caps["daily"]["count"], 0, "a new day in New York");
        assert_eq!(caps["daily"]["counting_since"], "2026-11-25T05:00:00Z");
        assert_eq!(caps["lifetime"]["count"], 1);
        assert_eq!(policy.whole_call(5, 90).await, CAPPED);
    }

    async fn an_operator_reset_reopens_a_cap_and_survives_a_restart(policy: Policy) {
        policy.set_time("2026-11-24T20:00:00Z");
        assert_eq!(policy.whole_call(1, 90).await, CAPPED);
        let capped = policy.buyer_id("Capped").await;
        let reset = expect_json(policy.app.post(&format!("/buyers/{capped}/caps/daily/reset"), Value::Null).await, StatusCode::OK).await;
        assert_eq!(reset["daily"]["count"], 0);
        assert_eq!(reset["daily"]["counting_since"], "2026-11-24T20:00:00Z");
        assert_eq!(reset["lifetime"]["count"], 1, "only the daily count restarts");

        let Policy { app, clock } = policy;
        let policy = Policy { app: app.restart().await, clock };
        policy.clock.advance(SignedDuration::from_mins(1));
        assert_eq!(policy.whole_call(2, 90).await, CAPPED, "the reset outlives the restart");
        assert_eq!(policy.caps(&capped).await["daily"]["count"], 1);

        let unknown = policy.app.post(&format!("/buyers/{capped}/caps/weekly/reset"), Value::Null).await;
        let message = expect_error(unknown, StatusCode::NOT_FOUND, "not_found", None).await;
        assert!(message.contains("hourly, daily, monthly and lifetime"), "{message}");
        let nobody = policy.app.post(&format!("/buyers/{}/caps/daily/reset", uuid::Uuid::now_v7()), Value::Null).await;
        expect_error(nobody, StatusCode::NOT_FOUND, "not_found", None).await;
    }

    async fn a_concurrency_slot_is_freed_however_the_leg_ends(policy: Policy) {
        policy.set_time("2026-11-24T20:00:00Z");
        let capped = policy.buyer_id("Capped").await;
        let app = &policy.app;
        // Room enough in the day: only the concurrency cap is at stake here.
        let raised = app.patch(&format!("/buyers/{capped}"), serde_json::json!({"caps": {"daily": 100}})).await;
        assert_eq!(raised.status(), StatusCode::OK);
        let mut n = 0;
        // Each way a leg can end, while another call waits to see the slot free again.
        for ending in ["no-answer", "caller hung up", "leg completed", "buyer busy"] {
            n += 1;
            let holder = n;
            let (number, action) = policy.arrive(holder).await;
            assert_eq!(number, CAPPED, "{ending}: the slot is free");
            assert_eq!(policy.caps(&capped).await["concurrency"]["live"], 1, "{ending}");
            n += 1;
            assert_eq!(policy.arrive(n).await.0, SPARE, "{ending}: the slot is taken");
            assert_eq!(policy.first_verdicts(n).await[0], pair("Capped", "concurrency"));
            match ending {
                "no-answer" => {
                    let next = app.webhook(&action, &dial_ended(&sid(holder), "no-answer", 0)).await;
                    assert_eq!(dialed(next).await.0, SPARE, "the caller goes on to Spare");
                }
                "caller hung up" => {
                    app.webhook(&app.url("/voice/status"), &call_status(&sid(holder), "completed")).await;
                }
                "leg completed" => {
                    let url = app.url(&format!("/voice/calls/{}/attempts/1/status", sid(holder)));
                    app.webhook(&url, &leg_status(&sid(holder), "in-progress")).await;
                    app.webhook(&url, &leg_status(&sid(holder), "completed")).await;
                }
                _ => {
                    let next = app.webhook(&action, &dial_ended(&sid(holder), "busy", 0)).await;
                    assert_eq!(dialed(next).await.0, SPARE);
                }
            }
            assert_eq!(policy.caps(&capped).await["concurrency"]["live"], 0, "{ending}: freed");
        }
    }

    async fn business_hours_open_and_close_on_the_minute_in_the_buyers_zone(policy: Policy) {
        // Monday 2026-11-23 in New York, 09:00-17:00 (UTC-5).
        policy.set_time("2026-11-23T13:59:59Z");
        assert_eq!(policy.whole_call(1, 10).await, SPARE);
        assert_eq!(policy.first_verdicts(1).await, [pair("Capped", "closed"), pair("Spare", "chosen")]);
        policy.set_time("2026-11-23T14:00:00Z");
        assert_eq!(policy.whole_call(2, 10).await, CAPPED, "09:00 in New York");
        policy.set_time("2026-11-23T21:59:59Z");
        assert_eq!(policy.whole_call(3, 10).await, CAPPED, "16:59:59");
        policy.set_time("2026-11-23T22:00:00Z");
        assert_eq!(policy.whole_call(4, 10).await, SPARE, "17:00: closed");
        assert_eq!(policy.first_verdicts(4).await[0], pair("Capped", "closed"));
    }

    async fn a_first_webhook_retried_across_a_restart_dials_once_and_keeps_one_slot(policy: Policy) {
        let (first, _) = policy.arrive(1).await;
        assert_eq!(first, CAPPED);
        let Policy { app, clock } = policy;
        let policy = Policy { app: app.restart().await, clock };
        // The provider never got that answer and asks again, of the restarted service (which
        // takes a first webhook for a new call unless its save finds the call stored).
        let (again, _) = policy.arrive(1).await;
        assert_eq!(again, CAPPED, "the same dial again");
        let sid_1 = CallSid::parse(&sid(1)).unwrap();
        let call = policy.app.store.call(&sid_1).await.unwrap().unwrap();
        assert_eq!(call.attempts.len(), 1, "no second attempt");
        let timeline = policy.app.store.timeline(&sid_1).await.unwrap();
        let decisions = timeline.iter().filter(|e| matches!(e.event, Event::Decision(_))).count();
        assert_eq!(decisions, 1, "routed once: {timeline:?}");
        let capped = policy.buyer_id("Capped").await;
        assert_eq!(policy.caps(&capped).await["concurrency"]["live"], 1, "one slot, the stored call's");
        assert_eq!(policy.arrive(2).await.0, SPARE, "Capped is still full");
    }

    async fn a_leg_in_progress_keeps_its_slot_across_a_restart(policy: Policy) {
        let (number, action) = policy.arrive(1).await;
        assert_eq!(number, CAPPED);
        let Policy { app, clock } = policy;
        let policy = Policy { app: app.restart().await, clock };
        let capped = policy.buyer_id("Capped").await;
        assert_eq!(policy.caps(&capped).await["concurrency"]["live"], 1, "rebuilt from the store");
        assert_eq!(policy.arrive(2).await.0, SPARE);
        // The restarted service picks the call up where it was and frees the slot at its end.
        let action = action.replace(&action[..action.find("/voice").unwrap()], &policy.app.address);
        policy.app.webhook(&action, &dial_ended(&sid(1), "completed", 5)).await;
        assert_eq!(policy.caps(&capped).await["concurrency"]["live"], 0);
    }
}
