//! Live calls as actors: one [`CallActor`](call_actor::CallActor) per call, found through the
//! [`CallRegistry`](registry::CallRegistry), asking the [`DedupeActor`] which buyers have
//! converted the caller.

mod call_actor;
pub mod capacity_actor;
pub mod dedupe_actor;
pub mod plan_cache;
mod registry;

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use actix::{Actor, Addr, Arbiter, MailboxError, Message};
use rand::{SeedableRng, rngs::StdRng};

use self::registry::{CallRegistry, Closed, LiveCount, Open};
pub use self::{
    call_actor::is_final, capacity_actor::CapacityActor, dedupe_actor::DedupeActor, plan_cache::PlanCache,
};
use crate::{
    clock::Clock,
    domain::{
        call::{Answer, CallSid, DialStatus},
        plan::CampaignId,
    },
    store::Store,
};

/// What every call actor needs.
#[derive(Clone)]
pub struct CallDeps {
    pub store: Arc<dyn Store>,
    pub dedupe: Addr<DedupeActor>,
    pub capacity: Addr<CapacityActor>,
    pub plan: Arc<PlanCache>,
    pub clock: Arc<dyn Clock>,
    pub timings: CallTimings,
    /// Where the draws between buyers of equal priority come from (see [`CallDeps::random_for`]).
    pub routing_seed: u64,
}

impl CallDeps {
    /// The random source for one routing decision: a function of the seed, the call and the
    /// attempt, so a decision does not depend on which other calls happened to draw first, and
    /// a test with a fixed seed is exact.
    pub fn random_for(&self, call: &CallSid, attempt: u32) -> StdRng {
        let mut hasher = DefaultHasher::new();
        (self.routing_seed, call, attempt).hash(&mut hasher);
        StdRng::seed_from_u64(hasher.finish())
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
}

impl Default for CallTimings {
    fn default() -> Self {
        Self {
            ended_grace: Duration::from_secs(30),
            idle: Duration::from_secs(600),
            save_retry: Duration::from_secs(5),
            store_budget: Duration::from_secs(1),
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
    LegStatus { attempt: u32, status: String },
    /// The provider followed a `<Redirect>` into another campaign.
    Redirected { campaign: CampaignId },
    /// The parent call's status callback.
    CallStatus { status: String },
}

/// The live calls, as the HTTP layer sees them.
#[derive(Clone)]
pub struct Calls {
    registry: Addr<CallRegistry>,
}

impl Calls {
    pub fn start(deps: CallDeps) -> Self {
        Self {
            registry: CallRegistry::new(deps).start(),
        }
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
        }
    }

    /// How many calls have a live actor.
    pub async fn live(&self) -> usize {
        self.registry.send(LiveCount).await.unwrap_or_default()
    }
}
