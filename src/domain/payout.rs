//! What publishers earn: a call is attributed to the publisher that sent it (by the tracking
//! number dialed, or by the RTB bid it claimed), and earns the publisher's payout when it meets
//! the payout rule — unless the caller already earned that publisher a payout inside its
//! de-dupe window, which makes the call a duplicate for the publisher, paid nothing.
//!
//! Publishers are paid once per caller per window, measured from the call that was paid: a
//! caller who calls every day against a week's window is paid once a week, and a repeat call
//! that would have earned nothing anyway is not held against the publisher.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    call::{CallRecord, Outcome},
    money::Money,
    values::{ConversionSeconds, DedupeSeconds},
};

/// When a call earns its publisher the payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutRule {
    /// Every call the publisher sends that reaches the campaign (a blocked caller does not).
    PerCall,
    /// A call connected to a buyer for at least `seconds` (the call length the publisher is
    /// paid on).
    PerConnectedSeconds,
    /// A call that converted for a buyer.
    PerConversion,
}

/// A publisher's terms: on a publisher (its own deal), or on a campaign (for every publisher
/// sending callers to it without a deal of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPayout", into = "RawPayout")]
pub struct PublisherPayout {
    pub rule: PayoutRule,
    pub amount: Money,
    /// `per_connected_seconds` only: how long the call must be connected.
    pub seconds: Option<ConversionSeconds>,
    /// A caller who earned the publisher a payout less than this ago earns nothing (0: every
    /// call that meets the rule is paid).
    pub dedupe_seconds: DedupeSeconds,
}

/// What a publisher's calls earn it. `per_call`: every call that reaches the campaign;
/// `per_connected_seconds`: a call connected to a buyer for at least `seconds`;
/// `per_conversion`: a call that converted. A caller who earned the publisher a payout less
/// than `dedupe_seconds` ago is a duplicate for it and earns nothing.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PublisherPayout)]
struct RawPayout {
    rule: PayoutRule,
    amount: Money,
    /// `per_connected_seconds` only (and required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ConversionSeconds, inline)]
    seconds: Option<ConversionSeconds>,
    #[serde(default)]
    #[schema(inline)]
    dedupe_seconds: DedupeSeconds,
}

// The written form is the schema: the type's own fields are that form, checked.
impl utoipa::PartialSchema for PublisherPayout {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        RawPayout::schema()
    }
}

impl ToSchema for PublisherPayout {
    fn name() -> std::borrow::Cow<'static, str> {
        RawPayout::name()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        RawPayout::schemas(schemas);
    }
}

impl TryFrom<RawPayout> for PublisherPayout {
    type Error = String;

    fn try_from(raw: RawPayout) -> Result<Self, Self::Error> {
        match (raw.rule, raw.seconds) {
            (PayoutRule::PerConnectedSeconds, None) => {
                return Err(
                    "`per_connected_seconds` needs `seconds`: how long the call must be connected".into(),
                );
            }
            (PayoutRule::PerCall | PayoutRule::PerConversion, Some(_)) => {
                return Err("`seconds` applies to `per_connected_seconds` only".into());
            }
            _ => {}
        }
        Ok(Self {
            rule: raw.rule,
            amount: raw.amount,
            seconds: raw.seconds,
            dedupe_seconds: raw.dedupe_seconds,
        })
    }
}

impl From<PublisherPayout> for RawPayout {
    fn from(payout: PublisherPayout) -> Self {
        Self {
            rule: payout.rule,
            amount: payout.amount,
            seconds: payout.seconds,
            dedupe_seconds: payout.dedupe_seconds,
        }
    }
}

impl PublisherPayout {
    /// `amount` per conversion, with no window of its own (a buyer's de-dupe already keeps a
    /// duplicate from converting).
    pub fn per_conversion(amount: Money) -> Self {
        Self {
            rule: PayoutRule::PerConversion,
            amount,
            seconds: None,
            dedupe_seconds: DedupeSeconds::default(),
        }
    }

    /// Whether the call, as it stands, meets the rule.
    pub fn is_met_by(&self, call: &CallRecord) -> bool {
        match self.rule {
            PayoutRule::PerCall => !call.visited.is_empty() && call.outcome != Some(Outcome::Blocked),
            PayoutRule::PerConnectedSeconds => {
                let least = self.seconds.map_or(0, ConversionSeconds::get);
                (call.attempts.iter())
                    .filter_map(|a| a.connected_seconds)
                    .any(|seconds| seconds >= least)
            }
            PayoutRule::PerConversion => call.converted(),
        }
    }
}

/// What settling a call's publisher payout comes to, at one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Nothing to settle now (no publisher, no terms, settled already, or not earned yet).
    Later,
    /// The call met the rule: paid, unless the caller's last payout to the publisher is inside
    /// the window (which the de-dupe index tells).
    Earned(PublisherPayout),
    /// The call ended without meeting the rule: it earns nothing.
    Unearned,
}

impl Settlement {
    /// Where the call's payout stands, under `terms` (the publisher's, else its campaign's). A
    /// call that ended with a dial whose result has not come yet may still meet the rule (the
    /// provider's callbacks keep no order): it is not settled as unearned before that result.
    pub fn of(call: &CallRecord, terms: Option<&PublisherPayout>) -> Self {
        if call.publisher_id.is_none() || call.publisher_payout.is_some() {
            return Self::Later;
        }
        // A call taken for over (no end ever came) will hear nothing more either.
        let settled = |call: &CallRecord| {
            call.is_ended()
                && (call.attempts.iter().all(|a| a.status.is_some())
                    || call.outcome == Some(Outcome::TimedOut))
        };
        match terms {
            Some(terms) if terms.is_met_by(call) => Self::Earned(*terms),
            _ if settled(call) => Self::Unearned,
            _ => Self::Later,
        }
    }
}

/// Whether a caller whose last payout to the publisher was at `last_paid_ms` is a duplicate for
/// it at `at_ms`: inside the window (a payout stamped later, by a clock ahead, is inside too).
pub fn is_duplicate_for_publisher(terms: &PublisherPayout, last_paid_ms: Option<i64>, at_ms: i64) -> bool {
    let window_ms = i64::from(terms.dedupe_seconds.get()) * 1000;
    window_ms > 0 && last_paid_ms.is_some_and(|last| at_ms - last < window_ms)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::domain::{
        call::{AttemptKind, CallSid, Caller, DialStatus},
        plan::{BuyerId, CampaignId, PublisherId},
    };
    use crate::fresh::Generate;

    fn terms(value: serde_json::Value) -> PublisherPayout {
        serde_json::from_value(value).unwrap()
    }

    /// A call from a publisher, connected for `seconds` (converting at 90).
    fn call_connected_for(seconds: Option<u32>) -> CallRecord {
        let t0 = Timestamp::UNIX_EPOCH;
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let mut call = CallRecord::new(
            sid,
            Caller::from_provider("+14155550123"),
            "+18005550100".into(),
            t0,
        );
        call.publisher_id = Some(PublisherId::generate());
        call.enter_campaign(None, CampaignId::generate());
        if let Some(seconds) = seconds {
            let campaign = call.visited[0];
            call.begin_attempt(BuyerId::generate(), campaign, AttemptKind::Buyer, Some(false), t0);
            call.attempt_ended(1, DialStatus::Completed, seconds, Some(false), 90, t0);
        }
        call
    }

    #[test]
    fn each_rule_is_met_by_what_it_names() {
        let per_call = terms(json!({"rule": "per_call", "amount": 5}));
        let per_length = terms(json!({"rule": "per_connected_seconds", "amount": 8, "seconds": 60}));
        let per_conversion = terms(json!({"rule": "per_conversion", "amount": 20}));
        let routed = call_connected_for(None);
        let short = call_connected_for(Some(59));
        let long = call_connected_for(Some(60));
        let converted = call_connected_for(Some(90));
        assert!(per_call.is_met_by(&routed));
        let mut blocked = call_connected_for(None);
        blocked.end(Outcome::Blocked, None, Timestamp::UNIX_EPOCH);
        assert!(!per_call.is_met_by(&blocked), "a blocked caller earns nothing");
        assert!(!per_length.is_met_by(&routed) && !per_length.is_met_by(&short));
        assert!(per_length.is_met_by(&long));
        assert!(!per_conversion.is_met_by(&long));
        assert!(per_conversion.is_met_by(&converted));
    }

    #[test]
    fn a_call_is_settled_once_when_earned_or_when_it_ends_without() {
        let per_conversion = terms(json!({"rule": "per_conversion", "amount": 20}));
        let mut call = call_connected_for(Some(30));
        assert_eq!(Settlement::of(&call, Some(&per_conversion)), Settlement::Later);
        call.hung_up(Timestamp::UNIX_EPOCH);
        assert_eq!(Settlement::of(&call, Some(&per_conversion)), Settlement::Unearned);
        assert_eq!(
            Settlement::of(&call, None),
            Settlement::Unearned,
            "no terms, nothing earned"
        );
        call.publisher_payout = Some(Money::ZERO);
        assert_eq!(Settlement::of(&call, Some(&per_conversion)), Settlement::Later);

        // Over, but its dial's result not in yet: it may still convert.
        let t0 = Timestamp::UNIX_EPOCH;
        let mut pending = call_connected_for(None);
        let campaign = pending.visited[0];
        pending.begin_attempt(BuyerId::generate(), campaign, AttemptKind::Buyer, Some(false), t0);
        pending.hung_up(t0);
        assert_eq!(Settlement::of(&pending, Some(&per_conversion)), Settlement::Later);
        let mut timed_out = pending.clone();
        timed_out.outcome = Some(Outcome::TimedOut);
        assert_eq!(
            Settlement::of(&timed_out, Some(&per_conversion)),
            Settlement::Unearned
        );
        pending.attempt_ended(1, DialStatus::Completed, 120, Some(false), 90, t0);
        assert_eq!(
            Settlement::of(&pending, Some(&per_conversion)),
            Settlement::Earned(per_conversion)
        );
        let converted = call_connected_for(Some(120));
        assert_eq!(
            Settlement::of(&converted, Some(&per_conversion)),
            Settlement::Earned(per_conversion)
        );
        let mut anonymous = call_connected_for(Some(120));
        anonymous.publisher_id = None;
        assert_eq!(
            Settlement::of(&anonymous, Some(&per_conversion)),
            Settlement::Later
        );
    }

    #[test]
    fn a_repeat_caller_inside_the_window_is_a_duplicate_for_the_publisher() {
        let week = terms(json!({"rule": "per_call", "amount": 5, "dedupe_seconds": 604_800}));
        let day_ms = 86_400_000;
        assert!(is_duplicate_for_publisher(&week, Some(0), day_ms));
        assert!(!is_duplicate_for_publisher(&week, Some(0), 7 * day_ms));
        assert!(!is_duplicate_for_publisher(&week, None, day_ms));
        let no_window = terms(json!({"rule": "per_call", "amount": 5}));
        assert!(!is_duplicate_for_publisher(&no_window, Some(0), 1));
    }

    #[test]
    fn terms_name_their_mistakes() {
        for (value, needle) in [
            (
                json!({"rule": "per_connected_seconds", "amount": 5}),
                "needs `seconds`",
            ),
            (
                json!({"rule": "per_call", "amount": 5, "seconds": 30}),
                "applies to `per_connected_seconds` only",
            ),
            (json!({"rule": "per_minute", "amount": 5}), "unknown variant"),
            (json!({"rule": "per_call"}), "missing field `amount`"),
            (
                json!({"rule": "per_call", "amount": 5, "window": 3}),
                "unknown field `window`",
            ),
        ] {
            let error = serde_json::from_value::<PublisherPayout>(value)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{error}");
        }
        let written =
            json!({"rule": "per_connected_seconds", "amount": 8.5, "seconds": 60, "dedupe_seconds": 0});
        assert_eq!(serde_json::to_value(terms(written.clone())).unwrap(), written);
    }
}
