//! The `switchboard` binary as an operator runs it.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use crate::helpers::{ADMIN_TOKEN, AUTH_TOKEN, SUPERVISOR_TOKEN, expect_json};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// How long a server may take to log what a test waits for (start-up, a drain, an exit).
const LOG_PATIENCE: Duration = Duration::from_secs(60);

/// The binary in `dir`, with none of the developer's own settings leaking in.
pub(crate) fn switchboard(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    let others = ["SWITCHBOARD_CONFIG", "RUST_LOG"];
    for key in switchboard::config::KEYS.iter().chain(&others) {
        command.env_remove(key);
    }
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run switchboard")
}

/// A running `serve`, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with(dir, args, &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN)])
    }

    pub(crate) fn start_with(dir: &Path, args: &[&str], settings: &[(&str, &str)]) -> Self {
        Self::spawn(Self::command(dir, args, settings))
    }

    /// The command [`Server::start_with`] runs, for a test to add to it.
    pub(crate) fn command(dir: &Path, args: &[&str], settings: &[(&str, &str)]) -> Command {
        let mut command = switchboard(dir);
        // Receivers in tests listen on loopback over http; PostgreSQL needs a secrets key.
        command
            .env("POSTBACK_ALLOW_HTTP", "true")
            .env("POSTBACK_ALLOW_PRIVATE_NETWORKS", "true");
        let postgres =
            (settings.iter()).any(|(key, url)| *key == "DATABASE_URL" && url.starts_with("postgres"));
        if postgres {
            command.env("SECRETS_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        }
        command
            .args(args)
            .envs(settings.iter().copied())
            .env("BIND", "127.0.0.1:0")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SUPERVISOR_TOKENS", SUPERVISOR_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Starts `command`, reading its log.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a log line containing `needle` and returns it; fails after [`LOG_PATIENCE`],
    /// however much else is logged meanwhile.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        self.lines_until(needle).pop().expect("the line waited for")
    }

    /// Every line logged from here until one containing `needle`, that one included; fails
    /// after [`LOG_PATIENCE`].
    pub(crate) fn lines_until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + LOG_PATIENCE;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    lines.push(line);
                    if found {
                        return lines;
                    }
                }
                Err(e) => panic!("no log line with {needle:?} in {LOG_PATIENCE:?}: {e}"),
            }
        }
    }

    /// Every line logged from here until the process exits; fails if it has not exited after
    /// [`LOG_PATIENCE`].
    pub(crate) fn remaining_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + LOG_PATIENCE;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "still running after {LOG_PATIENCE:?}; it logged:\n{}",
                        lines.join("\n")
                    )
                }
            }
        }
    }

    /// Sends SIGTERM, as a process supervisor stopping the service does.
    pub(crate) fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
    }

    /// The address from the "listening on" line.
    pub(crate) fn address(&self) -> String {
        let line = self.wait_for("Switchboard listening on ");
        let rest = line.split("listening on ").nth(1).expect("an address");
        rest.split_whitespace().next().expect("an address").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[actix_web::test]
async fn serve_demo_starts_on_a_fresh_machine_and_says_where_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    {
        let server = Server::start(dir.path(), &["serve", "--demo"]);
        let imported = server.wait_for("demo plan imported");
        assert!(imported.contains("campaigns: 2 created"), "{imported}");
        let address = server.address();
        let health = client.get(format!("{address}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let campaigns = client
            .get(format!("{address}/api/v1/campaigns"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let campaigns = expect_json(campaigns, StatusCode::OK).await;
        assert_eq!(campaigns["data"].as_array().unwrap().len(), 2);
    }
    assert!(
        dir.path().join("switchboard.db").exists(),
        "the embedded database is a file in the working directory"
    );

    let server = Server::start(dir.path(), &["serve", "--demo"]);
    let imported = server.wait_for("demo plan imported");
    assert!(
        imported.contains("campaigns: 0 created, 0 updated, 2 unchanged"),
        "{imported}"
    );
}

#[actix_web::test]
async fn sigterm_fails_readiness_serves_on_for_the_drain_then_stops_cleanly() {
    use crate::{
        helpers::TestApp,
        provider::{CALLER, MAIN, dialed, incoming, sid},
    };

    let dir = tempfile::tempdir().unwrap();
    let settings = [("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("DRAIN_SECONDS", "2")];
    let mut server = Server::start_with(dir.path(), &["serve", "--demo"], &settings);
    let address = server.address();
    let client = reqwest::Client::new();
    let status_of = |path: &str| client.get(format!("{address}{path}")).send();
    assert_eq!(status_of("/readyz").await.unwrap().status(), StatusCode::OK);
    let mut events = (client.get(format!("{address}/api/v1/events")))
        .bearer_auth(SUPERVISOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    server.terminate();
    server.wait_for("/readyz fails");
    let draining = Instant::now();
    // Load balancers are told to send new calls elsewhere; everything else is still served,
    // a call that reaches this node all the same included.
    let readyz = status_of("/readyz").await.unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        readyz.json::<serde_json::Value>().await.unwrap()["status"],
        "stopping"
    );
    assert_eq!(status_of("/healthz").await.unwrap().status(), StatusCode::OK);
    let provider = TestApp::signing_client();
    let url = format!("{address}/voice/incoming");
    let (number, _) = dialed(provider.webhook(&url, &incoming(&sid(1), CALLER, MAIN)).await).await;
    assert_eq!(number, "+14155550101", "dialed during the drain");

    // Then the stream ends, rather than holding the stop up: well within the drain and the
    // 10 s the server would otherwise wait for it.
    let ended = tokio::time::timeout(Duration::from_secs(7), async {
        while events.chunk().await.unwrap_or(None).is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream was not closed");
    // The drain lasts as configured: the requests in flight are finished 2 s after /readyz
    // began failing, not before.
    server.wait_for("finishing the requests in flight");
    let drained = draining.elapsed();
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(8)).contains(&drained),
        "drained for {drained:?}, not 2 s"
    );
    // …and the server stops, successfully.
    server.wait_for("stopped");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The README's second command: a simulated provider against the demo server.
#[actix_web::test]
async fn simulate_runs_calls_against_the_demo_server_and_fails_loudly_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["serve", "--demo"]);
    let address = server.address();
    let output = run(switchboard(dir.path())
        .args(["simulate", "--url", &address, "--calls", "12", "--seed", "5"])
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("SWITCHBOARD_TOKEN", SUPERVISOR_TOKEN));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("12 calls in") && stdout.contains("failed 0"),
        "{stdout}"
    );
    assert!(stdout.contains("switchboard  calls 12"), "{stdout}");

    // Nobody listening: every call fails, and so does the command.
    drop(server);
    let output =
        run(switchboard(dir.path()).args(["simulate", "--url", &address, "--calls", "2", "--quiet"]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 of 2 calls failed"), "{stderr}");
}

/// An RTB key no campaign has: pings carrying it are refused, and logged.
const RTB_KEY: &str = "rtb-key-in-every-spelling-5c1f";

/// Tokens' secrets, the configured ones and those the API issues, and RTB keys however their
/// parameter is spelt, appear in no log line, even at the most verbose level, whatever is done
/// with them.
#[actix_web::test]
async fn no_secret_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("DRAIN_SECONDS", "0"),
        ("RUST_LOG", "trace"),
    ];
    let server = Server::start_with(dir.path(), &["serve", "--demo"], &settings);
    let address = server.address();
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{address}/api/v1{path}");

    let issued = (client.post(api("/tokens")).bearer_auth(ADMIN_TOKEN))
        .json(&serde_json::json!({ "name": "grafana", "role": "supervisor" }))
        .send()
        .await
        .unwrap();
    let issued = expect_json(issued, StatusCode::CREATED).await;
    let (id, secret) = (issued["id"].as_str().unwrap(), issued["token"].as_str().unwrap());
    let read = client
        .get(api("/calls/live"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let refused = client
        .post(api("/companies"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let rotated = (client
        .post(api(&format!("/tokens/{id}/rotate")))
        .bearer_auth(ADMIN_TOKEN))
    .send()
    .await
    .unwrap();
    let rotated = expect_json(rotated, StatusCode::CREATED).await;
    let stale = client
        .get(api("/calls/live"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let key = (client.put(api("/campaigns/00000000-0000-7000-8000-000000000000/rtb_key")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), StatusCode::NOT_FOUND);
    // An RTB key in every spelling the server reads as a key (or as another secret).
    for spelling in [
        "key",
        "Key",
        "KEY",
        "%6Bey",
        "ke%79",
        "%4B%45%59",
        "key+",
        "api_key",
        "Token",
    ] {
        let ping = client
            .post(format!(
                "{address}/rtbs.json?caller_number=%2B14155550123&{spelling}={RTB_KEY}"
            ))
            .send()
            .await
            .unwrap();
        // Refused as an unknown key (or, spelt as another secret, as no key at all).
        assert!(
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::BAD_REQUEST
            ]
            .contains(&ping.status()),
            "{spelling}: {}",
            ping.status()
        );
    }

    server.terminate();
    let lines = server.remaining_lines();
    assert!(
        lines.iter().any(|line| line.contains("issued an API token")),
        "logged at all"
    );
    // Nor a digest: the store's copy of a token is not for logs either.
    let digest = switchboard::domain::access::KeyDigest::of(secret).to_hex();
    let secrets = [
        ADMIN_TOKEN,
        SUPERVISOR_TOKEN,
        AUTH_TOKEN,
        &secret[4..],
        &rotated["token"].as_str().unwrap()[4..],
        &digest,
        RTB_KEY,
    ];
    for line in &lines {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
}

/// A change the database could not take when it was made (the file locked by another writer)
/// is written when the server stops, not lost with the process.
#[actix_web::test]
async fn a_change_the_database_could_not_take_is_written_when_the_server_stops() {
    use sqlx::{Connection, Executor};

    use crate::{
        helpers::TestApp,
        provider::{CALLER, MAIN, dialed, incoming, sid},
    };

    let dir = tempfile::tempdir().unwrap();
    let settings = [("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("DRAIN_SECONDS", "0")];
    let mut server = Server::start_with(dir.path(), &["serve", "--demo"], &settings);
    let address = server.address();
    sqlx::any::install_default_drivers();
    let database = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let mut writer = sqlx::AnyConnection::connect(&database).await.unwrap();
    writer.execute("BEGIN EXCLUSIVE").await.unwrap();

    // The call is answered all the same, its save left for later.
    let provider = TestApp::signing_client();
    let url = format!("{address}/voice/incoming");
    let (number, _) = dialed(provider.webhook(&url, &incoming(&sid(1), CALLER, MAIN)).await).await;
    assert_eq!(number, "+14155550101");
    writer.execute("ROLLBACK").await.unwrap();

    // Stopped long before the next retry would have come.
    server.terminate();
    server.wait_for("stopped");
    assert!(server.child.wait().unwrap().success());

    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM calls WHERE call_sid = $1")
        .bind(sid(1))
        .fetch_one(&mut writer)
        .await
        .unwrap();
    assert_eq!(count, 1, "the call was written on the way out");
}

/// `kill -9` in the middle of a call, then a new process on the same database: the call's next
/// webhook continues it from the store.
#[actix_web::test]
async fn after_kill_9_mid_call_the_next_webhook_continues_the_call() {
    use crate::{
        helpers::TestApp,
        provider::{CALLER, MAIN, dial_ended, dialed, incoming, path_of, sid},
    };

    let dir = tempfile::tempdir().unwrap();
    let provider = TestApp::signing_client();
    let mut first = Server::start(dir.path(), &["serve", "--demo"]);
    let address = first.address();
    let (number, action) = dialed(
        provider
            .webhook(
                &format!("{address}/voice/incoming"),
                &incoming(&sid(1), CALLER, MAIN),
            )
            .await,
    )
    .await;
    assert_eq!(number, "+14155550101", "Acme first");
    assert!(path_of(&action).ends_with("/attempts/1/action"), "{action}");
    first.child.kill().unwrap(); // SIGKILL: no shutdown of any kind
    first.child.wait().unwrap();

    // The provider's next request, the dial's action, reaches a new process.
    let second = Server::start(dir.path(), &["serve"]);
    let address = second.address();
    let path = action.split_once("/voice/").map(|(_, path)| path).unwrap();
    let (number, action) = dialed(
        provider
            .webhook(
                &format!("{address}/voice/{path}"),
                &dial_ended(&sid(1), "no-answer", 0),
            )
            .await,
    )
    .await;
    assert_ne!(number, "+14155550101", "Acme was tried: the next buyer is dialed");
    assert!(path_of(&action).ends_with("/attempts/2/action"), "{action}");

    let call = reqwest::Client::new()
        .get(format!("{address}/api/v1/calls/{}", sid(1)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let call = expect_json(call, StatusCode::OK).await;
    assert_eq!(call["state"], "dialing");
    assert_eq!(call["dials"].as_array().unwrap().len(), 2, "{call}");
    assert_eq!(call["dials"][0]["status"], "no-answer");
}

#[actix_web::test]
async fn serving_unsigned_webhooks_must_be_asked_for_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(switchboard(dir.path())
        .args(["serve", "--demo"])
        .env("BIND", "127.0.0.1:0"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TWILIO_AUTH_TOKEN is not set") && stderr.contains("WEBHOOK_SIGNATURES=off"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "refused before anything was touched"
    );

    let server = Server::start_with(dir.path(), &["serve", "--demo"], &[("WEBHOOK_SIGNATURES", "off")]);
    let warning = server.wait_for("WEBHOOK_SIGNATURES=off");
    assert!(warning.contains("NOT checked"), "{warning}");
    let unsigned = reqwest::Client::new()
        .post(format!("{}/voice/incoming", server.address()))
        .form(&[
            ("CallSid", "CA00000000000000000000000000000001"),
            ("From", "+14155550123"),
            ("To", "+18005550100"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::OK, "taken unsigned, as asked");
    assert!(unsigned.text().await.unwrap().contains("<Dial"));
}

#[test]
fn a_bad_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(switchboard(dir.path()).arg("migrate").env("BIND", "everywhere"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BIND is invalid"), "{stderr}");

    let output = run(switchboard(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", "mysql://db/switchboard"));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
    assert!(!dir.path().join("switchboard.db").exists(), "nothing was created");
}

#[test]
fn a_settings_file_can_hold_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.toml"),
        "database_url = \"sqlite://from-file.db\"\n",
    )
    .unwrap();
    let output = run(switchboard(dir.path()).args(["--config", "settings.toml", "migrate"]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("from-file.db").exists());
}

#[test]
fn migrate_and_import_report_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(switchboard(dir.path()).arg("migrate"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("switchboard.db").exists());

    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo-plan.toml");
    let output = run(switchboard(dir.path()).args(["import", demo]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("buyers: 5 created"),
        "{stdout}"
    );
    let output = run(switchboard(dir.path()).args(["import", demo]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("buyers: 0 created, 0 updated, 5 unchanged"));

    std::fs::write(
        dir.path().join("bad.toml"),
        "[[companies]]\nname = \"X\"\n[[companies.campaigns]]\nname = \"C\"\nbuyers = [{ buyer = \"Ghost\" }]\n",
    )
    .unwrap();
    let output = run(switchboard(dir.path()).args(["import", "bad.toml"]));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("companies[0].campaigns[0].buyers[0].buyer"),
        "{stderr}"
    );

    let output = run(switchboard(dir.path()).args(["import", "--check", demo]));
    assert!(output.status.success());
}
