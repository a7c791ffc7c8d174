//! Group commit for call saves.
//!
//! A call's TwiML is returned only once the call is saved, and a commit costs a disk flush and
//! SQLite takes one writer at a time, so one transaction per save would hold incoming calls to
//! the database's commit rate. Instead each save is queued to a writer task that takes every
//! save waiting and commits them together, each table's rows in one statement
//! ([`save_all`]): the more calls arrive at once, the more share a commit, and a lone call
//! waits for nothing.
//!
//! Saves of one call keep their order (a call is always queued to the same writer), which
//! matters because a later save of the call row replaces an earlier one.

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Duration,
};

use sqlx::{AnyPool, Transaction, any::Any};
use tokio::sync::{mpsc, oneshot};

use super::{
    Backend,
    calls::{Written, save_all},
    cluster::Newsroom,
    finish,
    health::WriteHealth,
};
use crate::{
    domain::{
        call::{CallRecord, CallSid, Conversion},
        capacity::LoadChange,
        dedupe::Touched,
        postback::Postback,
        timeline::TimelineEntry,
    },
    store::{CallChange, Saved, StoreError},
};

/// The most saves one commit takes: enough to absorb any burst a server sees, few enough that
/// a transaction stays short.
const MOST_PER_COMMIT: usize = 256;

/// Saves queued before a caller waits for room (that wait counts against its own deadline).
const QUEUE: usize = 4096;

/// The longest a commit may take before the writer gives up on it (and its connection): a
/// database that stops answering must not hold the writer, and every call behind it, forever.
const COMMIT_LIMIT: Duration = Duration::from_secs(10);

/// The writers of one store. One for SQLite, which takes one writer at a time anyway; a few
/// for PostgreSQL, whose commits run in parallel.
#[derive(Debug, Clone)]
pub(super) struct CallWriters {
    queues: Vec<mpsc::Sender<Queued>>,
    hasher: RandomState,
}

struct Queued {
    change: OwnedChange,
    saved: oneshot::Sender<Result<Saved, StoreError>>,
}

/// A [`CallChange`] the writer can hold after the caller stopped waiting: a save whose caller
/// gave up is still made (the caller retries it, and saving is idempotent).
struct OwnedChange {
    call: CallRecord,
    timeline: Vec<TimelineEntry>,
    conversions: Vec<Conversion>,
    touched: Vec<Touched>,
    load: Vec<LoadChange>,
    postbacks: Vec<Postback>,
    fresh: bool,
}

impl OwnedChange {
    fn of(change: &CallChange<'_>) -> Self {
        Self {
            call: change.call.clone(),
            timeline: change.timeline.to_vec(),
            conversions: change.conversions.to_vec(),
            touched: change.touched.to_vec(),
            load: change.load.to_vec(),
            postbacks: change.postbacks.to_vec(),
            fresh: change.fresh,
        }
    }

    fn as_change(&self) -> CallChange<'_> {
        CallChange {
            call: &self.call,
            timeline: &self.timeline,
            conversions: &self.conversions,
            touched: &self.touched,
            load: &self.load,
            postbacks: &self.postbacks,
            fresh: self.fresh,
        }
    }
}

impl CallWriters {
    /// Starts the writers on a thread of their own: a commit waits on no HTTP worker or
    /// actor, and the writers outlive the runtime of whoever connected. They stop when the
    /// store's last clone is dropped.
    pub(super) fn start(
        pool: &AnyPool,
        backend: Backend,
        newsroom: &Newsroom,
        health: &Arc<WriteHealth>,
    ) -> Result<Self, StoreError> {
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let mut queues = Vec::with_capacity(writers);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            let (queue, saves) = mpsc::channel(QUEUE);
            let db = Db {
                pool: pool.clone(),
                backend,
                newsroom: newsroom.clone(),
                health: health.clone(),
            };
            tasks.spawn_on(write(db, saves), runtime.handle());
            queues.push(queue);
        }
        std::thread::Builder::new()
            .name("call-writer".into())
            .spawn(move || {
                runtime.block_on(async {
                    // A writer that failed leaves its calls' saves failing (the database is
                    // "unavailable" to them); the others carry on.
                    while let Some(stopped) = tasks.join_next().await {
                        if let Err(error) = stopped {
                            tracing::error!(%error, "a call writer stopped");
                        }
                    }
                })
            })
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self {
            queues,
            hasher: RandomState::new(),
        })
    }

    /// Queues the change and waits until it is committed, or failed.
    pub(super) async fn save(&self, change: &CallChange<'_>) -> Result<Saved, StoreError> {
        let writer = self.hasher.hash_one(change.call.sid.as_str()) as usize % self.queues.len();
        let (saved, outcome) = oneshot::channel();
        let queued = Queued {
            change: OwnedChange::of(change),
            saved,
        };
        // The writers stop only if their thread died: for this caller, the database is gone.
        let gone = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        self.queues[writer].send(queued).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// One writer: commits what is waiting, in one transaction, until the queue closes.
async fn write(db: Db, mut saves: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MOST_PER_COMMIT);
    while saves.recv_many(&mut batch, MOST_PER_COMMIT).await > 0 {
        commit(&db, &mut batch).await;
    }
}

struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Where the commits' news goes.
    newsroom: Newsroom,
    /// Told what became of each commit.
    health: Arc<WriteHealth>,
}

impl Db {
    /// A transaction that records calls. Unlike plan changes these need no global order: a
    /// call is changed by its own actor only. SQLite takes its write lock up front.
    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Commits `changes`; the fresh calls the store held already (nothing of theirs saved).
    async fn commit(&self, changes: &[CallChange<'_>]) -> Result<HashSet<CallSid>, StoreError> {
        let commit = async {
            let mut existed = HashSet::new();
            // Twice at most: the second time, the calls found stored are left out, and no other
            // writer can store one meanwhile (SQLite's write lock is held from `BEGIN`).
            loop {
                let kept: Vec<CallChange<'_>> = (changes.iter())
                    .filter(|change| !(change.fresh && existed.contains(&change.call.sid)))
                    .copied()
                    .collect();
                let mut tx = self.begin().await?;
                match save_all(&mut tx, self.backend, &self.newsroom, &kept).await {
                    Ok(Written::Done(more)) => {
                        finish(tx, Ok(())).await?;
                        existed.extend(more);
                        return Ok(existed);
                    }
                    Ok(Written::Undo(more)) => {
                        tx.rollback().await?;
                        existed.extend(more);
                    }
                    Err(error) => return finish(tx, Err(error)).await,
                }
            }
        };
        let committed = tokio::time::timeout(COMMIT_LIMIT, commit)
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)));
        match &committed {
            Ok(_) => self.health.wrote(),
            Err(error) => self.health.failed("the calls' writer", error),
        }
        committed
    }
}

/// Commits `batch` and tells each caller. If the shared transaction fails because of one
/// change, each save is tried on its own, so that one bad change fails no other. If the
/// database is unavailable, retrying each would only keep the writer busy long past every
/// caller's deadline: all are told, and their actors retry.
async fn commit(db: &Db, batch: &mut Vec<Queued>) {
    if batch.len() > 1 {
        let changes: Vec<_> = batch.iter().map(|queued| queued.change.as_change()).collect();
        match db.commit(&changes).await {
            Ok(existed) => {
                for queued in batch.drain(..) {
                    let _ = queued.saved.send(Ok(outcome(&queued.change, &existed)));
                }
                return;
            }
            Err(StoreError::Unavailable(error)) => {
                // Logged once per outage by the store's health, not once per commit.
                tracing::debug!(%error, saves = batch.len(), "the database is unavailable to a group commit");
                for queued in batch.drain(..) {
                    let gone = sqlx::Error::Protocol(format!("the database is unavailable: {error}"));
                    let _ = queued.saved.send(Err(StoreError::Unavailable(gone)));
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, saves = batch.len(), "a group commit failed; saving one by one")
            }
        }
    }
    for queued in batch.drain(..) {
        let result = db.commit(&[queued.change.as_change()]).await;
        let _ = (queued.saved).send(result.map(|existed| outcome(&queued.change, &existed)));
    }
}

fn outcome(change: &OwnedChange, existed: &HashSet<CallSid>) -> Saved {
    if change.fresh && existed.contains(&change.call.sid) {
        Saved::Existed
    } else {
        Saved::Saved
    }
}
