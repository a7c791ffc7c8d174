//! A call's record in the store, as its actor keeps it: read back when the actor has none, and
//! saved after every webhook with whatever the store has not taken yet, within the budgets.
//!
//! A record the actor built without reading the stored one (a turn taken while the store did
//! not answer, or a new call whose first save failed) is never written over what the store
//! holds: it is merged into it ([`Write::Merge`]), and from the merge on the actor holds the
//! call as the store does.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

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
    store::{BlindTurn, CallChange, Saved, StoreError, Write},
};

/// Changes the store has not taken yet. Saving is idempotent (the call row is replaced, or
/// merged by turns the store remembers; entries are keyed by their sequence number,
/// conversions by call and attempt, marks keep the latest), so whatever is here is simply
/// saved again. Nearly always nothing: held boxed, so that a live call that owes the store
/// nothing pays a pointer for it.
#[derive(Default)]
pub(super) struct Unsaved(Option<Box<Pending>>);

#[derive(Default)]
struct Pending {
    timeline: Vec<TimelineEntry>,
    conversions: Vec<Conversion>,
    touched: Vec<Touched>,
    /// Sent to other nodes with the save (this node's index learnt it at once).
    load: Vec<LoadChange>,
    /// Queued in the outbox with the save.
    postbacks: Vec<Postback>,
    /// Set while the record is not the store's own (see the module's documentation): the turns
    /// to merge, each with its entries.
    merge: Option<Vec<BlindTurn>>,
}

impl Unsaved {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the record held is still to be merged into the store's.
    pub(super) fn merges(&self) -> bool {
        self.0.as_ref().is_some_and(|pending| pending.merge.is_some())
    }

    fn pending(&mut self) -> &mut Pending {
        self.0.get_or_insert_default()
    }

    /// A turn's effects, to be saved with the call. `key` names the turn, for a record to be
    /// merged.
    pub(super) fn absorb(&mut self, effects: Effects, key: Uuid) {
        let pending = self.pending();
        if let Some(turns) = &mut pending.merge {
            turns.push(BlindTurn {
                key,
                entries: effects.timeline.len(),
            });
        }
        pending.timeline.extend(effects.timeline);
        pending.conversions.extend(effects.conversion);
        pending.touched.extend(effects.touched);
        pending.load.extend(effects.load);
        pending.postbacks.extend(effects.postbacks);
    }

    /// The record is built without the store's: what is absorbed from now on is merged into
    /// it, turn by turn.
    pub(super) fn merging(&mut self) {
        debug_assert!(
            self.is_empty() || self.merges(),
            "a record merged from its first turn"
        );
        let pending = self.pending();
        pending.merge.get_or_insert_with(Vec::new);
    }

    /// From now on the record is merged into the store's, not written over it: what is unsaved
    /// is all of turn `key`'s (a new call whose first save failed).
    fn merge_from_now(&mut self, key: Uuid) {
        let pending = self.pending();
        if pending.merge.is_none() {
            let entries = pending.timeline.len();
            pending.merge = Some(vec![BlindTurn { key, entries }]);
        }
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

/// A webhook of a call this process holds no record of waits for the store this much longer
/// than the decision budget, at most [`BLIND_WAIT_LIMIT`]: a call that may be known must not be
/// taken for new, nor decided on less than the store knows, while there is time to ask. (The
/// provider waits 15 s for an answer.)
const BLIND_WAIT: Duration = Duration::from_secs(3);
const BLIND_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Until when a webhook that arrived at `received` waits for the store to give its call.
pub(super) fn patience(deps: &CallDeps, received: Instant) -> Instant {
    received + (deps.decider.decision_budget + BLIND_WAIT).min(BLIND_WAIT_LIMIT)
}

/// Between two reads of a store that failed at once (refused, reset), so as not to hammer it.
const READ_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// What the store said of a call.
pub(super) enum Resumed {
    Found(Box<CallRecord>),
    /// It holds no such call.
    Absent,
    /// It did not say by the deadline: it may hold the call.
    Unreadable,
}

/// The call as stored, for a call this process holds no actor for (after a restart, on another
/// node, or an actor that stopped), read until `until` at most.
pub(super) async fn resume(deps: &CallDeps, sid: &CallSid, until: Instant) -> Resumed {
    let mut failures = 0;
    loop {
        match tokio::time::timeout_at(until, deps.store.call(sid)).await {
            Ok(Ok(Some(record))) => return Resumed::Found(Box::new(record)),
            Ok(Ok(None)) => return Resumed::Absent,
            Ok(Err(error)) => {
                if failures == 0 {
                    tracing::warn!(%error, "could not read the call from the store; trying again");
                }
                failures += 1;
                if Instant::now() + READ_AGAIN_AFTER >= until {
                    tracing::error!(%error, failures, "could not read the call from the store");
                    return Resumed::Unreadable;
                }
                tokio::time::sleep(READ_AGAIN_AFTER).await;
            }
            Err(_) => {
                tracing::error!("the store did not give the call in time");
                return Resumed::Unreadable;
            }
        }
    }
}

/// Saves the call and everything unsaved, by `by`; what became of it, or `None` if the store
/// did not take it. `new`: the call was taken for new without a read of the store, and is
/// inserted only if the store holds none (see [`Write::InsertNew`]). What the store does not
/// take stays in `unsaved`, retried on the next webhook or the next timer: the answer to the
/// provider never waits longer than the budgets. (A new call's save that failed is merged when
/// retried: its first try may have been taken, or the store may hold the call.)
pub(super) async fn save(
    deps: &CallDeps,
    record: &CallRecord,
    unsaved: &mut Unsaved,
    by: Instant,
    new: Option<Uuid>,
) -> Option<Saved> {
    let nothing = Pending::default();
    let pending = unsaved.0.as_deref().unwrap_or(&nothing);
    let write = match (&pending.merge, new) {
        (Some(turns), _) => Write::Merge { turns },
        (None, Some(_)) => Write::InsertNew,
        (None, None) => Write::Replace,
    };
    let change = CallChange {
        call: record,
        timeline: &pending.timeline,
        conversions: &pending.conversions,
        touched: &pending.touched,
        load: &pending.load,
        postbacks: &pending.postbacks,
        write,
    };
    let queued_postbacks = !pending.postbacks.is_empty();
    let saved = match tokio::time::timeout_at(by, deps.store.save_call(&change)).await {
        Ok(Ok(saved)) => Some(saved),
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
    };
    let Some(saved) = saved else {
        if let Some(key) = new {
            unsaved.merge_from_now(key);
        }
        return None;
    };
    if saved != Saved::Existed {
        if queued_postbacks {
            deps.outbox.queued();
        }
        *unsaved = Unsaved::default();
    }
    Some(saved)
}
