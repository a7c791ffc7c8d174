//! A live call's decisions as a pure state machine: one provider request (or the reaper's
//! timeout) applied to the call as it stands gives the answer and the effects to carry out.
//!
//! [`step`] never waits. Where a decision needs what only the indexes know (whom the caller
//! would be a duplicate for, which buyer is at a cap, a slot, an RTB reservation, a
//! publisher's payout) it stops with that [`Question`]; the call's actor asks, adds the
//! [`Reply`] to the [`Facts`] and steps again from the start. The same call, request and facts
//! always ask the same questions in the same order, so a step replays the replies it was given
//! and goes one question further. Some questions change what they ask (a slot held, a
//! reservation claimed, a payout marked): each is asked once, its reply replayed after.

use std::{
    collections::{HashMap, HashSet},
    slice,
    sync::Arc,
};

use jiff::Timestamp;

use self::{
    answers::{current_answer, note_end},
    arrival::{arrive_unknown, ended_without_record, enter_and_route},
    blind::{Blind, skeleton},
    dialing::{DialEnd, dial_ended, leg_status},
    screening::{detected, screened, whisper},
    settlement::{recorded, settle_from_leg, settle_publisher},
};
use super::{
    call::{Answer, CallRecord, CallSid, CallStatus, Conversion, Trail},
    capacity::{Block, Leg, LoadChange, load_changes},
    dedupe::{Rule, Touched},
    form::FormParams,
    ids::IdSeed,
    payout::PublisherPayout,
    phone::E164,
    plan::{Buyer, BuyerId, CampaignId, PublisherId, Record},
    postback::{Postback, events_of, postbacks_for},
    routing::RoutingPlan,
    rtb::{Claimant, Reservation},
    timeline::{Event, TimelineEntry},
};

mod answers;
mod arrival;
pub mod blind;
mod dialing;
mod input;
mod screening;
mod settlement;
#[cfg(test)]
mod tests;

pub use self::input::{Input, RecordingReport};

/// One request for one call, as the state machine reads it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub sid: &'a CallSid,
    pub input: &'a Input,
    /// The endpoint it arrived on and every parameter, for the call's timeline (and, for a call
    /// that must start from it, `From`, `To` and `FromState`).
    pub endpoint: &'static str,
    pub params: &'a FormParams,
    /// What the request's URL says of the call (see [`Trail`]), if Switchboard wrote one there.
    pub trail: Option<&'a Trail>,
}

/// What a step knows besides the call and the request.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: Timestamp,
    /// Where the ids the step hands out (its postbacks') come from.
    pub ids: IdSeed,
    pub plan: Arc<RoutingPlan>,
    /// The request was answered without the call's actor (past the decision budget), with the
    /// explicit end: that end is what the call records, whatever routing would have done.
    pub answered_elsewhere: bool,
    /// Where the draws between buyers of equal priority come from.
    pub routing_seed: u64,
    /// The call's stored record could not be read in time: the record given (or, if none, one
    /// built from the request and its trail) may know less than the store. See [`blind`].
    pub blind: bool,
    /// The call as the store held it before what was decided without it was merged in: what
    /// changed since is still to be told (postbacks).
    pub news_since: Option<Arc<CallRecord>>,
    /// The replies to the questions asked so far, in order.
    pub replies: Vec<Reply>,
}

/// What a step needs to know, or to have done, before it can go on.
#[derive(Debug, Clone)]
pub enum Question {
    /// Free this slot, which the request says is free, of a call nobody here knows, before
    /// routing it afresh takes new ones.
    Free(LoadChange),
    /// The plan as the store holds it now: a number unknown here may belong to a campaign
    /// created on another node a moment ago.
    Replan,
    /// Claim the caller's live RTB reservation in the campaign that `claimant` may claim, if
    /// there is one.
    Claim {
        campaign: CampaignId,
        caller: E164,
        claimant: Claimant,
    },
    /// Which of the buyers these rules are of would take a call from `caller` as a duplicate.
    Duplicates { caller: E164, rules: Vec<Rule> },
    /// Which of `buyers` (each with a cap) are at a cap.
    Blocked {
        plan: Arc<RoutingPlan>,
        buyers: Vec<BuyerId>,
    },
    /// Take `buyer`'s slot for `leg`.
    Hold { buyer: Box<Record<Buyer>>, leg: Leg },
    /// Whether this call may earn the publisher a payout (the caller's first payout to it inside
    /// the terms' window, or the call's own asked again), writing it if so. `caller` is `None`
    /// for a withheld caller, never a repeat.
    PayOnce {
        caller: Option<E164>,
        publisher: PublisherId,
        terms: PublisherPayout,
    },
}

/// The answer to a [`Question`]; `None` where nobody answered in time.
#[derive(Debug, Clone)]
pub enum Reply {
    Freed,
    Replanned(Arc<RoutingPlan>),
    Claimed(Option<Reservation>),
    Duplicates(Option<HashSet<BuyerId>>),
    Blocked(Option<HashMap<BuyerId, Block>>),
    Held(Option<Result<(), Block>>),
    PaidOnce(Option<bool>),
}

impl Question {
    /// Whom a call from `caller` would be a duplicate for among `buyers`. (An unknown caller is
    /// nobody's duplicate: nothing to ask.)
    pub fn duplicates(caller: &E164, buyers: &[&Record<Buyer>]) -> Self {
        Self::Duplicates {
            caller: caller.clone(),
            rules: buyers.iter().map(|b| Rule::of(b)).collect(),
        }
    }

    /// Which of `buyers` are at a cap, or `None` where none has a cap (nothing to ask).
    pub fn blocked(plan: &Arc<RoutingPlan>, buyers: &[&Record<Buyer>]) -> Option<Self> {
        let capped = capped_among(buyers);
        (!capped.is_empty()).then(|| Self::Blocked {
            plan: plan.clone(),
            buyers: capped,
        })
    }
}

/// Those of `buyers` with a cap.
fn capped_among(buyers: &[&Record<Buyer>]) -> Vec<BuyerId> {
    (buyers.iter())
        .filter(|b| b.spec.caps.is_limited())
        .map(|b| b.id)
        .collect()
}

/// Where a step got to.
#[derive(Debug)]
pub enum Step {
    /// It cannot go on without this answered.
    Ask(Question),
    Done(Box<Applied>),
}

/// The request applied.
#[derive(Debug)]
pub struct Applied {
    /// The call after it: `None` for a call nobody knows that the request did not start.
    pub record: Option<CallRecord>,
    pub answer: Answer,
    pub effects: Effects,
    /// A status callback seen before (a retry) or older news than the call has: nothing
    /// changed, nothing is to be saved.
    pub repeated: bool,
}

/// What a step asks to be done besides answering.
#[derive(Debug, Default)]
pub struct Effects {
    /// For the call's timeline, in order.
    pub timeline: Vec<TimelineEntry>,
    pub conversion: Option<Conversion>,
    /// For the de-dupe index at once, and the store.
    pub touched: Vec<Touched>,
    /// For the capacity index at once, and the store (and other nodes).
    pub load: Vec<LoadChange>,
    /// For the outbox, with the call's save.
    pub postbacks: Vec<Postback>,
    /// For the logs.
    pub warnings: Vec<String>,
}

/// Applies `request` to `record` (`None`: a call nobody here knows) with what is known.
pub fn step(record: Option<&CallRecord>, request: Request<'_>, facts: &Facts) -> Step {
    let blind = facts.blind.then(|| Blind {
        knows_tried: request.trail.is_some(),
    });
    let mut turn = Turn {
        now: facts.now,
        plan: facts.plan.clone(),
        answered_elsewhere: facts.answered_elsewhere,
        routing_seed: facts.routing_seed,
        ids: facts.ids,
        blind,
        replies: facts.replies.iter(),
        effects: Effects::default(),
    };
    let record = match record {
        Some(record) => Some(record.clone()),
        None if facts.blind => Some(skeleton(request, &facts.plan, facts.now)),
        None => None,
    };
    let told_since = facts.news_since.as_deref();
    match take(&mut turn, record, request, told_since) {
        Ok((record, answer, repeated)) => Step::Done(Box::new(Applied {
            record,
            answer,
            effects: turn.effects,
            repeated,
        })),
        Err(Unanswered(question)) => Step::Ask(question),
    }
}

/// A question the facts hold no reply to yet.
struct Unanswered(Question);

type Asked<T> = Result<T, Unanswered>;

struct Turn<'f> {
    now: Timestamp,
    plan: Arc<RoutingPlan>,
    answered_elsewhere: bool,
    routing_seed: u64,
    ids: IdSeed,
    /// Taken without the stored record (see [`blind`]).
    blind: Option<Blind>,
    replies: slice::Iter<'f, Reply>,
    effects: Effects,
}

impl<'f> Turn<'f> {
    fn note(&mut self, event: Event) {
        (self.effects.timeline).push(TimelineEntry { at: self.now, event });
    }

    fn warn(&mut self, warning: impl Into<String>) {
        self.effects.warnings.push(warning.into());
    }

    /// The reply to the question, or the question to be asked. (Built only then: a step taken
    /// again replays its replies without building their questions.)
    fn ask(&mut self, question: impl FnOnce() -> Question) -> Asked<&'f Reply> {
        self.replies.next().ok_or_else(|| Unanswered(question()))
    }

    fn duplicates(
        &mut self,
        caller: Option<&E164>,
        buyers: &[&Record<Buyer>],
    ) -> Asked<Option<HashSet<BuyerId>>> {
        let Some(caller) = caller else {
            return Ok(Some(HashSet::new()));
        };
        match self.ask(|| Question::duplicates(caller, buyers))? {
            Reply::Duplicates(duplicates) => Ok(duplicates.clone()),
            _ => Ok(None),
        }
    }

    fn blocked(&mut self, buyers: &[&Record<Buyer>]) -> Asked<Option<HashMap<BuyerId, Block>>> {
        if !buyers.iter().any(|b| b.spec.caps.is_limited()) {
            return Ok(Some(HashMap::new()));
        }
        let plan = self.plan.clone();
        let question = || Question::Blocked {
            plan,
            buyers: capped_among(buyers),
        };
        match self.ask(question)? {
            Reply::Blocked(blocked) => Ok(blocked.clone()),
            _ => Ok(None),
        }
    }
}

fn take(
    turn: &mut Turn<'_>,
    mut record: Option<CallRecord>,
    request: Request<'_>,
    told_since: Option<&CallRecord>,
) -> Asked<(Option<CallRecord>, Answer, bool)> {
    let seen_before = match (&mut record, request.input.callback_key()) {
        (Some(record), Some(key)) => !record.status_callbacks.insert(key),
        _ => false,
    };
    let recorded_before = match (&record, request.input) {
        (Some(record), Input::Recorded { recording, .. }) => {
            !record.is_recording_news(&recording.sid, recording.status)
        }
        _ => false,
    };
    if seen_before || recorded_before {
        // A status callback the provider retried (or sent twice), or older news than what was
        // applied: nothing changes.
        return Ok((record, Answer::Acknowledge, true));
    }
    if (record.is_none() || turn.blind.is_some())
        && let Some(ended) = ended_without_record(request)
    {
        // Nothing (or not all) is known here of a call whose leg or whole ended (its record
        // could not be read): its slots are freed all the same, before any routing afresh
        // takes new ones.
        turn.ask(|| Question::Free(ended))?;
    }
    let before = record.clone();
    let (mut record, answer) = apply(turn, record, request)?;
    if let Some(record) = &mut record {
        settle_publisher(turn, record)?;
        if *request.input == Input::Settle && told_since.is_none() && Some(&*record) == before.as_ref() {
            // Nothing was left to settle: nothing to save either.
            return Ok((Some(record.clone()), answer, true));
        }
        if !matches!(request.input, Input::TimedOut | Input::Settle) {
            // The request itself first in the timeline (written once the step is done, not on
            // every replay).
            let entry = TimelineEntry {
                at: turn.now,
                event: Event::Webhook {
                    endpoint: request.endpoint.to_owned(),
                    params: request.params.iter().cloned().collect(),
                },
            };
            turn.effects.timeline.insert(0, entry);
        }
        // What a blind turn changed is told once it is merged, from the merged call (see
        // `news_since`): a record that knows only part of the call would tell it wrong.
        let events = match turn.blind {
            Some(_) => Vec::new(),
            None => events_of(told_since.or(before.as_ref()), record),
        };
        if !events.is_empty() {
            let postbacks = postbacks_for(&turn.plan, record, &events, turn.now, turn.ids);
            turn.effects.postbacks.extend(postbacks);
        }
        // What routing gave back (holds never answered) after what the call's change frees.
        let given_back = std::mem::take(&mut turn.effects.load);
        turn.effects.load = load_changes(before.as_ref(), record, turn.now);
        turn.effects.load.extend(given_back);
        record.timeline_len += turn.effects.timeline.len() as u32;
    }
    Ok((record, answer, false))
}

fn apply(
    turn: &mut Turn<'_>,
    record: Option<CallRecord>,
    request: Request<'_>,
) -> Asked<(Option<CallRecord>, Answer)> {
    let Some(mut record) = record else {
        return arrive_unknown(turn, request);
    };
    let answer = match request.input {
        // A retried first webhook: the same answer again.
        Input::Incoming { .. } => current_answer(turn, &mut record)?,
        Input::Fallback { error_code } => {
            // The provider got no TwiML for this call a moment ago: whatever fits it now (the
            // buyer it was dialing, the next one, or its end), as a retry would get.
            turn.warn(format!("the provider fell back after an error ({error_code:?})"));
            current_answer(turn, &mut record)?
        }
        // Already there, or a buyer's leg is in flight (a redirect the call was never told to
        // follow, or a stale one): whatever fits the call as it stands.
        Input::Redirected { campaign }
            if record.campaign_id == Some(*campaign)
                || (record.current_attempt()).is_some_and(|a| a.status.is_none()) =>
        {
            current_answer(turn, &mut record)?
        }
        Input::Redirected { campaign } => enter_and_route(turn, &mut record, *campaign)?,
        Input::DialEnded {
            attempt,
            status,
            connected_seconds,
            call_over,
            bridged,
        } => {
            let ended = DialEnd {
                attempt: *attempt,
                // A leg screened out (or not bridged) did not connect the caller.
                status: (record.attempt(*attempt)).map_or(*status, |a| a.result_of(*status, *bridged)),
                connected_seconds: *connected_seconds,
                call_over: *call_over,
            };
            dial_ended(turn, &mut record, ended)?
        }
        Input::LegStatus {
            attempt,
            status,
            leg_seconds,
            at,
            ..
        } => {
            leg_status(turn, &mut record, *attempt, *status, *leg_seconds, *at);
            settle_from_leg(turn, &mut record)?;
            Answer::Acknowledge
        }
        Input::CallStatus { status, .. } => {
            if status.is_some_and(CallStatus::is_final) && !record.is_ended() {
                record.hung_up(turn.now);
                note_end(turn, &record);
            }
            settle_from_leg(turn, &mut record)?;
            Answer::Acknowledge
        }
        Input::Settle => Answer::Acknowledge,
        Input::TimedOut => {
            if !record.is_ended() {
                record.time_out(turn.now);
                note_end(turn, &record);
                turn.warn("no final callback came for the call: ended as timed out");
            }
            Answer::Acknowledge
        }
        Input::Whisper { attempt, answered_by } => {
            whisper(turn, &mut record, *attempt, answered_by.as_deref())
        }
        Input::Detected { attempt, answered_by } => {
            detected(turn, &mut record, *attempt, answered_by);
            Answer::Acknowledge
        }
        Input::Screened { attempt, digits } => screened(turn, &mut record, *attempt, digits),
        Input::Recorded { attempt, recording } => {
            recorded(turn, &mut record, *attempt, recording);
            Answer::Acknowledge
        }
    };
    Ok((Some(record), answer))
}
