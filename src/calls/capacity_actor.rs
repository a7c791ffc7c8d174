//! The capacity index as an actor: one owner of every buyer's live legs and cap counts.

use std::{collections::HashMap, sync::Arc};

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult};
use jiff::Timestamp;

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
    store::{Store, StoreError},
};

pub struct CapacityActor {
    index: CapacityIndex,
    clock: Arc<dyn Clock>,
}

impl CapacityActor {
    /// Rebuilds the index from the store (start-up): counters and live legs survive a restart.
    pub async fn load(store: &dyn Store, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
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
}

impl Actor for CapacityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every routing decision asks it; a burst must queue, not fail.
        ctx.set_mailbox_capacity(4096);
        // Lapsed legs hold nothing already; this only returns their memory.
        ctx.run_interval(std::time::Duration::from_secs(60), |actor, _| {
            actor.index.forget_lapsed(actor.clock.now());
        });
    }
}

/// Which of these buyers of `plan` are at a cap at `at`, and which cap. (The plan travels as a
/// shared pointer: nothing is copied per decision.)
#[derive(Message)]
#[rtype(result = "HashMap<BuyerId, Block>")]
pub struct Blocked {
    pub plan: Arc<RoutingPlan>,
    pub buyers: Vec<BuyerId>,
    pub at: Timestamp,
}

impl Handler<Blocked> for CapacityActor {
    type Result = MessageResult<Blocked>;

    fn handle(&mut self, msg: Blocked, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            (msg.buyers.iter())
                .filter_map(|id| {
                    let buyer = msg.plan.buyer(*id)?;
                    Some((buyer.id, self.index.blocked(buyer.id, &buyer.spec, msg.at)?))
                })
                .collect(),
        )
    }
}

/// Takes a concurrency slot for a leg about to be dialed; `false` when the buyer is full.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Hold {
    pub buyer: BuyerId,
    pub leg: Leg,
    pub limit: Option<CapLimit>,
    pub at: Timestamp,
}

impl Handler<Hold> for CapacityActor {
    type Result = bool;

    fn handle(&mut self, msg: Hold, _: &mut Self::Context) -> bool {
        self.index.hold(msg.buyer, msg.leg, msg.limit, msg.at)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<LoadChange>);

impl Handler<Apply> for CapacityActor {
    type Result = ();

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) {
        for change in msg.0 {
            match change {
                LoadChange::Released(leg) => self.index.release(&leg),
                LoadChange::CallEnded(call) => self.index.release_call(&call),
                LoadChange::Counted {
                    buyer,
                    leg,
                    counting,
                    at,
                } => self.index.count(buyer, &leg, counting, at),
            }
        }
    }
}

/// An operator reset a cap (already stored).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reset {
    pub buyer: BuyerId,
    pub period: CapPeriod,
    pub at: Timestamp,
}

impl Handler<Reset> for CapacityActor {
    type Result = ();

    fn handle(&mut self, msg: Reset, _: &mut Self::Context) {
        self.index.reset(msg.buyer, msg.period, msg.at);
    }
}

/// Where a buyer stands against its caps.
#[derive(Message)]
#[rtype(result = "CapacityView")]
pub struct View {
    pub buyer: Record<Buyer>,
    pub at: Timestamp,
}

/// Where each of several buyers stands, as of one moment.
#[derive(Message)]
#[rtype(result = "Vec<CapacityView>")]
pub struct Views {
    pub buyers: Vec<Record<Buyer>>,
    pub at: Timestamp,
}

impl Handler<Views> for CapacityActor {
    type Result = MessageResult<Views>;

    fn handle(&mut self, msg: Views, _: &mut Self::Context) -> Self::Result {
        let views = (msg.buyers.iter())
            .map(|buyer| self.index.view(buyer.id, &buyer.spec, msg.at))
            .collect();
        MessageResult(views)
    }
}

impl Handler<View> for CapacityActor {
    type Result = MessageResult<View>;

    fn handle(&mut self, msg: View, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.index.view(msg.buyer.id, &msg.buyer.spec, msg.at))
    }
}
