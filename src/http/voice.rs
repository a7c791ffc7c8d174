//! Voice webhooks: form parameters in, a message to the call's actor, TwiML out.
//!
//! - `POST /voice/incoming`: a tracking number's voice URL; the campaign is found by `To`.
//! - `POST /voice/status`: the parent call's status callback.
//! - `POST /voice/calls/{sid}/attempts/{n}/action` and `…/status`: the dial's action URL and the
//!   buyer leg's status callback, written by Switchboard into its own `<Dial>`.
//! - `POST /voice/calls/{sid}/redirect/{campaign}`: written into its own `<Redirect>`.
//! - `POST /voice/calls/{sid}/attempts/{n}/whisper` and `…/screen`: the buyer's leg, once it
//!   answers (`<Number url>`), and its press-1 prompt's `<Gather action>`.
//! - `POST /voice/calls/{sid}/attempts/{n}/recording`: the `<Dial>`'s recording status callback.

use std::{sync::Arc, time::Instant};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{StatusCode, header},
    middleware::{self, Next},
    web,
};

use secrecy::{ExposeSecret, SecretString};
use tracing_actix_web::RootSpan;

use crate::{
    calls::{Calls, Webhook},
    cluster::Peers,
    config::{PublicUrl, WebhookKeys},
    domain::{
        call::{Answer, CallSid, CallStatus, DialStatus, RecordingStatus, Trail},
        call_flow::{Input, RecordingReport},
        destination::Destination,
        dialing::Announcement,
        form::FormParams,
        plan::CampaignId,
        signature::{self, Algorithm, Signing},
        twiml::{TemplateName, Templates, Values},
    },
    supervision::{Metrics, WebhookOutcome},
};

/// What the voice endpoints need.
pub struct Voice {
    pub calls: Calls,
    pub templates: Templates,
    pub public_url: PublicUrl,
    /// Every node's public URL (when several share the database): a callback signed for
    /// another node's URL reaches this one when that node is gone.
    pub peers: Arc<Peers>,
    /// Said before hanging up when no buyer is left.
    pub end_message: String,
    /// Unset: signatures are not checked (start-up says so).
    pub keys: Option<WebhookKeys>,
    /// Whether `/voice/floor` answers (the load benchmark's floor; `BENCH_FLOOR=on`).
    pub floor: bool,
}

/// Each webhook's path under `/voice`, with the name metrics give it.
const WEBHOOKS: [(&str, &str); 11] = [
    ("/incoming", "incoming"),
    ("/fallback", "fallback"),
    ("/status", "status"),
    ("/calls/{sid}/attempts/{attempt}/action", "dial_action"),
    ("/calls/{sid}/attempts/{attempt}/status", "leg_status"),
    ("/calls/{sid}/redirect/{campaign}", "redirect"),
    ("/calls/{sid}/attempts/{attempt}/whisper", "whisper"),
    ("/calls/{sid}/attempts/{attempt}/screen", "screen"),
    ("/calls/{sid}/attempts/{attempt}/recording", "recording"),
    ("/calls/{sid}/attempts/{attempt}/amd", "amd"),
    ("/floor", "floor"),
];

/// The largest webhook body taken.
const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;

/// Webhooks whose answer is a routing decision: their latency is the decision's.
const DECISIONS: [&str; 4] = ["incoming", "fallback", "dial_action", "redirect"];

pub fn routes(cfg: &mut web::ServiceConfig) {
    let [
        incoming_path,
        fallback_path,
        status_path,
        action_path,
        leg_path,
        redirect_path,
        whisper_path,
        screen_path,
        recording_path,
        amd_path,
        floor_path,
    ] = WEBHOOKS.map(|(path, _)| path);
    cfg.service(
        web::scope("/voice")
            .wrap(middleware::from_fn(observe))
            // A provider's webhook is a few kilobytes; anything far larger is not one (413).
            .app_data(web::PayloadConfig::new(WEBHOOK_BODY_LIMIT))
            .route(incoming_path, web::post().to(incoming))
            .route(incoming_path, web::get().to(incoming))
            .route(fallback_path, web::post().to(fallback))
            .route(fallback_path, web::get().to(fallback))
            .route(status_path, web::post().to(call_status))
            .route(action_path, web::post().to(dial_action))
            .route(leg_path, web::post().to(leg_status))
            .route(redirect_path, web::post().to(redirected))
            .route(whisper_path, web::post().to(whisper))
            .route(screen_path, web::post().to(screen))
            .route(recording_path, web::post().to(recording))
            .route(amd_path, web::post().to(amd))
            .route(floor_path, web::post().to(floor)),
    );
}

/// The kind of answer a webhook got, left on the response for [`observe`].
#[derive(Clone, Copy)]
struct Answered(&'static str);

/// Counts every webhook by how it was answered, refusals included, and times decisions.
async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let response = next.call(request).await?;
    let Some(metrics) = metrics else {
        return Ok(response);
    };
    let pattern = response.request().match_pattern();
    let under_voice = pattern.as_deref().and_then(|p| p.strip_prefix("/voice"));
    let webhook = (WEBHOOKS.iter())
        .find(|(path, _)| under_voice == Some(*path))
        .map_or("unknown", |(_, name)| name);
    let status = response.status();
    let outcome = match response.response().extensions().get::<Answered>() {
        Some(Answered(kind)) => WebhookOutcome::Answered(kind),
        None if status == StatusCode::FORBIDDEN => WebhookOutcome::Forbidden,
        None if status.is_client_error() => WebhookOutcome::BadRequest,
        None => WebhookOutcome::Failed,
    };
    metrics.webhook(webhook, outcome);
    if matches!(outcome, WebhookOutcome::Answered(_)) && DECISIONS.contains(&webhook) {
        metrics.decision(webhook, started.elapsed());
    }
    Ok(response)
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the request signature is missing or wrong")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl Voice {
    /// The webhook's parameters, once its signature is checked against the public URL (never
    /// the socket address, which a proxy hides).
    fn verify(&self, req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = self.public_url.join(path_and_query);
        // A GET carries its parameters in the (signed) URL; a POST in its form body, or in a JSON
        // body whose hash the (signed) URL carries.
        let content_type = header_text(req, "Content-Type");
        let is_json = is_json(content_type);
        let (params, signed) = if req.method() == actix_web::http::Method::GET {
            (form(req.query_string().as_bytes())?, Vec::new())
        } else {
            let params = body_params(content_type, body)?;
            // A form's parameters are signed; a JSON body is signed through its hash.
            let signed = if is_json { Vec::new() } else { params.clone() };
            (params, signed)
        };
        if let Some(keys) = &self.keys {
            let presented = header_text(req, "X-Twilio-Signature").unwrap_or_default();
            let settings = header_text(req, "X-Twilio-Webhooks-Signature-Settings");
            let signing = Signing::from_settings(settings).map_err(|problem| {
                tracing::warn!(%url, %problem, "refused a webhook whose signature settings are unknown");
                WebhookError::Forbidden
            })?;
            // Twilio signs with the auth token, unless a Webhook Rule matched the URL: then with
            // the rule's shared key, and says so in the settings header.
            let (secrets, algorithm): (Vec<&SecretString>, Algorithm) = match &signing {
                Signing::AuthToken => (keys.auth_token.iter().collect(), Algorithm::HmacSha1),
                Signing::SharedKey { algorithm, .. } => (keys.shared_keys.iter().collect(), *algorithm),
            };
            if secrets.is_empty() {
                let missing = match signing {
                    Signing::AuthToken => "TWILIO_AUTH_TOKEN",
                    Signing::SharedKey { .. } => "TWILIO_WEBHOOK_SHARED_KEYS",
                };
                tracing::error!(%url, missing, "refused a webhook signed with a secret this server is not given");
                return Err(WebhookError::Forbidden);
            }
            let genuine = |url: &str| {
                (!is_json || signature::body_matches(url, body))
                    && (secrets.iter()).any(|secret| {
                        signature::is_valid(secret.expose_secret(), url, &signed, presented, algorithm)
                    })
            };
            // Signed for this node's URL, or for another node's (which is gone, or which the
            // load balancer passed over).
            let for_a_peer = || {
                (self.peers.urls().iter())
                    .filter(|peer| **peer != self.public_url)
                    .any(|peer| genuine(&peer.join(path_and_query)))
            };
            if !genuine(&url) && !for_a_peer() {
                tracing::warn!(%url, "refused a webhook with a missing or wrong signature");
                return Err(WebhookError::Forbidden);
            }
        }
        Ok(params)
    }

    /// Renders an answer as TwiML (status callbacks get `204`).
    fn respond(&self, sid: &CallSid, answer: Answer) -> HttpResponse {
        let calls = |path: String| self.public_url.join(&format!("/voice/calls/{sid}{path}"));
        let kind = Answered(answer.kind());
        let document = match answer {
            Answer::Acknowledge => {
                let mut response = HttpResponse::NoContent().finish();
                response.extensions_mut().insert(kind);
                return response;
            }
            Answer::Dial {
                attempt,
                destination,
                ring_timeout_seconds,
                send_digits,
                sip_auth,
                settings,
                trail,
            } => {
                let trail = trail.query();
                let attempt_url = |callback: &str| calls(format!("/attempts/{attempt}/{callback}?{trail}"));
                let (action_url, status_url) = (attempt_url("action"), attempt_url("status"));
                let timeout = ring_timeout_seconds.to_string();
                let send_digits = send_digits.unwrap_or_default();
                let caller_id = settings.caller_id.as_ref().map_or("", |n| n.as_str());
                let answer_on_bridge = settings.answer_on_bridge.to_string();
                let record = settings.record.twiml().unwrap_or_default();
                // Empty values leave their attribute out (see `twiml`).
                let optional = |wanted: bool, callback: &str| {
                    if wanted {
                        attempt_url(callback)
                    } else {
                        String::new()
                    }
                };
                let recording_url = optional(!record.is_empty(), "recording");
                let whisper_url = optional(settings.whisper, "whisper");
                let amd_url = optional(settings.machine_detection, "amd");
                let machine_detection = if settings.machine_detection { "Enable" } else { "" };
                let (sip_username, sip_password) = sip_auth
                    .as_ref()
                    .map_or(("", ""), |auth| (auth.username.as_str(), auth.password.as_str()));
                let (template, destination) = match &destination {
                    Destination::Phone(number) => (TemplateName::DialNumber, ("number", number.as_str())),
                    Destination::Sip(uri) => (TemplateName::DialSip, ("sip_uri", uri.as_str())),
                };
                self.templates.render(
                    template,
                    &Values(&[
                        ("action_url", &action_url),
                        ("status_url", &status_url),
                        ("timeout", &timeout),
                        destination,
                        ("send_digits", &send_digits),
                        ("caller_id", caller_id),
                        ("answer_on_bridge", &answer_on_bridge),
                        ("record", record),
                        ("recording_url", &recording_url),
                        ("whisper_url", &whisper_url),
                        ("machine_detection", machine_detection),
                        ("amd_url", &amd_url),
                        ("sip_username", sip_username),
                        ("sip_password", sip_password),
                    ]),
                )
            }
            Answer::Whisper {
                attempt,
                announcement,
                press_1,
                trail,
            } => {
                let (message, audio_url) = match &announcement {
                    Some(Announcement::Say(text)) => (text.as_str(), ""),
                    Some(Announcement::Play(url)) => ("", url.as_str()),
                    None => ("", ""),
                };
                let (template, screen_url) = if press_1 {
                    (
                        TemplateName::Screen,
                        calls(format!("/attempts/{attempt}/screen?{}", trail.query())),
                    )
                } else {
                    (TemplateName::Whisper, String::new())
                };
                let values = [
                    ("message", message),
                    ("audio_url", audio_url),
                    ("screen_url", &screen_url),
                ];
                self.templates.render(template, &Values(&values))
            }
            Answer::Connect => self.templates.render(TemplateName::Connect, &Values(&[])),
            Answer::Blocked => self.templates.render(TemplateName::Blocked, &Values(&[])),
            Answer::Redirect { campaign, trail } => {
                let redirect_url = calls(format!("/redirect/{campaign}?{}", trail.query()));
                self.templates.render(
                    TemplateName::Redirect,
                    &Values(&[("redirect_url", &redirect_url)]),
                )
            }
            Answer::End => self
                .templates
                .render(TemplateName::End, &Values(&[("message", &self.end_message)])),
            Answer::Hangup => self.templates.render(TemplateName::Hangup, &Values(&[])),
            Answer::Reject => self.templates.render(TemplateName::UnknownNumber, &Values(&[])),
        };
        let mut response = HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/xml; charset=utf-8"))
            .body(document);
        response.extensions_mut().insert(kind);
        response
    }

    async fn handle(
        &self,
        root: &RootSpan,
        sid: CallSid,
        input: Input,
        endpoint: &'static str,
        params: FormParams,
        trail: Option<Trail>,
    ) -> HttpResponse {
        root.record("call_sid", tracing::field::display(&sid));
        let webhook = Webhook::new(sid.clone(), input, endpoint, params, trail);
        let answer = self.calls.handle(webhook).await;
        self.respond(&sid, answer)
    }
}

fn form(bytes: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| WebhookError::BadRequest(format!("the form cannot be read: {e}")))
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        value
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    })
}

/// A webhook body's parameters: a form, or a JSON object. (Public for the fuzz target.)
pub fn body_params(content_type: Option<&str>, body: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    if is_json(content_type) {
        json_params(body)
    } else {
        form(body)
    }
}

/// A JSON object's members as parameters: strings as they are, numbers and booleans as written.
fn json_params(bytes: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| WebhookError::BadRequest(format!("the JSON body cannot be read: {e}")))?;
    (object.into_iter())
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok((name, text)),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Ok((name, value.to_string())),
            _ => Err(WebhookError::BadRequest(format!(
                "`{name}` must be a string, a number or a boolean"
            ))),
        })
        .collect()
}

fn header_text<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|value| value.to_str().ok())
}

type Data = web::Data<Voice>;

/// A webhook whose signature checked out: its parameters, and what answering it needs.
pub struct Hook {
    params: FormParams,
    /// The trail its (signed) URL carries, if Switchboard wrote it one.
    trail: Option<Trail>,
    voice: Data,
    root: RootSpan,
}

impl FromRequest for Hook {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let body = body.await?;
            let voice = req
                .app_data::<Data>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorInternalServerError("voice webhooks are not set up"))?;
            let root = RootSpan::extract(&req).await?;
            let params = FormParams::from(voice.verify(&req, &body)?);
            let trail = Trail::from_query(req.query_string());
            Ok(Self {
                params,
                trail,
                voice,
                root,
            })
        })
    }
}

impl Hook {
    /// The end of attempt `attempt`'s dial, as its action request tells it.
    fn dial_ended(&self, attempt: u32) -> Input {
        // A dial that ended without a status we know did not connect: the next buyer is tried.
        let status = DialStatus::parse(&self.text("DialCallStatus")).unwrap_or(DialStatus::Failed);
        Input::DialEnded {
            attempt,
            status,
            connected_seconds: self.text("DialCallDuration").trim().parse().unwrap_or(0),
            call_over: self.call_status().is_some_and(CallStatus::is_final),
            bridged: match self.text("DialBridged").trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        }
    }

    /// A parameter's value, empty if the provider did not send it.
    fn text(&self, name: &str) -> String {
        self.params.text(name).to_owned()
    }

    /// `CallStatus`, read at the edge: a value the provider does not document is logged and
    /// taken as no status (the webhook is still recorded and acknowledged).
    fn call_status(&self) -> Option<CallStatus> {
        let text = self.params.get("CallStatus")?;
        CallStatus::parse(text)
            .inspect_err(|error| tracing::warn!(%error, "an unknown call status; taken as none"))
            .ok()
    }

    /// A status callback's `SequenceNumber`. Without one, a retry cannot be told apart and is
    /// applied again, which only adds to the timeline: a call's state never moves back.
    fn sequence(&self) -> Option<u32> {
        self.params
            .get("SequenceNumber")
            .and_then(|n| n.trim().parse().ok())
    }

    /// The call named by the `CallSid` parameter.
    fn call_sid(&self) -> Result<CallSid, WebhookError> {
        let text = (self.params.get("CallSid"))
            .ok_or_else(|| WebhookError::BadRequest("CallSid is missing".into()))?;
        CallSid::parse(text).map_err(WebhookError::BadRequest)
    }

    async fn answer(self, sid: CallSid, input: Input, endpoint: &'static str) -> HttpResponse {
        self.voice
            .handle(&self.root, sid, input, endpoint, self.params, self.trail)
            .await
    }
}

/// A call named in a callback URL Switchboard wrote.
fn path_sid(text: &str) -> Result<CallSid, WebhookError> {
    CallSid::parse(text).map_err(WebhookError::BadRequest)
}

async fn incoming(hook: Hook) -> Result<HttpResponse, WebhookError> {
    let sid = hook.call_sid()?;
    let input = Input::Incoming {
        from: hook.text("From"),
        to: hook.text("To"),
    };
    Ok(hook.answer(sid, input, "incoming").await)
}

async fn call_status(hook: Hook) -> Result<HttpResponse, WebhookError> {
    let sid = hook.call_sid()?;
    let input = Input::CallStatus {
        status: hook.call_status(),
        sequence: hook.sequence(),
    };
    Ok(hook.answer(sid, input, "status").await)
}

/// The number's fallback URL: the provider asks it when the voice URL (or a later document)
/// failed, with `ErrorCode` and `ErrorUrl`. When what failed was a dial's action, that dial is
/// over and routing goes on from it; otherwise the call goes on from where it stands (or, if
/// it was never recorded, starts).
async fn fallback(mut hook: Hook) -> Result<HttpResponse, WebhookError> {
    let sid = hook.call_sid()?;
    let error_url = hook.text("ErrorUrl");
    let failed = failed_request(&error_url, &sid);
    let input = match failed {
        Some((Failed::Dial(attempt), _)) => hook.dial_ended(attempt),
        Some((Failed::Redirect(campaign), _)) => Input::Redirected { campaign },
        None => Input::Fallback {
            error_code: Some(hook.text("ErrorCode")).filter(|code| !code.is_empty()),
        },
    };
    // What the failed request's URL said of the call (the fallback request signs `ErrorUrl`).
    hook.trail = failed.and_then(|(_, trail)| trail);
    Ok(hook.answer(sid, input, "fallback").await)
}

/// The provider's `Timestamp` (RFC 2822, `Fri, 04 Dec 2026 06:39:29 +0000`), when it reads as one.
fn provider_time(text: &str) -> Option<jiff::Timestamp> {
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    PARSER.parse_timestamp(text.trim()).ok()
}

/// A request of this call's that failed, as its `ErrorUrl` names it.
enum Failed {
    /// Attempt `n`'s dial action: that dial is over.
    Dial(u32),
    /// A redirect into a campaign.
    Redirect(CampaignId),
}

/// The dial action or the redirect of this call whose URL `error_url` is, with the trail it
/// carries, if it is one.
fn failed_request(error_url: &str, sid: &CallSid) -> Option<(Failed, Option<Trail>)> {
    let url = url::Url::parse(error_url).ok()?;
    let segments: Vec<&str> = url.path_segments()?.collect();
    let failed = match segments.as_slice() {
        [.., "voice", "calls", call, "attempts", attempt, "action"] if *call == sid.as_str() => {
            Failed::Dial(attempt.parse().ok()?)
        }
        [.., "voice", "calls", call, "redirect", campaign] if *call == sid.as_str() => {
            Failed::Redirect(campaign.parse().ok()?)
        }
        _ => return None,
    };
    Some((failed, url.query().and_then(Trail::from_query)))
}

async fn dial_action(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let input = hook.dial_ended(attempt);
    Ok(hook.answer(path_sid(&sid)?, input, "dial_action").await)
}

async fn leg_status(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let input = Input::LegStatus {
        attempt,
        status: hook.call_status(),
        sequence: hook.sequence(),
        leg_seconds: hook.text("CallDuration").trim().parse().ok(),
        at: provider_time(&hook.text("Timestamp")),
    };
    Ok(hook.answer(path_sid(&sid)?, input, "leg_status").await)
}

/// The buyer's leg answered: what it hears before the caller is put through. (The request is
/// the buyer leg's: its `CallSid` is the leg's own, the call is the one in the path.)
async fn whisper(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let answered_by = Some(hook.text("AnsweredBy")).filter(|verdict| !verdict.is_empty());
    let input = Input::Whisper { attempt, answered_by };
    Ok(hook.answer(path_sid(&sid)?, input, "whisper").await)
}

/// Answering machine detection's verdict on a buyer's leg (`AnsweredBy`). One without a
/// verdict says nothing and is refused (400).
async fn amd(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let answered_by = hook.text("AnsweredBy").trim().to_owned();
    if answered_by.is_empty() {
        return Err(WebhookError::BadRequest("AnsweredBy is missing".into()));
    }
    let input = Input::Detected { attempt, answered_by };
    Ok(hook.answer(path_sid(&sid)?, input, "amd").await)
}

/// The buyer's key at the press-1 prompt (`Digits`; empty when it pressed none).
async fn screen(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let digits = hook.text("Digits");
    Ok(hook
        .answer(path_sid(&sid)?, Input::Screened { attempt, digits }, "screen")
        .await)
}

/// A recording status callback. One that does not say which recording, where it is or how it
/// stands is refused (400): it could only be stored wrong.
async fn recording(hook: Hook, path: web::Path<(String, u32)>) -> Result<HttpResponse, WebhookError> {
    let (sid, attempt) = path.into_inner();
    let required = |name: &str| {
        (hook.params.get(name))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| WebhookError::BadRequest(format!("{name} is missing")))
    };
    let recording_sid = required("RecordingSid")?;
    if !recording_sid.bytes().all(|b| b.is_ascii_alphanumeric()) || recording_sid.len() > 64 {
        return Err(WebhookError::BadRequest(format!(
            "`{recording_sid}` is not a RecordingSid"
        )));
    }
    let url = required("RecordingUrl")?;
    // Kept as parsed: an address a supervisor's browser may open.
    let url = match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => String::from(parsed),
        _ => {
            return Err(WebhookError::BadRequest(format!(
                "`{url}` is not a recording's address"
            )));
        }
    };
    let status = RecordingStatus::parse(required("RecordingStatus")?).map_err(WebhookError::BadRequest)?;
    let number = |name: &str| hook.params.get(name).and_then(|n| n.trim().parse().ok());
    let recording = RecordingReport {
        sid: recording_sid.to_owned(),
        url,
        status,
        duration_seconds: number("RecordingDuration"),
        channels: number("RecordingChannels"),
    };
    let input = Input::Recorded { attempt, recording };
    Ok(hook.answer(path_sid(&sid)?, input, "recording").await)
}

/// The load benchmark's floor: a webhook read and checked like every other, then answered with
/// fixed TwiML, without routing or the store. Not served unless `BENCH_FLOOR=on`.
async fn floor(hook: Hook) -> Result<HttpResponse, WebhookError> {
    if !hook.voice.floor {
        return Ok(HttpResponse::NotFound().finish());
    }
    let sid = hook.call_sid()?;
    Ok(hook.voice.respond(&sid, Answer::Hangup))
}

async fn redirected(hook: Hook, path: web::Path<(String, String)>) -> Result<HttpResponse, WebhookError> {
    let (sid, campaign) = path.into_inner();
    let campaign: CampaignId = campaign
        .parse()
        .map_err(|_| WebhookError::BadRequest(format!("`{campaign}` is not a campaign id")))?;
    Ok(hook
        .answer(path_sid(&sid)?, Input::Redirected { campaign }, "redirect")
        .await)
}
