//! Conversions a buyer reports, and conversions it returns.
//!
//! A buyer whose `conversion_rule` is `reported` (or `seconds_and_reported`) is the judge of
//! whether its calls convert: a call it connected to converts when the buyer says so, within
//! `conversion_report_window_seconds` of the call's end (and, for `seconds_and_reported`, only
//! if the caller and the buyer talked `conversion_seconds` too). Within
//! `return_window_seconds` of a conversion, any buyer may return it (a dispute): the
//! conversion and the publisher's payout are reversed, and the caller is no longer a duplicate
//! for the buyer on its account.
//!
//! This module holds the rules only; what a report changes is written in one transaction by
//! the store, under the report's idempotency key.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{
    call::{Attempt, CallRecord, CallSid},
    money::Money,
    payout::{PayoutRule, PublisherPayout},
    plan::{Buyer, BuyerId},
    values::Name,
};

/// What makes a buyer's call a conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversionRule {
    /// Connected for `conversion_seconds` (the default): no report is taken.
    #[default]
    Seconds,
    /// Only the buyer's report converts a call, however long it lasted.
    Reported,
    /// Both: connected for `conversion_seconds`, and reported by the buyer.
    SecondsAndReported,
}

impl ConversionRule {
    /// The connected seconds a dial's end converts on: none for a rule that waits for the
    /// buyer's word.
    pub fn seconds_at_dial_end(self, conversion_seconds: u32) -> u32 {
        match self {
            Self::Seconds => conversion_seconds,
            Self::Reported | Self::SecondsAndReported => u32::MAX,
        }
    }

    pub fn takes_reports(self) -> bool {
        self != Self::Seconds
    }
}

/// A buyer's report of a call: `POST /calls/{sid}/conversion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionReport {
    /// Whether the call converted. `false` records nothing (the call does not convert).
    pub converted: bool,
    /// What the buyer pays for this call, instead of its configured `revenue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, example = 42.5)]
    pub revenue: Option<Money>,
    /// The buyer's own reference for the sale (kept, and shown on the call's timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub external_id: Option<Name>,
}

/// A buyer's return of a conversion: `POST /calls/{sid}/return`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionReturn {
    /// Why: kept, and shown on the call's timeline.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub reason: Name,
}

/// A client's key for one report: the same key again is the same report (answered as it was
/// the first time), never a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if (1..=200).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 1 to 200 printable characters without spaces".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a report or return asks, as a digest: a key sent again with a different request is
/// told apart from a retry.
pub fn request_digest(action: Action, call: &CallSid, body: &impl Serialize) -> String {
    // Plain data: serializing it cannot fail.
    let body = serde_json::to_string(body).unwrap_or_default();
    let text = format!("{}\n{}\n{body}", action.as_str(), call.as_str());
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What a request does to a call's conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Report,
    Return,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Return => "return",
        }
    }
}

/// A buyer's terms for reports, as the checks need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportTerms {
    pub rule: ConversionRule,
    pub conversion_seconds: u32,
    pub report_window_seconds: u32,
    pub return_window_seconds: u32,
}

impl ReportTerms {
    pub fn of(buyer: &Buyer) -> Self {
        Self {
            rule: buyer.conversion_rule,
            conversion_seconds: buyer.conversion_seconds.get(),
            report_window_seconds: buyer.conversion_report_window_seconds.get(),
            return_window_seconds: buyer.return_window_seconds.get(),
        }
    }
}

/// What was reported of a call before: its conversion, and its return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub converted_at: Option<Timestamp>,
    pub returned_at: Option<Timestamp>,
    /// The revenue the conversion was reported with.
    pub revenue: Option<Money>,
}

/// Why a report or return changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the buyer's conversion_rule is `seconds`: its calls convert on connected seconds alone and take no reports (set it to `reported` or `seconds_and_reported`)"
    )]
    NotReported,
    #[error("the call is not over yet: report it once it has ended")]
    NotEnded,
    #[error("the call never connected to a buyer")]
    NotConnected,
    #[error("the call is a duplicate for the buyer, which does not pay for it")]
    Duplicate,
    #[error("the report window closed at {closed} ({seconds} s after the call ended at {ended})")]
    ReportWindowClosed {
        ended: Timestamp,
        closed: Timestamp,
        seconds: u32,
    },
    #[error(
        "the caller and the buyer talked {talked} s, less than the {needed} s a `seconds_and_reported` buyer needs as well as the report"
    )]
    TooShort { talked: u32, needed: u32 },
    #[error("the call's conversion was returned: it cannot be reported again")]
    Returned,
    #[error("the call converted already: to take the conversion back, return it")]
    ConvertedAlready,
    #[error("the call has no conversion to return")]
    NothingToReturn,
    #[error("the return window closed at {closed} ({seconds} s after the conversion at {converted})")]
    ReturnWindowClosed {
        converted: Timestamp,
        closed: Timestamp,
        seconds: u32,
    },
}

impl Refusal {
    /// A refusal because of the call's state (409), rather than of when the request came (422).
    pub fn is_conflict(&self) -> bool {
        !matches!(
            self,
            Self::ReportWindowClosed { .. } | Self::TooShort { .. } | Self::ReturnWindowClosed { .. }
        )
    }
}

/// What a report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportVerdict {
    /// The call converts now.
    Converts,
    /// It converted already (another report did it): nothing happens again.
    ConvertedAlready,
    /// The buyer says it did not convert: nothing happens.
    NotConverted,
}

fn closes(start: Timestamp, seconds: u32) -> Timestamp {
    // Far inside jiff's range: windows are at most 90 days.
    start
        .saturating_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(Timestamp::MAX)
}

/// Judges a report of `attempt` (the buyer's connected dial) on a call that ended at `ended`.
pub fn judge_report(
    terms: &ReportTerms,
    attempt: Option<&Attempt>,
    ended: Option<Timestamp>,
    reported: &Reported,
    converted: bool,
    now: Timestamp,
) -> Result<ReportVerdict, Refusal> {
    if !terms.rule.takes_reports() {
        return Err(Refusal::NotReported);
    }
    let ended = ended.ok_or(Refusal::NotEnded)?;
    let attempt = attempt.ok_or(Refusal::NotConnected)?;
    if reported.returned_at.is_some() {
        return Err(Refusal::Returned);
    }
    if reported.converted_at.is_some() {
        return if converted {
            Ok(ReportVerdict::ConvertedAlready)
        } else {
            Err(Refusal::ConvertedAlready)
        };
    }
    let closed = closes(ended, terms.report_window_seconds);
    if now >= closed {
        return Err(Refusal::ReportWindowClosed {
            ended,
            closed,
            seconds: terms.report_window_seconds,
        });
    }
    if !converted {
        return Ok(ReportVerdict::NotConverted);
    }
    if attempt.duplicate == Some(true) {
        return Err(Refusal::Duplicate);
    }
    let talked = attempt.bridged_seconds.or(attempt.connected_seconds).unwrap_or(0);
    if terms.rule == ConversionRule::SecondsAndReported && talked < terms.conversion_seconds {
        return Err(Refusal::TooShort {
            talked,
            needed: terms.conversion_seconds,
        });
    }
    Ok(ReportVerdict::Converts)
}

/// What a return does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnVerdict {
    /// The conversion is reversed now.
    Reverses,
    /// It was returned already: nothing happens again.
    ReturnedAlready,
}

/// Judges a return of the call's reported conversion.
pub fn judge_return(
    terms: &ReportTerms,
    reported: &Reported,
    now: Timestamp,
) -> Result<ReturnVerdict, Refusal> {
    if !terms.rule.takes_reports() {
        return Err(Refusal::NotReported);
    }
    let converted = reported.converted_at.ok_or(Refusal::NothingToReturn)?;
    if reported.returned_at.is_some() {
        return Ok(ReturnVerdict::ReturnedAlready);
    }
    let closed = closes(converted, terms.return_window_seconds);
    if now >= closed {
        return Err(Refusal::ReturnWindowClosed {
            converted,
            closed,
            seconds: terms.return_window_seconds,
        });
    }
    Ok(ReturnVerdict::Reverses)
}

/// The publisher's payout a reported conversion earns: under `per_conversion` terms, if the
/// call's payout was not judged on a conversion before (it settled at nothing when the call
/// ended unconverted).
pub fn payout_on_report(call: &CallRecord, terms: Option<&PublisherPayout>) -> Option<PublisherPayout> {
    let terms = terms.filter(|t| t.rule == PayoutRule::PerConversion)?;
    let judged = call.publisher_duplicate.is_some() || call.publisher_payout.is_some_and(|p| p > Money::ZERO);
    (call.publisher_id.is_some() && !judged).then_some(*terms)
}

/// What a report or return answers (and answers again, to a retry with its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportAnswer {
    #[schema(value_type = String)]
    pub call_sid: CallSid,
    #[schema(value_type = String, format = Uuid)]
    pub buyer_id: BuyerId,
    /// The buyer's dial the report concerns.
    pub attempt: u32,
    pub status: ConversionStatus,
    /// Whether this request made the change (else it was made before, by another report).
    pub recorded: bool,
    /// What the buyer pays for the call: the revenue reported, else its configured revenue.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub revenue: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub converted_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub returned_at: Option<Timestamp>,
    /// Until when the conversion may be returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub return_until: Option<Timestamp>,
}

/// Where the call's conversion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversionStatus {
    Converted,
    NotConverted,
    Returned,
}

/// When a conversion at `converted_at` may be returned until.
pub fn return_until(terms: &ReportTerms, converted_at: Timestamp) -> Timestamp {
    closes(converted_at, terms.return_window_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        call::{AttemptKind, Caller, DialStatus},
        plan::{BuyerId, CampaignId},
    };
    use crate::fresh::Generate;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_800_000_000 + seconds)
    }

    fn terms(rule: ConversionRule) -> ReportTerms {
        ReportTerms {
            rule,
            conversion_seconds: 60,
            report_window_seconds: 3600,
            return_window_seconds: 90,
        }
    }

    /// A call connected for `seconds`, ended at `at(0)`; its dial.
    fn connected_for(seconds: u32) -> (CallRecord, Attempt) {
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let mut call = CallRecord::new(
            sid,
            Caller::from_provider("+14155550123"),
            "+18005550100".into(),
            at(-600),
        );
        call.enter_campaign(None, CampaignId::generate());
        let campaign = call.visited[0];
        call.begin_attempt(
            BuyerId::generate(),
            campaign,
            AttemptKind::Buyer,
            Some(false),
            at(-590),
        );
        let dial = call
            .attempt_ended(1, DialStatus::Completed, seconds, Some(false), u32::MAX, at(0))
            .unwrap();
        call.hung_up(at(0));
        (call, dial)
    }

    #[test]
    fn only_the_seconds_rule_converts_when_a_dial_ends() {
        assert_eq!(ConversionRule::Seconds.seconds_at_dial_end(90), 90);
        assert_eq!(ConversionRule::Reported.seconds_at_dial_end(90), u32::MAX);
        assert_eq!(
            ConversionRule::SecondsAndReported.seconds_at_dial_end(90),
            u32::MAX
        );
        let rule: ConversionRule = serde_json::from_str("\"seconds_and_reported\"").unwrap();
        assert_eq!(rule, ConversionRule::SecondsAndReported);
    }

    #[test]
    fn a_report_converts_inside_its_window_and_not_after() {
        let (call, dial) = connected_for(5);
        let reported = Terms::reported();
        let judge = |now| {
            judge_report(
                &reported,
                Some(&dial),
                call.ended_at,
                &Reported::default(),
                true,
                now,
            )
        };
        assert_eq!(judge(at(3599)), Ok(ReportVerdict::Converts));
        assert!(matches!(judge(at(3600)), Err(Refusal::ReportWindowClosed { .. })));
        let refusal = judge(at(7200)).unwrap_err();
        assert!(
            !refusal.is_conflict(),
            "a late report is invalid (422), not a conflict"
        );
        assert!(
            refusal.to_string().contains("3600 s after the call ended"),
            "{refusal}"
        );
    }

    #[test]
    fn each_rule_takes_what_it_names() {
        let (short_call, short) = connected_for(30);
        let (long_call, long) = connected_for(600);
        let judge = |rule, call: &CallRecord, dial: &Attempt| {
            judge_report(
                &terms(rule),
                Some(dial),
                call.ended_at,
                &Reported::default(),
                true,
                at(10),
            )
        };
        assert_eq!(
            judge(ConversionRule::Seconds, &long_call, &long),
            Err(Refusal::NotReported)
        );
        assert_eq!(
            judge(ConversionRule::Reported, &short_call, &short),
            Ok(ReportVerdict::Converts)
        );
        assert_eq!(
            judge(ConversionRule::SecondsAndReported, &short_call, &short),
            Err(Refusal::TooShort {
                talked: 30,
                needed: 60
            })
        );
        assert_eq!(
            judge(ConversionRule::SecondsAndReported, &long_call, &long),
            Ok(ReportVerdict::Converts)
        );
    }

    #[test]
    fn a_call_converts_once_and_a_returned_one_never_again() {
        let (call, dial) = connected_for(120);
        let terms = Terms::reported();
        let converted = Reported {
            converted_at: Some(at(5)),
            returned_at: None,
            revenue: None,
        };
        let judge = |reported: &Reported, yes| {
            judge_report(&terms, Some(&dial), call.ended_at, reported, yes, at(10))
        };
        assert_eq!(judge(&converted, true), Ok(ReportVerdict::ConvertedAlready));
        assert_eq!(judge(&converted, false), Err(Refusal::ConvertedAlready));
        assert_eq!(
            judge(&Reported::default(), false),
            Ok(ReportVerdict::NotConverted)
        );
        let returned = Reported {
            returned_at: Some(at(6)),
            ..converted
        };
        assert_eq!(judge(&returned, true), Err(Refusal::Returned));
        let mut duplicate = dial.clone();
        duplicate.duplicate = Some(true);
        assert_eq!(
            judge_report(
                &terms,
                Some(&duplicate),
                call.ended_at,
                &Reported::default(),
                true,
                at(10)
            ),
            Err(Refusal::Duplicate)
        );
        assert_eq!(
            judge_report(&terms, None, call.ended_at, &Reported::default(), true, at(10)),
            Err(Refusal::NotConnected)
        );
        assert_eq!(
            judge_report(&terms, Some(&dial), None, &Reported::default(), true, at(10)),
            Err(Refusal::NotEnded)
        );
    }

    #[test]
    fn a_return_reverses_inside_its_window_once() {
        let terms = Terms::reported();
        let converted = Reported {
            converted_at: Some(at(0)),
            returned_at: None,
            revenue: None,
        };
        assert_eq!(
            judge_return(&terms, &converted, at(89)),
            Ok(ReturnVerdict::Reverses)
        );
        let late = judge_return(&terms, &converted, at(90)).unwrap_err();
        assert!(
            matches!(late, Refusal::ReturnWindowClosed { seconds: 90, .. }),
            "{late}"
        );
        assert!(!late.is_conflict());
        assert_eq!(
            judge_return(&terms, &Reported::default(), at(1)),
            Err(Refusal::NothingToReturn)
        );
        let returned = Reported {
            returned_at: Some(at(1)),
            ..converted
        };
        assert_eq!(
            judge_return(&terms, &returned, at(500)),
            Ok(ReturnVerdict::ReturnedAlready)
        );
        assert_eq!(return_until(&terms, at(0)), at(90));
    }

    #[test]
    fn the_same_key_with_another_request_is_told_apart() {
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let report = |revenue: Option<i64>| ConversionReport {
            converted: true,
            revenue: revenue.map(|c| Money::from_cents(c).unwrap()),
            external_id: None,
        };
        let digest = |body| request_digest(Action::Report, &sid, &body);
        assert_eq!(digest(report(Some(100))), digest(report(Some(100))));
        assert_ne!(digest(report(Some(100))), digest(report(Some(200))));
        assert_ne!(
            request_digest(Action::Report, &sid, &report(None)),
            request_digest(Action::Return, &sid, &report(None))
        );
        assert!(IdempotencyKey::parse("order-123").is_ok());
        assert!(IdempotencyKey::parse("").is_err() && IdempotencyKey::parse("a b").is_err());
    }

    #[test]
    fn a_reported_conversion_pays_a_per_conversion_publisher_once() {
        let (mut call, _) = connected_for(120);
        let per_conversion = PublisherPayout::per_conversion(Money::from_cents(500).unwrap());
        assert_eq!(
            payout_on_report(&call, Some(&per_conversion)),
            None,
            "no publisher"
        );
        call.publisher_id = Some(crate::domain::plan::PublisherId::generate());
        // Settled at nothing when the call ended unconverted: judged again on the report.
        call.publisher_payout = Some(Money::ZERO);
        assert_eq!(
            payout_on_report(&call, Some(&per_conversion)),
            Some(per_conversion)
        );
        call.publisher_duplicate = Some(false);
        assert_eq!(
            payout_on_report(&call, Some(&per_conversion)),
            None,
            "paid already"
        );
        let per_call: PublisherPayout =
            serde_json::from_value(serde_json::json!({"rule": "per_call", "amount": 5})).unwrap();
        call.publisher_duplicate = None;
        assert_eq!(payout_on_report(&call, Some(&per_call)), None);
    }

    struct Terms;

    impl Terms {
        fn reported() -> ReportTerms {
            terms(ConversionRule::Reported)
        }
    }
}
