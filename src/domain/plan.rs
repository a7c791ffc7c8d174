//! The routing plan an operator defines: companies, their buyers, campaigns and publishers.
//!
//! Each entity is its editable fields only; [`Record`] adds what the store assigns. The types
//! deserialize straight from API bodies and plan files, rejecting anything invalid with the
//! offending field named, so an entity that exists is a valid one.

use std::{collections::HashSet, hash::Hash};

use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use super::{
    conversion::ConversionRule,
    destination::{Destination, SipAuth},
    dialing::{CallerId, RecordingMode, Screen, Whisper},
    geo::{AreaCodeRule, StateList},
    ids::Id,
    money::Money,
    payout::PublisherPayout,
    phone::E164,
    postback::{EndpointId, Postbacks},
    schedule::{BusinessHours, TimeZoneName},
    values::{
        CapLimit, ConversionSeconds, DedupeSeconds, Name, Priority, ReportWindowSeconds, ReservationSeconds,
        ReturnWindowSeconds, RingTimeoutSeconds, SendDigits, Weight,
    },
};

pub type CompanyId = Id<Company>;
pub type BuyerId = Id<Buyer>;
pub type CampaignId = Id<Campaign>;
pub type PublisherId = Id<Publisher>;

/// What every kind of plan entity shares, so the store and the API treat them alike.
pub trait PlanEntity:
    Serialize + DeserializeOwned + ToSchema + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// Singular, for messages: "buyer".
    const KIND: &'static str;
    /// Whether records of this kind belong to a company (all but companies do).
    const OWNED_BY_COMPANY: bool;

    fn name(&self) -> &Name;

    /// Settings that cannot go together, each valid alone: the field to change and why.
    fn contradiction(&self) -> Option<(&'static str, String)> {
        None
    }

    /// Hides what only an admin may read (postback secrets, SIP passwords).
    fn redact_secrets(&mut self) {}

    /// Gives the parts with ids of their own (postback endpoints) theirs, before the record is
    /// written: kept from `before`, the record as stored, else drawn from `fresh`.
    fn keep_part_ids(&mut self, _before: Option<&Self>, _fresh: &mut dyn FnMut() -> EndpointId) {}

    /// Its postback endpoints (buyers' and publishers'), whose URLs are checked when saved.
    fn postbacks(&self) -> Option<&Postbacks> {
        None
    }
}

/// A stored entity: its fields plus what the store assigned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record<T: PlanEntity> {
    pub id: Id<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_id: Option<CompanyId>,
    #[serde(flatten)]
    pub spec: T,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<T: PlanEntity> Record<T> {
    /// Whose the record is: its company's, or (a company) its own.
    pub fn owner(&self) -> super::access::Owner {
        let own = (!T::OWNED_BY_COMPANY).then(|| Id::from_uuid(self.id.as_uuid()));
        super::access::Owner::company(self.company_id.or(own))
    }
}

/// A company: the owner of buyers, campaigns and publishers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Company {
    pub name: Name,
    /// Lets the company's campaigns route only to buyers the caller would not be a duplicate
    /// for. Off unless turned on: with it, a campaign can run out of buyers for a caller.
    #[serde(default)]
    pub duplicate_caller_handling: bool,
}

impl PlanEntity for Company {
    const KIND: &'static str = "company";
    const OWNED_BY_COMPANY: bool = false;

    fn name(&self) -> &Name {
        &self.name
    }
}

/// A buyer (target, handler): who pays for converted calls, and their rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Buyer {
    pub name: Name,
    pub destination: Destination,
    /// How long the buyer's phone rings before routing goes on.
    #[serde(default)]
    #[schema(inline)]
    pub ring_timeout_seconds: RingTimeoutSeconds,
    /// How long a connected call must last to convert (and be paid for).
    #[serde(default)]
    #[schema(inline)]
    pub conversion_seconds: ConversionSeconds,
    /// `seconds`: a call converts when connected `conversion_seconds`; `reported`: when the
    /// buyer reports it (`POST /calls/{sid}/conversion`); `seconds_and_reported`: both.
    #[serde(default)]
    pub conversion_rule: ConversionRule,
    /// How long after a call ended the buyer may report it converted.
    #[serde(default)]
    #[schema(inline)]
    pub conversion_report_window_seconds: ReportWindowSeconds,
    /// How long after a reported conversion the buyer may return it.
    #[serde(default)]
    #[schema(inline)]
    pub return_window_seconds: ReturnWindowSeconds,
    /// How long after a caller's conversion (or connection, see `duplicate_after`) a new call
    /// from the caller is a duplicate for the buyer.
    #[serde(default)]
    #[schema(inline)]
    pub dedupe_seconds: DedupeSeconds,
    #[serde(default)]
    pub duplicate_after: DuplicateAfter,
    /// Buyers sharing a group share de-dupe history: a conversion with one is one with all.
    #[serde(default)]
    pub dedupe_group: Option<Name>,
    /// Paid to the publisher per conversion.
    #[serde(default)]
    pub payout: Money,
    /// Paid by the buyer per conversion.
    #[serde(default)]
    pub revenue: Money,
    #[serde(default)]
    pub caps: Caps,
    /// Where the buyer's days begin: business hours are in its wall-clock time, and hourly,
    /// daily and monthly caps restart on its hours, days and months.
    #[serde(default)]
    pub time_zone: TimeZoneName,
    /// Absent: always open.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
    /// DTMF sent when a phone number answers; refused on a SIP destination and with
    /// `machine-detection`.
    #[serde(default)]
    pub send_digits: Option<SendDigits>,
    /// Credentials a SIP destination asks for (`<Sip username password>`); SIP destinations
    /// only.
    #[serde(default)]
    pub sip_auth: Option<SipAuth>,
    #[serde(default)]
    pub paused: bool,
    /// The number the buyer sees calling: the caller's (default), the tracking number, or one of
    /// the operator's.
    #[serde(default)]
    pub caller_id: CallerId,
    /// Played to the buyer when it answers, before the caller is put through; without one, the
    /// campaign's.
    #[serde(default)]
    pub whisper: Option<Whisper>,
    /// `press-1`: the buyer must press 1 to take each call; `machine-detection`: the
    /// provider's answering machine detection runs first, and a machine or fax is hung up on.
    /// Either way a leg turned away counts as unanswered and routing goes on.
    #[serde(default)]
    pub screen: Screen,
    /// Whether its calls are recorded (dual channel); absent: as the campaign says.
    #[serde(default)]
    pub record: Option<RecordingMode>,
    /// The US states the buyer takes callers from (licensed in); absent: anywhere.
    #[serde(default)]
    pub states: Option<StateList>,
    /// Area codes it takes callers from (`allow`) or refuses (`deny`).
    #[serde(default)]
    pub area_codes: AreaCodeRule,
    /// Told when its calls connect, convert, turn out duplicates and end.
    #[serde(default)]
    pub postbacks: Postbacks,
}

impl PlanEntity for Buyer {
    const KIND: &'static str = "buyer";
    const OWNED_BY_COMPANY: bool = true;

    fn name(&self) -> &Name {
        &self.name
    }

    fn contradiction(&self) -> Option<(&'static str, String)> {
        match (&self.destination, &self.send_digits, &self.sip_auth) {
            (Destination::Sip(_), Some(_), _) => Some((
                "send_digits",
                "a SIP destination takes no send_digits (<Sip> has no such attribute): put what the \
                 endpoint needs in its SIP address, or dial a phone number"
                    .to_owned(),
            )),
            (Destination::Phone(_), _, Some(_)) => {
                Some(("sip_auth", "applies to SIP destinations only".to_owned()))
            }
            // The provider skips detection when it sends digits on answer.
            (_, Some(_), _) if self.screen == Screen::MachineDetection => Some((
                "screen",
                "machine-detection cannot go with send_digits: the provider skips detection \
                 when it sends digits on answer"
                    .to_owned(),
            )),
            _ => None,
        }
    }

    fn redact_secrets(&mut self) {
        self.sip_auth = self.sip_auth.as_ref().map(SipAuth::redacted);
        self.postbacks = self.postbacks.redacted();
    }

    fn postbacks(&self) -> Option<&Postbacks> {
        Some(&self.postbacks)
    }

    fn keep_part_ids(&mut self, before: Option<&Self>, fresh: &mut dyn FnMut() -> EndpointId) {
        self.postbacks.keep_ids(before.map(|b| &b.postbacks), fresh);
    }
}

/// What makes a later call from the same caller a duplicate for a buyer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateAfter {
    /// The caller converted with the buyer (Retreaver's rule, Ringba's "Converted").
    #[default]
    Converted,
    /// The caller was connected to the buyer at all (Ringba's "Connected").
    Connected,
}

/// Per-buyer limits. Absent limits do not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Calls ringing or connected to the buyer at once.
    #[schema(inline)]
    pub concurrency: Option<CapLimit>,
    #[schema(inline)]
    pub hourly: Option<CapLimit>,
    #[schema(inline)]
    pub daily: Option<CapLimit>,
    #[schema(inline)]
    pub monthly: Option<CapLimit>,
    #[schema(inline)]
    pub lifetime: Option<CapLimit>,
    /// What the hourly to lifetime caps count.
    pub counted_on: CapCounting,
}

impl Caps {
    /// Whether any cap applies at all.
    pub fn is_limited(&self) -> bool {
        [
            self.concurrency,
            self.hourly,
            self.daily,
            self.monthly,
            self.lifetime,
        ]
        .iter()
        .any(Option::is_some)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapCounting {
    Connected,
    /// Buyers usually cap what they pay for.
    #[default]
    Converted,
}

/// A campaign: the tracking numbers callers dial and the plan for routing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: Name,
    #[serde(default)]
    pub numbers: TrackingNumbers,
    #[serde(default)]
    pub duplicate_caller_handling: DuplicateHandling,
    #[serde(default)]
    pub buyers: RoutingList,
    /// Dialed, duplicates or not, once no buyer of the list is left.
    #[serde(default)]
    pub fallback_buyer_id: Option<BuyerId>,
    /// Where the call goes when even the fallback buyer could not take it.
    #[serde(default)]
    pub redirect_campaign_id: Option<CampaignId>,
    #[serde(default)]
    #[schema(inline)]
    pub rtb_reservation_seconds: ReservationSeconds,
    /// Whether RTB pings without a caller number get a bid (for a caller who cannot be checked
    /// for duplicates, and whose call cannot claim the reservation). Off: such pings are refused.
    #[serde(default)]
    pub rtb_caller_number_optional: bool,
    /// The caller hears the buyer's phone ring, and the call is answered (and billed) only when a
    /// buyer picks up. Off: the call is answered at once and the caller hears the provider's
    /// ringing tone.
    #[serde(default = "answer_on_bridge")]
    #[schema(default = true)]
    pub answer_on_bridge: bool,
    /// Whether calls are recorded (a buyer's own setting wins).
    #[serde(default)]
    pub record: RecordingMode,
    /// Played to every buyer when it answers, unless the buyer has its own.
    #[serde(default)]
    pub whisper: Option<Whisper>,
    /// What publishers sending callers here earn, unless they have terms of their own.
    #[serde(default)]
    pub publisher_payout: Option<PublisherPayout>,
}

fn answer_on_bridge() -> bool {
    true
}

impl PlanEntity for Campaign {
    const KIND: &'static str = "campaign";
    const OWNED_BY_COMPANY: bool = true;

    fn name(&self) -> &Name {
        &self.name
    }
}

/// The campaign's duplicate caller handling, effective only while its company has the feature on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateHandling {
    /// Route as if duplicate status did not exist (calls are still marked duplicate or not).
    #[default]
    Off,
    /// Skip every buyer for whom this call would be a duplicate at its end.
    #[serde(alias = "new_convertible_handler")]
    NewConvertibleBuyer,
}

/// A buyer on a campaign's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBuyer {
    pub buyer_id: BuyerId,
    /// Lower is tried first.
    #[serde(default)]
    #[schema(inline)]
    pub priority: Priority,
    #[serde(default)]
    #[schema(inline)]
    /// Among buyers of one priority, how often this one is drawn first.
    pub weight: Weight,
}

/// A campaign's tracking numbers, each listed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<E164>", into = "Vec<E164>")]
pub struct TrackingNumbers(Vec<E164>);

impl TrackingNumbers {
    pub fn as_slice(&self) -> &[E164] {
        &self.0
    }
}

impl TryFrom<Vec<E164>> for TrackingNumbers {
    type Error = String;

    fn try_from(numbers: Vec<E164>) -> Result<Self, Self::Error> {
        ensure_unique(&numbers, |n| n.clone(), |n| format!("{n} is listed twice"))?;
        Ok(Self(numbers))
    }
}

impl From<TrackingNumbers> for Vec<E164> {
    fn from(numbers: TrackingNumbers) -> Self {
        numbers.0
    }
}

/// A campaign's buyers in the order given, each listed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<CampaignBuyer>", into = "Vec<CampaignBuyer>")]
pub struct RoutingList(Vec<CampaignBuyer>);

impl RoutingList {
    pub fn as_slice(&self) -> &[CampaignBuyer] {
        &self.0
    }
}

impl TryFrom<Vec<CampaignBuyer>> for RoutingList {
    type Error = String;

    fn try_from(buyers: Vec<CampaignBuyer>) -> Result<Self, Self::Error> {
        ensure_unique(
            &buyers,
            |b| b.buyer_id,
            |b| format!("buyer {} is listed twice", b.buyer_id),
        )?;
        Ok(Self(buyers))
    }
}

impl From<RoutingList> for Vec<CampaignBuyer> {
    fn from(buyers: RoutingList) -> Self {
        buyers.0
    }
}

fn ensure_unique<T, K: Eq + Hash>(
    items: &[T],
    key: impl Fn(&T) -> K,
    describe: impl Fn(&T) -> String,
) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(items.len());
    match items.iter().find(|item| !seen.insert(key(item))) {
        Some(repeated) => Err(describe(repeated)),
        None => Ok(()),
    }
}

/// A publisher (affiliate, source): who brings callers; named on RTB pings by `external_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    pub name: Name,
    #[serde(default)]
    pub external_id: Option<Name>,
    /// The tracking numbers given to it: calls to them are its calls.
    #[serde(default)]
    pub numbers: TrackingNumbers,
    /// What its calls earn it (without: its campaign's terms, if any).
    #[serde(default)]
    pub payout: Option<PublisherPayout>,
    /// Told when its calls connect, convert, turn out duplicates and end.
    #[serde(default)]
    pub postbacks: Postbacks,
}

impl PlanEntity for Publisher {
    const KIND: &'static str = "publisher";
    const OWNED_BY_COMPANY: bool = true;

    fn name(&self) -> &Name {
        &self.name
    }

    fn redact_secrets(&mut self) {
        self.postbacks = self.postbacks.redacted();
    }

    fn postbacks(&self) -> Option<&Postbacks> {
        Some(&self.postbacks)
    }

    fn keep_part_ids(&mut self, before: Option<&Self>, fresh: &mut dyn FnMut() -> EndpointId) {
        self.postbacks.keep_ids(before.map(|b| &b.postbacks), fresh);
    }
}

/// A new record of `spec`, written as the API takes it, owned by `company` (tests build plans
/// this way).
#[cfg(test)]
pub(crate) fn record_of<T: PlanEntity>(company: Option<CompanyId>, spec: serde_json::Value) -> Record<T> {
    Record {
        id: crate::fresh::Generate::generate(),
        company_id: company,
        spec: serde_json::from_value(spec).expect("a valid spec"),
        created_at: Timestamp::UNIX_EPOCH,
        updated_at: Timestamp::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fresh::Generate;

    fn error_of<T: DeserializeOwned + std::fmt::Debug>(value: serde_json::Value) -> (String, String) {
        let err = serde_path_to_error::deserialize::<_, T>(value).unwrap_err();
        (err.path().to_string(), err.inner().to_string())
    }

    #[test]
    fn a_minimal_buyer_gets_the_documented_defaults() {
        let buyer: Buyer =
            serde_json::from_value(json!({"name": "Acme", "destination": "+1 415 555 0101"})).unwrap();
        assert_eq!(buyer.ring_timeout_seconds.get(), 30);
        assert_eq!(buyer.conversion_seconds.get(), 90);
        assert_eq!(buyer.dedupe_seconds.get(), 0);
        assert_eq!(buyer.duplicate_after, DuplicateAfter::Converted);
        assert_eq!(buyer.caps, Caps::default());
        assert!(!buyer.paused);
        assert_eq!(buyer.destination.to_string(), "+14155550101");
        assert_eq!(buyer.caller_id, CallerId::Caller);
        assert_eq!(
            (buyer.whisper, buyer.screen, buyer.record),
            (None, Screen::None, None)
        );
        assert_eq!((buyer.states, buyer.area_codes), (None, AreaCodeRule::default()));
        let campaign: Campaign = serde_json::from_value(json!({"name": "C"})).unwrap();
        assert!(
            campaign.answer_on_bridge,
            "callers hear the buyer ringing unless told otherwise"
        );
        assert_eq!((campaign.record, campaign.whisper), (RecordingMode::Off, None));
    }

    #[test]
    fn companies_leave_duplicate_caller_handling_off_unless_asked() {
        let company: Company = serde_json::from_value(json!({"name": "Acme"})).unwrap();
        assert!(!company.duplicate_caller_handling);
    }

    #[test]
    fn new_convertible_handler_is_new_convertible_buyer() {
        for mode in ["new_convertible_buyer", "new_convertible_handler"] {
            let campaign: Campaign =
                serde_json::from_value(json!({"name": "C", "duplicate_caller_handling": mode})).unwrap();
            assert_eq!(
                campaign.duplicate_caller_handling,
                DuplicateHandling::NewConvertibleBuyer
            );
        }
        let campaign: Campaign = serde_json::from_value(json!({"name": "C"})).unwrap();
        assert_eq!(campaign.duplicate_caller_handling, DuplicateHandling::Off);
    }

    #[test]
    fn invalid_fields_are_named_by_their_path() {
        let (path, message) = error_of::<Buyer>(json!({"name": "A", "destination": "555-0100"}));
        assert_eq!(path, "destination");
        assert!(message.contains("country code"), "{message}");

        let (path, _) =
            error_of::<Buyer>(json!({"name": "A", "destination": "+14155550101", "caps": {"daily": -1}}));
        assert_eq!(path, "caps.daily");

        let (path, message) =
            error_of::<Buyer>(json!({"name": "A", "destination": "+14155550101", "dedupe_second": 5}));
        assert_eq!(path, "dedupe_second");
        assert!(message.contains("unknown field `dedupe_second`"), "{message}");

        let (path, message) =
            error_of::<Campaign>(json!({"name": "C", "numbers": ["+18005550100", "+1 800 555 0100"]}));
        assert_eq!(path, "numbers");
        assert!(message.contains("+18005550100 is listed twice"), "{message}");

        let (path, _) = error_of::<Campaign>(json!({"name": "C", "buyers": [{"buyer_id": "nope"}]}));
        assert_eq!(path, "buyers[0].buyer_id");

        let (path, _) = error_of::<Campaign>(json!({"name": "C", "duplicate_caller_handling": "on"}));
        assert_eq!(path, "duplicate_caller_handling");
    }

    #[test]
    fn a_buyer_listed_twice_in_a_campaign_is_rejected() {
        let id = BuyerId::generate().to_string();
        let (path, message) = error_of::<Campaign>(
            json!({"name": "C", "buyers": [{"buyer_id": id}, {"buyer_id": id, "priority": 2}]}),
        );
        assert_eq!(path, "buyers");
        assert!(message.contains("listed twice"), "{message}");
    }

    #[test]
    fn records_show_their_fields_flat() {
        let record = Record {
            id: PublisherId::generate(),
            company_id: Some(CompanyId::generate()),
            spec: Publisher {
                name: Name::try_from("Search Partners".to_owned()).unwrap(),
                external_id: None,
                numbers: TrackingNumbers::default(),
                payout: None,
                postbacks: Postbacks::default(),
            },
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["name"], "Search Partners");
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert!(json["company_id"].is_string());
    }
}
