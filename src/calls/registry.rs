//! The call registry: which actor holds which call, shared by every HTTP worker.
//!
//! A call's webhooks land on any worker, so the map from call to actor cannot live in a
//! worker. The registry is one actor; it starts a call's actor on the arbiter (worker thread)
//! that received the call's first webhook, which spreads calls over the workers.

use std::collections::HashMap;

use actix::{Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message};

use super::{CallDeps, call_actor::CallActor};
use crate::domain::call::CallSid;

pub struct CallRegistry {
    deps: CallDeps,
    live: HashMap<CallSid, Addr<CallActor>>,
}

impl CallRegistry {
    pub fn new(deps: CallDeps) -> Self {
        Self {
            deps,
            live: HashMap::new(),
        }
    }
}

impl Actor for CallRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// The actor of a call, started if the call has none.
#[derive(Message)]
#[rtype(result = "Addr<CallActor>")]
pub struct Open {
    pub sid: CallSid,
    /// Where a new actor runs: the arbiter of the worker asking.
    pub arbiter: ArbiterHandle,
}

impl Handler<Open> for CallRegistry {
    type Result = Addr<CallActor>;

    fn handle(&mut self, msg: Open, ctx: &mut Self::Context) -> Self::Result {
        if let Some(actor) = self.live.get(&msg.sid)
            && actor.connected()
        {
            return actor.clone();
        }
        let (sid, deps, registry) = (msg.sid.clone(), self.deps.clone(), ctx.address());
        let actor = CallActor::start_in_arbiter(&msg.arbiter, move |_| CallActor::new(sid, deps, registry));
        self.live.insert(msg.sid, actor.clone());
        actor
    }
}

/// A call's actor stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Closed {
    pub sid: CallSid,
    pub actor: Addr<CallActor>,
}

impl Handler<Closed> for CallRegistry {
    type Result = ();

    fn handle(&mut self, msg: Closed, _: &mut Self::Context) {
        // Only if it is still the one registered: a newer actor may hold the call already.
        if self.live.get(&msg.sid) == Some(&msg.actor) {
            self.live.remove(&msg.sid);
        }
    }
}

/// Every call actor still running.
#[derive(Message)]
#[rtype(result = "Vec<Addr<CallActor>>")]
pub struct Actors;

impl Handler<Actors> for CallRegistry {
    type Result = Vec<Addr<CallActor>>;

    fn handle(&mut self, _: Actors, _: &mut Self::Context) -> Self::Result {
        self.live
            .values()
            .filter(|actor| actor.connected())
            .cloned()
            .collect()
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveCount;

impl Handler<LiveCount> for CallRegistry {
    type Result = usize;

    fn handle(&mut self, _: LiveCount, _: &mut Self::Context) -> usize {
        self.live.values().filter(|actor| actor.connected()).count()
    }
}
