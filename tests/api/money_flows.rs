//! Money flows, outside in: what publishers earn (and do not, for a repeat caller), postbacks
//! delivered exactly once per endpoint through a receiver that fails, hangs or outlives a
//! `kill -9`, the CSV exports, and a webhook that never waits on a receiver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use reqwest::StatusCode;
use serde_json::Value;
use switchboard::{
    domain::postback::{PostbackSecret, signature},
    plan::Plan,
};

use crate::{
    helpers::{Engine, TestApp, TestDb, expect_error, expect_json, on_both_engines},
    provider::{CALLER, MAIN, call_over, dial_ended, dialed, incoming, sid},
};

pub(crate) const PLAN: &str = include_str!("../fixtures/plans/acme.toml");
pub(crate) const BUYER_SECRET: &str = "whsec_buyer_0123456789abcdef";
pub(crate) const PUBLISHER_SECRET: &str = "whsec_publisher_0123456789ab";
const OTHER_CALLER: &str = "+14155550177";

/// What a receiver does with the requests to one path.
#[derive(Default)]
pub(crate) struct Behaviour {
    /// Answer 500 to this many requests first.
    pub fail_first: u32,
    /// Never answer (until the sender gives up).
    pub hang: bool,
    /// Answer this late.
    pub delay: Duration,
}

/// A request the receiver got, and whether it answered 2xx.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub path: String,
    pub key: String,
    pub event: String,
    pub signature: String,
    pub body: String,
    pub acknowledged: bool,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Log {
    behaviour: HashMap<String, Behaviour>,
    received: Vec<Received>,
    /// Requests held unanswered now, and the most at once.
    hanging: usize,
    most_hanging: usize,
}

/// A request held unanswered, until its sender gives up (its handler is then dropped).
struct Hanging(web::Data<Mutex<Log>>);

impl Hanging {
    fn new(log: web::Data<Mutex<Log>>) -> Self {
        {
            let mut held = log.lock().unwrap();
            held.hanging += 1;
            held.most_hanging = held.most_hanging.max(held.hanging);
        }
        Self(log)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.lock().unwrap().hanging -= 1;
    }
}

/// A postback receiver on loopback: it records every request and answers as told per path.
#[derive(Clone)]
pub(crate) struct Receiver {
    base: String,
    log: Arc<Mutex<Log>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = web::Data::from(log.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        Self { base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn behave(&self, path: &str, behaviour: Behaviour) {
        self.log
            .lock()
            .unwrap()
            .behaviour
            .insert(path.to_owned(), behaviour);
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().received.clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until `done` holds of what was received.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(Instant::now() < deadline, "{what}; received: {received:#?}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(request: HttpRequest, body: web::Bytes, log: web::Data<Mutex<Log>>) -> HttpResponse {
    let header = |name: &str| {
        (request.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = request.path().to_owned();
    let (hang, fail, delay) = {
        let mut log = log.lock().unwrap();
        let behaviour = log.behaviour.entry(path.clone()).or_default();
        let fail = behaviour.fail_first > 0;
        if fail {
            behaviour.fail_first -= 1;
        }
        (behaviour.hang, fail, behaviour.delay)
    };
    actix_web::rt::time::sleep(delay).await;
    let mut received = Received {
        path,
        key: header("idempotency-key"),
        event: header("switchboard-event"),
        signature: header("switchboard-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        acknowledged: false,
    };
    if hang {
        log.lock().unwrap().received.push(received);
        let _held = Hanging::new(log.clone());
        actix_web::rt::time::sleep(Duration::from_secs(120)).await;
        return HttpResponse::Ok().finish();
    }
    received.acknowledged = !fail;
    log.lock().unwrap().received.push(received);
    if fail {
        HttpResponse::InternalServerError().body("down for maintenance")
    } else {
        HttpResponse::Ok().finish()
    }
}

/// The replay plan with a publisher given the main number (paid per call connected a minute,
/// once a day per caller), and postbacks: Acme Auto hears of conversions, the publisher of
/// everything.
fn plan_with(receiver: &Receiver) -> Plan {
    plan_with_buyer_endpoints(receiver, &["/buyer"])
}

/// [`plan_with`], the buyer's conversions posted to each of `paths`.
fn plan_with_buyer_endpoints(receiver: &Receiver, paths: &[&str]) -> Plan {
    let endpoints: Vec<String> = (paths.iter())
        .map(|path| {
            format!(
                "{{ url = \"{}\", secret = \"{BUYER_SECRET}\", events = [\"call.converted\"] }}",
                receiver.url(path)
            )
        })
        .collect();
    let plan = PLAN
        .replace(
            "destination = \"+14155550101\"",
            &format!("destination = \"+14155550101\"\npostbacks = [{}]", endpoints.join(", ")),
        )
        .replace(
            "duplicate_caller_handling = true\n",
            &format!(
                "duplicate_caller_handling = true\n\n[[companies.publishers]]\nname = \"Search\"\nnumbers = [\"{MAIN}\"]\n\
                 payout = {{ rule = \"per_connected_seconds\", amount = 12, seconds = 60, dedupe_seconds = 86400 }}\n\
                 postbacks = [{{ url = \"{}\", secret = \"{PUBLISHER_SECRET}\" }}]\n",
                receiver.url("/publisher")
            ),
        );
    Plan::parse(&plan).unwrap()
}

/// Quick retries, so that a few failures take a moment; five tries at most.
pub(crate) const QUICK_RETRIES: [(&str, &str); 3] = [
    ("POSTBACK_RETRY_BASE_MS", "50"),
    ("POSTBACK_TIMEOUT_MS", "2000"),
    ("POSTBACK_MAX_TRIES", "5"),
];

/// Under [`QUICK_RETRIES`], long enough for whatever could still send a delivered postback
/// again to have done so: past a lease's end (twice the timeout and 5 s: a node that leased it
/// and died, or a node whose clock runs ahead, would take it up by then) and two of the
/// longest retry periods (a lost record of its delivery would have it tried again).
const ONCE_FOR_GOOD: Duration = Duration::from_millis(2 * 2000 + 5000 + 2 * 50 * 16);

impl Receiver {
    /// What the receiver holds once nothing more can come: `settled` read again after
    /// [`ONCE_FOR_GOOD`], and found the same.
    async fn unchanged_for_good(&self, settled: &[Received]) -> Vec<Received> {
        actix_web::rt::time::sleep(ONCE_FOR_GOOD).await;
        let later = self.received();
        let more: Vec<(&str, &str)> = (later.iter().skip(settled.len()))
            .map(|r| (r.path.as_str(), r.key.as_str()))
            .collect();
        assert!(
            later.len() == settled.len(),
            "{} more sent after {} were delivered: {more:?}",
            more.len(),
            settled.len()
        );
        later
    }
}

struct Money {
    app: TestApp,
    receiver: Receiver,
}

impl Money {
    async fn start(engine: Engine) -> Option<Self> {
        let receiver = Receiver::start().await;
        let app = TestApp::start_with_plan_and(engine, &plan_with(&receiver), &QUICK_RETRIES).await?;
        Some(Self { app, receiver })
    }
}

/// A call from `caller` to the main number, connected to the first buyer offered for `seconds`,
/// then over. The buyer's number.
pub(crate) async fn connected_call(app: &TestApp, n: u32, caller: &str, seconds: u32) -> String {
    let call = sid(n);
    let (buyer, action) = dialed(
        app.webhook(&app.url("/voice/incoming"), &incoming(&call, caller, MAIN))
            .await,
    )
    .await;
    let ended = app
        .webhook(&action, &dial_ended(&call, "completed", seconds))
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    let over = app.webhook(&app.url("/voice/status"), &call_over(&call)).await;
    assert_eq!(over.status(), StatusCode::NO_CONTENT);
    buyer
}

async fn call_json(app: &TestApp, n: u32) -> Value {
    expect_json(app.read(&format!("/calls/{}", sid(n))).await, StatusCode::OK).await
}

/// Call 1's postbacks in the outbox, once `settled` holds of them.
async fn outbox_once(app: &TestApp, settled: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outbox = expect_json(
            app.read(&format!("/postbacks?call_sid={}", sid(1))).await,
            StatusCode::OK,
        )
        .await;
        if settled(outbox["data"].as_array().unwrap()) {
            return outbox;
        }
        assert!(Instant::now() < deadline, "{outbox}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn checks_out(received: &Received, secret: &str) -> bool {
    let secret = PostbackSecret::try_from(secret.to_owned()).unwrap();
    let t: i64 = (received.signature.split(',').next())
        .and_then(|t| t.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time in {:?}", received.signature));
    received.signature == signature(&secret, t, &received.body)
}

on_both_engines! {
    async fn a_repeat_caller_inside_the_window_earns_the_publisher_nothing(m: Money) {
        let app = &m.app;
        assert_eq!(connected_call(app, 1, CALLER, 120).await, "+14155550101");
        let first = call_json(app, 1).await;
        assert_eq!((first["publisher_payout"].as_f64(), first["publisher_duplicate"].as_bool()), (Some(12.0), Some(false)), "{first}");
        let publisher = app.id_of("/publishers", "Search").await;
        assert_eq!(first["publisher_id"], publisher.as_str());

        // The same caller again: a new buyer converts it (Acme Auto would see a duplicate), but
        // the publisher was paid for this caller today.
        assert_eq!(connected_call(app, 2, CALLER, 120).await, "+14155550102");
        let repeat = call_json(app, 2).await;
        assert_eq!(repeat["converted"], true, "the buyer still pays: {repeat}");
        assert_eq!((repeat["publisher_payout"].as_f64(), repeat["publisher_duplicate"].as_bool()), (Some(0.0), Some(true)), "{repeat}");
        let settled = repeat["timeline"].as_array().unwrap().iter()
            .find(|e| e["kind"] == "publisher_settled").expect("the settlement is on the timeline");
        assert_eq!(settled["duplicate"], true);

        // Another caller, too short a call, then long enough.
        connected_call(app, 3, OTHER_CALLER, 59).await;
        let short = call_json(app, 3).await;
        assert_eq!((short["publisher_payout"].as_f64(), &short["publisher_duplicate"]), (Some(0.0), &Value::Null), "{short}");
        connected_call(app, 4, OTHER_CALLER, 61).await;
        assert_eq!(call_json(app, 4).await["publisher_payout"].as_f64(), Some(12.0), "a short call was never paid, so it holds nothing against the next");

        let stats = expect_json(app.read("/stats/publishers").await, StatusCode::OK).await;
        let row = &stats["data"][0];
        assert_eq!(row["publisher_id"], publisher.as_str());
        assert_eq!((row["calls"].as_u64(), row["paid"].as_u64(), row["duplicates"].as_u64(), row["unsettled"].as_u64()), (Some(4), Some(2), Some(1), Some(0)), "{stats}");
        assert_eq!(row["payout"].as_f64(), Some(24.0));
        let theirs = expect_json(app.read(&format!("/calls?publisher_id={publisher}")).await, StatusCode::OK).await;
        assert_eq!(theirs["data"].as_array().unwrap().len(), 4);
    }

    async fn a_conversion_is_posted_once_to_each_endpoint_through_three_failures(m: Money) {
        let (app, receiver) = (&m.app, &m.receiver);
        receiver.behave("/buyer", Behaviour { fail_first: 3, ..Behaviour::default() });
        connected_call(app, 1, CALLER, 120).await;
        let received = receiver.wait_until("the buyer's conversion and the publisher's three events delivered", |all| {
            let acknowledged = |path: &str| all.iter().filter(|r| r.path == path && r.acknowledged).count();
            acknowledged("/buyer") == 1 && acknowledged("/publisher") == 3
        }).await;
        // Exactly once, for good: nothing more past the retries and a lease.
        let received = receiver.unchanged_for_good(&received).await;

        let buyer: Vec<&Received> = received.iter().filter(|r| r.path == "/buyer").collect();
        assert_eq!(buyer.len(), 4, "three failures, then delivered: {buyer:#?}");
        assert!(buyer.iter().all(|r| r.key == buyer[0].key && r.event == "call.converted"), "one postback, tried four times, under one key");
        assert!(buyer.iter().all(|r| checks_out(r, BUYER_SECRET)), "signed with the buyer's secret");
        let body = buyer[3].json();
        assert_eq!((body["event"].as_str(), body["call_sid"].as_str()), (Some("call.converted"), Some(sid(1).as_str())));
        assert_eq!((body["revenue"].as_f64(), body["converted"].as_bool(), body["attempt"].as_u64()), (Some(20.0), Some(true), Some(1)));
        assert!(
            ["payout", "publisher_id", "tracking_number"].iter().all(|field| body.get(*field).is_none()),
            "a buyer never sees the publisher's side, nor the number that would name it: {body}"
        );
        assert_eq!(body["campaign_id"], app.id_of("/campaigns", "Main").await.as_str());

        let publisher: Vec<&Received> = received.iter().filter(|r| r.path == "/publisher").collect();
        // Delivered side by side: in any order.
        let mut events: Vec<&str> = publisher.iter().map(|r| r.event.as_str()).collect();
        events.sort_unstable();
        assert_eq!(events, ["call.connected", "call.converted", "call.ended"]);
        assert!(publisher.iter().all(|r| checks_out(r, PUBLISHER_SECRET)));
        let ended = publisher.iter().find(|r| r.event == "call.ended").unwrap().json();
        assert_eq!((ended["payout"].as_f64(), ended["outcome"].as_str()), (Some(12.0), Some("connected")), "{ended}");
        assert!(ended.get("revenue").is_none() && ended.get("buyer_id").is_none(), "a publisher never sees the buyer's side: {ended}");
        assert_eq!(ended["tracking_number"], MAIN);

        // The outbox agrees (once the tries are recorded, just after the receiver took them),
        // and saving the call again queued nothing twice.
        let outbox = outbox_once(app, |rows| rows.iter().all(|r| r["status"] == "delivered")).await;
        let rows = outbox["data"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{outbox}");
        let to_buyer = rows.iter().find(|r| r["url"] == receiver.url("/buyer").as_str()).unwrap();
        assert_eq!((to_buyer["attempts"].as_u64(), to_buyer["id"].as_str()), (Some(4), Some(buyer[0].key.as_str())));
        assert_eq!(to_buyer["last_status_code"], 200);
    }

    async fn a_postback_out_of_tries_is_failed_listed_and_sent_again_on_request(m: Money) {
        let (app, receiver) = (&m.app, &m.receiver);
        receiver.behave("/buyer", Behaviour { fail_first: 1000, ..Behaviour::default() });
        connected_call(app, 1, CALLER, 120).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let failed = loop {
            let failed = expect_json(app.read("/postbacks?status=failed").await, StatusCode::OK).await;
            if !failed["data"].as_array().unwrap().is_empty() {
                break failed;
            }
            assert!(Instant::now() < deadline, "the buyer's postback never failed for good");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        };
        let row = &failed["data"][0];
        // Worth an alert: the metrics count it (every 2 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = app.client.get(app.url("/metrics")).bearer_auth(crate::helpers::SUPERVISOR_TOKEN).send().await.unwrap().text().await.unwrap();
            if metrics.contains("switchboard_postback_outbox{status=\"failed\"} 1") {
                assert!(metrics.contains("switchboard_postback_tries_total{result=\"failed\"} 1"), "{metrics}");
                break;
            }
            assert!(Instant::now() < deadline, "{metrics}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!((row["event"].as_str(), row["attempts"].as_u64(), row["last_status_code"].as_u64()), (Some("call.converted"), Some(5), Some(500)), "{failed}");
        assert!(row["last_error"].as_str().unwrap().contains("500"), "{row}");
        let id = row["id"].as_str().unwrap().to_owned();
        assert_eq!(receiver.at("/buyer").len(), 5, "no try after the last");

        let by_supervisor = app.client.post(app.url(&format!("/api/v1/postbacks/{id}/retry")))
            .bearer_auth(crate::helpers::SUPERVISOR_TOKEN).send().await.unwrap();
        assert_eq!(by_supervisor.status(), StatusCode::FORBIDDEN);
        let nothing = app.post("/postbacks/0190c1a2-0000-7000-8000-000000000000/retry", Value::Null).await;
        assert_eq!(nothing.status(), StatusCode::NOT_FOUND);

        // The operator points the buyer's endpoint at a working URL (the endpoint as read, its
        // id kept), then sends the postback again: it goes to the endpoint as it is now, same
        // postback, same key.
        let acme = app.id_of("/buyers", "Acme Auto").await;
        let mut endpoint = expect_json(app.get(&format!("/buyers/{acme}")).await, StatusCode::OK).await["postbacks"][0].clone();
        endpoint["url"] = receiver.url("/fixed").into();
        expect_json(app.patch(&format!("/buyers/{acme}"), serde_json::json!({"postbacks": [endpoint]})).await, StatusCode::OK).await;
        let queued = expect_json(app.post(&format!("/postbacks/{id}/retry"), Value::Null).await, StatusCode::OK).await;
        assert_eq!((queued["status"].as_str(), queued["attempts"].as_u64()), (Some("pending"), Some(0)));
        let received = receiver.wait_until("the retried postback delivered", |all| all.iter().any(|r| r.path == "/fixed" && r.acknowledged)).await;
        assert!(received.iter().filter(|r| r.path == "/fixed").all(|r| r.key == id), "the same postback, the same key");
        assert_eq!(receiver.at("/buyer").len(), 5, "nothing more to the broken URL");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = expect_json(app.read(&format!("/postbacks/{id}")).await, StatusCode::OK).await;
            if now["status"] == "delivered" {
                assert_eq!(now["url"], receiver.url("/fixed").as_str(), "where it went");
                break;
            }
            assert!(Instant::now() < deadline, "{now}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        expect_json(app.read("/postbacks?status=bogus").await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    async fn a_receiver_that_hangs_never_slows_a_webhook(m: Money) {
        let (app, receiver) = (&m.app, &m.receiver);
        receiver.behave("/buyer", Behaviour { hang: true, ..Behaviour::default() });
        receiver.behave("/publisher", Behaviour { hang: true, ..Behaviour::default() });
        let mut slowest = Duration::ZERO;
        for n in 1..=12 {
            let call = sid(n);
            let caller = format!("+1415555{:04}", 2000 + n);
            let started = Instant::now();
            let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, &caller, MAIN)).await).await;
            slowest = slowest.max(started.elapsed());
            let started = Instant::now();
            assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 120)).await.status(), StatusCode::OK);
            slowest = slowest.max(started.elapsed());
            let started = Instant::now();
            assert_eq!(app.webhook(&app.url("/voice/status"), &call_over(&call)).await.status(), StatusCode::NO_CONTENT);
            slowest = slowest.max(started.elapsed());
            if n == 1 {
                // The first call's postbacks are in the receiver's hands, unanswered, before the
                // next call starts: every webhook after this one runs beside hung deliveries.
                receiver.wait_until("a postback in flight", |all| !all.is_empty()).await;
            }
        }
        // The bound is the webhook's own: far below the receiver's silence (two minutes) and
        // the postback timeout (two seconds).
        assert!(slowest < Duration::from_millis(1000), "a webhook took {slowest:?} beside a hung receiver");
        let pending = expect_json(app.read("/postbacks?status=pending&limit=100").await, StatusCode::OK).await;
        assert!(!pending["data"].as_array().unwrap().is_empty(), "nothing was delivered to a receiver that never answers");
    }

    async fn the_exports_hold_every_call_and_ping_the_filters_select(m: Money) {
        let app = &m.app;
        // More than a page of calls, so the export must stream several.
        for n in 1..=1005 {
            let call = sid(n);
            let caller = format!("+1415556{:04}", n);
            let answered = app.webhook(&app.url("/voice/incoming"), &incoming(&call, &caller, MAIN)).await;
            assert_eq!(answered.status(), StatusCode::OK);
        }
        let export = app.read("/calls.csv").await;
        assert_eq!(export.status(), StatusCode::OK);
        assert_eq!(export.headers()["content-type"], "text/csv; charset=utf-8");
        assert!(export.headers()["content-disposition"].to_str().unwrap().contains("calls.csv"));
        let text = export.text().await.unwrap();
        let mut lines = csv::Reader::from_reader(text.as_bytes());
        let header = lines.headers().unwrap().clone();
        assert_eq!(&header[0], "call_sid");
        let column = |name: &str| header.iter().position(|h| h == name).unwrap();
        let rows: Vec<csv::StringRecord> = lines.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1005, "every call, across pages");
        let sids: std::collections::HashSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
        assert_eq!(sids.len(), 1005, "none twice");
        assert!(rows.iter().all(|r| &r[column("state")] == "dialing" && !r[column("publisher_id")].is_empty()));
        assert_eq!(&rows[0][0], sid(1005), "newest first");

        let one = app.read("/calls.csv?caller=%2B14155560007&state=dialing").await.text().await.unwrap();
        assert_eq!(one.lines().count(), 2, "the header and the one call: {one}");
        assert!(one.contains(&sid(7)));
        expect_json(app.read("/calls.csv?limit=5").await, StatusCode::UNPROCESSABLE_ENTITY).await;
        expect_json(app.read("/calls.csv?state=bogus").await, StatusCode::UNPROCESSABLE_ENTITY).await;

        let pings = app.read("/rtb.csv").await.text().await.unwrap();
        assert!(pings.starts_with("id,received_at,campaign_id,publisher_id"), "{pings}");
        assert_eq!(pings.lines().count(), 1, "no pings yet: the header alone");
        let main = app.id_of("/campaigns", "Main").await;
        let key = expect_json(app.put(&format!("/campaigns/{main}/rtb_key"), serde_json::json!({})).await, StatusCode::OK).await;
        let ping = serde_json::json!({"key": key["key"], "caller_number": "+14155559999", "publisher_id": "nobody"});
        app.client.post(app.url("/rtbs.json")).json(&ping).send().await.unwrap();
        let pings = app.read("/rtb.csv").await.text().await.unwrap();
        let mut lines = csv::Reader::from_reader(pings.as_bytes());
        let header = lines.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = lines.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1, "{pings}");
        let column = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!((&rows[0][column("status")], &rows[0][column("campaign_id")]), ("rejected", main.as_str()), "{pings}");
        assert!(rows[0][column("request")].contains("nobody"), "{pings}");
    }
}

/// `kill -9` of the process holding a postback in flight: another process on the same database
/// delivers it once the dead one's lease runs out, under the same key.
async fn survives_a_kill_9_between_save_and_delivery(engine: Engine) {
    use crate::cli::Server;

    let Some(db) = TestDb::create(engine).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let store = switchboard::store::SqlStore::connect_and_migrate(&db.url)
        .await
        .unwrap();
    switchboard::store::PlanStore::import_plan(&store, &plan_with(&receiver))
        .await
        .unwrap();
    store.close().await;
    receiver.behave(
        "/buyer",
        Behaviour {
            hang: true,
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("DATABASE_URL", db.url.as_str()),
        ("TWILIO_AUTH_TOKEN", crate::helpers::AUTH_TOKEN),
        // The try in flight outlasts the process; its lease runs out 2 × 1 s + 5 s after.
        ("POSTBACK_TIMEOUT_MS", "1000"),
        ("POSTBACK_RETRY_BASE_MS", "50"),
    ];
    let mut first = Server::start_with(dir.path(), &["serve"], &settings);
    let address = first.address();
    let provider = TestApp::signing_client();
    let call = sid(1);
    let (_, action) = dialed(
        provider
            .webhook(
                &format!("{address}/voice/incoming"),
                &incoming(&call, CALLER, MAIN),
            )
            .await,
    )
    .await;
    assert_eq!(
        provider
            .webhook(&action, &dial_ended(&call, "completed", 120))
            .await
            .status(),
        StatusCode::OK
    );
    receiver
        .wait_until("the conversion's postback in flight", |all| {
            all.iter().any(|r| r.path == "/buyer")
        })
        .await;
    first.child.kill().unwrap(); // SIGKILL: the try never ends, the outbox never hears of it
    first.child.wait().unwrap();
    receiver.behave("/buyer", Behaviour::default());

    let _second = Server::start_with(dir.path(), &["serve"], &settings);
    let received = receiver
        .wait_until("the postback delivered by the second process", |all| {
            all.iter().any(|r| r.path == "/buyer" && r.acknowledged)
        })
        .await;
    let buyer: Vec<&Received> = received.iter().filter(|r| r.path == "/buyer").collect();
    assert!(
        buyer.iter().all(|r| r.key == buyer[0].key),
        "one postback, one key: {buyer:#?}"
    );
    assert_eq!(
        buyer.iter().filter(|r| r.acknowledged).count(),
        1,
        "delivered once"
    );
    assert!(checks_out(buyer[buyer.len() - 1], BUYER_SECRET));
}

#[actix_web::test]
async fn a_postback_survives_kill_9_on_sqlite() {
    survives_a_kill_9_between_save_and_delivery(Engine::Sqlite).await;
}

#[actix_web::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant"
)]
async fn a_postback_survives_kill_9_on_postgres() {
    survives_a_kill_9_between_save_and_delivery(Engine::Postgres).await;
}

on_both_engines! {
    async fn publisher_terms_numbers_and_endpoints_are_checked_when_given(m: Money) {
        let app = &m.app;
        let company = app.id_of("/companies", "Acme Leads").await;
        let publisher = |extra: Value| {
            let mut body = serde_json::json!({"company_id": company, "name": "Social"});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        let taken = publisher(serde_json::json!({"numbers": ["+1 800 555 0100"]}));
        let message = expect_error(app.post("/publishers", taken).await, StatusCode::CONFLICT, "conflict", Some("numbers")).await;
        assert!(message.contains("already given to publisher \"Search\""), "{message}");
        let no_seconds = publisher(serde_json::json!({"payout": {"rule": "per_connected_seconds", "amount": 5}}));
        let message = expect_error(app.post("/publishers", no_seconds).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("payout")).await;
        assert!(message.contains("needs `seconds`"), "{message}");
        let bad_url = publisher(serde_json::json!({"postbacks": [{"url": "ftp://x.example/", "secret": "0123456789abcdef"}]}));
        expect_error(app.post("/publishers", bad_url).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks[0].url")).await;
        let bad_event = publisher(serde_json::json!({"postbacks": [{"url": "https://x.example/", "secret": "0123456789abcdef", "events": ["call.answered"]}]}));
        expect_error(app.post("/publishers", bad_event).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("postbacks[0].events[0]")).await;

        let good = publisher(serde_json::json!({
            "numbers": ["+1 877 555 0100"],
            "payout": {"rule": "per_call", "amount": 2.5, "dedupe_seconds": 3600},
        }));
        let created = expect_json(app.post("/publishers", good).await, StatusCode::CREATED).await;
        assert_eq!(created["numbers"], serde_json::json!(["+18775550100"]));
        assert_eq!(created["payout"], serde_json::json!({"rule": "per_call", "amount": 2.5, "dedupe_seconds": 3600}));
        assert_eq!(created["postbacks"], serde_json::json!([]));

        // A postback secret is the admin's to read; a supervisor sees that there is one.
        let search = app.id_of("/publishers", "Search").await;
        let as_admin = expect_json(app.get(&format!("/publishers/{search}")).await, StatusCode::OK).await;
        assert_eq!(as_admin["postbacks"][0]["secret"], PUBLISHER_SECRET);
        let as_supervisor = expect_json(app.read(&format!("/publishers/{search}")).await, StatusCode::OK).await;
        assert_eq!(as_supervisor["postbacks"][0]["secret"], "********");
        assert_eq!(as_supervisor["postbacks"][0]["url"], as_admin["postbacks"][0]["url"]);
    }
}

on_both_engines! {
    async fn a_call_claiming_a_bid_is_the_pinging_publishers(m: Money) {
        let app = &m.app;
        let main = app.id_of("/campaigns", "Main").await;
        let company = app.id_of("/companies", "Acme Leads").await;
        // Main's only number is Search's: Pinger is given one of its own there.
        let pingers = "+18005550109";
        let pinger = app.create("/publishers", serde_json::json!({"company_id": company, "name": "Pinger", "external_id": "pub-9", "numbers": [pingers]})).await;
        expect_json(app.patch(&format!("/campaigns/{main}"), serde_json::json!({"numbers": [MAIN, pingers]})).await, StatusCode::OK).await;
        let key = expect_json(app.put(&format!("/campaigns/{main}/rtb_key"), serde_json::json!({})).await, StatusCode::OK).await;
        let ping = serde_json::json!({"key": key["key"], "publisher_id": "pub-9", "caller_number": CALLER});
        let bid = expect_json(app.client.post(app.url("/rtbs.json")).json(&ping).send().await.unwrap(), StatusCode::OK).await;
        assert_eq!(bid["status"], "reserved", "{bid}");
        assert_eq!(bid["payout"].as_f64(), Some(10.0), "Acme Auto's bid: {bid}");
        assert_eq!(bid["inbound_number"], pingers, "{bid}");
        // The call to the bid's number claims Pinger's bid: it is Pinger's call. Acme Auto does
        // not answer and Budget Cover (payout 8) converts it: Pinger earns what the bid promised.
        let call = sid(1);
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, pingers)).await).await;
        let (budget, action) = dialed(app.webhook(&action, &dial_ended(&call, "no-answer", 0)).await).await;
        assert_eq!(budget, "+14155550102");
        assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 120)).await.status(), StatusCode::OK);
        let call = call_json(app, 1).await;
        assert_eq!(call["publisher_id"], pinger.as_str(), "{call}");
        assert_eq!(call["publisher_payout"].as_f64(), Some(10.0), "the bid's promise, not the converting buyer's payout: {call}");
        // Another caller, no bid: the number's publisher, on its own terms.
        connected_call(app, 2, OTHER_CALLER, 120).await;
        let search = app.id_of("/publishers", "Search").await;
        let call = call_json(app, 2).await;
        assert_eq!((call["publisher_id"].as_str(), call["publisher_payout"].as_f64()), (Some(search.as_str()), Some(12.0)));
    }
}

/// Two nodes on one PostgreSQL deliver one outbox: every postback once, none twice at once, the
/// receiver taking its time so that both nodes' workers are at it together.
#[actix_web::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant"
)]
async fn two_nodes_never_deliver_one_postback_twice() {
    let receiver = Receiver::start().await;
    let Some(first) =
        TestApp::start_with_plan_and(Engine::Postgres, &plan_with(&receiver), &QUICK_RETRIES).await
    else {
        return;
    };
    // The second node's machine clock runs ten minutes ahead: every lease the first node takes
    // would look long run out to it, were its leases not timed by the database's clock.
    let ahead = switchboard::startup::Runtime {
        clock: std::sync::Arc::new(crate::helpers::SkewedClock(jiff::SignedDuration::from_mins(10))),
        ..crate::helpers::test_runtime()
    };
    let second = first.another_node_with(ahead).await;
    for path in ["/buyer", "/publisher"] {
        receiver.behave(
            path,
            Behaviour {
                delay: Duration::from_millis(20),
                ..Behaviour::default()
            },
        );
    }
    let provider = TestApp::signing_client();
    const CALLS: u32 = 30;
    for n in 1..=CALLS {
        let node = if n % 2 == 0 { second.clone() } else { first.url("") };
        let call = sid(n);
        let caller = format!("+1415557{n:04}");
        let (_, action) = dialed(
            provider
                .webhook(&format!("{node}/voice/incoming"), &incoming(&call, &caller, MAIN))
                .await,
        )
        .await;
        assert_eq!(
            provider
                .webhook(&action, &dial_ended(&call, "completed", 120))
                .await
                .status(),
            StatusCode::OK
        );
    }
    // Each call: its conversion to the buyer; connected, converted and ended to the publisher.
    let expected = 4 * CALLS as usize;
    let received = receiver
        .wait_until("every postback delivered", |all| {
            all.iter().filter(|r| r.acknowledged).count() >= expected
        })
        .await;
    // And nothing more, past the retries and a lease.
    let received = receiver.unchanged_for_good(&received).await;
    let keys: std::collections::HashSet<&str> = received.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        (keys.len(), received.len()),
        (expected, expected),
        "each postback sent once"
    );
}

on_both_engines! {
    async fn a_receiver_that_hangs_holds_few_slots_and_other_postbacks_go_on(m: HungBuyer) {
        let (app, receiver) = (&m.0.app, &m.0.receiver);
        // More conversions than a node has slots: each a postback to the hung buyer endpoint,
        // and three to the publisher's, which answers at once.
        const CALLS: u32 = 70;
        for n in 1..=CALLS {
            let call = sid(n);
            let caller = format!("+1415558{n:04}");
            let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, &caller, MAIN)).await).await;
            assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 120)).await.status(), StatusCode::OK);
        }
        let done = Instant::now();
        receiver.wait_until("every publisher postback delivered", |all| {
            all.iter().filter(|r| r.path == "/publisher" && r.acknowledged).count() == 3 * CALLS as usize
        }).await;
        // Well within one try's timeout (5 s): no publisher postback waited on a hung slot.
        assert!(done.elapsed() < Duration::from_secs(4), "the publisher's postbacks took {:?}", done.elapsed());
        let at_once = receiver.log.lock().unwrap().most_hanging;
        assert!((1..=8).contains(&at_once), "at most 8 tries at once to one endpoint, {at_once} seen");
    }
}

on_both_engines! {
    async fn receivers_hanging_on_most_slots_leave_the_last_ones_to_others(m: HungBuyerEndpoints) {
        let (app, receiver) = (&m.0.app, &m.0.receiver);
        // Eight conversions: eight tries hanging at each of the buyer's seven endpoints, 56 of
        // the node's 64 slots, taken as the slots left shrink below a lease's usual size.
        let started = Instant::now();
        for n in 1..=8 {
            let call = sid(n);
            let caller = format!("+1415558{n:04}");
            let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, &caller, MAIN)).await).await;
            assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 120)).await.status(), StatusCode::OK);
        }
        receiver.wait_until("56 tries hanging", |_| receiver.log.lock().unwrap().hanging == 56).await;
        assert!(started.elapsed() < Duration::from_secs(5), "the last tries waited {:?} for slots", started.elapsed());
        let publishers = receiver.at("/publisher").len();
        // One more call: the publisher's postbacks go out in the slots left, not after the hung
        // tries give up (10 s).
        let (call, caller) = (sid(9), "+14155580009");
        let (_, action) = dialed(app.webhook(&app.url("/voice/incoming"), &incoming(&call, caller, MAIN)).await).await;
        let ended = Instant::now();
        assert_eq!(app.webhook(&action, &dial_ended(&call, "completed", 120)).await.status(), StatusCode::OK);
        receiver.wait_until("the last call's publisher postbacks delivered", |all| {
            all.iter().filter(|r| r.path == "/publisher" && r.acknowledged).count() >= publishers + 3
        }).await;
        assert!(ended.elapsed() < Duration::from_secs(5), "the publisher's postbacks took {:?}", ended.elapsed());
    }
}

/// The money plan, the buyer's seven endpoints hanging, each try given 10 s.
struct HungBuyerEndpoints(Money);

impl HungBuyerEndpoints {
    async fn start(engine: Engine) -> Option<Self> {
        let receiver = Receiver::start().await;
        let paths: Vec<String> = (1..=7).map(|n| format!("/buyer/{n}")).collect();
        for path in &paths {
            receiver.behave(
                path,
                Behaviour {
                    hang: true,
                    ..Behaviour::default()
                },
            );
        }
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let settings = [("POSTBACK_TIMEOUT_MS", "10000"), ("POSTBACK_RETRY_BASE_MS", "50")];
        let app =
            TestApp::start_with_plan_and(engine, &plan_with_buyer_endpoints(&receiver, &paths), &settings)
                .await?;
        Some(Self(Money { app, receiver }))
    }
}

/// The money plan, its buyer endpoint hanging, each try given 5 s.
struct HungBuyer(Money);

impl HungBuyer {
    async fn start(engine: Engine) -> Option<Self> {
        let receiver = Receiver::start().await;
        receiver.behave(
            "/buyer",
            Behaviour {
                hang: true,
                ..Behaviour::default()
            },
        );
        let settings = [("POSTBACK_TIMEOUT_MS", "5000"), ("POSTBACK_RETRY_BASE_MS", "50")];
        let app = TestApp::start_with_plan_and(engine, &plan_with(&receiver), &settings).await?;
        Some(Self(Money { app, receiver }))
    }
}
