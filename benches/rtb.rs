//! What answering an RTB ping costs, end to end: the real server on loopback (SQLite, the
//! demo plan), one ping at a time over a kept-alive HTTP connection. `cargo bench --bench rtb`.
//!
//! Each figure is a whole round trip (client, HTTP, the server's work), so the server's part
//! is less than it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

const KEY: &str = "demo-rtb-key-auto-insurance-0001";

fn pings(c: &mut Criterion) {
    // Pings are not webhooks: signatures play no part here.
    let (address, _, _dir) = common::start_server(&[("WEBHOOK_SIGNATURES", "off")]);
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
