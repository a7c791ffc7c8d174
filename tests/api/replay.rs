//! Replays recorded webhook sequences (`tests/fixtures/calls/*.calls`) against the real service
//! on both engines, following the URLs Switchboard writes into its TwiML, and checks every
//! answer and the stored outcome of every call.
//!
//! A fixture file holds, in order:
//! - `plan: FILE` (in `tests/fixtures/plans/`) and any number of `edit: OLD => NEW` lines, exact
//!   text replacements in it (`\n` for a line break; every OLD must occur exactly once);
//! - steps: `> TARGET`, the form body on the next line, then `< REPLY`. TARGET is `incoming`,
//!   `fallback` (the number's fallback URL), `status`, or the URL Switchboard last wrote for that
//!   call: `action`, `leg`, `whisper`, `amd` and `recording` (its last `<Dial>`'s action, buyer
//!   leg status callback, `<Number url>`, `amdStatusCallback` and recording status callback),
//!   `screen` (the last press-1 prompt's `<Gather action>`) or `redirect`; `TARGET again` is a retry of a status or recording callback, which changes
//!   nothing, not even the timeline. REPLY is `dial BUYER`, `redirect CAMPAIGN`, `end`, `hangup`, `reject`,
//!   `whisper TEXT` (said to the buyer, then put through), `prompt TEXT` (said, then "press
//!   1"), `connect` (put through) or `204`. A `dial` may add `| name=value …` checks of the
//!   `<Dial>`'s or its noun's attributes (`name=*`: present, `!name`: absent);
//! - `expect CALLSID` blocks of `  key: value` lines about the stored call.
//!
//! Every answer is first checked as the provider reads it: each element, attribute and value
//! must be one Twilio documents (see `switchboard::simulate::twiml`).

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::Value;
use switchboard::{
    domain::{
        call::{CallRecord, CallSid},
        plan::{Buyer, Campaign, Record},
        timeline::Event,
    },
    plan::Plan,
    simulate::twiml::{self, Document},
    store::{CallStore, ListFilter, PlanTable},
};
use xml::reader::{EventReader, XmlEvent};

use crate::{
    helpers::{Engine, TestApp},
    provider::path_of,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Every fixture, each replayed on both engines.
macro_rules! replays {
    ($($name:ident,)*) => {
        const REPLAYED: &[&str] = &[$(concat!(stringify!($name), ".calls"),)*];
        $(mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::replay(super::Engine::Sqlite, concat!(stringify!($name), ".calls")).await
            }

            #[actix_web::test]
            #[cfg_attr(not(test_postgres), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
            async fn postgres() {
                super::replay(super::Engine::Postgres, concat!(stringify!($name), ".calls")).await
            }
        })*
    };
}

replays! {
    scenario_1_a_repeat_caller_goes_to_another_buyer,
    feature_off_for_the_company,
    feature_off_for_the_campaign,
    a_buyer_with_window_zero_accepts_duplicates,
    a_conversion_that_falls_short,
    the_next_buyer_after_no_answer_busy_and_failed,
    every_buyer_a_duplicate_the_fallback_takes_it,
    every_buyer_a_duplicate_no_fallback_a_redirect,
    every_buyer_a_duplicate_nothing_left_an_explicit_end,
    a_redirect_loop_is_not_followed_and_tried_buyers_stay_tried,
    a_withheld_caller_id,
    a_number_with_no_campaign,
    the_caller_hangs_up_while_the_buyer_rings,
    the_call_status_arrives_before_the_dial_action,
    the_caller_hangs_up_during_a_dial,
    the_buyer_sees_the_caller_hears_a_whisper_and_the_call_is_recorded,
    a_withheld_caller_shows_the_tracking_number_and_ringback_can_be_off,
    a_buyer_that_presses_1_takes_the_call,
    a_buyer_that_presses_nothing_passes_the_call_on,
    a_caller_from_a_state_no_buyer_takes_reaches_the_fallback,
    the_fallback_url_goes_on_from_a_dial_whose_action_failed,
    the_fallback_url_answers_again_what_the_voice_url_could_not,
    a_machine_answers_and_the_call_goes_on_to_the_next_buyer,
    a_person_answers_a_buyer_screened_for_machines,
    a_call_through_a_sip_domain_routes_by_the_number_it_names,
    a_lost_dial_action_is_settled_from_the_leg,
    a_caller_from_a_state_no_buyer_takes_is_dropped_as_geo,
    a_blocked_caller_is_rejected_unanswered,
}

#[test]
fn every_fixture_is_replayed() {
    let mut files: Vec<String> = std::fs::read_dir(format!("{FIXTURES}/calls"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".calls"))
        .collect();
    files.sort();
    let mut replayed: Vec<String> = REPLAYED.iter().map(|s| s.to_string()).collect();
    replayed.sort();
    assert_eq!(
        files, replayed,
        "a fixture is missing from `replays!`, or one listed there is missing"
    );
}

struct Fixture {
    name: String,
    plan: String,
    steps: Vec<Step>,
    expectations: Vec<Expectation>,
}

struct Step {
    line: usize,
    target: String,
    body: String,
    reply: String,
}

struct Expectation {
    line: usize,
    sid: String,
    fields: Vec<(String, String)>,
}

fn read_fixture(name: &str) -> Fixture {
    parse_fixture(name).unwrap_or_else(|error| panic!("{error}"))
}

fn parse_fixture(name: &str) -> Result<Fixture, String> {
    let text =
        std::fs::read_to_string(format!("{FIXTURES}/calls/{name}")).map_err(|e| format!("{name}: {e}"))?;
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line)).peekable();
    let mut plan: Option<String> = None;
    let mut steps = Vec::new();
    let mut expectations = Vec::new();
    while let Some((line, text)) = lines.next() {
        let at = |what: &str| format!("{name}:{line}: {what}");
        if text.trim().is_empty() || text.starts_with('#') {
            continue;
        }
        if let Some(file) = text.strip_prefix("plan: ") {
            let path = format!("{FIXTURES}/plans/{file}");
            plan = Some(std::fs::read_to_string(&path).map_err(|e| at(&format!("{path}: {e}")))?);
        } else if let Some(edit) = text.strip_prefix("edit: ") {
            let (old, new) = edit
                .split_once(" =>")
                .ok_or_else(|| at("expected edit: OLD => NEW"))?;
            let (old, new) = (
                old.replace("\\n", "\n"),
                new.strip_prefix(' ').unwrap_or(new).replace("\\n", "\n"),
            );
            let plan = plan.as_mut().ok_or_else(|| at("`plan:` comes before `edit:`"))?;
            if plan.matches(&old).count() != 1 {
                return Err(at("the edited text must occur exactly once in the plan"));
            }
            *plan = plan.replace(&old, &new);
        } else if let Some(target) = text.strip_prefix("> ") {
            let (_, body) = lines.next().ok_or_else(|| at("a form body must follow"))?;
            let (_, reply) = lines.next().ok_or_else(|| at("a reply must follow the body"))?;
            let reply = reply
                .strip_prefix("< ")
                .ok_or_else(|| at("expected `< REPLY` after the body"))?;
            steps.push(Step {
                line,
                target: target.to_owned(),
                body: body.to_owned(),
                reply: reply.to_owned(),
            });
        } else if let Some(sid) = text.strip_prefix("expect ") {
            let mut fields = Vec::new();
            while let Some((_, field)) = lines.next_if(|(_, l)| l.starts_with("  ")) {
                let (key, value) = field
                    .trim()
                    .split_once(": ")
                    .ok_or_else(|| at("expected `  key: value`"))?;
                fields.push((key.to_owned(), value.to_owned()));
            }
            expectations.push(Expectation {
                line,
                sid: sid.to_owned(),
                fields,
            });
        } else {
            return Err(at("not a fixture line"));
        }
    }
    Ok(Fixture {
        name: name.to_owned(),
        plan: plan.ok_or_else(|| format!("{name}: no `plan:` line"))?,
        steps,
        expectations,
    })
}

/// The TwiML of one answer, flattened: each element with its attributes and text.
#[derive(Debug)]
struct Element {
    name: String,
    attributes: HashMap<String, String>,
    text: String,
}

fn read_twiml(document: &str) -> Vec<Element> {
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    for event in EventReader::new(document.as_bytes()) {
        match event.unwrap_or_else(|e| panic!("invalid TwiML ({e}): {document}")) {
            XmlEvent::StartElement { name, attributes, .. } => {
                open.push(elements.len());
                elements.push(Element {
                    name: name.local_name,
                    attributes: attributes
                        .into_iter()
                        .map(|a| (a.name.local_name, a.value))
                        .collect(),
                    text: String::new(),
                });
            }
            XmlEvent::EndElement { .. } => {
                open.pop();
            }
            XmlEvent::Characters(text) => elements[*open.last().unwrap()].text.push_str(&text),
            _ => {}
        }
    }
    elements
}

/// The URLs Switchboard wrote for a call, which the provider requests next.
#[derive(Default)]
struct Written {
    action: Option<String>,
    leg: Option<String>,
    redirect: Option<String>,
    whisper: Option<String>,
    amd: Option<String>,
    recording: Option<String>,
    screen: Option<String>,
}

async fn replay(engine: Engine, name: &str) {
    let fixture = read_fixture(name);
    let plan = Plan::parse(&fixture.plan).expect("a valid plan");
    let Some(app) = TestApp::start_with_plan(engine, &plan).await else {
        return;
    };
    let everything = ListFilter {
        limit: 1000,
        ..ListFilter::default()
    };
    let buyers: Vec<Record<Buyer>> = app.store.list(&everything).await.unwrap();
    let campaigns: Vec<Record<Campaign>> = app.store.list(&everything).await.unwrap();
    let buyer_named = |name: &str| {
        buyers
            .iter()
            .find(|b| b.spec.name.as_str() == name)
            .unwrap_or_else(|| panic!("no buyer named {name:?} in the plan"))
    };

    let mut written: HashMap<String, Written> = HashMap::new();
    let mut steps_of: HashMap<String, usize> = HashMap::new();
    for step in &fixture.steps {
        let at = format!("{}:{}", fixture.name, step.line);
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(&step.body).unwrap_or_else(|e| panic!("{at}: {e}"));
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        // A buyer leg's callbacks carry the leg's own sid; the call is its parent.
        let sid = param("ParentCallSid")
            .or_else(|| param("CallSid"))
            .unwrap_or_else(|| panic!("{at}: no CallSid"));
        let (target, retried) = match step.target.strip_suffix(" again") {
            Some(target) => (target, true),
            None => (step.target.as_str(), false),
        };
        if !retried {
            *steps_of.entry(sid.clone()).or_default() += 1;
        }
        let urls = written.entry(sid.clone()).or_default();
        let written = |url: &Option<String>, what: &str| {
            url.clone()
                .unwrap_or_else(|| panic!("{at}: Switchboard wrote no {what} URL"))
        };
        let url = match target {
            "incoming" => app.url("/voice/incoming"),
            "fallback" => app.url("/voice/fallback"),
            "amd" => written(&urls.amd, "amdStatusCallback"),
            "status" => app.url("/voice/status"),
            "action" => written(&urls.action, "<Dial action>"),
            "leg" => written(&urls.leg, "leg status callback"),
            "redirect" => written(&urls.redirect, "<Redirect>"),
            "whisper" => written(&urls.whisper, "<Number url>"),
            "screen" => written(&urls.screen, "<Gather action>"),
            "recording" => written(&urls.recording, "recordingStatusCallback"),
            other => panic!("{at}: unknown target {other}"),
        };
        let document = match target {
            "whisper" | "screen" => Document::Leg,
            _ => Document::Call,
        };

        let response = app.webhook(&url, &step.body).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.text().await.unwrap();
        if step.reply == "204" {
            assert_eq!(status, StatusCode::NO_CONTENT, "{at}: {body}");
            assert!(body.is_empty(), "{at}");
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{at}: {body}");
        assert!(
            content_type.starts_with("text/xml"),
            "{at}: content type {content_type}"
        );
        assert!(
            body.starts_with("<?xml"),
            "{at}: nothing may come before <?xml: {body:?}"
        );
        if let Err(invalid) = twiml::check(&body, document) {
            panic!("{at}: the provider would refuse this: {invalid}: {body}");
        }
        let twiml = read_twiml(&body);
        let names: Vec<&str> = twiml.iter().map(|e| e.name.as_str()).collect();
        let (verb, argument) = step.reply.split_once(' ').unwrap_or((step.reply.as_str(), ""));
        match verb {
            "dial" => {
                let (argument, checks) = argument.split_once(" | ").unwrap_or((argument, ""));
                let buyer = buyer_named(argument);
                let destination = buyer.spec.destination.to_string();
                let noun = if destination.starts_with("sip:") {
                    "Sip"
                } else {
                    "Number"
                };
                assert_eq!(names, ["Response", "Dial", noun], "{at}: {body}");
                assert_eq!(twiml[2].text, destination, "{at}: dialed the wrong buyer: {body}");
                let dial = &twiml[1].attributes;
                assert_eq!(
                    dial["timeout"],
                    buyer.spec.ring_timeout_seconds.get().to_string(),
                    "{at}"
                );
                let action = dial["action"].clone();
                assert!(
                    action.starts_with(&app.address),
                    "{at}: an absolute URL under PUBLIC_URL: {action}"
                );
                urls.action = Some(action);
                urls.leg = Some(twiml[2].attributes["statusCallback"].clone());
                // An earlier attempt's callbacks may still come: its URLs stay known.
                if let Some(url) = twiml[2].attributes.get("url") {
                    urls.whisper = Some(url.clone());
                }
                if let Some(url) = twiml[2].attributes.get("amdStatusCallback") {
                    urls.amd = Some(url.clone());
                }
                if let Some(url) = dial.get("recordingStatusCallback") {
                    urls.recording = Some(url.clone());
                }
                for check in checks.split_whitespace() {
                    let found = |name: &str| dial.get(name).or_else(|| twiml[2].attributes.get(name));
                    if let Some(name) = check.strip_prefix('!') {
                        assert_eq!(found(name), None, "{at}: {name} must be left out: {body}");
                        continue;
                    }
                    let (name, expected) = check.split_once('=').expect("a check is name=value");
                    let actual = found(name).unwrap_or_else(|| panic!("{at}: no {name}: {body}"));
                    if expected == "*" {
                        assert!(
                            actual.starts_with(&app.address),
                            "{at}: {name} under PUBLIC_URL: {actual}"
                        );
                    } else {
                        assert_eq!(actual, expected, "{at}: {name}: {body}");
                    }
                }
            }
            "whisper" => {
                assert_eq!(names, ["Response", "Say"], "{at}: said, then put through: {body}");
                assert_eq!(twiml[1].text, argument, "{at}");
            }
            "prompt" => {
                // The whisper, if the buyer has one, then "press 1".
                let said: Vec<&str> = twiml
                    .iter()
                    .filter(|e| e.name == "Say")
                    .map(|e| e.text.as_str())
                    .collect();
                let mut expected = vec!["Response", "Gather", "Say", "Hangup"];
                if !argument.is_empty() {
                    expected.insert(2, "Say");
                    assert_eq!(said[0], argument, "{at}");
                }
                assert_eq!(names, expected, "{at}: the whisper and the prompt: {body}");
                assert!(said.last().unwrap().contains("Press 1"), "{at}: {body}");
                let gather = &twiml[1].attributes;
                assert_eq!(
                    (
                        gather["numDigits"].as_str(),
                        gather["input"].as_str(),
                        gather["actionOnEmptyResult"].as_str()
                    ),
                    ("1", "dtmf", "true"),
                    "{at}: one key, and the action even for none: {body}"
                );
                urls.screen = Some(gather["action"].clone());
            }
            "connect" => assert_eq!(names, ["Response"], "{at}: nothing more: put through: {body}"),
            "redirect" => {
                let campaign = campaigns
                    .iter()
                    .find(|c| c.spec.name.as_str() == argument)
                    .expect(&at);
                assert_eq!(names, ["Response", "Redirect"], "{at}: {body}");
                assert!(
                    path_of(&twiml[1].text).ends_with(&format!("/redirect/{}", campaign.id)),
                    "{at}: {body}"
                );
                assert!(twiml[1].text.starts_with(&app.address), "{at}: {body}");
                urls.redirect = Some(twiml[1].text.clone());
            }
            "end" => {
                assert_eq!(names, ["Response", "Say", "Hangup"], "{at}: {body}");
                assert!(!twiml[1].text.is_empty(), "{at}: the end says why");
            }
            "hangup" => assert_eq!(names, ["Response", "Hangup"], "{at}: {body}"),
            "reject" => {
                assert_eq!(names, ["Response", "Reject"], "{at}: {body}");
                assert_eq!(twiml[1].attributes["reason"], "rejected", "{at}");
            }
            other => panic!("{at}: unknown reply {other}"),
        }
    }

    for expectation in &fixture.expectations {
        let at = format!("{}:{}", fixture.name, expectation.line);
        let sid = CallSid::parse(&expectation.sid).unwrap();
        let call = app
            .store
            .call(&sid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{at}: the call was not stored"));
        let timeline = app.store.timeline(&sid).await.unwrap();
        let webhooks = timeline
            .iter()
            .filter(|e| matches!(e.event, Event::Webhook { .. }))
            .count();
        assert_eq!(
            Some(&webhooks),
            steps_of.get(&expectation.sid),
            "{at}: every webhook is in the timeline"
        );
        for (key, expected) in &expectation.fields {
            let actual = field(&call, &timeline, &buyers, key, expected);
            assert_eq!(&actual, expected, "{at}: {key}");
        }
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn text_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value).unwrap() {
        Value::String(text) => text,
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    }
}

/// The stored value an expectation names, in the fixture's words.
fn field(
    call: &CallRecord,
    timeline: &[switchboard::domain::timeline::TimelineEntry],
    buyers: &[Record<Buyer>],
    key: &str,
    expected: &str,
) -> String {
    let name_of = |id| {
        buyers
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.spec.name.to_string())
    };
    match key {
        "outcome" => text_of(&call.outcome),
        "reason" => text_of(&call.drop_reason),
        "buyer" => call
            .connected_attempt()
            .or(call.current_attempt())
            .and_then(|a| name_of(a.buyer_id))
            .unwrap_or_else(|| "none".into()),
        "duplicate" => call.duplicate().map_or("unknown".into(), yes_no),
        "converted" => yes_no(call.converted()),
        "attempts" => call.attempts.len().to_string(),
        "fallback" => yes_no(call.used_fallback()),
        "redirects" => call.redirects().to_string(),
        "avoided" => call.duplicate_buyers.len().to_string(),
        "state" => text_of(&call.caller_state),
        "screening" => (call.attempts.iter())
            .filter_map(|a| a.screening.map(|s| text_of(&s)))
            .collect::<Vec<_>>()
            .join(", "),
        "recordings" => call.recordings.len().to_string(),
        "recording" => (call.recordings.iter())
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.sid,
                    text_of(&r.status),
                    text_of(&r.duration_seconds)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        "caller" => if call.caller.number().is_some() {
            "known"
        } else {
            "unknown"
        }
        .to_owned(),
        "skipped" => {
            // Each `Name=verdict` must appear in some decision of the timeline.
            let decisions: Vec<_> = timeline
                .iter()
                .filter_map(|e| match &e.event {
                    Event::Decision(decision) => Some(decision),
                    _ => None,
                })
                .collect();
            let found: Vec<&str> = expected
                .split(", ")
                .filter(|pair| {
                    let (name, verdict) = pair.split_once('=').unwrap();
                    decisions.iter().any(|d| {
                        d.considered
                            .iter()
                            .any(|c| c.name == name && text_of(&c.verdict) == verdict)
                    })
                })
                .collect();
            found.join(", ")
        }
        other => panic!("unknown expectation {other}"),
    }
}
