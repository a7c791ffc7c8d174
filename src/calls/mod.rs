//! Live calls as actors: one [`CallActor`](call_actor::CallActor) per call, found through the
//! [`CallRegistry`](registry::CallRegistry), asking the [`DedupeActor`] which buyers have
//! converted the caller.

mod call_actor;
pub mod capacity_actor;
pub mod dedupe_actor;
pub mod plan_cache;
pub mod reaper;
mod registry;

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use actix::{Actor, Addr, Arbiter, MailboxError, Message};
use jiff::Timestamp;
use rand::{SeedableRng, rngs::StdRng};

use self::{
    call_actor::Flush,
    reaper::CallReaper,
    registry::{Actors, CallRegistry, Closed, LiveCount, Open},
};
pub use self::{
    call_actor::is_final, capacity_actor::CapacityActor, dedupe_actor::DedupeActor, plan_cache::PlanCache,
};
use self::{capacity_actor::Blocked, dedupe_actor::Duplicates};
use crate::{
    clock::Clock,
    domain::{
        call::{Answer, CallSid, CallbackKey, DialStatus},
        capacity::Block,
        dedupe::Rule,
        phone::E164,
        plan::{Buyer, BuyerId, CampaignId, Record},
        routing::RoutingPlan,
    },
    rtb::ReservationActor,
    store::Store,
    supervision::Supervision,
};

/// What every call actor needs.
#[derive(Clone)]
pub struct CallDeps {
    pub store: Arc<dyn Store>,
    pub dedupe: Addr<DedupeActor>,
    pub capacity: Addr<CapacityActor>,
    /// RTB reservations, which a call claims when it reaches their campaign.
    pub reservations: Addr<ReservationActor>,
    pub plan: Arc<PlanCache>,
    /// Told of every change to a call: live events and metrics.
    pub supervision: Supervision,
    pub clock: Arc<dyn Clock>,
    pub timings: CallTimings,
    /// Where the draws between buyers of equal priority come from (see [`CallDeps::random_for`]).
    pub routing_seed: u64,
}

impl CallDeps {
    /// The random source for one routing decision: a function of the seed and what is decided
    /// (a call's attempt, a ping), so a decision does not depend on which other calls happened
    /// to draw first, and a test with a fixed seed is exact.
    pub fn random_for(&self, decision: impl Hash) -> StdRng {
        let mut hasher = DefaultHasher::new();
        (self.routing_seed, decision).hash(&mut hasher);
        StdRng::seed_from_u64(hasher.finish())
    }

    /// Which of `buyers` would consider a call from `caller` a duplicate now. An unknown caller
    /// cannot be a duplicate; if the index cannot answer, routing goes on as if nobody had
    /// converted the caller (the call is not lost for want of a de-dupe answer).
    pub async fn duplicates_among(
        &self,
        caller: Option<&E164>,
        buyers: &[&Record<Buyer>],
        at: Timestamp,
    ) -> HashSet<BuyerId> {
        let Some(caller) = caller else {
            return HashSet::new();
        };
        let check = Duplicates {
            caller: caller.clone(),
            rules: buyers.iter().map(|b| Rule::of(b)).collect(),
            at,
        };
        self.dedupe.send(check).await.unwrap_or_else(|error| {
            tracing::error!(%error, "the de-dupe index did not answer; routing without it");
            HashSet::new()
        })
    }

    /// Which of `buyers` are at a cap now. If the index cannot answer, routing goes on without
    /// caps rather than drop the caller.
    pub async fn blocked_among(
        &self,
        plan: &Arc<RoutingPlan>,
        buyers: &[&Record<Buyer>],
        at: Timestamp,
    ) -> HashMap<BuyerId, Block> {
        let capped: Vec<BuyerId> = (buyers.iter())
            .filter(|b| b.spec.caps.is_limited())
            .map(|b| b.id)
            .collect();
        if capped.is_empty() {
            return HashMap::new();
        }
        let blocked = Blocked {
            plan: plan.clone(),
            buyers: capped,
            at,
        };
        self.capacity.send(blocked).await.unwrap_or_else(|error| {
            tracing::error!(%error, "the capacity index did not answer; routing without caps");
            HashMap::new()
        })
    }
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
    pub params: Vec<(String, String)>,
}

impl Webhook {
    /// A parameter the provider sent, if it did.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }

    /// What tells this status callback from a retry of it, if the provider numbered it.
    pub fn callback_key(&self) -> Option<CallbackKey> {
        match self.input {
            Input::CallStatus { sequence, .. } => Some(CallbackKey {
                leg: 0,
                sequence: sequence?,
            }),
            Input::LegStatus {
                attempt, sequence, ..
            } => Some(CallbackKey {
                leg: attempt,
                sequence: sequence?,
            }),
            _ => None,
        }
    }
}

/// The first value of a form parameter.
pub fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The call arrived on a tracking number.
    Incoming { from: String, to: String },
    /// A `<Dial>` ended: its action URL.
    DialEnded {
        attempt: u32,
        status: DialStatus,
        connected_seconds: u32,
        /// The caller had hung up (the request's `CallStatus` is final).
        call_over: bool,
    },
    /// A buyer's leg changed state: its status callback.
    LegStatus {
        attempt: u32,
        status: String,
        /// `SequenceNumber`, when the provider sends it.
        sequence: Option<u32>,
    },
    /// The provider followed a `<Redirect>` into another campaign.
    Redirected { campaign: CampaignId },
    /// The parent call's status callback.
    CallStatus { status: String, sequence: Option<u32> },
    /// Not a webhook: the reaper found the call past the longest a call can last.
    TimedOut,
}

/// The live calls, as the HTTP layer sees them.
#[derive(Clone)]
pub struct Calls {
    registry: Addr<CallRegistry>,
}

impl Calls {
    /// The registry of live calls, and the reaper of calls whose end never came.
    pub fn start(deps: CallDeps) -> Self {
        let calls = Self {
            registry: CallRegistry::new(deps.clone()).start(),
        };
        CallReaper::new(calls.clone(), deps).start();
        calls
    }

    /// Hands a webhook to its call's actor and returns the answer. An actor that stopped in
    /// the meantime is replaced (the new one resumes the call from the store); if no actor can
    /// answer, the call still gets TwiML rather than an error.
    pub async fn handle(&self, webhook: Webhook) -> Answer {
        for _ in 0..3 {
            let open = Open {
                sid: webhook.sid.clone(),
                arbiter: Arbiter::current(),
            };
            let Ok(actor) = self.registry.send(open).await else {
                break;
            };
            match actor.send(webhook.clone()).await {
                Ok(answer) => return answer,
                Err(MailboxError::Closed) => self.registry.do_send(Closed {
                    sid: webhook.sid.clone(),
                    actor,
                }),
                Err(MailboxError::Timeout) => break,
            }
        }
        tracing::error!(call_sid = %webhook.sid, "no call actor could take the webhook");
        match webhook.input {
            Input::LegStatus { .. } | Input::CallStatus { .. } => Answer::Acknowledge,
            // A dial just ended: whatever it was, there is nobody to route the caller to.
            Input::DialEnded { .. } => Answer::Hangup,
            Input::Incoming { .. } | Input::Redirected { .. } => Answer::End,
            Input::TimedOut => Answer::Acknowledge,
        }
    }

    /// Saves what any call's actor holds that the store has not taken yet (before a stop).
    pub async fn flush(&self) {
        let actors = self.registry.send(Actors).await.unwrap_or_default();
        for actor in actors {
            // An actor that stopped meanwhile has nothing left to save.
            let _ = actor.send(Flush).await;
        }
    }

    /// How many calls have a live actor.
    pub async fn live(&self) -> usize {
        self.registry.send(LiveCount).await.unwrap_or_default()
    }
}
