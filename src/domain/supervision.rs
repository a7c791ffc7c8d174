//! What supervisors see of calls: a call at a glance, what changed between two glances, and
//! statistics per campaign and per buyer.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    call::{CallRecord, CallSid, CallState, DropReason, Outcome},
    geo::UsState,
    money::{Money, Total},
    plan::{BuyerId, CampaignId, CompanyId, PublisherId},
};

/// A call at a glance: what live and recent call lists show, and what the live event stream
/// sends when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CallSummary {
    pub call_sid: CallSid,
    /// `From` as the provider sent it.
    pub caller: String,
    pub called: String,
    #[schema(required = true)]
    pub company_id: Option<CompanyId>,
    /// The campaign of the number dialed, where the call's statistics count.
    #[schema(required = true)]
    pub entry_campaign_id: Option<CampaignId>,
    /// The campaign routing it now (another one after a redirect).
    #[schema(required = true)]
    pub campaign_id: Option<CampaignId>,
    /// The buyer reached, else the last one dialed.
    #[schema(required = true)]
    pub buyer_id: Option<BuyerId>,
    pub state: CallState,
    #[schema(required = true)]
    pub outcome: Option<Outcome>,
    #[schema(required = true)]
    pub drop_reason: Option<DropReason>,
    /// Buyers dialed so far.
    pub attempts: u32,
    pub converted: bool,
    /// Whether the call was a duplicate for the buyer it reached.
    #[schema(required = true)]
    pub duplicate: Option<bool>,
    pub used_fallback: bool,
    pub redirects: u32,
    /// Buyers skipped because the call would have been a duplicate for them.
    pub duplicates_avoided: u32,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub state_changed_at: Timestamp,
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// Grows with every change to the call (it counts the timeline's entries): of two
    /// summaries of one call, the one with the higher version is the newer.
    pub version: u32,
    /// The caller's US state (the provider's `FromState`, else the area code's), if known.
    #[schema(required = true)]
    pub caller_state: Option<UsState>,
    /// The publisher that sent the call.
    #[schema(required = true)]
    pub publisher_id: Option<PublisherId>,
    /// What the call earned its publisher (absent until settled).
    #[schema(required = true)]
    pub publisher_payout: Option<Money>,
    /// Whether it was a duplicate for its publisher (absent until judged).
    #[schema(required = true)]
    pub publisher_duplicate: Option<bool>,
}

impl CallSummary {
    pub fn of(call: &CallRecord) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            call_sid: call.sid.clone(),
            caller: call.caller.raw().to_owned(),
            called: call.called.clone(),
            company_id: call.company_id,
            entry_campaign_id: call.visited.first().copied(),
            campaign_id: call.campaign_id,
            buyer_id: (call.connected_attempt().or(call.current_attempt())).map(|a| a.buyer_id),
            state: call.state,
            outcome: call.outcome,
            drop_reason: call.drop_reason,
            attempts: count(call.attempts.len()),
            converted: call.converted(),
            duplicate: call.duplicate(),
            used_fallback: call.used_fallback(),
            redirects: count(call.redirects()),
            duplicates_avoided: count(call.duplicate_buyers.len()),
            started_at: call.started_at,
            state_changed_at: call.state_changed_at,
            ended_at: call.ended_at,
            version: call.timeline_len,
            caller_state: call.caller_state,
            publisher_id: call.publisher_id,
            publisher_payout: call.publisher_payout,
            publisher_duplicate: call.publisher_duplicate,
        }
    }

    pub fn is_live(&self) -> bool {
        self.state != CallState::Ended
    }

    /// What happened to the call between `before` (`None`: it is new here) and `self`, for the
    /// counters that metrics keep.
    pub fn news_since(&self, before: Option<&CallSummary>) -> CallNews {
        let was = |f: fn(&CallSummary) -> bool| before.is_some_and(f);
        CallNews {
            converted: self.converted && !was(|b| b.converted),
            duplicates_avoided: self
                .duplicates_avoided
                .saturating_sub(before.map_or(0, |b| b.duplicates_avoided)),
            ended: (!self.is_live() && !was(|b| !b.is_live())).then_some((self.outcome, self.drop_reason)),
            started: before.is_none(),
        }
    }
}

/// What one webhook changed about a call, as counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallNews {
    pub converted: bool,
    pub duplicates_avoided: u32,
    /// The call ended, with its outcome and, if dropped, why.
    pub ended: Option<(Option<Outcome>, Option<DropReason>)>,
    /// The call is new here (it may have ended at once: an unknown number, nobody to take it).
    pub started: bool,
}

/// A campaign's calls that started in a time range. Calls count in the campaign of the number
/// dialed, also when a redirect took them elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CampaignStats {
    pub campaign_id: CampaignId,
    pub calls: u64,
    /// Still in progress.
    pub live: u64,
    /// Reached a buyer (talking now, or did): a buyer answered.
    pub connected: u64,
    pub converted: u64,
    /// Buyers skipped because the call would have been a duplicate for them (a call skipping
    /// two counts two).
    pub duplicates_avoided: u64,
    /// Calls that were dialed to the fallback buyer.
    pub fallback_used: u64,
    /// Calls redirected to another campaign.
    pub redirected: u64,
    /// The caller hung up before a buyer answered.
    pub abandoned: u64,
    /// Callers on the company's block list, refused unanswered.
    pub blocked: u64,
    /// Calls Switchboard ended because nobody was left to take them, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// From the call's arrival to a buyer's answer, over the calls that connected.
    #[schema(required = true)]
    pub average_time_to_connect_ms: Option<u64>,
    /// Paid by buyers for the conversions.
    pub revenue: Total,
    /// Owed to publishers for the conversions.
    pub payout: Total,
}

impl CampaignStats {
    pub fn new(campaign_id: CampaignId) -> Self {
        Self {
            campaign_id,
            calls: 0,
            live: 0,
            connected: 0,
            converted: 0,
            duplicates_avoided: 0,
            fallback_used: 0,
            redirected: 0,
            abandoned: 0,
            blocked: 0,
            dropped: BTreeMap::new(),
            average_time_to_connect_ms: None,
            revenue: Total::default(),
            payout: Total::default(),
        }
    }
}

/// What a publisher's calls that started in a time range came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublisherStats {
    pub publisher_id: PublisherId,
    pub calls: u64,
    /// Calls that reached a buyer.
    pub connected: u64,
    pub converted: u64,
    /// Calls that earned a payout.
    pub paid: u64,
    /// Calls that met the payout rule but were duplicates for the publisher: paid nothing.
    pub duplicates: u64,
    /// Calls not settled yet (still going, or still able to meet the rule).
    pub unsettled: u64,
    pub payout: Total,
}

/// A buyer's share of the calls that started in a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BuyerStats {
    pub buyer_id: BuyerId,
    /// Times the buyer was dialed.
    pub dialed: u64,
    /// Dials still ringing or talking.
    pub live: u64,
    /// Dials the buyer answered.
    pub connected: u64,
    pub converted: u64,
    /// Calls that skipped this buyer because they would have been duplicates for it.
    pub duplicates_avoided: u64,
    /// Dials made to the buyer as a campaign's fallback.
    pub as_fallback: u64,
    /// From the dial to the answer, over the dials answered.
    #[schema(required = true)]
    pub average_time_to_answer_ms: Option<u64>,
    pub revenue: Total,
    pub payout: Total,
}

impl BuyerStats {
    pub fn new(buyer_id: BuyerId) -> Self {
        Self {
            buyer_id,
            dialed: 0,
            live: 0,
            connected: 0,
            converted: 0,
            duplicates_avoided: 0,
            as_fallback: 0,
            average_time_to_answer_ms: None,
            revenue: Total::default(),
            payout: Total::default(),
        }
    }
}

/// A mean in whole milliseconds, from a total and a count as a database sums them.
pub fn mean_ms(total_ms: i64, count: i64) -> Option<u64> {
    (count > 0).then(|| u64::try_from(total_ms / count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::domain::call::{AttemptKind, Caller, DialStatus};
    use crate::fresh::Generate;

    fn call(campaign: CampaignId) -> CallRecord {
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let mut call = CallRecord::new(
            sid,
            Caller::from_provider("+14155550123"),
            "+18005550100".into(),
            Timestamp::UNIX_EPOCH,
        );
        call.enter_campaign(None, campaign);
        call
    }

    #[test]
    fn a_summary_counts_in_the_entry_campaign_and_names_the_buyer_reached() {
        let (entry, other) = (CampaignId::generate(), CampaignId::generate());
        let (first, second) = (BuyerId::generate(), BuyerId::generate());
        let mut record = call(entry);
        let t = |s| Timestamp::UNIX_EPOCH + SignedDuration::from_secs(s);
        record.begin_attempt(first, entry, AttemptKind::Buyer, Some(false), t(1));
        record.attempt_ended(1, DialStatus::Busy, 0, Some(false), 60, t(5));
        record.enter_campaign(None, other);
        record.begin_attempt(second, other, AttemptKind::Fallback, Some(true), t(6));
        record.leg_answered(2, t(9));

        let summary = CallSummary::of(&record);
        assert_eq!(summary.entry_campaign_id, Some(entry));
        assert_eq!(summary.campaign_id, Some(other));
        assert_eq!(summary.buyer_id, Some(second));
        assert_eq!(summary.state, CallState::Connected);
        assert_eq!(summary.state_changed_at, t(9));
        assert_eq!((summary.attempts, summary.redirects), (2, 1));
        assert!(summary.used_fallback);
    }

    #[test]
    fn news_counts_each_conversion_avoided_duplicate_and_end_once() {
        let campaign = CampaignId::generate();
        let buyer = BuyerId::generate();
        let mut record = call(campaign);
        let arrived = CallSummary::of(&record);
        assert_eq!(
            arrived.news_since(None),
            CallNews {
                started: true,
                ..CallNews::default()
            }
        );

        record.avoided_duplicates([BuyerId::generate(), BuyerId::generate()]);
        record.begin_attempt(
            buyer,
            campaign,
            AttemptKind::Buyer,
            Some(false),
            Timestamp::UNIX_EPOCH,
        );
        let dialing = CallSummary::of(&record);
        assert_eq!(dialing.news_since(Some(&arrived)).duplicates_avoided, 2);
        assert_eq!(dialing.news_since(Some(&dialing)), CallNews::default());

        record.attempt_ended(
            1,
            DialStatus::Completed,
            90,
            Some(false),
            60,
            Timestamp::UNIX_EPOCH,
        );
        record.hung_up(Timestamp::UNIX_EPOCH);
        let ended = CallSummary::of(&record);
        let news = ended.news_since(Some(&dialing));
        assert!(news.converted);
        assert_eq!(news.ended, Some((Some(Outcome::Connected), None)));
        // A late callback on an ended call is no news.
        assert_eq!(ended.news_since(Some(&ended)), CallNews::default());
    }

    #[test]
    fn a_mean_needs_something_to_average() {
        assert_eq!(mean_ms(0, 0), None);
        assert_eq!(mean_ms(3_000, 2), Some(1_500));
    }
}
