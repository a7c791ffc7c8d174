//! What a big network costs the server: `cargo bench --bench scale`. Two measurements, each
//! on the real `switchboard serve` in a process of its own (so that its memory is its own),
//! over SQLite:
//!
//! - memory per live call: `LIVE_CALLS` (100,000) calls are started and left ringing their
//!   buyer; the server's resident memory grows by so much;
//! - start-up: over a database holding `STORED_CONVERSIONS` (10^7) conversions (each with its
//!   call, its answered attempt and its caller's de-dupe mark), the time from starting the
//!   process to its first ready answer, with the memory it then holds; then how long the
//!   live page's reads take over that history (the calls are spread over a year: some 27,000
//!   a day): the timeline by hour over the last day and by minute over the last hour.
//!
//! Both sizes can be set through those environment variables: lower for a quick look, 0 to
//! skip a measurement.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use sqlx::{Connection, Executor};

const ADMIN_TOKEN: &str = "scale-bench-admin-token-0123456789";
const SUPERVISOR_TOKEN: &str = "scale-bench-supervisor-token-0123";
const IN_FLIGHT: usize = 32;

/// One campaign, five buyers without caps, none of them a duplicate for a new caller: every
/// call is dialed, and stays live until its provider says otherwise.
const PLAN: &str = r#"
[[companies]]
name = "Scale"
duplicate_caller_handling = true

[[companies.buyers]]
name = "B1"
destination = "+14155550101"
dedupe_seconds = 2592000

[[companies.buyers]]
name = "B2"
destination = "+14155550102"
dedupe_seconds = 2592000

[[companies.buyers]]
name = "B3"
destination = "+14155550103"
dedupe_seconds = 2592000

[[companies.buyers]]
name = "B4"
destination = "+14155550104"
dedupe_seconds = 2592000

[[companies.buyers]]
name = "B5"
destination = "+14155550105"
dedupe_seconds = 2592000

[[companies.campaigns]]
name = "Scale"
numbers = ["+18005550100"]
duplicate_caller_handling = "new_convertible_buyer"
buyers = [
  { buyer = "B1", priority = 1 }, { buyer = "B2", priority = 1 }, { buyer = "B3", priority = 1 },
  { buyer = "B4", priority = 1 }, { buyer = "B5", priority = 1 },
]
"#;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `switchboard` with the bench's settings, on `database`.
fn switchboard(database: &str, bind: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_clear()
        .env("DATABASE_URL", database)
        .env("BIND", bind)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SUPERVISOR_TOKENS", SUPERVISOR_TOKEN)
        .env("WEBHOOK_SIGNATURES", "off")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// The database at `dir`, migrated and holding [`PLAN`].
fn prepare(dir: &Path) -> String {
    let database = format!("sqlite://{}", dir.join("scale.db").display());
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, PLAN).expect("the plan written");
    let imported = switchboard(&database, "127.0.0.1:0")
        .arg("import")
        .arg(&plan)
        .status()
        .expect("switchboard import runs");
    assert!(imported.success(), "the plan imported");
    database
}

struct Server {
    process: Child,
    base: String,
}

impl Server {
    /// Starts `serve` and waits until it is ready; returns it with the time that took.
    async fn start(database: &str, http: &reqwest::Client) -> (Self, Duration) {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let bind = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let process = switchboard(database, &bind)
            .arg("serve")
            .spawn()
            .expect("switchboard serve starts");
        let server = Self {
            process,
            base: format!("http://{bind}"),
        };
        loop {
            let ready = http.get(format!("{}/readyz", server.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return (server, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resident memory, from `/proc`, in bytes.
    fn resident(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).expect("the status");
        let kib: u64 = (status.lines())
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    async fn live_calls(&self, http: &reqwest::Client) -> u64 {
        let metrics = (http.get(format!("{}/metrics", self.base)))
            .bearer_auth(SUPERVISOR_TOKEN)
            .send()
            .await
            .expect("the metrics")
            .text()
            .await
            .expect("the metrics' text");
        (metrics.lines())
            .find_map(|line| line.strip_prefix("switchboard_live_calls "))
            .and_then(|value| value.trim().parse().ok())
            .expect("the live calls gauge")
    }

    /// Starts `count` calls, each from a new caller, `IN_FLIGHT` at a time; asserts that each
    /// was sent to a buyer.
    async fn place_calls(&self, http: &reqwest::Client, count: u64) {
        let url = format!("{}/voice/incoming", self.base);
        stream::iter(0..count)
            .map(|_| {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let params = [
                    ("AccountSid", "AC00000000000000000000000000000000".to_owned()),
                    ("CallSid", format!("CA{n:032x}")),
                    ("CallStatus", "ringing".to_owned()),
                    (
                        "From",
                        format!(
                            "+1{}{:07}",
                            [415, 212, 305, 702][(n % 4) as usize],
                            2_000_000 + n / 4
                        ),
                    ),
                    ("To", "+18005550100".to_owned()),
                ];
                let request = http.post(&url).form(&params).send();
                async move {
                    let twiml = request.await.expect("an answer").text().await.expect("TwiML");
                    assert!(twiml.contains("<Dial"), "a call not dialed: {twiml}");
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<()>()
            .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

const MIB: f64 = 1024.0 * 1024.0;

async fn memory_per_live_call(http: &reqwest::Client) {
    let calls = from_env("LIVE_CALLS", 100_000);
    if calls == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = prepare(dir.path());
    let (server, _) = Server::start(&database, http).await;
    // Warm up: thread-local caches, connection buffers and the like, which any server has.
    server.place_calls(http, 1_000).await;
    let before = (server.resident(), server.live_calls(http).await);
    let started = Instant::now();
    server.place_calls(http, calls).await;
    let elapsed = started.elapsed();
    // Let the store's writes and the supervision hub settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (server.resident(), server.live_calls(http).await);
    let live = after.1 - before.1;
    println!(
        "\nmemory: {calls} calls placed in {:.1} s, {live} more live",
        elapsed.as_secs_f64()
    );
    println!(
        "resident {:.1} MiB before, {:.1} MiB after: {:.0} bytes per live call (target ≤ 4096)",
        before.0 as f64 / MIB,
        after.0 as f64 / MIB,
        after.0.saturating_sub(before.0) as f64 / live.max(1) as f64
    );
}

/// Fills the database with `count` converted calls over the last year: a call, its
/// answered attempt, its conversion and its caller's de-dupe mark each.
async fn store_conversions(database: &str, count: u64) {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(database)
        .await
        .expect("the database");
    // Filling only: no journal (a 10^7-row transaction in the WAL would need the disk twice);
    // the server turns WAL back on when it connects.
    db.execute("PRAGMA journal_mode = OFF").await.expect("no journal");
    db.execute("PRAGMA synchronous = OFF")
        .await
        .expect("fast filling");
    db.execute("BEGIN").await.expect("a transaction");
    // The call numbers n.i; the buyers b.k, taken in turn; the parameters p, the conversions'
    // times spread over the last year.
    sqlx::query(
        "CREATE TEMP TABLE p AS SELECT $1 AS count, $2 AS now_ms, (SELECT id FROM campaigns) AS campaign,
            365 * 24 * 3600 * 1000 / $1 AS spacing",
    )
    .bind(count as i64)
    .bind(jiff::Timestamp::now().as_millisecond())
    .execute(&mut db)
    .await
    .expect("the parameters");
    for sql in [
        "CREATE TEMP TABLE n AS WITH RECURSIVE n(i) AS
            (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < (SELECT count FROM p)) SELECT i FROM n",
        "CREATE TEMP TABLE b AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, company_id FROM buyers",
        "INSERT INTO calls (call_sid, caller, caller_number, called, company_id, campaign_id,
            visited_campaigns, state, outcome, buyer_id, duplicate, converted, attempts, duplicate_buyers,
            used_fallback, redirects, timeline_len, started_at_ms, state_changed_at_ms, ended_at_ms,
            entry_campaign_id, duplicates_avoided, status_callbacks)
         SELECT printf('CA%032x', i), printf('+1415%07d', i), printf('+1415%07d', i), '+18005550100',
            b.company_id, campaign, json_array(campaign), 'ended', 'connected', b.id, 0, 1, 1, '[]', 0, 0,
            0, now_ms - i * spacing, now_ms - i * spacing + 120000, now_ms - i * spacing + 120000, campaign,
            0, '[]'
         FROM n JOIN b ON b.k = n.i % 5 JOIN p",
        "INSERT INTO call_attempts (call_sid, number, buyer_id, campaign_id, kind, duplicate, dial_status,
            connected_seconds, converted, started_at_ms, answered_at_ms, ended_at_ms)
         SELECT printf('CA%032x', i), 1, b.id, campaign, 'buyer', 0, 'completed', 110, 1,
            now_ms - i * spacing, now_ms - i * spacing + 5000, now_ms - i * spacing + 120000
         FROM n JOIN b ON b.k = n.i % 5 JOIN p",
        "INSERT INTO conversions (call_sid, attempt, buyer_id, campaign_id, caller_number, connected_seconds,
            payout_cents, revenue_cents, converted_at_ms)
         SELECT printf('CA%032x', i), 1, b.id, campaign, printf('+1415%07d', i), 110, 1000, 2000,
            now_ms - i * spacing + 95000
         FROM n JOIN b ON b.k = n.i % 5 JOIN p",
        "INSERT INTO dedupe_marks (caller_number, scope, last_connected_ms, last_converted_ms)
         SELECT printf('+1415%07d', i), 'buyer:' || b.id, now_ms - i * spacing + 5000,
            now_ms - i * spacing + 95000
         FROM n JOIN b ON b.k = n.i % 5 JOIN p",
    ] {
        db.execute(sql).await.expect("stored conversions");
    }
    db.execute("COMMIT").await.expect("committed");
    db.execute("PRAGMA journal_mode = WAL").await.expect("WAL");
}

async fn start_up(http: &reqwest::Client) {
    let count = from_env("STORED_CONVERSIONS", 10_000_000);
    if count == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = prepare(dir.path());
    let filling = Instant::now();
    store_conversions(&database, count).await;
    let size = std::fs::metadata(dir.path().join("scale.db")).map_or(0, |m| m.len());
    println!(
        "\nstart-up: {count} conversions stored in {:.0} s ({:.0} MiB of database)",
        filling.elapsed().as_secs_f64(),
        size as f64 / MIB
    );
    let (server, took) = Server::start(&database, http).await;
    println!(
        "ready {:.2} s after start (target ≤ 10 s), holding {:.0} MiB resident",
        took.as_secs_f64(),
        server.resident() as f64 / MIB
    );
    for path in [
        "/api/v1/stats/timeline?bucket=hour",
        "/api/v1/stats/timeline?bucket=minute",
    ] {
        let (median, worst) = read_times(http, &format!("{}{path}", server.base)).await;
        println!(
            "GET {path}: median {:.1} ms, slowest {:.1} ms of {READS}",
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
}

/// How many times each of the live page's reads is timed.
const READS: usize = 11;

/// The median and the slowest of [`READS`] reads of `url`, one at a time.
async fn read_times(http: &reqwest::Client, url: &str) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(READS);
    for _ in 0..READS {
        let started = Instant::now();
        let response = (http.get(url).bearer_auth(SUPERVISOR_TOKEN).send().await).expect("an answer");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        response.bytes().await.expect("the body");
        took.push(started.elapsed());
    }
    took.sort();
    (took[READS / 2], took[READS - 1])
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a client runtime");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("an HTTP client");
    runtime.block_on(async {
        memory_per_live_call(&http).await;
        start_up(&http).await;
    });
}
