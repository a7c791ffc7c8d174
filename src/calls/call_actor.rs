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
    persist::{Resumed, Unsaved, patience, resume, save, store_deadline},
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
        form::FormParams,
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
    /// The record held was built without the stored one, from what requests said (see
    /// `call_flow::blind`): it knows only part of the call until the store merges it.
    partial: bool,
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
            partial: false,
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

impl CallActor {
    fn take_held(&mut self) -> Held {
        Held {
            record: self.record.take(),
            partial: self.partial,
            unsaved: std::mem::take(&mut self.unsaved),
        }
    }

    fn hold(&mut self, held: Held, ctx: &mut Context<Self>) {
        self.record = held.record;
        self.partial = held.partial;
        self.unsaved = held.unsaved;
        self.schedule(ctx);
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
        let held = self.take_held();
        AtomicResponse::new(Box::pin(
            async move { process(&deps, held, webhook).await }
                .into_actor(self)
                .map(|(held, answer), actor, ctx| {
                    actor.hold(held, ctx);
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
        let held = self.take_held();
        AtomicResponse::new(Box::pin(
            async move {
                let by = Instant::now() + deps.timings.store_budget;
                flush(&deps, held, by).await
            }
            .into_actor(self)
            .map(|held, actor, ctx| actor.hold(held, ctx)),
        ))
    }
}

/// What an actor holds of its call between turns.
struct Held {
    record: Option<CallRecord>,
    partial: bool,
    unsaved: Unsaved,
}

/// How a turn is taken.
#[derive(Default)]
struct Mode {
    /// Without the stored record (see `call_flow::blind`).
    blind: bool,
    /// A new call taken without a read of the store: inserted only if the store holds none.
    new: bool,
    /// The webhook was answered without the actor.
    answered_elsewhere: bool,
    /// The call as the store held it before a merge (see `Facts::news_since`).
    news_since: Option<Arc<CallRecord>>,
}

/// A turn taken: the call after it, what is left unsaved, the answer, and what became of the
/// save.
struct Turned {
    record: Option<CallRecord>,
    unsaved: Unsaved,
    answer: Answer,
    saved: Option<Saved>,
}

async fn process(deps: &CallDeps, mut held: Held, webhook: Webhook) -> (Held, Answer) {
    // Taken up before anything here waits: past the decision budget the webhook is answered
    // without the actor, and the turn then records what the caller was told.
    let answered_elsewhere = !webhook.actor_takes();
    let until = patience(deps, webhook.received);
    if held.partial {
        // A record that knows only part of the call: the store takes it in first, so that the
        // turn sees the whole call.
        held = flush(deps, held, until).await;
    }
    // A call's first webhook on a tracking number is nearly always a new call. Where this
    // process is the store's only writer, it is taken for new without a read of the store
    // before routing: its save inserts it only if the store holds no such call. Otherwise (the
    // provider retried the first webhook across a restart) the turn is undone and taken again
    // on the stored call.
    let starts = matches!(webhook.input, Input::Incoming { .. } | Input::Fallback { .. });
    let mut mode = Mode {
        answered_elsewhere,
        ..Mode::default()
    };
    let record = match held.record {
        Some(record) => {
            mode.blind = held.partial;
            Some(record)
        }
        None if starts && deps.decider.slots.sole_writer() => {
            mode.new = true;
            None
        }
        // Never taken for new while the store may hold it: a known call routed afresh would
        // dial again a buyer that just did not answer.
        None => match resume(deps, &webhook.sid, until).await {
            Resumed::Found(record) => Some(*record),
            Resumed::Absent => {
                mode.new = true;
                None
            }
            Resumed::Unreadable => {
                mode.new = starts;
                mode.blind = !starts;
                None
            }
        },
    };
    let blind = mode.blind;
    let turned = take_turn(deps, record, held.unsaved, &webhook, mode).await;
    let turned = match turned.saved {
        Some(Saved::Existed) => retake(deps, turned, &webhook, until, answered_elsewhere).await,
        _ => turned,
    };
    let answer = turned.answer.clone();
    let partial = blind && turned.unsaved.merges();
    (settle_merged(deps, turned, partial).await, answer)
}

/// A new call's turn whose save found the call stored already: undone, and taken again on the
/// stored call (or, if the store cannot give it now, without it).
async fn retake(
    deps: &CallDeps,
    untaken: Turned,
    webhook: &Webhook,
    until: Instant,
    answered_elsewhere: bool,
) -> Turned {
    tracing::info!("the call was in the store already: its first webhook is taken again on it");
    let mut mode = Mode {
        answered_elsewhere,
        ..Mode::default()
    };
    let stored = match resume(deps, &webhook.sid, until).await {
        Resumed::Found(record) => Some(*record),
        Resumed::Absent | Resumed::Unreadable => {
            mode.blind = true;
            None
        }
    };
    if let Some(untaken) = &untaken.record {
        give_back_slots(deps, untaken, stored.as_ref());
    }
    take_turn(deps, stored, Unsaved::default(), webhook, mode).await
}

/// Saves what the store has not taken (a retry, a last try before the process stops, or a
/// record to be merged before a turn).
async fn flush(deps: &CallDeps, held: Held, by: Instant) -> Held {
    let Held {
        record,
        partial,
        mut unsaved,
    } = held;
    let Some(record) = record else {
        return Held {
            record,
            partial,
            unsaved,
        };
    };
    let saved = save(deps, &record, &mut unsaved, by, None).await;
    let turned = Turned {
        record: Some(record),
        unsaved,
        answer: Answer::Acknowledge,
        saved,
    };
    settle_merged(deps, turned, partial).await
}

/// What the actor holds after a turn or a save: once the store merged a record built without
/// it, the merged call, with what changed told and settled (a turn of its own).
async fn settle_merged(deps: &CallDeps, turned: Turned, partial: bool) -> Held {
    let Some(Saved::Merged { stored, merged }) = turned.saved else {
        return Held {
            record: turned.record,
            partial: partial && turned.unsaved.merges(),
            unsaved: turned.unsaved,
        };
    };
    tracing::info!("what was decided without the stored record is merged into it");
    (deps.supervision).call_changed(
        stored.as_deref().map(CallSummary::of).as_ref(),
        CallSummary::of(&merged),
    );
    let settle = Webhook::new(
        merged.sid.clone(),
        Input::Settle,
        "settle",
        FormParams::default(),
        None,
    );
    let mode = Mode {
        news_since: Some(Arc::from(stored.map_or_else(|| blank(&merged), |stored| *stored))),
        ..Mode::default()
    };
    let settled = take_turn(deps, Some(*merged), Unsaved::default(), &settle, mode).await;
    Held {
        record: settled.record,
        partial: false,
        unsaved: settled.unsaved,
    }
}

/// The call before anything happened to it: what a merge into nothing changed is everything.
fn blank(call: &CallRecord) -> CallRecord {
    CallRecord::new(
        call.sid.clone(),
        call.caller.clone(),
        call.called.clone(),
        call.started_at,
    )
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

/// One webhook applied to the call (`record`: `None` for a call nobody knows, or one new or
/// taken blind): the state machine decides; this asks what it needs to know and carries out
/// what it decided.
async fn take_turn(
    deps: &CallDeps,
    record: Option<CallRecord>,
    mut unsaved: Unsaved,
    webhook: &Webhook,
    mode: Mode,
) -> Turned {
    let budget = deps.decider.decision_budget;
    // A turn that waited for the store (up to its patience) still has half a budget to decide
    // and save in.
    let answer_by = (webhook.received + budget).max(Instant::now() + budget / 2);
    // The indexes are asked until then (a quarter of the budget is kept for saving the
    // decision); past it, routing decides in haste.
    let decide_by = answer_by - budget / 4;
    let ids = IdSeed::generate();
    let mut facts = Facts {
        now: deps.decider.clock.now(),
        ids,
        plan: deps.decider.plan.current().await,
        answered_elsewhere: mode.answered_elsewhere,
        routing_seed: deps.decider.routing_seed,
        blind: mode.blind,
        news_since: mode.news_since,
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
        return Turned {
            record: after,
            unsaved,
            answer,
            saved: None,
        };
    }
    // The indexes learn at once, whatever the store does: the next decision must see it.
    if !effects.touched.is_empty() {
        deps.decider.dedupe.tell(Learn(effects.touched.clone()));
    }
    if !effects.load.is_empty() {
        deps.decider.capacity.tell(Apply(effects.load.clone()));
    }
    let Some(after) = after else {
        return Turned {
            record: None,
            unsaved,
            answer,
            saved: None,
        };
    };
    if mode.blind {
        unsaved.merging();
    }
    unsaved.absorb(effects, ids.key());
    let new = mode.new.then(|| ids.key());
    let saved = save(deps, &after, &mut unsaved, store_deadline(deps, answer_by), new).await;
    // After the save: a supervisor who reads the call on hearing of the change sees it. (A
    // record that knows only part of the call is shown once it is merged.)
    if !mode.blind && saved != Some(Saved::Existed) {
        (deps.supervision).call_changed(
            record.as_ref().map(CallSummary::of).as_ref(),
            CallSummary::of(&after),
        );
    }
    Turned {
        record: Some(after),
        unsaved,
        answer,
        saved,
    }
}
