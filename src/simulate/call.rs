//! One simulated call, from the caller dialing a tracking number to the provider's last
//! status callback.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use rand::{Rng, RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use secrecy::ExposeSecret;

use super::{
    Outcomes, Provider,
    report::{CallReport, Dialed, Ended},
    twiml::{self, Dial, Next, Whisper},
};
use crate::domain::signature::{self, Algorithm};

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const API_VERSION: &str = "2010-04-01";

/// More steps than this and Switchboard is taken to be looping.
const MAX_STEPS: usize = 30;

/// Area codes simulated callers come from (real ones, so that their numbers parse).
const AREAS: [u16; 12] = [212, 213, 305, 312, 404, 415, 503, 512, 617, 702, 713, 818];

pub struct Call<'p> {
    provider: &'p Provider,
    random: StdRng,
    /// The node its first webhook and RTB ping go to.
    node: usize,
    sid: String,
    caller: String,
    to: String,
    /// Status callbacks not posted yet (all of them until the end, when reordering).
    callbacks: Vec<Callback>,
    /// The parent call's status callbacks, numbered as the provider numbers them.
    sequence: u32,
    report: CallReport,
}

/// A status callback: where to, what, and which kind (for latency figures).
struct Callback {
    url: String,
    params: Vec<(String, String)>,
    kind: &'static str,
}

impl<'p> Call<'p> {
    /// The `n`th call, from `caller`.
    pub fn new(provider: &'p Provider, n: u32, caller: String) -> Self {
        let mut random =
            StdRng::seed_from_u64(provider.seed ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let numbers = &provider.scenario.numbers;
        let to = numbers[n as usize % numbers.len()].clone();
        Self {
            provider,
            node: n as usize % provider.scenario.urls.len(),
            sid: sid(&mut random),
            random,
            caller,
            to,
            callbacks: Vec::new(),
            sequence: 0,
            report: CallReport::default(),
        }
    }

    /// Places the call and follows it to its end.
    pub async fn place(mut self) -> CallReport {
        if let Err(failure) = self.follow().await {
            self.report.failure = Some(failure);
        }
        self.report
    }

    async fn follow(&mut self) -> Result<(), String> {
        let scenario = &self.provider.scenario;
        if let Some(key) = &scenario.rtb_key {
            let body = serde_json::json!({
                "key": key, "publisher_id": scenario.publisher, "caller_number": self.caller,
            });
            let started = Instant::now();
            let mut response = Err("RTB ping: nowhere to send it".to_owned());
            // This call's node, or the next that answers.
            let nodes = scenario.urls.len();
            for k in 0..nodes {
                if k > 0 {
                    self.provider.failovers.fetch_add(1, Ordering::Relaxed);
                }
                let node = scenario.urls[(self.node + k) % nodes].trim_end_matches('/');
                let ping = self.provider.client.post(format!("{node}/rtbs.json")).json(&body);
                response = ping.send().await.map_err(|e| format!("RTB ping: {e}"));
                if response.is_ok() {
                    break;
                }
            }
            self.report.latency("rtb", started.elapsed());
            let response = response?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(format!("RTB ping: HTTP {status}: {}", snippet(&body)));
            }
        }

        let incoming = format!("{}/voice/incoming", self.provider.public_url(self.node));
        let mut answer = self.post(&incoming, self.params("ringing"), "incoming").await?;
        for _ in 0..MAX_STEPS {
            match twiml::read(&answer).map_err(|e| e.to_string())? {
                Next::Dial(dial) => {
                    let mut dialed = self.dial(&dial.number);
                    // The buyer picked up: its leg runs the whisper document first, and may
                    // refuse the call there.
                    if dialed.status == "completed"
                        && let Some(url) = &dial.whisper_url
                    {
                        dialed.bridged = self.whisper(url, &dial, &mut dialed).await?;
                    }
                    self.leg_callbacks(&dial, &dialed);
                    // The leg is up at the buyer until it ends, before any callback says so.
                    self.provider.leg_up(&dial.number);
                    let hold = Duration::from_millis(self.provider.scenario.hold_ms);
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    self.provider.leg_down(&dial.number);
                    if !self.provider.scenario.reorder {
                        // As the leg rings and ends, before the dial's action.
                        self.post_callbacks().await?;
                    }
                    let mut params = self.params("in-progress");
                    params.extend(dialed.action_params());
                    answer = self.post(&dial.action, params, "dial_action").await?;
                    if let Some(recording) = self.recording(&dial, &dialed) {
                        dialed.recorded = true;
                        self.callbacks.push(recording);
                        if !self.provider.scenario.reorder {
                            self.post_callbacks().await?;
                        }
                    }
                    self.report.dials.push(dialed);
                }
                Next::Redirect { url } => {
                    self.report.redirects += 1;
                    answer = self.post(&url, self.params("in-progress"), "redirect").await?;
                }
                Next::End { said, rejected } => {
                    self.report.ended = Some(match (rejected, self.report.connected()) {
                        (true, _) => Ended::Rejected,
                        (false, true) => Ended::Connected,
                        (false, false) if said => Ended::ExplicitEnd,
                        (false, false) => Ended::HungUp,
                    });
                    return self.finish(rejected).await;
                }
            }
        }
        Err(format!("no end after {MAX_STEPS} answers"))
    }

    /// What the dialed buyer does.
    fn dial(&mut self, number: &str) -> Dialed {
        let scenario = &self.provider.scenario;
        let weights = (scenario.buyers.iter())
            .find(|b| b.number == number)
            .map_or(scenario.outcomes, |b| b.outcomes);
        let status = pick(&mut self.random, weights);
        let talk_seconds = if status == "completed" {
            // Exponentially distributed, by inverting its distribution function.
            let uniform: f64 = self.random.random();
            (-(1.0 - uniform).ln() * scenario.talk_seconds).round() as u32
        } else {
            0
        };
        Dialed {
            number: number.to_owned(),
            status,
            talk_seconds,
            leg_sid: sid(&mut self.random),
            bridged: status == "completed",
            screened: None,
            recorded: false,
        }
    }

    /// The buyer's leg runs its whisper document: it hears the whisper, and at a press-1 prompt
    /// presses 1 (the scenario's `press_1` share of the time) or nothing. With answering machine
    /// detection, a machine answers the scenario's `machines` share of the time, and the
    /// document is asked for with the verdict (`AnsweredBy`), which its own callback reports
    /// too. Whether the caller is put through.
    async fn whisper(&mut self, url: &str, dial: &Dial, dialed: &mut Dialed) -> Result<bool, String> {
        let mut params = self.leg_params(dialed, "in-progress");
        let machine = dial.machine_detection && self.random.random_bool(self.provider.scenario.machines);
        if dial.machine_detection {
            let verdict = if machine { "machine_start" } else { "human" };
            params.push(("AnsweredBy".to_owned(), verdict.to_owned()));
            dialed.screened = Some(!machine);
            if let Some(amd) = &dial.amd_callback {
                self.callbacks.push(Callback {
                    url: amd.clone(),
                    params: params.clone(),
                    kind: "amd",
                });
            }
        }
        let document = self.post(url, params, "whisper").await?;
        match twiml::read_whisper(&document).map_err(|e| format!("whisper: {e}"))? {
            Whisper::Hangup if machine => Ok(false),
            _ if machine => Err("whisper: a machine was put through".to_owned()),
            Whisper::Bridge { .. } => Ok(true),
            Whisper::Hangup => Ok(false),
            Whisper::Gather { action, .. } => {
                let accepts = self.random.random_bool(self.provider.scenario.press_1);
                dialed.screened = Some(accepts);
                let mut params = self.leg_params(dialed, "in-progress");
                params.push(("Digits".to_owned(), if accepts { "1" } else { "" }.to_owned()));
                let answer = self.post(&action, params, "screen").await?;
                match twiml::read_whisper(&answer).map_err(|e| format!("screen: {e}"))? {
                    Whisper::Bridge { .. } if accepts => Ok(true),
                    Whisper::Hangup if !accepts => Ok(false),
                    other => Err(format!(
                        "screen: pressing {} was answered with {other:?}",
                        if accepts { "1" } else { "nothing" }
                    )),
                }
            }
        }
    }

    /// The buyer leg's status callbacks, to be posted.
    fn leg_callbacks(&mut self, dial: &Dial, dialed: &Dialed) {
        let Some(url) = &dial.status_callback else {
            return;
        };
        let mut progress = vec![("initiated", "initiated"), ("ringing", "ringing")];
        progress.extend(if dialed.status == "completed" {
            vec![("in-progress", "answered"), ("completed", "completed")]
        } else {
            vec![(dialed.status, "completed")]
        });
        // Only the events the dial asked for, numbered as sent.
        let asked = progress
            .into_iter()
            .filter(|(_, event)| dial.status_events.iter().any(|e| e == event))
            .map(|(status, _)| status);
        for (sequence, leg_status) in asked.enumerate() {
            let mut params = self.leg_params(dialed, leg_status);
            params.push(("SequenceNumber".to_owned(), sequence.to_string()));
            if leg_status == "completed" {
                params.push(("CallDuration".to_owned(), dialed.leg_seconds().to_string()));
            }
            self.callbacks.push(Callback {
                url: url.clone(),
                params,
                kind: "leg_status",
            });
        }
    }

    /// The parameters of a request about the buyer's leg.
    fn leg_params(&self, dialed: &Dialed, status: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", API_VERSION),
            ("CallSid", &dialed.leg_sid),
            ("ParentCallSid", &self.sid),
            ("CallStatus", status),
            ("Direction", "outbound-dial"),
            ("From", &self.caller),
            ("To", &dialed.number),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The recording status callback of a recorded dial: from the answer, a recording of the
    /// conversation; from the ringing, one of every dial.
    fn recording(&mut self, dial: &Dial, dialed: &Dialed) -> Option<Callback> {
        let url = dial.recording_callback.clone()?;
        let from_ringing = dial
            .record
            .as_deref()
            .is_some_and(|r| r.starts_with("record-from-ringing"));
        if !dialed.bridged && !from_ringing {
            return None;
        }
        let recording_sid = format!("RE{:032x}", self.random.random::<u128>());
        let recording_url =
            format!("https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}");
        let duration = dialed.talk_seconds.to_string();
        let params = [
            ("AccountSid", ACCOUNT_SID),
            ("CallSid", &self.sid),
            ("RecordingSid", &recording_sid),
            ("RecordingUrl", &recording_url),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", &duration),
            ("RecordingChannels", "2"),
            ("RecordingSource", "DialVerb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Some(Callback {
            url,
            params,
            kind: "recording",
        })
    }

    /// The call is over: its status callback (with every other one not posted yet, shuffled,
    /// when reordering).
    async fn finish(&mut self, rejected: bool) -> Result<(), String> {
        let status_url = format!("{}/voice/status", self.provider.public_url(self.node));
        if self.provider.scenario.reorder && !rejected {
            // The call's earlier progress, as a number configured for every status event has
            // it reported, which a provider may deliver late.
            for status in ["ringing", "in-progress"] {
                let callback = self.status_callback(&status_url, status);
                self.callbacks.push(callback);
            }
        }
        // A rejected call was never answered: the provider reports it busy.
        let completed = self.status_callback(&status_url, if rejected { "busy" } else { "completed" });
        self.callbacks.push(completed);
        if self.provider.scenario.reorder {
            self.callbacks.shuffle(&mut self.random);
        }
        self.post_callbacks().await
    }

    async fn post_callbacks(&mut self) -> Result<(), String> {
        for callback in std::mem::take(&mut self.callbacks) {
            self.post(&callback.url, callback.params, callback.kind).await?;
        }
        Ok(())
    }

    fn status_callback(&mut self, url: &str, status: &str) -> Callback {
        let mut params = self.params(status);
        params.push(("SequenceNumber".to_owned(), self.sequence.to_string()));
        self.sequence += 1;
        Callback {
            url: url.to_owned(),
            params,
            kind: "status",
        }
    }

    /// The parameters every request about the call carries.
    fn params(&self, status: &str) -> Vec<(String, String)> {
        [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", API_VERSION),
            ("CallSid", &self.sid),
            ("CallStatus", status),
            ("Direction", "inbound"),
            ("From", &self.caller),
            ("To", &self.to),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Posts a webhook as the provider does (signed, form-encoded) and returns the answer's
    /// body. Anything but a success is a failure of the call.
    async fn post(
        &mut self,
        url: &str,
        params: Vec<(String, String)>,
        kind: &'static str,
    ) -> Result<String, String> {
        let started = Instant::now();
        let mut response = Err(format!("{kind}: nowhere to send it"));
        // The node the URL names; if it does not answer, the next (as a load balancer that
        // retries on another node).
        for (tried, (send_to, signed_for)) in self.provider.targets(url).into_iter().enumerate() {
            let mut request = (self.provider.client.post(&send_to)).form(&params);
            if let Some(token) = &self.provider.scenario.auth_token {
                let signature =
                    signature::sign(token.expose_secret(), &signed_for, &params, Algorithm::HmacSha1);
                request = request.header("X-Twilio-Signature", signature);
            }
            if tried > 0 {
                self.provider.failovers.fetch_add(1, Ordering::Relaxed);
            }
            response = request.send().await.map_err(|e| format!("{kind}: {e}"));
            if response.is_ok() {
                break;
            }
        }
        let took = started.elapsed();
        let response = response?;
        let status = response.status();
        let content_type = (response.headers().get(reqwest::header::CONTENT_TYPE))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|e| format!("{kind}: {e}"))?;
        self.report.latency(kind, took);
        if !status.is_success() {
            return Err(format!("{kind}: HTTP {status}: {}", snippet(&body)));
        }
        // A provider takes TwiML only as XML (Twilio's error 12300 otherwise).
        let is_xml = (content_type.as_deref())
            .is_some_and(|t| t.starts_with("text/xml") || t.starts_with("application/xml"));
        if status != reqwest::StatusCode::NO_CONTENT && !is_xml {
            return Err(format!("{kind}: the answer is not XML ({content_type:?})"));
        }
        Ok(body)
    }
}

/// The start of an answer's body, for a failure's message.
fn snippet(body: &str) -> String {
    body.chars().take(200).collect()
}

/// A call's `DialCallStatus`, drawn by the weights.
fn pick(random: &mut impl Rng, weights: Outcomes) -> &'static str {
    let total = weights.answered + weights.busy + weights.no_answer + weights.failed;
    let mut draw = random.random::<f64>() * total;
    for (weight, status) in [
        (weights.answered, "completed"),
        (weights.busy, "busy"),
        (weights.no_answer, "no-answer"),
        (weights.failed, "failed"),
    ] {
        if draw < weight {
            return status;
        }
        draw -= weight;
    }
    "failed"
}

fn sid(random: &mut impl Rng) -> String {
    format!("CA{:032x}", random.random::<u128>())
}

/// A new caller number, NANP-shaped and from a real area code.
pub fn new_caller(random: &mut impl Rng) -> String {
    let area = AREAS[random.random_range(0..AREAS.len())];
    // Exchanges 200–999 but not N11 (reserved).
    let exchange = loop {
        let exchange = random.random_range(200..1000u16);
        if exchange % 100 != 11 {
            break exchange;
        }
    };
    format!("+1{area}{exchange}{:04}", random.random_range(0..10_000u16))
}

/// How long a buyer that refused the call (or pressed nothing) was on its leg: the whisper
/// and the prompt.
const SCREENED_OUT_SECONDS: u32 = 8;

impl Dialed {
    /// How long the buyer's leg was up once answered.
    fn leg_seconds(&self) -> u32 {
        if self.bridged {
            self.talk_seconds
        } else {
            SCREENED_OUT_SECONDS
        }
    }

    /// What the dial's action tells Switchboard: a leg answered but refused at the whisper
    /// ends `completed` and was never bridged to the caller.
    fn action_params(&self) -> Vec<(String, String)> {
        let mut params = vec![
            ("DialCallStatus".to_owned(), self.status.to_owned()),
            ("DialCallSid".to_owned(), self.leg_sid.clone()),
        ];
        if self.status == "completed" {
            params.push(("DialCallDuration".to_owned(), self.leg_seconds().to_string()));
            params.push(("DialBridged".to_owned(), self.bridged.to_string()));
        }
        params
    }
}
