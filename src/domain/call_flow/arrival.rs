//! A call's arrival: a first webhook (or a redirect) finds its campaign, its publisher and its
//! RTB reservation, or is refused (an unknown number, a blocked caller); a request about a call
//! nobody here knows.

use super::{
    Asked, Input, Question, Reply, Request, Turn,
    answers::{drop_call, note_end},
    dialing::route,
};
use crate::domain::{
    call::{Answer, CallRecord, CallStatus, Caller, DropReason, Outcome},
    capacity::{Leg, LoadChange},
    geo::CallerPlace,
    phone::E164,
    plan::{BuyerId, CampaignId},
    rtb::Claimant,
    timeline::Event,
};

/// The slot a request says is free, read from the request alone.
pub(super) fn ended_without_record(request: Request<'_>) -> Option<LoadChange> {
    let leg = |attempt: u32| Leg {
        call: request.sid.clone(),
        attempt,
    };
    match request.input {
        Input::DialEnded { attempt, .. } => Some(LoadChange::Released(leg(*attempt))),
        Input::LegStatus { attempt, status, .. } if status.is_some_and(CallStatus::is_final) => {
            Some(LoadChange::Released(leg(*attempt)))
        }
        Input::CallStatus { status, .. } if status.is_some_and(CallStatus::is_final) => {
            Some(LoadChange::CallEnded(request.sid.clone()))
        }
        _ => None,
    }
}

/// A request for a call nobody here knows: a first webhook starts it; anything else is about a
/// call whose record is gone (or never was).
pub(super) fn arrive_unknown(
    turn: &mut Turn<'_>,
    request: Request<'_>,
) -> Asked<(Option<CallRecord>, Answer)> {
    match request.input {
        Input::Incoming { .. } | Input::Fallback { .. } => arrive(turn, request, None),
        // Nothing stored: start from what the provider tells us and route there.
        Input::Redirected { campaign } => arrive(turn, request, Some(*campaign)),
        Input::DialEnded {
            status, call_over, ..
        } => {
            if status.connected() || *call_over {
                turn.warn("a dial ended for a call with no record; nothing is left to route");
                return Ok((None, Answer::Hangup));
            }
            // The database lost the call mid-way: routing it afresh by the number dialed beats
            // hanging up on the caller.
            turn.warn("a dial ended for a call with no record; routing it afresh");
            arrive(turn, request, None)
        }
        Input::TimedOut | Input::Settle => Ok((None, Answer::Acknowledge)),
        Input::LegStatus { .. }
        | Input::CallStatus { .. }
        | Input::Recorded { .. }
        | Input::Detected { .. } => {
            turn.warn("a status callback for an unknown call: nothing is stored");
            Ok((None, Answer::Acknowledge))
        }
        Input::Whisper { .. } | Input::Screened { .. } => {
            // A buyer's leg of a call nobody here knows: it is not put through to anyone.
            turn.warn("a whisper callback for an unknown call; the buyer's leg is hung up");
            Ok((None, Answer::Hangup))
        }
    }
}

/// A new call: find its campaign by the number dialed (or the redirect's target) and route it.
pub(super) fn arrive(
    turn: &mut Turn<'_>,
    request: Request<'_>,
    campaign: Option<CampaignId>,
) -> Asked<(Option<CallRecord>, Answer)> {
    let (from, to) = (request.params.text("From"), request.params.text("To"));
    let caller = Caller::from_provider(from);
    let mut record = CallRecord::new(request.sid.clone(), caller, to.to_owned(), turn.now);
    record.caller_state = CallerPlace::of(&record.caller, request.params.get("FromState")).state;
    let dialed = E164::of_called(to);
    let mut campaign = campaign.or_else(|| Some(turn.plan.campaign_for_number(dialed.as_ref()?)?.id));
    if campaign.is_none()
        && let Some(dialed) = &dialed
        && !turn.answered_elsewhere
    {
        // Unknown here, perhaps only for now: a campaign created on another node a moment ago.
        // Before refusing the call, the plan is checked against the store.
        if let Reply::Replanned(plan) = turn.ask(|| Question::Replan)? {
            turn.plan = plan.clone();
        }
        campaign = turn.plan.campaign_for_number(dialed).map(|c| c.id);
    }
    let Some(campaign) = campaign else {
        if turn.answered_elsewhere {
            // Told the explicit end, not rejected: the record says what the caller got.
            let answer = drop_call(turn, &mut record, DropReason::Overloaded);
            return Ok((Some(record), answer));
        }
        record.end(Outcome::Rejected, Some(DropReason::UnknownNumber), turn.now);
        note_end(turn, &record);
        return Ok((Some(record), Answer::Reject));
    };
    let entered = turn.plan.campaign(campaign);
    record.publisher_id = turn.plan.publisher_of_number(dialed.as_ref(), entered);
    let blocked = (entered.zip(record.caller.number()))
        .and_then(|(campaign, caller)| turn.plan.blocker(campaign, caller))
        .cloned();
    if let Some(blocked) = blocked
        && !turn.answered_elsewhere
    {
        // Refused before any buyer hears of it (and before it is answered, so nobody pays),
        // naming the entry that refused it.
        record.enter_campaign(entered.and_then(|c| c.company_id), campaign);
        turn.note(Event::Blocked(blocked));
        record.end(Outcome::Blocked, None, turn.now);
        note_end(turn, &record);
        return Ok((Some(record), Answer::Blocked));
    }
    let answer = enter_and_route(turn, &mut record, campaign)?;
    Ok((Some(record), answer))
}

pub(super) fn enter_and_route(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    campaign: CampaignId,
) -> Asked<Answer> {
    let plan = turn.plan.clone();
    let Some(campaign) = plan.campaign(campaign) else {
        // The campaign was deleted while the call was on its way there.
        return Ok(drop_call(turn, record, DropReason::NoBuyer));
    };
    record.enter_campaign(campaign.company_id, campaign.id);
    let reserved = claim_reservation(turn, record, campaign.id)?;
    route(turn, record, campaign, reserved)
}

/// The buyer an RTB bid reserved for this caller in this campaign, if the bid is still live and
/// the call is its publisher's (see [`Claimant`]): it is claimed now, by this call, which is
/// from then on the publisher's that pinged.
pub(super) fn claim_reservation(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    campaign: CampaignId,
) -> Asked<Option<BuyerId>> {
    // A call that ends here would lose a reservation it claimed to a later call.
    let Some(caller) = record.caller.number().filter(|_| !turn.answered_elsewhere) else {
        return Ok(None);
    };
    // The call is the publisher's whose number it dialed, if any: it takes only that
    // publisher's bid (on a number given to nobody, a bid that sent the caller to such a one).
    let claimant = match record.publisher_id {
        Some(publisher) => Claimant::Publisher(publisher),
        None => Claimant::Nobody {
            numbers: (turn.plan.campaign(campaign))
                .map(|c| turn.plan.numbers_of_nobody(c).cloned().collect())
                .unwrap_or_default(),
        },
    };
    let claim = || Question::Claim {
        campaign,
        caller: caller.clone(),
        claimant: claimant.clone(),
    };
    let Reply::Claimed(Some(reservation)) = turn.ask(claim)? else {
        return Ok(None);
    };
    turn.note(Event::ReservationClaimed {
        reservation: reservation.uuid,
        buyer_id: reservation.buyer_id,
    });
    if reservation.publisher_id.is_some() {
        record.publisher_id = reservation.publisher_id;
        record.bid_payout = Some(reservation.payout);
    }
    Ok(Some(reservation.buyer_id))
}
