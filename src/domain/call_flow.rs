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

use super::{
    call::{
        Answer, Attempt, CallRecord, CallSid, CallState, CallStatus, CallbackKey, Caller, Conversion,
        DialStatus, DropReason, Outcome, Recording, RecordingStatus,
    },
    capacity::{Block, Leg, LoadChange, load_changes},
    dedupe::{Rule, Scope, Touch, Touched},
    dialing::{DialSettings, Screen, Screening, whisper_for},
    form::FormParams,
    geo::CallerPlace,
    money::Money,
    payout::{PublisherPayout, Settlement},
    phone::E164,
    plan::{Buyer, BuyerId, Campaign, CampaignId, PublisherId, Record},
    postback::{Postback, events_of, postbacks_for},
    routing::{Action, CallSituation, Known, RoutingPlan, random_for},
    rtb::Reservation,
    timeline::{Event, TimelineEntry},
};

/// What the provider said (or the reaper found) about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The call arrived on a tracking number.
    Incoming { from: String, to: String },
    /// The provider could not get TwiML from Switchboard (an error, a timeout) and asks the
    /// number's fallback URL instead: the call goes on from where it stands, or starts.
    Fallback { error_code: Option<String> },
    /// A `<Dial>` ended: its action URL.
    DialEnded {
        attempt: u32,
        status: DialStatus,
        connected_seconds: u32,
        /// The caller had hung up (the request's `CallStatus` is final).
        call_over: bool,
        /// `DialBridged`, when the provider sends it: whether the buyer's leg was put through
        /// to the caller.
        bridged: Option<bool>,
    },
    /// The buyer of an attempt picked up, and the provider asks what to play it before the
    /// caller is put through (the `<Number url>` whisper document). With answering machine
    /// detection, it says who answered (`AnsweredBy`).
    Whisper {
        attempt: u32,
        answered_by: Option<String>,
    },
    /// Answering machine detection's verdict on an attempt's leg (its `amdStatusCallback`).
    Detected { attempt: u32, answered_by: String },
    /// The buyer answered the press-1 prompt (`Digits`, empty when it pressed nothing).
    Screened { attempt: u32, digits: String },
    /// A recording of an attempt's `<Dial>` changed (its recording status callback).
    Recorded {
        attempt: u32,
        recording: RecordingReport,
    },
    /// A buyer's leg changed state: its status callback.
    LegStatus {
        attempt: u32,
        /// `None` if the provider sent none it documents.
        status: Option<CallStatus>,
        /// `SequenceNumber`, when the provider sends it.
        sequence: Option<u32>,
        /// `CallDuration` of a leg that ended, when the provider sends it.
        leg_seconds: Option<u32>,
        /// `Timestamp`: when it happened, as the provider stamped it.
        at: Option<Timestamp>,
    },
    /// The provider followed a `<Redirect>` into another campaign.
    Redirected { campaign: CampaignId },
    /// The parent call's status callback.
    CallStatus {
        /// `None` if the provider sent none it documents.
        status: Option<CallStatus>,
        sequence: Option<u32>,
    },
    /// Not a webhook: the reaper found the call past the longest a call can last.
    TimedOut,
}

impl Input {
    /// What tells this status callback from a retry of it, if the provider numbered it.
    pub fn callback_key(&self) -> Option<CallbackKey> {
        match *self {
            Self::CallStatus { sequence, .. } => Some(CallbackKey {
                leg: 0,
                sequence: sequence?,
            }),
            Self::LegStatus {
                attempt, sequence, ..
            } => Some(CallbackKey {
                leg: attempt,
                sequence: sequence?,
            }),
            _ => None,
        }
    }

    /// The answer when no call actor can give one: nothing is decided, nobody is put through.
    pub fn answer_without_a_decision(&self) -> Answer {
        match self {
            Self::LegStatus { .. }
            | Self::CallStatus { .. }
            | Self::Recorded { .. }
            | Self::Detected { .. } => Answer::Acknowledge,
            // A buyer's leg nobody can vouch for is not put through.
            Self::Whisper { .. } | Self::Screened { .. } => Answer::Hangup,
            // The conversation is over, or the caller gone.
            Self::DialEnded {
                status, call_over, ..
            } if status.connected() || *call_over => Answer::Hangup,
            // A dial just ended, the caller still there: nobody can route them now.
            Self::DialEnded { .. } => Answer::End,
            Self::Incoming { .. } | Self::Redirected { .. } | Self::Fallback { .. } => Answer::End,
            Self::TimedOut => Answer::Acknowledge,
        }
    }
}

/// A recording status callback's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingReport {
    pub sid: String,
    pub url: String,
    pub status: RecordingStatus,
    pub duration_seconds: Option<u32>,
    pub channels: Option<u32>,
}

/// One request for one call, as the state machine reads it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub sid: &'a CallSid,
    pub input: &'a Input,
    /// The endpoint it arrived on and every parameter, for the call's timeline (and, for a call
    /// that must start from it, `From`, `To` and `FromState`).
    pub endpoint: &'static str,
    pub params: &'a FormParams,
}

/// What a step knows besides the call and the request.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: Timestamp,
    pub plan: Arc<RoutingPlan>,
    /// The request was answered without the call's actor (past the decision budget), with the
    /// explicit end: that end is what the call records, whatever routing would have done.
    pub answered_elsewhere: bool,
    /// Where the draws between buyers of equal priority come from.
    pub routing_seed: u64,
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
    /// Claim the caller's live RTB reservation in the campaign, if there is one.
    Claim { campaign: CampaignId, caller: E164 },
    /// Which of the buyers these rules are of would take a call from `caller` as a duplicate.
    Duplicates { caller: E164, rules: Vec<Rule> },
    /// Which of `buyers` (each with a cap) are at a cap.
    Blocked {
        plan: Arc<RoutingPlan>,
        buyers: Vec<BuyerId>,
    },
    /// Take `buyer`'s slot for `leg`.
    Hold { buyer: Box<Record<Buyer>>, leg: Leg },
    /// Whether this is the caller's first payout to the publisher inside the terms' window,
    /// marking it if so.
    PayOnce {
        caller: E164,
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
    let mut turn = Turn {
        now: facts.now,
        plan: facts.plan.clone(),
        answered_elsewhere: facts.answered_elsewhere,
        routing_seed: facts.routing_seed,
        replies: facts.replies.iter(),
        effects: Effects::default(),
    };
    match take(&mut turn, record.cloned(), request) {
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
    if record.is_none()
        && let Some(ended) = ended_without_record(request)
    {
        // Nothing is known here of a call whose leg or whole ended (its record could not be
        // read): its slots are freed all the same, before any routing afresh takes new ones.
        turn.ask(|| Question::Free(ended))?;
    }
    let before = record.clone();
    let (mut record, answer) = apply(turn, record, request)?;
    if let Some(record) = &mut record {
        settle_publisher(turn, record)?;
        if *request.input != Input::TimedOut {
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
        let events = events_of(before.as_ref(), record);
        if !events.is_empty() {
            let postbacks = postbacks_for(&turn.plan, record, &events, turn.now);
            turn.effects.postbacks.extend(postbacks);
        }
        turn.effects.load = load_changes(before.as_ref(), record, turn.now);
        record.timeline_len += turn.effects.timeline.len() as u32;
    }
    Ok((record, answer, false))
}

/// The slot a request says is free, read from the request alone.
fn ended_without_record(request: Request<'_>) -> Option<LoadChange> {
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

/// A request for a call nobody here knows: a first webhook starts it; anything else is about a
/// call whose record is gone (or never was).
fn arrive_unknown(turn: &mut Turn<'_>, request: Request<'_>) -> Asked<(Option<CallRecord>, Answer)> {
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
        Input::TimedOut => Ok((None, Answer::Acknowledge)),
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

/// A buyer's leg changed state, stamped when it happened by the provider (the request may come
/// late), unless its clock is so far from ours that it is not to be believed.
fn leg_status(
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

/// The call is over and a dial it answered never reported its end (its action request was
/// lost): settled from what the buyer's leg said of itself, as its action would have.
fn settle_from_leg(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<()> {
    let Some((attempt, leg_seconds)) = record.unsettled_by_its_dial() else {
        return Ok(());
    };
    let status = (record.attempt(attempt)).map_or(DialStatus::Completed, |a| {
        a.result_of(DialStatus::Completed, None)
    });
    turn.warn(format!(
        "no dial action came for attempt {attempt}: the dial is settled from its leg ({leg_seconds} s)"
    ));
    let ended = DialEnd {
        attempt,
        status,
        connected_seconds: leg_seconds,
        call_over: true,
    };
    dial_ended(turn, record, ended).map(drop)
}

/// A new call: find its campaign by the number dialed (or the redirect's target) and route it.
fn arrive(
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
    record.publisher_id = publisher_of_number(&turn.plan, dialed.as_ref(), entered);
    let blocked = (entered.zip(record.caller.number()))
        .is_some_and(|(campaign, caller)| turn.plan.blocks(campaign, caller));
    if blocked && !turn.answered_elsewhere {
        // Refused before any buyer hears of it (and before it is answered, so nobody pays).
        record.enter_campaign(entered.and_then(|c| c.company_id), campaign);
        record.end(Outcome::Blocked, None, turn.now);
        note_end(turn, &record);
        return Ok((Some(record), Answer::Blocked));
    }
    let answer = enter_and_route(turn, &mut record, campaign)?;
    Ok((Some(record), answer))
}

fn enter_and_route(turn: &mut Turn<'_>, record: &mut CallRecord, campaign: CampaignId) -> Asked<Answer> {
    let plan = turn.plan.clone();
    let Some(campaign) = plan.campaign(campaign) else {
        // The campaign was deleted while the call was on its way there.
        return Ok(drop_call(turn, record, DropReason::NoBuyer));
    };
    record.enter_campaign(campaign.company_id, campaign.id);
    let reserved = claim_reservation(turn, record, campaign.id)?;
    route(turn, record, campaign, reserved)
}

/// The publisher given the tracking number dialed, if it belongs to the campaign's company.
fn publisher_of_number(
    plan: &RoutingPlan,
    dialed: Option<&E164>,
    campaign: Option<&Record<Campaign>>,
) -> Option<PublisherId> {
    let publisher = plan.publisher_for_number(dialed?)?;
    let company = plan.publisher_record(publisher)?.company_id;
    (company == campaign?.company_id).then_some(publisher)
}

/// The buyer an RTB bid reserved for this caller in this campaign, if the bid is still live: it
/// is claimed now, by this call, which is from then on the publisher's that pinged.
fn claim_reservation(
    turn: &mut Turn<'_>,
    record: &mut CallRecord,
    campaign: CampaignId,
) -> Asked<Option<BuyerId>> {
    // A call that ends here would lose a reservation it claimed to a later call.
    let Some(caller) = record.caller.number().filter(|_| !turn.answered_elsewhere) else {
        return Ok(None);
    };
    let claim = || Question::Claim {
        campaign,
        caller: caller.clone(),
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

/// The never-drop chain, one step: the next buyer (first the one an RTB bid reserved, if any),
/// the fallback, a redirect or the end.
fn route(
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
    let duplicates = turn.duplicates(record.caller.number(), &candidates)?;
    let blocked = turn.blocked(&candidates)?;
    let known = Known {
        duplicates: duplicates.is_some(),
        caps: blocked.is_some(),
    };
    // Without a de-dupe or capacity answer in time, nobody can be dialed on a full decision.
    let mut in_haste = duplicates.is_none() || blocked.is_none();
    let (duplicates, mut blocked) = (duplicates.unwrap_or_default(), blocked.unwrap_or_default());
    let tried = record.tried();
    let leg = Leg {
        call: record.sid.clone(),
        attempt: record.next_attempt_number(),
    };
    let mut random = random_for(turn.routing_seed, (&leg.call, leg.attempt));
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
        let decision = if in_haste {
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
                blocked.insert(buyer.id, Block::Concurrency);
            }
            _ => in_haste = true,
        }
    };
    if decision.in_haste {
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
                .begin_attempt(buyer.id, campaign.id, kind, duplicate, turn.now)
                .number;
            if buyer.spec.screen != Screen::None {
                record.expect_screening(attempt);
            }
            Ok(dial(&plan, record, attempt, buyer))
        }
        Action::Redirect { campaign } => Ok(Answer::Redirect { campaign }),
        Action::End { reason } => Ok(drop_call(turn, record, reason)),
    }
}

/// The `<Dial>` of attempt `attempt` to `buyer`, with what the buyer sees and hears in the
/// attempt's campaign.
fn dial(plan: &RoutingPlan, record: &CallRecord, attempt: u32, buyer: &Record<Buyer>) -> Answer {
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
    }
}

/// The buyer of `attempt` picked up: what it hears before the caller is put through. Only the
/// call's ringing attempt is put through; any other leg is hung up. A buyer screened by
/// answering machine detection is judged first, by who answered.
fn whisper(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, answered_by: Option<&str>) -> Answer {
    let current = record.current_attempt().filter(|a| a.number == attempt);
    let Some(dialed) = current
        .filter(|a| a.status.is_none() && !record.is_ended())
        .cloned()
    else {
        turn.note(Event::Ignored {
            reason: format!("attempt {attempt} is not ringing: its buyer is not put through"),
        });
        return Answer::Hangup;
    };
    let plan = turn.plan.clone();
    let buyer = plan.buyer(dialed.buyer_id);
    let detects = buyer.is_some_and(|b| b.spec.screen == Screen::MachineDetection);
    if detects && dialed.screening == Some(Screening::Pending) {
        judge(turn, record, attempt, Screening::of_answered_by(answered_by));
    }
    let screening = record.attempt(attempt).and_then(|a| a.screening);
    let press_1 = match screening {
        None => false,
        Some(Screening::Pending) => true,
        // Detection put the buyer through: its whisper, if any, then the caller.
        Some(Screening::Accepted) if detects => false,
        // A retried request after the buyer answered the prompt: as it answered.
        Some(Screening::Accepted) => return Answer::Connect,
        Some(Screening::Refused | Screening::NoKey | Screening::Machine) => return Answer::Hangup,
    };
    let campaign = plan.campaign(dialed.campaign_id);
    let announcement = buyer
        .and_then(|buyer| whisper_for(buyer, campaign))
        .map(|w| w.for_campaign(campaign.map_or("", |c| c.spec.name.as_str())));
    turn.note(Event::Whispered {
        attempt,
        buyer_id: dialed.buyer_id,
        press_1,
    });
    if announcement.is_none() && !press_1 {
        return Answer::Connect;
    }
    Answer::Whisper {
        attempt,
        announcement,
        press_1,
    }
}

/// Answering machine detection's verdict came by its own callback: the attempt is judged, if
/// it was not already (by the whisper request, which carries the same verdict).
fn detected(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, answered_by: &str) {
    let pending = record
        .attempt(attempt)
        .is_some_and(|a| a.screening == Some(Screening::Pending) && a.status.is_none());
    if pending {
        let verdict = Screening::of_answered_by(Some(answered_by));
        judge(turn, record, attempt, verdict);
    }
}

/// Settles a screened attempt (a key pressed, a machine heard), noting it if it is news.
fn judge(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, result: Screening) {
    let outcome = record.outcome;
    if let Some(screening) = record.screened(attempt, result, turn.now)
        && let Some(buyer_id) = record.attempt(attempt).map(|a| a.buyer_id)
    {
        turn.note(Event::Screened {
            attempt,
            buyer_id,
            screening,
        });
        if record.outcome != outcome {
            note_end(turn, record);
        }
    }
}

/// The buyer of `attempt` answered the press-1 prompt (`digits`): put through on 1, else hung
/// up, and the dial's result routes on. A retried or late answer changes nothing.
fn screened(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, digits: &str) -> Answer {
    if record.is_ended() {
        // The caller is gone (the provider's news of it raced the buyer's key): nobody to put
        // the buyer through to, and nothing left to judge.
        turn.note(Event::Ignored {
            reason: format!("attempt {attempt}'s buyer answered the prompt after the call ended"),
        });
        return Answer::Hangup;
    }
    judge(turn, record, attempt, Screening::of_digits(digits));
    match record.attempt(attempt) {
        Some(a) if a.screening == Some(Screening::Accepted) && a.status.is_none() => Answer::Connect,
        Some(a) if a.screening.is_some() => Answer::Hangup,
        _ => {
            turn.note(Event::Ignored {
                reason: format!("attempt {attempt} has no press-1 prompt"),
            });
            Answer::Hangup
        }
    }
}

/// A recording of `attempt`'s dial: kept with the call, whenever it comes (after the call ended
/// too).
fn recorded(turn: &mut Turn<'_>, record: &mut CallRecord, attempt: u32, report: &RecordingReport) {
    if record.attempt(attempt).is_none() {
        turn.note(Event::Ignored {
            reason: format!("a recording of attempt {attempt}, which was never made"),
        });
        return;
    }
    let recording = Recording {
        attempt,
        sid: report.sid.clone(),
        url: report.url.clone(),
        status: report.status,
        duration_seconds: report.duration_seconds,
        channels: report.channels,
        at: turn.now,
    };
    if record.add_recording(recording) {
        turn.note(Event::Recorded {
            attempt,
            recording_sid: report.sid.clone(),
            status: report.status,
            duration_seconds: report.duration_seconds,
        });
    }
}

/// Settles what the call earns its publisher, once: when it meets the payout rule (nothing if
/// the caller already earned the publisher a payout inside the window), or when it ends
/// without meeting it.
fn settle_publisher(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<()> {
    let Some(publisher_id) = record.publisher_id else {
        return Ok(());
    };
    let terms = turn.plan.publisher_terms_for(record);
    let (payout, duplicate) = match Settlement::of(record, terms.as_ref()) {
        Settlement::Later => return Ok(()),
        Settlement::Unearned => (Money::ZERO, None),
        Settlement::Earned(terms) => {
            let duplicate = match record.caller.number() {
                // Without a window nothing is a repeat: no need to ask (the payout is still
                // marked, below, for the history).
                Some(_) if terms.dedupe_seconds.get() == 0 => false,
                Some(caller) => {
                    let ask = || Question::PayOnce {
                        caller: caller.clone(),
                        publisher: publisher_id,
                        terms,
                    };
                    // If the index does not say, nothing is settled now (the next request asks
                    // again).
                    match turn.ask(ask)? {
                        Reply::PaidOnce(Some(first)) => !first,
                        _ => return Ok(()),
                    }
                }
                // A caller who cannot be told apart (a withheld number) cannot be a repeat caller.
                None => false,
            };
            if !duplicate && let Some(caller) = record.caller.number() {
                turn.effects.touched.push(Touched {
                    caller: caller.clone(),
                    scope: Scope::Publisher(publisher_id),
                    touch: Touch::Converted,
                    at: turn.now,
                });
            }
            let payout = if duplicate { Money::ZERO } else { terms.amount };
            (payout, Some(duplicate))
        }
    };
    record.publisher_payout = Some(payout);
    record.publisher_duplicate = duplicate;
    turn.note(Event::PublisherSettled {
        publisher_id,
        payout,
        duplicate,
    });
    Ok(())
}

fn drop_call(turn: &mut Turn<'_>, record: &mut CallRecord, reason: DropReason) -> Answer {
    record.end(Outcome::Dropped, Some(reason), turn.now);
    note_end(turn, record);
    Answer::End
}

fn note_end(turn: &mut Turn<'_>, record: &CallRecord) {
    if let Some(outcome) = record.outcome {
        turn.note(Event::Ended {
            outcome,
            drop_reason: record.drop_reason,
        });
    }
}

/// A dial's action callback, as the state machine reads it.
struct DialEnd {
    attempt: u32,
    status: DialStatus,
    connected_seconds: u32,
    /// The caller hung up: the parent call is over.
    call_over: bool,
}

fn dial_ended(turn: &mut Turn<'_>, record: &mut CallRecord, ended: DialEnd) -> Asked<Answer> {
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
    let conversion_seconds = buyer.map_or(u32::MAX, |b| b.spec.conversion_seconds.get());
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
fn route_on(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<Answer> {
    let plan = turn.plan.clone();
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(turn, record, campaign, None),
        None => Ok(drop_call(turn, record, DropReason::NoBuyer)),
    }
}

fn conversion(record: &CallRecord, attempt: &Attempt, buyer: &Record<Buyer>, at: Timestamp) -> Conversion {
    Conversion {
        call_sid: record.sid.clone(),
        attempt: attempt.number,
        buyer_id: buyer.id,
        campaign_id: attempt.campaign_id,
        caller: record.caller.number().cloned(),
        connected_seconds: attempt.connected_seconds.unwrap_or_default(),
        payout: buyer.spec.payout,
        revenue: buyer.spec.revenue,
        at,
    }
}

/// The answer that fits the call as it stands (a retried request gets what it got before).
fn current_answer(turn: &mut Turn<'_>, record: &mut CallRecord) -> Asked<Answer> {
    if turn.answered_elsewhere && !record.is_ended() {
        return Ok(drop_call(turn, record, DropReason::Overloaded));
    }
    match (record.state, record.outcome) {
        (CallState::Ended, Some(Outcome::Rejected)) => return Ok(Answer::Reject),
        (CallState::Ended, Some(Outcome::Dropped)) => return Ok(Answer::End),
        (CallState::Ended, _) => return Ok(Answer::Hangup),
        _ => {}
    }
    if let Some(attempt) = record.current_attempt() {
        if attempt.status.is_some_and(DialStatus::connected) || attempt.answered_at.is_some() {
            return Ok(Answer::Hangup);
        }
        if attempt.status.is_none()
            && let Some(buyer) = turn.plan.buyer(attempt.buyer_id)
        {
            return Ok(dial(&turn.plan, record, attempt.number, buyer));
        }
    }
    // Nothing in flight (a redirect the provider has not followed yet): decide again.
    route_on(turn, record)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::{
        block::{BlockEntry, BlockedCaller},
        call::AttemptKind,
        ids::Id,
        plan::{Company, Publisher, record_of as record},
    };

    const MAIN_NUMBER: &str = "+14155550100";
    const OVERFLOW_NUMBER: &str = "+14155550200";
    const CALLER: &str = "+14155550177";

    type Parts = (
        Vec<Record<Company>>,
        Vec<Record<Buyer>>,
        Vec<Record<Campaign>>,
        Vec<Record<Publisher>>,
    );

    /// A campaign "Main" (A first, then B press-1 screened, then C screened by machine
    /// detection; fallback F; redirect to "Overflow", whose only buyer is O), a publisher paid
    /// $5 per call with a day's de-dupe window on Main's number; and what the indexes say.
    struct World {
        plan: Arc<RoutingPlan>,
        main: CampaignId,
        overflow: CampaignId,
        a: BuyerId,
        b: BuyerId,
        c: BuyerId,
        f: BuyerId,
        o: BuyerId,
        publisher: PublisherId,
        /// Buyers the caller converted with (duplicates for them).
        converted_with: HashSet<BuyerId>,
        /// Buyers whose slot is taken by the time a hold is asked.
        full: HashSet<BuyerId>,
        /// The indexes do not answer in time.
        silent: bool,
        reservation: Option<Reservation>,
        /// The caller earned the publisher a payout inside its window already.
        paid_before: bool,
        answered_elsewhere: bool,
        now: Timestamp,
        /// Every question asked, in order.
        asked: Vec<Question>,
        /// What the plan is made of.
        parts: Parts,
    }

    impl World {
        fn new() -> Self {
            let company: Record<Company> =
                record(None, json!({"name": "Acme", "duplicate_caller_handling": true}));
            let owner = Some(company.id);
            let buyer = |name: &str, screen: &str| -> Record<Buyer> {
                record(
                    owner,
                    json!({"name": name, "destination": "+14155550101", "screen": screen, "conversion_seconds": 60, "payout": "20.00"}),
                )
            };
            let (a, b, c) = (
                buyer("A", "none"),
                buyer("B", "press-1"),
                buyer("C", "machine-detection"),
            );
            let (f, o) = (buyer("F", "none"), buyer("O", "none"));
            let overflow: Record<Campaign> = record(
                owner,
                json!({"name": "Overflow", "numbers": [OVERFLOW_NUMBER], "buyers": [{"buyer_id": o.id}]}),
            );
            let main: Record<Campaign> = record(
                owner,
                json!({
                    "name": "Main",
                    "numbers": [MAIN_NUMBER],
                    "duplicate_caller_handling": "new_convertible_buyer",
                    "buyers": [{"buyer_id": a.id, "priority": 1}, {"buyer_id": b.id, "priority": 2}, {"buyer_id": c.id, "priority": 3}],
                    "fallback_buyer_id": f.id,
                    "redirect_campaign_id": overflow.id,
                }),
            );
            let publisher: Record<Publisher> = record(
                owner,
                json!({"name": "P", "numbers": [MAIN_NUMBER], "payout": {"rule": "per_call", "amount": "5.00", "dedupe_seconds": 86400}}),
            );
            Self {
                main: main.id,
                overflow: overflow.id,
                a: a.id,
                b: b.id,
                c: c.id,
                f: f.id,
                o: o.id,
                publisher: publisher.id,
                plan: Arc::default(),
                parts: (
                    vec![company],
                    vec![a, b, c, f, o],
                    vec![main, overflow],
                    vec![publisher],
                ),
                converted_with: HashSet::new(),
                full: HashSet::new(),
                silent: false,
                reservation: None,
                paid_before: false,
                answered_elsewhere: false,
                now: "2026-12-04T12:00:00Z".parse().unwrap(),
                asked: Vec::new(),
            }
            .replanned(&[])
        }

        /// The plan again from its parts, with these block list entries.
        fn replanned(mut self, blocked: &[BlockEntry]) -> Self {
            let (companies, buyers, campaigns, publishers) = self.parts.clone();
            let plan = RoutingPlan::new(companies, buyers, campaigns).with_publishers(publishers);
            self.plan = Arc::new(plan.with_block_lists(blocked));
            self
        }

        /// What the indexes (as this world has them) reply.
        fn reply(&self, question: &Question) -> Reply {
            let silent = |reply: Reply| if self.silent { None } else { Some(reply) };
            match question {
                Question::Free(_) => Reply::Freed,
                Question::Replan => Reply::Replanned(self.plan.clone()),
                Question::Claim { .. } => Reply::Claimed(self.reservation.clone()),
                Question::Duplicates { rules, .. } => {
                    let duplicates = (rules.iter())
                        .filter_map(|rule| self.converted_with.get(&rule.buyer).copied())
                        .collect();
                    silent(Reply::Duplicates(Some(duplicates))).unwrap_or(Reply::Duplicates(None))
                }
                Question::Blocked { .. } => Reply::Blocked((!self.silent).then(HashMap::new)),
                Question::Hold { buyer, .. } if self.silent => {
                    let _ = buyer;
                    Reply::Held(None)
                }
                Question::Hold { buyer, .. } if self.full.contains(&buyer.id) => {
                    Reply::Held(Some(Err(Block::Concurrency)))
                }
                Question::Hold { .. } => Reply::Held(Some(Ok(()))),
                Question::PayOnce { .. } => Reply::PaidOnce((!self.silent).then_some(!self.paid_before)),
            }
        }

        /// Steps `input` on `record` to its end, answering every question.
        fn apply(&mut self, record: Option<&CallRecord>, input: Input) -> Applied {
            let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
            let params = FormParams::from(vec![
                ("From".to_owned(), CALLER.to_owned()),
                ("To".to_owned(), MAIN_NUMBER.to_owned()),
            ]);
            let request = Request {
                sid: &sid,
                input: &input,
                endpoint: "test",
                params: &params,
            };
            let mut facts = Facts {
                now: self.now,
                plan: self.plan.clone(),
                answered_elsewhere: self.answered_elsewhere,
                routing_seed: 7,
                replies: Vec::new(),
            };
            loop {
                assert!(
                    facts.replies.len() < 32,
                    "a step that never ends: {:?}",
                    self.asked
                );
                match step(record, request, &facts) {
                    Step::Done(applied) => return *applied,
                    Step::Ask(question) => {
                        facts.replies.push(self.reply(&question));
                        self.asked.push(question);
                    }
                }
            }
        }

        /// Steps `inputs` one after the other from a call nobody knows.
        fn call(&mut self, inputs: impl IntoIterator<Item = Input>) -> (Option<CallRecord>, Answer) {
            let mut record = None;
            let mut answer = Answer::Acknowledge;
            for input in inputs {
                let applied = self.apply(record.as_ref(), input);
                (record, answer) = (applied.record.or(record), applied.answer);
            }
            (record, answer)
        }

        fn dialed(&self, answer: &Answer) -> Option<(u32, BuyerId)> {
            let Answer::Dial { attempt, .. } = answer else {
                return None;
            };
            Some((
                *attempt,
                self.asked.iter().rev().find_map(|q| match q {
                    Question::Hold { buyer, leg } if leg.attempt == *attempt => Some(buyer.id),
                    _ => None,
                })?,
            ))
        }
    }

    fn incoming() -> Input {
        Input::Incoming {
            from: CALLER.to_owned(),
            to: MAIN_NUMBER.to_owned(),
        }
    }

    fn dial_ended(attempt: u32, status: DialStatus, seconds: u32) -> Input {
        Input::DialEnded {
            attempt,
            status,
            connected_seconds: seconds,
            call_over: false,
            bridged: None,
        }
    }

    fn leg(attempt: u32, status: CallStatus, sequence: u32) -> Input {
        Input::LegStatus {
            attempt,
            status: Some(status),
            sequence: Some(sequence),
            leg_seconds: None,
            at: None,
        }
    }

    fn call_status(status: CallStatus, sequence: u32) -> Input {
        Input::CallStatus {
            status: Some(status),
            sequence: Some(sequence),
        }
    }

    fn events(applied: &Applied) -> Vec<&'static str> {
        applied.effects.timeline.iter().map(|e| e.event.kind()).collect()
    }

    #[test]
    fn a_new_call_dials_the_first_buyer_once_its_slot_is_held() {
        let mut world = World::new();
        let applied = world.apply(None, incoming());
        assert_eq!(world.dialed(&applied.answer), Some((1, world.a)));
        let record = applied.record.clone().unwrap();
        assert_eq!(
            (record.state, record.campaign_id),
            (CallState::Dialing, Some(world.main))
        );
        assert_eq!(record.publisher_id, Some(world.publisher));
        assert_eq!(events(&applied), ["webhook", "decision", "publisher_settled"]);
        assert_eq!(record.timeline_len, 3);
        // The reservation book first, then the de-dupe index, then A's slot. (No buyer has caps:
        // the capacity index is not asked.) The publisher's payout is asked last.
        let kinds: Vec<_> = world.asked.iter().map(question_kind).collect();
        assert_eq!(kinds, ["claim", "duplicates", "hold", "pay_once"]);
        assert_eq!(record.publisher_payout, Some(Money::parse("5.00").unwrap()));
    }

    fn question_kind(question: &Question) -> &'static str {
        match question {
            Question::Free(_) => "free",
            Question::Replan => "replan",
            Question::Claim { .. } => "claim",
            Question::Duplicates { .. } => "duplicates",
            Question::Blocked { .. } => "blocked",
            Question::Hold { .. } => "hold",
            Question::PayOnce { .. } => "pay_once",
        }
    }

    #[test]
    fn a_caller_who_converted_with_the_first_buyer_is_sent_to_the_next() {
        let mut world = World::new();
        world.converted_with.insert(world.a);
        let applied = world.apply(None, incoming());
        assert_eq!(world.dialed(&applied.answer), Some((1, world.b)));
        assert_eq!(applied.record.unwrap().duplicate_buyers, [world.a]);
    }

    #[test]
    fn a_slot_taken_meanwhile_rules_its_buyer_out_and_routing_decides_again() {
        let mut world = World::new();
        world.full.insert(world.a);
        let applied = world.apply(None, incoming());
        assert_eq!(world.dialed(&applied.answer), Some((1, world.b)));
        let holds = world
            .asked
            .iter()
            .filter(|q| matches!(q, Question::Hold { .. }))
            .count();
        assert_eq!(holds, 2);
    }

    #[test]
    fn indexes_that_do_not_answer_leave_only_the_fallback_and_say_so() {
        let mut world = World::new();
        world.silent = true;
        let applied = world.apply(None, incoming());
        // The fallback takes duplicates, but its slot cannot be held either: the explicit end.
        assert_eq!(applied.answer, Answer::End);
        let record = applied.record.unwrap();
        assert_eq!(record.drop_reason, Some(DropReason::Overloaded));
        assert!(applied.effects.warnings.iter().any(|w| w.contains("in haste")));
    }

    #[test]
    fn a_webhook_answered_without_the_actor_records_the_explicit_end_and_claims_nothing() {
        let mut world = World::new();
        world.answered_elsewhere = true;
        let applied = world.apply(None, incoming());
        assert_eq!(applied.answer, Answer::End);
        let record = applied.record.unwrap();
        assert_eq!(
            (record.outcome, record.drop_reason),
            (Some(Outcome::Dropped), Some(DropReason::Overloaded))
        );
        assert!(
            !world
                .asked
                .iter()
                .any(|q| matches!(q, Question::Claim { .. } | Question::Hold { .. }))
        );
    }

    #[test]
    fn a_number_unknown_here_is_read_again_from_the_store_before_the_call_is_rejected() {
        let mut world = World::new();
        let sid = CallSid::parse("CA00000000000000000000000000000002").unwrap();
        let input = incoming();
        let params = FormParams::from(vec![
            ("From".to_owned(), CALLER.to_owned()),
            ("To".to_owned(), "+14155550999".to_owned()),
        ]);
        let request = Request {
            sid: &sid,
            input: &input,
            endpoint: "voice",
            params: &params,
        };
        let mut facts = Facts {
            now: world.now,
            plan: world.plan.clone(),
            answered_elsewhere: false,
            routing_seed: 7,
            replies: vec![],
        };
        let Step::Ask(Question::Replan) = step(None, request, &facts) else {
            panic!("the plan is not read again")
        };
        // Still unknown in the store: rejected, as the record says.
        facts.replies.push(Reply::Replanned(world.plan.clone()));
        let Step::Done(applied) = step(None, request, &facts) else {
            panic!("asked more")
        };
        assert_eq!(applied.answer, Answer::Reject);
        assert_eq!(
            applied.record.unwrap().drop_reason,
            Some(DropReason::UnknownNumber)
        );
        // Created on another node meanwhile: routed.
        let main = world.parts.2.iter_mut().find(|c| c.id == world.main).unwrap();
        main.spec.numbers = serde_json::from_value(json!(["+14155550999"])).unwrap();
        let world = world.replanned(&[]);
        facts.replies = vec![Reply::Replanned(world.plan.clone())];
        let applied = loop {
            match step(None, request, &facts) {
                Step::Done(applied) => break *applied,
                Step::Ask(question) => facts.replies.push(world.reply(&question)),
            }
        };
        assert!(
            matches!(applied.answer, Answer::Dial { attempt: 1, .. }),
            "{:?}",
            applied.answer
        );
    }

    #[test]
    fn a_blocked_caller_is_refused_before_any_index_is_asked() {
        let world = World::new();
        let entry = BlockEntry {
            id: uuid::Uuid::now_v7(),
            company_id: world.plan.campaign(world.main).unwrap().company_id.unwrap(),
            blocked: BlockedCaller {
                pattern: CALLER.to_owned().try_into().unwrap(),
                reason: None,
            },
            created_at: Timestamp::UNIX_EPOCH,
        };
        let mut world = world.replanned(&[entry]);
        let applied = world.apply(None, incoming());
        assert_eq!(applied.answer, Answer::Blocked);
        assert_eq!(applied.record.unwrap().outcome, Some(Outcome::Blocked));
        assert!(
            world.asked.iter().all(|q| matches!(q, Question::PayOnce { .. })),
            "{:?}",
            world.asked
        );
    }

    #[test]
    fn an_rtb_reservation_is_claimed_and_its_buyer_dialed_for_its_publisher() {
        let mut world = World::new();
        let publisher = Id::generate();
        world.reservation = Some(Reservation {
            uuid: uuid::Uuid::nil(),
            campaign_id: world.main,
            caller: Some(E164::normalise(CALLER).unwrap()),
            buyer_id: world.c,
            publisher_id: Some(publisher),
            payout: Money::parse("12.00").unwrap(),
            seconds: 60,
            inbound_number: E164::normalise(MAIN_NUMBER).unwrap(),
            reserved_at: world.now,
            expires_at: world.now,
        });
        let applied = world.apply(None, incoming());
        assert_eq!(world.dialed(&applied.answer), Some((1, world.c)));
        let record = applied.record.clone().unwrap();
        assert_eq!(
            (record.publisher_id, record.bid_payout),
            (Some(publisher), Some(Money::parse("12.00").unwrap()))
        );
        assert!(events(&applied).contains(&"reservation_claimed"));
    }

    #[test]
    fn an_unanswered_dial_routes_on_and_its_retried_action_dials_nobody_new() {
        let mut world = World::new();
        let (record, _) = world.call([incoming()]);
        let record = record.unwrap();
        let on = world.apply(Some(&record), dial_ended(1, DialStatus::NoAnswer, 0));
        assert_eq!(world.dialed(&on.answer), Some((2, world.b)));
        let after = on.record.unwrap();
        // The provider retries the same action while B rings: the same TwiML, no new hold.
        let holds = world.asked.len();
        let retried = world.apply(Some(&after), dial_ended(1, DialStatus::NoAnswer, 0));
        assert_eq!(retried.answer, on.answer);
        assert_eq!(world.asked.len(), holds);
        assert_eq!(retried.record.unwrap().attempts.len(), 2);
    }

    #[test]
    fn a_dial_that_converts_settles_the_attempt_teaches_the_index_and_hangs_up() {
        let mut world = World::new();
        let (record, _) = world.call([incoming(), leg(1, CallStatus::InProgress, 1)]);
        let applied = world.apply(record.as_ref(), dial_ended(1, DialStatus::Completed, 95));
        assert_eq!(applied.answer, Answer::Hangup);
        let record = applied.record.unwrap();
        assert_eq!(
            (record.outcome, record.converted()),
            (Some(Outcome::Connected), true)
        );
        let conversion = applied.effects.conversion.expect("a conversion");
        assert_eq!((conversion.buyer_id, conversion.connected_seconds), (world.a, 95));
        assert!(
            applied
                .effects
                .touched
                .iter()
                .any(|t| t.touch == Touch::Converted && t.scope == Scope::Buyer(world.a))
        );
        // Duplicates are judged again at the end of the leg.
        assert!(matches!(world.asked.last(), Some(Question::Duplicates { .. })));
        assert!(
            applied
                .effects
                .load
                .iter()
                .any(|c| matches!(c, LoadChange::Counted { .. }))
        );
    }

    #[test]
    fn a_publisher_is_paid_once_per_caller_inside_its_window() {
        for (paid_before, silent, payout) in [
            (false, false, Some("5.00")),
            (true, false, Some("0.00")),
            (false, true, None),
        ] {
            let mut world = World::new();
            world.paid_before = paid_before;
            let (record, _) = world.call([incoming()]);
            world.silent = silent;
            let record = record.unwrap();
            let payout = payout.map(|p| Money::parse(p).unwrap());
            assert_eq!(
                record.publisher_payout.filter(|_| !silent),
                payout.filter(|_| !silent)
            );
            if silent {
                // Unknown now: nothing is settled (the next request asks again).
                let mut world = World::new();
                world.silent = true;
                world.full.clear();
                let applied = world.apply(None, incoming());
                assert_eq!(applied.record.unwrap().publisher_payout, None);
            } else {
                assert_eq!(record.publisher_duplicate, Some(paid_before));
            }
        }
    }

    #[test]
    fn a_press_1_buyer_is_put_through_on_1_and_hung_up_on_anything_else() {
        let mut world = World::new();
        world.converted_with.insert(world.a);
        let (record, answer) = world.call([incoming()]);
        assert_eq!(world.dialed(&answer), Some((1, world.b)));
        let record = record.unwrap();
        let whisper = world.apply(
            Some(&record),
            Input::Whisper {
                attempt: 1,
                answered_by: None,
            },
        );
        assert!(
            matches!(
                whisper.answer,
                Answer::Whisper {
                    attempt: 1,
                    press_1: true,
                    ..
                }
            ),
            "{:?}",
            whisper.answer
        );
        let record = whisper.record.unwrap();
        for (digits, answer, screening) in [
            ("1", Answer::Connect, Screening::Accepted),
            ("2", Answer::Hangup, Screening::Refused),
            ("", Answer::Hangup, Screening::NoKey),
        ] {
            let applied = world.apply(
                Some(&record),
                Input::Screened {
                    attempt: 1,
                    digits: digits.to_owned(),
                },
            );
            assert_eq!(applied.answer, answer, "digits {digits:?}");
            let after = applied.record.unwrap();
            assert_eq!(after.attempt(1).unwrap().screening, Some(screening));
            // Pressed again (a retried request): as it answered.
            let again = world.apply(
                Some(&after),
                Input::Screened {
                    attempt: 1,
                    digits: "1".to_owned(),
                },
            );
            assert_eq!(again.answer, answer, "retried after {digits:?}");
        }
        // The caller hangs up while the buyer listens to the prompt: its 1 puts nobody through.
        let gone = world.apply(Some(&record), call_status(CallStatus::Completed, 1));
        let gone = gone.record.unwrap();
        let late = world.apply(
            Some(&gone),
            Input::Screened {
                attempt: 1,
                digits: "1".to_owned(),
            },
        );
        assert_eq!(late.answer, Answer::Hangup);
        assert_eq!(late.record.unwrap().outcome, gone.outcome);
    }

    #[test]
    fn machine_detection_hangs_up_on_a_machine_and_puts_a_person_through() {
        let mut world = World::new();
        world.converted_with.extend([world.a, world.b]);
        let (record, answer) = world.call([incoming()]);
        assert_eq!(world.dialed(&answer), Some((1, world.c)));
        let record = record.unwrap();
        let person = world.apply(
            Some(&record),
            Input::Whisper {
                attempt: 1,
                answered_by: Some("human".into()),
            },
        );
        assert_eq!(person.answer, Answer::Connect);
        let machine = world.apply(
            Some(&record),
            Input::Whisper {
                attempt: 1,
                answered_by: Some("machine_start".into()),
            },
        );
        assert_eq!(machine.answer, Answer::Hangup);
        // Its own callback first: the whisper then hangs up as it judged.
        let detected = world.apply(
            Some(&record),
            Input::Detected {
                attempt: 1,
                answered_by: "fax".into(),
            },
        );
        assert_eq!(detected.answer, Answer::Acknowledge);
        let after = detected.record.unwrap();
        assert_eq!(after.attempt(1).unwrap().screening, Some(Screening::Machine));
        let whisper = world.apply(
            Some(&after),
            Input::Whisper {
                attempt: 1,
                answered_by: Some("human".into()),
            },
        );
        assert_eq!(whisper.answer, Answer::Hangup);
    }

    #[test]
    fn a_status_callback_seen_before_and_older_recording_news_change_nothing() {
        let mut world = World::new();
        let (record, _) = world.call([incoming(), leg(1, CallStatus::Ringing, 1)]);
        let record = record.unwrap();
        let again = world.apply(Some(&record), leg(1, CallStatus::Ringing, 1));
        assert!(again.repeated);
        assert_eq!(again.record.as_ref(), Some(&record));
        assert!(again.effects.timeline.is_empty());
        let report = |status| Input::Recorded {
            attempt: 1,
            recording: RecordingReport {
                sid: "RE1".into(),
                url: "https://example.com/RE1".into(),
                status,
                duration_seconds: Some(30),
                channels: Some(1),
            },
        };
        let completed = world.apply(Some(&record), report(RecordingStatus::Completed));
        assert!(!completed.repeated);
        let after = completed.record.unwrap();
        assert_eq!(after.recordings.len(), 1);
        let older = world.apply(Some(&after), report(RecordingStatus::InProgress));
        assert!(older.repeated);
    }

    #[test]
    fn a_call_whose_dial_action_never_came_is_settled_from_its_leg_when_it_ends() {
        let mut world = World::new();
        let ended_leg = Input::LegStatus {
            attempt: 1,
            status: Some(CallStatus::Completed),
            sequence: Some(2),
            leg_seconds: Some(80),
            at: None,
        };
        let (record, _) = world.call([incoming(), leg(1, CallStatus::InProgress, 1), ended_leg]);
        let applied = world.apply(record.as_ref(), call_status(CallStatus::Completed, 1));
        let record = applied.record.unwrap();
        let attempt = record.attempt(1).unwrap();
        assert_eq!(
            (attempt.status, attempt.connected_seconds),
            (Some(DialStatus::Completed), Some(80))
        );
        assert!(record.converted());
        assert!(applied.effects.conversion.is_some());
        assert!(
            applied
                .effects
                .warnings
                .iter()
                .any(|w| w.contains("settled from its leg"))
        );
    }

    #[test]
    fn a_slot_a_request_frees_for_a_call_nobody_knows_is_freed_before_routing_afresh() {
        let mut world = World::new();
        let applied = world.apply(None, dial_ended(3, DialStatus::Busy, 0));
        assert!(matches!(
            world.asked.first(),
            Some(Question::Free(LoadChange::Released(Leg { attempt: 3, .. })))
        ));
        assert!(matches!(applied.answer, Answer::Dial { attempt: 1, .. }));
    }

    /// The states a call can be in when a request comes: nobody knows it, it waits for a
    /// redirect to be followed, it rings a buyer, it is connected, it ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Stage {
        Unknown,
        Redirecting,
        Dialing,
        Connected,
        Ended,
    }

    fn stage(world: &mut World, stage: Stage) -> Option<CallRecord> {
        match stage {
            Stage::Unknown => None,
            Stage::Redirecting => {
                // Everyone in Main has the caller already and the fallback is full.
                world.converted_with.extend([world.a, world.b, world.c]);
                world.full.insert(world.f);
                let (record, answer) = world.call([incoming()]);
                assert_eq!(
                    answer,
                    Answer::Redirect {
                        campaign: world.overflow
                    }
                );
                record
            }
            Stage::Dialing => world.call([incoming()]).0,
            Stage::Connected => world.call([incoming(), leg(1, CallStatus::InProgress, 1)]).0,
            Stage::Ended => world.call([incoming(), call_status(CallStatus::Completed, 1)]).0,
        }
    }

    fn every_input(world: &World) -> Vec<Input> {
        vec![
            incoming(),
            Input::Fallback {
                error_code: Some("11200".into()),
            },
            dial_ended(1, DialStatus::NoAnswer, 0),
            dial_ended(1, DialStatus::Completed, 95),
            Input::Whisper {
                attempt: 1,
                answered_by: None,
            },
            Input::Detected {
                attempt: 1,
                answered_by: "human".into(),
            },
            Input::Screened {
                attempt: 1,
                digits: "1".into(),
            },
            Input::Recorded {
                attempt: 1,
                recording: RecordingReport {
                    sid: "RE1".into(),
                    url: "https://example.com/RE1".into(),
                    status: RecordingStatus::Completed,
                    duration_seconds: Some(9),
                    channels: Some(2),
                },
            },
            leg(1, CallStatus::Completed, 7),
            Input::Redirected {
                campaign: world.overflow,
            },
            call_status(CallStatus::Completed, 7),
            Input::TimedOut,
        ]
    }

    /// What each input gets in each state, as a supervisor reading the call would expect.
    fn expected(stage: Stage, input: &Input) -> &'static str {
        use Stage::*;
        match (input, stage) {
            // A call starts (or, known, gets what it got: the dial in flight).
            (Input::Incoming { .. } | Input::Fallback { .. }, Unknown | Dialing) => "dial",
            // Still in Main, nobody there able to take it: the redirect again.
            (Input::Incoming { .. } | Input::Fallback { .. } | Input::DialEnded { .. }, Redirecting) => {
                "redirect"
            }
            (Input::Incoming { .. } | Input::Fallback { .. }, Connected | Ended) => "hangup",
            // Unanswered: on to the next buyer; an unknown call is routed afresh.
            // (A leg that answered but was never put through, as the dial reports it, too.)
            (
                Input::DialEnded {
                    status: DialStatus::NoAnswer,
                    ..
                },
                Unknown | Dialing | Connected,
            ) => "dial",
            (Input::DialEnded { .. }, _) => "hangup",
            // Only the ringing attempt is put through.
            (Input::Whisper { .. }, Dialing | Connected) => "connect",
            (Input::Whisper { .. } | Input::Screened { .. }, _) => "hangup",
            (Input::Redirected { .. }, Unknown | Redirecting) => "dial",
            (Input::Redirected { .. }, Dialing) => "dial",
            (Input::Redirected { .. }, Connected | Ended) => "hangup",
            (
                Input::Detected { .. }
                | Input::Recorded { .. }
                | Input::LegStatus { .. }
                | Input::CallStatus { .. }
                | Input::TimedOut,
                _,
            ) => "acknowledge",
        }
    }

    #[test]
    fn every_input_in_every_state_gets_the_answer_that_fits_and_keeps_the_call_consistent() {
        let stages = [
            Stage::Unknown,
            Stage::Redirecting,
            Stage::Dialing,
            Stage::Connected,
            Stage::Ended,
        ];
        for stage_of in stages {
            for input in every_input(&World::new()) {
                let mut world = World::new();
                let record = stage(&mut world, stage_of);
                let input = match input {
                    Input::Redirected { .. } => Input::Redirected {
                        campaign: world.overflow,
                    },
                    input => input,
                };
                let applied = world.apply(record.as_ref(), input.clone());
                let seen = format!("{stage_of:?} + {input:?}");
                assert_eq!(applied.answer.kind(), expected(stage_of, &input), "{seen}");
                if stage_of == Stage::Redirecting && matches!(input, Input::Redirected { .. }) {
                    assert_eq!(world.dialed(&applied.answer), Some((1, world.o)), "{seen}");
                }
                let Some(after) = &applied.record else {
                    assert_eq!(stage_of, Stage::Unknown, "{seen}: a known call lost");
                    continue;
                };
                let before = record.as_ref();
                // An ended call stays ended when it ended; only late news of a leg that
                // connected can tell it was a connected call rather than one abandoned.
                if let Some(before) = before.filter(|r| r.is_ended()) {
                    assert_eq!(after.ended_at, before.ended_at, "{seen}");
                    assert!(
                        after.outcome == before.outcome || after.outcome == Some(Outcome::Connected),
                        "{seen}"
                    );
                }
                assert_eq!(after.is_ended(), after.outcome.is_some(), "{seen}");
                // Every entry is counted, and numbered after those stored.
                let stored = before.map_or(0, |r| r.timeline_len);
                assert_eq!(
                    after.timeline_len,
                    stored + applied.effects.timeline.len() as u32,
                    "{seen}"
                );
                // No buyer is dialed twice in one campaign.
                let dialed: Vec<_> = after
                    .attempts
                    .iter()
                    .map(|a| (a.campaign_id, a.buyer_id))
                    .collect();
                let distinct: HashSet<_> = dialed.iter().collect();
                assert_eq!(dialed.len(), distinct.len(), "{seen}");
                if let Answer::Dial { attempt, .. } = applied.answer {
                    assert_eq!(after.current_attempt().map(|a| a.number), Some(attempt), "{seen}");
                    assert!(!after.is_ended(), "{seen}");
                }
            }
        }
    }

    fn any_input() -> impl Strategy<Value = Input> {
        let attempt = 1..4u32;
        prop_oneof![
            Just(incoming()),
            Just(Input::Fallback { error_code: None }),
            (
                attempt.clone(),
                prop_oneof![
                    Just(DialStatus::NoAnswer),
                    Just(DialStatus::Busy),
                    Just(DialStatus::Completed),
                    Just(DialStatus::Failed)
                ],
                0..200u32,
                any::<bool>()
            )
                .prop_map(
                    |(attempt, status, connected_seconds, call_over)| Input::DialEnded {
                        attempt,
                        status,
                        connected_seconds,
                        call_over,
                        bridged: None
                    }
                ),
            (
                attempt.clone(),
                prop::option::of(prop_oneof![
                    Just("human".to_owned()),
                    Just("machine_end_beep".to_owned())
                ])
            )
                .prop_map(|(attempt, answered_by)| Input::Whisper { attempt, answered_by }),
            (attempt.clone(), prop_oneof![Just("1"), Just("2"), Just("")]).prop_map(|(attempt, d)| {
                Input::Screened {
                    attempt,
                    digits: d.to_owned(),
                }
            }),
            (
                attempt.clone(),
                prop_oneof![
                    Just(CallStatus::Ringing),
                    Just(CallStatus::InProgress),
                    Just(CallStatus::Completed),
                    Just(CallStatus::NoAnswer)
                ],
                0..4u32
            )
                .prop_map(|(attempt, status, sequence)| leg(attempt, status, sequence)),
            (
                prop_oneof![Just(CallStatus::InProgress), Just(CallStatus::Completed)],
                0..4u32
            )
                .prop_map(|(status, sequence)| call_status(status, sequence)),
            Just(Input::TimedOut),
        ]
    }

    proptest! {
        /// Whatever the provider sends, in whatever order (retries and reorderings included),
        /// with whatever the indexes know: every step ends, an ended call stays as it ended and
        /// is never dialed on, no buyer is dialed twice in a campaign, attempts are numbered in
        /// order, every timeline entry is counted, and a step taken again on the same facts
        /// gives the same answer and the same call.
        #[test]
        fn any_webhook_ordering_keeps_the_call_consistent(
            inputs in prop::collection::vec(any_input(), 1..14),
            converted in prop::collection::vec(0..3usize, 0..3),
            full in prop::collection::vec(0..4usize, 0..2),
            silent in any::<bool>(),
        ) {
            let mut world = World::new();
            let buyers = [world.a, world.b, world.c, world.f];
            world.converted_with = converted.iter().map(|i| buyers[*i]).collect();
            world.full = full.iter().map(|i| buyers[*i]).collect();
            world.silent = silent;
            let mut record: Option<CallRecord> = None;
            let mut ended: Option<(Option<Outcome>, Option<Timestamp>)> = None;
            for input in inputs {
                let asked = world.asked.len();
                let applied = world.apply(record.as_ref(), input.clone());
                // The same facts again: the same decision.
                let mut facts = Facts { now: world.now, plan: world.plan.clone(), answered_elsewhere: false, routing_seed: 7, replies: vec![] };
                facts.replies = world.asked[asked..].iter().map(|q| world.reply(q)).collect();
                let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
                let params = FormParams::from(vec![("From".to_owned(), CALLER.to_owned()), ("To".to_owned(), MAIN_NUMBER.to_owned())]);
                let request = Request { sid: &sid, input: &input, endpoint: "test", params: &params };
                let Step::Done(again) = step(record.as_ref(), request, &facts) else { panic!("asked more the second time") };
                prop_assert_eq!(&again.answer, &applied.answer);
                prop_assert_eq!(&again.record, &applied.record);

                if let Some(after) = &applied.record {
                    if let Some((outcome, ended_at)) = ended {
                        prop_assert_eq!(after.ended_at, ended_at);
                        prop_assert!(after.outcome == outcome || after.outcome == Some(Outcome::Connected));
                        let goes_on = matches!(applied.answer, Answer::Dial { .. } | Answer::Redirect { .. } | Answer::Connect | Answer::Whisper { .. });
                        prop_assert!(!goes_on, "an ended call went on: {:?}", applied.answer);
                    }
                    let numbers: Vec<u32> = after.attempts.iter().map(|a| a.number).collect();
                    prop_assert_eq!(numbers, (1..=after.attempts.len() as u32).collect::<Vec<_>>());
                    let pairs: BTreeSet<_> = after.attempts.iter().map(|a| (a.campaign_id.to_string(), a.buyer_id.to_string())).collect();
                    prop_assert_eq!(pairs.len(), after.attempts.len());
                    let stored = record.as_ref().map_or(0, |r| r.timeline_len);
                    prop_assert_eq!(after.timeline_len, stored + applied.effects.timeline.len() as u32);
                    if after.is_ended() {
                        ended = Some((after.outcome, after.ended_at));
                    }
                    // A fallback is dialed only once the listed buyers cannot take the call.
                    if let Some(fallback) = after.attempts.iter().find(|a| a.kind == AttemptKind::Fallback) {
                        prop_assert_eq!(fallback.buyer_id, world.f);
                    }
                    record = Some(after.clone());
                }
            }
        }
    }
}
