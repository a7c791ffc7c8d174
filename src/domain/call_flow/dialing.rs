//! Dialing: the never-drop chain's next step (a buyer, the fallback, a redirect or the end), the
//! `<Dial>` it answers, the buyer's leg as it rings, answers and ends, and the dial's result.

use jiff::Timestamp;

use super::{
    Asked, Question, Reply, Turn,
    answers::{current_answer, drop_call, note_end},
    settlement::conversion,
};
use crate::domain::{
    call::{Answer, CallRecord, CallStatus, DialStatus, DropReason, Trail},
    capacity::{Block, Leg, LoadChange},
    dedupe::{Touch, Touched},
    dialing::{DialSettings, Screen},
    phone::E164,
    plan::{Buyer, BuyerId, Campaign, Record},
    routing::{Action, CallSituation, Known, RoutingPlan, random_for},
    timeline::Event,
};

/// A buyer's leg changed state, stamped when it happened by the provider (the request may come
/// late), unless its clock is so far from ours that it is not to be believed.
pub(super) fn leg_status(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    attempt: u32,
    status: Option<CallStatus>,
    leg_seconds: Option<u32>,
    at: Option<Timestamp>,
) {
    let believable = |at: &Timestamp| (turn.now.as_millisecond() - at.as_millisecond()).abs() <= 3_600_000;
    let at = at.filter(believable).unwrap_or(turn.now);
    if status.is_some_and(CallStatus::is_final) {
        record.leg_ended(attempt, leg_seconds, at);
    }
    let outcome = record.outcome;
    if status.is_some_and(CallStatus::answered)
        && record.leg_answered(attempt, at)
        && let Some(buyer_id) = record.attempt(attempt).map(|a| a.buyer_id)
    {
        turn.note(Event::Answered { attempt, buyer_id });
    }
    if record.outcome != outcome {
        note_end(turn, record);
    }
}

/// The never-drop chain, one step: the next buyer (first the one an RTB bid reserved, if any),
/// the fallback, a redirect or the end.
pub(super) fn route(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    campaign: &Record<Campaign>,
    reserved: Option<BuyerId>,
) -> Asked<Answer> {
    if turn.answered_elsewhere {
        return Ok(drop_call(turn, record, DropReason::Overloaded));
    }
    let plan = turn.plan.clone();
    let candidates: Vec<&Record<Buyer>> = plan.candidates(campaign).collect();
    // Without the stored record only buyers who take duplicates are dialed: nothing to ask.
    let duplicates = match turn.blind {
        Some(_) => None,
        None => turn.duplicates(record.caller.number(), &candidates)?,
    };
    let blocked = turn.blocked(&candidates)?;
    let known = Known {
        duplicates: duplicates.is_some(),
        caps: blocked.is_some(),
    };
    // Without a de-dupe or capacity answer in time, nobody can be dialed on a full decision.
    let mut in_haste = duplicates.is_none() || blocked.is_none();
    let (duplicates, mut blocked) = (duplicates.unwrap_or_default(), blocked.unwrap_or_default());
    let tried = record.tried();
    let number = match turn.blind {
        Some(_) => record.next_blind_attempt_number(),
        None => record.next_attempt_number(),
    };
    let leg = Leg {
        call: record.sid.clone(),
        attempt: number,
    };
    let mut random = random_for(turn.routing_seed, (&leg.call, leg.attempt));
    // Buyers whose hold was not answered in time.
    let mut unanswered = Vec::new();
    let decision = loop {
        let situation = CallSituation {
            at: turn.now,
            duplicates: &duplicates,
            blocked: &blocked,
            tried: &tried,
            visited: &record.visited,
            reserved,
            place: record.place(),
        };
        let decision = if let Some(blind) = turn.blind {
            plan.decide_blind(campaign, &situation, known, blind.knows_tried)
        } else if in_haste {
            plan.decide_in_haste(campaign, &situation, known)
        } else {
            plan.decide(campaign, &situation, &mut random)
        };
        let Action::Dial { buyer, .. } = decision.action else {
            break decision;
        };
        let Some(buyer) = plan.buyer(buyer) else {
            break decision;
        };
        let hold = || Question::Hold {
            buyer: Box::new(buyer.clone()),
            leg: leg.clone(),
        };
        match turn.ask(hold)? {
            Reply::Held(Some(Ok(()))) => break decision,
            // Another call took the buyer's last slot (or its cap's last room) since the counts
            // were read, perhaps on another node: decide again without it (each round rules one
            // more buyer out, so this ends).
            Reply::Held(Some(Err(block))) => {
                blocked.insert(buyer.id, *block);
            }
            // The slot cannot be taken in time: the fallback, or the end (a haste decision
            // never dials this buyer again, so this ends too).
            _ if in_haste => {
                unanswered.push(buyer.id);
                blocked.insert(buyer.id, Block::Concurrency);
            }
            _ => {
                unanswered.push(buyer.id);
                in_haste = true;
            }
        }
    };
    // A hold whose answer never came may have been taken all the same: given back unless its
    // buyer is the one dialed on this leg.
    let dialed = match decision.action {
        Action::Dial { buyer, .. } => Some(buyer),
        _ => None,
    };
    for buyer in unanswered.into_iter().filter(|b| Some(*b) != dialed) {
        turn.effects.load.push(LoadChange::Unheld {
            buyer,
            leg: leg.clone(),
        });
    }
    if turn.blind.is_some() {
        let action = &decision.action;
        turn.warn(format!(
            "decided without the stored record ({action:?}): the store did not give it in time"
        ));
    } else if decision.in_haste {
        let action = &decision.action;
        turn.warn(format!(
            "decided in haste ({action:?}): the indexes did not answer in time"
        ));
    }
    record.avoided_duplicates(decision.skipped_as_duplicates());
    let action = decision.action;
    turn.note(Event::Decision(decision));
    match action {
        Action::Dial { buyer, kind } => {
            let Some(buyer) = plan.buyer(buyer) else {
                return Ok(drop_call(turn, record, DropReason::NoBuyer));
            };
            // Unknown when the de-dupe index did not answer: settled when the dial ends.
            let duplicate = (record.caller.number())
                .and_then(|_| known.duplicates.then(|| duplicates.contains(&buyer.id)));
            let attempt = record
                .begin_attempt_numbered(number, buyer.id, campaign.id, kind, duplicate, turn.now)
                .number;
            if buyer.spec.screen != Screen::None {
                record.expect_screening(attempt);
            }
            Ok(dial(&plan, record, attempt, buyer))
        }
        Action::Redirect { campaign } => Ok(Answer::Redirect {
            campaign,
            trail: Trail::of(record),
        }),
        Action::End { reason } => Ok(drop_call(turn, record, reason)),
    }
}

/// The `<Dial>` of attempt `attempt` to `buyer`, with what the buyer sees and hears in the
/// attempt's campaign.
pub(super) fn dial(plan: &RoutingPlan, record: &CallRecord, attempt: u32, buyer: &Record<Buyer>) -> Answer {
    let dialed = record.attempt(attempt);
    let campaign = dialed.and_then(|a| plan.campaign(a.campaign_id));
    let tracking_number = E164::of_called(&record.called);
    let screened = dialed.is_some_and(|a| a.screening.is_some());
    let settings = DialSettings::of(
        buyer,
        campaign,
        &record.caller,
        tracking_number.as_ref(),
        screened,
    );
    Answer::Dial {
        attempt,
        destination: buyer.spec.destination.clone(),
        ring_timeout_seconds: buyer.spec.ring_timeout_seconds.get(),
        send_digits: buyer.spec.send_digits.as_ref().map(|d| d.as_str().to_owned()),
        sip_auth: buyer.spec.sip_auth.clone(),
        settings,
        trail: Trail::of(record),
    }
}

/// A dial's action callback, as the state machine reads it.
pub(super) struct DialEnd {
    pub(super) attempt: u32,
    pub(super) status: DialStatus,
    pub(super) connected_seconds: u32,
    /// The caller hung up: the parent call is over.
    pub(super) call_over: bool,
}

pub(super) fn dial_ended(turn: &mut Turn<'_>, record: &mut CallRecord, ended: DialEnd) -> Asked<Answer> {
    let plan = turn.plan.clone();
    let Some(dialed) = record.attempt(ended.attempt).cloned() else {
        turn.note(Event::Ignored {
            reason: format!("attempt {} was never made", ended.attempt),
        });
        return current_answer(turn, record);
    };
    if dialed.status.is_some() {
        // A retried action callback: nothing happens twice.
        return current_answer(turn, record);
    }
    let buyer = plan.buyer(dialed.buyer_id);
    let connected = ended.status.connected();
    // Settled now, at the end of the leg: a conversion by another call in the meantime counts.
    let duplicate = match (connected, buyer, record.caller.number()) {
        (true, Some(buyer), Some(caller)) => match turn.duplicates(Some(caller), &[buyer])? {
            Some(duplicates) => Some(duplicates.contains(&buyer.id)),
            // Not known now: as it was known when dialed.
            None => dialed.duplicate,
        },
        (true, _, None) => None,
        _ => dialed.duplicate,
    };
    // A buyer that reports its conversions converts none on seconds alone.
    let conversion_seconds = buyer.map_or(u32::MAX, |b| {
        (b.spec.conversion_rule).seconds_at_dial_end(b.spec.conversion_seconds.get())
    });
    let outcome = record.outcome;
    let Some(settled) = record.attempt_ended(
        ended.attempt,
        ended.status,
        ended.connected_seconds,
        duplicate,
        conversion_seconds,
        turn.now,
    ) else {
        return current_answer(turn, record);
    };
    turn.note(Event::DialEnded {
        attempt: ended.attempt,
        buyer_id: settled.buyer_id,
        status: ended.status,
        connected_seconds: ended.connected_seconds,
        duplicate: settled.duplicate,
        converted: settled.converted,
    });
    if connected && let Some(buyer) = buyer {
        if let Some(caller) = record.caller.number() {
            let touch = if settled.converted {
                Touch::Converted
            } else {
                Touch::Connected
            };
            turn.effects.touched = Touched::with_buyer(caller, buyer, touch, turn.now);
        }
        if settled.converted {
            turn.effects.conversion = Some(conversion(record, &settled, buyer, turn.now));
        }
    }

    let is_current = record
        .current_attempt()
        .is_some_and(|a| a.number == ended.attempt);
    if connected || ended.call_over || record.is_ended() || !is_current {
        // The conversation is over, or the caller is gone, or this was an older attempt: no
        // dialing on. Answering `<Hangup/>` ends the call for certain, so it is ended here
        // rather than left to a status callback that may never come.
        if connected || ended.call_over {
            record.hung_up(turn.now);
        }
        if record.outcome != outcome {
            note_end(turn, record);
        }
        return if record.is_ended() {
            Ok(Answer::Hangup)
        } else {
            current_answer(turn, record)
        };
    }
    // Not connected, caller still there: on to the next buyer.
    route_on(turn, record)
}

/// Routes the call on in the campaign it is in (the end, if that campaign is gone).
pub(super) fn route_on(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<Answer> {
    let plan = turn.plan.clone();
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(turn, record, campaign, None),
        None => Ok(drop_call(turn, record, DropReason::NoBuyer)),
    }
}
