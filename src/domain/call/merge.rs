//! A record built without the stored one, merged into what the store holds.
//!
//! When a process cannot read a call's record in time (after a restart, on another node, while
//! the store is slow or down), it answers on what the request and its [`Trail`](super::Trail)
//! say, and the record it builds knows only that. Such a record is never written over the
//! stored one: it is merged into it, as facts that only add.

use super::{Attempt, CallRecord, DialStatus, Outcome};

impl CallRecord {
    /// What the store holds (`self`) with what `blind`, a record of the same call built without
    /// it, knows:
    ///
    /// - attempts the store lacks are added; an attempt both hold (the same number, the same
    ///   buyer) keeps every result the store has and takes from `blind` only what it lacks;
    /// - a conversion, a payout, a publisher are only ever set, never cleared;
    /// - the call's end is taken if the store has none (a call that reached a buyer is
    ///   connected, whoever saw it);
    /// - campaigns visited, buyers dialed or skipped as duplicates, status callbacks seen,
    ///   recordings and merged turns are united.
    ///
    /// The timeline is the store's business: it appends the blind record's entries after its
    /// own (see `timeline_len`, left as stored here).
    pub fn merged_with(&self, blind: &CallRecord) -> CallRecord {
        let mut merged = self.clone();
        for theirs in &blind.attempts {
            match merged.attempts.iter_mut().find(|a| a.number == theirs.number) {
                Some(ours) if ours.buyer_id == theirs.buyer_id => fill_in(ours, theirs),
                // Numbers are never shared between two buyers' dials (blind attempts are
                // numbered apart): the stored one stands.
                Some(_) => {}
                None => merged.attempts.push(theirs.clone()),
            }
        }
        merged.attempts.sort_by_key(|a| a.number);
        for campaign in &blind.visited {
            if !merged.visited.contains(campaign) {
                merged.visited.push(*campaign);
                // It went on (by a redirect) to a campaign the store never saw.
                merged.campaign_id = Some(*campaign);
                merged.company_id = merged.company_id.or(blind.company_id);
            }
        }
        merged.company_id = merged.company_id.or(blind.company_id);
        merged.campaign_id = merged.campaign_id.or(blind.campaign_id);
        merged.avoided_duplicates(blind.duplicate_buyers.iter().copied());
        let dialed = merged.tried();
        for buyer in &blind.dialed_before {
            if !dialed.contains(buyer) && !merged.dialed_before.contains(buyer) {
                merged.dialed_before.push(*buyer);
            }
        }
        let in_attempts: Vec<_> = merged.attempts.iter().map(|a| a.buyer_id).collect();
        merged.dialed_before.retain(|buyer| !in_attempts.contains(buyer));
        merged
            .status_callbacks
            .extend(blind.status_callbacks.iter().copied());
        merged.blind_turns.extend(blind.blind_turns.iter().copied());
        for recording in &blind.recordings {
            merged.add_recording(recording.clone());
        }
        merged.caller_state = merged.caller_state.or(blind.caller_state);
        merged.publisher_id = merged.publisher_id.or(blind.publisher_id);
        merged.publisher_duplicate = merged.publisher_duplicate.or(blind.publisher_duplicate);
        merged.publisher_payout = merged.publisher_payout.or(blind.publisher_payout);
        merged.bid_payout = merged.bid_payout.or(blind.bid_payout);
        merged.settle_state(self, blind);
        merged
    }

    /// Where the merged call stands: ended if either ended, else as the record that holds its
    /// latest attempt says.
    fn settle_state(&mut self, stored: &CallRecord, blind: &CallRecord) {
        let reached_a_buyer = self.connected_attempt().is_some();
        if stored.is_ended() {
            if reached_a_buyer && self.outcome == Some(Outcome::Abandoned) {
                self.outcome = Some(Outcome::Connected);
            }
            return;
        }
        if blind.is_ended() {
            let outcome = match blind.outcome {
                Some(Outcome::Connected | Outcome::Abandoned) | None if reached_a_buyer => Outcome::Connected,
                Some(Outcome::Connected | Outcome::Abandoned) | None => Outcome::Abandoned,
                Some(other) => other,
            };
            self.outcome = Some(outcome);
            self.drop_reason = blind.drop_reason;
            self.ended_at = blind.ended_at;
            self.state = blind.state;
            self.state_changed_at = blind.state_changed_at;
            return;
        }
        let latest = |record: &CallRecord| record.attempts.last().map_or(0, |a| a.number);
        if latest(blind) > latest(stored) {
            self.state = blind.state;
            self.state_changed_at = blind.state_changed_at;
        }
    }
}

/// An attempt's results that `ours` lacks, taken from `theirs`.
fn fill_in(ours: &mut Attempt, theirs: &Attempt) {
    ours.duplicate = ours.duplicate.or(theirs.duplicate);
    if ours.status.is_none() {
        ours.status = theirs.status;
        ours.connected_seconds = ours.connected_seconds.or(theirs.connected_seconds);
    }
    ours.converted |= theirs.converted && ours.status.is_none_or(DialStatus::connected);
    ours.answered_at = ours.answered_at.or(theirs.answered_at);
    ours.ended_at = ours.ended_at.or(theirs.ended_at);
    ours.leg_seconds = ours.leg_seconds.or(theirs.leg_seconds);
    if let Some(picked_up) = theirs.picked_up_at {
        ours.picked_up(picked_up);
    }
    ours.bridged_at = ours.bridged_at.or(theirs.bridged_at);
    ours.bridged_seconds = ours.bridged_seconds.or(theirs.bridged_seconds);
    let settled =
        |screening: Option<super::Screening>| screening.is_some_and(|s| s != super::Screening::Pending);
    if !settled(ours.screening) && settled(theirs.screening) {
        ours.screening = theirs.screening;
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};
    use uuid::Uuid;

    use super::*;
    use crate::{
        domain::{
            call::{AttemptKind, CallSid, CallState, CallbackKey, Caller, DropReason},
            plan::{BuyerId, CampaignId},
        },
        fresh::Generate,
    };

    struct Call {
        a: BuyerId,
        b: BuyerId,
        f: BuyerId,
        main: CampaignId,
        at: Timestamp,
    }

    impl Call {
        fn new() -> Self {
            Self {
                a: BuyerId::generate(),
                b: BuyerId::generate(),
                f: BuyerId::generate(),
                main: CampaignId::generate(),
                at: "2026-12-07T12:00:00Z".parse().unwrap(),
            }
        }

        fn record(&self) -> CallRecord {
            let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
            let mut record = CallRecord::new(
                sid,
                Caller::from_provider("+14155550177"),
                "+14155550100".into(),
                self.at,
            );
            record.enter_campaign(None, self.main);
            record
        }

        /// As stored: A dialed first and unanswered, then B ringing.
        fn stored(&self) -> CallRecord {
            let mut record = self.record();
            record.begin_attempt(self.a, self.main, AttemptKind::Buyer, Some(false), self.at);
            record.attempt_ended(1, DialStatus::NoAnswer, 0, Some(false), 60, self.at);
            record.begin_attempt(self.b, self.main, AttemptKind::Buyer, Some(false), self.at);
            record.timeline_len = 7;
            record
                .status_callbacks
                .insert(CallbackKey { leg: 1, sequence: 3 });
            record
        }

        /// Built without it, from attempt 2's action: B did not answer, the fallback F rings.
        fn blind(&self) -> CallRecord {
            let later = self.at + SignedDuration::from_secs(30);
            let mut record = self.record();
            record.dialed_before = vec![self.a];
            record.begin_attempt_numbered(2, self.b, self.main, AttemptKind::Buyer, None, later);
            record.attempt_ended(2, DialStatus::NoAnswer, 0, None, 60, later);
            let number = record.next_blind_attempt_number();
            record.begin_attempt_numbered(number, self.f, self.main, AttemptKind::Fallback, None, later);
            record
                .status_callbacks
                .insert(CallbackKey { leg: 2, sequence: 1 });
            record.blind_turns.insert(Uuid::from_u128(1));
            record
        }
    }

    #[test]
    fn a_blind_record_adds_to_the_stored_one_and_takes_nothing_away() {
        let call = Call::new();
        let (stored, blind) = (call.stored(), call.blind());
        let merged = stored.merged_with(&blind);
        let dials: Vec<_> = merged
            .attempts
            .iter()
            .map(|a| (a.number, a.buyer_id, a.status))
            .collect();
        assert_eq!(
            dials,
            [
                (1, call.a, Some(DialStatus::NoAnswer)),
                (2, call.b, Some(DialStatus::NoAnswer)),
                (1001, call.f, None)
            ]
        );
        // What the store knew of attempt 2 (its dial time, its prediction) stays.
        assert_eq!(merged.attempts[1].started_at, call.at);
        assert_eq!(merged.attempts[1].duplicate, Some(false));
        assert_eq!(merged.state, CallState::Dialing);
        assert!(merged.dialed_before.is_empty(), "A is among the attempts");
        assert_eq!(merged.tried().len(), 3);
        assert_eq!(merged.status_callbacks.len(), 2);
        assert_eq!(merged.blind_turns.len(), 1);
        assert_eq!((merged.started_at, merged.timeline_len), (call.at, 7));
        // Merging again changes nothing more.
        assert_eq!(merged.merged_with(&blind), merged);
    }

    #[test]
    fn a_stored_result_is_never_overwritten_nor_a_conversion_or_payout_cleared() {
        let call = Call::new();
        let mut stored = call.stored();
        stored.attempt_ended(2, DialStatus::Completed, 120, Some(false), 60, call.at);
        stored.publisher_payout = Some(crate::domain::money::Money::parse("5.00").unwrap());
        stored.hung_up(call.at);
        let mut blind = call.record();
        blind.begin_attempt_numbered(2, call.b, call.main, AttemptKind::Buyer, None, call.at);
        // The retried action, read without the store, with a shorter duration.
        blind.attempt_ended(2, DialStatus::Completed, 10, Some(true), 60, call.at);
        blind.hung_up(call.at + SignedDuration::from_secs(5));
        let merged = stored.merged_with(&blind);
        let second = &merged.attempts[1];
        assert_eq!(
            (second.connected_seconds, second.converted, second.duplicate),
            (Some(120), true, Some(false))
        );
        assert_eq!(merged.publisher_payout, stored.publisher_payout);
        assert_eq!(
            (merged.outcome, merged.ended_at),
            (stored.outcome, stored.ended_at)
        );
    }

    #[test]
    fn an_end_the_store_lacks_is_taken_and_judged_on_every_attempt() {
        let call = Call::new();
        let mut stored = call.stored();
        stored.leg_answered(2, call.at);
        // The caller's hang-up, heard without the store (which knew B answered): connected.
        let mut blind = call.record();
        blind.hung_up(call.at + SignedDuration::from_secs(90));
        let merged = stored.merged_with(&blind);
        assert_eq!(
            (merged.state, merged.outcome),
            (CallState::Ended, Some(Outcome::Connected))
        );
        assert_eq!(merged.ended_at, blind.ended_at);
        // An explicit end stays what it was.
        let mut dropped = call.record();
        dropped.end(Outcome::Dropped, Some(DropReason::Overloaded), call.at);
        let merged = call.stored().merged_with(&dropped);
        assert_eq!(
            (merged.outcome, merged.drop_reason),
            (Some(Outcome::Dropped), Some(DropReason::Overloaded))
        );
    }

    #[test]
    fn a_redirect_taken_blind_moves_the_call_to_its_campaign() {
        let call = Call::new();
        let overflow = CampaignId::generate();
        let mut blind = call.blind();
        blind.enter_campaign(None, overflow);
        let merged = call.stored().merged_with(&blind);
        assert_eq!(merged.visited, [call.main, overflow]);
        assert_eq!(merged.campaign_id, Some(overflow));
    }

    #[test]
    fn a_pending_screening_takes_the_blind_verdict_and_a_settled_one_keeps_its_own() {
        use crate::domain::dialing::Screening;
        let call = Call::new();
        let mut stored = call.stored();
        stored.expect_screening(2);
        let mut blind = call.blind();
        blind.expect_screening(2);
        blind.attempts[0].screening = Some(Screening::Accepted);
        let merged = stored.merged_with(&blind);
        assert_eq!(merged.attempts[1].screening, Some(Screening::Accepted));
        let mut refused = stored.clone();
        refused.attempts[1].screening = Some(Screening::Refused);
        assert_eq!(
            refused.merged_with(&blind).attempts[1].screening,
            Some(Screening::Refused)
        );
    }
}
