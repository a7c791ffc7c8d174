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
    ids::{Id, IdSeed},
    money::Money,
    plan::{Buyer, BuyerId, Publisher, PublisherId, Record},
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
    /// The buyer returned the call's conversion (a dispute): its revenue and the publisher's
    /// payout for it are reversed.
    #[serde(rename = "call.returned")]
    Returned,
}

impl PostbackEvent {
    pub const ALL: [Self; 5] = [
        Self::Connected,
        Self::Converted,
        Self::Duplicate,
        Self::Ended,
        Self::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "call.connected",
            Self::Converted => "call.converted",
            Self::Duplicate => "call.duplicate",
            Self::Ended => "call.ended",
            Self::Returned => "call.returned",
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

/// A postback endpoint's id: drawn when the endpoint is created and kept through edits and
/// reorders, so that what is queued for an endpoint goes to it and to no other.
pub type EndpointId = Id<PostbackEndpoint>;

/// Where a buyer or publisher wants to hear of its calls, and the secret it checks them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostbackEndpoint {
    /// Assigned when the endpoint is created. Sent back, it keeps the endpoint (and the
    /// postbacks queued for it) through any change, its URL's included; an endpoint sent
    /// without one is the stored endpoint of the same URL, else a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EndpointId>,
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

/// A buyer's or publisher's endpoints, at most ten, each id once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<PostbackEndpoint>", into = "Vec<PostbackEndpoint>")]
pub struct Postbacks(Vec<PostbackEndpoint>);

impl TryFrom<Vec<PostbackEndpoint>> for Postbacks {
    type Error = String;

    fn try_from(endpoints: Vec<PostbackEndpoint>) -> Result<Self, String> {
        if endpoints.len() > 10 {
            return Err("at most 10 postback endpoints".into());
        }
        let mut ids = std::collections::HashSet::new();
        if let Some(id) = endpoints.iter().filter_map(|e| e.id).find(|id| !ids.insert(*id)) {
            return Err(format!("endpoint id {id} is listed twice"));
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

    /// The endpoint of this id.
    pub fn endpoint(&self, id: EndpointId) -> Option<&PostbackEndpoint> {
        self.0.iter().find(|endpoint| endpoint.id == Some(id))
    }

    /// Gives every endpoint an id: one that names its id keeps it; one without takes the id of
    /// the endpoint of `before` (the list as stored) with the same URL that no other endpoint
    /// kept, else a new one from `fresh`. So a list sent back as read, reordered, or written
    /// again in a plan file keeps its ids, and an endpoint edited with its id stays itself.
    pub fn keep_ids(&mut self, before: Option<&Postbacks>, fresh: &mut dyn FnMut() -> EndpointId) {
        let named: std::collections::HashSet<EndpointId> = self.0.iter().filter_map(|e| e.id).collect();
        let mut unclaimed: Vec<(EndpointId, &PostbackUrl)> = (before.map(Postbacks::as_slice))
            .unwrap_or_default()
            .iter()
            .filter_map(|old| old.id.map(|id| (id, &old.url)))
            .filter(|(id, _)| !named.contains(id))
            .collect();
        for endpoint in self.0.iter_mut().filter(|e| e.id.is_none()) {
            let same_url = unclaimed.iter().position(|(_, url)| **url == endpoint.url);
            endpoint.id = Some(match same_url {
                Some(at) => unclaimed.remove(at).0,
                None => fresh(),
            });
        }
    }
}

/// Whose endpoint a postback goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostbackOwner {
    Buyer(BuyerId),
    Publisher(PublisherId),
}

impl PostbackOwner {
    /// `buyer` or `publisher`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Buyer(_) => "buyer",
            Self::Publisher(_) => "publisher",
        }
    }

    pub fn id(self) -> Uuid {
        match self {
            Self::Buyer(id) => id.as_uuid(),
            Self::Publisher(id) => id.as_uuid(),
        }
    }
}

/// One endpoint of one owner: what a queued postback is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointRef {
    pub owner: PostbackOwner,
    pub id: EndpointId,
}

/// `buyer:<buyer id>:<endpoint id>` or `publisher:<publisher id>:<endpoint id>`.
impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.owner.kind(), self.owner.id(), self.id)
    }
}

/// Why a queued postback is no longer sent: it is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its buyer or publisher was removed.
    Owner,
    /// Its endpoint was removed.
    Endpoint,
    /// Its endpoint no longer takes the event.
    Event(PostbackEvent),
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner => f.write_str("its buyer or publisher was removed"),
            Self::Endpoint => f.write_str("its endpoint was removed"),
            Self::Event(event) => write!(f, "its endpoint no longer takes {event}"),
        }
    }
}

impl Gone {
    /// What a cancelled postback shows as its `last_error`.
    pub fn reason(self) -> String {
        format!("cancelled: {self}")
    }
}

/// Where a queued postback's next try goes: the endpoint of its id among its owner's endpoints
/// as they are now (`None`: the owner was removed), with its URL and secret as they are now,
/// so that a fixed URL or a rotated secret applies to the tries after the change.
pub fn endpoint_now(
    endpoints: Option<&Postbacks>,
    id: EndpointId,
    event: PostbackEvent,
) -> Result<&PostbackEndpoint, Gone> {
    let endpoint = endpoints.ok_or(Gone::Owner)?.endpoint(id).ok_or(Gone::Endpoint)?;
    if !endpoint.events.contains(&event) {
        return Err(Gone::Event(event));
    }
    Ok(endpoint)
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
    /// The endpoint it is for. Each try goes to this endpoint as it is then.
    pub endpoint: EndpointRef,
    pub event: PostbackEvent,
    pub call_sid: CallSid,
    /// The endpoint's URL when queued (its secret is read at each try, never kept with it).
    pub url: String,
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
pub fn postbacks_for(
    plan: &RoutingPlan,
    call: &CallRecord,
    events: &[CallEvent],
    now: Timestamp,
    ids: IdSeed,
) -> Vec<Postback> {
    postbacks_paying(plan, call, events, None, now, ids)
}

/// The postbacks of a buyer's report or return: as [`postbacks_for`], the buyer told
/// `revenue` for its converted dial (what it reported, else its configured revenue).
pub fn postbacks_for_report(
    plan: &RoutingPlan,
    call: &CallRecord,
    event: CallEvent,
    revenue: Option<Money>,
    now: Timestamp,
    ids: IdSeed,
) -> Vec<Postback> {
    postbacks_paying(plan, call, &[event], revenue, now, ids)
}

fn postbacks_paying<'c>(
    plan: &RoutingPlan,
    call: &'c CallRecord,
    events: &[CallEvent],
    revenue: Option<Money>,
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
        let mut add = |owner: PostbackOwner, endpoints: &Postbacks, side: &dyn Fn() -> Side<'c>| {
            for endpoint in endpoints.as_slice() {
                // Every stored endpoint has an id (the store gives it one).
                let Some(endpoint_id) = endpoint.id else {
                    continue;
                };
                if !endpoint.events.contains(&happened.event) {
                    continue;
                }
                let id = ids.nth(handed_out);
                handed_out += 1;
                let body = body(call, happened.event, id, now, side());
                postbacks.push(Postback {
                    id,
                    event_key: event_key.clone(),
                    endpoint: EndpointRef {
                        owner,
                        id: endpoint_id,
                    },
                    event: happened.event,
                    call_sid: call.sid.clone(),
                    url: endpoint.url.as_str().to_owned(),
                    body,
                    created_at: now,
                });
            }
        };
        // A buyer hears of its part of the call; the publisher of the call, but of a duplicate
        // only its own (a buyer's is the buyer's business).
        if let Some((attempt, buyer)) = attempt.and_then(|a| plan.buyer(a.buyer_id).map(|b| (a, b))) {
            add(PostbackOwner::Buyer(buyer.id), &buyer.spec.postbacks, &|| {
                buyer_side(attempt, buyer, revenue)
            });
        }
        let publishers_own = happened.event != PostbackEvent::Duplicate || happened.attempt.is_none();
        if let Some(publisher) = publisher.filter(|_| publishers_own) {
            add(
                PostbackOwner::Publisher(publisher.id),
                &publisher.spec.postbacks,
                &|| publisher_side(call, publisher),
            );
        }
    }
    postbacks
}

fn buyer_side<'a>(attempt: &Attempt, buyer: &Record<Buyer>, revenue: Option<Money>) -> Side<'a> {
    Side::Buyer {
        buyer_id: buyer.id.to_string(),
        campaign_id: attempt.campaign_id.to_string(),
        attempt: attempt.number,
        connected_seconds: attempt.connected_seconds,
        duplicate: attempt.duplicate,
        converted: attempt.converted,
        revenue: if attempt.converted {
            revenue.unwrap_or(buyer.spec.revenue)
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
    /// Not sent, and never to be: its endpoint (or its buyer or publisher) was removed, or no
    /// longer takes the event. `last_error` says which.
    Cancelled,
}

impl PostbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub const ALL: [Self; 4] = [Self::Pending, Self::Delivered, Self::Failed, Self::Cancelled];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
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
    /// `buyer:<buyer id>:<endpoint id>` or `publisher:<publisher id>:<endpoint id>` (for a
    /// postback queued before endpoints had ids, the endpoint's position instead of its id).
    pub endpoint: String,
    /// Where its last try went; before any, its endpoint's URL when it was queued. Every try
    /// goes to its endpoint's URL as it is then.
    pub url: String,
    pub status: PostbackStatus,
    /// Tries since it was (last) queued.
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: Timestamp,
    /// Why the last try failed (admin tokens only: others read that it failed), or why it was
    /// cancelled.
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

/// What readers who may not see secrets read as a failed try's error.
pub const ERROR_FOR_ADMINS: &str = "admin tokens see why";

impl PostbackRecord {
    /// As readers who may not see secrets get it: why a try failed (a receiver's answer, what
    /// its address resolved to) is for admins; a cancellation's reason is Switchboard's own.
    pub fn redacted(mut self) -> Self {
        if self.status != PostbackStatus::Cancelled && self.last_error.is_some() {
            self.last_error = Some(match self.last_status_code {
                Some(code) => format!("the receiver answered {code}; {ERROR_FOR_ADMINS}"),
                None => format!("the try failed; {ERROR_FOR_ADMINS}"),
            });
        }
        self
    }
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

    fn endpoints(json: serde_json::Value) -> Postbacks {
        serde_json::from_value(json).unwrap()
    }

    fn ids_and_urls(postbacks: &Postbacks) -> Vec<(EndpointId, &str)> {
        (postbacks.as_slice().iter())
            .map(|e| (e.id.unwrap(), e.url.as_str()))
            .collect()
    }

    #[test]
    fn endpoints_keep_their_ids_by_id_then_by_url() {
        let secret = "whsec_0123456789abcdef";
        let mut stored = endpoints(serde_json::json!([
            {"url": "https://a.example/", "secret": secret},
            {"url": "https://b.example/", "secret": secret},
        ]));
        stored.keep_ids(None, &mut EndpointId::generate);
        let [(a, _), (b, _)] = ids_and_urls(&stored)[..] else {
            panic!("two endpoints")
        };
        assert_ne!(a, b, "each endpoint its own id");

        // Sent back reordered without ids, a third added: each keeps its id by URL.
        let mut reordered = endpoints(serde_json::json!([
            {"url": "https://c.example/", "secret": secret},
            {"url": "https://b.example/", "secret": secret},
            {"url": "https://a.example/", "secret": secret},
        ]));
        reordered.keep_ids(Some(&stored), &mut EndpointId::generate);
        let kept = ids_and_urls(&reordered);
        assert_eq!(kept[1..], [(b, "https://b.example/"), (a, "https://a.example/")]);
        assert!(kept[0].0 != a && kept[0].0 != b, "a new URL is a new endpoint");

        // Its id sent with it, an endpoint keeps it through a change of URL; an endpoint without
        // one never takes an id another endpoint named, even at that endpoint's old URL.
        let mut moved = endpoints(serde_json::json!([
            {"id": a.to_string(), "url": "https://a2.example/", "secret": secret},
            {"url": "https://a.example/", "secret": secret},
        ]));
        moved.keep_ids(Some(&stored), &mut EndpointId::generate);
        let moved = ids_and_urls(&moved);
        assert_eq!(moved[0], (a, "https://a2.example/"));
        assert!(moved[1].0 != a && moved[1].0 != b);

        // The same list again: the same ids, nothing changed.
        let mut again = endpoints(serde_json::json!([
            {"url": "https://a.example/", "secret": secret},
            {"url": "https://b.example/", "secret": secret},
        ]));
        again.keep_ids(Some(&stored), &mut || panic!("no new id for an endpoint kept"));
        assert_eq!(again, stored);

        let twice = serde_json::from_value::<Postbacks>(serde_json::json!([
            {"id": a.to_string(), "url": "https://a.example/", "secret": secret},
            {"id": a.to_string(), "url": "https://b.example/", "secret": secret},
        ]));
        assert!(twice.unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn a_queued_postback_goes_to_its_endpoint_as_it_is_now_or_nowhere() {
        let mut stored = endpoints(serde_json::json!([
            {"url": "https://a.example/", "secret": "whsec_0123456789abcdef", "events": ["call.converted"]},
            {"url": "https://b.example/", "secret": "whsec_fedcba9876543210"},
        ]));
        stored.keep_ids(None, &mut EndpointId::generate);
        let [(a, _), (b, _)] = ids_and_urls(&stored)[..] else {
            panic!("two endpoints")
        };
        let converted = PostbackEvent::Converted;
        let found = endpoint_now(Some(&stored), b, converted).unwrap();
        assert_eq!(found.secret.expose(), "whsec_fedcba9876543210");
        assert_eq!(
            endpoint_now(Some(&stored), a, PostbackEvent::Ended).unwrap_err(),
            Gone::Event(PostbackEvent::Ended)
        );
        assert_eq!(
            endpoint_now(Some(&stored), EndpointId::generate(), converted).unwrap_err(),
            Gone::Endpoint
        );
        assert_eq!(endpoint_now(None, a, converted).unwrap_err(), Gone::Owner);
        assert_eq!(
            Gone::Event(PostbackEvent::Ended).reason(),
            "cancelled: its endpoint no longer takes call.ended"
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
