//! What answering an RTB ping costs, end to end: the real server on loopback (SQLite, the
//! demo plan), one ping at a time over a kept-alive HTTP connection. `cargo bench --bench rtb`.
//!
//! Each figure is a whole round trip (client, HTTP, the server's work), so the server's part
//! is less than it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use switchboard::{
    config::Settings,
    plan::{DEMO_PLAN, Plan},
    startup::Application,
    store::{SqlStore, Store},
};

const KEY: &str = "demo-rtb-key-auto-insurance-0001";

/// Starts the server on its own thread and actix system; returns its address and the
/// directory holding its database (deleted when dropped).
fn start_server() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let store = SqlStore::connect_and_migrate(&url).await.expect("the store");
            let plan = Plan::parse(DEMO_PLAN).expect("the demo plan");
            store.import_plan(&plan).await.expect("the demo plan imported");
            // Pings are not webhooks: signatures play no part here.
            let environment = [("BIND", "127.0.0.1:0"), ("WEBHOOK_SIGNATURES", "off")]
                .map(|(key, value)| (key.to_owned(), value.to_owned()));
            let settings = Settings::from_sources(None, environment).expect("settings");
            let app = Application::build(&settings, Arc::new(store))
                .await
                .expect("the server");
            sender.send(app.address()).expect("the bench is waiting");
            app.run_until_stopped().await.expect("the server runs");
        });
    });
    let address = receiver.recv().expect("the server started");
    (address, dir)
}

fn pings(c: &mut Criterion) {
    let (address, _dir) = start_server();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a client runtime");
    let client = reqwest::Client::new();
    let url = format!("http://{address}/rtbs.json");
    let ping = |caller: String| {
        let request = client
            .post(&url)
            .json(&json!({"key": KEY, "publisher_id": "pub-001", "caller_number": caller, "zip": "10001"}));
        async move {
            let answer: Value = request.send().await.expect("a ping").json().await.expect("JSON");
            assert_eq!(answer["status"], "reserved", "{answer}");
        }
    };

    // The floor: a round trip to an endpoint that does nothing (`/healthz`).
    let health = format!("http://{address}/healthz");
    c.bench_function("floor: GET /healthz", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = client.get(&health).send().await.expect("a request");
                assert!(response.status().is_success());
                response.bytes().await.expect("a body")
            })
        })
    });

    // A caller never seen: the de-dupe and capacity checks, the decision, a reservation, a log line.
    let callers = AtomicU64::new(0);
    c.bench_function("ping: a new caller, bid and reserved", |b| {
        b.iter(|| {
            let n = callers.fetch_add(1, Ordering::Relaxed);
            runtime.block_on(ping(format!("+1415{:07}", 2_000_000 + n % 7_000_000)))
        })
    });

    // The same caller again before expiry: the reservation already held.
    c.bench_function("ping: a repeat caller, the cached reservation", |b| {
        b.iter(|| runtime.block_on(ping("+14155550123".to_owned())))
    });
}

criterion_group!(benches, pings);
criterion_main!(benches);
