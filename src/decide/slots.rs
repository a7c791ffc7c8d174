//! Where a leg about to be dialed takes its buyer's slot, chosen once at start-up: where this
//! process is the store's only writer, its capacity index counts every leg; where nodes share
//! the store, the store counts them across nodes. Either way this node's index hears of the leg
//! (its views, and its first reading of the caps), and nobody waits for that.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::time::{Instant, timeout_at};

use super::{
    ask_within,
    capacity::{Capacity, Hold},
};
use crate::{
    domain::{
        capacity::{Block, Leg},
        plan::{Buyer, Record},
    },
    store::{ClusterStore, SlotHold},
};

#[async_trait]
pub trait SlotGate: Send + Sync {
    /// Takes `buyer`'s slot for `leg`: taken, the cap that refused it, or `None` if nobody said
    /// by `by`.
    async fn hold(
        &self,
        buyer: &Record<Buyer>,
        leg: Leg,
        at: Timestamp,
        by: Instant,
    ) -> Option<Result<(), Block>>;

    /// Whether this process is the store's only writer (the same choice): a call's first
    /// webhook may then be taken for a new call without reading the store first.
    fn sole_writer(&self) -> bool;
}

/// The gate for `store`: shared if other nodes write to it too.
pub fn gate_for(store: Arc<dyn ClusterStore>, capacity: Capacity) -> Arc<dyn SlotGate> {
    if store.is_shared() {
        Arc::new(SharedSlots { store, capacity })
    } else {
        Arc::new(LocalSlots { capacity })
    }
}

/// One node: its capacity index counts the concurrency cap. (Period caps were checked with the
/// counts when the buyer was chosen.)
struct LocalSlots {
    capacity: Capacity,
}

#[async_trait]
impl SlotGate for LocalSlots {
    async fn hold(
        &self,
        buyer: &Record<Buyer>,
        leg: Leg,
        at: Timestamp,
        by: Instant,
    ) -> Option<Result<(), Block>> {
        let hold = Hold {
            buyer: buyer.id,
            leg,
            limit: buyer.spec.caps.concurrency,
            at,
        };
        if hold.limit.is_none() {
            self.capacity.tell(hold);
            return Some(Ok(()));
        }
        let held = ask_within("the capacity index", by, self.capacity.ask(hold)).await?;
        Some(if held { Ok(()) } else { Err(Block::Concurrency) })
    }

    fn sole_writer(&self) -> bool {
        true
    }
}

/// Several nodes: the store takes the slot, counting every node's legs against every cap.
struct SharedSlots {
    store: Arc<dyn ClusterStore>,
    capacity: Capacity,
}

#[async_trait]
impl SlotGate for SharedSlots {
    async fn hold(
        &self,
        buyer: &Record<Buyer>,
        leg: Leg,
        at: Timestamp,
        by: Instant,
    ) -> Option<Result<(), Block>> {
        if buyer.spec.caps.is_limited() {
            let slot = SlotHold { buyer, leg: &leg, at };
            match timeout_at(by, self.store.hold_slot(&slot)).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(block))) => return Some(Err(block)),
                Ok(Err(error)) => {
                    tracing::error!(%error, "could not take the buyer's slot in the store");
                    return None;
                }
                Err(_) => {
                    tracing::warn!("the store did not take the buyer's slot within the decision budget");
                    return None;
                }
            }
        }
        self.capacity.tell(Hold {
            buyer: buyer.id,
            leg,
            limit: None,
            at,
        });
        Some(Ok(()))
    }

    fn sole_writer(&self) -> bool {
        false
    }
}
