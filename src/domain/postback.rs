//! Postbacks: the webhooks Switchboard sends buyers and publishers when a call they are part
//! of connects, converts, turns out a duplicate, or ends.
//!
//! What a webhook changed about a call is read from the call before and after it
//! ([`events_of`]); each event becomes one postback per subscribed endpoint ([`postbacks_for`]),
//! saved with the call in its transaction (the outbox) and delivered afterwards. Each audience
//! sees its own side only: a buyer is told what it pays, a publisher what it earns.

use std::fmt;

use hmac::Hmac;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    call::{Attempt, CallRecord, CallSid, Outcome},
    ids::IdSeed,
    money::Money,
    plan::{Buyer, Publisher, Record},
    routing::RoutingPlan,
};

/// The header carrying a postback's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Switchboard-Signature";

/// What happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum PostbackEvent {
    /// A buyer answered (for a buyer that must press 1: accepted).
    #[serde(rename = "call.connected")]
    Connected,
    /// The call converted for a buyer.
    #[serde(rename = "call.converted")]
    Converted,
    /// The call is a duplicate for the one told: a buyer it connected to that will not pay for
    /// it, or a publisher that earns nothing for it.
    #[serde(rename = "call.duplicate")]
    Duplicate,
    /// The call is over.
    #[serde(rename = "call.ended")]
    Ended,
}

impl PostbackEvent {
    pub const ALL: [Self; 4] = [Self::Connected, Self::Converted, Self::Duplicate, Self::Ended];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "call.connected",
            Self::Converted => "call.converted",
            Self::Duplicate => "call.duplicate",
            Self::Ended => "call.ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

impl fmt::Display for PostbackEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a buyer or publisher wants to hear of its calls, and the secret it checks them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostbackEndpoint {
    pub url: PostbackUrl,
    pub secret: PostbackSecret,
    /// The events sent; all of them unless listed.
    #[serde(default = "all_events")]
    pub events: Vec<PostbackEvent>,
}

fn all_events() -> Vec<PostbackEvent> {
    PostbackEvent::ALL.to_vec()
}

/// An endpoint's URL: `http` or `https`, with a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PostbackUrl(String);

impl TryFrom<String> for PostbackUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let url = url::Url::parse(&text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("`{text}` is not an http(s) URL with a host"));
        }
        Ok(Self(text))
    }
}

impl From<PostbackUrl> for String {
    fn from(url: PostbackUrl) -> Self {
        url.0
    }
}

impl PostbackUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key postbacks to an endpoint are signed with: 16 to 256 visible ASCII characters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PostbackSecret(String);

impl TryFrom<String> for PostbackSecret {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let visible = text.bytes().all(|b| b.is_ascii_graphic());
        if !(16..=256).contains(&text.len()) || !visible {
            return Err("a postback secret is 16 to 256 visible ASCII characters".into());
        }
        Ok(Self(text))
    }
}

impl From<PostbackSecret> for String {
    fn from(secret: PostbackSecret) -> Self {
        secret.0
    }
}

impl PostbackSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

// Never in logs.
impl fmt::Debug for PostbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostbackSecret(…)")
    }
}

/// A buyer's or publisher's endpoints, at most ten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<PostbackEndpoint>", into = "Vec<PostbackEndpoint>")]
pub struct Postbacks(Vec<PostbackEndpoint>);

impl TryFrom<Vec<PostbackEndpoint>> for Postbacks {
    type Error = String;

    fn try_from(endpoints: Vec<PostbackEndpoint>) -> Result<Self, String> {
        if endpoints.len() > 10 {
            return Err("at most 10 postback endpoints".into());
        }
        Ok(Self(endpoints))
    }
}

impl From<Postbacks> for Vec<PostbackEndpoint> {
    fn from(postbacks: Postbacks) -> Self {
        postbacks.0
    }
}

impl Postbacks {
    pub fn as_slice(&self) -> &[PostbackEndpoint] {
        &self.0
    }

    /// As readers who may not see secrets get them.
    pub fn redacted(&self) -> Self {
        let hide = |endpoint: &PostbackEndpoint| PostbackEndpoint {
            secret: PostbackSecret(super::destination::REDACTED.to_owned()),
            ..endpoint.clone()
        };
        Self(self.0.iter().map(hide).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One event of one call: what happened, and (for a buyer's part) which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEvent {
    pub event: PostbackEvent,
    /// The attempt whose buyer it concerns; `None` for the publisher's duplicate and the end.
    pub attempt: Option<u32>,
}

/// What a webhook changed about the call that buyers and publishers hear of.
pub fn events_of(before: Option<&CallRecord>, after: &CallRecord) -> Vec<CallEvent> {
    let mut events = Vec::new();
    let attempt_before = |number| before.and_then(|b| b.attempt(number));
    let connected = |a: &Attempt| a.answered_at.is_some() || a.status.is_some_and(|s| s.connected());
    for attempt in &after.attempts {
        let was = attempt_before(attempt.number);
        let mut happened = |event, now: bool, then: bool| {
            if now && !then {
                events.push(CallEvent {
                    event,
                    attempt: Some(attempt.number),
                });
            }
        };
        happened(
            PostbackEvent::Connected,
            connected(attempt),
            was.is_some_and(connected),
        );
        happened(
            PostbackEvent::Converted,
            attempt.converted,
            was.is_some_and(|a| a.converted),
        );
        // Settled when the leg ended: a duplicate connection the buyer will not pay for.
        let duplicate = |a: &Attempt| a.status.is_some_and(|s| s.connected()) && a.duplicate == Some(true);
        happened(
            PostbackEvent::Duplicate,
            duplicate(attempt),
            was.is_some_and(duplicate),
        );
    }
    let publisher_duplicate = |call: &CallRecord| call.publisher_duplicate == Some(true);
    if publisher_duplicate(after) && !before.is_some_and(publisher_duplicate) {
        events.push(CallEvent {
            event: PostbackEvent::Duplicate,
            attempt: None,
        });
    }
    if after.is_ended() && !before.is_some_and(CallRecord::is_ended) {
        events.push(CallEvent {
            event: PostbackEvent::Ended,
            attempt: None,
        });
    }
    events
}

/// A postback to deliver: one event, one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postback {
    /// Also the `Idempotency-Key` the receiver sees on every try.
    pub id: Uuid,
    /// The event: `call_sid:event:attempt`. With `endpoint`, unique: saving the same call
    /// change twice queues nothing twice.
    pub event_key: String,
    /// `buyer:<id>:<n>` or `publisher:<id>:<n>`: the owner's `n`-th endpoint.
    pub endpoint: String,
    pub event: PostbackEvent,
    pub call_sid: CallSid,
    pub url: String,
    pub secret: PostbackSecret,
    /// The JSON sent.
    pub body: String,
    pub created_at: Timestamp,
}

/// What a postback tells its receiver. Buyers are told what they pay and publishers what they
/// earn, never the other side's figures.
#[derive(Debug, Serialize)]
struct Body<'a> {
    id: Uuid,
    event: PostbackEvent,
    occurred_at: Timestamp,
    call_sid: &'a str,
    caller: &'a str,
    started_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(flatten)]
    side: Side<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Side<'a> {
    Buyer {
        buyer_id: String,
        /// The campaign the buyer was dialed in (after a redirect, not the one dialed).
        campaign_id: String,
        attempt: u32,
        connected_seconds: Option<u32>,
        /// Whether the call is a duplicate for this buyer.
        duplicate: Option<bool>,
        converted: bool,
        /// What the buyer pays for the call: its revenue if it converted, else nothing.
        revenue: Money,
    },
    Publisher {
        publisher_id: String,
        /// The campaign and tracking number the publisher sent the caller to (a buyer is not
        /// told which: it would name the publisher).
        campaign_id: Option<String>,
        tracking_number: &'a str,
        connected_seconds: Option<u32>,
        converted: bool,
        /// Whether the call is a duplicate for the publisher (it earns nothing).
        duplicate: Option<bool>,
        /// What the call earned the publisher; absent until settled.
        payout: Option<Money>,
    },
}

/// The postbacks `events` make: for each, one per endpoint of the buyer concerned (the attempt's
/// buyer; for the end, the buyer the call connected to) and one per endpoint of the call's
/// publisher, each subscribed to the event.
pub fn postbacks_for<'c>(
    plan: &RoutingPlan,
    call: &'c CallRecord,
    events: &[CallEvent],
    now: Timestamp,
    ids: IdSeed,
) -> Vec<Postback> {
    let mut postbacks = Vec::new();
    let mut handed_out = 0;
    let publisher = call.publisher_id.and_then(|id| plan.publisher_record(id));
    for happened in events {
        let attempt = match happened.attempt {
            Some(number) => call.attempt(number),
            None if happened.event == PostbackEvent::Ended => call.connected_attempt(),
            None => None,
        };
        let event_key = format!(
            "{}:{}:{}",
            call.sid,
            happened.event,
            happened.attempt.unwrap_or(0)
        );
        let mut add = |owner: String, endpoints: &Postbacks, side: &dyn Fn() -> Side<'c>| {
            for (n, endpoint) in endpoints.as_slice().iter().enumerate() {
                if !endpoint.events.contains(&happened.event) {
                    continue;
                }
                let id = ids.nth(handed_out);
                handed_out += 1;
                let body = body(call, happened.event, id, now, side());
                postbacks.push(Postback {
                    id,
                    event_key: event_key.clone(),
                    endpoint: format!("{owner}:{n}"),
                    event: happened.event,
                    call_sid: call.sid.clone(),
                    url: endpoint.url.as_str().to_owned(),
                    secret: endpoint.secret.clone(),
                    body,
                    created_at: now,
                });
            }
        };
        // A buyer hears of its part of the call; the publisher of the call, but of a duplicate
        // only its own (a buyer's is the buyer's business).
        if let Some((attempt, buyer)) = attempt.and_then(|a| plan.buyer(a.buyer_id).map(|b| (a, b))) {
            add(format!("buyer:{}", buyer.id), &buyer.spec.postbacks, &|| {
                buyer_side(attempt, buyer)
            });
        }
        let publishers_own = happened.event != PostbackEvent::Duplicate || happened.attempt.is_none();
        if let Some(publisher) = publisher.filter(|_| publishers_own) {
            add(
                format!("publisher:{}", publisher.id),
                &publisher.spec.postbacks,
                &|| publisher_side(call, publisher),
            );
        }
    }
    postbacks
}

fn buyer_side<'a>(attempt: &Attempt, buyer: &Record<Buyer>) -> Side<'a> {
    Side::Buyer {
        buyer_id: buyer.id.to_string(),
        campaign_id: attempt.campaign_id.to_string(),
        attempt: attempt.number,
        connected_seconds: attempt.connected_seconds,
        duplicate: attempt.duplicate,
        converted: attempt.converted,
        revenue: if attempt.converted {
            buyer.spec.revenue
        } else {
            Money::ZERO
        },
    }
}

fn publisher_side<'a>(call: &'a CallRecord, publisher: &Record<Publisher>) -> Side<'a> {
    let reached = call.connected_attempt();
    Side::Publisher {
        publisher_id: publisher.id.to_string(),
        campaign_id: call.visited.first().map(|id| id.to_string()),
        tracking_number: &call.called,
        connected_seconds: reached.and_then(|a| a.connected_seconds),
        converted: call.converted(),
        duplicate: call.publisher_duplicate,
        payout: call.publisher_payout,
    }
}

fn body(call: &CallRecord, event: PostbackEvent, id: Uuid, now: Timestamp, side: Side) -> String {
    let body = Body {
        id,
        event,
        occurred_at: now,
        call_sid: call.sid.as_str(),
        caller: call.caller.raw(),
        started_at: call.started_at,
        ended_at: call.ended_at,
        outcome: call.outcome,
        side,
    };
    // Plain data: serializing it cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// The `Switchboard-Signature` value for `body` sent at `at` (unix seconds): HMAC-SHA256 of
/// `"<at>.<body>"` keyed with the endpoint's secret, in hex. A receiver recomputes it, compares
/// in constant time, and refuses a `t` far from its own clock (a replay).
pub fn signature(secret: &PostbackSecret, at: i64, body: &str) -> String {
    let digest = super::signature::mac::<Hmac<Sha256>>(secret.expose(), &format!("{at}.{body}"));
    format!("t={at},v1={}", hex::encode(digest))
}

/// How long to wait before try `tries + 1`, after `tries` failed: `base` doubled each time, at
/// most an hour.
pub fn retry_delay(base: std::time::Duration, tries: u32) -> std::time::Duration {
    let doubled = base.saturating_mul(1u32 << tries.saturating_sub(1).min(20));
    doubled.min(std::time::Duration::from_secs(3600))
}

/// Where a postback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostbackStatus {
    /// Not delivered yet: due at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every try failed; it is retried only when asked (`POST /api/v1/postbacks/{id}/retry`).
    Failed,
}

impl PostbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A postback as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Postback)]
pub struct PostbackRecord {
    /// Also the `Idempotency-Key` header of every try.
    pub id: Uuid,
    pub event: PostbackEvent,
    pub call_sid: CallSid,
    /// `buyer:<id>:<n>` or `publisher:<id>:<n>`: the owner's n-th endpoint.
    pub endpoint: String,
    pub url: String,
    pub status: PostbackStatus,
    /// Tries since it was (last) queued.
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: Timestamp,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true)]
    pub last_status_code: Option<u16>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
    /// The JSON sent.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// A postback a worker took to deliver.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: Uuid,
    pub event: PostbackEvent,
    pub url: String,
    pub secret: PostbackSecret,
    pub body: String,
    /// Tries made before this one.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{
        call::{AttemptKind, Caller, DialStatus},
        plan::{BuyerId, CampaignId},
    };
    use crate::fresh::Generate;

    fn secret() -> PostbackSecret {
        PostbackSecret::try_from("whsec_0123456789abcdef".to_owned()).unwrap()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_0123456789abcdef
        assert_eq!(
            signature(&secret(), 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=9f5e37cdc7ea587c7c02062d93283cad000d66a831b2a1676418696db47ed6c2"
        );
    }

    #[test]
    fn retries_back_off_doubling_to_an_hour() {
        let base = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=6).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320]);
        assert_eq!(retry_delay(base, 30), Duration::from_secs(3600));
    }

    #[test]
    fn endpoints_are_checked_when_given() {
        let endpoint = |url: &str, secret: &str| {
            serde_json::from_value::<PostbackEndpoint>(
                serde_json::json!({"url": url, "secret": secret, "events": ["call.converted"]}),
            )
        };
        assert!(endpoint("https://buyer.example/hook", "whsec_0123456789abcdef").is_ok());
        assert!(endpoint("ftp://buyer.example/hook", "whsec_0123456789abcdef").is_err());
        assert!(endpoint("https://buyer.example/hook", "short").is_err());
        let all: PostbackEndpoint = serde_json::from_value(
            serde_json::json!({"url": "http://127.0.0.1:9/x", "secret": "whsec_0123456789abcdef"}),
        )
        .unwrap();
        assert_eq!(all.events, PostbackEvent::ALL);
        assert!(
            format!("{all:?}").contains("PostbackSecret(…)"),
            "secrets stay out of logs"
        );
    }

    #[test]
    fn each_change_is_an_event_once() {
        let t0 = Timestamp::UNIX_EPOCH;
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let mut call = CallRecord::new(
            sid,
            Caller::from_provider("+14155550123"),
            "+18005550100".into(),
            t0,
        );
        call.enter_campaign(None, CampaignId::generate());
        let campaign = call.visited[0];
        call.begin_attempt(BuyerId::generate(), campaign, AttemptKind::Buyer, Some(false), t0);
        let dialing = call.clone();
        call.leg_answered(1, t0);
        let answered = call.clone();
        let events = |before: &CallRecord, after: &CallRecord| -> Vec<(PostbackEvent, Option<u32>)> {
            events_of(Some(before), after)
                .iter()
                .map(|e| (e.event, e.attempt))
                .collect()
        };
        assert_eq!(events(&dialing, &answered), [(PostbackEvent::Connected, Some(1))]);
        call.attempt_ended(1, DialStatus::Completed, 120, Some(false), 90, t0);
        call.hung_up(t0);
        assert_eq!(
            events(&answered, &call),
            [(PostbackEvent::Converted, Some(1)), (PostbackEvent::Ended, None)]
        );
        assert!(events(&call, &call).is_empty(), "a retry is no news");

        let mut duplicate = dialing.clone();
        duplicate.attempt_ended(1, DialStatus::Completed, 120, Some(true), 90, t0);
        assert_eq!(
            events(&dialing, &duplicate),
            [
                (PostbackEvent::Connected, Some(1)),
                (PostbackEvent::Duplicate, Some(1))
            ]
        );
        let mut for_publisher = answered.clone();
        for_publisher.publisher_duplicate = Some(true);
        assert_eq!(
            events(&answered, &for_publisher),
            [(PostbackEvent::Duplicate, None)]
        );
    }
}
