//! RTB pings: before sending a caller, a publisher asks a campaign whether it would take the
//! call and at what payout. The answer is a bid that holds the chosen buyer for that caller
//! until it expires (a *reservation*), or `no-target` with the reason.
//!
//! What is pure lives here: reading a ping's parameters, the errors a publisher is told, the
//! answer's shape and the book of live reservations. The decision itself is routing's
//! ([`super::routing::RoutingPlan::bid`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    call::{CallSid, DropReason},
    money::Money,
    phone::{E164, PhoneError},
    plan::{BuyerId, CampaignId, PublisherId},
};

/// A ping as the publisher sent it, from the query string and the body alike.
#[derive(Default, Clone)]
pub struct PingRequest {
    pub key: Option<String>,
    /// `publisher_id`, or Retreaver's older `source_id`: a publisher's external id or its id.
    pub publisher: Option<String>,
    pub caller_number: Option<String>,
    /// The caller's US state (`state`, a USPS code) or ZIP code (`zip`), when the publisher
    /// knows it better than the number's area code tells it.
    pub state: Option<String>,
    pub zip: Option<String>,
    /// Every other parameter, kept with the ping as a tag.
    pub tags: BTreeMap<String, String>,
}

/// Names of parameters whose values are secrets, compared without regard to case once
/// percent-decoded: `Key`, `KEY` and `%6Bey` are the RTB key as much as `key` is. Their values
/// are never logged, in the server's log or in the ping log.
const SECRET_NAMES: [&str; 8] = [
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "auth_token",
    "secret",
    "password",
];

/// Whether a (decoded) parameter name carries a secret.
pub fn names_a_secret(name: &str) -> bool {
    let name = name.trim();
    SECRET_NAMES
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

impl PingRequest {
    /// Reads parameters in the order given: a later value of a named parameter replaces an
    /// earlier one (so a body overrides the query string). An empty value is no value. The key
    /// is read whatever its case; any other secret-named parameter is dropped, not kept as a tag.
    pub fn from_params(params: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut request = Self::default();
        for (name, value) in params {
            if name.trim().eq_ignore_ascii_case("key") {
                if !value.trim().is_empty() {
                    request.key = Some(value);
                }
                continue;
            }
            if names_a_secret(&name) {
                continue;
            }
            let named = match name.as_str() {
                "publisher_id" | "source_id" => &mut request.publisher,
                "caller_number" => &mut request.caller_number,
                "state" => &mut request.state,
                "zip" => &mut request.zip,
                _ => {
                    request.tags.insert(name, value);
                    continue;
                }
            };
            if !value.trim().is_empty() {
                *named = Some(value);
            }
        }
        request
    }

    /// What the ping asked, for its log: every parameter but the key.
    pub fn logged(&self) -> BTreeMap<String, String> {
        let mut logged = self.tags.clone();
        let named = [
            ("publisher_id", &self.publisher),
            ("caller_number", &self.caller_number),
            ("state", &self.state),
            ("zip", &self.zip),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                logged.insert(name.to_owned(), value.clone());
            }
        }
        logged
    }
}

impl std::fmt::Debug for PingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingRequest")
            .field("publisher", &self.publisher)
            .field("caller_number", &self.caller_number)
            .field("state", &self.state)
            .field("zip", &self.zip)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// Reads a caller number sent by a publisher. A `+` written unencoded in a query string or form
/// arrives as a space (`?caller_number=+19175470066`, as peer products document it), so a
/// leading space before digits is read as the `+` it was.
pub fn caller_number(text: &str) -> Result<E164, PingError> {
    let restored;
    let text = match text.strip_prefix(' ') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            restored = format!("+{rest}");
            restored.as_str()
        }
        _ => text,
    };
    E164::normalise(text).map_err(PingError::InvalidCallerNumber)
}

/// Why a ping was refused. Each has a stable `code` publishers can branch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("send the campaign's RTB key as `key`")]
    MissingKey,
    #[error("no campaign has this RTB key")]
    UnknownKey,
    #[error("send the caller's number as `caller_number`: this campaign bids only for known callers")]
    MissingCallerNumber,
    #[error("`caller_number` is not a phone number in international form: {0}")]
    InvalidCallerNumber(PhoneError),
    #[error("send the publisher as `publisher_id`")]
    MissingPublisher,
    #[error("no publisher {0:?} in this campaign's company")]
    UnknownPublisher(String),
    #[error("`state` is not a US state: {0}")]
    InvalidState(String),
    #[error("`zip` is not a US ZIP code: {0}")]
    InvalidZip(String),
    #[error("{0}")]
    Malformed(String),
}

impl PingError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::UnknownKey => "unknown_key",
            Self::MissingCallerNumber => "missing_caller_number",
            Self::InvalidCallerNumber(_) => "invalid_caller_number",
            Self::MissingPublisher => "missing_publisher",
            Self::UnknownPublisher(_) => "unknown_publisher",
            Self::InvalidState(_) => "invalid_state",
            Self::InvalidZip(_) => "invalid_zip",
            Self::Malformed(_) => "malformed_request",
        }
    }

    /// The body a refused ping is answered with (and logged with).
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code(), "message": self.to_string()});
        if let Some(field) = self.field() {
            error["field"] = field.into();
        }
        serde_json::json!({ "error": error })
    }

    /// The parameter at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::MissingKey | Self::UnknownKey => Some("key"),
            Self::MissingCallerNumber | Self::InvalidCallerNumber(_) => Some("caller_number"),
            Self::MissingPublisher | Self::UnknownPublisher(_) => Some("publisher_id"),
            Self::InvalidState(_) => Some("state"),
            Self::InvalidZip(_) => Some("zip"),
            Self::Malformed(_) => None,
        }
    }
}

/// A buyer held for a caller by a bid, until the call comes or the bid expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub uuid: Uuid,
    pub campaign_id: CampaignId,
    /// `None` for a ping without a caller number: such a bid holds nothing, as no call can be
    /// matched to it.
    pub caller: Option<E164>,
    pub buyer_id: BuyerId,
    /// The publisher whose ping made the bid: the call claiming it is that publisher's.
    #[serde(default)]
    pub publisher_id: Option<PublisherId>,
    pub payout: Money,
    /// Connected seconds the call needs to convert.
    pub seconds: u32,
    /// The number the publisher must send the caller to.
    pub inbound_number: E164,
    pub reserved_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Reservation {
    pub fn is_live(&self, at: Timestamp) -> bool {
        at < self.expires_at
    }

    /// The answer to a ping: this reservation, fresh or repeated.
    pub fn bid(&self, cached: bool) -> PingAnswer {
        PingAnswer::Reserved {
            uuid: self.uuid,
            payout: self.payout,
            seconds: self.seconds,
            inbound_number: self.inbound_number.clone(),
            expires_at: self.expires_at,
            cached,
        }
    }

    pub fn expiry(reserved_at: Timestamp, seconds: u32) -> Timestamp {
        reserved_at
            .checked_add(SignedDuration::from_secs(i64::from(seconds)))
            .unwrap_or(Timestamp::MAX)
    }
}

/// What a publisher is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status")]
pub enum PingAnswer {
    #[serde(rename = "reserved")]
    Reserved {
        uuid: Uuid,
        payout: Money,
        seconds: u32,
        inbound_number: E164,
        expires_at: Timestamp,
        /// A repeat ping before expiry gets the reservation already made.
        cached: bool,
    },
    #[serde(rename = "no-target")]
    NoTarget { uuid: Uuid, reason: NoTarget },
}

/// Why no buyer bid: the reason that kept the most buyers out, as a dropped call gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoTarget {
    Duplicate,
    Capacity,
    Closed,
    /// No buyer takes callers from the caller's state or area code.
    Geo,
    /// The caller is on the company's block list.
    Blocked,
    /// No buyer listed, or all paused.
    NoBuyer,
    /// The campaign has no tracking number to send the caller to.
    NoTrackingNumber,
    /// Whom the caller would be a duplicate for, or which buyers are at a cap, was not known
    /// within the decision budget.
    Overloaded,
    /// Every buyer that would take the caller is held for it by another publisher's bid.
    Held,
}

impl From<DropReason> for NoTarget {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::Duplicate => Self::Duplicate,
            DropReason::Capacity => Self::Capacity,
            DropReason::Closed => Self::Closed,
            DropReason::Geo => Self::Geo,
            // A bid has dialed nobody and arrived on no number: neither can be its reason.
            DropReason::NoBuyer | DropReason::Unanswered | DropReason::UnknownNumber => Self::NoBuyer,
            DropReason::Overloaded => Self::Overloaded,
        }
    }
}

/// Which reservations a call may claim. A call to one publisher's number never takes another's
/// bid, nor a call to nobody's number a bid that sent the caller to a publisher's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimant {
    /// A call to a number given to this publisher: its bids.
    Publisher(PublisherId),
    /// A call to a number given to no publisher: bids that sent the caller to one of these, the
    /// campaign's numbers given to no publisher (those of publishers without numbers there).
    Nobody { numbers: Vec<E164> },
}

impl Claimant {
    pub fn may_claim(&self, reservation: &Reservation) -> bool {
        match self {
            Self::Publisher(publisher) => reservation.publisher_id == Some(*publisher),
            Self::Nobody { numbers } => numbers.contains(&reservation.inbound_number),
        }
    }
}

/// A bid's buyer is held for the caller by another publisher's live reservation: a buyer is
/// promised to one publisher per caller, so this bid is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldElsewhere(pub BuyerId);

/// A reservation in the book, with the call that claimed it, if one did: a claimed reservation
/// still answers its publisher's repeat pings until it expires, but no other call can claim it.
#[derive(Debug)]
struct Entry {
    reservation: Reservation,
    claimed: Option<CallSid>,
}

/// The live reservations, by campaign and caller: at most one each per publisher, as each
/// publisher's ping is its own bid.
#[derive(Debug, Default)]
pub struct ReservationBook {
    live: HashMap<(CampaignId, E164), Vec<Entry>>,
}

impl ReservationBook {
    fn entries(&self, campaign: CampaignId, caller: &E164) -> impl Iterator<Item = &Entry> {
        self.live.get(&(campaign, caller.clone())).into_iter().flatten()
    }

    /// The caller's live reservation in the campaign made by `publisher`'s pings, claimed or
    /// not (the ping shield). Another publisher's is never it.
    pub fn find(
        &self,
        campaign: CampaignId,
        caller: &E164,
        publisher: Option<PublisherId>,
        at: Timestamp,
    ) -> Option<&Reservation> {
        self.entries(campaign, caller)
            .map(|e| &e.reservation)
            .find(|r| r.publisher_id == publisher && r.is_live(at))
    }

    /// The buyers other publishers' live reservations hold for the caller in the campaign.
    pub fn held_for_others(
        &self,
        campaign: CampaignId,
        caller: &E164,
        publisher: Option<PublisherId>,
        at: Timestamp,
    ) -> HashSet<BuyerId> {
        self.entries(campaign, caller)
            .map(|e| &e.reservation)
            .filter(|r| r.publisher_id != publisher && r.is_live(at))
            .map(|r| r.buyer_id)
            .collect()
    }

    /// A reservation read back from the store (start-up) or heard of from another node, with the
    /// call that claimed it, if one did. It replaces the one it is (a claim heard of), else the
    /// one its publisher held for the caller before.
    pub fn load(&mut self, reservation: Reservation, claimed: Option<CallSid>) {
        let Some(caller) = reservation.caller.clone() else {
            return;
        };
        let entries = self.live.entry((reservation.campaign_id, caller)).or_default();
        let same = (entries.iter()).position(|e| e.reservation.uuid == reservation.uuid);
        let same = same.or_else(|| {
            (entries.iter()).position(|e| e.reservation.publisher_id == reservation.publisher_id)
        });
        let entry = Entry { reservation, claimed };
        match same {
            Some(index) => entries[index] = entry,
            None => entries.push(entry),
        }
    }

    /// Keeps `reservation` unless its publisher already has a live one for the caller in the
    /// campaign, which is returned instead (two pings racing get one reservation); `true` when
    /// it was already there. Refused when another publisher's live reservation holds the same
    /// buyer for the caller.
    pub fn reserve(
        &mut self,
        reservation: Reservation,
        at: Timestamp,
    ) -> Result<(Reservation, bool), HeldElsewhere> {
        let Some(caller) = reservation.caller.clone() else {
            return Ok((reservation, false));
        };
        let key = (reservation.campaign_id, caller);
        if let Some(existing) = self.find(key.0, &key.1, reservation.publisher_id, at) {
            return Ok((existing.clone(), true));
        }
        let buyer = reservation.buyer_id;
        let entries = self.live.entry(key).or_default();
        if entries
            .iter()
            .any(|e| e.reservation.buyer_id == buyer && e.reservation.is_live(at))
        {
            return Err(HeldElsewhere(buyer));
        }
        // Its publisher's expired one, if any, makes room.
        entries.retain(|e| e.reservation.publisher_id != reservation.publisher_id);
        entries.push(Entry {
            reservation: reservation.clone(),
            claimed: None,
        });
        Ok((reservation, false))
    }

    /// The caller's call `call` reached the campaign: the live reservation `claimant` may claim
    /// that no other call claimed (of several, the one made first), and whether this is the
    /// first claim. The same call asking again (its first answer lost, or its step taken again)
    /// gets the same reservation, expired since or not.
    pub fn claim(
        &mut self,
        campaign: CampaignId,
        caller: &E164,
        claimant: &Claimant,
        call: &CallSid,
        at: Timestamp,
    ) -> Option<(Reservation, bool)> {
        let entries = self.live.get_mut(&(campaign, caller.clone()))?;
        if let Some(mine) = entries.iter().find(|e| e.claimed.as_ref() == Some(call)) {
            return Some((mine.reservation.clone(), false));
        }
        let entry = (entries.iter_mut())
            .filter(|e| e.claimed.is_none() && e.reservation.is_live(at))
            .filter(|e| claimant.may_claim(&e.reservation))
            .min_by_key(|e| e.reservation.reserved_at)?;
        entry.claimed = Some(call.clone());
        Some((entry.reservation.clone(), true))
    }

    /// Returns the memory of expired reservations.
    pub fn forget_expired(&mut self, at: Timestamp) {
        self.live.retain(|_, entries| {
            entries.retain(|e| e.reservation.is_live(at));
            !entries.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.live.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// What became of a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// A bid: a new reservation, or (`cached`) the caller's live one.
    Reserved,
    NoTarget,
    /// Refused with an error (the code is the ping's reason).
    Rejected,
}

impl PingOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::NoTarget => "no-target",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Reserved, Self::NoTarget, Self::Rejected]
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

/// A ping as logged, written once when it is answered.
#[derive(Debug, Clone, PartialEq)]
pub struct PingRecord {
    /// UUIDv7: pings sort by arrival.
    pub id: Uuid,
    pub received_at: Timestamp,
    pub campaign_id: CampaignId,
    pub publisher_id: Option<PublisherId>,
    pub caller_number: Option<E164>,
    /// Every parameter but the key.
    pub request: BTreeMap<String, String>,
    pub outcome: PingOutcome,
    pub cached: bool,
    /// The no-target reason or the error code.
    pub reason: Option<String>,
    /// The reservation answered with, new or cached.
    pub reservation: Option<Uuid>,
    /// The body returned, as returned.
    pub answer: serde_json::Value,
}

/// What the RTB log records besides pings: reservations made and claimed.
#[derive(Debug, Clone, PartialEq)]
pub enum RtbWrite {
    Ping(Box<PingRecord>),
    Reserved(Box<Reservation>),
    Claimed {
        /// The reservation claimed (what other nodes' books learn).
        reservation: Box<Reservation>,
        call_sid: CallSid,
        at: Timestamp,
    },
}

/// Where a ping's reservation stands, as the log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum PingStatus {
    /// Bid, and still held.
    Reserved,
    /// Bid, and the caller's call reached the campaign in time.
    Claimed,
    /// Bid, and no call came in time.
    Expired,
    NoTarget,
    Rejected,
}

impl Serialize for PingStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PingStatus {
    pub const ALL: [Self; 5] = [
        Self::Reserved,
        Self::Claimed,
        Self::Expired,
        Self::NoTarget,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Claimed => "claimed",
            Self::Expired => "expired",
            Self::NoTarget => "no-target",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// A ping's status at `at`: its outcome, and for a bid what became of the reservation.
    pub fn of(outcome: PingOutcome, held: Option<&Held>, at: Timestamp) -> Self {
        match (outcome, held) {
            (PingOutcome::NoTarget, _) => Self::NoTarget,
            (PingOutcome::Rejected, _) => Self::Rejected,
            (PingOutcome::Reserved, Some(held)) if held.claimed_at.is_some() => Self::Claimed,
            (PingOutcome::Reserved, Some(held)) if held.expires_at > at => Self::Reserved,
            (PingOutcome::Reserved, _) => Self::Expired,
        }
    }
}

/// A logged ping, with its reservation as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedPing {
    pub ping: PingRecord,
    pub held: Option<Held>,
}

/// A reservation as the log shows it with its pings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Held {
    pub uuid: Uuid,
    pub buyer_id: BuyerId,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub claimed_at: Option<Timestamp>,
    /// The call that claimed it.
    #[schema(required = true)]
    pub call_sid: Option<CallSid>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    fn number(text: &str) -> E164 {
        E164::from_provider(text).unwrap()
    }

    fn reservation(caller: Option<&str>, reserved_at: Timestamp) -> Reservation {
        Reservation {
            uuid: Uuid::now_v7(),
            campaign_id: CampaignId::generate(),
            caller: caller.map(number),
            buyer_id: BuyerId::generate(),
            publisher_id: None,
            payout: Money::from_cents(1250).unwrap(),
            seconds: 90,
            inbound_number: number("+18005550100"),
            reserved_at,
            expires_at: Reservation::expiry(reserved_at, 60),
        }
    }

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + seconds).unwrap()
    }

    #[test]
    fn named_parameters_are_read_and_the_rest_kept_as_tags() {
        let request = PingRequest::from_params(
            [
                ("key", "k1"),
                ("source_id", "pub-7"),
                ("caller_number", "+19175470066"),
                ("zip", "10001"),
                ("sub_id", "s-9"),
                ("key", "k2"),
                ("publisher_id", " "),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(request.key.as_deref(), Some("k2"), "the later value wins");
        assert_eq!(
            request.publisher.as_deref(),
            Some("pub-7"),
            "a blank value is no value"
        );
        assert_eq!(request.caller_number.as_deref(), Some("+19175470066"));
        assert_eq!(request.zip.as_deref(), Some("10001"), "zip is read, not a tag");
        assert_eq!(request.tags, BTreeMap::from([("sub_id".into(), "s-9".into())]));
        assert!(!request.logged().contains_key("key"));
        assert_eq!(request.logged()["zip"], "10001", "and logged with the ping");
        assert!(!format!("{request:?}").contains("k2"), "the key is never printed");
    }

    #[test]
    fn the_key_is_read_in_any_case_and_no_secret_is_kept_as_a_tag() {
        let request = PingRequest::from_params(
            [
                ("KEY", "k1"),
                (" Key", "k2"),
                ("Api_Key", "k3"),
                ("TOKEN", "k4"),
                ("monkey", "m"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(request.key.as_deref(), Some("k2"));
        assert_eq!(request.tags, BTreeMap::from([("monkey".into(), "m".into())]));
        let logged = format!("{:?}", request.logged());
        for secret in ["k1", "k2", "k3", "k4"] {
            assert!(!logged.contains(secret), "{secret} in the ping log: {logged}");
        }
    }

    #[test]
    fn a_plus_decoded_to_a_space_is_restored() {
        assert_eq!(caller_number(" 19175470066").unwrap().as_str(), "+19175470066");
        assert_eq!(
            caller_number("+1 (917) 547-0066").unwrap().as_str(),
            "+19175470066"
        );
        assert!(matches!(
            caller_number("9175470066"),
            Err(PingError::InvalidCallerNumber(PhoneError::NoCountryCode(_)))
        ));
        assert!(caller_number("not a number").is_err());
        assert!(caller_number("+1 555").is_err());
    }

    #[test]
    fn a_caller_has_one_reservation_per_campaign_until_it_expires() {
        let mut book = ReservationBook::default();
        let first = reservation(Some("+19175470066"), t(0));
        let (kept, cached) = book.reserve(first.clone(), t(0)).unwrap();
        assert_eq!((kept.uuid, cached), (first.uuid, false));

        // A second bid racing the first gets the first.
        let mut second = reservation(Some("+19175470066"), t(10));
        second.campaign_id = first.campaign_id;
        let (kept, cached) = book.reserve(second.clone(), t(10)).unwrap();
        assert_eq!((kept.uuid, cached), (first.uuid, true));
        let caller = number("+19175470066");
        assert_eq!(
            book.find(first.campaign_id, &caller, None, t(59)).map(|r| r.uuid),
            Some(first.uuid)
        );

        // At expiry it is gone, and a new one may be made.
        assert_eq!(book.find(first.campaign_id, &caller, None, t(60)), None);
        let (kept, cached) = book.reserve(second.clone(), t(60)).unwrap();
        assert_eq!((kept.uuid, cached), (second.uuid, false));
    }

    #[test]
    fn a_claim_takes_a_live_reservation_once_and_the_shield_holds_until_expiry() {
        let mut book = ReservationBook::default();
        let held = reservation(Some("+19175470066"), t(0));
        book.reserve(held.clone(), t(0)).unwrap();
        let caller = number("+19175470066");
        let (call, other) = (CallSid::parse("CA1").unwrap(), CallSid::parse("CA2").unwrap());
        assert_eq!(
            book.claim(CampaignId::generate(), &caller, &on_main(), &call, t(1)),
            None,
            "another campaign"
        );
        assert_eq!(
            book.claim(held.campaign_id, &caller, &on_main(), &call, t(1)),
            Some((held.clone(), true))
        );
        assert_eq!(
            book.claim(held.campaign_id, &caller, &on_main(), &other, t(2)),
            None,
            "claimed already"
        );
        // The same call asking again (its answer lost) gets the same answer, even once expired.
        assert_eq!(
            book.claim(held.campaign_id, &caller, &on_main(), &call, t(2)),
            Some((held.clone(), false))
        );
        assert_eq!(
            book.claim(held.campaign_id, &caller, &on_main(), &call, t(61)),
            Some((held.clone(), false))
        );
        // Until it expires, a repeat ping still gets it.
        assert_eq!(book.find(held.campaign_id, &caller, None, t(59)), Some(&held));
        let mut repeat = reservation(Some("+19175470066"), t(3));
        repeat.campaign_id = held.campaign_id;
        assert_eq!(book.reserve(repeat, t(3)), Ok((held.clone(), true)));

        let late = reservation(Some("+19175470066"), t(0));
        book.reserve(late.clone(), t(0)).unwrap();
        assert_eq!(
            book.claim(late.campaign_id, &caller, &on_main(), &call, t(60)),
            None,
            "expired"
        );
        book.forget_expired(t(60));
        assert!(book.is_empty());
    }

    #[test]
    fn a_bid_without_a_caller_holds_nothing() {
        let mut book = ReservationBook::default();
        let (kept, cached) = book.reserve(reservation(None, t(0)), t(0)).unwrap();
        assert!(!cached);
        assert_eq!(kept.caller, None);
        assert!(book.is_empty());
    }

    /// A call to a number given to no publisher, the one the tests' bids send callers to.
    fn on_main() -> Claimant {
        Claimant::Nobody {
            numbers: vec![number("+18005550100")],
        }
    }

    /// `publisher`'s bid for the caller in `campaign`, holding `buyer`, sending the caller to
    /// `inbound`.
    fn bid_of(
        campaign: CampaignId,
        publisher: PublisherId,
        buyer: BuyerId,
        inbound: &str,
        reserved_at: Timestamp,
    ) -> Reservation {
        Reservation {
            campaign_id: campaign,
            publisher_id: Some(publisher),
            buyer_id: buyer,
            inbound_number: number(inbound),
            ..reservation(Some("+19175470066"), reserved_at)
        }
    }

    #[test]
    fn each_publisher_has_its_own_reservation_and_none_holds_anothers_buyer() {
        let mut book = ReservationBook::default();
        let (campaign, a, b) = (
            CampaignId::generate(),
            PublisherId::generate(),
            PublisherId::generate(),
        );
        let (x, y) = (BuyerId::generate(), BuyerId::generate());
        let caller = number("+19175470066");
        let a_bid = bid_of(campaign, a, x, "+18005550101", t(0));
        assert_eq!(book.reserve(a_bid.clone(), t(0)), Ok((a_bid.clone(), false)));

        // B's ping is not answered with A's reservation, and B may not hold A's buyer.
        assert_eq!(book.find(campaign, &caller, Some(b), t(1)), None);
        assert_eq!(
            book.held_for_others(campaign, &caller, Some(b), t(1)),
            HashSet::from([x])
        );
        assert!(book.held_for_others(campaign, &caller, Some(a), t(1)).is_empty());
        let b_on_x = bid_of(campaign, b, x, "+18005550102", t(1));
        assert_eq!(book.reserve(b_on_x, t(1)), Err(HeldElsewhere(x)));
        let b_bid = bid_of(campaign, b, y, "+18005550102", t(1));
        assert_eq!(book.reserve(b_bid.clone(), t(1)), Ok((b_bid.clone(), false)));
        assert_eq!(book.len(), 2);

        // Each repeat ping gets its own.
        let again = bid_of(campaign, b, y, "+18005550102", t(2));
        assert_eq!(book.reserve(again, t(2)), Ok((b_bid.clone(), true)));
        assert_eq!(book.find(campaign, &caller, Some(a), t(2)), Some(&a_bid));

        // Once A's expired, its buyer is free for B's next bid... but B's own still holds.
        assert!(book.held_for_others(campaign, &caller, Some(b), t(60)).is_empty());
        let b_later = bid_of(campaign, b, x, "+18005550102", t(61));
        assert_eq!(book.reserve(b_later.clone(), t(61)), Ok((b_later, false)));
        book.forget_expired(t(61));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_call_claims_only_the_reservation_of_the_publisher_whose_number_it_dialed() {
        let mut book = ReservationBook::default();
        let (campaign, a, b, c) = (
            CampaignId::generate(),
            PublisherId::generate(),
            PublisherId::generate(),
            PublisherId::generate(),
        );
        let caller = number("+19175470066");
        let a_bid = bid_of(campaign, a, BuyerId::generate(), "+18005550101", t(0));
        let b_bid = bid_of(campaign, b, BuyerId::generate(), "+18005550102", t(1));
        let c_bid = bid_of(campaign, c, BuyerId::generate(), "+18005550100", t(2));
        for bid in [&a_bid, &b_bid, &c_bid] {
            book.reserve(bid.clone(), bid.reserved_at).unwrap();
        }
        let (first, second, third) = (
            CallSid::parse("CA1").unwrap(),
            CallSid::parse("CA2").unwrap(),
            CallSid::parse("CA3").unwrap(),
        );
        // On A's number: A's, though B's bid is the later and C's sent the caller to nobody's.
        let on_a = Claimant::Publisher(a);
        assert_eq!(
            book.claim(campaign, &caller, &on_a, &first, t(3)),
            Some((a_bid.clone(), true))
        );
        // A second call on A's number finds A's claimed, and takes nobody else's.
        assert_eq!(book.claim(campaign, &caller, &on_a, &second, t(4)), None);
        // A number given to nobody: a bid that sent the caller to one of those, never to B's.
        let elsewhere = Claimant::Nobody {
            numbers: vec![number("+18005550199")],
        };
        assert_eq!(book.claim(campaign, &caller, &elsewhere, &second, t(4)), None);
        let unowned = Claimant::Nobody {
            numbers: vec![number("+18005550199"), number("+18005550100")],
        };
        assert_eq!(
            book.claim(campaign, &caller, &unowned, &second, t(4)),
            Some((c_bid.clone(), true))
        );
        assert_eq!(book.claim(campaign, &caller, &unowned, &third, t(4)), None);
        // B's is untouched: its repeat ping still gets it, its call still claims it.
        assert_eq!(book.find(campaign, &caller, Some(b), t(5)), Some(&b_bid));
        let on_b = Claimant::Publisher(b);
        assert_eq!(
            book.claim(campaign, &caller, &on_b, &third, t(5)),
            Some((b_bid.clone(), true))
        );
        // The first call asking again, on whichever number, gets its own.
        assert_eq!(
            book.claim(campaign, &caller, &on_b, &first, t(6)),
            Some((a_bid, false))
        );
    }

    #[test]
    fn a_reservation_heard_of_replaces_its_publishers_and_keeps_the_others() {
        let mut book = ReservationBook::default();
        let (campaign, a, b) = (
            CampaignId::generate(),
            PublisherId::generate(),
            PublisherId::generate(),
        );
        let caller = number("+19175470066");
        let a_bid = bid_of(campaign, a, BuyerId::generate(), "+18005550101", t(0));
        let b_bid = bid_of(campaign, b, BuyerId::generate(), "+18005550102", t(0));
        book.load(a_bid.clone(), None);
        book.load(b_bid.clone(), None);
        // A's claimed on another node: the claim is learned; B's stays claimable.
        let call = CallSid::parse("CA1").unwrap();
        book.load(a_bid.clone(), Some(call.clone()));
        assert_eq!(book.len(), 2);
        let on_a = Claimant::Publisher(a);
        let other = CallSid::parse("CA2").unwrap();
        assert_eq!(
            book.claim(campaign, &caller, &on_a, &other, t(1)),
            None,
            "claimed elsewhere"
        );
        assert_eq!(book.find(campaign, &caller, Some(b), t(1)), Some(&b_bid));
        // A's next bid, made elsewhere after the first expired, replaces it.
        let a_next = bid_of(campaign, a, BuyerId::generate(), "+18005550101", t(70));
        book.load(a_next.clone(), None);
        assert_eq!(book.len(), 2);
        assert_eq!(book.find(campaign, &caller, Some(a), t(71)), Some(&a_next));
    }

    #[test]
    fn answers_have_the_documented_shape() {
        let held = reservation(Some("+19175470066"), t(0));
        let json = serde_json::to_value(held.bid(true)).unwrap();
        assert_eq!(json["status"], "reserved");
        assert_eq!(json["payout"], 12.5);
        assert_eq!(json["seconds"], 90);
        assert_eq!(json["inbound_number"], "+18005550100");
        assert_eq!(json["expires_at"], "2026-09-21T14:14:20Z");
        assert_eq!(json["cached"], true);
        assert_eq!(json["uuid"], held.uuid.to_string());

        let none = PingAnswer::NoTarget {
            uuid: Uuid::nil(),
            reason: DropReason::Duplicate.into(),
        };
        let json = serde_json::to_value(none).unwrap();
        assert_eq!(json["status"], "no-target");
        assert_eq!(json["reason"], "duplicate");
    }

    #[test]
    fn a_pings_status_follows_its_reservation() {
        let held = Held {
            uuid: Uuid::nil(),
            buyer_id: BuyerId::generate(),
            expires_at: t(60),
            claimed_at: None,
            call_sid: None,
        };
        let status = |held: &Held, at| PingStatus::of(PingOutcome::Reserved, Some(held), at);
        assert_eq!(status(&held, t(59)), PingStatus::Reserved);
        assert_eq!(status(&held, t(60)), PingStatus::Expired);
        let claimed = Held {
            claimed_at: Some(t(30)),
            ..held
        };
        assert_eq!(status(&claimed, t(600)), PingStatus::Claimed);
        assert_eq!(
            PingStatus::of(PingOutcome::NoTarget, None, t(0)),
            PingStatus::NoTarget
        );
        for status in PingStatus::ALL {
            assert_eq!(PingStatus::parse(status.as_str()), Some(status));
        }
    }
}
