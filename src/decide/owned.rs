//! An index owned by an actor, which callers use in place when nobody else is using it.
//!
//! Every routing decision reads the de-dupe and capacity indexes and every arriving call the
//! reservation book. As plain actors on a thread of their own, each question cost a message
//! there and an answer back: two thread wake-ups, under load two context switches, for a step
//! that takes well under a microsecond. So the index sits behind a mutex its actor shares with
//! its callers. A caller that finds it free, with nothing queued to the actor, takes its step
//! there and then, on its own thread. Otherwise (another thread is in it, or steps are queued)
//! the step goes to the actor, which takes steps in the order they came: a step queued before
//! another is never overtaken by it, so a call that told the index something and then asks it
//! a question gets an answer that includes what it told.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix::{
    Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, MailboxError, Message, MessageResult,
};

/// One step on an index `Index`: a question, a change, or both at once (taken atomically).
pub trait Step: Send + 'static {
    type Index: Send + 'static;
    type Output: Send + 'static;

    fn take(self, index: &mut Self::Index) -> Self::Output;
}

/// The index, and how many steps are queued to its actor.
struct Shared<T> {
    index: Mutex<T>,
    queued: AtomicUsize,
}

impl<T> Shared<T> {
    /// A panic while holding the lock is a bug in a step; the index itself stays usable.
    fn lock(&self) -> MutexGuard<'_, T> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `step` now if the index is free and nothing is queued before it; otherwise hands
    /// it back.
    fn try_take<S: Step<Index = T>>(&self, step: S) -> Result<S::Output, S> {
        if self.queued.load(Ordering::Acquire) > 0 {
            return Err(step);
        }
        match self.index.try_lock() {
            Ok(mut index) => Ok(step.take(&mut index)),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Ok(step.take(&mut poisoned.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => Err(step),
        }
    }
}

/// A step on its way to the actor. While it exists the index counts it as queued: callers
/// send theirs after it rather than overtake it, until it is taken (or dropped unsent).
pub struct Queued<S: Step> {
    step: S,
    _ticket: Ticket<S::Index>,
}

struct Ticket<T>(Arc<Shared<T>>);

impl<T> Ticket<T> {
    fn new(shared: &Arc<Shared<T>>) -> Self {
        shared.queued.fetch_add(1, Ordering::AcqRel);
        Self(shared.clone())
    }
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: Step> Message for Queued<S> {
    type Result = S::Output;
}

/// Housekeeping the actor does now and then (forgetting what has lapsed).
pub type Chore<T> = Box<dyn Fn(&mut T) + Send>;

/// The actor owning an index: it takes the steps queued to it, in order, and does its chores.
pub struct Owner<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    chore: Option<(Duration, Chore<T>)>,
}

impl<T: Send + 'static> Actor for Owner<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every call may queue here when the index is busy; a burst must queue, not fail.
        ctx.set_mailbox_capacity(4096);
        if let Some((every, _)) = &self.chore {
            ctx.run_interval(*every, |owner, _| {
                if let Some((_, chore)) = &owner.chore {
                    chore(&mut owner.shared.lock());
                }
            });
        }
    }
}

impl<T: Send + 'static, S: Step<Index = T>> Handler<Queued<S>> for Owner<T> {
    type Result = MessageResult<Queued<S>>;

    fn handle(&mut self, queued: Queued<S>, _: &mut Self::Context) -> Self::Result {
        let Queued { step, _ticket } = queued;
        let output = step.take(&mut self.shared.lock());
        // Counted as queued until taken: a caller meanwhile queues behind it.
        drop(_ticket);
        MessageResult(output)
    }
}

/// A handle on an owned index: what callers hold.
pub struct Owned<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    owner: Addr<Owner<T>>,
}

impl<T: Send + 'static> Clone for Owned<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<T: Send + 'static> Owned<T> {
    /// Starts the owner of `index` on `arbiter`, with a chore done every so often.
    pub fn start(index: T, arbiter: &ArbiterHandle, chore: Option<(Duration, Chore<T>)>) -> Self {
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            queued: AtomicUsize::new(0),
        });
        let owner = Owner {
            shared: shared.clone(),
            chore,
        };
        Self {
            owner: Owner::start_in_arbiter(arbiter, move |_| owner),
            shared,
        }
    }

    /// Takes a step and returns its output: in place if the index is free, else through its
    /// actor (an error only if the actor is gone).
    pub async fn ask<S: Step<Index = T>>(&self, step: S) -> Result<S::Output, MailboxError> {
        match self.shared.try_take(step) {
            Ok(output) => Ok(output),
            Err(step) => self.owner.send(self.queued(step)).await,
        }
    }

    /// Takes a step whose output nobody waits for.
    pub fn tell<S: Step<Index = T>>(&self, step: S) {
        if let Err(step) = self.shared.try_take(step) {
            self.owner.do_send(self.queued(step));
        }
    }

    fn queued<S: Step<Index = T>>(&self, step: S) -> Queued<S> {
        Queued {
            step,
            _ticket: Ticket::new(&self.shared),
        }
    }

    /// Holds the index for `span` on the owner's thread, as a long chore would: every step
    /// meanwhile waits (tests of what a held-up index does to calls).
    pub fn hold_for(&self, span: Duration) {
        self.owner
            .do_send(self.queued(Hold(span, std::marker::PhantomData)));
    }
}

/// Holds the index for a while (see [`Owned::hold_for`]).
struct Hold<T>(Duration, std::marker::PhantomData<fn() -> T>);

impl<T: Send + 'static> Step for Hold<T> {
    type Index = T;
    type Output = ();

    fn take(self, _: &mut T) {
        std::thread::sleep(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Add(u32);

    impl Step for Add {
        type Index = Vec<u32>;
        type Output = usize;

        fn take(self, index: &mut Vec<u32>) -> usize {
            index.push(self.0);
            index.len()
        }
    }

    #[actix_web::test]
    async fn a_free_index_is_used_in_place_and_a_busy_one_through_its_actor_in_order() {
        let arbiter = actix::Arbiter::new();
        let owned = Owned::start(Vec::new(), &arbiter.handle(), None);
        assert_eq!(owned.ask(Add(1)).await.unwrap(), 1);
        // Nothing went to the actor: taken in place.
        assert_eq!(owned.shared.queued.load(Ordering::Acquire), 0);

        // The actor's thread holds the index: steps queue, and are taken in the order told.
        owned.hold_for(Duration::from_millis(200));
        owned.tell(Add(2));
        assert!(owned.shared.queued.load(Ordering::Acquire) >= 2);
        // Even once the lock is free, a step does not overtake those queued before it.
        let answer = owned.ask(Add(3)).await.unwrap();
        assert_eq!(answer, 3);
        assert_eq!(*owned.shared.lock(), vec![1, 2, 3]);
        assert_eq!(
            owned.shared.queued.load(Ordering::Acquire),
            0,
            "every ticket returned"
        );
        arbiter.stop();
    }
}
