//! Live calls as actors: one [`CallActor`](call_actor::CallActor) per call, found through the
//! [`CallRegistry`](registry::CallRegistry), asking the decision layer ([`crate::decide`])
//! which buyers would take the caller.

mod call_actor;
mod persist;
pub mod reaper;
mod registry;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use actix::{Actor, ArbiterHandle, MailboxError, Message};
use tokio::time::{Instant, timeout, timeout_at};

use self::{call_actor::Flush, reaper::CallReaper, registry::CallRegistry};
use crate::{
    decide::Decider,
    domain::{
        call::{Answer, CallSid, Trail},
        call_flow::{Input, Request},
        form::FormParams,
    },
    postbacks::Outbox,
    store::CallStore,
    supervision::Supervision,
};

/// What every call actor needs: the decisions' context, and where calls are kept and told.
#[derive(Clone)]
pub struct CallDeps {
    pub decider: Decider,
    pub store: Arc<dyn CallStore>,
    /// Told of every change to a call: live events and metrics.
    pub supervision: Supervision,
    pub timings: CallTimings,
    /// Told when a save queued postbacks.
    pub outbox: Outbox,
}

/// How long call actors wait, and on what.
#[derive(Debug, Clone, Copy)]
pub struct CallTimings {
    /// An ended call's actor stays this long: callbacks that arrive together after the end
    /// (the call's status, the leg's, the dial's action) queue on it instead of racing.
    pub ended_grace: Duration,
    /// A live call quiet this long (a long conversation) leaves memory; its next webhook
    /// resumes it from the store.
    pub idle: Duration,
    /// How often a change the store did not take is tried again.
    pub save_retry: Duration,
    /// How long a webhook waits on the store before answering without it.
    pub store_budget: Duration,
    /// A call started this long ago that never had its final callback is ended (see
    /// [`reaper`]).
    pub stuck_after: Duration,
    /// How often calls are checked for that.
    pub sweep_every: Duration,
    /// A call ended this long ago whose publisher's payout is not settled (the store did not
    /// answer when it ended) is settled by the reaper's next sweep.
    pub settle_after: Duration,
}

impl Default for CallTimings {
    fn default() -> Self {
        Self {
            ended_grace: Duration::from_secs(30),
            idle: Duration::from_secs(600),
            save_retry: Duration::from_secs(5),
            store_budget: Duration::from_secs(1),
            stuck_after: Duration::from_secs(crate::config::DEFAULT_STUCK_CALL_SECONDS),
            sweep_every: Duration::from_secs(60),
            settle_after: Duration::from_secs(60),
        }
    }
}

/// A webhook for one call, as its actor receives it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Answer")]
pub struct Webhook {
    pub sid: CallSid,
    pub input: Input,
    /// The endpoint it arrived on and every parameter, for the call's timeline.
    pub endpoint: &'static str,
    /// Shared: a webhook handed to a replaced actor again is not copied.
    pub params: FormParams,
    /// What its URL says of the call, if Switchboard wrote one there (see [`Trail`]).
    pub trail: Option<Trail>,
    /// When it arrived: its decision budget runs from here.
    pub received: Instant,
    answering: Answering,
}

/// Who answers a webhook: its call's actor, or, once the decision budget is spent before the
/// actor took it up, [`Calls::handle`] alone. Decided once, so that the call's record never
/// tells of an answer the provider did not get.
#[derive(Debug, Clone, Default)]
struct Answering(Arc<AtomicU8>);

impl Answering {
    const OPEN: u8 = 0;
    const ACTOR: u8 = 1;
    const WITHOUT_ACTOR: u8 = 2;

    /// The actor takes the webhook up; `false` if it was answered without it.
    fn actor_takes(&self) -> bool {
        match (self.0).compare_exchange(Self::OPEN, Self::ACTOR, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            // An actor took it and stopped; its replacement takes it again.
            Err(current) => current == Self::ACTOR,
        }
    }

    /// The handler answers without the actor; `false` if the actor has it already.
    fn answer_without_actor(&self) -> bool {
        (self.0)
            .compare_exchange(
                Self::OPEN,
                Self::WITHOUT_ACTOR,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

impl Webhook {
    /// A webhook arriving now.
    pub fn new(
        sid: CallSid,
        input: Input,
        endpoint: &'static str,
        params: FormParams,
        trail: Option<Trail>,
    ) -> Self {
        Self {
            sid,
            input,
            endpoint,
            params,
            trail,
            received: Instant::now(),
            answering: Answering::default(),
        }
    }

    /// Whether its call's actor answers it; `false` if it was answered without the actor (the
    /// actor then records what the caller was told: the explicit end).
    pub(crate) fn actor_takes(&self) -> bool {
        self.answering.actor_takes()
    }

    /// The request, as the call's state machine reads it.
    pub fn request(&self) -> Request<'_> {
        Request {
            sid: &self.sid,
            input: &self.input,
            endpoint: self.endpoint,
            params: &self.params,
            trail: self.trail.as_ref(),
        }
    }
}

/// The live calls, as the HTTP layer sees them.
#[derive(Clone)]
pub struct Calls {
    registry: Arc<CallRegistry>,
    decision_budget: Duration,
}

/// However a call's actor is held up once it has taken a webhook up (each of its steps is
/// bounded), the provider is answered before its own timeout (15 s): with the longest decision
/// budget (5 s), within 13 s.
const ACTOR_LIMIT: Duration = Duration::from_secs(8);

impl Calls {
    /// The registry of live calls, and the reaper of calls whose end never came.
    pub fn start(deps: CallDeps) -> Self {
        Self::start_placed(deps, None)
    }

    /// As [`Calls::start`], with every call's actor on `place` rather than on the worker that
    /// received its first webhook (tests hold that thread up).
    pub fn start_placed(deps: CallDeps, place: Option<ArbiterHandle>) -> Self {
        let calls = Self {
            registry: Arc::new(CallRegistry::new(deps.clone(), place)),
            decision_budget: deps.decider.decision_budget,
        };
        CallReaper::new(calls.clone(), deps).start();
        calls
    }

    /// Hands a webhook to its call's actor and returns the answer, within the decision budget.
    /// If the actor has not taken the webhook up by then (its mailbox is backed up, or the
    /// thread it runs on is held up), the call is answered without it, as if no buyer were left (the explicit
    /// end); the webhook still reaches the actor, which records that end.
    pub async fn handle(&self, webhook: Webhook) -> Answer {
        let (answering, input) = (webhook.answering.clone(), webhook.input.clone());
        let answer_by = webhook.received + self.decision_budget;
        let calls = self.clone();
        let mut delivered = Box::pin(async move { calls.deliver(webhook).await });
        match timeout_at(answer_by, &mut delivered).await {
            Ok(answer) => return answer,
            Err(_) if !answering.answer_without_actor() => {
                // The actor has it, and its own steps keep to the budget: its answer is near.
                if let Ok(answer) = timeout(ACTOR_LIMIT, delivered).await {
                    return answer;
                }
                tracing::error!("the call's actor took the webhook up but never answered");
            }
            Err(_) => {
                tracing::error!("no call actor took the webhook up within the decision budget");
                actix_web::rt::spawn(delivered);
            }
        }
        input.answer_without_a_decision()
    }

    /// Hands a webhook to its call's actor. An actor that stopped in the meantime is replaced
    /// (the new one resumes the call from the store); if no actor can answer, the call still
    /// gets TwiML rather than an error.
    async fn deliver(&self, webhook: Webhook) -> Answer {
        for _ in 0..3 {
            let actor = self.registry.open(&webhook.sid);
            match actor.send(webhook.clone()).await {
                Ok(answer) => return answer,
                Err(MailboxError::Closed) => self.registry.closed(&webhook.sid, &actor),
                Err(MailboxError::Timeout) => break,
            }
        }
        tracing::error!(call_sid = %webhook.sid, "no call actor could take the webhook");
        webhook.input.answer_without_a_decision()
    }

    /// Saves what any call's actor holds that the store has not taken yet (before a stop).
    pub async fn flush(&self) {
        for actor in self.registry.actors() {
            // An actor that stopped meanwhile has nothing left to save.
            let _ = actor.send(Flush).await;
        }
    }

    /// How many calls have a live actor.
    pub fn live(&self) -> usize {
        self.registry.live_count()
    }
}
