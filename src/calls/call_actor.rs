//! One actor per live call: it applies the call's webhooks one at a time, routes, persists
//! every transition, and stops a while after the call ends.

use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message,
    SpawnHandle, WrapFuture,
};
use tokio::time::Instant;

use super::{
    CallDeps, Webhook,
    persist::{Unsaved, resume, save, store_deadline},
    registry::CallRegistry,
};
use crate::{
    decide::{
        capacity::{Apply, Hold},
        dedupe::Learn,
    },
    domain::{
        call::{Answer, Attempt, CallRecord, CallSid},
        call_flow::{self, Applied, Facts, Input, Question, Step},
        capacity::{Leg, LoadChange},
        ids::IdSeed,
        supervision::CallSummary,
    },
    fresh::Generate,
    store::Saved,
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
/// the call after it, what is left unsaved, the answer, and what became of the save. The
/// state machine decides; this asks what it needs to know and carries out what it decided.
async fn take_turn(
    deps: &CallDeps,
    record: Option<CallRecord>,
    mut unsaved: Unsaved,
    webhook: &Webhook,
    fresh: bool,
) -> (Option<CallRecord>, Unsaved, Answer, Option<Saved>) {
    let budget = deps.decider.decision_budget;
    let answer_by = webhook.received + budget;
    // The indexes are asked until then (a quarter of the budget is kept for saving the
    // decision); past it, routing decides in haste.
    let decide_by = answer_by - budget / 4;
    let mut facts = Facts {
        now: deps.decider.clock.now(),
        ids: IdSeed::generate(),
        plan: deps.decider.plan.current().await,
        answered_elsewhere: !webhook.actor_takes(),
        routing_seed: deps.decider.routing_seed,
        replies: Vec::new(),
    };
    let applied = loop {
        let question = match call_flow::step(record.as_ref(), webhook.request(), &facts) {
            Step::Done(applied) => break *applied,
            Step::Ask(question) => question,
        };
        // A payout is money, not a caller waiting: the store's budget, not the decision's.
        let by = match question {
            Question::PayOnce { .. } => Instant::now() + deps.timings.store_budget,
            _ => decide_by,
        };
        let reply = (deps.decider).reply(Some(&webhook.sid), question, facts.now, by);
        facts.replies.push(reply.await);
    };
    let Applied {
        record: after,
        answer,
        effects,
        repeated,
    } = applied;
    for warning in &effects.warnings {
        tracing::warn!("{warning}");
    }
    if repeated {
        tracing::debug!("a status callback seen before, or older news: nothing changes");
        return (after, unsaved, answer, None);
    }
    // The indexes learn at once, whatever the store does: the next decision must see it.
    if !effects.touched.is_empty() {
        deps.decider.dedupe.tell(Learn(effects.touched.clone()));
    }
    if !effects.load.is_empty() {
        deps.decider.capacity.tell(Apply(effects.load.clone()));
    }
    let Some(after) = after else {
        return (None, unsaved, answer, None);
    };
    unsaved.absorb(effects);
    let saved = save(deps, &after, &mut unsaved, store_deadline(deps, answer_by), fresh).await;
    if saved != Some(Saved::Existed) {
        // After the save: a supervisor who reads the call on hearing of the change sees it.
        (deps.supervision).call_changed(
            record.as_ref().map(CallSummary::of).as_ref(),
            CallSummary::of(&after),
        );
    }
    (Some(after), unsaved, answer, saved)
}
