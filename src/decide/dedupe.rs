//! The de-dupe index, owned by an actor and asked by every call (in place when it is free: see
//! [`owned`](super::owned)).

use std::collections::HashSet;

use actix::ArbiterHandle;
use jiff::Timestamp;

use super::owned::{Owned, Step};
use crate::{
    domain::{
        dedupe::{DedupeIndex, MarkBatch, Rule, Touched, Unconverted},
        phone::E164,
        plan::BuyerId,
    },
    store::{CallStore, StoreError},
};

pub struct DedupeActor {
    index: DedupeIndex,
}

impl DedupeActor {
    /// Rebuilds the index from the store (start-up).
    pub async fn load(store: &dyn CallStore) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let mut index = DedupeIndex::default();
        store.dedupe_marks(&mut |batch| index.load(&batch)).await?;
        tracing::info!(
            marks = index.len(),
            seconds = started.elapsed().as_secs_f64(),
            "de-dupe index loaded"
        );
        Ok(Self { index })
    }

    /// Its actor, on `arbiter`, and the handle calls ask it through.
    pub fn start(self, arbiter: &ArbiterHandle) -> Dedupe {
        Owned::start(self.index, arbiter, None)
    }
}

/// The de-dupe index, as calls, pings and other nodes' news reach it.
pub type Dedupe = Owned<DedupeIndex>;

/// Which of these buyers would consider a call from `caller` at `at` a duplicate?
pub struct Duplicates {
    pub caller: E164,
    pub rules: Vec<Rule>,
    pub at: Timestamp,
}

impl Step for Duplicates {
    type Index = DedupeIndex;
    type Output = HashSet<BuyerId>;

    fn take(self, index: &mut DedupeIndex) -> HashSet<BuyerId> {
        index
            .duplicates(&self.caller, &self.rules, self.at)
            .into_iter()
            .collect()
    }
}

/// Touches already stored: the index learns them now, before the next decision.
pub struct Learn(pub Vec<Touched>);

impl Step for Learn {
    type Index = DedupeIndex;
    type Output = ();

    fn take(self, index: &mut DedupeIndex) {
        for touched in self.0 {
            index.record(&touched.caller, &touched.scope, touched.touch, touched.at);
        }
    }
}

/// Stored marks read again (after news was missed): learnt as touches are.
pub struct LearnMarks(pub MarkBatch);

impl Step for LearnMarks {
    type Index = DedupeIndex;
    type Output = ();

    fn take(self, index: &mut DedupeIndex) {
        index.load(&self.0);
    }
}

/// Returned conversions, already stored: the index takes their marks back.
pub struct Unlearn(pub Vec<Unconverted>);

impl Step for Unlearn {
    type Index = DedupeIndex;
    type Output = ();

    fn take(self, index: &mut DedupeIndex) {
        for taken_back in &self.0 {
            index.unconvert(taken_back);
        }
    }
}
