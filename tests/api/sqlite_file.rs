//! The embedded database's file, as an operator's machine treats it: one server per file, and
//! a disk that fills up and is freed again. The real binary, as in [`crate::cli`], where a
//! process is what a test is about.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::{
    config::Settings,
    startup::Application,
    store::{SqlStore, Stores},
};

use crate::{
    cli::{Server, switchboard},
    helpers::{ADMIN_TOKEN, AUTH_TOKEN, TEST_SETTINGS, TestApp, on_both_engines, test_runtime},
    provider::{call_over, incoming, sid},
};

/// How long a condition a test waits for may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `check` holds, and returns what it found; fails after [`PATIENCE`] with what
/// it last saw.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match check().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_engines! {
    // Second servers on one database, started in this process: on a SQLite file refused while
    // the first serves, and welcome once it stopped; on PostgreSQL, another node.
    async fn a_second_server_on_one_database_is_refused_on_sqlite_and_another_node_on_postgres(app: TestApp) {
        let url = app.db.url.clone();
        let second = || async {
            let environment = [("DATABASE_URL", url.as_str()), ("BIND", "127.0.0.1:0")]
                .into_iter()
                .chain(TEST_SETTINGS)
                .map(|(key, value)| (key.to_owned(), value.to_owned()));
            let settings = Settings::from_sources(None, environment).unwrap();
            let store = SqlStore::connect_and_migrate(&url).await.unwrap();
            let sqlite = store.backend() == switchboard::store::Backend::Sqlite;
            let built = Application::build_with(&settings, Stores::of(Arc::new(store)), test_runtime()).await;
            (sqlite, built)
        };
        match second().await {
            (true, Err(error)) => {
                let message = error.to_string();
                let file = url.trim_start_matches("sqlite://");
                let file = std::fs::canonicalize(file).unwrap();
                assert!(message.contains(&file.display().to_string()), "names the file: {message}");
                assert!(message.contains(&format!("(process {})", std::process::id())), "{message}");
                assert!(message.contains("Stop that server first"), "{message}");
            }
            (true, Ok(_)) => panic!("a second server started on the SQLite file"),
            (false, Ok(node)) => drop(node),
            (false, Err(error)) => panic!("PostgreSQL takes several nodes: {error}"),
        }
        // The first goes on serving.
        assert_eq!(app.read("/calls?limit=1").await.status(), StatusCode::OK);

        // Stopped as SIGTERM stops it, it lets go of the file: a new server starts in this
        // same process, and holds the file in its turn.
        let app = app.restart().await;
        let (sqlite, again) = second().await;
        assert_eq!(again.is_err(), sqlite, "held by the new server: {:?}", again.err().map(|e| e.to_string()));
        assert_eq!(app.read("/calls?limit=1").await.status(), StatusCode::OK);
    }
}

/// A second `switchboard serve` on the file another serves exits with an error naming the file,
/// the process that holds it and what to do; `migrate` and `import` still run beside the
/// server. Once the first is gone, stopped or killed with `kill -9`, the next one starts.
#[actix_web::test]
async fn a_second_serve_on_a_sqlite_file_refuses_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("DRAIN_SECONDS", "0")];
    let first = Server::start_with(dir.path(), &["serve"], &settings);
    let address = first.address();
    let campaigns = || async {
        let page = api(&reqwest::Client::new(), &address, "/campaigns")
            .await
            .unwrap();
        page["data"].as_array().unwrap().len()
    };

    let refused = Server::command(dir.path(), &["serve", "--demo"], &settings)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let file = std::fs::canonicalize(dir.path().join("switchboard.db")).unwrap();
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("(process {})", first.child.id())),
        "names the holder: {stderr}"
    );
    assert!(
        stderr.contains("Stop that server first") && stderr.contains("PostgreSQL"),
        "says what to do: {stderr}"
    );

    assert_eq!(
        campaigns().await,
        0,
        "refused before it touched the database (the demo plan)"
    );

    // Beside the server, the schema is brought up to date and a plan imported as before, and
    // the server routes by it.
    let migrated = switchboard(dir.path()).arg("migrate").output().unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo-plan.toml");
    let imported = switchboard(dir.path()).args(["import", demo]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&imported.stdout).contains("campaigns: 2 created"),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert_eq!(
        campaigns().await,
        2,
        "the first serves on, with the plan imported"
    );
    // (Within the plan's reload, not at once: that is the plan cache's, not this test's.)
    let (url, provider) = (format!("{address}/voice/incoming"), TestApp::signing_client());
    let mut n = 0;
    eventually("routed by the imported plan", || {
        n += 1;
        let (call, url, provider) = (incoming(&sid(n), "+14155550123", "+18005550100"), &url, &provider);
        async move {
            let twiml = provider.webhook(url, &call).await.text().await.unwrap();
            if twiml.contains("<Dial") {
                Ok(())
            } else {
                Err(twiml)
            }
        }
    })
    .await;

    // A restart: the old server stopped (SIGTERM), then the new one started.
    first.terminate();
    let mut first = first;
    assert!(first.child.wait().unwrap().success());
    let mut next = Server::start_with(dir.path(), &["serve"], &settings);
    let address = next.address();
    assert_eq!(
        reqwest::get(format!("{address}/healthz")).await.unwrap().status(),
        StatusCode::OK
    );

    // A server killed outright leaves no lock behind.
    next.child.kill().unwrap(); // SIGKILL
    next.child.wait().unwrap();
    let last = Server::start_with(dir.path(), &["serve"], &settings);
    let address = last.address();
    assert_eq!(
        reqwest::get(format!("{address}/healthz")).await.unwrap().status(),
        StatusCode::OK
    );
}

/// Lets a process write no file past `bytes` (`None`: no limit), as a full disk would.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain system call about a child of this process; the old limit is not asked for.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The size of each of the database's files there is: the database, its write-ahead log, the
/// log's index and a rollback journal.
fn database_files(dir: &Path) -> Vec<(&'static str, u64)> {
    [
        "switchboard.db",
        "switchboard.db-wal",
        "switchboard.db-shm",
        "switchboard.db-journal",
    ]
    .into_iter()
    .filter_map(|name| Some((name, std::fs::metadata(dir.join(name)).ok()?.len())))
    .collect()
}

/// A GET of the API as the admin, answered 200: its body.
async fn api(client: &reqwest::Client, address: &str, path: &str) -> Result<Value, String> {
    let response = (client.get(format!("{address}/api/v1{path}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK {
        return Err(format!("{path}: {status} {body}"));
    }
    Ok(body)
}

/// A stored call with its dial and its timeline, or what is missing.
async fn stored_call(client: &reqwest::Client, address: &str, sid: &str) -> Result<Value, String> {
    let call = api(client, address, &format!("/calls/{sid}")).await?;
    let dials = call["dials"].as_array().map_or(0, Vec::len);
    let timeline = call["timeline"].as_array().map_or(0, Vec::len);
    if dials == 0 || timeline == 0 {
        return Err(format!(
            "{sid}: {dials} dials, {timeline} timeline entries: {call}"
        ));
    }
    Ok(call)
}

/// `/readyz`'s status and body.
async fn readiness(client: &reqwest::Client, address: &str) -> Result<(StatusCode, Value), String> {
    let response = (client.get(format!("{address}/readyz")).send())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Takes every postback, answering 200; counts them.
async fn postback_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let server = HttpServer::new(move || {
        let log = log.clone();
        App::new().default_service(web::to(move |body: String| {
            log.lock().unwrap().push(body);
            async { HttpResponse::Ok().finish() }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}/postbacks", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    (url, received)
}

/// The database's disk fills up (every write past its files' current sizes fails, as on a full
/// filesystem) while calls go on arriving, then space comes back. Meanwhile every call is
/// answered with a dial and `/readyz` fails; the outage is logged once, not once per retry.
/// Once the disk has room, without a restart: every call answered meanwhile is stored within
/// seconds with its dial and timeline, the postbacks of those that ended are delivered, an RTB
/// ping answered meanwhile is logged, `/readyz` is ready, and a new call is stored as it is
/// answered.
#[actix_web::test]
async fn after_the_disk_was_full_every_call_answered_meanwhile_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, postbacks) = postback_receiver().await;
    let plan = include_str!("../../examples/demo-plan.toml").replace(
        "# postbacks = [{ url = \"https://partners.example/switchboard\", secret = \"at-least-16-characters\", events = [\"call.converted\", \"call.ended\"] }]",
        &format!("postbacks = [{{ url = \"{receiver}\", secret = \"at-least-16-characters\", events = [\"call.ended\"] }}]"),
    );
    std::fs::write(dir.path().join("plan.toml"), plan).unwrap();
    let imported = switchboard(dir.path())
        .args(["import", "plan.toml"])
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    let settings = [("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("DRAIN_SECONDS", "0")];
    let mut command = Server::command(dir.path(), &["serve"], &settings);
    // SAFETY: between fork and exec only `signal`, which is async-signal-safe. A write past the
    // file size limit then fails (EFBIG), as on a full disk, rather than killing the process;
    // an ignored signal stays ignored across exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let server = Server::spawn(command);
    let address = server.address();
    let (client, provider) = (reqwest::Client::new(), TestApp::signing_client());
    // Calls to Search Partners' number: its postbacks go to the receiver.
    let call = |n: u32| {
        let (provider, url) = (&provider, format!("{address}/voice/incoming"));
        let caller = format!("+1415555{:04}", 1000 + n);
        async move {
            let answer = provider
                .webhook(&url, &incoming(&sid(n), &caller, "+18885550100"))
                .await;
            assert_eq!(answer.status(), StatusCode::OK);
            let twiml = answer.text().await.unwrap();
            assert!(twiml.contains("<Dial"), "call {n} is dialed: {twiml}");
        }
    };
    // A first call, stored: the database's files are as a running server has them.
    call(1).await;
    stored_call(&client, &address, &sid(1)).await.unwrap();
    assert_eq!(readiness(&client, &address).await.unwrap().0, StatusCode::OK);

    // The disk is full: no file of the database may grow.
    let files = database_files(dir.path());
    let wal = files.iter().find(|(name, _)| name.ends_with("-wal"));
    let (_, wal) = *wal.unwrap_or_else(|| panic!("no write-ahead log: {files:?}"));
    limit_file_size(server.child.id(), Some(wal));
    let ping = client
        .post(format!("{address}/rtbs.json"))
        .json(&json!({"key": "demo-rtb-key-auto-insurance-0001", "publisher_id": "pub-001", "caller_number": "+14155559876"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ping.status(),
        StatusCode::OK,
        "an RTB ping is answered all the same (before the calls take every buyer's slot)"
    );
    let during: Vec<u32> = (2..=21).collect();
    futures_util::future::join_all(during.iter().map(|&n| call(n))).await;
    let ended = [2, 3];
    for n in ended {
        let over = provider
            .webhook(&format!("{address}/voice/status"), &call_over(&sid(n)))
            .await;
        assert_eq!(over.status(), StatusCode::NO_CONTENT);
    }
    eventually("/readyz fails while saves fail", || async {
        match readiness(&client, &address).await? {
            (StatusCode::SERVICE_UNAVAILABLE, body) if body["status"] == "unavailable" => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    // The fault is real: the calls are not stored meanwhile.
    let unstored = stored_call(&client, &address, &sid(4)).await;
    assert!(unstored.is_err(), "stored on a full disk: {unstored:?}");
    assert_eq!(
        database_files(dir.path())
            .iter()
            .find(|(name, _)| name.ends_with("-wal"))
            .unwrap()
            .1,
        wal
    );

    // Space comes back. Every call answered meanwhile is stored, in full, within seconds.
    limit_file_size(server.child.id(), None);
    let freed = Instant::now();
    for &n in &during {
        let sid = sid(n);
        let call = eventually(&format!("call {n} stored"), || {
            stored_call(&client, &address, &sid)
        })
        .await;
        if ended.contains(&n) {
            assert_eq!(call["state"], "ended", "{call}");
        }
    }
    let stored_after = freed.elapsed();
    assert!(
        stored_after < Duration::from_secs(10),
        "stored {stored_after:?} after space came back"
    );
    eventually("/readyz is ready again", || async {
        match readiness(&client, &address).await? {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    eventually("the ended calls' postbacks delivered", || async {
        let delivered = api(&client, &address, "/postbacks?status=delivered").await?;
        let count = delivered["data"].as_array().map_or(0, Vec::len);
        let received = postbacks.lock().unwrap().len();
        if count == ended.len() && received == ended.len() {
            Ok(())
        } else {
            Err(format!("{count} delivered, {received} received: {delivered}"))
        }
    })
    .await;
    eventually("the RTB ping logged", || async {
        let logged = api(&client, &address, "/rtb").await?;
        match logged["data"].as_array().map_or(0, Vec::len) {
            1 => Ok(()),
            _ => Err(logged.to_string()),
        }
    })
    .await;
    // A new call is stored as it is answered, as before the disk filled up.
    call(22).await;
    stored_call(&client, &address, &sid(22)).await.unwrap();

    // The outage was logged once each way, with its cause, not once per retry.
    let log = server.lines_until("the database takes writes again");
    let failing: Vec<_> = log
        .iter()
        .filter(|line| line.contains("the database does not take writes"))
        .collect();
    assert_eq!(failing.len(), 1, "{log:#?}");
    assert!(
        failing[0].contains("disk I/O error") || failing[0].contains("full"),
        "{}",
        failing[0]
    );
    let retries = log
        .iter()
        .filter(|line| line.contains("could not be saved yet"))
        .count();
    assert_eq!(retries, 0, "{log:#?}");

    // The disk fills up again while only an RTB ping comes: no call's save is owed, and yet
    // readiness sees the disk freed (by a write of its own), as it must when a load balancer
    // that took the node out sends it nothing.
    let (_, wal) = *database_files(dir.path())
        .iter()
        .find(|(name, _)| name.ends_with("-wal"))
        .unwrap();
    limit_file_size(server.child.id(), Some(wal));
    let ping = client
        .post(format!("{address}/rtbs.json"))
        .json(&json!({"key": "demo-rtb-key-auto-insurance-0001", "publisher_id": "pub-001", "caller_number": "+14155559875"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    let failing = server.wait_for("the database does not take writes");
    assert!(failing.contains("RTB log"), "{failing}");
    assert_eq!(
        readiness(&client, &address).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    limit_file_size(server.child.id(), None);
    eventually("/readyz is ready again without traffic", || async {
        match readiness(&client, &address).await? {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    eventually("the second RTB ping logged", || async {
        let logged = api(&client, &address, "/rtb").await?;
        match logged["data"].as_array().map_or(0, Vec::len) {
            2 => Ok(()),
            _ => Err(logged.to_string()),
        }
    })
    .await;
}
