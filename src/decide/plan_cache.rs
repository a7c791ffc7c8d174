//! The routing plan as calls read it: held in memory, read again when it changes.
//!
//! Every call reads the plan, so it is not read from the database per call. The store is read
//! by *flights*: one at a time, each in a task of its own, numbered in order. A reader that
//! needs the store read waits for a flight that started late enough to see what it needs (the
//! one in the air if it did, else the next, shared by everybody who asked meanwhile), never
//! longer than the wait budget; past it, it routes on the plan in hand. So a burst of calls
//! right after a change costs one read and routes on the new plan, and a store that is slow or
//! down holds no caller longer than the budget and is asked one thing at a time.
//!
//! When a call needs the store read:
//! - a change is known here (made through this process's API, or news of a revision above the
//!   one in hand, or a gap in the news): every call until a flight started after it lands;
//! - the plan is older than `max_age` (a change may have been made where no news comes from, a
//!   CLI import on SQLite): the call that finds it so, until a flight started within `max_age`
//!   lands (while the store answers within the budget; when it did not last time, the look is
//!   made without anyone waiting); the calls meanwhile route on the plan in hand;
//! - a call is about to be refused for a number the plan does not know ([`PlanCache::reread`]):
//!   that call, until a flight that started after it asked lands.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::watch, time::Instant};

use crate::{
    domain::{
        plan::{Buyer, Campaign, Company, PlanEntity, Publisher, Record},
        routing::RoutingPlan,
    },
    store::{ListFilter, PlanStore, PlanTable, StoreError},
};

/// A read of the store that has not landed by then is given up (a connection that hangs), so
/// that the next can take off.
const FLIGHT_LIMIT: Duration = Duration::from_secs(10);

/// How long the plan may be used, and how long a call waits for it to be read.
#[derive(Debug, Clone, Copy)]
pub struct PlanTimings {
    /// How long a plan is used before the store's revision is looked at again (changes made
    /// where no news comes from).
    pub max_age: Duration,
    /// The longest a reader waits for the store; then it routes on the plan in hand. Part of
    /// the decision budget.
    pub wait: Duration,
}

/// What the cache reads: the store's plan revision, and the whole plan.
#[async_trait]
pub trait PlanSource: Send + Sync {
    /// A number that changes whenever the plan does.
    async fn revision(&self) -> Result<i64, StoreError>;
    async fn plan(&self) -> Result<RoutingPlan, StoreError>;
}

pub struct PlanCache {
    shared: Arc<Shared>,
}

struct Shared {
    source: Arc<dyn PlanSource>,
    timings: PlanTimings,
    state: Mutex<State>,
    /// The number of the last flight that landed, whether it read the store or not.
    landed: watch::Sender<u64>,
}

struct State {
    plan: Arc<RoutingPlan>,
    revision: i64,
    /// The flight that read the plan in hand (0: the read at start-up).
    read_by: u64,
    /// Flights started so far; the last one is in the air while `in_air` says since when.
    started: u64,
    in_air: Option<Instant>,
    /// The flight in the air has not asked the store anything yet: it reads what was
    /// committed before now.
    boarding: bool,
    /// When the last flight to land had started (had landed, if it failed): the last look.
    checked: Instant,
    /// The last flight to land read the store within the wait budget.
    healthy: bool,
    /// A change is known: calls route on a plan read by this flight or a later one.
    changed: u64,
    /// The plan grew old: the flight that looks at the store's revision again.
    look: u64,
    /// The last flight somebody waits for: while it has not started, each landing starts the
    /// next.
    wanted: u64,
    /// Shows `revision`, for `/metrics`.
    revision_gauge: Gauge,
}

impl State {
    /// The last flight that landed.
    fn landed(&self) -> u64 {
        self.started - u64::from(self.in_air.is_some())
    }

    /// The first flight that reads the store from now on: it sees what was committed before.
    fn next(&self) -> u64 {
        if self.in_air.is_some() && self.boarding {
            self.started
        } else {
            self.started + 1
        }
    }

    fn want(&mut self, flight: u64) {
        self.wanted = self.wanted.max(flight);
    }

    /// Starts the next flight if somebody waits for it and none is in the air: its number.
    fn take_off(&mut self) -> Option<u64> {
        if self.in_air.is_some() || self.wanted <= self.started {
            return None;
        }
        self.started += 1;
        self.in_air = Some(Instant::now());
        self.boarding = true;
        Some(self.started)
    }
}

impl PlanCache {
    pub async fn load(store: Arc<dyn PlanStore>, timings: PlanTimings) -> Result<Self, StoreError> {
        Self::load_from(Arc::new(FromStore(store)), timings).await
    }

    /// As [`PlanCache::load`], from any source (tests count and hold up its reads).
    pub async fn load_from(source: Arc<dyn PlanSource>, timings: PlanTimings) -> Result<Self, StoreError> {
        let revision = source.revision().await?;
        let plan = Arc::new(source.plan().await?);
        let state = State {
            plan,
            revision,
            read_by: 0,
            started: 0,
            in_air: None,
            boarding: false,
            checked: Instant::now(),
            healthy: true,
            changed: 0,
            look: 0,
            wanted: 0,
            revision_gauge: Gauge::default(),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                source,
                timings,
                state: Mutex::new(state),
                landed: watch::Sender::new(0),
            }),
        })
    }

    /// Shows the revision of the plan in hand in `gauge` from now on.
    pub fn report_revision_to(&self, gauge: Gauge) {
        let mut state = self.shared.lock();
        gauge.set(state.revision);
        state.revision_gauge = gauge;
    }

    /// The store's plan revision the plan in hand was read at.
    pub fn revision(&self) -> i64 {
        self.shared.lock().revision
    }

    /// The plan to route on: the one in hand, unless a change is known or it grew old; then
    /// the one a flight reads, waited for within the budget.
    pub async fn current(&self) -> Arc<RoutingPlan> {
        let (target, flight) = {
            let mut state = self.shared.lock();
            let now = Instant::now();
            let max_age = self.shared.timings.max_age;
            let mut target = None;
            if state.read_by < state.changed {
                if state.landed() >= state.changed {
                    // The read that was to bring the change failed: another, then.
                    state.changed = state.next();
                }
                target = Some(state.changed);
            }
            if state.look <= state.landed() && state.checked + max_age <= now {
                // No change is known, but one may have been made where no news comes from. A
                // flight that started within `max_age` sees what was committed before then.
                state.look = match state.in_air {
                    Some(since) if since + max_age > now => state.started,
                    _ => state.next(),
                };
                // The call that finds the plan old waits for the look (unless the store did not
                // answer in time last time); the calls meanwhile route on the plan in hand: a
                // store slowed by load does not hold every caller once every `max_age`.
                if state.healthy {
                    target = target.max(Some(state.look));
                }
            }
            let wanted = state.changed.max(state.look);
            state.want(wanted);
            (target, state.take_off())
        };
        self.shared.launch(flight);
        match target {
            Some(target) => self.shared.wait_for(target).await,
            None => self.shared.lock().plan.clone(),
        }
    }

    /// The plan as the store has it now, for a call about to be refused on the plan in hand (a
    /// campaign created a moment ago, on another node or by a CLI import): read by a flight
    /// that started after this was asked, waited for within the budget.
    pub async fn reread(&self) -> Arc<RoutingPlan> {
        let (target, flight) = {
            let mut state = self.shared.lock();
            let target = state.next();
            state.want(target);
            (target, state.take_off())
        };
        self.shared.launch(flight);
        self.shared.wait_for(target).await
    }

    /// The plan changed (through this process's API, or in a gap in the news): every call from
    /// now on routes on a plan read after now. The read starts at once.
    pub fn invalidate(&self) {
        let flight = {
            let mut state = self.shared.lock();
            state.changed = state.next();
            let changed = state.changed;
            state.want(changed);
            state.take_off()
        };
        self.shared.launch(flight);
    }

    /// News: the plan's revision is now `revision`. Unless the plan in hand is at least that
    /// recent, as [`PlanCache::invalidate`].
    pub fn heard(&self, revision: i64) {
        if self.revision() < revision {
            self.invalidate();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits, within the budget, for flight `target` (or a later one) to land: the plan in hand
    /// then, the one it read unless it failed or did not land in time.
    async fn wait_for(&self, target: u64) -> Arc<RoutingPlan> {
        let mut landed = self.landed.subscribe();
        let wait = self.timings.wait;
        let landing = landed.wait_for(|landed| *landed >= target);
        // (The watch's value is let go of before the state is locked: a landing locks both.)
        let in_time = tokio::time::timeout(wait, landing).await.map(|_| ()).is_ok();
        let (plan, read) = {
            let state = self.lock();
            (state.plan.clone(), state.read_by >= target)
        };
        match (read, in_time) {
            (true, _) => {}
            (false, true) => tracing::warn!("the routing plan could not be read; routing on the one in hand"),
            (false, false) => tracing::warn!(
                wait_ms = wait.as_millis(),
                "the store did not give the routing plan in time; routing on the one in hand"
            ),
        }
        plan
    }

    /// Starts `flight` in a task of its own, so that it lands even if every reader gave up on it.
    /// Never called with the state locked (a task dropped at once lands in its place).
    fn launch(self: &Arc<Self>, flight: Option<u64>) {
        let Some(number) = flight else {
            return;
        };
        let flight = Flight {
            shared: self.clone(),
            number,
            started: Instant::now(),
            landed: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flight.fly());
            }
            // No runtime to read on (only outside a server): `flight` lands, unread, as dropped.
            Err(_) => drop(flight),
        }
    }

    /// Flight `number`, started at `started`, landed with `read` (the revision, and the plan if
    /// it changed) or a problem. The next flight to start, if `go_on` and somebody waits for it.
    fn land(
        &self,
        number: u64,
        started: Instant,
        read: Result<(i64, Option<RoutingPlan>), String>,
        go_on: bool,
    ) -> Option<u64> {
        let mut state = self.lock();
        state.in_air = None;
        let problem = match read {
            Ok((revision, plan)) => {
                if let Some(plan) = plan {
                    state.plan = Arc::new(plan);
                }
                state.revision = revision;
                state.read_by = number;
                state.checked = started;
                state.healthy = started.elapsed() <= self.timings.wait;
                state.revision_gauge.set(revision);
                None
            }
            Err(problem) => {
                // Looked at again `max_age` from now (at once for a known change).
                state.checked = Instant::now();
                state.healthy = false;
                Some(problem)
            }
        };
        self.landed.send_replace(number);
        let next = go_on.then(|| state.take_off()).flatten();
        drop(state);
        if let Some(problem) = problem {
            tracing::warn!(%problem, "could not read the routing plan; calls route on the one in hand");
        }
        next
    }
}

/// One read of the store, in the air.
struct Flight {
    shared: Arc<Shared>,
    number: u64,
    started: Instant,
    landed: bool,
}

impl Flight {
    async fn fly(mut self) {
        let in_hand = {
            let mut state = self.shared.lock();
            state.boarding = false;
            state.revision
        };
        let source = self.shared.source.clone();
        // The revision is read before the plan: a change landing in between is read next time.
        let read = async {
            let revision = source.revision().await?;
            let plan = if revision == in_hand {
                None
            } else {
                Some(source.plan().await?)
            };
            Ok::<_, StoreError>((revision, plan))
        };
        let read = match tokio::time::timeout(FLIGHT_LIMIT, read).await {
            Ok(Ok(read)) => Ok(read),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer in {FLIGHT_LIMIT:?}")),
        };
        self.landed = true;
        let next = self.shared.land(self.number, self.started, read, true);
        self.shared.launch(next);
    }
}

impl Drop for Flight {
    /// A flight whose task was dropped (its runtime stopped) lands all the same, unread, so
    /// that nobody waits for it and the next can start.
    fn drop(&mut self) {
        if !self.landed {
            let problem = "the read was stopped".to_owned();
            self.shared.land(self.number, self.started, Err(problem), false);
        }
    }
}

/// The plan as the store keeps it.
struct FromStore(Arc<dyn PlanStore>);

#[async_trait]
impl PlanSource for FromStore {
    async fn revision(&self) -> Result<i64, StoreError> {
        self.0.plan_revision().await
    }

    async fn plan(&self) -> Result<RoutingPlan, StoreError> {
        read_plan(self.0.as_ref()).await
    }
}

async fn read_plan(store: &(dyn PlanStore + 'static)) -> Result<RoutingPlan, StoreError> {
    let blocked = store.blocked_callers(&everything()).await?;
    Ok(RoutingPlan::new(
        all::<Company>(store).await?,
        all::<Buyer>(store).await?,
        all::<Campaign>(store).await?,
    )
    .with_publishers(all::<Publisher>(store).await?)
    .with_rtb_keys(store.rtb_keys().await?)
    .with_block_lists(&blocked))
}

fn everything() -> ListFilter {
    ListFilter {
        limit: u32::MAX,
        ..ListFilter::default()
    }
}

async fn all<T: PlanEntity>(store: &(dyn PlanStore + 'static)) -> Result<Vec<Record<T>>, StoreError>
where
    dyn PlanStore: PlanTable<T>,
{
    PlanTable::<T>::list(store, &everything()).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering::SeqCst};

    use futures_util::future::{join, join_all};
    use serde_json::json;

    use super::*;
    use crate::domain::{phone::E164, plan::record_of};

    /// The number the double's plan at `revision` routes: each revision has its own.
    fn number_of(revision: i64) -> E164 {
        E164::from_provider(&format!("+1800555{revision:04}")).unwrap()
    }

    fn at_revision(plan: &Arc<RoutingPlan>) -> Option<i64> {
        (0..100).find(|revision| plan.campaign_for_number(&number_of(*revision)).is_some())
    }

    /// A store that counts its reads, and can be held up (as a slow store) or made to fail.
    struct Double {
        revision: AtomicI64,
        revision_reads: AtomicUsize,
        plan_reads: AtomicUsize,
        reading: AtomicUsize,
        most_reading: AtomicUsize,
        failing: AtomicBool,
        /// Reads go through while it is open.
        open: watch::Sender<bool>,
    }

    impl Double {
        fn at(revision: i64) -> Arc<Self> {
            Arc::new(Self {
                revision: AtomicI64::new(revision),
                revision_reads: AtomicUsize::new(0),
                plan_reads: AtomicUsize::new(0),
                reading: AtomicUsize::new(0),
                most_reading: AtomicUsize::new(0),
                failing: AtomicBool::new(false),
                open: watch::Sender::new(true),
            })
        }

        fn change(&self) -> i64 {
            self.revision.fetch_add(1, SeqCst) + 1
        }

        fn hold(&self) {
            self.open.send_replace(false);
        }

        fn release(&self) {
            self.open.send_replace(true);
        }

        /// One read: counted, held while closed, failed while failing.
        async fn read<T>(&self, counter: &AtomicUsize, value: impl FnOnce() -> T) -> Result<T, StoreError> {
            counter.fetch_add(1, SeqCst);
            let reading = self.reading.fetch_add(1, SeqCst) + 1;
            self.most_reading.fetch_max(reading, SeqCst);
            // What the store holds when the read reaches it, answered when it is let through.
            let value = value();
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
            self.reading.fetch_sub(1, SeqCst);
            match self.failing.load(SeqCst) {
                true => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
                false => Ok(value),
            }
        }

        /// Reads since `load`.
        fn reads(&self) -> (usize, usize) {
            (
                self.revision_reads.load(SeqCst) - 1,
                self.plan_reads.load(SeqCst) - 1,
            )
        }
    }

    #[async_trait]
    impl PlanSource for Double {
        async fn revision(&self) -> Result<i64, StoreError> {
            self.read(&self.revision_reads, || self.revision.load(SeqCst))
                .await
        }

        async fn plan(&self) -> Result<RoutingPlan, StoreError> {
            let revision = self.revision.load(SeqCst);
            self.read(&self.plan_reads, || {
                let company: Record<Company> = record_of(None, json!({"name": "Acme"}));
                let buyer: Record<Buyer> = record_of(
                    Some(company.id),
                    json!({"name": "A", "destination": "+14155550101"}),
                );
                let campaign: Record<Campaign> = record_of(
                    Some(company.id),
                    json!({"name": "Main", "numbers": [number_of(revision)], "buyers": [{"buyer_id": buyer.id}]}),
                );
                RoutingPlan::new(vec![company], vec![buyer], vec![campaign])
            })
            .await
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    async fn cache_over(store: &Arc<Double>, max_age: Duration, wait: Duration) -> PlanCache {
        PlanCache::load_from(store.clone(), PlanTimings { max_age, wait })
            .await
            .unwrap()
    }

    /// `n` readers at once, while `meanwhile` runs (polled after each has asked): the revision
    /// of the plan each was given.
    async fn readers<F: Future<Output = Arc<RoutingPlan>>>(
        n: usize,
        read: impl Fn() -> F,
        meanwhile: impl Future<Output = ()>,
    ) -> Vec<Option<i64>> {
        let (plans, ()) = join(join_all((0..n).map(|_| read())), meanwhile).await;
        plans.iter().map(at_revision).collect()
    }

    /// Lets the flight in the air reach the store (held there), then lets it through.
    async fn release_once_reading(store: &Double) {
        while store.reading.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        store.release();
    }

    #[tokio::test]
    async fn a_burst_right_after_a_change_waits_for_one_read_and_routes_on_the_new_plan() {
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        let changed = store.change();
        store.hold();
        cache.invalidate();
        let seen = readers(30, || cache.current(), release_once_reading(&store)).await;
        assert_eq!(seen, vec![Some(changed); 30], "none on the old plan");
        assert_eq!(store.reads(), (1, 1), "the store read once for the burst");
        assert_eq!(cache.revision(), changed);
    }

    #[tokio::test]
    async fn a_change_known_while_a_read_is_in_the_air_is_read_by_the_next_one() {
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        // A read is in the air, and has read the revision before the change.
        store.hold();
        let early = cache.reread();
        let change = async {
            while store.reading.load(SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let changed = store.change();
            cache.invalidate();
            changed
        };
        let (_, changed) = join(early, async {
            let changed = change.await;
            let seen = readers(25, || cache.current(), release_once_reading_later(&store)).await;
            (changed, seen)
        })
        .await;
        let (changed, seen) = changed;
        assert_eq!(
            seen,
            vec![Some(changed); 25],
            "every later reader waited for the next read"
        );
        assert_eq!(
            store.reads(),
            (2, 1),
            "one read in the air, and one after it for all of them"
        );
        assert_eq!(store.most_reading.load(SeqCst), 1, "one read at a time");
    }

    /// Lets the held read through (the readers have asked by then).
    async fn release_once_reading_later(store: &Double) {
        tokio::task::yield_now().await;
        store.release();
    }

    #[tokio::test]
    async fn calls_to_an_unknown_number_see_what_the_store_held_when_they_asked() {
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        // Changed elsewhere, with no news yet: the plan in hand does not know it.
        let changed = store.change();
        assert_eq!(at_revision(&cache.current().await), Some(1));
        let seen = readers(25, || cache.reread(), async {}).await;
        assert_eq!(seen, vec![Some(changed); 25], "none refused on the plan in hand");
        assert_eq!(store.reads(), (1, 1), "one read served the burst");

        // A read in the air that started before a change does not serve a call asking after it.
        store.hold();
        let early = cache.reread();
        let later = async {
            while store.reading.load(SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let changed = store.change();
            let seen = readers(25, || cache.reread(), release_once_reading_later(&store)).await;
            (changed, seen)
        };
        let (_, (changed, seen)) = join(early, later).await;
        assert_eq!(seen, vec![Some(changed); 25]);
        assert_eq!(store.reads(), (3, 2));
    }

    #[tokio::test]
    async fn news_binds_readers_until_the_plan_in_hand_is_at_its_revision() {
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        // News of what is in hand costs nothing.
        cache.heard(1);
        assert_eq!(at_revision(&cache.current().await), Some(1));
        assert_eq!(store.reads(), (0, 0));
        // News of a later revision: every reader from then on waits for it.
        let changed = store.change();
        store.hold();
        cache.heard(changed);
        let seen = readers(20, || cache.current(), release_once_reading(&store)).await;
        assert_eq!(seen, vec![Some(changed); 20]);
        assert_eq!(store.reads(), (1, 1));
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_holds_no_reader_past_the_budget() {
        let store = Double::at(1);
        let wait = Duration::from_millis(200);
        let cache = cache_over(&store, LONG, wait).await;
        let changed = store.change();
        store.hold();
        cache.invalidate();
        for _ in 0..2 {
            let began = Instant::now();
            let seen = readers(20, || cache.current(), async {}).await;
            let took = began.elapsed();
            assert_eq!(seen, vec![Some(1); 20], "the plan in hand, past the budget");
            assert!(took >= wait && took < wait * 3, "waited {took:?}");
        }
        assert_eq!(
            store.reads(),
            (1, 0),
            "no second read while the first is in the air"
        );
        // The store answers again: the read lands, and the readers after it route on the change.
        store.release();
        assert_eq!(at_revision(&cache.current().await), Some(changed));
        assert_eq!(store.most_reading.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_of_a_change_is_made_again_for_the_next_reader() {
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        let changed = store.change();
        store.failing.store(true, SeqCst);
        cache.invalidate();
        let seen = readers(10, || cache.current(), async {}).await;
        assert_eq!(seen, vec![Some(1); 10], "the plan in hand, as the store failed");
        store.failing.store(false, SeqCst);
        assert_eq!(at_revision(&cache.current().await), Some(changed));
    }

    #[tokio::test]
    async fn a_plan_older_than_max_age_is_looked_at_again_but_no_caller_waits_on_a_failing_store() {
        // Within max_age, the plan in hand, without a read.
        let store = Double::at(1);
        let cache = cache_over(&store, LONG, Duration::from_secs(5)).await;
        store.change();
        assert_eq!(at_revision(&cache.current().await), Some(1));
        assert_eq!(store.reads(), (0, 0));

        // Past it, the store's revision is looked at before routing.
        let store = Double::at(1);
        let wait = Duration::from_secs(5);
        let cache = cache_over(&store, Duration::ZERO, wait).await;
        let changed = store.change();
        assert_eq!(at_revision(&cache.current().await), Some(changed));
        // The store fails: the look is made, and after it callers no longer wait on one.
        store.failing.store(true, SeqCst);
        assert_eq!(at_revision(&cache.current().await), Some(changed));
        store.hold();
        let began = Instant::now();
        let seen = readers(10, || cache.current(), async {}).await;
        assert_eq!(seen, vec![Some(changed); 10]);
        assert!(began.elapsed() < wait / 10, "{:?}", began.elapsed());
        assert_eq!(
            store.most_reading.load(SeqCst),
            1,
            "one look in the air at a time"
        );
    }

    #[tokio::test]
    async fn a_look_at_an_old_plan_holds_only_the_call_that_finds_it_old() {
        let store = Double::at(1);
        let wait = Duration::from_secs(5);
        let cache = cache_over(&store, Duration::ZERO, wait).await;
        let changed = store.change();
        store.hold();
        let finder = cache.current();
        let others = async {
            while store.reading.load(SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let began = Instant::now();
            let seen = readers(10, || cache.current(), async {}).await;
            let took = began.elapsed();
            store.release();
            (seen, took)
        };
        let (found, (seen, took)) = join(finder, others).await;
        assert_eq!(
            at_revision(&found),
            Some(changed),
            "the finder waited for the look"
        );
        assert_eq!(seen, vec![Some(1); 10], "the others routed on the plan in hand");
        assert!(took < wait / 10, "without waiting: {took:?}");
        assert_eq!(store.reads(), (1, 1));
    }
}
