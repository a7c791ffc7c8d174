//! The RTB log writer: pings, reservations and claims are written in small batches (group
//! commit) off the ping's path, so a bid is answered without waiting on the database.
//!
//! A graceful stop writes what is queued. What is lost if the process dies: what was queued in
//! the last [`GROUP_COMMIT`], or, while the database is away, what is queued since. At most
//! [`MAX_QUEUED`] writes wait for it; beyond that the oldest pings' log lines are dropped first
//! (reservations and claims are kept).

use std::{sync::Arc, time::Duration};

use actix::{
    Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message, SpawnHandle, WrapFuture,
};

use crate::{domain::rtb::RtbWrite, store::RtbStore};

/// How long a write waits for others to share its transaction.
pub const GROUP_COMMIT: Duration = Duration::from_millis(10);
/// A batch this large is written at once, and no batch is larger: one transaction must not
/// hold SQLite's writer long while calls wait to be saved.
const BATCH: usize = 1000;
/// How often writes the database refused are tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a batch may take before the database counts as away (it is written again later:
/// writing twice changes nothing).
const WRITE_BUDGET: Duration = Duration::from_secs(5);
/// How many writes wait for a database that does not answer.
pub const MAX_QUEUED: usize = 100_000;

pub struct RtbLog {
    store: Arc<dyn RtbStore>,
    queued: Vec<RtbWrite>,
    /// The next flush, once one is due.
    flush: Option<SpawnHandle>,
    /// The last write failed: the next waits for its retry, however much is queued.
    failing: bool,
}

impl RtbLog {
    pub fn new(store: Arc<dyn RtbStore>) -> Self {
        Self {
            store,
            queued: Vec::new(),
            flush: None,
            failing: false,
        }
    }

    fn flush_in(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if let Some(due) = self.flush.take() {
            ctx.cancel_future(due);
        }
        self.flush = Some(ctx.notify_later(Flush, delay));
    }

    /// Makes room by dropping the oldest ping log lines, a tenth of the queue at a time.
    fn shed(&mut self) {
        if self.queued.len() <= MAX_QUEUED {
            return;
        }
        let excess = self.queued.len() - MAX_QUEUED * 9 / 10;
        let mut dropped = 0;
        self.queued.retain(|write| {
            let drop = dropped < excess && matches!(write, RtbWrite::Ping(_));
            dropped += usize::from(drop);
            !drop
        });
        tracing::error!(
            dropped,
            "the database has been away too long: RTB ping log lines were dropped"
        );
    }
}

impl Actor for RtbLog {
    type Context = Context<Self>;
}

/// Queue a write. (The message is the decision layer's: the reservation book sends it.)
pub use crate::decide::Write;

impl Handler<Write> for RtbLog {
    type Result = ();

    fn handle(&mut self, msg: Write, ctx: &mut Self::Context) {
        self.queued.push(msg.0);
        self.shed();
        if self.queued.len() >= BATCH && !self.failing {
            self.flush_in(Duration::ZERO, ctx);
        } else if self.flush.is_none() {
            self.flush_in(GROUP_COMMIT, ctx);
        }
    }
}

/// Write everything queued now; answered once it is written (or refused). Reading the log
/// after a flush sees every ping answered before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for RtbLog {
    // Atomic: writes queue behind a flush in progress, so batches land in order.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        if let Some(due) = self.flush.take() {
            ctx.cancel_future(due);
        }
        let mut queued = std::mem::take(&mut self.queued);
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                // One transaction per batch: calls' saves get the database in between.
                while !queued.is_empty() {
                    let batch = &queued[..queued.len().min(BATCH)];
                    match tokio::time::timeout(WRITE_BUDGET, store.save_rtb(batch)).await {
                        Ok(Ok(())) => drop(queued.drain(..batch.len())),
                        Ok(Err(error)) => return Err((error.to_string(), queued)),
                        Err(_) => return Err(("the database did not answer in time".to_owned(), queued)),
                    }
                }
                Ok(())
            }
            .into_actor(self)
            .map(|saved, actor, ctx| match saved {
                Ok(()) => {
                    if actor.failing {
                        tracing::info!("the RTB log is written again");
                    }
                    actor.failing = false;
                }
                Err((problem, mut batch)) => {
                    // Once per outage, not once per retry.
                    if !actor.failing {
                        tracing::error!(%problem, "the RTB log cannot be written; retrying until it can");
                    }
                    actor.failing = true;
                    batch.append(&mut actor.queued);
                    actor.queued = batch;
                    actor.shed();
                    actor.flush_in(RETRY, ctx);
                }
            }),
        ))
    }
}
