//! Throughput under load, against the server's own floor in the same run: `cargo bench --bench
//! load`. The real server (SQLite, the demo plan, webhooks signed and checked) runs on its own
//! thread; a client keeps `IN_FLIGHT` requests going for `PHASE` at each of:
//!
//! - the floor, `POST /voice/floor` (`BENCH_FLOOR=on`): a webhook read, its signature checked,
//!   fixed TwiML answered, no routing and no store;
//! - incoming calls, each new (a new caller, a new call: routed, recorded, answered);
//! - RTB pings, each for a new caller (a bid and a reservation);
//! - then incoming calls again, paced at half the rate measured, for their latency.
//!
//! It prints the rates, their ratios to the floor and the latency percentiles, with the targets.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::{Connection, Executor, Row};
use switchboard::{
    domain::signature::{self, Algorithm},
    simulate::percentile,
};

const IN_FLIGHT: usize = 32;
const PHASE: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
const AUTH_TOKEN: &str = "load-bench-auth-token-0123456789";
const KEY: &str = "demo-rtb-key-auto-insurance-0001";

/// Every request made so far gets a number of its own: call sids and callers never repeat.
static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum Kind {
    Floor,
    Incoming,
    Ping,
}

struct Client {
    http: reqwest::Client,
    base: String,
    /// Calls started and not ended yet.
    live: std::sync::Mutex<Vec<String>>,
}

impl Client {
    /// One request of `kind`, as new as can be; whether it got a 200.
    async fn send(&self, kind: Kind) -> bool {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Valid numbers (RTB pings check them against the numbering plan), all different.
        let caller = format!(
            "+1{}{:07}",
            [415, 212, 305, 702][(n % 4) as usize],
            2_000_000 + n / 4 % 7_000_000
        );
        let request = match kind {
            Kind::Floor | Kind::Incoming => {
                let path = if matches!(kind, Kind::Floor) {
                    "/voice/floor"
                } else {
                    "/voice/incoming"
                };
                let url = format!("{}{path}", self.base);
                let sid = format!("CA{n:032x}");
                if matches!(kind, Kind::Incoming) {
                    self.live.lock().expect("the live calls").push(sid.clone());
                }
                let params: Vec<(String, String)> = [
                    ("AccountSid", "AC00000000000000000000000000000000".to_owned()),
                    ("CallSid", sid),
                    ("CallStatus", "ringing".to_owned()),
                    ("Direction", "inbound".to_owned()),
                    ("From", caller),
                    ("To", "+18005550100".to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                let signed = signature::sign(AUTH_TOKEN, &url, &params, Algorithm::HmacSha1);
                self.http
                    .post(url)
                    .header("X-Twilio-Signature", signed)
                    .form(&params)
            }
            Kind::Ping => (self.http.post(format!("{}/rtbs.json", self.base)))
                .json(&json!({"key": KEY, "publisher_id": "pub-001", "caller_number": caller})),
        };
        match request.send().await {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        }
    }
}

impl Client {
    /// Ends every call started so far, as the provider's final status callbacks would, so
    /// that the next phase starts without them.
    async fn end_calls(self: &Arc<Self>) {
        let sids = std::mem::take(&mut *self.live.lock().expect("the live calls"));
        let url = format!("{}/voice/status", self.base);
        let chunks: Vec<Vec<String>> = sids
            .chunks(sids.len().div_ceil(IN_FLIGHT).max(1))
            .map(<[String]>::to_vec)
            .collect();
        let workers: Vec<_> = (chunks.into_iter())
            .map(|chunk| {
                let (client, url) = (self.clone(), url.clone());
                tokio::spawn(async move {
                    for sid in chunk {
                        let params: Vec<(String, String)> =
                            [("CallSid", sid.as_str()), ("CallStatus", "completed")]
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .collect();
                        let signed = signature::sign(AUTH_TOKEN, &url, &params, Algorithm::HmacSha1);
                        let sent = client
                            .http
                            .post(&url)
                            .header("X-Twilio-Signature", signed)
                            .form(&params)
                            .send()
                            .await;
                        assert!(sent.is_ok_and(|r| r.status().is_success()), "a call ended");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("an ending worker");
        }
    }
}

/// What one phase measured.
struct Measured {
    answered: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

/// `IN_FLIGHT` requests of `kind` at all times, for `length`.
async fn closed_loop(client: &Arc<Client>, kind: Kind, length: Duration) -> Measured {
    let started = Instant::now();
    let until = started + length;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut answered, mut failed, mut latencies) = (0, 0, Vec::new());
                while Instant::now() < until {
                    let sent = Instant::now();
                    if client.send(kind).await {
                        answered += 1;
                        latencies.push(sent.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (answered, failed, latencies)
            })
        })
        .collect();
    let mut measured = Measured {
        answered: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for worker in workers {
        let (answered, failed, mut latencies) = worker.await.expect("a load worker");
        measured.answered += answered;
        measured.failed += failed;
        measured.latencies.append(&mut latencies);
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// Requests of `kind` started at `rate` a second, whatever the answers, for `length`.
async fn paced(client: &Arc<Client>, kind: Kind, rate: f64, length: Duration) -> Measured {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    while started.elapsed() < length {
        ticks.tick().await;
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            client.send(kind).await.then(|| sent.elapsed())
        }));
    }
    let mut measured = Measured {
        answered: 0,
        failed: 0,
        elapsed: started.elapsed(),
        latencies: Vec::new(),
    };
    for request in requests {
        match request.await.expect("a request") {
            Some(latency) => {
                measured.answered += 1;
                measured.latencies.push(latency);
            }
            None => measured.failed += 1,
        }
    }
    measured.latencies.sort_unstable();
    measured
}

fn main() {
    let (address, database, _dir) =
        common::start_server(&[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("BENCH_FLOOR", "on")]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a client runtime");
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(IN_FLIGHT)
            .build()
            .expect("an HTTP client"),
        base: format!("http://{address}"),
        live: std::sync::Mutex::default(),
    });
    runtime.block_on(async {
        let (mut rows, mut calls_answered, mut recorded_at_full_rate) = (Vec::new(), 0, 0);
        let mut at_half = None;
        let mut recorded_after = 0;
        for (name, kind) in [("floor", Kind::Floor), ("incoming", Kind::Incoming), ("rtb ping", Kind::Ping)] {
            let warm_up = closed_loop(&client, kind, WARM_UP).await;
            let measured = closed_loop(&client, kind, PHASE).await;
            if matches!(kind, Kind::Incoming) {
                calls_answered += warm_up.answered + measured.answered;
                // Every call answered should be in the database as the phase ends.
                recorded_at_full_rate = recorded(&database).await;
                client.end_calls().await;
                // Before the pings, whose log is written behind them and would compete for
                // the database.
                let paced = paced(&client, Kind::Incoming, measured.rate() / 2.0, PHASE).await;
                recorded_after = recorded(&database).await;
                client.end_calls().await;
                at_half = Some(paced);
            }
            rows.push((name, measured));
        }
        let at_half = at_half.expect("the paced phase ran");

        let floor = rows[0].1.rate();
        println!("\nload: {IN_FLIGHT} requests in flight, {} s a phase, SQLite, signed webhooks", PHASE.as_secs());
        println!("{:<26} {:>9} {:>8} {:>8} {:>8} {:>7}", "what", "req/s", "p50 ms", "p99 ms", "× floor", "failed");
        for (name, measured) in &rows {
            println!(
                "{name:<26} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                measured.rate(),
                measured.percentile_ms(0.5),
                measured.percentile_ms(0.99),
                measured.rate() / floor,
                measured.failed
            );
        }
        println!(
            "{:<26} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>7}",
            "incoming at half the rate",
            at_half.rate(),
            at_half.percentile_ms(0.5),
            at_half.percentile_ms(0.99),
            "",
            at_half.failed
        );
        println!(
            "targets: incoming ≥ 0.3 × floor ({:.2}), RTB ≥ 0.5 × floor ({:.2}), p99 at half rate ≤ 5 ms ({:.2} ms)",
            rows[1].1.rate() / floor,
            rows[2].1.rate() / floor,
            at_half.percentile_ms(0.99)
        );
        // Each call is saved before its TwiML is returned (unless the store takes more than
        // its budget): every call answered is in the database already when the phase ends.
        println!(
            "calls recorded as each phase ended: {recorded_at_full_rate} of {calls_answered} answered at full rate, \
             {recorded_after} of {} after the paced phase",
            calls_answered + at_half.answered
        );
    });
}

/// How many calls the database holds.
async fn recorded(database: &std::path::Path) -> i64 {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(&format!("sqlite://{}", database.display()))
        .await
        .expect("the database");
    let row = connection
        .fetch_one("SELECT COUNT(*) FROM calls")
        .await
        .expect("a count");
    row.try_get::<i64, _>(0).expect("a number")
}
