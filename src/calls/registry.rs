//! The call registry: which actor holds which call, shared by every HTTP worker.
//!
//! A call's webhooks land on any worker, so the map from call to actor cannot live in a
//! worker. It is a concurrent map every worker reads in place: finding a call's actor costs a
//! shard lock, not a message to a central actor and a wake-up of its thread (which, under load,
//! was two context switches per webhook). A call's actor is started on the worker (arbiter)
//! that received its first webhook, which spreads calls over the workers and keeps a new call's
//! first webhook on one thread.

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;

use super::{CallDeps, call_actor::CallActor};
use crate::domain::call::CallSid;

pub struct CallRegistry {
    deps: CallDeps,
    live: DashMap<CallSid, Addr<CallActor>>,
    /// Where new call actors run, when not on the worker asking (tests hold that thread up).
    place: Option<ArbiterHandle>,
}

impl CallRegistry {
    pub fn new(deps: CallDeps, place: Option<ArbiterHandle>) -> Self {
        Self {
            deps,
            live: DashMap::new(),
            place,
        }
    }

    /// The actor of a call, started if the call has none. Must be called on an actix arbiter
    /// (an HTTP worker, or the system's thread): that is where a new actor runs.
    pub fn open(self: &std::sync::Arc<Self>, sid: &CallSid) -> Addr<CallActor> {
        if let Some(actor) = self.live.get(sid)
            && actor.connected()
        {
            return actor.clone();
        }
        // Under the shard's lock, so that two webhooks of a new call arriving together on two
        // workers get one actor.
        let mut entry = self.live.entry(sid.clone()).or_insert_with(|| self.start(sid));
        if !entry.connected() {
            *entry = self.start(sid);
        }
        entry.clone()
    }

    fn start(self: &std::sync::Arc<Self>, sid: &CallSid) -> Addr<CallActor> {
        let actor = CallActor::new(sid.clone(), self.deps.clone(), self.clone());
        match &self.place {
            Some(arbiter) => CallActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        }
    }

    /// A call's actor stopped: forgotten, unless a newer actor holds the call already.
    pub fn closed(&self, sid: &CallSid, actor: &Addr<CallActor>) {
        self.live.remove_if(sid, |_, registered| registered == actor);
    }

    /// Every call actor still running.
    pub fn actors(&self) -> Vec<Addr<CallActor>> {
        (self.live.iter())
            .filter(|entry| entry.connected())
            .map(|entry| entry.value().clone())
            .collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.iter().filter(|entry| entry.connected()).count()
    }
}
