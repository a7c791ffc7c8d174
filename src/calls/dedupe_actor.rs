//! The de-dupe index as an actor: one owner of the in-memory marks, asked by every call.

use std::collections::HashSet;

use actix::{Actor, Context, Handler, Message, MessageResult};
use jiff::Timestamp;

use crate::{
    domain::{
        dedupe::{DedupeIndex, Rule, Scope, Touch, Touched},
        payout::{PublisherPayout, is_duplicate_for_publisher},
        phone::E164,
        plan::BuyerId,
    },
    store::{Store, StoreError},
};

pub struct DedupeActor {
    index: DedupeIndex,
}

impl DedupeActor {
    /// Rebuilds the index from the store (start-up).
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let mut index = DedupeIndex::default();
        for stored in store.dedupe_marks().await? {
            index.load(&stored.caller, &stored.scope, stored.mark);
        }
        tracing::info!(marks = index.len(), "de-dupe index loaded");
        Ok(Self { index })
    }
}

impl Actor for DedupeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every call asks it; a burst must queue, not fail.
        ctx.set_mailbox_capacity(4096);
    }
}

/// Which of these buyers would consider a call from `caller` at `at` a duplicate?
#[derive(Message)]
#[rtype(result = "HashSet<BuyerId>")]
pub struct Duplicates {
    pub caller: E164,
    pub rules: Vec<Rule>,
    pub at: Timestamp,
}

impl Handler<Duplicates> for DedupeActor {
    type Result = MessageResult<Duplicates>;

    fn handle(&mut self, msg: Duplicates, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.index
                .duplicates(&msg.caller, &msg.rules, msg.at)
                .into_iter()
                .collect(),
        )
    }
}

/// May the caller earn this publisher a payout now? Yes unless its last one is inside the
/// window; a yes is marked at once, in the same step, so that two calls from one caller never
/// both earn it (the caller and publisher's de-dupe, as a conversion is a buyer's).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct PayOnce {
    pub caller: E164,
    pub scope: Scope,
    pub terms: PublisherPayout,
    pub at: Timestamp,
}

impl Handler<PayOnce> for DedupeActor {
    type Result = bool;

    fn handle(&mut self, msg: PayOnce, _: &mut Self::Context) -> bool {
        let last_paid = self.index.mark(&msg.caller, &msg.scope).last_converted;
        let duplicate = is_duplicate_for_publisher(
            &msg.terms,
            last_paid.map(Timestamp::as_millisecond),
            msg.at.as_millisecond(),
        );
        if !duplicate {
            self.index
                .record(&msg.caller, &msg.scope, Touch::Converted, msg.at);
        }
        !duplicate
    }
}

/// Touches already stored: the index learns them now, before the next decision.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Learn(pub Vec<Touched>);

impl Handler<Learn> for DedupeActor {
    type Result = ();

    fn handle(&mut self, msg: Learn, _: &mut Self::Context) {
        for touched in msg.0 {
            self.index
                .record(&touched.caller, &touched.scope, touched.touch, touched.at);
        }
    }
}
