//! Calls whose end never came. A provider's final callback can be lost; a call left live would
//! hold its buyer's concurrency slot, and show on supervisors' screens, for ever. The reaper
//! ends every call older than the longest a call can last, through the call's own actor (so the
//! end is recorded, its slots freed and supervisors told, as any end is). It also settles the
//! publisher's payout of calls that ended while the store could not settle it: never left
//! unsettled for good, settled within a sweep (a minute) once the store answers.

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use jiff::SignedDuration;

use super::{CallDeps, Calls, Webhook};
use crate::domain::{call_flow::Input, form::FormParams};

/// Calls ended (or settled) per sweep at most: the next sweep takes the rest.
const BATCH: u32 = 500;

pub struct CallReaper {
    calls: Calls,
    deps: CallDeps,
    /// A sweep is under way: the next waits for it.
    sweeping: bool,
}

impl CallReaper {
    pub fn new(calls: Calls, deps: CallDeps) -> Self {
        Self {
            calls,
            deps,
            sweeping: false,
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        let Ok(limit) = SignedDuration::try_from(self.deps.timings.stuck_after) else {
            return;
        };
        let now = self.deps.decider.clock.now();
        let settle_after =
            SignedDuration::try_from(self.deps.timings.settle_after).unwrap_or(SignedDuration::ZERO);
        let Ok(started_before) = now.checked_sub(limit) else {
            return;
        };
        self.sweeping = true;
        let (calls, store) = (self.calls.clone(), self.deps.store.clone());
        let sweep = async move {
            let stuck = match store.unended_before(started_before, BATCH).await {
                Ok(stuck) => stuck,
                Err(error) => {
                    tracing::warn!(%error, "could not look for calls whose end never came");
                    return;
                }
            };
            for sid in stuck {
                let timed_out = Webhook::new(sid, Input::TimedOut, "timeout", FormParams::default(), None);
                calls.handle(timed_out).await;
            }
            // Payouts the store did not settle when their calls did (a call's actor lingers
            // after its end, and settles on any late callback, first). A call whose last dial's
            // result never came at all is left as it stands once it is older than a call lasts.
            let ended_before = now.checked_sub(settle_after).unwrap_or(now);
            let unsettled = match store.unsettled(started_before, ended_before, BATCH).await {
                Ok(unsettled) => unsettled,
                Err(error) => {
                    tracing::warn!(%error, "could not look for calls whose payout was not settled");
                    return;
                }
            };
            for sid in unsettled {
                let settle = Webhook::new(sid, Input::Settle, "settle", FormParams::default(), None);
                calls.handle(settle).await;
            }
        };
        ctx.spawn(
            sweep
                .into_actor(self)
                .map(|(), reaper, _| reaper.sweeping = false),
        );
    }
}

impl Actor for CallReaper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.deps.timings.sweep_every, Self::sweep);
    }
}
