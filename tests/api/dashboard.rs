//! The supervisors' live page in a real browser: headless Chromium driven through chromedriver.
//!
//! The tests need Debian's `chromium` and `chromium-driver`. Without them they are skipped with
//! a notice, unless `CI` is set, where a missing browser is a failure: CI must run them (`.ci/run`
//! installs both).

use std::{
    future::Future,
    net::TcpListener,
    os::unix::process::CommandExt,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actix_web::rt::time::{sleep, timeout};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::plan::Plan;
use tempfile::TempDir;

use crate::{
    helpers::{Engine, SUPERVISOR_TOKEN, TestApp, expect_json},
    provider::{CALLER, MAIN, call_over, dial_ended, dialed, incoming, leg_status, sibling, sid},
};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PLAN: &str = include_str!("../fixtures/plans/acme.toml");
/// How long the page may take to show what a test waits for: less than the 10 s an ended call
/// stays listed, so that a wait for an ended row fails rather than misses it.
const PATIENCE: Duration = Duration::from_secs(8);
/// How long one test's browser session may take in all: a hang fails the test, not CI.
const SESSION_LIMIT: Duration = Duration::from_secs(60);

/// chromedriver on a free loopback port, in a process group of its own: dropping it kills the
/// group, the browser it started included.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    async fn start(dir: &Path) -> Self {
        let log = dir.join("chromedriver.log");
        let mut last_error = String::new();
        // A port found free may be taken before chromedriver binds it: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver");
            let mut driver = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
            };
            match driver.ready().await {
                Ok(()) => return driver,
                Err(error) => last_error = error,
            }
        }
        panic!("chromedriver did not start: {last_error}");
    }

    /// Waits until chromedriver answers its status endpoint.
    async fn ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            let answer = client
                .get(format!("{}/status", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(response) = answer
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(());
            }
            sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no answer from {} in {PATIENCE:?}", self.url))
    }

    fn print_log(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        eprintln!("chromedriver's log ends with:\n{tail}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it left behind. chromedriver leads its
        // group (`process_group(0)`), so the group's id is its process id.
        let killed = libc::pid_t::try_from(self.child.id())
            // SAFETY: killpg only sends a signal; the group is the one chromedriver was started in.
            .is_ok_and(|group| unsafe { libc::killpg(group, libc::SIGKILL) } == 0);
        if !killed {
            self.child.kill().ok();
        }
        self.child.wait().ok();
    }
}

/// A headless Chromium with a profile of its own, through its own chromedriver.
struct Browser {
    client: Client,
    driver: Driver,
    _dir: TempDir,
}

impl Browser {
    /// `None` when the browser is not installed here (see the module documentation).
    async fn start() -> Option<Self> {
        if !(Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the browser test: install chromium and chromium-driver"
            );
            crate::helpers::skipped("install chromium and chromium-driver to run the browser tests");
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let profile = dir.path().join("profile");
        let driver = Driver::start(dir.path()).await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    // Not `--disable-crashpad-for-testing`: with it, Chromium 156 aborts its
                    // child processes ("FD ownership violation") and pages never load.
                    "--disable-crash-reporter",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let mut builder = ClientBuilder::native();
        builder.capabilities(capabilities);
        let connect = builder.connect(&driver.url);
        let client = match timeout(SESSION_LIMIT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                driver.print_log();
                panic!("start a browser session: {error}");
            }
            Err(_) => {
                driver.print_log();
                panic!("no browser session in {SESSION_LIMIT:?}");
            }
        };
        Some(Self {
            client,
            driver,
            _dir: dir,
        })
    }

    /// Runs a test, for at most [`SESSION_LIMIT`], then ends the browser session whether the
    /// test passed or not.
    async fn run(self, test: impl Future<Output = ()>) {
        let outcome = timeout(SESSION_LIMIT, AssertUnwindSafe(test).catch_unwind()).await;
        match timeout(PATIENCE, self.client.clone().close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not end the browser session: {error}"),
            Err(_) => eprintln!("the browser session did not end in {PATIENCE:?}"),
        }
        if !matches!(outcome, Ok(Ok(()))) {
            self.driver.print_log();
        }
        // Kills chromedriver's process group, the browser included.
        drop(self);
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the test took longer than {SESSION_LIMIT:?}"),
        }
    }
}

/// Runs `script` in the page (its arguments as `arguments[i]`) until it returns something other
/// than `null` or `false`, and returns that; fails the test with what the page shows if that
/// takes longer than [`PATIENCE`].
async fn until(browser: &Client, what: &str, script: &str, args: &[Value]) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = (browser.execute(script, args.to_vec()).await)
            .unwrap_or_else(|error| panic!("run the page script for {what}: {error}"));
        if !(value.is_null() || value == false) {
            return value;
        }
        if Instant::now() > deadline {
            let page = (browser.execute("return document.body.innerText", vec![]).await).unwrap_or_default();
            panic!(
                "waited {PATIENCE:?} for {what}; the page shows:\n{}",
                page.as_str().unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The row of call `arguments[0]` once every cell named in `arguments[1]` shows its text (the
/// state cell: contains it), as `{column: text}`.
const ROW: &str = r##"
const [sid, expected] = arguments;
const row = document.querySelector(`#calls-body tr[data-call-sid="${CSS.escape(sid)}"]`);
if (!row) return null;
const names = ["caller", "campaign", "buyer", "state", "time", "attempts", "started"];
const cells = Object.fromEntries(names.map((name, i) => [name, row.cells[i].textContent]));
cells.state = row.querySelector(".state").textContent;
const shows = ([name, text]) => name === "state" ? cells.state.includes(text) : cells[name] === text;
return Object.entries(expected).every(shows) ? cells : null;
"##;

/// The timeline in the call panel once it lists an entry of kind `arguments[0]`: each entry's
/// kind and text.
const TIMELINE: &str = r##"
const panel = document.getElementById("call-panel");
const entries = [...document.querySelectorAll("#timeline > li[data-kind]")];
if (panel.hidden || !entries.some((li) => li.dataset.kind === arguments[0])) return null;
return entries.map((li) => ({ kind: li.dataset.kind, text: li.textContent }));
"##;

/// The time in state of call `arguments[0]` once it is not `arguments[1]`; `null` (keep waiting)
/// while the call is not listed.
const TIME_IN_STATE: &str = r##"
const [sid, before] = arguments;
const row = document.querySelector(`#calls-body tr[data-call-sid="${CSS.escape(sid)}"]`);
if (!row) return null;
const time = row.cells[4].textContent;
return time !== "" && time !== before ? time : null;
"##;

/// No element made of a caller id anywhere in the page, and no script of one run, for a second
/// (so that an `onerror` has had its chance): `true` then, or what was found at once.
const NO_MARKUP: &str = r##"
const done = arguments[arguments.length - 1];
const found = () => document.querySelector("img") !== null || window.__injected !== undefined;
const until = Date.now() + 1000;
const poll = () => {
  if (found()) done(false);
  else if (Date.now() > until) done(true);
  else setTimeout(poll, 50);
};
poll();
"##;

/// The call panel once its title is `arguments[0]` and its timeline has a webhook entry: that
/// entry's `<details>` opened, the parameters they show.
const HOSTILE_PANEL: &str = r##"
const panel = document.getElementById("call-panel");
if (panel.hidden || document.getElementById("panel-title").textContent !== arguments[0]) return null;
const details = document.querySelector('#timeline > li[data-kind="webhook"] details');
if (!details) return null;
if (!details.open) details.querySelector("summary").click();
return details.open && details.querySelector("pre").textContent;
"##;

/// The token form's error once it is shown, with the form, and says `arguments[0]`.
const TOKEN_ERROR: &str = r##"
const error = document.getElementById("token-error");
return !document.getElementById("login").hidden && !error.hidden
  && error.textContent.includes(arguments[0]) && error.textContent;
"##;

/// Today's counters of campaign `arguments[0]` (by name) once `calls` and `live` read
/// `arguments[1]` and `arguments[2]`.
const COUNTERS: &str = r##"
const [campaign, calls, live] = arguments;
const row = [...document.querySelectorAll("#stats-body tr")]
  .find((tr) => tr.cells[0].textContent === campaign);
if (!row) return null;
const names = ["campaign", "calls", "live", "connected", "converted", "duplicates_avoided",
  "fallback_used", "redirected", "abandoned", "blocked", "dropped", "revenue", "payout"];
const cells = Object.fromEntries(names.map((name, i) => [name, row.cells[i].textContent]));
return cells.calls === calls && cells.live === live ? cells : null;
"##;

/// The dashboard opened with a supervisor's `#token=` link, once its event stream is live.
async fn open_signed_in(app: &TestApp, browser: &Client) {
    browser
        .goto(&app.url(&format!("/dashboard#token={SUPERVISOR_TOKEN}")))
        .await
        .expect("open the dashboard");
    until(
        browser,
        "the event stream to be live",
        r##"return document.getElementById("connection").dataset.state === "live""##,
        &[],
    )
    .await;
}

/// A browser, and the service on the test plan; `None` (skip) where there is no browser.
async fn start() -> Option<(Browser, TestApp)> {
    start_on(PLAN).await
}

/// A browser, and the service on `plan`.
async fn start_on(plan: &str) -> Option<(Browser, TestApp)> {
    let browser = Browser::start().await?;
    let app = TestApp::start_with_plan(Engine::Sqlite, &Plan::parse(plan).unwrap())
        .await
        .expect("SQLite is always there");
    Some((browser, app))
}

#[actix_web::test]
async fn a_supervisor_watches_a_call_arrive_connect_and_end_without_reloading() {
    let Some((browser, app)) = start().await else {
        return;
    };
    let client = browser.client.clone();
    browser.run(watch_a_call(&app, client)).await;
}

async fn watch_a_call(app: &TestApp, browser: Client) {
    open_signed_in(app, &browser).await;
    let address = browser.current_url().await.unwrap();
    assert_eq!(
        address.fragment(),
        None,
        "the token leaves the address: {address}"
    );
    let kept = (browser.execute(r##"return sessionStorage.getItem("switchboard.token")"##, vec![]))
        .await
        .unwrap();
    assert_eq!(kept, SUPERVISOR_TOKEN, "the token is kept for the tab");
    browser.execute("window.__noReload = 1", vec![]).await.unwrap();

    // A call arrives and Acme Auto's phone rings.
    let call = sid(1);
    let arrived = app
        .webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN))
        .await;
    let (number, action) = dialed(arrived).await;
    assert_eq!(number, "+14155550101");
    let expected = json!({
        "caller": CALLER, "campaign": "Main", "buyer": "Acme Auto", "state": "dialing", "attempts": "1",
    });
    let row = until(&browser, "the call's row, dialing", ROW, &[json!(call), expected]).await;
    assert!(row["time"].as_str().unwrap().starts_with("0:0"), "{row}");

    // Acme Auto answers.
    let status = app.url(&format!("/voice/calls/{call}/attempts/1/status"));
    let answered = app.webhook(&status, &leg_status(&call, "in-progress")).await;
    assert!(answered.status().is_success(), "{}", answered.status());
    let connected = json!({"state": "connected", "buyer": "Acme Auto"});
    until(
        &browser,
        "the call's row, connected",
        ROW,
        &[json!(call), connected],
    )
    .await;
    // The time in state ticks on its own: no webhook is sent while it is watched.
    let before = until(
        &browser,
        "the time in state",
        TIME_IN_STATE,
        &[json!(call), json!(null)],
    )
    .await;
    let ticked = until(
        &browser,
        "the time in state to tick",
        TIME_IN_STATE,
        &[json!(call), before.clone()],
    )
    .await;
    assert!(
        ticked.as_str().unwrap().starts_with("0:0"),
        "{before} then {ticked}"
    );
    let kept_page = browser
        .execute("return window.__noReload === 1", vec![])
        .await
        .unwrap();
    assert_eq!(kept_page, true, "the page updated without reloading");

    // The call's timeline, with the routing decision.
    (browser.find(Locator::Css(&format!(
        r##"#calls-body tr[data-call-sid="{call}"]"##
    ))))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let timeline = until(&browser, "the call's timeline", TIMELINE, &[json!("answered")]).await;
    let entries = timeline.as_array().unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"webhook"), "{timeline}");
    let decision = (entries.iter())
        .find(|e| e["kind"] == "decision")
        .unwrap_or_else(|| panic!("a decision: {timeline}"));
    let decision = decision["text"].as_str().unwrap();
    assert!(decision.contains("dial Acme Auto"), "{decision}");
    assert!(decision.contains("Acme Auto: chosen"), "{decision}");
    assert!(
        entries[0]["text"].as_str().unwrap().contains("incoming"),
        "{timeline}"
    );

    // The conversation ends, converted: the row says so, the panel follows, the counters count it.
    let talked = app.webhook(&action, &dial_ended(&call, "completed", 120)).await;
    assert_eq!(talked.status(), StatusCode::OK);
    let over = app.webhook(&app.url("/voice/status"), &call_over(&call)).await;
    assert_eq!(over.status(), StatusCode::NO_CONTENT);
    let ended = json!({"state": "ended · connected · converted"});
    until(&browser, "the call's row, ended", ROW, &[json!(call), ended]).await;
    let timeline = until(&browser, "the timeline's end", TIMELINE, &[json!("ended")]).await;
    assert!(timeline.to_string().contains("dial_ended"), "{timeline}");
    let counters = until(
        &browser,
        "today's counters",
        COUNTERS,
        &[json!("Main"), json!("1"), json!("0")],
    )
    .await;
    assert_eq!(counters["connected"], "1", "{counters}");
    assert_eq!(counters["converted"], "1", "{counters}");
    assert_eq!(counters["dropped"], "0", "{counters}");
    assert_eq!(counters["revenue"], "20.00", "{counters}");
    assert_eq!(counters["payout"], "10.00", "{counters}");

    // Caller ids are the caller's to choose: shown as text, never as markup.
    let hostile = "<img src=x onerror=window.__injected=1>";
    let call = sid(2);
    app.webhook(&app.url("/voice/incoming"), &incoming(&call, hostile, MAIN))
        .await;
    until(
        &browser,
        "the hostile caller's row",
        ROW,
        &[json!(call), json!({"caller": hostile})],
    )
    .await;
    // In the call's panel too, its webhook's parameters opened. (The first call's panel is
    // closed first: it lies over the table.)
    (browser.find(Locator::Id("panel-close")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    (browser.find(Locator::Css(&format!(
        r##"#calls-body tr[data-call-sid="{call}"]"##
    ))))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let panel = until(
        &browser,
        "the hostile caller's timeline",
        HOSTILE_PANEL,
        &[json!(format!("Call from {hostile}"))],
    )
    .await;
    assert!(panel.as_str().unwrap().contains(hostile), "{panel}");
    let clean = browser.execute_async(NO_MARKUP, vec![]).await.unwrap();
    assert_eq!(clean, true, "a caller id is never read as HTML");
    let kept_page = browser
        .execute("return window.__noReload === 1", vec![])
        .await
        .unwrap();
    assert_eq!(kept_page, true, "still the same page");
}

/// The call panel's dials and recordings once it lists a recording: each dial's text, and each
/// recording's text, link address and link text.
const DIALS_AND_RECORDINGS: &str = r##"
const panel = document.getElementById("call-panel");
const recordings = [...document.querySelectorAll("#panel-recordings > li[data-recording]")];
if (panel.hidden || recordings.length === 0) return null;
return {
  dials: [...document.querySelectorAll("#panel-dials > li")].map((li) => li.textContent),
  recordings: recordings.map((li) => {
    const link = li.querySelector("a");
    return { text: li.textContent, href: link && link.getAttribute("href"), link: link && link.textContent };
  }),
};
"##;

#[actix_web::test]
async fn a_supervisor_sees_why_buyers_were_kept_out_the_press_1_the_recording_and_the_payout() {
    let plan = PLAN
        .replace(
            "destination = \"+14155550101\"",
            "destination = \"+14155550101\"\nscreen = \"press-1\"\nwhisper = { say = \"Call from {campaign}.\" }",
        )
        .replace("destination = \"+14155550102\"", "destination = \"+14155550102\"\nstates = [\"TX\"]")
        .replace("numbers = [\"+18005550100\"]", "numbers = [\"+18005550100\"]\nrecord = \"from-answer\"")
        .replace(
            "duplicate_caller_handling = true\n",
            "duplicate_caller_handling = true\n\n[[companies.publishers]]\nname = \"Search\"\n\
             numbers = [\"+18005550100\"]\npayout = { rule = \"per_call\", amount = 5 }\n",
        );
    let Some((browser, app)) = start_on(&plan).await else {
        return;
    };
    let client = browser.client.clone();
    browser.run(watch_a_screened_recorded_call(&app, client)).await;
}

async fn watch_a_screened_recorded_call(app: &TestApp, browser: Client) {
    browser
        .goto(&app.url(&format!("/dashboard#token={SUPERVISOR_TOKEN}")))
        .await
        .unwrap();
    let call = sid(7);
    let arrived = app
        .webhook(
            &app.url("/voice/incoming"),
            &format!("{}&FromState=CA", incoming(&call, CALLER, MAIN)),
        )
        .await;
    let (_, action) = dialed(arrived).await;
    let attempt = |callback: &str| sibling(&action, callback);
    let leg = |extra: &str| {
        format!(
            "CallSid=CA99999999999999999999999999999999&ParentCallSid={call}&CallStatus=in-progress{extra}"
        )
    };
    assert_eq!(
        app.webhook(&attempt("whisper"), &leg("")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.webhook(&attempt("screen"), &leg("&Digits=1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.webhook(&action, &dial_ended(&call, "completed", 120))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.webhook(&app.url("/voice/status"), &call_over(&call))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let media =
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let recording = serde_urlencoded::to_string([
        ("CallSid", call.as_str()),
        ("RecordingSid", "RE0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ("RecordingUrl", media),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "118"),
        ("RecordingChannels", "2"),
    ])
    .unwrap();
    assert_eq!(
        app.webhook(&attempt("recording"), &recording).await.status(),
        StatusCode::NO_CONTENT
    );

    until(
        &browser,
        "the call's row",
        ROW,
        &[json!(call), json!({"caller": CALLER})],
    )
    .await;
    (browser.find(Locator::Css(&format!(
        r##"#calls-body tr[data-call-sid="{call}"]"##
    ))))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let timeline = until(
        &browser,
        "the recording in the timeline",
        TIMELINE,
        &[json!("recorded")],
    )
    .await;
    let text_of = |kind: &str| {
        (timeline.as_array().unwrap().iter())
            .find(|e| e["kind"] == kind)
            .and_then(|e| e["text"].as_str())
            .unwrap_or_else(|| panic!("no {kind}: {timeline}"))
            .to_owned()
    };
    let decision = text_of("decision");
    assert!(
        decision.contains("Budget Cover: not licensed where the caller is"),
        "{decision}"
    );
    assert!(decision.contains("caller in CA"), "{decision}");
    assert!(text_of("whispered").contains("press 1"), "{timeline}");
    assert!(text_of("screened").contains("pressed 1"), "{timeline}");
    assert!(text_of("recorded").contains("118 s"), "{timeline}");
    assert!(
        text_of("publisher_settled").ends_with("Search earns 5.00"),
        "{timeline}"
    );

    let panel = until(
        &browser,
        "the call's dials and recordings",
        DIALS_AND_RECORDINGS,
        &[],
    )
    .await;
    assert!(
        panel["dials"][0]
            .as_str()
            .unwrap()
            .contains("the buyer pressed 1"),
        "{panel}"
    );
    let listed = &panel["recordings"][0];
    assert_eq!(
        (listed["href"].as_str(), listed["link"].as_str()),
        (Some(media), Some("listen")),
        "{panel}"
    );
    assert!(
        listed["text"].as_str().unwrap().contains("118 s · both sides"),
        "{panel}"
    );
    let state = browser
        .execute(
            "return [...document.querySelectorAll('#panel-summary dt')].some((dt) => dt.textContent === \"Caller's state\" && dt.nextElementSibling.textContent === 'CA')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(state, true, "the summary names the caller's state");
    let summary = browser
        .execute(
            "return Object.fromEntries([...document.querySelectorAll('#panel-summary dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            summary["Publisher"].as_str(),
            summary["Publisher payout"].as_str()
        ),
        (Some("Search"), Some("5.00")),
        "{summary}"
    );
}

#[actix_web::test]
async fn a_wrong_token_gets_the_token_form_back_not_calls() {
    let Some((browser, app)) = start().await else {
        return;
    };
    let client = browser.client.clone();
    browser.run(refuse_a_wrong_token(&app, client)).await;
}

async fn refuse_a_wrong_token(app: &TestApp, browser: Client) {
    let call = sid(3);
    let arrived = app
        .webhook(&app.url("/voice/incoming"), &incoming(&call, CALLER, MAIN))
        .await;
    dialed(arrived).await;

    // A link whose token no `Authorization` header can carry: the form, saying why.
    browser
        .goto(&app.url("/dashboard#token=%E2%9C%93"))
        .await
        .expect("open the dashboard");
    until(
        &browser,
        "the malformed token's refusal",
        TOKEN_ERROR,
        &[json!("printable ASCII")],
    )
    .await;

    // A link with a token this service does not know (the same page: only the fragment changes).
    browser
        .goto(&app.url("/dashboard#token=not-a-token-of-this-service"))
        .await
        .expect("open the dashboard");
    until(&browser, "the token's refusal", TOKEN_ERROR, &[json!("refused")]).await;
    let form = browser.find(Locator::Id("token-form")).await.unwrap();
    assert!(form.is_displayed().await.unwrap(), "the token form is shown");
    let board = browser.find(Locator::Id("board")).await.unwrap();
    assert!(!board.is_displayed().await.unwrap(), "no calls are shown");
    let rows = browser.find_all(Locator::Css("#calls-body tr")).await.unwrap();
    assert!(rows.is_empty(), "no call is listed");
    let kept = (browser.execute(r##"return sessionStorage.getItem("switchboard.token")"##, vec![]))
        .await
        .unwrap();
    assert_eq!(kept, Value::Null, "a refused token is not kept");

    // The right token, through the form: the live call shows.
    let input = browser.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys(SUPERVISOR_TOKEN).await.unwrap();
    (browser.find(Locator::Css("#token-form button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let expected = json!({"caller": CALLER, "state": "dialing"});
    until(&browser, "the live call", ROW, &[json!(call), expected]).await;
    assert!(!form.is_displayed().await.unwrap(), "the form is gone");
}

/// The charts of campaign `arguments[0]` (an id) once each metric's line carries the counts of
/// `arguments[1]` (`{metric: {bucket start in epoch ms: count}}`, the buckets with calls): per
/// metric, those counts, how many points it has, its legend's total, and whether its highest
/// point is drawn above the baseline. (By bucket start, not position: the page's hour may
/// have moved on a minute from the test's.)
const CHART: &str = r##"
const [campaign, expected] = arguments;
const figure = document.querySelector(`#charts figure[data-campaign-id="${CSS.escape(campaign)}"]`);
if (!figure) return null;
const from = Date.parse(figure.dataset.from);
const size = figure.dataset.bucket === "hour" ? 3600000 : 60000;
const found = {};
for (const metric of Object.keys(expected)) {
  const line = figure.querySelector(`polyline[data-metric="${metric}"]`);
  if (!line) return null;
  const values = line.dataset.values.split(",").map(Number);
  const counts = {};
  values.forEach((n, i) => { if (n) counts[String(from + i * size)] = n; });
  const same = (a, b) => Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, n]) => b[k] === n);
  if (!same(counts, expected[metric])) return null;
  const ys = line.getAttribute("points").split(" ").map((point) => Number(point.split(",")[1]));
  const peak = values.indexOf(Math.max(...values));
  found[metric] = {
    points: ys.length,
    raised: ys[peak] < Math.max(...ys),
    total: figure.querySelector(`.legend li[data-metric="${metric}"] .total`).textContent,
  };
}
return found;
"##;

/// Each buyer's gauges, by buyer id, once they read `arguments[0]` (`{buyer_id: {gauge:
/// text}}`, `null` for a gauge not shown): per gauge, its text and its meter's value.
const GAUGES: &str = r##"
const expected = arguments[0];
const cards = [...document.querySelectorAll("#buyers article[data-buyer-id]")];
if (cards.length !== Object.keys(expected).length) return null;
const found = Object.fromEntries(cards.map((card) => [card.dataset.buyerId, Object.fromEntries(
  [...card.querySelectorAll(".gauge")].map((gauge) => [gauge.dataset.gauge, {
    text: gauge.querySelector(".value").textContent,
    now: gauge.querySelector("[role=meter]").getAttribute("aria-valuenow"),
  }]))]));
const reads = ([buyer, gauges]) => found[buyer] && Object.entries(gauges)
  .every(([name, text]) => text === null ? !found[buyer][name] : found[buyer][name] && found[buyer][name].text === text);
return Object.entries(expected).every(reads) ? found : null;
"##;

/// The call panel once it shows the story of the call from `arguments[0]` with its verdicts
/// and its RTB ping: the buyers considered, the caller name and the ping's tags, as text.
const STORY: &str = r##"
const panel = document.getElementById("call-panel");
if (panel.hidden || document.getElementById("panel-title").textContent !== `Call from ${arguments[0]}`) return null;
const verdicts = [...document.querySelectorAll('#timeline li[data-kind="decision"] .verdicts li')].map((li) => li.textContent);
const tag = document.querySelector('#panel-ping dd[data-tag="sub_id"]');
if (verdicts.length === 0 || !tag) return null;
const summary = [...document.querySelectorAll("#panel-summary dt")]
  .map((dt) => [dt.textContent, dt.nextElementSibling.textContent]);
return { verdicts, summary: Object.fromEntries(summary), tag: tag.textContent };
"##;

/// The live calls table's visible rows (their call sids) and what the filters say, once the
/// address carries `arguments[0]` in its query.
const FILTERED: &str = r##"
if (!location.search.includes(arguments[0])) return null;
const rows = [...document.querySelectorAll("#calls-body tr[data-call-sid]")].filter((tr) => !tr.hidden);
return {
  shown: rows.map((tr) => tr.dataset.callSid),
  summary: document.getElementById("filter-summary").textContent,
  empty: document.getElementById("no-calls").hidden ? null : document.getElementById("no-calls").textContent,
  charts: [...document.querySelectorAll("#charts figure")].map((figure) => figure.dataset.campaignId),
  // Read with the rest: a call arriving between two reads would make them disagree.
  listed: document.querySelectorAll("#calls-body tr").length,
};
"##;

/// Where the test writes its screenshot of the page, when asked (the README's picture).
const SCREENSHOT: &str = "SWITCHBOARD_SCREENSHOT";

#[actix_web::test]
async fn a_supervisor_reads_the_charts_and_the_caps_filters_calls_and_opens_a_calls_story() {
    let Some((browser, app)) = start_on(switchboard::plan::DEMO_PLAN).await else {
        return;
    };
    let client = browser.client.clone();
    browser.run(read_charts_and_a_story(&app, client)).await;
}

async fn read_charts_and_a_story(app: &TestApp, browser: Client) {
    browser.set_window_size(1440, 1500).await.unwrap();
    open_signed_in(app, &browser).await;

    // A morning's traffic, as the provider would send it: repeat callers, busy and unanswered
    // buyers, RTB pings before each call.
    let scenario = switchboard::simulate::Scenario {
        urls: vec![app.url("")],
        public_urls: Vec::new(),
        auth_token: Some(secrecy::SecretString::from(crate::helpers::AUTH_TOKEN)),
        calls: 40,
        concurrency: 4,
        numbers: vec![
            "+18005550100".into(),
            "+18885550100".into(),
            "+18775550100".into(),
        ],
        repeat_share: 0.5,
        outcomes: "60,20,15,5".parse().unwrap(),
        buyers: Vec::new(),
        press_1: 0.8,
        machines: 0.1,
        talk_seconds: 150.0,
        reorder: false,
        hold_ms: 0,
        rtb_key: None,
        publisher: "pub-001".into(),
        token: None,
        seed: Some(21),
        quiet: true,
    };
    let report = switchboard::simulate::run(scenario).await.unwrap();
    assert!(report.succeeded(), "{report}");

    // The charts draw what the status API says, campaign by campaign: by minute over the last
    // hour, then by hour over the last day.
    let series = charts_match_the_status_api(app, &browser, "minute").await;
    let day = charts_match_the_status_api(app, &browser, "hour").await;
    assert_eq!(day.len(), series.len(), "the same campaigns by the hour");
    let timeline = json!(series);
    let all = |metric: &str| series.iter().map(|s| total(&s[metric])).sum::<u64>();
    assert_eq!(all("calls"), 40, "{timeline}");
    for metric in ["connected", "converted", "duplicates_avoided"] {
        assert!(all(metric) > 0, "{metric}: a series with calls in it: {timeline}");
    }
    // With more than one campaign, their sum comes first.
    let first = browser
        .execute(
            r##"return document.querySelector("#charts figure").dataset.campaignId"##,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, "all");

    // Each buyer's live calls against its concurrency cap and today's count against its cap.
    let load = expect_json(app.read("/load").await, StatusCode::OK).await;
    let buyers = load["data"].as_array().unwrap();
    let shown = |view: &Value, count: &str| match (view["limit"].as_u64(), &view[count]) {
        (Some(limit), count) => json!(format!("{count} / {limit}")),
        (None, count) => json!(format!("{count} · no cap")),
    };
    // Live calls and today's count always; the other periods where the buyer is capped.
    let expected: serde_json::Map<String, Value> = (buyers.iter())
        .map(|buyer| {
            let mut gauges = json!({
                "live": shown(&buyer["concurrency"], "live"),
                "daily": shown(&buyer["daily"], "count"),
            });
            for period in ["hourly", "monthly", "lifetime"] {
                let capped = !buyer[period]["limit"].is_null();
                gauges[period] = if capped {
                    shown(&buyer[period], "count")
                } else {
                    Value::Null
                };
            }
            (buyer["buyer_id"].as_str().unwrap().to_owned(), gauges)
        })
        .collect();
    let gauges = until(&browser, "the buyers' gauges", GAUGES, &[Value::Object(expected)]).await;
    let budget = buyers.iter().find(|b| b["name"] == "Budget Cover").unwrap();
    assert_eq!(
        budget["hourly"]["limit"], 20,
        "a buyer capped by the hour: {budget}"
    );
    let budget = &gauges[budget["buyer_id"].as_str().unwrap()];
    assert!(
        budget["hourly"]["now"].as_str().is_some_and(|now| now != "0"),
        "counted this hour: {budget}"
    );
    let acme = buyers
        .iter()
        .find(|b| b["name"] == "Acme Auto Insurance")
        .unwrap();
    assert!(
        acme["daily"]["count"].as_u64().unwrap() > 0,
        "Acme converted callers today: {acme}"
    );

    // A caller converts with Acme, then calls again through a publisher's RTB ping: the
    // caller's name (from the provider's lookup) and the publisher's tags are theirs to choose.
    let hostile = "<img src=x onerror=window.__injected=1>";
    let caller = "+14155550177";
    let first_call = sid(900);
    let dialed_acme = app
        .webhook(&app.url("/voice/incoming"), &incoming(&first_call, caller, MAIN))
        .await;
    let (number, action) = dialed(dialed_acme).await;
    assert_eq!(number, "+14155550101", "Acme first");
    app.webhook(&action, &dial_ended(&first_call, "completed", 300))
        .await;
    app.webhook(&app.url("/voice/status"), &call_over(&first_call))
        .await;
    let ping = json!({"key": "demo-rtb-key-auto-insurance-0001", "publisher_id": "pub-001",
        "caller_number": caller, "sub_id": hostile});
    let bid = app
        .client
        .post(app.url("/rtbs.json"))
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(bid, StatusCode::OK).await["status"], "reserved");
    let again = sid(901);
    // On the publisher's own number: a call claims only the bid of the publisher whose number
    // it dialed.
    let body = format!(
        "{}&CallerName={}",
        incoming(&again, caller, "+18885550100"),
        url_encoded(hostile)
    );
    let (number, _) = dialed(app.webhook(&app.url("/voice/incoming"), &body).await).await;
    assert_eq!(number, "+14155550102", "not Acme again: Budget Cover");
    until(
        &browser,
        "the repeat caller's row",
        ROW,
        &[json!(again), json!({"caller": caller, "state": "dialing"})],
    )
    .await;

    // Filters: by caller number (digits, as typed), by state, by campaign; kept in the address.
    let search = browser.find(Locator::Id("filter-caller")).await.unwrap();
    search.send_keys("555-0177").await.unwrap();
    let filtered = until(
        &browser,
        "the caller filter",
        FILTERED,
        &[json!("caller=555-0177")],
    )
    .await;
    // The repeat call, and its first call while it stays listed, ended.
    let shown: Vec<&str> = filtered["shown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(shown.contains(&again.as_str()), "{filtered}");
    assert!(
        shown
            .iter()
            .all(|sid| [again.as_str(), first_call.as_str()].contains(sid)),
        "{filtered}"
    );
    assert_eq!(
        filtered["summary"],
        format!("{} of {} calls shown", shown.len(), filtered["listed"]),
        "{filtered}"
    );
    let state = browser.find(Locator::Id("filter-state")).await.unwrap();
    state.select_by_value("connected").await.unwrap();
    let filtered = until(
        &browser,
        "the state filter",
        FILTERED,
        &[json!("state=connected")],
    )
    .await;
    assert_eq!(filtered["shown"], json!([]), "dialing, not connected: {filtered}");
    assert_eq!(filtered["empty"], "No live calls match the filters.");
    let overflow = app.id_of("/campaigns", "Overflow").await;
    let campaign = browser.find(Locator::Id("filter-campaign")).await.unwrap();
    campaign.select_by_value(&overflow).await.unwrap();
    let filtered = until(
        &browser,
        "the campaign filter",
        FILTERED,
        &[json!(format!("campaign={overflow}"))],
    )
    .await;
    assert_eq!(
        filtered["charts"],
        json!([overflow]),
        "only that campaign's chart: {filtered}"
    );
    (browser
        .find(Locator::Id("filter-clear"))
        .await
        .unwrap()
        .click()
        .await)
        .unwrap();
    let cleared = until(
        &browser,
        "the filters cleared",
        r##"return location.search === "" && [...document.querySelectorAll("#calls-body tr")].every((tr) => !tr.hidden)"##,
        &[],
    )
    .await;
    assert_eq!(cleared, true, "every call shown again");

    // The call's story: why Acme was kept out, in plain words; its name and tags as text.
    let row = format!(r##"#calls-body tr[data-call-sid="{again}"]"##);
    (browser.find(Locator::Css(&row)).await.unwrap().click().await).unwrap();
    let story = until(&browser, "the repeat call's story", STORY, &[json!(caller)]).await;
    let verdicts: Vec<&str> = story["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        verdicts
            .iter()
            .any(|v| v.starts_with("Acme Auto Insurance: duplicate")),
        "{verdicts:?}"
    );
    assert!(verdicts.contains(&"Budget Cover: chosen"), "{verdicts:?}");
    assert_eq!(story["summary"]["Caller name"], hostile, "{story}");
    assert_eq!(story["tag"], hostile, "{story}");
    let clean = browser.execute_async(NO_MARKUP, vec![]).await.unwrap();
    assert_eq!(clean, true, "caller names and tags are never read as HTML");

    if let Some(path) = std::env::var_os(SCREENSHOT) {
        // The README's picture: the page as a supervisor finds it, a call's story open.
        browser.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
        let png = browser.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("wrote {}", Path::new(&path).display());
    }
}

const METRICS: [&str; 5] = ["calls", "connected", "converted", "duplicates_avoided", "dropped"];

fn total(values: &Value) -> u64 {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Chooses the page's range of `bucket` and waits until each campaign's chart shows the counts
/// `/stats/timeline` gives: the series read.
async fn charts_match_the_status_api(app: &TestApp, browser: &Client, bucket: &str) -> Vec<Value> {
    let timeline = expect_json(
        app.read(&format!("/stats/timeline?bucket={bucket}")).await,
        StatusCode::OK,
    )
    .await;
    let series = timeline["data"].as_array().unwrap().clone();
    assert!(series.len() >= 2, "calls on more than one campaign: {timeline}");
    // Choosing the range asks again at once rather than at the next refresh.
    let button = if bucket == "hour" {
        "range-day"
    } else {
        "range-hour"
    };
    (browser.find(Locator::Id(button)).await.unwrap().click().await).unwrap();
    let (size, points) = if bucket == "hour" {
        (3_600_000, 24..=25)
    } else {
        (60_000, 60..=61)
    };
    let from = timeline["from"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    let counted = |values: &Value| -> Value {
        let counts = (values.as_array().unwrap().iter().enumerate())
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(i, n)| ((from + i as i64 * size).to_string(), n.clone()));
        Value::Object(counts.collect())
    };
    for s in &series {
        let expected = METRICS.iter().map(|m| (m.to_string(), counted(&s[*m]))).collect();
        let campaign = s["campaign_id"].as_str().unwrap();
        let drawn = until(
            browser,
            "a campaign's chart",
            CHART,
            &[json!(campaign), Value::Object(expected)],
        )
        .await;
        for metric in METRICS {
            let line = &drawn[metric];
            let drawn_points = line["points"].as_u64().unwrap();
            assert!(
                points.contains(&drawn_points),
                "{metric}: a point per {bucket}, {drawn_points}"
            );
            assert_eq!(line["total"], total(&s[metric]).to_string(), "{metric}'s legend");
            if total(&s[metric]) > 0 {
                assert_eq!(line["raised"], true, "{metric}: its peak stands above zero");
            }
        }
    }
    series
}

fn url_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Two publishers on one company's campaigns.
const PARTNERS_PLAN: &str = r#"
[[companies]]
name = "Acme Leads"

[[companies.publishers]]
name = "Search"
numbers = ["+18005550100"]

[[companies.publishers]]
name = "Social"
numbers = ["+18005550101"]

[[companies.buyers]]
name = "Acme Auto"
destination = "+14155550101"
revenue = 20

[[companies.buyers]]
name = "Budget Cover"
destination = "+14155550102"
revenue = 15

[[companies.campaigns]]
name = "Main"
numbers = ["+18005550100"]
buyers = [{ buyer = "Acme Auto" }]

[[companies.campaigns]]
name = "Second"
numbers = ["+18005550101"]
buyers = [{ buyer = "Budget Cover" }]
"#;

#[actix_web::test]
async fn a_publishers_link_shows_only_its_calls_and_no_revenue() {
    let Some((browser, app)) = start_on(PARTNERS_PLAN).await else {
        return;
    };
    let client = browser.client.clone();
    browser.run(open_a_publishers_link(&app, client)).await;
}

async fn open_a_publishers_link(app: &TestApp, browser: Client) {
    let search = app.id_of("/publishers", "Search").await;
    let acme_auto = app.id_of("/buyers", "Acme Auto").await;
    let issued = json!({"name": "Search's portal", "role": "publisher", "publishers": [search]});
    let issued = expect_json(app.post("/tokens", issued).await, StatusCode::CREATED).await;
    let token = issued["token"].as_str().unwrap();
    // One call for each publisher, both ringing their buyers.
    let (own, other) = (sid(1), sid(2));
    for (call, number) in [(&own, "+18005550100"), (&other, "+18005550101")] {
        let arrived = app
            .webhook(&app.url("/voice/incoming"), &incoming(call, CALLER, number))
            .await;
        dialed(arrived).await;
    }

    browser
        .goto(&app.url(&format!("/dashboard#token={token}")))
        .await
        .expect("open the publisher's link");
    until(
        &browser,
        "the event stream to be live",
        r##"return document.getElementById("connection").dataset.state === "live""##,
        &[],
    )
    .await;
    let banner = until(
        &browser,
        "the portal's banner",
        r##"const p = document.getElementById("portal"); return !p.hidden && p.textContent"##,
        &[],
    )
    .await;
    assert_eq!(banner, "Publisher portal: token Search's portal");
    until(
        &browser,
        "its call's row",
        ROW,
        &[json!(own), json!({"state": "dialing"})],
    )
    .await;
    // The other publisher's call came in the same snapshot: it is not there, and never comes.
    sleep(Duration::from_millis(500)).await;
    let rows = (browser.execute(
        r##"return [...document.querySelectorAll("#calls-body tr")].map((tr) => tr.dataset.callSid)"##,
        vec![],
    ))
    .await
    .unwrap();
    assert_eq!(rows, json!([own]), "only its own call");
    let hidden = (browser.execute(
        r##"return ["stats-section", "buyers-section"].map((id) => document.getElementById(id).hidden)"##,
        vec![],
    ))
    .await
    .unwrap();
    assert_eq!(hidden, json!([true, true]), "no network-wide panels");

    // Its call's story: no buyer named, no revenue anywhere on the page.
    (browser.find(Locator::Css(&format!(
        r##"#calls-body tr[data-call-sid="{own}"]"##
    ))))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until(
        &browser,
        "the call's story",
        r##"return !document.getElementById("call-panel").hidden && document.getElementById("panel-summary").textContent.length > 0"##,
        &[],
    )
    .await;
    let text = browser
        .execute("return document.body.innerText", vec![])
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    for unseen in [
        "Revenue",
        "revenue",
        "Acme Auto",
        "Budget Cover",
        "20.00",
        "Social",
    ] {
        assert!(
            !text.contains(unseen),
            "the publisher's page shows {unseen:?}:\n{text}"
        );
    }
    assert!(text.contains(CALLER), "its caller: {text}");
    // Not even the buyer's id, as the page shortens one it has no name for.
    assert!(
        !text.contains(&acme_auto[acme_auto.len() - 6..]),
        "the buyer's id:\n{text}"
    );
}

#[actix_web::test]
async fn the_page_runs_no_inline_script_and_is_never_framed_sniffed_or_referred() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let page = app.client.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    let script_src = (policy.split(';').map(str::trim))
        .find(|directive| directive.starts_with("script-src"))
        .expect("a script-src");
    assert_eq!(script_src, "script-src 'self'", "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    assert!(html.contains(r#"<script src="dashboard.js"></script>"#));
    let script = app.client.get(app.url("/dashboard.js")).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    assert!(script.text().await.unwrap().contains("\"use strict\""));
}
