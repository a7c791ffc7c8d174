//! The capacity index: every buyer's live legs and cap counts, owned by an actor and asked by
//! every routing decision (in place when it is free: see [`owned`](super::owned)).

use std::{collections::HashMap, sync::Arc, time::Duration};

use actix::ArbiterHandle;
use jiff::Timestamp;

use super::owned::{Owned, Step};
use crate::{
    clock::Clock,
    domain::{
        capacity::{
            Block, CapPeriod, CapacityIndex, CapacityView, EVENT_HORIZON, LEG_LEASE, Leg, LoadChange,
            RING_LEASE,
        },
        plan::{Buyer, BuyerId, Record},
        routing::RoutingPlan,
        values::CapLimit,
    },
    store::{CapacityStore, StoreError},
};

pub struct CapacityActor {
    index: CapacityIndex,
    clock: Arc<dyn Clock>,
}

impl CapacityActor {
    /// Rebuilds the index from the store (start-up): counters and live legs survive a restart.
    pub async fn load(store: &dyn CapacityStore, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let now = clock.now();
        let since = |span| now.checked_sub(span).unwrap_or(Timestamp::MIN);
        let history = store
            .load_history(since(RING_LEASE), since(LEG_LEASE), since(EVENT_HORIZON))
            .await?;
        tracing::info!(
            live_legs = history.open_legs.len(),
            recent_calls = history.recent.len(),
            "capacity index loaded"
        );
        let mut index = CapacityIndex::default();
        index.load(history);
        Ok(Self { index, clock })
    }

    /// Its actor, on `arbiter`, and the handle calls ask it through.
    pub fn start(self, arbiter: &ArbiterHandle) -> Capacity {
        let clock = self.clock;
        // Lapsed legs hold nothing already; this only returns their memory.
        let forget: Box<dyn Fn(&mut CapacityIndex) + Send> =
            Box::new(move |index| index.forget_lapsed(clock.now()));
        Owned::start(self.index, arbiter, Some((Duration::from_secs(60), forget)))
    }
}

/// The capacity index, as calls, pings, supervisors and other nodes' news reach it.
pub type Capacity = Owned<CapacityIndex>;

/// Which of these buyers of `plan` are at a cap at `at`, and which cap. (The plan travels as a
/// shared pointer: nothing is copied per decision.)
pub struct Blocked {
    pub plan: Arc<RoutingPlan>,
    pub buyers: Vec<BuyerId>,
    pub at: Timestamp,
}

impl Step for Blocked {
    type Index = CapacityIndex;
    type Output = HashMap<BuyerId, Block>;

    fn take(self, index: &mut CapacityIndex) -> Self::Output {
        (self.buyers.iter())
            .filter_map(|id| {
                let buyer = self.plan.buyer(*id)?;
                Some((buyer.id, index.blocked(buyer.id, &buyer.spec, self.at)?))
            })
            .collect()
    }
}

/// Takes a concurrency slot for a leg about to be dialed; `false` when the buyer is full.
pub struct Hold {
    pub buyer: BuyerId,
    pub leg: Leg,
    pub limit: Option<CapLimit>,
    pub at: Timestamp,
}

impl Step for Hold {
    type Index = CapacityIndex;
    type Output = bool;

    fn take(self, index: &mut CapacityIndex) -> bool {
        index.hold(self.buyer, self.leg, self.limit, self.at)
    }
}

pub struct Apply(pub Vec<LoadChange>);

impl Step for Apply {
    type Index = CapacityIndex;
    type Output = ();

    fn take(self, index: &mut CapacityIndex) {
        for change in self.0 {
            match change {
                LoadChange::Released(leg) => index.release(&leg),
                LoadChange::CallEnded(call) => index.release_call(&call),
                LoadChange::Unheld { buyer, leg } => index.release_held_by(&leg, buyer),
                LoadChange::Counted {
                    buyer,
                    leg,
                    counting,
                    at,
                } => index.count(buyer, &leg, counting, at),
            }
        }
    }
}

/// An operator reset a cap (already stored).
pub struct Reset {
    pub buyer: BuyerId,
    pub period: CapPeriod,
    pub at: Timestamp,
}

impl Step for Reset {
    type Index = CapacityIndex;
    type Output = ();

    fn take(self, index: &mut CapacityIndex) {
        index.reset(self.buyer, self.period, self.at);
    }
}

/// Where a buyer stands against its caps.
pub struct View {
    pub buyer: Record<Buyer>,
    pub at: Timestamp,
}

/// Where each of several buyers stands, as of one moment.
pub struct Views {
    pub buyers: Vec<Record<Buyer>>,
    pub at: Timestamp,
}

impl Step for Views {
    type Index = CapacityIndex;
    type Output = Vec<CapacityView>;

    fn take(self, index: &mut CapacityIndex) -> Self::Output {
        (self.buyers.iter())
            .map(|buyer| index.view(buyer.id, &buyer.spec, self.at))
            .collect()
    }
}

impl Step for View {
    type Index = CapacityIndex;
    type Output = CapacityView;

    fn take(self, index: &mut CapacityIndex) -> CapacityView {
        index.view(self.buyer.id, &self.buyer.spec, self.at)
    }
}
