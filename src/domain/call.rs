//! A live call: who is calling, where it is in its life, and every buyer it was offered to.
//!
//! [`CallRecord`] is the whole state of a call. It changes only through its transition methods,
//! is persisted after every webhook, and can be rebuilt from the store, so a call survives the
//! actor (or the process) that was handling it.

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    dialing::Screening,
    geo::{AreaCode, CallerPlace, UsState},
    money::Money,
    phone::E164,
    plan::{BuyerId, CampaignId, CompanyId, PublisherId},
};

mod merge;
mod trail;

pub use self::trail::Trail;

/// Attempts decided without the stored record are numbered in thousands of their own (see
/// [`CallRecord::next_blind_attempt_number`]).
pub const BLIND_ATTEMPTS: u32 = 1000;

/// The provider's id of a call. Twilio's are `CA` and 32 hex digits; other Twilio-compatible
/// providers use UUIDs, so any 2–64 letters, digits, `-` and `_` are accepted (the id goes into
/// callback URLs, so nothing else may).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallSid(String);

impl CallSid {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (2..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("`{text}` is not a call id"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CallSid {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<CallSid> for String {
    fn from(sid: CallSid) -> Self {
        sid.0
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling. A withheld or non-telephone caller id (`anonymous`, empty, `client:alice`)
/// still routes, but cannot be de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Number(E164),
    Unknown(String),
}

impl Caller {
    pub fn from_provider(from: &str) -> Self {
        match E164::from_provider(from.trim()) {
            Ok(number) => Self::Number(number),
            Err(_) => Self::Unknown(from.to_owned()),
        }
    }

    pub fn number(&self) -> Option<&E164> {
        match self {
            Self::Number(number) => Some(number),
            Self::Unknown(_) => None,
        }
    }

    /// What the provider sent.
    pub fn raw(&self) -> &str {
        match self {
            Self::Number(number) => number.as_str(),
            Self::Unknown(raw) => raw,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Arrived; no buyer dialed yet.
    Routing,
    /// A buyer's phone is ringing.
    Dialing,
    /// The caller is talking to a buyer.
    Connected,
    Ended,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It reached a buyer (possibly the fallback buyer, possibly after a redirect).
    Connected,
    /// Switchboard ended it on purpose: nobody was left to take it. See [`DropReason`].
    Dropped,
    /// The caller hung up before a buyer answered.
    Abandoned,
    /// The number dialed belongs to no campaign.
    Rejected,
    /// The caller is on the company's block list: refused before any buyer heard of the call.
    Blocked,
    /// The provider never said the call ended: Switchboard ended it after the longest a call
    /// can last, freeing what it held.
    TimedOut,
}

/// Why a call was dropped: the reason that kept the most buyers out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Every buyer left would have considered the call a duplicate.
    Duplicate,
    /// The buyers left were at a cap (concurrency, hourly, daily, monthly or lifetime).
    Capacity,
    /// The buyers left were outside their business hours.
    Closed,
    /// The buyers left do not take callers from the caller's state or area code.
    Geo,
    /// Buyers were dialed; none answered.
    Unanswered,
    /// The campaign had no buyer that could take calls (none listed, or all paused).
    NoBuyer,
    /// The number dialed belongs to no campaign.
    UnknownNumber,
    /// No decision could be made within the decision budget, and no fallback buyer could take
    /// the call on what was known.
    Overloaded,
}

/// `DialCallStatus`: how a `<Dial>` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DialStatus {
    /// Answered and connected (the buyer or the caller then hung up).
    Completed,
    /// Answered (conferences only).
    Answered,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialStatus {
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| format!("`{text}` is not a DialCallStatus"))
    }

    pub fn connected(self) -> bool {
        matches!(self, Self::Completed | Self::Answered)
    }
}

/// `CallStatus`: where a call, or a buyer's leg, stands as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    /// Answered: talking (also a leg's `answered` event, which some providers report as the
    /// status itself).
    #[serde(alias = "answered")]
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Canceled,
    Failed,
}

impl CallStatus {
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(text.trim().to_owned()))
            .map_err(|_| format!("`{text}` is not a CallStatus"))
    }

    /// After it there is no call (or leg) any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Canceled | Self::Failed
        )
    }

    pub fn answered(self) -> bool {
        self == Self::InProgress
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// A buyer of the campaign's list.
    Buyer,
    /// The campaign's fallback buyer, dialed duplicates or not.
    Fallback,
}

/// One buyer dialed for this call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Dial)]
pub struct Attempt {
    /// 1, 2, …: part of the callback URLs, so late callbacks of an earlier attempt are told apart.
    pub number: u32,
    pub buyer_id: BuyerId,
    pub campaign_id: CampaignId,
    pub kind: AttemptKind,
    /// Whether the call is a duplicate for this buyer: predicted when dialed, settled when the
    /// leg ends; null for an unknown caller.
    #[schema(required = true)]
    pub duplicate: Option<bool>,
    #[schema(required = true)]
    pub status: Option<DialStatus>,
    #[schema(required = true)]
    pub connected_seconds: Option<u32>,
    pub converted: bool,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<Timestamp>,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// For a buyer that must press 1 (or be screened for a machine): where that stands; absent:
    /// not screened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Screening)]
    pub screening: Option<Screening>,
    /// How long the buyer's leg lasted, as its own `completed` callback says (`CallDuration`):
    /// what settles the dial if its action never comes. Absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub leg_seconds: Option<u32>,
    /// When the buyer picked up, as first heard (its leg's answer, or the request for its
    /// whisper): where the provider's `DialCallDuration` starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    pub picked_up_at: Option<Timestamp>,
    /// When the caller was put through to the buyer: Switchboard answered the leg's last
    /// document with the connect (after press-1, or machine detection), or its whisper ends.
    /// Absent for a buyer put through as it picked up (no whisper, no screening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    pub bridged_at: Option<Timestamp>,
    /// How long the caller and the buyer talked: `connected_seconds` less what the buyer spent
    /// before the caller was put through (its whisper, the prompt). What the buyer's
    /// `conversion_seconds` is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub bridged_seconds: Option<u32>,
}

impl Attempt {
    /// The buyer picked up at `at` (the earliest word of it counts).
    pub fn picked_up(&mut self, at: Timestamp) {
        self.picked_up_at = Some(self.picked_up_at.map_or(at, |known| known.min(at)));
    }

    /// Whole seconds from the buyer's pick-up to the caller being put through, when both are
    /// known (none for a buyer put through as it picked up).
    fn seconds_before_the_bridge(&self) -> u32 {
        match (self.picked_up_at, self.bridged_at) {
            (Some(picked_up), Some(bridged)) => {
                let waited = bridged.as_millisecond() - picked_up.as_millisecond();
                u32::try_from((waited.max(0) + 500) / 1000).unwrap_or(u32::MAX)
            }
            _ => 0,
        }
    }

    /// What a dial's result comes to for routing: a leg that rang through to the buyer but never
    /// reached the caller did not connect, whatever `DialCallStatus` says, so routing goes on to
    /// the next buyer. The provider's `DialBridged` decides when it is sent; without it, a
    /// screened buyer that did not press 1 did not take the call.
    pub fn result_of(&self, status: DialStatus, bridged: Option<bool>) -> DialStatus {
        let screened_out = self.screening.is_some_and(|s| s != Screening::Accepted);
        let reached_the_caller = bridged.unwrap_or(!screened_out);
        if status.connected() && !reached_the_caller {
            DialStatus::NoAnswer
        } else {
            status
        }
    }
}

/// A recording the provider made of the call, as its recording status callback told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recording {
    /// The attempt whose `<Dial>` recorded it.
    pub attempt: u32,
    /// `RecordingSid`.
    pub sid: String,
    /// `RecordingUrl`: the media (add `.mp3` or `.wav`; the provider may ask for the account's
    /// credentials).
    #[schema(format = "uri")]
    pub url: String,
    pub status: RecordingStatus,
    #[schema(required = true)]
    pub duration_seconds: Option<u32>,
    #[schema(required = true)]
    pub channels: Option<u32>,
    /// When the provider reported it.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// `RecordingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingStatus {
    InProgress,
    Completed,
    /// Nothing was recorded (silence, or the call ended first).
    Absent,
    Failed,
}

impl RecordingStatus {
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(text.trim().to_owned()))
            .map_err(|_| format!("`{text}` is not a RecordingStatus"))
    }

    fn is_final(self) -> bool {
        self != Self::InProgress
    }
}

/// The whole state of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub sid: CallSid,
    pub caller: Caller,
    /// The number dialed (`To`), as sent.
    pub called: String,
    pub company_id: Option<CompanyId>,
    /// The campaign routing the call now.
    pub campaign_id: Option<CampaignId>,
    /// Every campaign the call was routed in, in order (redirects never revisit one).
    pub visited: Vec<CampaignId>,
    pub state: CallState,
    pub outcome: Option<Outcome>,
    pub drop_reason: Option<DropReason>,
    pub attempts: Vec<Attempt>,
    /// Buyers skipped because the call would have been a duplicate for them, each once.
    pub duplicate_buyers: Vec<BuyerId>,
    pub started_at: Timestamp,
    pub state_changed_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// How many timeline entries are stored; the next one is numbered after them.
    pub timeline_len: u32,
    /// Every status callback applied, so that a retried one changes nothing.
    pub status_callbacks: BTreeSet<CallbackKey>,
    /// The caller's US state when the call arrived (the provider's `FromState`, else the area
    /// code's), as buyers' state lists judge it.
    pub caller_state: Option<UsState>,
    pub recordings: Vec<Recording>,
    /// Who sent the call: the publisher given the tracking number dialed, or the one whose RTB
    /// bid the call claimed.
    pub publisher_id: Option<PublisherId>,
    /// Whether the caller had already earned the publisher a payout inside its de-dupe window;
    /// judged when the call met the payout rule (`None` before, or if it never did).
    pub publisher_duplicate: Option<bool>,
    /// What the call earned its publisher: `None` until settled.
    pub publisher_payout: Option<Money>,
    /// What the RTB bid the call claimed promised its publisher for a conversion.
    pub bid_payout: Option<Money>,
    /// Buyers dialed on this call by attempts this record does not hold: a record rebuilt
    /// without the stored one (see [`CallRecord::merged_with`]) knows them from its callback
    /// URL's [`Trail`], and never dials them again.
    pub dialed_before: Vec<BuyerId>,
    /// The turns taken without the stored record (each keyed when it was taken) whose entries
    /// the store has merged: a retried save merges none of them twice.
    pub blind_turns: BTreeSet<Uuid>,
}

/// A status callback as the provider numbers it: the leg it reports on (0 for the call itself,
/// `n` for attempt `n`'s buyer leg) and its `SequenceNumber`, which counts per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CallbackKey {
    pub leg: u32,
    pub sequence: u32,
}

impl CallRecord {
    pub fn new(sid: CallSid, caller: Caller, called: String, now: Timestamp) -> Self {
        Self {
            sid,
            caller,
            called,
            company_id: None,
            campaign_id: None,
            visited: Vec::new(),
            state: CallState::Routing,
            outcome: None,
            drop_reason: None,
            attempts: Vec::new(),
            duplicate_buyers: Vec::new(),
            started_at: now,
            state_changed_at: now,
            ended_at: None,
            timeline_len: 0,
            status_callbacks: BTreeSet::new(),
            caller_state: None,
            recordings: Vec::new(),
            publisher_id: None,
            publisher_duplicate: None,
            publisher_payout: None,
            bid_payout: None,
            dialed_before: Vec::new(),
            blind_turns: BTreeSet::new(),
        }
    }

    /// Where the caller is, as routing judges buyers' state and area code limits.
    pub fn place(&self) -> CallerPlace {
        CallerPlace {
            state: self.caller_state,
            area_code: self.caller.number().and_then(AreaCode::of),
        }
    }

    pub fn is_ended(&self) -> bool {
        self.state == CallState::Ended
    }

    /// Buyers already dialed on this call, in any campaign.
    pub fn tried(&self) -> HashSet<BuyerId> {
        let dialed = self.attempts.iter().map(|a| a.buyer_id);
        self.dialed_before.iter().copied().chain(dialed).collect()
    }

    /// The number the next attempt will have.
    pub fn next_attempt_number(&self) -> u32 {
        self.attempts.last().map_or(1, |a| a.number + 1)
    }

    /// The number the next attempt has when it is decided without the stored record: in a
    /// thousand of its own (1001, 2001, …), which no attempt the store holds can have, so that
    /// merging never puts two buyers' dials under one number (the number is in the dial's
    /// callback URLs, which the provider already has).
    pub fn next_blind_attempt_number(&self) -> u32 {
        let last = self.attempts.last().map_or(0, |a| a.number);
        (last / BLIND_ATTEMPTS + 1) * BLIND_ATTEMPTS + 1
    }

    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn attempt(&self, number: u32) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.number == number)
    }

    /// The attempt that connected the caller to a buyer, if any.
    pub fn connected_attempt(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .find(|a| a.answered_at.is_some() || a.status.is_some_and(DialStatus::connected))
    }

    fn set_state(&mut self, state: CallState, now: Timestamp) {
        if self.state != state {
            self.state = state;
            self.state_changed_at = now;
        }
    }

    /// The call is now routed in `campaign` (its first, or a redirect's target).
    pub fn enter_campaign(&mut self, company: Option<CompanyId>, campaign: CampaignId) {
        self.company_id = company;
        self.campaign_id = Some(campaign);
        if !self.visited.contains(&campaign) {
            self.visited.push(campaign);
        }
    }

    pub fn begin_attempt(
        &mut self,
        buyer_id: BuyerId,
        campaign_id: CampaignId,
        kind: AttemptKind,
        duplicate: Option<bool>,
        now: Timestamp,
    ) -> &Attempt {
        let number = self.next_attempt_number();
        self.begin_attempt_numbered(number, buyer_id, campaign_id, kind, duplicate, now)
    }

    /// As [`CallRecord::begin_attempt`], numbered `number` (above every attempt the record has).
    pub fn begin_attempt_numbered(
        &mut self,
        number: u32,
        buyer_id: BuyerId,
        campaign_id: CampaignId,
        kind: AttemptKind,
        duplicate: Option<bool>,
        now: Timestamp,
    ) -> &Attempt {
        debug_assert!(number >= self.next_attempt_number());
        self.attempts.push(Attempt {
            number,
            buyer_id,
            campaign_id,
            kind,
            duplicate,
            status: None,
            connected_seconds: None,
            converted: false,
            started_at: now,
            answered_at: None,
            ended_at: None,
            screening: None,
            leg_seconds: None,
            picked_up_at: None,
            bridged_at: None,
            bridged_seconds: None,
        });
        self.set_state(CallState::Dialing, now);
        &self.attempts[self.attempts.len() - 1]
    }

    /// Attempt `number`'s buyer must press 1 before the caller is put through.
    pub fn expect_screening(&mut self, number: u32) {
        if let Some(attempt) = self.attempts.iter_mut().find(|a| a.number == number) {
            attempt.screening = Some(Screening::Pending);
        }
    }

    /// The buyer of attempt `number` answered the press-1 prompt (or let it time out). Returns
    /// the screening if this is news: only a pending screening of an unsettled attempt changes,
    /// so a retried or late callback changes nothing. An acceptance connects the caller.
    /// The caller of attempt `number` is put through at `at` (see [`Attempt::bridged_at`]).
    pub fn bridge(&mut self, number: u32, at: Timestamp) {
        if let Some(attempt) = self.attempts.iter_mut().find(|a| a.number == number)
            && attempt.bridged_at.is_none()
            && attempt.status.is_none()
        {
            attempt.bridged_at = Some(at);
        }
    }

    pub fn screened(&mut self, number: u32, result: Screening, now: Timestamp) -> Option<Screening> {
        let is_current = self.current_attempt().is_some_and(|a| a.number == number);
        let attempt = self.attempts.iter_mut().find(|a| a.number == number)?;
        if attempt.screening != Some(Screening::Pending)
            || attempt.status.is_some()
            || result == Screening::Pending
        {
            return None;
        }
        attempt.screening = Some(result);
        if result == Screening::Accepted {
            attempt.answered_at = Some(now);
            if is_current && self.state == CallState::Dialing {
                self.set_state(CallState::Connected, now);
            }
            self.correct_abandoned();
        }
        Some(result)
    }

    /// Whether a recording's callback with `status` would change anything: a recording not
    /// seen yet, or one in progress that now has its final status.
    pub fn is_recording_news(&self, sid: &str, status: RecordingStatus) -> bool {
        match self.recordings.iter().find(|r| r.sid == sid) {
            Some(known) => !known.status.is_final() && status.is_final(),
            None => true,
        }
    }

    /// Notes a recording status callback. Returns whether it is news (see
    /// [`CallRecord::is_recording_news`]); a retry or older news changes nothing.
    pub fn add_recording(&mut self, recording: Recording) -> bool {
        if !self.is_recording_news(&recording.sid, recording.status) {
            return false;
        }
        match self.recordings.iter_mut().find(|r| r.sid == recording.sid) {
            Some(known) => *known = recording,
            None => self.recordings.push(recording),
        }
        true
    }

    /// The buyer answered attempt `number`. Returns whether this is news: an attempt already
    /// settled (its dial ended) is not changed by a late callback.
    pub fn leg_answered(&mut self, number: u32, now: Timestamp) -> bool {
        let is_current = self.current_attempt().is_some_and(|a| a.number == number);
        let Some(attempt) = self.attempts.iter_mut().find(|a| a.number == number) else {
            return false;
        };
        if attempt.status.is_none() {
            attempt.picked_up(now);
        }
        // A buyer that must press 1 picked up to hear the prompt: the caller is not put through
        // until it accepts (see `screened`).
        if attempt.answered_at.is_some() || attempt.status.is_some() || attempt.screening.is_some() {
            return false;
        }
        attempt.answered_at = Some(now);
        if is_current && self.state == CallState::Dialing {
            self.set_state(CallState::Connected, now);
        }
        self.correct_abandoned();
        true
    }

    /// The leg of attempt `number` ended, by its own status callback (with how long it lasted,
    /// if it says); its dial's result may still come. Returns whether this is news.
    pub fn leg_ended(&mut self, number: u32, leg_seconds: Option<u32>, now: Timestamp) -> bool {
        match self.attempts.iter_mut().find(|a| a.number == number) {
            Some(attempt) if attempt.status.is_none() && attempt.ended_at.is_none() => {
                attempt.ended_at = Some(now);
                attempt.leg_seconds = leg_seconds;
                true
            }
            _ => false,
        }
    }

    /// An attempt whose buyer answered and whose leg's end said how long it lasted, but whose
    /// dial never reported its end, once the call is over: its action request was lost, and
    /// the leg's own report settles it (so a conversion does not hang on one request).
    pub fn unsettled_by_its_dial(&self) -> Option<(u32, u32)> {
        if !self.is_ended() {
            return None;
        }
        (self.attempts.iter())
            .find(|a| a.status.is_none() && a.answered_at.is_some())
            .and_then(|a| Some((a.number, a.leg_seconds?)))
    }

    /// Callbacks carry no order: a call taken for abandoned (its end reported first) turns out
    /// to have connected when the evidence arrives.
    fn correct_abandoned(&mut self) {
        if self.outcome == Some(Outcome::Abandoned) {
            self.outcome = Some(Outcome::Connected);
        }
    }

    /// The `<Dial>` of attempt `number` ended. `duplicate` is the settled de-dupe status for its
    /// buyer (as of now), `conversion_seconds` the buyer's rule. Returns the attempt as settled,
    /// or `None` for an attempt this call never made (or one already settled).
    pub fn attempt_ended(
        &mut self,
        number: u32,
        status: DialStatus,
        connected_seconds: u32,
        duplicate: Option<bool>,
        conversion_seconds: u32,
        now: Timestamp,
    ) -> Option<Attempt> {
        let attempt = self.attempts.iter_mut().find(|a| a.number == number)?;
        if attempt.status.is_some() {
            return None;
        }
        attempt.status = Some(status);
        attempt.ended_at = Some(now);
        if status.connected() {
            attempt.answered_at.get_or_insert(now);
            attempt.connected_seconds = Some(connected_seconds);
            attempt.duplicate = duplicate;
            let bridged = connected_seconds.saturating_sub(attempt.seconds_before_the_bridge());
            attempt.bridged_seconds = Some(bridged);
            attempt.converted = duplicate != Some(true) && bridged >= conversion_seconds;
        }
        let settled = attempt.clone();
        if status.connected() {
            if self.is_ended() {
                self.correct_abandoned();
            } else {
                self.set_state(CallState::Connected, now);
            }
        }
        Some(settled)
    }

    pub fn end(&mut self, outcome: Outcome, reason: Option<DropReason>, now: Timestamp) {
        if self.is_ended() {
            return;
        }
        // A buyer still being screened is not put through to a caller who is gone.
        for attempt in &mut self.attempts {
            if attempt.screening == Some(Screening::Pending) {
                attempt.screening = Some(Screening::CallerGone);
            }
        }
        self.outcome = Some(outcome);
        self.drop_reason = reason;
        self.ended_at = Some(now);
        self.set_state(CallState::Ended, now);
    }

    /// No final callback came within the longest a call can last: the call is taken for over.
    pub fn time_out(&mut self, now: Timestamp) {
        self.end(Outcome::TimedOut, None, now);
    }

    /// The provider says the call is over: it connected, or the caller gave up first.
    pub fn hung_up(&mut self, now: Timestamp) {
        let outcome = if self.connected_attempt().is_some() {
            Outcome::Connected
        } else {
            Outcome::Abandoned
        };
        self.end(outcome, None, now);
    }

    /// Notes buyers a decision skipped as duplicates.
    pub fn avoided_duplicates(&mut self, buyers: impl IntoIterator<Item = BuyerId>) {
        for buyer in buyers {
            if !self.duplicate_buyers.contains(&buyer) {
                self.duplicate_buyers.push(buyer);
            }
        }
    }

    pub fn used_fallback(&self) -> bool {
        self.attempts.iter().any(|a| a.kind == AttemptKind::Fallback)
    }

    /// How many times the call was redirected to another campaign.
    pub fn redirects(&self) -> usize {
        self.visited.len().saturating_sub(1)
    }

    /// Whether the call was a duplicate for the buyer it reached.
    pub fn duplicate(&self) -> Option<bool> {
        self.connected_attempt().and_then(|a| a.duplicate)
    }

    pub fn converted(&self) -> bool {
        self.attempts.iter().any(|a| a.converted)
    }
}

/// A converted call: what is owed, by whom, to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub call_sid: CallSid,
    pub attempt: u32,
    pub buyer_id: BuyerId,
    pub campaign_id: CampaignId,
    pub caller: Option<E164>,
    pub connected_seconds: u32,
    pub payout: Money,
    pub revenue: Money,
    pub at: Timestamp,
}

/// What Switchboard tells the provider to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<Dial>` a buyer; callbacks name the attempt.
    Dial {
        attempt: u32,
        destination: super::destination::Destination,
        ring_timeout_seconds: u32,
        send_digits: Option<String>,
        /// What a SIP destination asks for, if it does.
        sip_auth: Option<super::destination::SipAuth>,
        /// Caller ID, ringback, recording, whisper and screening.
        settings: super::dialing::DialSettings,
        /// Written into the dial's callback URLs (see [`Trail`]).
        trail: Trail,
    },
    /// To the buyer's leg, once it picks up: the whisper, and (when it must accept) the
    /// press-1 prompt.
    Whisper {
        attempt: u32,
        announcement: Option<super::dialing::Announcement>,
        press_1: bool,
        /// Written into the prompt's callback URL.
        trail: Trail,
    },
    /// To the buyer's leg: nothing more to play, put the caller through.
    Connect,
    /// `<Redirect>` the call into another campaign.
    Redirect {
        campaign: CampaignId,
        /// Written into the redirect's URL: where the call has been, whom it dialed.
        trail: Trail,
    },
    /// Nobody is left: say so and hang up.
    End,
    /// The conversation is over.
    Hangup,
    /// The number belongs to no campaign: refuse the call unanswered.
    Reject,
    /// The caller is on the company's block list: refuse the call unanswered.
    Blocked,
    /// An acknowledgement (status callbacks): nothing to do.
    Acknowledge,
}

impl Answer {
    /// What kind of answer it is, as metrics count them.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dial { .. } => "dial",
            Self::Whisper { .. } => "whisper",
            Self::Connect => "connect",
            Self::Blocked => "blocked",
            Self::Redirect { .. } => "redirect",
            Self::End => "end",
            Self::Hangup => "hangup",
            Self::Reject => "reject",
            Self::Acknowledge => "acknowledge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    fn sid() -> CallSid {
        CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap()
    }

    fn new_call(from: &str) -> (Timestamp, CallRecord) {
        let t0 = Timestamp::UNIX_EPOCH;
        (
            t0,
            CallRecord::new(sid(), Caller::from_provider(from), "+18005550100".into(), t0),
        )
    }

    #[test]
    fn call_ids_are_restricted_to_what_fits_in_a_url() {
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdef").is_ok());
        assert!(CallSid::parse("9f6e3b52-7c1b-4f3e-a7d2-1a2b3c4d5e6f").is_ok());
        for bad in ["", "C", "../../etc/passwd", "CA 12", "CA%2F", &"A".repeat(65)] {
            assert!(CallSid::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn withheld_and_non_phone_callers_are_unknown() {
        assert!(Caller::from_provider("+14155550123").number().is_some());
        for raw in ["anonymous", "", "client:alice", "unknown", "266696687", "sip:a@b"] {
            let caller = Caller::from_provider(raw);
            assert_eq!(caller.number(), None, "{raw:?}");
            assert_eq!(caller.raw(), raw);
        }
    }

    #[test]
    fn dial_statuses_read_as_twilio_writes_them() {
        assert_eq!(DialStatus::parse("no-answer").unwrap(), DialStatus::NoAnswer);
        assert!(DialStatus::parse("completed").unwrap().connected());
        assert!(!DialStatus::parse("busy").unwrap().connected());
        assert!(DialStatus::parse("ringing").is_err());
    }

    #[test]
    fn a_call_moves_from_routing_to_dialing_to_connected_to_ended() {
        let (t0, mut call) = new_call("+14155550123");
        assert_eq!(call.state, CallState::Routing);
        let buyer = BuyerId::generate();
        let campaign = CampaignId::generate();
        assert_eq!(
            call.begin_attempt(buyer, campaign, AttemptKind::Buyer, Some(false), t0)
                .number,
            1
        );
        assert_eq!(call.state, CallState::Dialing);
        assert!(call.leg_answered(1, t0));
        assert!(
            !call.leg_answered(1, t0),
            "a repeated answered callback is no news"
        );
        assert_eq!(call.state, CallState::Connected);
        let settled = call
            .attempt_ended(1, DialStatus::Completed, 120, Some(false), 90, t0)
            .unwrap();
        assert!(settled.converted);
        assert!(
            call.attempt_ended(1, DialStatus::Completed, 120, Some(false), 90, t0)
                .is_none()
        );
        call.hung_up(t0);
        assert_eq!(
            (call.state, call.outcome),
            (CallState::Ended, Some(Outcome::Connected))
        );
        assert_eq!(call.duplicate(), Some(false));
        assert!(call.converted());
    }

    #[test]
    fn short_or_duplicate_connections_do_not_convert() {
        let (t0, mut call) = new_call("+14155550123");
        let (a, b, c) = (BuyerId::generate(), BuyerId::generate(), CampaignId::generate());
        call.begin_attempt(a, c, AttemptKind::Buyer, Some(false), t0);
        assert!(
            !call
                .attempt_ended(1, DialStatus::Completed, 89, Some(false), 90, t0)
                .unwrap()
                .converted
        );
        call.begin_attempt(b, c, AttemptKind::Buyer, Some(false), t0);
        let settled = call
            .attempt_ended(2, DialStatus::Completed, 300, Some(true), 90, t0)
            .unwrap();
        assert!(!settled.converted, "a duplicate is not paid");
    }

    #[test]
    fn a_late_dial_result_corrects_an_abandoned_guess() {
        let (t0, mut call) = new_call("+14155550123");
        call.begin_attempt(
            BuyerId::generate(),
            CampaignId::generate(),
            AttemptKind::Buyer,
            Some(false),
            t0,
        );
        call.hung_up(t0);
        assert_eq!(call.outcome, Some(Outcome::Abandoned), "the end came first");
        call.attempt_ended(1, DialStatus::Completed, 120, Some(false), 90, t0);
        assert_eq!(call.outcome, Some(Outcome::Connected));
        assert!(call.converted());
    }

    #[test]
    fn a_late_answered_callback_does_not_revive_a_settled_attempt() {
        let (t0, mut call) = new_call("+14155550123");
        let campaign = CampaignId::generate();
        call.begin_attempt(BuyerId::generate(), campaign, AttemptKind::Buyer, Some(false), t0);
        call.attempt_ended(1, DialStatus::NoAnswer, 0, Some(false), 90, t0);
        call.begin_attempt(BuyerId::generate(), campaign, AttemptKind::Buyer, Some(false), t0);
        assert!(!call.leg_answered(1, t0));
        assert_eq!(call.connected_attempt(), None);
        assert_eq!(call.state, CallState::Dialing);
    }

    /// A call dialing attempt 1, whose buyer must press 1.
    fn screened_call() -> (Timestamp, CallRecord) {
        let (t0, mut call) = new_call("+14155550123");
        call.begin_attempt(
            BuyerId::generate(),
            CampaignId::generate(),
            AttemptKind::Buyer,
            Some(false),
            t0,
        );
        call.expect_screening(1);
        (t0, call)
    }

    #[test]
    fn a_screened_buyer_connects_the_caller_only_when_it_presses_1() {
        let (t0, mut call) = screened_call();
        let t1 = t0 + jiff::SignedDuration::from_secs(4);
        assert!(
            !call.leg_answered(1, t0),
            "picking up to hear the prompt is not a connection"
        );
        assert_eq!((call.state, call.connected_attempt()), (CallState::Dialing, None));
        assert_eq!(
            call.screened(1, Screening::Accepted, t1),
            Some(Screening::Accepted)
        );
        assert_eq!(call.state, CallState::Connected);
        assert_eq!(
            call.attempts[0].answered_at,
            Some(t1),
            "answered when it accepted"
        );
        assert_eq!(call.screened(1, Screening::NoKey, t1), None, "an answer is final");
        let attempt = &call.attempts[0];
        assert_eq!(
            attempt.result_of(DialStatus::Completed, Some(true)),
            DialStatus::Completed
        );
    }

    #[test]
    fn a_buyer_that_refuses_or_presses_nothing_did_not_answer() {
        for refusal in [Screening::NoKey, Screening::Refused] {
            let (t0, mut call) = screened_call();
            assert_eq!(call.screened(1, refusal, t0), Some(refusal));
            assert_eq!(call.state, CallState::Dialing);
            let attempt = call.attempts[0].clone();
            assert_eq!(
                attempt.result_of(DialStatus::Completed, None),
                DialStatus::NoAnswer
            );
            assert_eq!(
                attempt.result_of(DialStatus::Completed, Some(false)),
                DialStatus::NoAnswer
            );
            assert_eq!(attempt.result_of(DialStatus::Busy, None), DialStatus::Busy);
        }
        // No answer to the prompt ever came, and the provider says it was not bridged.
        let (_, call) = screened_call();
        assert_eq!(
            call.attempts[0].result_of(DialStatus::Completed, None),
            DialStatus::NoAnswer
        );
        // The provider says the caller was bridged: it was, whatever was lost on the way.
        assert_eq!(
            call.attempts[0].result_of(DialStatus::Completed, Some(true)),
            DialStatus::Completed
        );
        let (t0, mut plain) = new_call("+14155550123");
        plain.begin_attempt(
            BuyerId::generate(),
            CampaignId::generate(),
            AttemptKind::Buyer,
            None,
            t0,
        );
        assert_eq!(
            plain.attempts[0].result_of(DialStatus::Completed, None),
            DialStatus::Completed
        );
        assert_eq!(
            plain.attempts[0].result_of(DialStatus::Completed, Some(false)),
            DialStatus::NoAnswer
        );
        assert_eq!(
            plain.screened(1, Screening::Accepted, t0),
            None,
            "no prompt, no answer to it"
        );
    }

    #[test]
    fn a_recording_is_kept_once_and_moves_only_to_its_final_status() {
        let (t0, mut call) = new_call("+14155550123");
        let recording = |status| Recording {
            attempt: 1,
            sid: "RE0123".into(),
            url: "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0123".into(),
            status,
            duration_seconds: Some(95),
            channels: Some(2),
            at: t0,
        };
        assert!(call.add_recording(recording(RecordingStatus::InProgress)));
        assert!(call.add_recording(recording(RecordingStatus::Completed)));
        assert!(
            !call.add_recording(recording(RecordingStatus::Completed)),
            "a retry"
        );
        assert!(
            !call.add_recording(recording(RecordingStatus::InProgress)),
            "late news"
        );
        assert_eq!(call.recordings.len(), 1);
        assert_eq!(call.recordings[0].status, RecordingStatus::Completed);
        assert_eq!(RecordingStatus::parse("absent"), Ok(RecordingStatus::Absent));
        assert!(RecordingStatus::parse("done").is_err());
    }

    #[test]
    fn a_caller_who_hangs_up_before_anyone_answers_abandoned_the_call() {
        let (t0, mut call) = new_call("anonymous");
        call.begin_attempt(
            BuyerId::generate(),
            CampaignId::generate(),
            AttemptKind::Buyer,
            None,
            t0,
        );
        call.attempt_ended(1, DialStatus::NoAnswer, 0, None, 90, t0);
        call.hung_up(t0);
        assert_eq!(call.outcome, Some(Outcome::Abandoned));
        call.end(Outcome::Dropped, Some(DropReason::Unanswered), t0);
        assert_eq!(call.outcome, Some(Outcome::Abandoned), "an end is final");
    }

    #[test]
    fn a_call_status_reads_the_providers_words_and_says_whether_the_call_is_over() {
        let read = |text: &str| CallStatus::parse(text).unwrap();
        assert_eq!(read("in-progress"), CallStatus::InProgress);
        assert_eq!(
            read(" answered "),
            CallStatus::InProgress,
            "a leg's answered event"
        );
        assert_eq!(read("no-answer"), CallStatus::NoAnswer);
        let over = ["completed", "busy", "no-answer", "canceled", "failed"];
        let going = ["queued", "initiated", "ringing", "in-progress"];
        assert!(over.iter().all(|s| read(s).is_final()));
        assert!(going.iter().all(|s| !read(s).is_final()));
        assert!(read("in-progress").answered() && !read("ringing").answered());
        assert!(CallStatus::parse("hung-up").is_err());
        assert!(CallStatus::parse("").is_err());
    }
}
