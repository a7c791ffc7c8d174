//! Several nodes on one PostgreSQL. Each node keeps its own indexes (de-dupe marks, buyers'
//! load, RTB reservations) and learns the others' changes from their news; caps are held in
//! the database itself (see [`crate::store::ClusterStore`]). Each node writes callback URLs
//! under its own public URL, so a call's webhooks come back to the node whose actor holds it;
//! when that node is gone, the load balancer sends them to another, which accepts signatures
//! made for any node's URL and continues the call from the store.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::{
    clock::{Clock, OffsetClock},
    config::PublicUrl,
    decide::{
        Capacity, Dedupe, Learned, PlanCache, Reservations,
        capacity::{Apply, Hold},
        dedupe::{Learn, LearnMarks, Unlearn},
    },
    domain::cluster::{Bulletin, News, NodeId},
    store::{CallStore, ClusterStore, NewsChannel, RtbStore, StoreError},
    supervision::Metrics,
};

/// How often a node says it is up, and reads where the others are.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How often a node measures the database's clock against its own.
const CLOCK_CHECK: Duration = Duration::from_secs(10);

/// A node's clock this far from the database's is worth a warning (it is followed anyway).
const CLOCK_DRIFT_WORTH_A_WARNING: SignedDuration = SignedDuration::from_secs(1);

/// The clock a node keeps time by. Where nodes share a database, a wall clock follows the
/// database's (measured at start and every 10 s, to within half a round trip), so that what
/// nodes share is timed alike by all of them whatever their machines' clocks say: postbacks'
/// and capacity slots' leases, RTB reservations' expiries, cap periods and de-dupe windows. A
/// node whose clock runs ahead cannot take another's lease early. A clock that moves only
/// when told to (tests, simulations) is left as it is.
pub async fn aligned(
    store: Arc<dyn ClusterStore>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Clock>, StoreError> {
    if !store.is_shared() || !clock.is_wall_clock() {
        return Ok(clock);
    }
    let aligned = Arc::new(OffsetClock::new(clock));
    keep_time(store.as_ref(), &aligned).await?;
    let following = Arc::downgrade(&aligned);
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(CLOCK_CHECK);
        every.tick().await;
        loop {
            every.tick().await;
            // Gone with the node that kept time by it.
            let Some(clock) = following.upgrade() else { return };
            if let Err(error) = keep_time(store.as_ref(), &clock).await {
                tracing::warn!(%error, "could not read the database's clock; keeping the last offset");
            }
        }
    });
    Ok(aligned)
}

/// Sets `clock`'s offset to the database's time, read now.
async fn keep_time(store: &dyn ClusterStore, clock: &OffsetClock) -> Result<(), StoreError> {
    let before = clock.base_now();
    let database = store.database_now().await?;
    let after = clock.base_now();
    let midway = before + after.duration_since(before) / 2;
    let offset = database.duration_since(midway);
    let change = offset - clock.offset();
    if change.abs() > CLOCK_DRIFT_WORTH_A_WARNING {
        tracing::warn!(
            offset_ms = offset.as_millis(),
            "this node's clock runs apart from the database's: it keeps the database's time"
        );
    }
    clock.set_offset(offset);
    Ok(())
}

/// A node is remembered this long after its last heartbeat: a call it held may last four
/// hours, and its callbacks still come (to another node) until the call ends.
const REMEMBERED: SignedDuration = SignedDuration::from_hours(5);

/// How many bulletins wait for the node's dispatcher before the listener waits too.
const HEARD_QUEUE: usize = 4096;

/// The indexes that learn other nodes' news, and the routing plan they change.
pub struct Indexes {
    pub dedupe: Dedupe,
    pub capacity: Capacity,
    pub reservations: Reservations,
    pub plan: Arc<PlanCache>,
    /// Counts the news heard, by kind.
    pub metrics: Arc<Metrics>,
}

/// Every node's public URL: a callback signed for any of them is genuine (its node is gone, or
/// the load balancer chose another).
#[derive(Debug, Default)]
pub struct Peers(RwLock<Vec<PublicUrl>>);

impl Peers {
    pub fn urls(&self) -> Vec<PublicUrl> {
        self.0.read().map(|urls| urls.clone()).unwrap_or_default()
    }

    fn set(&self, urls: Vec<PublicUrl>) {
        if let Ok(mut known) = self.0.write() {
            *known = urls;
        }
    }

    fn add(&self, url: PublicUrl) {
        if let Ok(mut known) = self.0.write()
            && !known.contains(&url)
        {
            known.push(url);
        }
    }
}

/// Joins the cluster, if the store is shared: says where this node is, keeps saying it, keeps
/// `peers` up to date, and has `indexes` learn the other nodes' news. A store not shared
/// (SQLite) has no other node: nothing to do.
pub async fn join(
    store: Arc<dyn ClusterStore>,
    rereads: Rereads,
    public_url: &PublicUrl,
    indexes: Indexes,
) -> Result<Arc<Peers>, StoreError> {
    let peers = Arc::new(Peers::default());
    let Some(channel) = store.news_channel() else {
        return Ok(peers);
    };
    let started_at = Timestamp::now();
    // Listening before reading who is up: a node that starts meanwhile is either read or heard.
    let heard = listen(&channel, store.node().clone()).await?;
    announce(store.as_ref(), public_url, started_at, &peers).await?;
    actix_web::rt::spawn(follow(heard, rereads, indexes, peers.clone()));
    tracing::info!(node = %store.node(), nodes = peers.urls().len(), "joined the cluster");
    let (store, public_url, known) = (store, public_url.clone(), peers.clone());
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(HEARTBEAT);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(error) = announce(store.as_ref(), &public_url, started_at, &known).await {
                tracing::warn!(%error, "could not tell the other nodes this one is up");
            }
        }
    });
    Ok(peers)
}

/// Where a node reads again what news it may have missed.
pub struct Rereads {
    pub marks: Arc<dyn CallStore>,
    pub reservations: Arc<dyn RtbStore>,
}

/// The news other nodes commit to `channel`, as they commit it (this node's own left out): a
/// connection of its own listens, and when it is lost and back, [`Heard::Missed`] says so.
pub async fn listen(channel: &NewsChannel, node: NodeId) -> Result<mpsc::Receiver<Heard>, StoreError> {
    let mut listener = PgListener::connect(channel.database_url.expose_secret()).await?;
    listener.listen(&channel.channel).await?;
    let (heard, receiver) = mpsc::channel(HEARD_QUEUE);
    tokio::spawn(async move {
        loop {
            let next = match listener.try_recv().await {
                Ok(Some(notification)) => match serde_json::from_str::<Bulletin>(notification.payload()) {
                    Ok(bulletin) if bulletin.from == node => continue,
                    Ok(bulletin) => Heard::News(bulletin.news),
                    Err(error) => {
                        tracing::warn!(%error, "news from another node could not be read");
                        continue;
                    }
                },
                // The connection was lost; the next receive connects again.
                Ok(None) => {
                    tracing::warn!("lost the connection that hears other nodes; reconnecting");
                    Heard::Missed
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot hear other nodes; trying again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if heard.send(next).await.is_err() {
                // Nobody listens any more: the node is stopping.
                return;
            }
        }
    });
    Ok(receiver)
}

/// What a node hears from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    News(News),
    /// The connection that listens was lost and is back: what was sent meanwhile is lost.
    Missed,
}

impl Heard {
    /// What it is of, as metrics count it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::News(News::Touched(_)) => "touched",
            Self::News(News::Unconverted(_)) => "unconverted",
            Self::News(News::Load(_)) => "load",
            Self::News(News::Held { .. }) => "held",
            Self::News(News::Reserved(_)) => "reserved",
            Self::News(News::Claimed { .. }) => "claimed",
            Self::News(News::Up { .. }) => "up",
            Self::News(News::Plan { .. }) => "plan",
            Self::Missed => "missed",
        }
    }
}

async fn announce(
    store: &dyn ClusterStore,
    public_url: &PublicUrl,
    started_at: Timestamp,
    peers: &Peers,
) -> Result<(), StoreError> {
    let since = Timestamp::now().checked_sub(REMEMBERED).unwrap_or(Timestamp::MIN);
    let nodes = store.announce(public_url.as_str(), started_at, since).await?;
    peers.set(
        (nodes.iter())
            .filter_map(|node| PublicUrl::parse(&node.public_url).ok())
            .collect(),
    );
    Ok(())
}

/// Hands each bulletin heard to the index it concerns. After a gap (the listening connection
/// was lost), what could have been missed is read again from the store: the de-dupe marks and
/// the reservations. (Buyers' caps are counted in the store itself; this node's index of them
/// only serves views and a first reading.)
async fn follow(mut heard: mpsc::Receiver<Heard>, rereads: Rereads, indexes: Indexes, peers: Arc<Peers>) {
    while let Some(heard) = heard.recv().await {
        let kind = heard.kind();
        match heard {
            Heard::News(News::Touched(touched)) => indexes.dedupe.tell(Learn(touched)),
            Heard::News(News::Unconverted(taken_back)) => indexes.dedupe.tell(Unlearn(taken_back)),
            Heard::News(News::Load(changes)) => indexes.capacity.tell(Apply(changes)),
            Heard::News(News::Held { buyer, leg, at }) => indexes.capacity.tell(Hold {
                buyer,
                leg,
                limit: None,
                at,
            }),
            Heard::News(News::Reserved(reservation)) => indexes.reservations.tell(Learned {
                reservation,
                claimed: None,
            }),
            Heard::News(News::Claimed { reservation, call }) => indexes.reservations.tell(Learned {
                reservation,
                claimed: Some(call),
            }),
            Heard::News(News::Up { public_url }) => match PublicUrl::parse(&public_url) {
                Ok(url) => peers.add(url),
                Err(error) => tracing::warn!(%error, "a node announced an invalid public URL"),
            },
            Heard::News(News::Plan { revision }) => indexes.plan.heard(revision),
            Heard::Missed => {
                indexes.plan.invalidate();
                catch_up(&rereads, &indexes).await;
            }
        }
        // Counted once handed over: whoever reads the count may rely on it being known.
        indexes.metrics.news_heard(kind);
    }
}

async fn catch_up(store: &Rereads, indexes: &Indexes) {
    let read = (store.marks)
        .dedupe_marks(&mut |batch| indexes.dedupe.tell(LearnMarks(batch)))
        .await;
    if let Err(error) = read {
        tracing::error!(%error, "could not read the de-dupe marks again after a gap");
    }
    match store.reservations.held_reservations(Timestamp::now()).await {
        Ok(held) => {
            for (reservation, claimed) in held {
                indexes.reservations.tell(Learned { reservation, claimed });
            }
        }
        Err(error) => tracing::error!(%error, "could not read the reservations again after a gap"),
    }
}
