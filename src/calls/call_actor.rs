//! One actor per live call: it applies the call's webhooks one at a time, routes, persists
//! every transition, and stops a while after the call ends.

use std::{sync::Arc, time::Duration};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message,
    SpawnHandle, WrapFuture,
};
use jiff::Timestamp;
use tokio::time::Instant;

use super::{CallDeps, Input, RecordingReport, Webhook, registry::CallRegistry};
use crate::{
    decide::{
        Claim, ask_within,
        capacity::{Apply, Hold},
        dedupe::{Learn, PayOnce},
    },
    domain::{
        call::{
            Answer, Attempt, CallRecord, CallSid, CallState, CallStatus, Caller, Conversion, DialStatus,
            DropReason, Outcome, Recording,
        },
        capacity::{Block, Leg, LoadChange, load_changes},
        dedupe::{Scope, Touch, Touched},
        dialing::{DialSettings, Screen, Screening, whisper_for},
        geo::CallerPlace,
        money::Money,
        payout::Settlement,
        phone::E164,
        plan::{Buyer, BuyerId, Campaign, CampaignId, PublisherId, Record},
        postback::{Postback, events_of, postbacks_for},
        routing::{Action, CallSituation, Known, RoutingPlan},
        supervision::CallSummary,
        timeline::{Event, TimelineEntry},
    },
    store::{CallChange, Saved},
};

pub struct CallActor {
    sid: CallSid,
    deps: CallDeps,
    registry: Arc<CallRegistry>,
    /// `None` until the first webhook, which creates the call or resumes it from the store.
    record: Option<CallRecord>,
    /// What the store has not taken yet; retried until it does.
    unsaved: Unsaved,
    /// The next retry of a save, or the actor's stop.
    timer: Option<SpawnHandle>,
}

impl CallActor {
    pub fn new(sid: CallSid, deps: CallDeps, registry: Arc<CallRegistry>) -> Self {
        Self {
            sid,
            deps,
            registry,
            record: None,
            unsaved: Unsaved::default(),
            timer: None,
        }
    }

    /// After every webhook: retry an unsaved change soon; otherwise stop once the call ended
    /// (after a grace period, so that callbacks arriving together after the end all queue here
    /// rather than race to a new actor) or once the call has been quiet for long (its next
    /// webhook resumes it from the store).
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let Some(record) = &self.record else {
            ctx.stop();
            return;
        };
        let timings = self.deps.timings;
        self.timer = Some(if !self.unsaved.is_empty() {
            ctx.notify_later(Flush, timings.save_retry)
        } else {
            let linger = if record.is_ended() {
                timings.ended_grace
            } else {
                timings.idle
            };
            ctx.run_later(linger, |_, ctx| ctx.stop())
        });
    }
}

impl Actor for CallActor {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if !self.unsaved.is_empty() {
            tracing::error!(call_sid = %self.sid, "a call actor stopped with changes the store never took");
        }
        self.registry.closed(&self.sid, &ctx.address());
    }
}

impl Handler<Webhook> for CallActor {
    // Atomic: the next webhook of this call waits until this one is answered and saved.
    type Result = AtomicResponse<Self, Answer>;

    fn handle(&mut self, webhook: Webhook, _: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let (record, unsaved) = (self.record.take(), std::mem::take(&mut self.unsaved));
        AtomicResponse::new(Box::pin(
            async move { process(&deps, record, unsaved, webhook).await }
                .into_actor(self)
                .map(|(record, unsaved, answer), actor, ctx| {
                    actor.record = record;
                    actor.unsaved = unsaved;
                    actor.schedule(ctx);
                    answer
                }),
        ))
    }
}

/// Save what the store has not taken (a retry, or a last try before the process stops).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Flush;

impl Handler<Flush> for CallActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let (record, mut unsaved) = (self.record.take(), std::mem::take(&mut self.unsaved));
        AtomicResponse::new(Box::pin(
            async move {
                if let Some(record) = &record {
                    let by = Instant::now() + deps.timings.store_budget;
                    save(&deps, record, &mut unsaved, by, false).await;
                }
                (record, unsaved)
            }
            .into_actor(self)
            .map(|(record, unsaved), actor, ctx| {
                actor.record = record;
                actor.unsaved = unsaved;
                actor.schedule(ctx);
            }),
        ))
    }
}

/// Changes the store has not taken yet. Saving is idempotent (the call row is replaced,
/// entries are keyed by their sequence number, conversions by call and attempt, marks keep the
/// latest), so whatever is here is simply saved again.
#[derive(Default)]
struct Unsaved {
    timeline: Vec<TimelineEntry>,
    conversions: Vec<Conversion>,
    touched: Vec<Touched>,
    /// Sent to other nodes with the save (this node's index learnt it at once).
    load: Vec<LoadChange>,
    /// Queued in the outbox with the save.
    postbacks: Vec<Postback>,
}

impl Unsaved {
    fn is_empty(&self) -> bool {
        self.timeline.is_empty()
            && self.conversions.is_empty()
            && self.touched.is_empty()
            && self.load.is_empty()
            && self.postbacks.is_empty()
    }
}

/// What one webhook produces besides the answer: timeline entries, a conversion, de-dupe marks.
struct Turn {
    now: Timestamp,
    plan: Arc<RoutingPlan>,
    timeline: Vec<TimelineEntry>,
    conversion: Option<Conversion>,
    touched: Vec<Touched>,
    /// The indexes are asked until then; past it, routing decides in haste.
    decide_by: Instant,
    /// The answer is due then (the decision budget from the webhook's arrival).
    answer_by: Instant,
    /// The webhook was answered without this actor (past the budget): with the explicit end,
    /// which is what is recorded, whatever routing would have done.
    answered_elsewhere: bool,
}

impl Turn {
    fn note(&mut self, event: Event) {
        self.timeline.push(TimelineEntry { at: self.now, event });
    }

    /// How long a store operation may take now: its own budget, cut to the time left before
    /// `due`, but never below a floor (a store that answers at once is always waited for).
    fn store_deadline(&self, deps: &CallDeps, due: Instant) -> Instant {
        let now = Instant::now();
        (now + deps.timings.store_budget).min(due.max(now + STORE_FLOOR))
    }
}

/// The least time a store operation is given, even past the budget.
const STORE_FLOOR: Duration = Duration::from_millis(50);

async fn process(
    deps: &CallDeps,
    record: Option<CallRecord>,
    unsaved: Unsaved,
    webhook: Webhook,
) -> (Option<CallRecord>, Unsaved, Answer) {
    // A call's first webhook on a tracking number is nearly always a new call. Where this
    // process is the store's only writer, it is taken for new without a read of the store
    // before routing: its save inserts it only if the store holds no such call (see
    // `CallChange::fresh`). Otherwise (the provider retried the first webhook across a
    // restart) the turn is undone and taken again on the stored call.
    let fresh = record.is_none()
        && matches!(webhook.input, Input::Incoming { .. })
        && deps.decider.slots.sole_writer();
    let record = match record {
        Some(record) => Some(record),
        None if fresh => None,
        None => resume(deps, &webhook.sid).await,
    };
    let (record, unsaved, answer, saved) = take_turn(deps, record, unsaved, &webhook, fresh).await;
    if saved != Some(Saved::Existed) {
        return (record, unsaved, answer);
    }
    tracing::info!("the call was in the store already: its first webhook is taken again on it");
    let stored = resume(deps, &webhook.sid).await;
    if let Some(untaken) = &record {
        give_back_slots(deps, untaken, stored.as_ref());
    }
    let (record, unsaved, answer, _) = take_turn(deps, stored, Unsaved::default(), &webhook, false).await;
    (record, unsaved, answer)
}

/// A turn taken on a call the store held already never happened: the slots it took are given
/// back, and the stored call's open legs (one may have the same key) are held again. (Such a
/// call's dial was never placed: the provider retried because it got no answer.)
fn give_back_slots(deps: &CallDeps, untaken: &CallRecord, stored: Option<&CallRecord>) {
    let leg = |attempt: &Attempt| Leg {
        call: untaken.sid.clone(),
        attempt: attempt.number,
    };
    let taken = untaken.attempts.iter().map(|a| LoadChange::Released(leg(a)));
    deps.decider.capacity.tell(Apply(taken.collect()));
    let open = (stored.into_iter())
        .filter(|call| !call.is_ended())
        .flat_map(|call| &call.attempts)
        .filter(|a| a.status.is_none() && a.ended_at.is_none());
    for attempt in open {
        deps.decider.capacity.tell(Hold {
            buyer: attempt.buyer_id,
            leg: leg(attempt),
            limit: None,
            at: attempt.answered_at.unwrap_or(attempt.started_at),
        });
    }
}

/// One webhook applied to the call (`record`: `None` for a call nobody knows, or one `fresh`):
/// the call after it, what is left unsaved, the answer, and what became of the save.
async fn take_turn(
    deps: &CallDeps,
    mut record: Option<CallRecord>,
    mut unsaved: Unsaved,
    webhook: &Webhook,
    fresh: bool,
) -> (Option<CallRecord>, Unsaved, Answer, Option<Saved>) {
    let budget = deps.decider.decision_budget;
    let answer_by = webhook.received + budget;
    let mut turn = Turn {
        now: deps.decider.clock.now(),
        plan: deps.decider.plan.current().await,
        timeline: Vec::new(),
        conversion: None,
        touched: Vec::new(),
        // A quarter of the budget is kept for saving the decision.
        decide_by: answer_by - budget / 4,
        answer_by,
        answered_elsewhere: !webhook.actor_takes(),
    };
    let seen_before = match (&mut record, webhook.callback_key()) {
        (Some(record), Some(key)) => !record.status_callbacks.insert(key),
        _ => false,
    };
    let recorded_before = match (&record, &webhook.input) {
        (Some(record), Input::Recorded { recording, .. }) => {
            !record.is_recording_news(&recording.sid, recording.status)
        }
        _ => false,
    };
    if seen_before || recorded_before {
        // A status callback the provider retried (or sent twice), or older news than what was
        // applied: nothing changes.
        tracing::debug!("a status callback seen before: nothing changes");
        return (record, unsaved, Answer::Acknowledge, None);
    }
    if webhook.input != Input::TimedOut {
        turn.note(Event::Webhook {
            endpoint: webhook.endpoint.to_owned(),
            params: webhook.params.iter().cloned().collect(),
        });
    }
    if record.is_none()
        && let Some(ended) = ended_without_record(webhook)
    {
        // Nothing is known here of a call whose leg or whole ended (its record could not be
        // read): its slots are freed all the same, before any routing afresh takes new ones.
        deps.decider.capacity.tell(Apply(vec![ended]));
    }
    let before = record.clone();
    let (mut record, answer) = apply(deps, &mut turn, record, webhook).await;
    if let Some(record) = &mut record {
        settle_publisher(deps, &mut turn, record).await;
        let events = events_of(before.as_ref(), record);
        if !events.is_empty() {
            (unsaved.postbacks).extend(postbacks_for(&turn.plan, record, &events, turn.now));
        }
    }
    // The indexes learn at once, whatever the store does: the next decision must see it.
    if !turn.touched.is_empty() {
        deps.decider.dedupe.tell(Learn(turn.touched.clone()));
    }
    if let Some(after) = &record {
        let changes = load_changes(before.as_ref(), after, turn.now);
        if !changes.is_empty() {
            unsaved.load.extend(changes.iter().cloned());
            deps.decider.capacity.tell(Apply(changes));
        }
    }
    let mut saved = None;
    if let Some(record) = &mut record {
        record.timeline_len += turn.timeline.len() as u32;
        unsaved.timeline.append(&mut turn.timeline);
        unsaved.conversions.extend(turn.conversion.take());
        unsaved.touched.append(&mut turn.touched);
        let by = turn.store_deadline(deps, turn.answer_by);
        saved = save(deps, record, &mut unsaved, by, fresh).await;
        if saved != Some(Saved::Existed) {
            // After the save: a supervisor who reads the call on hearing of the change sees it.
            (deps.supervision).call_changed(
                before.as_ref().map(CallSummary::of).as_ref(),
                CallSummary::of(record),
            );
        }
    }
    (record, unsaved, answer, saved)
}

/// The call as stored, for a call this process holds no actor for (after a restart, or an
/// actor that stopped). Bounded: a caller must not wait on a database that does not answer.
async fn resume(deps: &CallDeps, sid: &CallSid) -> Option<CallRecord> {
    // The full store budget, even when the decision budget is nearly spent: a call resumed
    // late is answered in haste, a call taken for new would be routed afresh.
    match tokio::time::timeout(deps.timings.store_budget, deps.store.call(sid)).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::error!(%error, "could not read the call from the store; treating it as new");
            None
        }
        Err(_) => {
            tracing::error!("the store did not answer in time; treating the call as new");
            None
        }
    }
}

/// Saves the call and everything unsaved, by `by` (`fresh`: see [`CallChange::fresh`]); what
/// became of it, or `None` if the store did not take it. What the store does not take stays in
/// `unsaved`, retried on the next webhook or the next timer: the answer to the provider never
/// waits longer than the budgets. (A retry is not fresh: the first try may have been taken.)
async fn save(
    deps: &CallDeps,
    record: &CallRecord,
    unsaved: &mut Unsaved,
    by: Instant,
    fresh: bool,
) -> Option<Saved> {
    let change = CallChange {
        call: record,
        timeline: &unsaved.timeline,
        conversions: &unsaved.conversions,
        touched: &unsaved.touched,
        load: &unsaved.load,
        postbacks: &unsaved.postbacks,
        fresh,
    };
    match tokio::time::timeout_at(by, deps.store.save_call(&change)).await {
        Ok(Ok(Saved::Saved)) => {
            if !unsaved.postbacks.is_empty() {
                deps.outbox.queued();
            }
            *unsaved = Unsaved::default();
            Some(Saved::Saved)
        }
        Ok(Ok(Saved::Existed)) => Some(Saved::Existed),
        Ok(Err(error)) => {
            tracing::error!(%error, "the call could not be saved yet; it will be retried");
            None
        }
        Err(_) => {
            tracing::error!("the store did not save the call in time; it will be retried");
            None
        }
    }
}

/// The slot a webhook says is free, read from the webhook alone.
fn ended_without_record(webhook: &Webhook) -> Option<LoadChange> {
    let leg = |attempt: u32| Leg {
        call: webhook.sid.clone(),
        attempt,
    };
    match &webhook.input {
        Input::DialEnded { attempt, .. } => Some(LoadChange::Released(leg(*attempt))),
        Input::LegStatus { attempt, status, .. } if status.is_some_and(CallStatus::is_final) => {
            Some(LoadChange::Released(leg(*attempt)))
        }
        Input::CallStatus { status, .. } if status.is_some_and(CallStatus::is_final) => {
            Some(LoadChange::CallEnded(webhook.sid.clone()))
        }
        _ => None,
    }
}

/// What the provider said about the caller, for a call that must start from its webhook:
/// `From`, `To`, and the caller's state (`FromState`) if it said.
fn caller_of(webhook: &Webhook) -> Arrival<'_> {
    Arrival {
        from: webhook.params.text("From"),
        to: webhook.params.text("To"),
        from_state: webhook.params.get("FromState"),
    }
}

/// Who is calling which number, from where, as a call's first webhook tells it.
struct Arrival<'a> {
    from: &'a str,
    to: &'a str,
    from_state: Option<&'a str>,
}

async fn apply(
    deps: &CallDeps,
    turn: &mut Turn,
    record: Option<CallRecord>,
    webhook: &Webhook,
) -> (Option<CallRecord>, Answer) {
    match (&webhook.input, record) {
        (Input::Incoming { .. }, Some(mut record)) => {
            // A retried first webhook: the same answer again.
            let answer = current_answer(deps, turn, &mut record).await;
            (Some(record), answer)
        }
        (Input::Incoming { .. } | Input::Fallback { .. }, None) => {
            arrive(deps, turn, &webhook.sid, caller_of(webhook), None).await
        }
        (Input::Fallback { error_code }, Some(mut record)) => {
            // The provider got no TwiML for this call a moment ago: whatever fits it now (the
            // buyer it was dialing, the next one, or its end), as a retry would get.
            tracing::warn!(error_code = ?error_code, "the provider fell back after an error");
            let answer = current_answer(deps, turn, &mut record).await;
            (Some(record), answer)
        }
        (Input::Redirected { campaign }, Some(mut record)) => {
            let answer = if record.campaign_id == Some(*campaign) {
                current_answer(deps, turn, &mut record).await
            } else {
                enter_and_route(deps, turn, &mut record, *campaign).await
            };
            (Some(record), answer)
        }
        (Input::Redirected { campaign }, None) => {
            // Nothing stored: start from what the provider tells us and route there.
            arrive(deps, turn, &webhook.sid, caller_of(webhook), Some(*campaign)).await
        }
        (
            Input::DialEnded {
                status, call_over, ..
            },
            None,
        ) => {
            if status.connected() || *call_over {
                tracing::warn!("a dial ended for a call with no record; nothing is left to route");
                return (None, Answer::Hangup);
            }
            // The database lost the call mid-way: routing it afresh by the number dialed beats
            // hanging up on the caller.
            tracing::warn!("a dial ended for a call with no record; routing it afresh");
            arrive(deps, turn, &webhook.sid, caller_of(webhook), None).await
        }
        (
            Input::DialEnded {
                attempt,
                status,
                connected_seconds,
                call_over,
                bridged,
            },
            Some(mut record),
        ) => {
            let ended = DialEnd {
                attempt: *attempt,
                // A leg screened out (or not bridged) did not connect the caller.
                status: (record.attempt(*attempt)).map_or(*status, |a| a.result_of(*status, *bridged)),
                connected_seconds: *connected_seconds,
                call_over: *call_over,
            };
            let answer = dial_ended(deps, turn, &mut record, ended).await;
            (Some(record), answer)
        }
        (
            Input::LegStatus {
                attempt,
                status,
                leg_seconds,
                at,
                ..
            },
            Some(mut record),
        ) => {
            // When it happened, as the provider stamped it (the request may come late), unless
            // its clock is so far from ours that it is not to be believed.
            let believable =
                |at: &Timestamp| (turn.now.as_millisecond() - at.as_millisecond()).abs() <= 3_600_000;
            let at = at.filter(believable).unwrap_or(turn.now);
            if status.is_some_and(CallStatus::is_final) {
                record.leg_ended(*attempt, *leg_seconds, at);
            }
            let outcome = record.outcome;
            if status.is_some_and(CallStatus::answered)
                && record.leg_answered(*attempt, at)
                && let Some(buyer_id) = record.attempt(*attempt).map(|a| a.buyer_id)
            {
                turn.note(Event::Answered {
                    attempt: *attempt,
                    buyer_id,
                });
            }
            if record.outcome != outcome {
                note_end(turn, &record);
            }
            settle_from_leg(deps, turn, &mut record).await;
            (Some(record), Answer::Acknowledge)
        }
        (Input::CallStatus { status, .. }, Some(mut record)) => {
            if status.is_some_and(CallStatus::is_final) && !record.is_ended() {
                record.hung_up(turn.now);
                note_end(turn, &record);
            }
            settle_from_leg(deps, turn, &mut record).await;
            (Some(record), Answer::Acknowledge)
        }
        (Input::TimedOut, Some(mut record)) => {
            if !record.is_ended() {
                record.time_out(turn.now);
                note_end(turn, &record);
                tracing::warn!("no final callback came for the call: ended as timed out");
            }
            (Some(record), Answer::Acknowledge)
        }
        (Input::Whisper { attempt, answered_by }, Some(mut record)) => {
            let answer = whisper(turn, &mut record, *attempt, answered_by.as_deref());
            (Some(record), answer)
        }
        (Input::Detected { attempt, answered_by }, Some(mut record)) => {
            detected(turn, &mut record, *attempt, answered_by);
            (Some(record), Answer::Acknowledge)
        }
        (Input::Screened { attempt, digits }, Some(mut record)) => {
            let answer = screened(turn, &mut record, *attempt, digits);
            (Some(record), answer)
        }
        (Input::Recorded { attempt, recording }, Some(mut record)) => {
            recorded(turn, &mut record, *attempt, recording);
            (Some(record), Answer::Acknowledge)
        }
        (Input::TimedOut, None) => (None, Answer::Acknowledge),
        (
            Input::LegStatus { .. }
            | Input::CallStatus { .. }
            | Input::Recorded { .. }
            | Input::Detected { .. },
            None,
        ) => {
            tracing::warn!("a status callback for an unknown call: nothing is stored");
            (None, Answer::Acknowledge)
        }
        (Input::Whisper { .. } | Input::Screened { .. }, None) => {
            // A buyer's leg of a call nobody here knows: it is not put through to anyone.
            tracing::warn!("a whisper callback for an unknown call; the buyer's leg is hung up");
            (None, Answer::Hangup)
        }
    }
}

/// The call is over and a dial it answered never reported its end (its action request was
/// lost): settled from what the buyer's leg said of itself, as its action would have.
async fn settle_from_leg(deps: &CallDeps, turn: &mut Turn, record: &mut CallRecord) {
    let Some((attempt, leg_seconds)) = record.unsettled_by_its_dial() else {
        return;
    };
    let status = (record.attempt(attempt)).map_or(DialStatus::Completed, |a| {
        a.result_of(DialStatus::Completed, None)
    });
    tracing::warn!(
        attempt,
        leg_seconds,
        "no dial action came: the dial is settled from its leg"
    );
    let ended = DialEnd {
        attempt,
        status,
        connected_seconds: leg_seconds,
        call_over: true,
    };
    dial_ended(deps, turn, record, ended).await;
}

/// A new call: find its campaign by the number dialed (or the redirect's target) and route it.
async fn arrive(
    deps: &CallDeps,
    turn: &mut Turn,
    sid: &CallSid,
    arrival: Arrival<'_>,
    campaign: Option<CampaignId>,
) -> (Option<CallRecord>, Answer) {
    let caller = Caller::from_provider(arrival.from);
    let mut record = CallRecord::new(sid.clone(), caller, arrival.to.to_owned(), turn.now);
    record.caller_state = CallerPlace::of(&record.caller, arrival.from_state).state;
    let dialed = E164::of_called(arrival.to);
    let mut campaign = campaign.or_else(|| Some(turn.plan.campaign_for_number(dialed.as_ref()?)?.id));
    if campaign.is_none()
        && let Some(dialed) = &dialed
        && !turn.answered_elsewhere
    {
        // Unknown here, perhaps only for now: a campaign created on another node a moment ago.
        // Before refusing the call, the plan is checked against the store.
        turn.plan = deps.decider.plan.reread().await;
        campaign = turn.plan.campaign_for_number(dialed).map(|c| c.id);
    }
    let Some(campaign) = campaign else {
        if turn.answered_elsewhere {
            // Told the explicit end, not rejected: the record says what the caller got.
            let answer = drop_call(turn, &mut record, DropReason::Overloaded);
            return (Some(record), answer);
        }
        record.end(Outcome::Rejected, Some(DropReason::UnknownNumber), turn.now);
        note_end(turn, &record);
        return (Some(record), Answer::Reject);
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
        return (Some(record), Answer::Blocked);
    }
    let answer = enter_and_route(deps, turn, &mut record, campaign).await;
    (Some(record), answer)
}

async fn enter_and_route(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    campaign: CampaignId,
) -> Answer {
    let plan = turn.plan.clone();
    let Some(campaign) = plan.campaign(campaign) else {
        // The campaign was deleted while the call was on its way there.
        return drop_call(turn, record, DropReason::NoBuyer);
    };
    record.enter_campaign(campaign.company_id, campaign.id);
    let reserved = claim_reservation(deps, turn, record, campaign.id).await;
    route(deps, turn, record, campaign, reserved).await
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
async fn claim_reservation(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    campaign: CampaignId,
) -> Option<BuyerId> {
    if turn.answered_elsewhere {
        // The call ends here: a reservation it claimed would be lost to a later call.
        return None;
    }
    let claim = Claim {
        campaign,
        caller: record.caller.number()?.clone(),
        call_sid: record.sid.clone(),
        at: turn.now,
    };
    let reservation = ask_within(
        "the reservation book",
        turn.decide_by,
        deps.decider.reservations.ask(claim),
    )
    .await??;
    turn.note(Event::ReservationClaimed {
        reservation: reservation.uuid,
        buyer_id: reservation.buyer_id,
    });
    if reservation.publisher_id.is_some() {
        record.publisher_id = reservation.publisher_id;
        record.bid_payout = Some(reservation.payout);
    }
    Some(reservation.buyer_id)
}

/// The never-drop chain, one step: the next buyer (first the one an RTB bid reserved, if any),
/// the fallback, a redirect or the end.
async fn route(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    campaign: &Record<Campaign>,
    reserved: Option<BuyerId>,
) -> Answer {
    if turn.answered_elsewhere {
        return drop_call(turn, record, DropReason::Overloaded);
    }
    let plan = turn.plan.clone();
    let candidates: Vec<&Record<Buyer>> = plan.candidates(campaign).collect();
    let caller = record.caller.number();
    let duplicates = (deps
        .decider
        .duplicates_among(caller, &candidates, turn.now, turn.decide_by))
    .await;
    let blocked = (deps.decider)
        .blocked_among(&plan, &candidates, turn.now, turn.decide_by)
        .await;
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
    let mut random = deps.decider.random_for((&leg.call, leg.attempt));
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
        match (deps.decider.slots)
            .hold(buyer, leg.clone(), turn.now, turn.decide_by)
            .await
        {
            Some(Ok(())) => break decision,
            // Another call took the buyer's last slot (or its cap's last room) since the counts
            // were read, perhaps on another node: decide again without it (each round rules one
            // more buyer out, so this ends).
            Some(Err(block)) => {
                blocked.insert(buyer.id, block);
            }
            // The slot cannot be taken in time: the fallback, or the end (a haste decision
            // never dials this buyer again, so this ends too).
            None if in_haste => {
                blocked.insert(buyer.id, Block::Concurrency);
            }
            None => in_haste = true,
        }
    };
    if decision.in_haste {
        tracing::warn!(action = ?decision.action, "decided in haste: the indexes did not answer in time");
    }
    record.avoided_duplicates(decision.skipped_as_duplicates());
    let action = decision.action;
    turn.note(Event::Decision(decision));
    match action {
        Action::Dial { buyer, kind } => {
            let Some(buyer) = plan.buyer(buyer) else {
                return drop_call(turn, record, DropReason::NoBuyer);
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
            dial(&turn.plan, record, attempt, buyer)
        }
        Action::Redirect { campaign } => Answer::Redirect { campaign },
        Action::End { reason } => drop_call(turn, record, reason),
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
fn whisper(turn: &mut Turn, record: &mut CallRecord, attempt: u32, answered_by: Option<&str>) -> Answer {
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
    let buyer = turn.plan.buyer(dialed.buyer_id).cloned();
    let detects = (buyer.as_ref()).is_some_and(|b| b.spec.screen == Screen::MachineDetection);
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
    let campaign = turn.plan.campaign(dialed.campaign_id);
    let announcement = (buyer.as_ref())
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
fn detected(turn: &mut Turn, record: &mut CallRecord, attempt: u32, answered_by: &str) {
    let pending = record
        .attempt(attempt)
        .is_some_and(|a| a.screening == Some(Screening::Pending) && a.status.is_none());
    if pending {
        judge(
            turn,
            record,
            attempt,
            Screening::of_answered_by(Some(answered_by)),
        );
    }
}

/// Settles a screened attempt (a key pressed, a machine heard), noting it if it is news.
fn judge(turn: &mut Turn, record: &mut CallRecord, attempt: u32, result: Screening) {
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
fn screened(turn: &mut Turn, record: &mut CallRecord, attempt: u32, digits: &str) -> Answer {
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
fn recorded(turn: &mut Turn, record: &mut CallRecord, attempt: u32, report: &RecordingReport) {
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
async fn settle_publisher(deps: &CallDeps, turn: &mut Turn, record: &mut CallRecord) {
    let Some(publisher_id) = record.publisher_id else {
        return;
    };
    let terms = turn.plan.publisher_terms_for(record);
    let (payout, duplicate) = match Settlement::of(record, terms.as_ref()) {
        Settlement::Later => return,
        Settlement::Unearned => (Money::ZERO, None),
        Settlement::Earned(terms) => {
            let duplicate = match record.caller.number() {
                // Without a window nothing is a repeat: no need to ask (the payout is still
                // marked, below, for the history).
                Some(_) if terms.dedupe_seconds.get() == 0 => false,
                Some(caller) => {
                    let ask = PayOnce {
                        caller: caller.clone(),
                        scope: Scope::Publisher(publisher_id),
                        terms,
                        at: turn.now,
                    };
                    // Money, not a caller waiting: the store's budget, not the decision's. If the
                    // index does not say, nothing is settled now (the next webhook asks again).
                    let by = Instant::now() + deps.timings.store_budget;
                    match ask_within("the de-dupe index", by, deps.decider.dedupe.ask(ask)).await {
                        Some(paid) => !paid,
                        None => return,
                    }
                }
                // A caller who cannot be told apart (a withheld number) cannot be a repeat caller.
                None => false,
            };
            if !duplicate && let Some(caller) = record.caller.number() {
                turn.touched.push(Touched {
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
}

fn drop_call(turn: &mut Turn, record: &mut CallRecord, reason: DropReason) -> Answer {
    record.end(Outcome::Dropped, Some(reason), turn.now);
    note_end(turn, record);
    Answer::End
}

fn note_end(turn: &mut Turn, record: &CallRecord) {
    if let Some(outcome) = record.outcome {
        turn.note(Event::Ended {
            outcome,
            drop_reason: record.drop_reason,
        });
    }
}

/// A dial's action callback, as the call's actor reads it.
struct DialEnd {
    attempt: u32,
    status: DialStatus,
    connected_seconds: u32,
    /// The caller hung up: the parent call is over.
    call_over: bool,
}

async fn dial_ended(deps: &CallDeps, turn: &mut Turn, record: &mut CallRecord, ended: DialEnd) -> Answer {
    let plan = turn.plan.clone();
    let Some(dialed) = record.attempt(ended.attempt).cloned() else {
        turn.note(Event::Ignored {
            reason: format!("attempt {} was never made", ended.attempt),
        });
        return current_answer(deps, turn, record).await;
    };
    if dialed.status.is_some() {
        // A retried action callback: nothing happens twice.
        return current_answer(deps, turn, record).await;
    }
    let buyer = plan.buyer(dialed.buyer_id);
    let connected = ended.status.connected();
    // Settled now, at the end of the leg: a conversion by another call in the meantime counts.
    let duplicate = match (connected, buyer, record.caller.number()) {
        (true, Some(buyer), Some(caller)) => {
            match (deps
                .decider
                .duplicates_among(Some(caller), &[buyer], turn.now, turn.decide_by))
            .await
            {
                Some(duplicates) => Some(duplicates.contains(&buyer.id)),
                // Not known now: as it was known when dialed.
                None => dialed.duplicate,
            }
        }
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
        return current_answer(deps, turn, record).await;
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
            turn.touched = Touched::with_buyer(caller, buyer, touch, turn.now);
        }
        if settled.converted {
            turn.conversion = Some(conversion(record, &settled, buyer, turn.now));
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
            Answer::Hangup
        } else {
            current_answer(deps, turn, record).await
        };
    }
    // Not connected, caller still there: on to the next buyer.
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(deps, turn, record, campaign, None).await,
        None => drop_call(turn, record, DropReason::NoBuyer),
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

/// The answer that fits the call as it stands (a retried webhook gets what it got before).
async fn current_answer(deps: &CallDeps, turn: &mut Turn, record: &mut CallRecord) -> Answer {
    if turn.answered_elsewhere && !record.is_ended() {
        return drop_call(turn, record, DropReason::Overloaded);
    }
    match (record.state, record.outcome) {
        (CallState::Ended, Some(Outcome::Rejected)) => return Answer::Reject,
        (CallState::Ended, Some(Outcome::Dropped)) => return Answer::End,
        (CallState::Ended, _) => return Answer::Hangup,
        _ => {}
    }
    if let Some(attempt) = record.current_attempt() {
        if attempt.status.is_some_and(DialStatus::connected) || attempt.answered_at.is_some() {
            return Answer::Hangup;
        }
        if attempt.status.is_none()
            && let Some(buyer) = turn.plan.buyer(attempt.buyer_id)
        {
            return dial(&turn.plan, record, attempt.number, buyer);
        }
    }
    // Nothing in flight (a redirect the provider has not followed yet): decide again.
    let plan = turn.plan.clone();
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(deps, turn, record, campaign, None).await,
        None => drop_call(turn, record, DropReason::NoBuyer),
    }
}
