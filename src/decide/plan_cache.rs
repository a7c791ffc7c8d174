//! The routing plan as calls read it: held in memory, reloaded when it changes.
//!
//! Every call reads the plan, so it is not read from the database per call. Changes made
//! through this process's API invalidate the cache at once; changes made elsewhere (a CLI
//! import, another node) are noticed through the store's plan revision, checked at most once
//! per `max_age`.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

/// How long a call waits for the plan to be reloaded before routing on the one in hand.
const RELOAD_BUDGET: Duration = Duration::from_millis(500);

/// Calls to numbers the plan does not know look in the store at most this often.
const REREAD_AT_MOST_EVERY: Duration = Duration::from_millis(50);

use crate::{
    domain::{
        plan::{Buyer, Campaign, Company, PlanEntity, Publisher, Record},
        routing::RoutingPlan,
    },
    store::{ListFilter, PlanStore, PlanTable, StoreError},
};

pub struct PlanCache {
    store: Arc<dyn PlanStore>,
    max_age: Duration,
    cached: RwLock<Cached>,
    /// One reload at a time; the others keep reading the current plan meanwhile.
    reloading: tokio::sync::Mutex<()>,
}

struct Cached {
    plan: Arc<RoutingPlan>,
    revision: i64,
    checked: Option<Instant>,
    /// The last look in the store for a number the plan did not know.
    reread: Option<Instant>,
}

impl PlanCache {
    pub async fn load(store: Arc<dyn PlanStore>, max_age: Duration) -> Result<Self, StoreError> {
        let revision = store.plan_revision().await?;
        let plan = Arc::new(read_plan(store.as_ref()).await?);
        Ok(Self {
            store,
            max_age,
            cached: RwLock::new(Cached {
                plan,
                revision,
                checked: Some(Instant::now()),
                reread: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The plan, reloaded first if it may have changed. Calls never queue behind a reload:
    /// while one is under way the others use the plan in hand, and a reload that takes longer
    /// than its budget (a store that does not answer) is abandoned for a while. A call is better
    /// routed on a plan a moment old than not at all.
    pub async fn current(&self) -> Arc<RoutingPlan> {
        if let Some(plan) = self.fresh() {
            return plan;
        }
        let Ok(_reloading) = self.reloading.try_lock() else {
            return self.read().plan.clone();
        };
        let problem = match tokio::time::timeout(RELOAD_BUDGET, self.refresh()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("the store did not answer in time".to_owned()),
        };
        if let Some(problem) = problem {
            tracing::warn!(%problem, "could not check the routing plan; using the one in hand");
            self.write().checked = Some(Instant::now());
        }
        self.read().plan.clone()
    }

    /// The plan as the store has it now, for a call about to be refused on the plan in hand
    /// (a campaign created a moment ago on another node): the store's revision is read (one
    /// small query), and the plan reloaded only if it changed. Within the reload budget;
    /// past it, the plan in hand.
    pub async fn reread(&self) -> Arc<RoutingPlan> {
        // A flood of calls to numbers nobody has must not become a flood of reads: one look
        // serves them all for a moment.
        if self
            .read()
            .reread
            .is_some_and(|at| at.elapsed() < REREAD_AT_MOST_EVERY)
        {
            return self.read().plan.clone();
        }
        self.write().reread = Some(Instant::now());
        let reread = async {
            let _reloading = self.reloading.lock().await;
            self.refresh().await
        };
        match tokio::time::timeout(RELOAD_BUDGET, reread).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not read the routing plan again"),
            Err(_) => tracing::warn!("the store did not give the routing plan in time"),
        }
        self.read().plan.clone()
    }

    /// The plan changed here: the next read checks the store.
    pub fn invalidate(&self) {
        self.write().checked = None;
    }

    fn fresh(&self) -> Option<Arc<RoutingPlan>> {
        let cached = self.read();
        let fresh = cached.checked.is_some_and(|at| at.elapsed() < self.max_age);
        fresh.then(|| cached.plan.clone())
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        // The revision is read before the plan: a change landing in between is seen next time.
        let revision = self.store.plan_revision().await?;
        if revision != self.read().revision {
            let plan = Arc::new(read_plan(self.store.as_ref()).await?);
            let mut cached = self.write();
            cached.plan = plan;
            cached.revision = revision;
        }
        self.write().checked = Some(Instant::now());
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.cached
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.cached
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
