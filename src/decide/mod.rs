//! The decision layer, below calls and RTB: what a routing decision asks and where its
//! answers live. The routing plan in memory, the de-dupe index, the capacity index and the
//! reservation book (each owned by an actor, taken in place when free: see [`owned`]), where a
//! leg takes its buyer's slot ([`slots`]), and one [`Decider`] handle on all of them. Calls,
//! RTB pings, the cluster's news and the HTTP layer depend on this module; it depends on none
//! of them.

pub mod capacity;
pub mod dedupe;
pub mod owned;
pub mod plan_cache;
pub mod reservations;
pub mod slots;

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    sync::Arc,
    time::Duration,
};

use actix::MailboxError;
use jiff::Timestamp;
use rand::rngs::StdRng;
use tokio::time::{Instant, timeout_at};

use self::{
    capacity::{Apply, Blocked},
    dedupe::Duplicates,
    slots::SlotGate,
};
pub use self::{
    capacity::{Capacity, CapacityActor},
    dedupe::{Dedupe, DedupeActor},
    plan_cache::{PlanCache, PlanTimings},
    reservations::{Claim, Learned, ReservationActor, Reservations, Write},
};
use crate::{
    clock::Clock,
    domain::{
        call::CallSid,
        call_flow::{Question, Reply},
        capacity::Block,
        phone::E164,
        plan::{Buyer, BuyerId, Record},
        routing::{RoutingPlan, random_for},
    },
    store::{PayoutClaim, PayoutStore},
};

/// What a routing decision (a call's, or an RTB ping's) asks.
#[derive(Clone)]
pub struct Decider {
    pub plan: Arc<PlanCache>,
    pub dedupe: Dedupe,
    pub capacity: Capacity,
    /// Where a leg takes its buyer's slot: this node's index, or the store nodes share.
    pub slots: Arc<dyn SlotGate>,
    /// RTB reservations, which a call claims when it reaches their campaign.
    pub reservations: Reservations,
    /// Publishers' payouts, each decided and written in one step where every node sees it.
    pub payouts: Arc<dyn PayoutStore>,
    pub clock: Arc<dyn Clock>,
    /// Where the draws between buyers of equal priority come from (see [`Decider::random_for`]).
    pub routing_seed: u64,
    /// From a webhook's or a ping's arrival to its answer, at most.
    pub decision_budget: Duration,
}

impl Decider {
    /// The random source for one routing decision (see [`random_for`]).
    pub fn random_for(&self, decision: impl Hash) -> StdRng {
        random_for(self.routing_seed, decision)
    }

    /// Which of `buyers` would consider a call from `caller` a duplicate now (an unknown caller
    /// cannot be one), or `None` if the index does not answer by `by`: then nobody knows, and
    /// routing decides in haste (see [`RoutingPlan::decide_in_haste`]).
    pub async fn duplicates_among(
        &self,
        caller: Option<&E164>,
        buyers: &[&Record<Buyer>],
        at: Timestamp,
        by: Instant,
    ) -> Option<HashSet<BuyerId>> {
        let Some(caller) = caller else {
            return Some(HashSet::new());
        };
        match self
            .reply(None, Question::duplicates(caller, buyers), at, by)
            .await
        {
            Reply::Duplicates(duplicates) => duplicates,
            _ => None,
        }
    }

    /// Which of `buyers` are at a cap now, or `None` if the index does not answer by `by`.
    pub async fn blocked_among(
        &self,
        plan: &Arc<RoutingPlan>,
        buyers: &[&Record<Buyer>],
        at: Timestamp,
        by: Instant,
    ) -> Option<HashMap<BuyerId, Block>> {
        let Some(question) = Question::blocked(plan, buyers) else {
            return Some(HashMap::new());
        };
        match self.reply(None, question, at, by).await {
            Reply::Blocked(blocked) => blocked,
            _ => None,
        }
    }

    /// Answers a decision's question, asked at `at` for `call` (if a call asks), by `by`.
    pub async fn reply(
        &self,
        call: Option<&CallSid>,
        question: Question,
        at: Timestamp,
        by: Instant,
    ) -> Reply {
        match question {
            Question::Free(change) => {
                self.capacity.tell(Apply(vec![change]));
                Reply::Freed
            }
            Question::Replan => Reply::Replanned(self.plan.reread().await),
            Question::Claim {
                campaign,
                caller,
                claimant,
            } => {
                let Some(call_sid) = call.cloned() else {
                    return Reply::Claimed(None);
                };
                let claim = Claim {
                    campaign,
                    caller,
                    claimant,
                    call_sid,
                    at,
                };
                let claimed = ask_within("the reservation book", by, self.reservations.ask(claim)).await;
                Reply::Claimed(claimed.flatten())
            }
            Question::Duplicates { caller, rules } => {
                let check = Duplicates { caller, rules, at };
                Reply::Duplicates(ask_within("the de-dupe index", by, self.dedupe.ask(check)).await)
            }
            Question::Blocked { plan, buyers } => {
                let blocked = Blocked { plan, buyers, at };
                Reply::Blocked(ask_within("the capacity index", by, self.capacity.ask(blocked)).await)
            }
            Question::Hold { buyer, leg } => Reply::Held(self.slots.hold(&buyer, leg, at, by).await),
            Question::PayOnce {
                caller,
                publisher,
                terms,
            } => {
                let Some(call) = call else {
                    return Reply::PaidOnce(None);
                };
                let claim = PayoutClaim {
                    call,
                    publisher,
                    caller: caller.as_ref(),
                    terms: &terms,
                    at,
                };
                match timeout_at(by, self.payouts.pay_once(&claim)).await {
                    Ok(Ok(first)) => Reply::PaidOnce(Some(first)),
                    Ok(Err(error)) => {
                        tracing::error!(%error, "could not settle the publisher's payout; it will be settled later");
                        Reply::PaidOnce(None)
                    }
                    Err(_) => {
                        tracing::warn!(
                            "the store did not settle the publisher's payout in time; it will be settled later"
                        );
                        Reply::PaidOnce(None)
                    }
                }
            }
        }
    }
}

/// An actor's answer, if it comes by `by`. (Its mailbox is bounded: a send waits for room, and
/// that wait counts too.)
pub async fn ask_within<T>(
    actor: &str,
    by: Instant,
    request: impl Future<Output = Result<T, MailboxError>>,
) -> Option<T> {
    match timeout_at(by, request).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(error)) => {
            tracing::error!(%error, "{actor} did not answer");
            None
        }
        Err(_) => {
            tracing::warn!("{actor} did not answer within the decision budget");
            None
        }
    }
}
