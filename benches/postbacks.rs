//! Postbacks: `cargo bench --bench postbacks`. The real server (SQLite, the demo plan, signed
//! webhooks) and a receiver that answers 200 at once both run on loopback.
//!
//! - Delivery: `QUEUED` postbacks put in the outbox at once; the postbacks delivered per second
//!   (leased, signed, POSTed, recorded), from the first the receiver takes to the last.
//! - Webhooks beside deliveries: the same calls (arrival, a dial's end, the call's end: three
//!   webhooks each) paced at `CALLS_PER_SECOND`, against the demo plan with a publisher given
//!   the number called (postbacks off), then with postbacks on every buyer and publisher too:
//!   each webhook's p50 and p99.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use sqlx::{Connection, Executor};
use switchboard::{
    domain::signature::{self, Algorithm},
    plan::DEMO_PLAN,
    simulate::percentile,
};

const AUTH_TOKEN: &str = "postback-bench-auth-token-01234";
const QUEUED: u64 = 5000;
const CALLS_PER_SECOND: f64 = 60.0;
const PHASE: Duration = Duration::from_secs(5);

/// What the receiver took: how many, the first and the last.
#[derive(Default)]
struct Taken {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Taken {
    fn take(&self) {
        let now = Instant::now();
        self.first.lock().expect("first").get_or_insert(now);
        *self.last.lock().expect("last") = Some(now);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The receiver, on its own thread: its URL.
fn start_receiver(taken: Arc<Taken>) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let taken = web::Data::from(taken);
            let server = HttpServer::new(move || {
                App::new().app_data(taken.clone()).default_service(web::to(
                    |taken: web::Data<Taken>, _: web::Bytes| async move {
                        taken.take();
                        HttpResponse::Ok().finish()
                    },
                ))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .expect("the receiver binds");
            sender.send(server.addrs()[0]).expect("the bench is waiting");
            server.run().await.expect("the receiver runs");
        });
    });
    format!(
        "http://{}/postbacks",
        receiver.recv().expect("the receiver started")
    )
}

/// The demo plan with the first tracking number given to a publisher (so that its calls are
/// settled for it, with or without postbacks), and with postbacks to `url`, if given, on every
/// buyer and publisher.
fn plan_with_postbacks(url: Option<&str>) -> String {
    let postbacks = url
        .map(|url| format!("postbacks = [{{ url = \"{url}\", secret = \"bench-secret-0123456789\" }}]\n"))
        .unwrap_or_default();
    DEMO_PLAN
        .replace(
            "[[companies.buyers]]\n",
            &format!("[[companies.buyers]]\n{postbacks}"),
        )
        .replace(
            "name = \"Social Leads\"\n",
            &format!("name = \"Social Leads\"\nnumbers = [\"+1 800 555 0100\"]\n{postbacks}"),
        )
}

fn signed(base: &str, path: &str, params: &[(&str, String)]) -> reqwest::RequestBuilder {
    let url = format!("{base}{path}");
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let signature = signature::sign(AUTH_TOKEN, &url, &params, Algorithm::HmacSha1);
    CLIENT.with(|client| {
        client
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
    })
}

thread_local! {
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

/// One call, start to end: the latency of each of its three webhooks.
async fn one_call(base: String, n: u64) -> Vec<Duration> {
    let sid = format!("CA{n:032x}");
    let caller = format!("+1415{:07}", 2_000_000 + n);
    let mut took = Vec::with_capacity(3);
    let started = Instant::now();
    let arrival = [
        ("CallSid", sid.clone()),
        ("CallStatus", "ringing".to_owned()),
        ("From", caller.clone()),
        ("To", "+18005550100".to_owned()),
    ];
    let twiml = signed(&base, "/voice/incoming", &arrival)
        .send()
        .await
        .expect("the arrival answered")
        .text()
        .await
        .expect("TwiML");
    took.push(started.elapsed());
    let Some(action) = (twiml.split("action=\"").nth(1)).and_then(|rest| rest.split('"').next()) else {
        return took;
    };
    let path = action
        .split_once("/voice/")
        .map(|(_, p)| format!("/voice/{p}"))
        .expect("a voice URL");
    let ended = [
        ("CallSid", sid.clone()),
        ("CallStatus", "in-progress".to_owned()),
        ("DialCallStatus", "completed".to_owned()),
        ("DialCallDuration", "200".to_owned()),
        ("From", caller),
        ("To", "+18005550100".to_owned()),
    ];
    let started = Instant::now();
    let answered = signed(&base, &path, &ended)
        .send()
        .await
        .expect("the dial's end answered");
    assert!(answered.status().is_success());
    took.push(started.elapsed());
    let over = [("CallSid", sid), ("CallStatus", "completed".to_owned())];
    let started = Instant::now();
    let answered = signed(&base, "/voice/status", &over)
        .send()
        .await
        .expect("the end answered");
    assert!(answered.status().is_success());
    took.push(started.elapsed());
    took
}

/// Calls started at `CALLS_PER_SECOND` for `PHASE`: every webhook's latency, sorted.
async fn paced_calls(base: &str, first: u64) -> Vec<Duration> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / CALLS_PER_SECOND));
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut n = first;
    while started.elapsed() < PHASE {
        ticks.tick().await;
        calls.push(tokio::spawn(one_call(base.to_owned(), n)));
        n += 1;
    }
    let mut latencies = Vec::new();
    for call in calls {
        latencies.extend(call.await.expect("a call"));
    }
    latencies.sort_unstable();
    latencies
}

fn ms(latencies: &[Duration], q: f64) -> f64 {
    percentile(latencies, q).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Queues `QUEUED` postbacks in the outbox of the database at `file`, all due now, for the
/// endpoint of the publisher Social Leads (whose URL is the receiver's).
async fn fill_outbox(file: &std::path::Path) {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("the database");
    let (publisher, endpoints): (String, String) =
        sqlx::query_as("SELECT id, postbacks FROM publishers WHERE name = 'Social Leads'")
            .fetch_one(&mut db)
            .await
            .expect("the publisher");
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).expect("its endpoints");
    let (endpoint, url) = (&endpoints[0]["id"], &endpoints[0]["url"]);
    let (endpoint, url) = (endpoint.as_str().expect("an id"), url.as_str().expect("a URL"));
    let now = jiff::Timestamp::now().as_millisecond();
    let mut tx = db.begin().await.expect("a transaction");
    for n in 0..QUEUED {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO postbacks (id, event_key, endpoint, owner_kind, owner_id, endpoint_id, event, call_sid,
                url, body, status, attempts, next_attempt_at_ms, created_at_ms)
             VALUES ($1, $2, $3, 'publisher', $4, $5, 'call.converted', $6, $7,
                '{\"event\":\"call.converted\"}', 'pending', 0, $8, $8)",
        )
        .bind(&id)
        .bind(format!("CA{n:032x}:call.converted:1"))
        .bind(format!("publisher:{publisher}:{endpoint}"))
        .bind(&publisher)
        .bind(endpoint)
        .bind(format!("CA{n:032x}"))
        .bind(url)
        .bind(now)
        .execute(&mut *tx)
        .await
        .expect("a postback queued");
    }
    tx.commit().await.expect("queued");
    db.execute("SELECT 1").await.expect("the database answers");
}

fn main() {
    let taken = Arc::new(Taken::default());
    let url = start_receiver(taken.clone());
    let settings = [("TWILIO_AUTH_TOKEN", AUTH_TOKEN)];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a client runtime");

    // Delivery on its own: a full outbox drained.
    let (_, file, _dir) = common::start_server_with_plan(plan_with_postbacks(Some(&url)), &settings);
    runtime.block_on(fill_outbox(&file));
    let deadline = Instant::now() + Duration::from_secs(300);
    while taken.count.load(Ordering::Relaxed) < QUEUED {
        assert!(Instant::now() < deadline, "the outbox was not drained");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = taken.first.lock().expect("first").expect("something was taken");
    let last = taken.last.lock().expect("last").expect("something was taken");
    let delivered_per_second = (QUEUED - 1) as f64 / (last - first).as_secs_f64();

    // Webhooks beside deliveries, off then on.
    let (off, _, _dir_off) = common::start_server_with_plan(plan_with_postbacks(None), &settings);
    let (on, _, _dir_on) = common::start_server_with_plan(plan_with_postbacks(Some(&url)), &settings);
    let before = taken.count.load(Ordering::Relaxed);
    let (off, on) = runtime.block_on(async {
        let off = paced_calls(&format!("http://{off}"), 0).await;
        let on = paced_calls(&format!("http://{on}"), 1_000_000).await;
        (off, on)
    });
    std::thread::sleep(Duration::from_secs(2));
    let sent = taken.count.load(Ordering::Relaxed) - before;

    println!("\npostbacks: SQLite, a loopback receiver answering 200 at once");
    println!("delivered: {QUEUED} queued at once, {delivered_per_second:.0} postbacks/s");
    let heading = format!("webhooks, {CALLS_PER_SECOND} calls/s");
    println!("{heading:<34} {:>9} {:>8} {:>8}", "webhooks", "p50 ms", "p99 ms");
    for (name, latencies) in [("postbacks off", &off), ("postbacks on", &on)] {
        println!(
            "{name:<34} {:>9} {:>8.2} {:>8.2}",
            latencies.len(),
            ms(latencies, 0.5),
            ms(latencies, 0.99)
        );
    }
    println!("postbacks sent during the 'on' phase and just after: {sent}");
}
