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
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use actix::MailboxError;
use jiff::Timestamp;
use rand::{SeedableRng, rngs::StdRng};
use tokio::time::{Instant, timeout_at};

use self::{capacity::Blocked, dedupe::Duplicates, slots::SlotGate};
pub use self::{
    capacity::{Capacity, CapacityActor},
    dedupe::{Dedupe, DedupeActor},
    plan_cache::PlanCache,
    reservations::{Claim, Learned, ReservationActor, Reservations, Write},
};
use crate::{
    clock::Clock,
    domain::{
        capacity::Block,
        dedupe::Rule,
        phone::E164,
        plan::{Buyer, BuyerId, Record},
        routing::RoutingPlan,
    },
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
    pub clock: Arc<dyn Clock>,
    /// Where the draws between buyers of equal priority come from (see [`Decider::random_for`]).
    pub routing_seed: u64,
    /// From a webhook's or a ping's arrival to its answer, at most.
    pub decision_budget: Duration,
}

impl Decider {
    /// The random source for one routing decision: a function of the seed and what is decided
    /// (a call's attempt, a ping), so a decision does not depend on which other calls happened
    /// to draw first, and a test with a fixed seed is exact.
    pub fn random_for(&self, decision: impl Hash) -> StdRng {
        let mut hasher = DefaultHasher::new();
        (self.routing_seed, decision).hash(&mut hasher);
        StdRng::seed_from_u64(hasher.finish())
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
        let check = Duplicates {
            caller: caller.clone(),
            rules: buyers.iter().map(|b| Rule::of(b)).collect(),
            at,
        };
        ask_within("the de-dupe index", by, self.dedupe.ask(check)).await
    }

    /// Which of `buyers` are at a cap now, or `None` if the index does not answer by `by`.
    pub async fn blocked_among(
        &self,
        plan: &Arc<RoutingPlan>,
        buyers: &[&Record<Buyer>],
        at: Timestamp,
        by: Instant,
    ) -> Option<HashMap<BuyerId, Block>> {
        let capped: Vec<BuyerId> = (buyers.iter())
            .filter(|b| b.spec.caps.is_limited())
            .map(|b| b.id)
            .collect();
        if capped.is_empty() {
            return Some(HashMap::new());
        }
        let blocked = Blocked {
            plan: plan.clone(),
            buyers: capped,
            at,
        };
        ask_within("the capacity index", by, self.capacity.ask(blocked)).await
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
