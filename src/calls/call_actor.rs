//! One actor per live call: it applies the call's webhooks one at a time, routes, persists
//! every transition, and stops when the call ends.

use std::{collections::HashSet, sync::Arc};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};
use jiff::Timestamp;

use super::{
    CallDeps, Input, Webhook,
    dedupe_actor::{Duplicates, Learn},
    registry::{CallRegistry, Closed},
};
use crate::{
    domain::{
        call::{Answer, CallRecord, CallSid, CallState, Caller, Conversion, DropReason, Outcome},
        dedupe::{Rule, Touch, Touched},
        phone::E164,
        plan::{Buyer, BuyerId, Campaign, Record},
        routing::{Action, CallSituation, RoutingPlan, Verdict},
        timeline::{Event, TimelineEntry},
    },
    store::CallChange,
};

pub struct CallActor {
    sid: CallSid,
    deps: CallDeps,
    registry: Addr<CallRegistry>,
    /// `None` until the first webhook, which creates the call or resumes it from the store.
    record: Option<CallRecord>,
}

impl CallActor {
    pub fn new(sid: CallSid, deps: CallDeps, registry: Addr<CallRegistry>) -> Self {
        Self {
            sid,
            deps,
            registry,
            record: None,
        }
    }
}

impl Actor for CallActor {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(Closed {
            sid: self.sid.clone(),
            actor: ctx.address(),
        });
    }
}

impl Handler<Webhook> for CallActor {
    // Atomic: the next webhook of this call waits until this one is answered and saved.
    type Result = AtomicResponse<Self, Answer>;

    fn handle(&mut self, webhook: Webhook, _: &mut Self::Context) -> Self::Result {
        let deps = self.deps.clone();
        let record = self.record.take();
        AtomicResponse::new(Box::pin(
            async move { process(&deps, record, webhook).await }
                .into_actor(self)
                .map(|(record, answer), actor, ctx| {
                    // A call that ended (or was never ours) needs no actor; a late webhook finds it
                    // in the store.
                    if record.as_ref().is_none_or(CallRecord::is_ended) {
                        actix::ActorContext::stop(ctx);
                    }
                    actor.record = record;
                    answer
                }),
        ))
    }
}

/// What one webhook produces besides the answer: timeline entries, a conversion, de-dupe marks.
struct Turn {
    now: Timestamp,
    plan: Arc<RoutingPlan>,
    timeline: Vec<TimelineEntry>,
    conversion: Option<Conversion>,
    touched: Vec<Touched>,
}

impl Turn {
    fn note(&mut self, event: Event) {
        self.timeline.push(TimelineEntry { at: self.now, event });
    }
}

async fn process(
    deps: &CallDeps,
    record: Option<CallRecord>,
    webhook: Webhook,
) -> (Option<CallRecord>, Answer) {
    let mut turn = Turn {
        now: deps.clock.now(),
        plan: deps.plan.current().await,
        timeline: Vec::new(),
        conversion: None,
        touched: Vec::new(),
    };
    turn.note(Event::Webhook {
        endpoint: webhook.endpoint.to_owned(),
        params: webhook.params.iter().cloned().collect(),
    });
    let record = match record {
        Some(record) => Some(record),
        None => resume(deps, &webhook.sid).await,
    };
    let (mut record, answer) = apply(deps, &mut turn, record, &webhook).await;
    if let Some(record) = &mut record {
        save(deps, record, turn).await;
    }
    (record, answer)
}

/// The call as stored, if a webhook arrives for a call this process has no actor for (a
/// restart, or an actor that stopped).
async fn resume(deps: &CallDeps, sid: &CallSid) -> Option<CallRecord> {
    match deps.store.call(sid).await {
        Ok(found) => found,
        Err(error) => {
            tracing::error!(%error, "could not read the call from the store");
            None
        }
    }
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
        (Input::Incoming { from, to }, None) => arrive(deps, turn, &webhook.sid, from, to, None).await,
        (Input::Redirected { campaign }, record) => {
            let Some(mut record) = record else {
                // Nothing stored: start from what the provider tells us and route there.
                let (from, to) = (
                    webhook.param("From").unwrap_or(""),
                    webhook.param("To").unwrap_or(""),
                );
                return arrive(deps, turn, &webhook.sid, from, to, Some(*campaign)).await;
            };
            let answer = if record.campaign_id == Some(*campaign) {
                current_answer(deps, turn, &mut record).await
            } else {
                enter_and_route(deps, turn, &mut record, *campaign).await
            };
            (Some(record), answer)
        }
        (Input::DialEnded { .. }, None) => {
            // Nothing stored about the call (the database lost it): routing it afresh by the
            // number dialed beats hanging up on the caller.
            tracing::warn!("a dial ended for a call with no record; routing it afresh");
            let (from, to) = (
                webhook.param("From").unwrap_or(""),
                webhook.param("To").unwrap_or(""),
            );
            arrive(deps, turn, &webhook.sid, from, to, None).await
        }
        (
            Input::DialEnded {
                attempt,
                status,
                connected_seconds,
            },
            Some(mut record),
        ) => {
            let answer = dial_ended(deps, turn, &mut record, *attempt, *status, *connected_seconds).await;
            (Some(record), answer)
        }
        (Input::LegStatus { attempt, status }, Some(mut record)) => {
            if matches!(status.as_str(), "in-progress" | "answered")
                && record.leg_answered(*attempt, turn.now)
                && let Some(buyer_id) = record.attempt(*attempt).map(|a| a.buyer_id)
            {
                turn.note(Event::Answered {
                    attempt: *attempt,
                    buyer_id,
                });
            }
            (Some(record), Answer::Acknowledge)
        }
        (Input::CallStatus { status }, Some(mut record)) => {
            let over = matches!(
                status.as_str(),
                "completed" | "busy" | "failed" | "no-answer" | "canceled"
            );
            if over && !record.is_ended() {
                record.hung_up(turn.now);
                note_end(turn, &record);
            }
            (Some(record), Answer::Acknowledge)
        }
        (Input::LegStatus { .. } | Input::CallStatus { .. }, None) => {
            tracing::warn!("a status callback for an unknown call");
            (None, Answer::Acknowledge)
        }
    }
}

/// A new call: find its campaign by the number dialed (or the redirect's target) and route it.
async fn arrive(
    deps: &CallDeps,
    turn: &mut Turn,
    sid: &CallSid,
    from: &str,
    to: &str,
    campaign: Option<crate::domain::plan::CampaignId>,
) -> (Option<CallRecord>, Answer) {
    let mut record = CallRecord::new(sid.clone(), Caller::from_provider(from), to.to_owned(), turn.now);
    let campaign = match campaign {
        Some(id) => Some(id),
        None => E164::from_provider(to.trim())
            .ok()
            .and_then(|number| turn.plan.campaign_for_number(&number))
            .map(|campaign| campaign.id),
    };
    let Some(campaign) = campaign else {
        record.end(Outcome::Rejected, Some(DropReason::UnknownNumber), turn.now);
        note_end(turn, &record);
        return (Some(record), Answer::Reject);
    };
    let answer = enter_and_route(deps, turn, &mut record, campaign).await;
    (Some(record), answer)
}

async fn enter_and_route(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    campaign: crate::domain::plan::CampaignId,
) -> Answer {
    let plan = turn.plan.clone();
    let Some(campaign) = plan.campaign(campaign) else {
        // The campaign was deleted while the call was on its way there.
        return drop_call(turn, record, DropReason::NoBuyer);
    };
    if let Some(company) = campaign.company_id {
        record.enter_campaign(company, campaign.id);
    }
    route(deps, turn, record, campaign).await
}

/// The never-drop chain, one step: the next buyer, the fallback, a redirect or the end.
async fn route(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    campaign: &Record<Campaign>,
) -> Answer {
    let plan = turn.plan.clone();
    let candidates: Vec<&Record<Buyer>> = plan.candidates(campaign).collect();
    let duplicates = duplicates_among(deps, &record.caller, &candidates, turn.now).await;
    let tried = record.tried();
    let decision = plan.decide(
        campaign,
        &CallSituation {
            duplicates: &duplicates,
            tried: &tried,
            visited: &record.visited,
        },
    );
    record.avoided_duplicates(
        decision
            .considered
            .iter()
            .filter(|c| c.verdict == Verdict::Duplicate)
            .map(|c| c.buyer_id),
    );
    let action = decision.action;
    turn.note(Event::Decision(decision));
    match action {
        Action::Dial { buyer, kind } => {
            let Some(buyer) = plan.buyer(buyer) else {
                return drop_call(turn, record, DropReason::NoBuyer);
            };
            let duplicate = record.caller.number().map(|_| duplicates.contains(&buyer.id));
            let attempt = record
                .begin_attempt(buyer.id, campaign.id, kind, duplicate, turn.now)
                .number;
            dial(attempt, buyer)
        }
        Action::Redirect { campaign } => Answer::Redirect { campaign },
        Action::End { reason } => drop_call(turn, record, reason),
    }
}

fn dial(attempt: u32, buyer: &Record<Buyer>) -> Answer {
    Answer::Dial {
        attempt,
        destination: buyer.spec.destination.clone(),
        ring_timeout_seconds: buyer.spec.ring_timeout_seconds.get(),
        send_digits: buyer.spec.send_digits.as_ref().map(|d| d.as_str().to_owned()),
    }
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

/// Which candidates would consider a call from this caller a duplicate now. An unknown caller
/// cannot be a duplicate; if the index cannot answer, routing goes on as if nobody had
/// converted the caller (the call is not lost for want of a de-dupe answer).
async fn duplicates_among(
    deps: &CallDeps,
    caller: &Caller,
    buyers: &[&Record<Buyer>],
    at: Timestamp,
) -> HashSet<BuyerId> {
    let Some(number) = caller.number() else {
        return HashSet::new();
    };
    let check = Duplicates {
        caller: number.clone(),
        rules: buyers.iter().map(|b| Rule::of(b)).collect(),
        at,
    };
    deps.dedupe.send(check).await.unwrap_or_else(|error| {
        tracing::error!(%error, "the de-dupe index did not answer; routing without it");
        HashSet::new()
    })
}

async fn dial_ended(
    deps: &CallDeps,
    turn: &mut Turn,
    record: &mut CallRecord,
    attempt: u32,
    status: crate::domain::call::DialStatus,
    connected_seconds: u32,
) -> Answer {
    let plan = turn.plan.clone();
    let Some(dialed) = record.attempt(attempt).cloned() else {
        turn.note(Event::Ignored {
            reason: format!("attempt {attempt} was never made"),
        });
        return current_answer(deps, turn, record).await;
    };
    if dialed.status.is_some() {
        // A retried action callback: nothing happens twice.
        return current_answer(deps, turn, record).await;
    }
    let buyer = plan.buyer(dialed.buyer_id);
    // Settled now, at the end of the leg: a conversion by another call in the meantime counts.
    let duplicate = match (status.connected(), buyer) {
        (true, Some(buyer)) => match record.caller.number() {
            Some(_) => Some(
                duplicates_among(deps, &record.caller, &[buyer], turn.now)
                    .await
                    .contains(&buyer.id),
            ),
            None => None,
        },
        _ => dialed.duplicate,
    };
    let conversion_seconds = buyer.map_or(u32::MAX, |b| b.spec.conversion_seconds.get());
    let Some(settled) = record.attempt_ended(
        attempt,
        status,
        connected_seconds,
        duplicate,
        conversion_seconds,
        turn.now,
    ) else {
        return current_answer(deps, turn, record).await;
    };
    turn.note(Event::DialEnded {
        attempt,
        buyer_id: settled.buyer_id,
        status,
        connected_seconds,
        duplicate: settled.duplicate,
        converted: settled.converted,
    });

    if status.connected() {
        if let (Some(caller), Some(buyer)) = (record.caller.number(), buyer) {
            let touch = if settled.converted {
                Touch::Converted
            } else {
                Touch::Connected
            };
            turn.touched = Touched::with_buyer(caller, buyer, touch, turn.now);
            if settled.converted {
                turn.conversion = Some(conversion(record, &settled, buyer, turn.now));
            }
        } else if settled.converted
            && let Some(buyer) = buyer
        {
            // An unknown caller converts too; there is just no number to de-dupe on.
            turn.conversion = Some(conversion(record, &settled, buyer, turn.now));
        }
        return Answer::Hangup;
    }
    let is_current = record.current_attempt().is_some_and(|a| a.number == attempt);
    if record.is_ended() || !is_current {
        return current_answer(deps, turn, record).await;
    }
    // Not connected: on to the next buyer.
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(deps, turn, record, campaign).await,
        None => drop_call(turn, record, DropReason::NoBuyer),
    }
}

fn conversion(
    record: &CallRecord,
    attempt: &crate::domain::call::Attempt,
    buyer: &Record<Buyer>,
    at: Timestamp,
) -> Conversion {
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
    match (record.state, record.outcome) {
        (CallState::Ended, Some(Outcome::Rejected)) => return Answer::Reject,
        (CallState::Ended, Some(Outcome::Dropped)) => return Answer::End,
        (CallState::Ended, _) => return Answer::Hangup,
        _ => {}
    }
    if let Some(attempt) = record.current_attempt() {
        if attempt.status.is_some_and(|s| s.connected()) || attempt.answered_at.is_some() {
            return Answer::Hangup;
        }
        if attempt.status.is_none()
            && let Some(buyer) = turn.plan.buyer(attempt.buyer_id)
        {
            return dial(attempt.number, buyer);
        }
    }
    // Nothing in flight (a redirect the provider has not followed yet): decide again.
    let plan = turn.plan.clone();
    match record.campaign_id.and_then(|id| plan.campaign(id)) {
        Some(campaign) => route(deps, turn, record, campaign).await,
        None => drop_call(turn, record, DropReason::NoBuyer),
    }
}

/// Persists the call after the webhook; the answer goes out even if the store failed, since a
/// caller on the line must not wait on a database. Touches reach the de-dupe index either way.
async fn save(deps: &CallDeps, record: &mut CallRecord, turn: Turn) {
    record.timeline_len += turn.timeline.len() as u32;
    let change = CallChange {
        call: record,
        timeline: &turn.timeline,
        conversion: turn.conversion.as_ref(),
        touched: &turn.touched,
    };
    if let Err(error) = deps.store.save_call(&change).await {
        tracing::error!(%error, "the call could not be saved; it was answered all the same");
    }
    if !turn.touched.is_empty() {
        deps.dedupe.do_send(Learn(turn.touched));
    }
}
