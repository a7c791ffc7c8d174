//! Throughput under load, against floors measured in the same run: `cargo bench --bench load`.
//!
//! Three processes on loopback: the real `switchboard serve --demo` (SQLite, webhooks signed and
//! checked, `BENCH_FLOOR=on`); a floor server (this benchmark's binary run again: a minimal
//! actix-web server answering fixed TwiML, nothing else); and this client, which keeps
//! `IN_FLIGHT` requests going for `PHASE` at each of:
//!
//! - the floor server, sent the very requests the incoming phase sends Switchboard;
//! - Switchboard's own floor, `POST /voice/floor`: a webhook read, its signature checked, fixed
//!   TwiML answered, no routing and no store;
//! - incoming calls, each new (a new caller, a new call: routed, saved, answered);
//! - incoming calls again, paced at half the rate measured, for their latency;
//! - RTB pings, each for a new caller (a bid and a reservation).
//!
//! Every request is prepared (built and signed) before the phases start. An incoming call
//! counts only if it was answered with a `<Dial>`, a ping only if it got a reservation: an
//! answer that turned the caller away is a failure here, however fast.

use std::{
    io::{BufRead, BufReader, Write as _},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::web::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
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
/// The demo plan's RTB key for its main campaign.
const KEY: &str = "demo-rtb-key-auto-insurance-0001";
/// Set (to anything) in the environment of this binary run as the floor server.
const FLOOR_SERVER: &str = "LOAD_BENCH_FLOOR_SERVER";
/// What the floor server answers: what Switchboard's floor answers.
const FIXED_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>";

/// Requests prepared: more than the fastest phase sends (the floors cycle through theirs).
const INCOMING_PREPARED: usize = 200_000;
const FLOOR_PREPARED: usize = 50_000;
const PINGS_PREPARED: usize = 150_000;

/// A request built and signed in advance.
struct Prepared {
    url: String,
    body: Bytes,
    json: bool,
    signature: Option<HeaderValue>,
    /// The call it starts, for incoming calls (ended after their phase).
    sid: Option<String>,
}

/// A caller number of its own for request `n` (valid, as pings check numbers against the
/// numbering plan).
fn caller(n: usize) -> String {
    format!(
        "+1{}{:07}",
        [415, 212, 305, 702][n % 4],
        2_000_000 + n / 4 % 7_000_000
    )
}

fn signed_form(base: &str, path: &str, params: &[(&str, String)]) -> (String, String, HeaderValue) {
    let url = format!("{base}{path}");
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let signed = signature::sign(AUTH_TOKEN, &url, &owned, Algorithm::HmacSha1);
    let body = serde_urlencoded::to_string(&owned).expect("a form");
    (url, body, HeaderValue::from_str(&signed).expect("a header value"))
}

/// A new call's first webhook, signed for `path`.
fn new_call(base: &str, path: &str, n: usize) -> Prepared {
    let sid = format!("CA{n:032x}");
    let params = [
        ("AccountSid", "AC00000000000000000000000000000000".to_owned()),
        ("CallSid", sid.clone()),
        ("CallStatus", "ringing".to_owned()),
        ("Direction", "inbound".to_owned()),
        ("From", caller(n)),
        ("To", "+18005550100".to_owned()),
    ];
    let (url, body, signature) = signed_form(base, path, &params);
    Prepared {
        url,
        body: body.into(),
        json: false,
        signature: Some(signature),
        sid: Some(sid),
    }
}

fn ping(base: &str, n: usize) -> Prepared {
    let body = json!({"key": KEY, "publisher_id": "pub-001", "caller_number": caller(n)});
    Prepared {
        url: format!("{base}/rtbs.json"),
        body: body.to_string().into(),
        json: true,
        signature: None,
        sid: None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Any 200.
    Answer,
    /// A 200 whose TwiML dials.
    Dial,
    /// A 200 whose bid reserved a buyer.
    Reserved,
}

/// One phase's requests: taken in order, each once (or cycled through, for a floor).
struct Requests {
    prepared: Vec<Prepared>,
    next: AtomicUsize,
    cycle: bool,
}

impl Requests {
    fn new(prepared: Vec<Prepared>, cycle: bool) -> Arc<Self> {
        Arc::new(Self {
            prepared,
            next: AtomicUsize::new(0),
            cycle,
        })
    }

    fn take(&self) -> Option<&Prepared> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.cycle {
            self.prepared.get(n % self.prepared.len())
        } else {
            self.prepared.get(n)
        }
    }

    /// The calls started by the requests taken since `from`.
    fn sids_since(&self, from: usize) -> Vec<String> {
        let to = self.next.load(Ordering::Relaxed).min(self.prepared.len());
        (self.prepared[from.min(to)..to].iter())
            .filter_map(|p| p.sid.clone())
            .collect()
    }
}

/// Sends one prepared request; whether it got what `expect` asks.
async fn send(http: &reqwest::Client, request: &Prepared, expect: Expect) -> bool {
    let content_type = if request.json {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let mut builder = (http.post(&request.url))
        .header(CONTENT_TYPE, content_type)
        // Shared, not copied.
        .body(request.body.clone());
    if let Some(signature) = &request.signature {
        builder = builder.header("X-Twilio-Signature", signature.clone());
    }
    let Ok(response) = builder.send().await else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    let Ok(body) = response.bytes().await else {
        return false;
    };
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    match expect {
        Expect::Answer => true,
        Expect::Dial => contains(b"<Dial"),
        Expect::Reserved => contains(br#""status":"reserved""#),
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

    fn absorb(&mut self, (answered, failed, mut latencies): (u64, u64, Vec<Duration>)) {
        self.answered += answered;
        self.failed += failed;
        self.latencies.append(&mut latencies);
    }

    fn empty() -> Self {
        Self {
            answered: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        }
    }
}

/// `IN_FLIGHT` requests at all times, for `length` (or until the prepared ones run out).
async fn closed_loop(
    http: &reqwest::Client,
    requests: &Arc<Requests>,
    expect: Expect,
    length: Duration,
) -> Measured {
    let started = Instant::now();
    let until = started + length;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (http, requests) = (http.clone(), requests.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed, mut latencies) = (0, 0, Vec::new());
                while Instant::now() < until {
                    let Some(request) = requests.take() else {
                        break;
                    };
                    let sent = Instant::now();
                    if send(&http, request, expect).await {
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
    let mut measured = Measured::empty();
    for worker in workers {
        measured.absorb(worker.await.expect("a load worker"));
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// Requests started at `rate` a second, whatever the answers, for `length`.
async fn paced(
    http: &reqwest::Client,
    requests: &Arc<Requests>,
    expect: Expect,
    rate: f64,
    length: Duration,
) -> Measured {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    while started.elapsed() < length {
        ticks.tick().await;
        let (http, requests) = (http.clone(), requests.clone());
        sent.push(tokio::spawn(async move {
            let request = requests.take()?;
            let at = Instant::now();
            send(&http, request, expect).await.then(|| at.elapsed())
        }));
    }
    let mut measured = Measured::empty();
    measured.elapsed = started.elapsed();
    for request in sent {
        match request.await.expect("a request") {
            Some(latency) => measured.absorb((1, 0, vec![latency])),
            None => measured.absorb((0, 1, Vec::new())),
        }
    }
    measured.latencies.sort_unstable();
    measured
}

/// Ends these calls, as the provider's final status callbacks would, so that the next phase
/// starts without them.
async fn end_calls(http: &reqwest::Client, base: &str, sids: Vec<String>) {
    let chunks: Vec<Vec<String>> = (sids.chunks(sids.len().div_ceil(IN_FLIGHT).max(1)))
        .map(<[String]>::to_vec)
        .collect();
    let workers: Vec<_> = (chunks.into_iter())
        .map(|chunk| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                for sid in chunk {
                    let params = [("CallSid", sid), ("CallStatus", "completed".to_owned())];
                    let (url, body, signature) = signed_form(&base, "/voice/status", &params);
                    let sent = (http.post(url))
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .header("X-Twilio-Signature", signature)
                        .body(body)
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

/// A child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `switchboard serve --demo` over a fresh SQLite database in `dir`, once it is ready.
async fn start_switchboard(dir: &Path, http: &reqwest::Client) -> (Process, String, String) {
    let database = format!("sqlite://{}", dir.join("load.db").display());
    let bind = format!("127.0.0.1:{}", free_port());
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .env_clear()
            .env("DATABASE_URL", &database)
            .env("BIND", &bind)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("BENCH_FLOOR", "on")
            .env("RUST_LOG", "warn")
            .args(["serve", "--demo"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchboard serve starts"),
    );
    let base = format!("http://{bind}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return (process, base, database);
        }
        assert!(
            Instant::now() < deadline,
            "switchboard was not ready within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This binary again, as the floor server; its address once it listens.
fn start_floor_server() -> (Process, String) {
    let mut process = Command::new(std::env::current_exe().expect("this benchmark's path"))
        .env(FLOOR_SERVER, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the floor server starts");
    let stdout = process.stdout.take().expect("its output");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("its address");
    (Process(process), format!("http://{}", line.trim()))
}

/// The floor server: a minimal actix-web server answering fixed TwiML to any POST, with as
/// many workers as Switchboard (one per core).
fn serve_floor() -> std::io::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    actix_web::rt::System::new().block_on(async {
        let server = HttpServer::new(|| {
            App::new().default_service(web::to(|_body: web::Bytes| async {
                HttpResponse::Ok()
                    .content_type("text/xml; charset=utf-8")
                    .body(FIXED_TWIML)
            }))
        })
        .bind("127.0.0.1:0")?;
        let address = server.addrs()[0];
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{address}")?;
        stdout.flush()?;
        server.run().await
    })
}

fn main() {
    if std::env::var_os(FLOOR_SERVER).is_some() {
        serve_floor().expect("the floor server runs");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a client runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    runtime.block_on(run(dir.path()));
}

async fn run(dir: &Path) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("an HTTP client");
    let (_switchboard, base, database) = start_switchboard(dir, &http).await;
    let (_floor_server, floor_base) = start_floor_server();

    let prepare_started = Instant::now();
    let incoming: Vec<Prepared> = (0..INCOMING_PREPARED)
        .map(|n| new_call(&base, "/voice/incoming", n))
        .collect();
    // The floor server is sent the incoming calls' own requests (it reads no signature).
    let to_floor_server: Vec<Prepared> = (incoming.iter().take(FLOOR_PREPARED))
        .map(|p| Prepared {
            url: p.url.replace(&base, &floor_base),
            body: p.body.clone(),
            json: false,
            signature: p.signature.clone(),
            sid: None,
        })
        .collect();
    let in_server_floor: Vec<Prepared> = (0..FLOOR_PREPARED)
        .map(|n| new_call(&base, "/voice/floor", n))
        .collect();
    let pings: Vec<Prepared> = (INCOMING_PREPARED..INCOMING_PREPARED + PINGS_PREPARED)
        .map(|n| ping(&base, n))
        .collect();
    println!(
        "prepared {} requests in {:.1} s",
        incoming.len() + to_floor_server.len() + in_server_floor.len() + pings.len(),
        prepare_started.elapsed().as_secs_f64()
    );
    let (incoming, to_floor_server, in_server_floor, pings) = (
        Requests::new(incoming, false),
        Requests::new(to_floor_server, true),
        Requests::new(in_server_floor, true),
        Requests::new(pings, false),
    );

    let mut rows: Vec<(&str, Measured)> = Vec::new();
    for (name, requests, expect) in [
        ("floor server (own process)", &to_floor_server, Expect::Answer),
        ("floor in Switchboard", &in_server_floor, Expect::Answer),
    ] {
        closed_loop(&http, requests, expect, WARM_UP).await;
        rows.push((name, closed_loop(&http, requests, expect, PHASE).await));
    }

    closed_loop(&http, &incoming, Expect::Dial, WARM_UP).await;
    let measured = closed_loop(&http, &incoming, Expect::Dial, PHASE).await;
    let answered_at_full_rate = incoming.next.load(Ordering::Relaxed).min(INCOMING_PREPARED);
    // Every call answered should be in the database as the phase ends.
    let recorded_at_full_rate = recorded(&database).await;
    end_calls(&http, &base, incoming.sids_since(0)).await;
    let half = measured.rate() / 2.0;
    rows.push(("incoming call (new)", measured));
    let paced_from = incoming.next.load(Ordering::Relaxed);
    let at_half = paced(&http, &incoming, Expect::Dial, half, PHASE).await;
    let recorded_after = recorded(&database).await;
    end_calls(&http, &base, incoming.sids_since(paced_from)).await;

    closed_loop(&http, &pings, Expect::Reserved, WARM_UP).await;
    rows.push((
        "rtb ping (new caller)",
        closed_loop(&http, &pings, Expect::Reserved, PHASE).await,
    ));

    let floor = rows[0].1.rate();
    let in_server = rows[1].1.rate();
    println!(
        "\nload: {IN_FLIGHT} requests in flight, {} s a phase, SQLite, signed webhooks, 3 processes",
        PHASE.as_secs()
    );
    println!(
        "{:<28} {:>9} {:>8} {:>8} {:>9} {:>11} {:>7}",
        "what", "req/s", "p50 ms", "p99 ms", "× floor", "× in-server", "failed"
    );
    for (name, measured) in &rows {
        println!(
            "{name:<28} {:>9.0} {:>8.2} {:>8.2} {:>9.3} {:>11.3} {:>7}",
            measured.rate(),
            measured.percentile_ms(0.5),
            measured.percentile_ms(0.99),
            measured.rate() / floor,
            measured.rate() / in_server,
            measured.failed
        );
    }
    println!(
        "{:<28} {:>9.0} {:>8.2} {:>8.2} {:>9} {:>11} {:>7}",
        "incoming at half that rate",
        at_half.rate(),
        at_half.percentile_ms(0.5),
        at_half.percentile_ms(0.99),
        "",
        "",
        at_half.failed
    );
    println!(
        "targets: incoming ≥ 0.30 × floor ({:.3}), RTB ≥ 0.5 × floor ({:.3}), p99 at half rate ≤ 5 ms ({:.2} ms)",
        rows[2].1.rate() / floor,
        rows[3].1.rate() / floor,
        at_half.percentile_ms(0.99)
    );
    // Each call is saved before its TwiML is returned (unless the store takes more than its
    // budget): every call answered is in the database already when the phase ends.
    println!(
        "calls recorded as each phase ended: {recorded_at_full_rate} of {answered_at_full_rate} sent at full rate, \
         {recorded_after} of {} after the paced phase",
        incoming.next.load(Ordering::Relaxed).min(INCOMING_PREPARED)
    );
}

/// How many calls the database holds.
async fn recorded(database: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(database)
        .await
        .expect("the database");
    let row = connection
        .fetch_one("SELECT COUNT(*) FROM calls")
        .await
        .expect("a count");
    row.try_get::<i64, _>(0).expect("a number")
}
