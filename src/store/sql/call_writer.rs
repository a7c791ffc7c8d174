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
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Duration,
};

use sqlx::{AnyConnection, AnyPool, Transaction, any::Any};
use tokio::sync::{mpsc, oneshot};

use super::{
    Backend,
    calls::{Written, load_for_update, save_all},
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
    store::{BlindTurn, CallChange, Saved, StoreError, Write},
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
    write: OwnedWrite,
}

/// A [`Write`] the writer can hold.
enum OwnedWrite {
    Replace,
    InsertNew,
    Merge(Vec<BlindTurn>),
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
            write: match change.write {
                Write::Replace => OwnedWrite::Replace,
                Write::InsertNew => OwnedWrite::InsertNew,
                Write::Merge { turns } => OwnedWrite::Merge(turns.to_vec()),
            },
        }
    }

    /// The change as the save writes it, with `call` and `timeline` in place of its own (a
    /// merge resolved).
    fn written<'a>(
        &'a self,
        call: &'a CallRecord,
        timeline: &'a [TimelineEntry],
        write: Write<'a>,
    ) -> CallChange<'a> {
        CallChange {
            call,
            timeline,
            conversions: &self.conversions,
            touched: &self.touched,
            load: &self.load,
            postbacks: &self.postbacks,
            write,
        }
    }
}

/// A change as the transaction writes it: as it came, or, for a merge, resolved against the
/// call the store holds (read in the same transaction, under its lock).
enum Resolved<'a> {
    As(&'a OwnedChange),
    Merged {
        change: &'a OwnedChange,
        stored: Option<Box<CallRecord>>,
        call: Box<CallRecord>,
        timeline: Vec<TimelineEntry>,
    },
}

impl Resolved<'_> {
    fn as_change(&self) -> CallChange<'_> {
        match self {
            Self::As(change) => {
                let write = match change.write {
                    OwnedWrite::Replace => Write::Replace,
                    // (Merges are always resolved.)
                    OwnedWrite::InsertNew | OwnedWrite::Merge(_) => Write::InsertNew,
                };
                change.written(&change.call, &change.timeline, write)
            }
            // A call the store did not hold is inserted only if it still holds none (else the
            // transaction is taken again, and the merge made against the one stored meanwhile).
            Self::Merged {
                change,
                stored,
                call,
                timeline,
            } => {
                let write = if stored.is_some() {
                    Write::Replace
                } else {
                    Write::InsertNew
                };
                change.written(call, timeline, write)
            }
        }
    }

    /// What became of it, once committed without the calls in `existed`.
    fn saved(self, existed: &HashSet<CallSid>) -> Saved {
        match self {
            Self::As(change) if change.existed_in(existed) => Saved::Existed,
            Self::As(_) => Saved::Saved,
            Self::Merged { stored, call, .. } => Saved::Merged { stored, merged: call },
        }
    }
}

impl OwnedChange {
    /// A new call the store turned out to hold.
    fn existed_in(&self, existed: &HashSet<CallSid>) -> bool {
        matches!(self.write, OwnedWrite::InsertNew) && existed.contains(&self.call.sid)
    }
}

/// Resolves the merges among `changes` against what the store holds, in order: a call merged
/// twice in one commit (a save retried while its first try still waited) is merged the second
/// time into the first merge.
async fn resolve<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    changes: &[&'a OwnedChange],
) -> Result<Vec<Resolved<'a>>, StoreError> {
    let mut merged_so_far: HashMap<&CallSid, CallRecord> = HashMap::new();
    let mut resolved = Vec::with_capacity(changes.len());
    for change in changes {
        let OwnedWrite::Merge(turns) = &change.write else {
            resolved.push(Resolved::As(change));
            continue;
        };
        let sid = &change.call.sid;
        let stored = match merged_so_far.get(sid) {
            Some(merged) => Some(Box::new(merged.clone())),
            None => load_for_update(conn, backend, sid).await?.map(Box::new),
        };
        let (call, timeline) = match &stored {
            Some(stored) => merge_into(stored, change, turns),
            None => {
                let mut call = change.call.clone();
                call.blind_turns.extend(turns.iter().map(|turn| turn.key));
                call.timeline_len = change.timeline.len() as u32;
                (call, change.timeline.clone())
            }
        };
        merged_so_far.insert(sid, call.clone());
        resolved.push(Resolved::Merged {
            change,
            stored,
            call: Box::new(call),
            timeline,
        });
    }
    Ok(resolved)
}

/// `change`'s call merged into `stored`, and the entries of its turns the store has not merged
/// yet, numbered after the stored ones.
fn merge_into(
    stored: &CallRecord,
    change: &OwnedChange,
    turns: &[BlindTurn],
) -> (CallRecord, Vec<TimelineEntry>) {
    let mut merged = stored.merged_with(&change.call);
    let mut entries = change.timeline.iter();
    let mut timeline = Vec::new();
    for turn in turns {
        let its = entries.by_ref().take(turn.entries);
        if stored.blind_turns.contains(&turn.key) {
            its.for_each(drop);
        } else {
            timeline.extend(its.cloned());
            merged.blind_turns.insert(turn.key);
        }
    }
    merged.timeline_len = stored.timeline_len + timeline.len() as u32;
    (merged, timeline)
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

    /// Commits `changes`: what became of each, in order.
    async fn commit(&self, changes: &[&OwnedChange]) -> Result<Vec<Saved>, StoreError> {
        let commit = async {
            let mut existed = HashSet::new();
            // Twice at most, but for merges racing another node's insert: the second time, the
            // calls found stored are left out, and no other writer can store one meanwhile
            // (SQLite's write lock is held from `BEGIN`).
            loop {
                let mut tx = self.begin().await?;
                let resolved = match resolve(&mut tx, self.backend, changes).await {
                    Ok(resolved) => resolved,
                    Err(error) => return finish(tx, Err(error)).await,
                };
                // New calls the store turned out to hold are left out (nothing of theirs is
                // saved); merges are resolved afresh each time, so they never are.
                let written: Vec<CallChange<'_>> = (resolved.iter())
                    .filter(|r| !matches!(r, Resolved::As(change) if change.existed_in(&existed)))
                    .map(Resolved::as_change)
                    .collect();
                match save_all(&mut tx, self.backend, &self.newsroom, &written).await {
                    // A merge that meant to insert its call lost to another node's insert: it is
                    // made again, against that call.
                    Ok(Written::Done(more)) if !more.iter().any(|sid| merged_anew(&resolved, sid)) => {
                        finish(tx, Ok(())).await?;
                        existed.extend(more);
                        return Ok(resolved.into_iter().map(|r| r.saved(&existed)).collect());
                    }
                    Ok(Written::Done(more) | Written::Undo(more)) => {
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
        let changes: Vec<&OwnedChange> = batch.iter().map(|queued| &queued.change).collect();
        match db.commit(&changes).await {
            Ok(outcomes) => {
                for (queued, saved) in batch.drain(..).zip(outcomes) {
                    let _ = queued.saved.send(Ok(saved));
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
        let result = db.commit(&[&queued.change]).await;
        let saved = result.and_then(|mut outcomes| {
            outcomes
                .pop()
                .ok_or_else(|| StoreError::Corrupt("a commit told nothing of its save".into()))
        });
        let _ = queued.saved.send(saved);
    }
}

/// Whether `sid` is a call a merge meant to insert (the store held none when it was read).
fn merged_anew(resolved: &[Resolved<'_>], sid: &CallSid) -> bool {
    (resolved.iter()).any(|r| matches!(r, Resolved::Merged { stored: None, call, .. } if call.sid == *sid))
}
