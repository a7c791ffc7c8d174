//! A call's record in the store, as its actor keeps it: read back when the actor has none, and
//! saved after every webhook with whatever the store has not taken yet, within the budgets.

use std::time::Duration;

use tokio::time::Instant;

use super::CallDeps;
use crate::{
    domain::{
        call::{CallRecord, CallSid, Conversion},
        call_flow::Effects,
        capacity::LoadChange,
        dedupe::Touched,
        postback::Postback,
        timeline::TimelineEntry,
    },
    store::{CallChange, Saved, StoreError},
};

/// Changes the store has not taken yet. Saving is idempotent (the call row is replaced,
/// entries are keyed by their sequence number, conversions by call and attempt, marks keep the
/// latest), so whatever is here is simply saved again.
#[derive(Default)]
pub(super) struct Unsaved {
    timeline: Vec<TimelineEntry>,
    conversions: Vec<Conversion>,
    touched: Vec<Touched>,
    /// Sent to other nodes with the save (this node's index learnt it at once).
    load: Vec<LoadChange>,
    /// Queued in the outbox with the save.
    postbacks: Vec<Postback>,
}

impl Unsaved {
    pub(super) fn is_empty(&self) -> bool {
        self.timeline.is_empty()
            && self.conversions.is_empty()
            && self.touched.is_empty()
            && self.load.is_empty()
            && self.postbacks.is_empty()
    }

    /// A turn's effects, to be saved with the call.
    pub(super) fn absorb(&mut self, effects: Effects) {
        self.timeline.extend(effects.timeline);
        self.conversions.extend(effects.conversion);
        self.touched.extend(effects.touched);
        self.load.extend(effects.load);
        self.postbacks.extend(effects.postbacks);
    }
}

/// How long a store operation may take now: its own budget, cut to the time left before `due`,
/// but never below a floor (a store that answers at once is always waited for).
pub(super) fn store_deadline(deps: &CallDeps, due: Instant) -> Instant {
    let now = Instant::now();
    (now + deps.timings.store_budget).min(due.max(now + STORE_FLOOR))
}

/// The least time a store operation is given, even past the budget.
const STORE_FLOOR: Duration = Duration::from_millis(50);

/// The call as stored, for a call this process holds no actor for (after a restart, or an
/// actor that stopped). Bounded: a caller must not wait on a database that does not answer.
pub(super) async fn resume(deps: &CallDeps, sid: &CallSid) -> Option<CallRecord> {
    // The full store budget, even when the decision budget is nearly spent: a call resumed
    // late is answered in haste, a call taken for new would be routed afresh.
    match tokio::time::timeout(deps.timings.store_budget, deps.store.call(sid)).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::error!(%error, "could not read the call from the store; treating it as new");
            None
        }
        Err(_) => {
            tracing::error!("the store did not answer in time; treating the call as new");
            None
        }
    }
}

/// Saves the call and everything unsaved, by `by` (`fresh`: see [`CallChange::fresh`]); what
/// became of it, or `None` if the store did not take it. What the store does not take stays in
/// `unsaved`, retried on the next webhook or the next timer: the answer to the provider never
/// waits longer than the budgets. (A retry is not fresh: the first try may have been taken.)
pub(super) async fn save(
    deps: &CallDeps,
    record: &CallRecord,
    unsaved: &mut Unsaved,
    by: Instant,
    fresh: bool,
) -> Option<Saved> {
    let change = CallChange {
        call: record,
        timeline: &unsaved.timeline,
        conversions: &unsaved.conversions,
        touched: &unsaved.touched,
        load: &unsaved.load,
        postbacks: &unsaved.postbacks,
        fresh,
    };
    match tokio::time::timeout_at(by, deps.store.save_call(&change)).await {
        Ok(Ok(Saved::Saved)) => {
            if !unsaved.postbacks.is_empty() {
                deps.outbox.queued();
            }
            *unsaved = Unsaved::default();
            Some(Saved::Saved)
        }
        Ok(Ok(Saved::Existed)) => Some(Saved::Existed),
        // The store logs an outage once, with its cause; not every save it refuses.
        Ok(Err(error @ StoreError::Unavailable(_))) => {
            tracing::debug!(%error, "the call could not be saved yet; it will be retried");
            None
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the call could not be saved yet; it will be retried");
            None
        }
        Err(_) => {
            tracing::error!("the store did not save the call in time; it will be retried");
            None
        }
    }
}
