//! Delivering postbacks from the outbox.
//!
//! A worker on a thread of its own leases what is due, POSTs each postback to its endpoint as the
//! plan has it at that try (looked up by the endpoint's id when leased) signed with the
//! endpoint's secret, and records what came of it: delivered, tried again later (backing off,
//! doubling), or failed for good after the last try. A receiver that is down or slow holds up
//! only its own postbacks, never a webhook: nothing here runs on the HTTP workers, and call
//! actors only queue rows in the transaction that saves the call.
//!
//! Delivery is at least once: a node killed after the receiver took a postback but before the
//! outbox heard of it sends it again (once its lease runs out), with the same
//! `Idempotency-Key`, which receivers use to take it once.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use tokio::{sync::mpsc, task::JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    clock::Clock,
    domain::{
        outbound::{OutboundRules, Refused},
        postback::{Due, SIGNATURE_HEADER, retry_delay, signature},
    },
    store::{PostbackStore, Tried, TryFailed, TryOutcome},
    supervision::Metrics,
};

/// How postbacks are delivered.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// The longest one try waits for the receiver.
    pub timeout: Duration,
    /// The wait after the first failed try; it doubles with each one after (at most an hour).
    pub retry_base: Duration,
    /// Tries before a postback is failed for good (it can still be retried through the API).
    pub max_tries: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            max_tries: 12,
        }
    }
}

impl Delivery {
    /// How long a node holds the postbacks it took: its try's whole time, and some to record
    /// the result. A node that dies holding some frees them once this runs out.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// Postbacks in flight at once, per node.
const IN_FLIGHT: usize = 64;

/// Postbacks in flight at once to one endpoint (URL), so that a receiver that hangs, with a
/// backlog, holds only these few of the node's slots and everyone else's postbacks go on.
const PER_ENDPOINT: usize = 8;

/// While postbacks wait in hand, a lease takes a quarter of the slots at least: a lease is a
/// commit (flushed to disk), and a lease per slot freed made the outbox's own writes, not the
/// receivers, the limit of delivery. With nothing in hand (slots held by hanging receivers) any
/// room is leased, so that others' postbacks never wait for those tries to time out.
const LEASE_AT_LEAST: usize = IN_FLIGHT / 4;

/// An endpoint is slow once one of its tries has gone on this long: its postbacks beyond those
/// in flight then go back to the outbox rather than wait on this node.
const SLOW_AFTER: Duration = Duration::from_secs(1);

/// When a postback given back for a slow endpoint's turn is due again.
const NEXT_TURN: Duration = Duration::from_secs(1);

/// How often the outbox is read when nobody said anything was queued (other nodes' retries,
/// backed-off tries coming due).
const POLL: Duration = Duration::from_millis(500);

/// Tells the worker postbacks were queued. Cheap to clone; the worker stops once every clone
/// is gone.
#[derive(Debug, Clone)]
pub struct Outbox {
    wake: mpsc::Sender<()>,
}

impl Outbox {
    /// Postbacks were committed: deliver them now rather than at the next poll.
    pub fn queued(&self) {
        // A wake-up already waiting is as good as another.
        let _ = self.wake.try_send(());
    }

    /// An outbox whose postbacks nobody delivers here (another node does).
    pub fn detached() -> Self {
        let (wake, _) = mpsc::channel(1);
        Self { wake }
    }
}

/// Sees the addresses a try is about to connect to, once the rules have kept only those they
/// allow; an error stops the try there. (Tests record them and open no socket: reqwest's own
/// connector layers see the URL before resolution, never an address.)
pub type BeforeConnect = Arc<dyn Fn(&[SocketAddr]) -> Result<(), String> + Send + Sync>;

/// How tries reach receivers: names are resolved by `resolver` (the system's by default), and
/// only the addresses [`OutboundRules`] allow are connected to.
#[derive(Clone)]
pub struct Network {
    pub resolver: Arc<dyn Resolve>,
    pub before_connect: Option<BeforeConnect>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            resolver: Arc::new(SystemResolver),
            before_connect: None,
        }
    }
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking threads).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Resolves through another resolver and keeps only the addresses the rules allow, so the
/// connection goes to an address that was checked (a name cannot be checked once and then
/// resolved again to somewhere else).
struct Guarded {
    rules: OutboundRules,
    inner: Arc<dyn Resolve>,
    before_connect: Option<BeforeConnect>,
}

/// A name whose addresses are all refused, as the resolver's error (found again in the try's
/// error by [`refusal_in`]).
#[derive(Debug)]
struct Blocked(Refused);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Blocked {}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let resolving = self.inner.resolve(name);
        let (rules, before_connect) = (self.rules, self.before_connect.clone());
        Box::pin(async move {
            let found: Vec<SocketAddr> = resolving.await?.collect();
            let ips: Vec<IpAddr> = found.iter().map(SocketAddr::ip).collect();
            let allowed = rules.reachable(&host, &ips).map_err(Blocked)?;
            let kept: Vec<SocketAddr> = (found.into_iter())
                .filter(|at| allowed.contains(&at.ip()))
                .collect();
            if let Some(before_connect) = before_connect {
                before_connect(&kept)?;
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The refusal behind a failed request, if the guard refused it.
fn refusal_in(error: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        // An `io::Error` wrapping it skips it in `source()`: it is looked for inside too.
        let inside = (error.downcast_ref::<std::io::Error>())
            .and_then(|io| io.get_ref())
            .map(|inside| inside as &(dyn std::error::Error + 'static));
        for error in [Some(error), inside].into_iter().flatten() {
            if let Some(blocked) = error.downcast_ref::<Blocked>() {
                return Some(&blocked.0);
            }
        }
        source = error.source();
    }
    None
}

/// Starts delivering on a thread of its own.
pub fn start(
    store: Arc<dyn PostbackStore>,
    delivery: Delivery,
    (rules, network): (OutboundRules, Network),
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> std::io::Result<Outbox> {
    let (wake, woken) = mpsc::channel(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(delivery.timeout)
        .connect_timeout(delivery.timeout)
        // A postback goes where its endpoint says, and nowhere a response points to.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Switchboard-Postbacks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(Guarded {
            rules,
            inner: network.resolver,
            before_connect: network.before_connect,
        }))
        .build()
        .map_err(std::io::Error::other)?;
    let worker = Worker {
        store,
        delivery,
        metrics,
        client,
        clock,
        rules,
    };
    std::thread::Builder::new()
        .name("postbacks".into())
        .spawn(move || runtime.block_on(worker.run(woken)))?;
    Ok(Outbox { wake })
}

#[derive(Clone)]
struct Worker {
    store: Arc<dyn PostbackStore>,
    delivery: Delivery,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// Where tries may go: checked on the URL before each try, and on the addresses its name
    /// resolves to by the client's resolver.
    rules: OutboundRules,
    /// Leases are timed by it (on several nodes, the database's time: see
    /// [`crate::cluster::aligned`]).
    clock: Arc<dyn Clock>,
}

/// Results recorded per transaction, at most.
const RECORDED_TOGETHER: usize = 256;

/// A try that ended: its endpoint, and when it started.
type Ended = (String, std::time::Instant);

/// One endpoint's postbacks on this node: those in flight, when the oldest of them started,
/// and those leased and waiting their turn.
#[derive(Default)]
struct Lane {
    started: VecDeque<std::time::Instant>,
    waiting: VecDeque<Due>,
}

impl Lane {
    /// An endpoint answers promptly while none of its tries has been going for long: its
    /// postbacks may then wait here for a moment rather than go back to the outbox.
    fn is_prompt(&self) -> bool {
        self.started.front().is_none_or(|at| at.elapsed() < SLOW_AFTER)
    }
}

impl Worker {
    async fn run(self, mut woken: mpsc::Receiver<()>) {
        // Tries end one by one, but are recorded together: one commit for all that ended
        // meanwhile, so a busy outbox costs the database little and the calls' writer waits
        // for it less.
        let (tried, results) = mpsc::channel(IN_FLIGHT * 4);
        tokio::spawn(record(self.store.clone(), results));
        tokio::spawn(count(self.store.clone(), self.metrics.clone()));
        let mut in_flight = JoinSet::new();
        let mut lanes: HashMap<String, Lane> = HashMap::new();
        // Whether the outbox may hold postbacks due: after a wake-up or a poll, or when the
        // last lease took all the room there was. (A lease is a write: not made for nothing.)
        let mut look = true;
        // An interval, not a sleep per turn: tries ending all the time must not keep putting
        // the next look off (retries come due, other nodes queue postbacks).
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // An endpoint that turned slow gives back what waits for it: those postbacks must
            // not hold slots while its tries hang.
            let stuck: Vec<Uuid> = (lanes.values_mut())
                .filter(|lane| !lane.is_prompt())
                .flat_map(|lane| lane.waiting.drain(..).map(|due| due.id))
                .collect();
            if !stuck.is_empty() {
                let due_at = self.clock.now() + NEXT_TURN;
                if let Err(error) = self.store.release_postbacks(&stuck, due_at).await {
                    tracing::warn!(%error, "could not give back postbacks; their lease will run out");
                }
            }
            let waiting: usize = lanes.values().map(|lane| lane.waiting.len()).sum();
            let room = IN_FLIGHT.saturating_sub(in_flight.len() + waiting);
            if room > 0 && look && (room >= LEASE_AT_LEAST || waiting == 0) {
                let now = self.clock.now();
                let until = now + self.delivery.lease();
                match self.store.lease_due_postbacks(now, until, room as u32).await {
                    Ok(due) => {
                        look = due.len() == room;
                        let mut later = Vec::new();
                        for postback in due {
                            let lane = lanes.entry(postback.url.clone()).or_default();
                            if lane.started.len() < PER_ENDPOINT {
                                self.start(&mut in_flight, lane, postback, &tried);
                            } else if lane.is_prompt() {
                                lane.waiting.push_back(postback);
                            } else {
                                later.push(postback.id);
                            }
                        }
                        if !later.is_empty() {
                            // Their endpoint is slow and has its share in flight: back to the
                            // outbox for a while, so that they hold no slot meanwhile.
                            look = false;
                            if let Err(error) = self.store.release_postbacks(&later, now + NEXT_TURN).await {
                                tracing::warn!(%error, "could not give back postbacks; their lease will run out");
                            }
                        }
                    }
                    Err(error) => {
                        look = false;
                        tracing::warn!(%error, "could not read the postback outbox");
                    }
                }
            }
            tokio::select! {
                Some(ended) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok((url, started)) = ended
                        && let Some(lane) = lanes.get_mut(&url)
                    {
                        if let Some(i) = lane.started.iter().position(|at| *at == started) {
                            lane.started.remove(i);
                        }
                        if let Some(next) = lane.waiting.pop_front() {
                            self.start(&mut in_flight, lane, next, &tried);
                        }
                        if lane.started.is_empty() && lane.waiting.is_empty() {
                            lanes.remove(&url);
                        }
                    }
                }
                wake = woken.recv() => {
                    if wake.is_none() {
                        // Nobody can queue postbacks any more: the service stopped.
                        return;
                    }
                    look = true;
                }
                _ = poll.tick() => look = true,
            }
        }
    }

    fn start(
        &self,
        in_flight: &mut JoinSet<Ended>,
        lane: &mut Lane,
        postback: Due,
        tried: &mpsc::Sender<Tried>,
    ) {
        let started = std::time::Instant::now();
        lane.started.push_back(started);
        let span = tracing::info_span!("postback", id = %postback.id, event = %postback.event);
        let delivered = self.clone().deliver(postback, tried.clone());
        in_flight.spawn(async move { (delivered.await, started) }.instrument(span));
    }

    /// One try: its outcome goes to the recorder. Returns the endpoint it was for.
    async fn deliver(self, postback: Due, tried: mpsc::Sender<Tried>) -> String {
        let outcome = self.try_once(&postback).await;
        let tried = tried.send(Tried {
            id: postback.id,
            at: self.clock.now(),
            url: postback.url.clone(),
            outcome,
        });
        if tried.await.is_err() {
            // Only when the worker is stopping: the lease runs out, and the postback is sent
            // again by whichever node takes it.
            tracing::warn!("a postback's try could not be recorded; it will be tried again");
        }
        postback.url
    }

    async fn try_once(&self, postback: &Due) -> TryOutcome {
        // An address written in the URL is never resolved, so never seen by the resolver.
        let checked = (url::Url::parse(&postback.url).map_err(|_| Refused::NotAUrl))
            .and_then(|url| self.rules.check_url(&url));
        if let Err(refused) = checked {
            return self.refused(&refused);
        }
        let sent_at = self.clock.now();
        let result = self
            .client
            .post(&postback.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(&postback.secret, sent_at.as_second(), &postback.body),
            )
            .header("Switchboard-Event", postback.event.as_str())
            .header("Idempotency-Key", postback.id.to_string())
            .body(postback.body.clone())
            .send()
            .await;
        let (error, status_code) = match result {
            Ok(response) if response.status().is_success() => {
                self.metrics.postback_try("delivered");
                return TryOutcome::Delivered {
                    status_code: response.status().as_u16(),
                };
            }
            Ok(response) => {
                let status = response.status();
                (
                    format!("the receiver answered {status}{}", excerpt(response).await),
                    Some(status.as_u16()),
                )
            }
            Err(error) => match refusal_in(&error) {
                Some(refused) => return self.refused(refused),
                None if error.is_timeout() => ("the receiver did not answer in time".to_owned(), None),
                // Without the URL: it may hold a token.
                None => (format!("could not reach the receiver: {}", cause_of(error)), None),
            },
        };
        let tries = postback.attempts + 1;
        let retry_at = (tries < self.delivery.max_tries)
            .then(|| self.clock.now() + retry_delay(self.delivery.retry_base, tries));
        tracing::warn!(%error, tries, retrying = retry_at.is_some(), "a postback was not delivered");
        self.metrics
            .postback_try(if retry_at.is_some() { "retrying" } else { "failed" });
        TryOutcome::Failed(TryFailed {
            error,
            status_code,
            retry_at,
        })
    }
}

impl Worker {
    /// A try the rules refused: failed for good, as trying again cannot help until the
    /// endpoint (or its name's addresses) change; it can be retried through the API then.
    fn refused(&self, refused: &Refused) -> TryOutcome {
        let error = format!("refused by the outbound rules: {refused}");
        tracing::warn!(%error, "a postback was refused by the outbound rules");
        self.metrics.postback_try("failed");
        TryOutcome::Failed(TryFailed {
            error,
            status_code: None,
            retry_at: None,
        })
    }
}

/// What went wrong, with its first cause (`connection refused`), but without the URL: it may
/// hold a token.
fn cause_of(error: reqwest::Error) -> String {
    let mut root = std::error::Error::source(&error);
    while let Some(deeper) = root.and_then(std::error::Error::source) {
        root = Some(deeper);
    }
    let root = root.map(|cause| format!(": {cause}")).unwrap_or_default();
    format!("{}{root}", error.without_url())
}

/// The first characters of a receiver's error answer, for the operator to read (admins only:
/// a receiver may put anything there).
async fn excerpt(response: reqwest::Response) -> String {
    const SHOWN: usize = 200;
    let Ok(text) = response.text().await else {
        return String::new();
    };
    let text: String = (text.chars())
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SHOWN)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// How often the outbox is counted for the metrics.
const COUNT_EVERY: Duration = Duration::from_secs(2);

/// Counts the outbox for `postback_outbox{status}`, now and then (a pending backlog or failed
/// postbacks are worth an alert).
async fn count(store: Arc<dyn PostbackStore>, metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(COUNT_EVERY);
    loop {
        every.tick().await;
        match store.outbox_counts().await {
            Ok((pending, failed)) => metrics.outbox(pending, failed),
            Err(error) => tracing::warn!(%error, "could not count the postback outbox"),
        }
    }
}

/// Records tries as they end, every one waiting in one transaction. A batch the database
/// refuses is left to the leases: those postbacks are tried again once theirs run out (at least
/// once, never lost).
async fn record(store: Arc<dyn PostbackStore>, mut results: mpsc::Receiver<Tried>) {
    let mut batch = Vec::with_capacity(RECORDED_TOGETHER);
    while results.recv_many(&mut batch, RECORDED_TOGETHER).await > 0 {
        if let Err(error) = store.record_tries(&batch).await {
            tracing::warn!(%error, tries = batch.len(), "could not record postback tries; they will be tried again");
        }
        batch.clear();
    }
}
