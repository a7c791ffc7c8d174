//! RTB on the real service: a publisher pings, Switchboard bids only for buyers the caller is
//! new to (the seed's scenario 2), holds the buyer for the caller until the call comes or the
//! bid expires, and logs every ping.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::clock::ManualClock;

use crate::{
    helpers::{Engine, TestApp, expect_error, expect_json, on_both_engines},
    provider::{CALLER, MAIN, call_over, dial_ended, dialed, incoming, sid},
};

/// Acme (priority 1) before Budget (priority 2), both with 30-day de-dupe windows; the company
/// and the campaign have duplicate caller handling on.
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
conversion_seconds = 90
dedupe_seconds = 2592000
payout = 10

[[companies.buyers]]
name = "Budget"
destination = "+14155550102"
conversion_seconds = 60
dedupe_seconds = 2592000
payout = 8.5

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100", "+18005550101"]
duplicate_caller_handling = "new_convertible_buyer"
buyers = [{ buyer = "Acme", priority = 1 }, { buyer = "Budget", priority = 2 }]
rtb_key = "main-campaign-rtb-key-0001"
rtb_reservation_seconds = 60

[[companies.campaigns]]
name = "Second"
numbers = ["+18005550200"]
buyers = [{ buyer = "Acme" }]
rtb_key = "second-campaign-rtb-key-02"
"#;

const KEY: &str = "main-campaign-rtb-key-0001";
const SECOND_KEY: &str = "second-campaign-rtb-key-02";
const ACME: &str = "+14155550101";
const BUDGET: &str = "+14155550102";

/// The service on [`PLAN`] (or an edit of it), its clock in the test's hands.
struct Bidding {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl Bidding {
    async fn start(engine: Engine) -> Option<Self> {
        Self::start_on(engine, PLAN).await
    }

    async fn start_on(engine: Engine, plan: &str) -> Option<Self> {
        let (app, clock) = TestApp::start_clocked(engine, plan, "2026-11-24T20:00:00Z").await?;
        Some(Self { app, clock })
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(SignedDuration::from_secs(seconds));
    }

    fn now(&self) -> Timestamp {
        use switchboard::clock::Clock;
        self.clock.now()
    }

    /// A ping with its parameters in a JSON body.
    async fn ping(&self, params: Value) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url("/rtbs.json"))
            .json(&params)
            .send()
            .await
            .expect("ping")
    }

    /// A ping for `caller` to the main campaign, answered 200.
    async fn bid(&self, caller: &str) -> Value {
        let params = json!({"key": KEY, "publisher_id": "pub-1", "caller_number": caller});
        expect_json(self.ping(params).await, StatusCode::OK).await
    }

    /// A call from `caller` arrives on `number`; returns the number dialed and the action URL.
    async fn arrive(&self, n: u32, caller: &str, number: &str) -> (String, String) {
        let body = incoming(&sid(n), caller, number);
        dialed(self.app.webhook(&self.app.url("/voice/incoming"), &body).await).await
    }

    /// A whole call from `caller` that talks `seconds`; returns who took it.
    async fn whole_call(&self, n: u32, caller: &str, seconds: u32) -> String {
        let (number, action) = self.arrive(n, caller, MAIN).await;
        self.app
            .webhook(&action, &dial_ended(&sid(n), "completed", seconds))
            .await;
        self.app
            .webhook(&self.app.url("/voice/status"), &call_over(&sid(n)))
            .await;
        number
    }

    /// The ping log, newest first, with `query` as its filters.
    async fn log(&self, query: &str) -> Value {
        expect_json(self.app.get(&format!("/rtb{query}")).await, StatusCode::OK).await
    }

    async fn timeline_kinds(&self, n: u32) -> Vec<String> {
        let call = expect_json(self.app.get(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await;
        call["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn buyer_id(&self, name: &str) -> String {
        self.app.id_of("/buyers", name).await
    }
}

/// Search Partners' (`pub-1`) and Social Leads' (`pub-2`) numbers on Main, whose first number is
/// nobody's.
const A_NUMBER: &str = "+18005550108";
const B_NUMBER: &str = "+18005550109";

/// [`PLAN`] with two publishers of the company, each given one of Main's numbers.
struct TwoPublishers(Bidding);

impl TwoPublishers {
    async fn start(engine: Engine) -> Option<Self> {
        let plan = PLAN
            .replace(
                "external_id = \"pub-1\"\n",
                &format!(
                    "external_id = \"pub-1\"\nnumbers = [\"{A_NUMBER}\"]\n\n[[companies.publishers]]\n\
                     name = \"Social Leads\"\nexternal_id = \"pub-2\"\nnumbers = [\"{B_NUMBER}\"]\n"
                ),
            )
            .replace(
                "numbers = [\"+18005550100\", \"+18005550101\"]",
                &format!("numbers = [\"+18005550100\", \"+18005550101\", \"{A_NUMBER}\", \"{B_NUMBER}\"]"),
            );
        Bidding::start_on(engine, &plan).await.map(Self)
    }

    /// A ping of `publisher`'s for `caller` to Main, answered 200.
    async fn bid_for(&self, publisher: &str, caller: &str) -> Value {
        let params = json!({"key": KEY, "publisher_id": publisher, "caller_number": caller});
        expect_json(self.0.ping(params).await, StatusCode::OK).await
    }

    async fn publisher_id(&self, name: &str) -> String {
        self.0.app.id_of("/publishers", name).await
    }

    /// Call `n` as its record shows it.
    async fn call(&self, n: u32) -> Value {
        expect_json(
            self.0.app.get(&format!("/calls/{}", sid(n))).await,
            StatusCode::OK,
        )
        .await
    }

    /// The pings `publisher_id` made, newest first.
    async fn pings_of(&self, publisher_id: &str) -> Vec<Value> {
        data(&self.0.log(&format!("?publisher_id={publisher_id}")).await).clone()
    }

    async fn pause(&self, buyer: &str, paused: bool) {
        let id = self.0.buyer_id(buyer).await;
        let patch = json!({"paused": paused});
        expect_json(
            self.0.app.patch(&format!("/buyers/{id}"), patch).await,
            StatusCode::OK,
        )
        .await;
    }
}

fn ts(value: &Value) -> Timestamp {
    value.as_str().expect("a time").parse().expect("ISO 8601")
}

fn data(page: &Value) -> &Vec<Value> {
    page["data"].as_array().expect("a page")
}

on_both_engines! {
    async fn scenario_2_bids_only_for_buyers_the_caller_is_new_to(bidding: Bidding) {
        // A new caller: the best buyer bids.
        let bid = bidding.bid("+19175470066").await;
        assert_eq!(bid["status"], "reserved", "{bid}");
        assert_eq!(bid["payout"], 10.0);

        // The caller converts with Acme on a call of their own.
        assert_eq!(bidding.whole_call(1, CALLER, 120).await, ACME);

        // Converted by some buyers: the bid is for another, with that buyer's terms.
        let bid = bidding.bid(CALLER).await;
        assert_eq!(bid["status"], "reserved", "{bid}");
        assert_eq!(bid["payout"], 8.5);
        assert_eq!(bid["seconds"], 60, "Budget's conversion rule");
        assert_eq!(bid["inbound_number"], MAIN, "the campaign's first tracking number");
        assert_eq!(bid["cached"], false);
        assert_eq!(ts(&bid["expires_at"]), bidding.now() + SignedDuration::from_secs(60));
        let uuid = bid["uuid"].as_str().unwrap().to_owned();

        // The publisher sends the call: the reserved buyer is dialed.
        bidding.advance(20);
        let (number, action) = bidding.arrive(2, CALLER, MAIN).await;
        assert_eq!(number, BUDGET);
        assert!(bidding.timeline_kinds(2).await.contains(&"reservation_claimed".to_owned()));
        // A repeat ping before expiry still gets the reservation, claimed as it is.
        let again = bidding.bid(CALLER).await;
        assert_eq!((again["uuid"].as_str(), again["cached"].as_bool()), (Some(uuid.as_str()), Some(true)));
        // The call converts.
        bidding.app.webhook(&action, &dial_ended(&sid(2), "completed", 90)).await;
        bidding.app.webhook(&bidding.app.url("/voice/status"), &call_over(&sid(2))).await;

        // Once the bid expired: converted by every buyer, no bid, and why.
        bidding.advance(60);
        let bid = bidding.bid(CALLER).await;
        assert_eq!(bid["status"], "no-target", "{bid}");
        assert_eq!(bid["reason"], "duplicate");
        assert!(bid["uuid"].is_string());
        assert!(bid.get("payout").is_none());

        // The log tells the story, newest first.
        let log = bidding.log(&format!("?caller={}", CALLER.replace('+', "%2B"))).await;
        let pings = data(&log);
        assert_eq!(pings.len(), 3, "{log}");
        assert_eq!(pings[0]["status"], "no-target");
        assert_eq!(pings[0]["reason"], "duplicate");
        for ping in &pings[1..] {
            assert_eq!(ping["status"], "claimed");
            assert_eq!(ping["answer"]["uuid"], uuid.as_str());
            assert_eq!(ping["reservation"]["call_sid"], sid(2));
            assert_eq!(ping["reservation"]["buyer_id"], bidding.buyer_id("Budget").await);
        }
        assert_eq!((pings[1]["cached"].as_bool(), pings[2]["cached"].as_bool()), (Some(true), Some(false)));
        let claimed = bidding.log("?status=claimed").await;
        assert_eq!(data(&claimed).len(), 2, "{claimed}");
    }

    async fn the_reserved_buyer_is_dialed_first_even_when_a_better_one_is_back(bidding: Bidding) {
        let acme = bidding.buyer_id("Acme").await;
        expect_json(bidding.app.patch(&format!("/buyers/{acme}"), json!({"paused": true})).await, StatusCode::OK).await;
        assert_eq!(bidding.bid(CALLER).await["payout"], 8.5, "Acme is paused: Budget bids");
        expect_json(bidding.app.patch(&format!("/buyers/{acme}"), json!({"paused": false})).await, StatusCode::OK).await;

        // Acme would come first now, but Budget holds the caller.
        let (number, action) = bidding.arrive(1, CALLER, "+18005550101").await;
        assert_eq!(number, BUDGET);
        // Budget does not answer: routing goes on as usual.
        let next = bidding.app.webhook(&action, &dial_ended(&sid(1), "no-answer", 0)).await;
        assert_eq!(dialed(next).await.0, ACME);

        // Another caller, no reservation: Acme first.
        assert_eq!(bidding.arrive(2, "+14155550124", MAIN).await.0, ACME);
    }

    async fn a_repeat_ping_before_expiry_gets_the_same_reservation(bidding: Bidding) {
        let first = bidding.bid(CALLER).await;
        assert_eq!(first["cached"], false);
        bidding.advance(30);
        // Whatever changed since (here: every buyer paused), the bid made stands.
        for name in ["Acme", "Budget"] {
            let id = bidding.buyer_id(name).await;
            expect_json(bidding.app.patch(&format!("/buyers/{id}"), json!({"paused": true})).await, StatusCode::OK).await;
        }
        let again = bidding.bid(CALLER).await;
        assert_eq!(again["cached"], true, "{again}");
        for field in ["uuid", "payout", "seconds", "inbound_number", "expires_at"] {
            assert_eq!(again[field], first[field], "{field}");
        }
        // Another caller, or another campaign, is another decision.
        assert_eq!(bidding.bid("+14155550124").await["status"], "no-target");
        let params = json!({"key": SECOND_KEY, "publisher_id": "pub-1", "caller_number": CALLER});
        let second = expect_json(bidding.ping(params).await, StatusCode::OK).await;
        assert_eq!(second["status"], "no-target");

        // Both pings of the caller are logged, the repeat marked.
        let caller = CALLER.replace('+', "%2B");
        let log = bidding.log(&format!("?caller={caller}&status=reserved")).await;
        let mine = data(&log);
        assert_eq!(mine.len(), 2, "{log}");
        assert_eq!((mine[0]["cached"].clone(), mine[1]["cached"].clone()), (json!(true), json!(false)));
        assert_eq!(mine[0]["answer"]["uuid"], mine[1]["answer"]["uuid"]);
    }

    async fn a_reservation_expires_unless_its_call_comes_in_time(bidding: Bidding) {
        let first = bidding.bid(CALLER).await;
        bidding.advance(60);
        // At its expiry it is gone: a new ping is a new reservation.
        let second = bidding.bid(CALLER).await;
        assert_eq!(second["cached"], false);
        assert_ne!(second["uuid"], first["uuid"]);
        let log = bidding.log("?status=expired").await;
        assert_eq!(data(&log).len(), 1, "{log}");
        assert_eq!(data(&log)[0]["answer"]["uuid"], first["uuid"]);

        // The second one expires too; the call that comes afterwards claims nothing.
        bidding.advance(61);
        assert_eq!(bidding.arrive(1, CALLER, MAIN).await.0, ACME);
        assert!(!bidding.timeline_kinds(1).await.contains(&"reservation_claimed".to_owned()));
        assert_eq!(data(&bidding.log("?status=expired").await).len(), 2);
        assert_eq!(data(&bidding.log("?status=claimed").await).len(), 0);
    }

    async fn a_reservation_survives_a_restart(bidding: Bidding) {
        let acme = bidding.buyer_id("Acme").await;
        expect_json(bidding.app.patch(&format!("/buyers/{acme}"), json!({"paused": true})).await, StatusCode::OK).await;
        assert_eq!(bidding.bid(CALLER).await["payout"], 8.5);
        expect_json(bidding.app.patch(&format!("/buyers/{acme}"), json!({"paused": false})).await, StatusCode::OK).await;
        // What was answered is written within a moment; reading the log waits for it.
        bidding.log("").await;

        let Bidding { app, clock } = bidding;
        let bidding = Bidding { app: app.restart().await, clock };
        assert_eq!(bidding.bid(CALLER).await["cached"], true, "the ping shield holds across a restart");
        assert_eq!(bidding.arrive(1, CALLER, MAIN).await.0, BUDGET, "and so does the reservation");
    }

    async fn reservations_do_not_count_against_caps_until_claimed(bidding: Bidding) {
        let acme = bidding.buyer_id("Acme").await;
        let caps = json!({"caps": {"concurrency": 1, "daily": 1, "counted_on": "converted"}});
        expect_json(bidding.app.patch(&format!("/buyers/{acme}"), caps).await, StatusCode::OK).await;

        // Three callers pinged: Acme bids for each, as none of them is a call yet.
        let callers = ["+14155550131", "+14155550132", "+14155550133"];
        for caller in callers {
            assert_eq!(bidding.bid(caller).await["payout"], 10.0, "{caller}");
        }
        // A caller nobody pinged for takes Acme's one line.
        let (number, _) = bidding.arrive(1, "+14155550199", MAIN).await;
        assert_eq!(number, ACME);
        // A reserved caller's call claims its reservation, but Acme has no line free.
        assert_eq!(bidding.arrive(2, callers[0], MAIN).await.0, BUDGET);
        assert!(bidding.timeline_kinds(2).await.contains(&"reservation_claimed".to_owned()));
        // Now a ping sees Acme full.
        assert_eq!(bidding.bid("+14155550134").await["payout"], 8.5);
    }

    async fn with_the_feature_off_bids_ignore_duplicate_status(bidding: Bidding) {
        assert_eq!(bidding.whole_call(1, CALLER, 120).await, ACME);
        assert_eq!(bidding.bid(CALLER).await["payout"], 8.5, "on: Acme converted the caller");

        let company = expect_json(bidding.app.get("/companies").await, StatusCode::OK).await["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let off = json!({"duplicate_caller_handling": false});
        expect_json(bidding.app.patch(&format!("/companies/{company}"), off).await, StatusCode::OK).await;
        assert_eq!(bidding.bid("+14155550124").await["payout"], 10.0);
        // Off: a caller Acme converted still gets Acme's bid.
        assert_eq!(bidding.whole_call(2, "+14155550125", 120).await, ACME);
        assert_eq!(bidding.bid("+14155550125").await["payout"], 10.0, "off: duplicates are no obstacle");
    }

    async fn every_error_is_json_with_a_stable_code(bidding: Bidding) {
        let ping = |params: Value| bidding.ping(params);
        expect_error(ping(json!({"publisher_id": "pub-1", "caller_number": CALLER})).await, StatusCode::UNAUTHORIZED, "missing_key", Some("key")).await;
        expect_error(ping(json!({"key": "no-such-key-0000000000", "publisher_id": "pub-1", "caller_number": CALLER})).await, StatusCode::UNAUTHORIZED, "unknown_key", Some("key")).await;
        let message = expect_error(ping(json!({"key": KEY, "publisher_id": "pub-1"})).await, StatusCode::UNPROCESSABLE_ENTITY, "missing_caller_number", Some("caller_number")).await;
        assert!(message.contains("caller_number"), "{message}");
        expect_error(ping(json!({"key": KEY, "publisher_id": "pub-1", "caller_number": "555-0100"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_caller_number", Some("caller_number")).await;
        expect_error(ping(json!({"key": KEY, "publisher_id": "pub-1", "caller_number": "+1 555 0100"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_caller_number", Some("caller_number")).await;
        expect_error(ping(json!({"key": KEY, "publisher_id": "nobody", "caller_number": CALLER})).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_publisher", Some("publisher_id")).await;
        expect_error(ping(json!({"key": KEY, "caller_number": CALLER})).await, StatusCode::UNPROCESSABLE_ENTITY, "missing_publisher", Some("publisher_id")).await;
        let broken = bidding.app.client.post(bidding.app.url("/rtbs.json"))
            .header("Content-Type", "application/json").body("{\"key\":").send().await.unwrap();
        expect_error(broken, StatusCode::BAD_REQUEST, "malformed_request", None).await;
        let huge = bidding.app.client.post(bidding.app.url("/rtbs.json"))
            .header("Content-Type", "application/x-www-form-urlencoded").body(format!("key={KEY}&pad={}", "x".repeat(64 * 1024))).send().await.unwrap();
        expect_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None).await;

        // Refused pings of a known campaign are logged with their code; unknown keys are not.
        let log = bidding.log("?status=rejected").await;
        let reasons: Vec<&str> = data(&log).iter().map(|p| p["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["missing_publisher", "unknown_publisher", "invalid_caller_number", "invalid_caller_number", "missing_caller_number"]);
        assert_eq!(data(&log)[4]["answer"]["error"]["code"], "missing_caller_number");
        assert_eq!(data(&bidding.log("").await).len(), 5, "nothing else was logged");
    }

    async fn a_campaign_may_bid_for_pings_without_a_caller_number(bidding: Bidding) {
        let main = bidding.app.id_of("/campaigns", "Main").await;
        let optional = json!({"rtb_caller_number_optional": true});
        expect_json(bidding.app.patch(&format!("/campaigns/{main}"), optional).await, StatusCode::OK).await;
        let params = json!({"key": KEY, "publisher_id": "pub-1"});
        let bid = expect_json(bidding.ping(params.clone()).await, StatusCode::OK).await;
        assert_eq!(bid["status"], "reserved");
        // Nothing ties a repeat to the first: no shield without a caller.
        let again = expect_json(bidding.ping(params).await, StatusCode::OK).await;
        assert_eq!(again["cached"], false);
        assert_ne!(again["uuid"], bid["uuid"]);
    }

    async fn pings_come_in_the_query_string_a_form_or_json(bidding: Bidding) {
        // The query string as peer products document it, `+` unencoded (it arrives as a space).
        let url = bidding.app.url(&format!("/rtbs.json?key={KEY}&publisher_id=pub-1&caller_number=+14155550141&zip=10001"));
        let by_query = expect_json(bidding.app.client.post(url).send().await.unwrap(), StatusCode::OK).await;
        assert_eq!(by_query["status"], "reserved", "{by_query}");

        let form = [("key", KEY), ("source_id", "pub-1"), ("caller_number", "+1 (415) 555-0142"), ("zip", "10002")];
        let by_form = bidding.app.client.post(bidding.app.url("/rtbs.json")).form(&form).send().await.unwrap();
        assert_eq!(expect_json(by_form, StatusCode::OK).await["status"], "reserved");

        // A number in JSON is read as its digits, like text: without `+` and a country code, it is
        // not taken for one (4752345678 is a US number, but +4752345678 a Norwegian one).
        let national = json!({"key": KEY, "publisher_id": "pub-1", "caller_number": 4752345678_u64});
        expect_error(bidding.ping(national).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_caller_number", Some("caller_number")).await;
        let by_json = json!({"key": KEY, "publisher_id": "pub-1", "caller_number": "+14155550143", "zip": 10003, "vip": true});
        let by_json = expect_json(bidding.ping(by_json).await, StatusCode::OK).await;
        assert_eq!(by_json["status"], "reserved", "{by_json}");

        // Every other parameter is kept with the ping; the key never is.
        let log = bidding.log("?status=reserved").await;
        let logged: Vec<(Value, Value)> = data(&log).iter().map(|p| (p["caller_number"].clone(), p["request"].clone())).collect();
        assert_eq!(logged[0].0, "+14155550143");
        assert_eq!(logged[0].1, json!({"publisher_id": "pub-1", "caller_number": "+14155550143", "zip": "10003", "vip": "true"}));
        assert_eq!(logged[1].0, "+14155550142");
        assert_eq!(logged[1].1["zip"], "10002");
        assert_eq!(logged[2].0, "+14155550141");
        assert_eq!(logged[2].1, json!({"publisher_id": "pub-1", "caller_number": " 14155550141", "zip": "10001"}));
        assert!(!log.to_string().contains(KEY));
    }

    async fn the_ping_log_filters_and_pages(bidding: Bidding) {
        let start = bidding.now();
        for caller in ["+14155550151", "+14155550152", "+14155550153"] {
            bidding.bid(caller).await;
            bidding.advance(10);
        }
        let params = json!({"key": SECOND_KEY, "publisher_id": "pub-1", "caller_number": "+14155550154"});
        expect_json(bidding.ping(params).await, StatusCode::OK).await;

        // Pages of two, newest first, until the last.
        let first = bidding.log("?limit=2").await;
        let next = first["next_before"].as_str().expect("a next page").to_owned();
        let second = bidding.log(&format!("?limit=2&before={next}")).await;
        let callers: Vec<&str> = data(&first).iter().chain(data(&second))
            .map(|p| p["caller_number"].as_str().unwrap()).collect();
        assert_eq!(callers, ["+14155550154", "+14155550153", "+14155550152", "+14155550151"]);
        // A full page may be the last: the next one is then empty, with no further cursor.
        let last = bidding.log(&format!("?limit=2&before={}", second["next_before"].as_str().unwrap())).await;
        assert!(data(&last).is_empty() && last.get("next_before").is_none(), "{last}");

        // By campaign, publisher and time.
        let second_campaign = data(&first)[0]["campaign_id"].as_str().unwrap().to_owned();
        assert_eq!(data(&bidding.log(&format!("?campaign_id={second_campaign}")).await).len(), 1);
        let publisher = data(&first)[0]["publisher_id"].as_str().unwrap().to_owned();
        assert_eq!(data(&bidding.log(&format!("?publisher_id={publisher}")).await).len(), 4);
        let from = (start + SignedDuration::from_secs(10)).to_string();
        let to = (start + SignedDuration::from_secs(20)).to_string();
        let window = bidding.log(&format!("?from={from}&to={to}")).await;
        assert_eq!(data(&window).iter().map(|p| p["caller_number"].clone()).collect::<Vec<_>>(), [json!("+14155550152")]);
        assert!(data(&bidding.log("?caller=%2B14155550199").await).is_empty(), "nobody pinged for");

        // Refused: a bad filter, and a request without the admin token.
        expect_error(bidding.app.get("/rtb?status=won").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("status")).await;
        expect_error(bidding.app.get("/rtb?limit=0").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("limit")).await;
        let anonymous = bidding.app.client.get(bidding.app.url("/api/v1/rtb")).send().await.unwrap();
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None).await;
    }
}

on_both_engines! {
    async fn two_publishers_pinging_for_one_caller_each_get_their_own_reservation(p: TwoPublishers) {
        let (a_id, b_id) = (p.publisher_id("Search Partners").await, p.publisher_id("Social Leads").await);
        let a = p.bid_for("pub-1", CALLER).await;
        assert_eq!((a["status"].as_str(), a["cached"].as_bool()), (Some("reserved"), Some(false)), "{a}");
        assert_eq!(a["payout"], 10.0, "Acme: {a}");
        assert_eq!(a["inbound_number"], A_NUMBER, "its own number on the campaign");
        // B's ping is its own bid, not A's as cached; A holds Acme for the caller, so Budget bids.
        let b = p.bid_for("pub-2", CALLER).await;
        assert_eq!((b["status"].as_str(), b["cached"].as_bool()), (Some("reserved"), Some(false)), "{b}");
        assert_ne!(b["uuid"], a["uuid"]);
        assert_eq!(b["payout"], 8.5, "Budget: {b}");
        assert_eq!(b["inbound_number"], B_NUMBER, "B's own number, whose calls are B's");

        // Both hold across a restart.
        p.0.log("").await;
        let TwoPublishers(Bidding { app, clock }) = p;
        let p = TwoPublishers(Bidding { app: app.restart().await, clock });
        let b_again = p.bid_for("pub-2", CALLER).await;
        assert_eq!((&b_again["uuid"], b_again["cached"].as_bool()), (&b["uuid"], Some(true)), "{b_again}");

        // The caller calls A's number: A's reservation is claimed, its buyer dialed, A's call.
        p.0.advance(10);
        let (number, action) = p.0.arrive(1, CALLER, A_NUMBER).await;
        assert_eq!(number, ACME);
        assert!(p.0.timeline_kinds(1).await.contains(&"reservation_claimed".to_owned()));
        let call = p.call(1).await;
        assert_eq!(call["publisher_id"], a_id.as_str(), "{call}");
        p.0.app.webhook(&action, &dial_ended(&sid(1), "completed", 10)).await;
        p.0.app.webhook(&p.0.app.url("/voice/status"), &call_over(&sid(1))).await;

        // B's is not consumed: B re-pinging gets its own, cached.
        let b_later = p.bid_for("pub-2", CALLER).await;
        assert_eq!((&b_later["uuid"], b_later["cached"].as_bool()), (&b["uuid"], Some(true)), "{b_later}");
        let a_later = p.bid_for("pub-1", CALLER).await;
        assert_eq!((&a_later["uuid"], a_later["cached"].as_bool()), (&a["uuid"], Some(true)), "{a_later}");
        // The log shows A's pings claimed by that call, B's still reserved.
        let a_pings = p.pings_of(&a_id).await;
        assert_eq!(a_pings.len(), 2);
        for ping in &a_pings {
            assert_eq!((ping["status"].as_str(), ping["reservation"]["call_sid"].as_str()), (Some("claimed"), Some(sid(1).as_str())), "{ping}");
        }
        let b_pings = p.pings_of(&b_id).await;
        assert_eq!(b_pings.len(), 3);
        for ping in &b_pings {
            assert_eq!((ping["status"].as_str(), &ping["reservation"]["uuid"]), (Some("reserved"), &b["uuid"]), "{ping}");
        }

        // B's call, later, claims B's: its buyer, its call.
        let (number, _) = p.0.arrive(2, CALLER, B_NUMBER).await;
        assert_eq!(number, BUDGET);
        assert_eq!(p.call(2).await["publisher_id"], b_id.as_str());
        assert_eq!(p.pings_of(&b_id).await[0]["reservation"]["call_sid"], sid(2));
    }

    async fn a_call_on_one_publishers_number_never_claims_anothers_reservation(p: TwoPublishers) {
        let (a_id, b_id) = (p.publisher_id("Search Partners").await, p.publisher_id("Social Leads").await);
        // B's bid holds Budget (Acme was paused then).
        p.pause("Acme", true).await;
        let b = p.bid_for("pub-2", CALLER).await;
        assert_eq!(b["payout"], 8.5, "{b}");
        p.pause("Acme", false).await;

        // The caller calls A's number: routed as usual (Acme first), A's call, B's bid untouched.
        let (number, _) = p.0.arrive(1, CALLER, A_NUMBER).await;
        assert_eq!(number, ACME, "not B's reserved buyer");
        assert!(!p.0.timeline_kinds(1).await.contains(&"reservation_claimed".to_owned()));
        let call = p.call(1).await;
        assert_eq!(call["publisher_id"], a_id.as_str(), "{call}");
        // Nor does a call on the number given to nobody: B's bid sent the caller to B's.
        let (number, _) = p.0.arrive(2, CALLER, MAIN).await;
        assert_eq!(number, ACME);
        assert!(p.call(2).await["publisher_id"].is_null());
        let again = p.bid_for("pub-2", CALLER).await;
        assert_eq!((&again["uuid"], again["cached"].as_bool()), (&b["uuid"], Some(true)), "{again}");
        assert_eq!(p.pings_of(&b_id).await[1]["status"], "reserved");

        // On B's number, B's is claimed.
        let (number, _) = p.0.arrive(3, CALLER, B_NUMBER).await;
        assert_eq!(number, BUDGET);
        assert_eq!(p.call(3).await["publisher_id"], b_id.as_str());
    }

    async fn a_buyer_held_for_one_publisher_is_not_bid_to_another(p: TwoPublishers) {
        // Only Acme can bid.
        p.pause("Budget", true).await;
        let a = p.bid_for("pub-1", CALLER).await;
        assert_eq!(a["payout"], 10.0, "{a}");
        // Acme is promised to A for this caller: B is told so, each time, until A's expires.
        for _ in 0..2 {
            let b = p.bid_for("pub-2", CALLER).await;
            assert_eq!((b["status"].as_str(), b["reason"].as_str()), (Some("no-target"), Some("held")), "{b}");
        }
        // Another caller is not held.
        assert_eq!(p.bid_for("pub-2", "+14155550124").await["payout"], 10.0);
        p.0.advance(60);
        let b = p.bid_for("pub-2", CALLER).await;
        assert_eq!((b["status"].as_str(), b["payout"].as_f64()), (Some("reserved"), Some(10.0)), "{b}");
        let held = p.0.log("?status=no-target").await;
        assert_eq!(data(&held).len(), 2, "{held}");
        assert_eq!(data(&held)[0]["reason"], "held");
    }
}

#[actix_web::test]
async fn pings_answered_while_the_database_is_down_are_logged_once_it_returns() {
    use std::time::Duration;

    use switchboard::store::{PingFilter, RtbStore};

    use crate::helpers::FlakyApp;

    let FlakyApp { store, base, .. } = &FlakyApp::start(PLAN).await;
    let url = format!("{base}/rtbs.json");

    store.set_down(true);
    let params = json!({"key": KEY, "publisher_id": "pub-1", "caller_number": CALLER});
    let ping = reqwest::Client::new()
        .post(&url)
        .json(&params)
        .send()
        .await
        .unwrap();
    let bid = expect_json(ping, StatusCode::OK).await;
    assert_eq!(bid["status"], "reserved", "answered all the same: {bid}");

    let everything = || PingFilter {
        campaign_id: None,
        publisher_id: None,
        caller: None,
        status: None,
        from: None,
        to: None,
        before: None,
        limit: 10,
        at: Timestamp::now(),
    };
    assert!(
        store.inner.rtb_pings(&everything()).await.unwrap().is_empty(),
        "nothing written yet"
    );
    store.set_down(false);
    let mut logged = Vec::new();
    for _ in 0..60 {
        logged = store.inner.rtb_pings(&everything()).await.unwrap();
        if !logged.is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logged.len(), 1, "written once the database returned");
    let held = logged[0].held.as_ref().expect("with its reservation");
    assert_eq!(held.uuid.to_string(), bid["uuid"].as_str().unwrap());
}
