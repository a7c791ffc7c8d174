//! `switchboard simulate` against the real service, and against one that answers badly.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use secrecy::SecretString;
use switchboard::{
    plan::{DEMO_PLAN, Plan},
    simulate::{self, Outcomes, Scenario},
};

use crate::helpers::{AUTH_TOKEN, Engine, SUPERVISOR_TOKEN, TestApp, on_both_engines};

fn scenario(url: String) -> Scenario {
    Scenario {
        urls: vec![url],
        public_urls: Vec::new(),
        auth_token: Some(SecretString::from(AUTH_TOKEN)),
        calls: 60,
        concurrency: 8,
        numbers: vec!["+18005550100".into(), "+18885550100".into()],
        repeat_share: 0.5,
        outcomes: "70,10,15,5".parse::<Outcomes>().unwrap(),
        buyers: Vec::new(),
        press_1: 0.8,
        machines: 0.1,
        talk_seconds: 120.0,
        reorder: false,
        hold_ms: 0,
        rtb_key: None,
        publisher: "pub-001".into(),
        token: Some(SecretString::from(SUPERVISOR_TOKEN)),
        seed: Some(3),
        quiet: true,
    }
}

struct Demo(TestApp);

impl Demo {
    async fn start(engine: Engine) -> Option<Self> {
        TestApp::start_with_plan(engine, &Plan::parse(DEMO_PLAN).unwrap())
            .await
            .map(Self)
    }
}

on_both_engines! {
    async fn a_simulated_day_follows_every_call_to_its_end_and_agrees_with_switchboard(demo: Demo) {
        let report = simulate::run(scenario(demo.0.url(""))).await.unwrap();
        assert!(report.succeeded(), "{report}");
        assert_eq!(report.calls, 60);
        assert_eq!(report.ended.values().sum::<u32>(), 60, "every call ended: {report}");
        let connected = report.ended.get(&simulate::Ended::Connected).copied().unwrap_or(0);
        assert_eq!(report.dials.get("completed").copied().unwrap_or(0), connected, "one answered dial each: {report}");
        let dials: u32 = report.dials.values().sum();
        let count = |kind: &str| report.latencies.get(kind).map_or(0, Vec::len);
        assert_eq!(count("incoming"), 60);
        assert_eq!(count("dial_action"), dials as usize);
        assert_eq!(count("status"), 60, "one final status callback each");
        // Only the events a dial asks for: its answer, and its end.
        let picked_up = ["completed", "screened-out"].iter().map(|s| report.dials.get(*s).copied().unwrap_or(0)).sum::<u32>();
        assert_eq!(count("leg_status"), (dials + picked_up) as usize, "the answer and the end of every leg");

        // Switchboard saw the same calls, and kept repeat callers from buyers they converted.
        let counts = report.switchboard.as_ref().unwrap().as_ref().unwrap();
        assert_eq!((counts.calls, counts.live), (60, 0), "every call ended: {report}");
        assert!(counts.converted <= u64::from(connected), "{report}");
        assert!(counts.converted > 0 && counts.duplicates_avoided > 0, "{report}");
        // The demo plan has a fallback for everyone and a redirect after it: a call is dropped
        // only when every buyer it could reach was dialed and none took it, or when it was
        // redirected to the overflow campaign (no fallback there) by a caller who already
        // converted with its one buyer. The provider heard each drop as the explicit end.
        let reasons = ["unanswered", "duplicate"];
        assert!(counts.dropped.keys().all(|reason| reasons.contains(&reason.as_str())), "{report}");
        let ended = report.ended.get(&simulate::Ended::ExplicitEnd).copied().unwrap_or(0);
        assert_eq!(counts.dropped.values().sum::<u64>(), u64::from(ended), "{report}");
        let printed = report.to_string();
        assert!(printed.contains("latency ms") && printed.contains("dial_action"), "{printed}");
    }

    async fn pings_reordered_callbacks_and_every_buyer_busy(demo: Demo) {
        let scenario = Scenario {
            calls: 20,
            rtb_key: Some("demo-rtb-key-auto-insurance-0001".into()),
            reorder: true,
            // Nobody answers: every call runs the whole chain, fallback and redirect included.
            outcomes: "0,1,0,0".parse().unwrap(),
            ..scenario(demo.0.url(""))
        };
        let report = simulate::run(scenario).await.unwrap();
        assert!(report.succeeded(), "{report}");
        let count = |kind: &str| report.latencies.get(kind).map_or(0, Vec::len);
        assert_eq!(count("rtb"), 20);
        assert_eq!(count("status"), 60, "ringing, in-progress and completed, shuffled");
        assert_eq!(report.ended.get(&simulate::Ended::ExplicitEnd).copied(), Some(20), "{report}");
        assert_eq!(report.redirects, 20, "each went on to the overflow campaign: {report}");
        let counts = report.switchboard.as_ref().unwrap().as_ref().unwrap();
        assert_eq!((counts.converted, counts.live), (0, 0), "{report}");
        assert_eq!(counts.dropped.get("unanswered").copied(), Some(20), "{report}");
    }
}

/// The demo's main campaign, with Acme Auto Insurance screening every call (press 1) and the
/// campaign's calls recorded.
struct Screening(TestApp);

impl Screening {
    async fn start(engine: Engine) -> Option<Self> {
        let plan = DEMO_PLAN.replace(
            "caller_id = \"caller\"                # what its phone shows: the caller (the default)",
            "screen = \"press-1\"",
        );
        assert_ne!(plan, DEMO_PLAN, "the demo plan changed: edit this test");
        TestApp::start_with_plan(engine, &Plan::parse(&plan).unwrap())
            .await
            .map(Self)
    }
}

on_both_engines! {
    async fn the_provider_plays_whispers_presses_1_or_not_and_reports_recordings(s: Screening) {
        let scenario = Scenario {
            calls: 40,
            repeat_share: 0.0,
            // Every buyer picks up; at the prompt, about half press 1.
            outcomes: "1,0,0,0".parse().unwrap(),
            press_1: 0.5,
            // Of the answers at Budget Cover, screened by answering machine detection, half are
            // machines.
            machines: 0.5,
            ..scenario(s.0.url(""))
        };
        let report = simulate::run(scenario).await.unwrap();
        assert!(report.succeeded(), "{report}");
        let (accepted, refused) = report.screened;
        assert!(accepted > 0 && refused > 0, "{report}");
        assert_eq!(report.dials.get("screened-out").copied(), Some(refused), "{report}");
        // A buyer that did not press 1 passed the call on, and the next one took it.
        let connected = report.ended.get(&simulate::Ended::Connected).copied().unwrap_or(0);
        assert_eq!(connected, 40, "{report}");
        assert_eq!(report.dials.get("completed").copied(), Some(40), "{report}");

        // Switchboard's own record agrees: each screening as the buyer answered it, each
        // recording of a call that talked kept with its call.
        let mut db = s.0.db.connect().await;
        let screenings: Vec<(String, i64)> = sqlx::query_as(
            "SELECT screening, COUNT(*) FROM call_attempts WHERE screening IS NOT NULL GROUP BY screening ORDER BY screening",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        let count = |screening: &str| screenings.iter().find(|(s, _)| s == screening).map_or(0, |(_, n)| *n);
        assert_eq!(count("accepted"), i64::from(accepted), "{screenings:?}");
        assert!(count("no_key") > 0 && count("machine") > 0, "both screens turned calls away: {screenings:?}");
        assert_eq!(count("no_key") + count("machine"), i64::from(refused), "{screenings:?}");
        assert_eq!(report.latencies.get("amd").map_or(0, Vec::len) as i64, count("machine") + count("accepted") - count_press_1_accepted(&mut db).await);
        let reported = report.latencies.get("recording").map_or(0, Vec::len);
        // Budget Cover records from the ringing: a machine that answered it is recorded too.
        assert_eq!(reported as i64, 40 + count("machine"), "one recording per conversation, and per machine: {report}");
        let recordings: Vec<(String,)> = sqlx::query_as("SELECT recordings FROM calls").fetch_all(&mut db).await.unwrap();
        let kept: usize = recordings.iter().map(|(json,)| serde_json::from_str::<Vec<serde_json::Value>>(json).unwrap().len()).sum();
        assert_eq!(kept, reported);
        assert!(report.to_string().contains(&format!("put through {accepted} · not {refused}")), "{report}");
    }
}

/// Attempts put through by pressing 1 (those of buyers screened by a prompt).
async fn count_press_1_accepted(db: &mut sqlx::AnyConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM call_attempts a JOIN buyers b ON b.id = a.buyer_id
         WHERE a.screening = 'accepted' AND b.screen_mode = 'press-1'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    n
}

/// A "Switchboard" that answers an incoming call with something no provider could follow.
async fn bad_server(answer: &'static str, status: u16) -> String {
    let server = HttpServer::new(move || {
        App::new().route(
            "/voice/incoming",
            web::post().to(move || async move {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("text/xml")
                    .body(answer)
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    format!("http://{address}")
}

#[actix_web::test]
async fn invalid_twiml_or_an_error_status_fails_the_call_and_the_run() {
    for (answer, status, expected) in [
        ("<?xml version=\"1.0\"?><Html/>", 200, "invalid TwiML"),
        (
            "<?xml version=\"1.0\"?><Response><Dial>+1</Dial></Response>",
            200,
            "without an action",
        ),
        ("oops", 500, "HTTP 500"),
    ] {
        let url = bad_server(answer, status).await;
        let scenario = Scenario {
            calls: 3,
            token: None,
            ..scenario(url)
        };
        let report = tokio::time::timeout(Duration::from_secs(30), simulate::run(scenario))
            .await
            .unwrap()
            .unwrap();
        assert!(!report.succeeded());
        assert_eq!(report.failures.len(), 3, "{report}");
        assert!(report.failures[0].contains(expected), "{report}");
        assert!(report.to_string().contains("failed 3"), "{report}");
    }
}
