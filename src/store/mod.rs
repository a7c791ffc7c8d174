//! Persistence behind a small interface. The rest of the code never sees SQL.

mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;
use uuid::Uuid;

pub use sql::{Backend, SqlStore};

use crate::{
    domain::{
        access::{self, IssuedToken, KeyDigest},
        audit::AuditEntry,
        block::{BlockEntry, BlockedCaller},
        call::{CallRecord, CallSid, CallState, Conversion, Outcome},
        capacity::{Block, CapPeriod, Leg, LoadChange, LoadHistory},
        cluster::{NodeId, NodeInfo},
        conversion::{Action, IdempotencyKey, Refusal, ReportAnswer, Reported},
        dedupe::{MarkBatch, Scope, Touched, Unconverted},
        ids::Id,
        money::Money,
        payout::PublisherPayout,
        phone::E164,
        plan::{
            Buyer, BuyerId, Campaign, CampaignId, Company, CompanyId, PlanEntity, Publisher, PublisherId,
            Record,
        },
        postback::{Due, Postback, PostbackRecord, PostbackStatus},
        rtb::{LoggedPing, PingStatus, Reservation, RtbWrite},
        series::{BucketCounts, Window},
        supervision::{BuyerStats, CallSummary, CampaignStats, PublisherStats},
        timeline::TimelineEntry,
    },
    plan::{ImportReport, Plan},
};

/// Create, read, update and delete for one kind of plan entity.
#[async_trait]
pub trait PlanTable<T: PlanEntity>: Send + Sync {
    /// Ordered by id, i.e. by creation.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record<T>>, StoreError>;
    async fn get(&self, id: Id<T>) -> Result<Record<T>, StoreError>;
    /// `company` is the owner for every kind but companies themselves, which take `None`.
    async fn insert(&self, company: Option<CompanyId>, spec: &T) -> Result<Record<T>, StoreError>;
    /// Replaces the fields; a record whose fields do not change is left as it was, `updated_at`
    /// included. With `expected`, only if the record still has those fields, else
    /// [`StoreError::Stale`]: a read-modify-write never loses a concurrent change.
    async fn update(&self, id: Id<T>, spec: &T, expected: Option<&T>) -> Result<Record<T>, StoreError>;
    /// Refused with [`StoreError::Conflict`] while other records refer to this one.
    async fn delete(&self, id: Id<T>) -> Result<(), StoreError>;
}

/// The routing plan: its entities, the companies' block lists, the campaigns' RTB keys, and
/// what changes it as a whole.
#[async_trait]
pub trait PlanStore:
    PlanTable<Company> + PlanTable<Buyer> + PlanTable<Campaign> + PlanTable<Publisher> + BlockListStore
{
    /// A number that changes whenever the routing plan does, by any process.
    async fn plan_revision(&self) -> Result<i64, StoreError>;
    /// Every campaign's RTB key digest.
    async fn rtb_keys(&self) -> Result<Vec<(CampaignId, KeyDigest)>, StoreError>;
    /// Sets (or, with `None`, removes) the campaign's RTB key, kept only as a SHA-256 digest.
    async fn set_rtb_key(&self, campaign: CampaignId, key_sha256: Option<&str>) -> Result<(), StoreError>;
    /// Whether the campaign has an RTB key.
    async fn has_rtb_key(&self, campaign: CampaignId) -> Result<bool, StoreError>;
    /// Applies a plan in one transaction: all of it or nothing.
    async fn import_plan(&self, plan: &Plan) -> Result<ImportReport, StoreError>;
}

/// Live calls and what they leave behind.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// Saves a call after a webhook, all in one transaction: its state and attempts, its new
    /// timeline entries, and the conversions and de-dupe marks not stored yet. The new entries
    /// are the last `timeline.len()` of the call's `timeline_len`. Saving the same change twice
    /// changes nothing more, so a failed save can simply be retried.
    async fn save_call(&self, change: &CallChange<'_>) -> Result<Saved, StoreError>;
    async fn call(&self, sid: &CallSid) -> Result<Option<CallRecord>, StoreError>;
    async fn timeline(&self, sid: &CallSid) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Every de-dupe mark, handed to `each` a batch at a time as they are read, all as of one
    /// moment: to rebuild the index at start-up, where there may be tens of millions.
    async fn dedupe_marks(&self, each: &mut (dyn FnMut(MarkBatch) + Send)) -> Result<(), StoreError>;
    /// Calls not ended that started before `before`, at most `limit`: those whose end never
    /// came, if they are old.
    async fn unended_before(&self, before: Timestamp, limit: u32) -> Result<Vec<CallSid>, StoreError>;
    /// Calls ended in `[since, before)` whose publisher's payout is not settled yet, at most
    /// `limit`: the store did not answer when they were.
    async fn unsettled(
        &self,
        since: Timestamp,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<CallSid>, StoreError>;
    /// Succeeds when the database answers and takes writes (it can take calls): after a write
    /// failed, only once writes go through again.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Publishers' payouts, kept as a ledger (a row per payout paid, and per payout reversed).
#[async_trait]
pub trait PayoutStore: Send + Sync {
    /// Whether the call may earn its publisher a payout: yes if the caller's latest payout to
    /// the publisher not reversed is this call's own (asked again, its answer lost), or if it
    /// has none inside the terms' window. A yes is the payout's row, written in the same step,
    /// under a lock of the caller and publisher: two calls settling at once, on any nodes,
    /// never both earn it.
    async fn pay_once(&self, claim: &PayoutClaim<'_>) -> Result<bool, StoreError>;
}

/// Buyers' reports of their calls' conversions and returns, and the keys they report with.
#[async_trait]
pub trait ConversionStore: Send + Sync {
    /// Makes a report (or return) in one transaction, under its idempotency key: the key is
    /// stored with the answer in the same transaction as every change the report makes, so a
    /// report is made once however often it is sent, and by however many nodes at once. The
    /// same key again with the same request is answered as it was; with another request, it
    /// is refused.
    async fn report(&self, report: &Report<'_>) -> Result<ReportOutcome, StoreError>;
    /// The buyer whose conversion key has this SHA-256 digest.
    async fn conversion_key_buyer(&self, key_sha256: &str) -> Result<Option<BuyerId>, StoreError>;
    /// Sets (or, with `None`, removes) the buyer's conversion key, kept only as a digest.
    async fn set_conversion_key(&self, buyer: BuyerId, key_sha256: Option<&str>) -> Result<(), StoreError>;
    async fn has_conversion_key(&self, buyer: BuyerId) -> Result<bool, StoreError>;
    /// The latest call from `caller` connected to `buyer` that started at or before `at`.
    async fn latest_call_to(
        &self,
        caller: &E164,
        buyer: BuyerId,
        at: Timestamp,
    ) -> Result<Option<CallSid>, StoreError>;
}

/// A report or return of one call's conversion, by its buyer.
pub struct Report<'a> {
    pub call: &'a CallSid,
    pub buyer: BuyerId,
    pub action: Action,
    pub key: &'a IdempotencyKey,
    /// The request's digest: the same key with another request is refused.
    pub request: &'a str,
    pub at: Timestamp,
    /// What the report does, decided on the call as stored.
    pub steps: &'a dyn ReportSteps,
}

/// What a report does to a call, step by step, as the store's transaction reaches each.
pub trait ReportSteps: Send + Sync {
    /// What the report changes, from the call as stored and what was reported of it before;
    /// or why it changes nothing.
    fn apply(&self, call: &CallRecord, reported: &Reported) -> Result<ReportChange, Refusal>;
    /// The publisher's payout the change asked for was judged: paid (`true`), or a duplicate.
    fn paid(&self, change: &mut ReportChange, terms: &PublisherPayout, paid: bool);
    /// The publisher's payout was reversed: what it was (`None`: it had none).
    fn reversed(&self, change: &mut ReportChange, payout: Option<Money>);
    /// The postbacks of the change, as it finally stands.
    fn postbacks(&self, change: &ReportChange) -> Vec<Postback>;
}

/// What a report changes.
#[derive(Debug, Clone)]
pub struct ReportChange {
    /// The call as it is after the report; its new timeline entries are `timeline`.
    pub record: CallRecord,
    pub timeline: Vec<TimelineEntry>,
    pub answer: ReportAnswer,
    /// The conversion the report makes, with the buyer's reference for it.
    pub conversion: Option<(Conversion, Option<String>)>,
    /// De-dupe marks the conversion leaves.
    pub touched: Vec<Touched>,
    /// The return's reason: the conversion is returned.
    pub returned: Option<String>,
    /// The de-dupe scopes a return takes its mark back from, each with the buyers whose
    /// conversions count in it.
    pub retaken: Vec<(Scope, Vec<BuyerId>)>,
    /// The publisher's payout to judge now.
    pub pay: Option<PublisherPayout>,
    /// Whether the publisher's payout is reversed.
    pub reverse_payout: bool,
}

/// What became of a report.
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// Made now. The de-dupe index learns the marks it left or took back.
    Made {
        answer: ReportAnswer,
        touched: Vec<Touched>,
        unconverted: Vec<Unconverted>,
        /// Whether postbacks were queued.
        postbacks: bool,
    },
    /// Made before under the same key: its answer, again.
    Replayed(ReportAnswer),
    /// Nothing changes, and why.
    Refused(Refusal),
    /// The key was used before for another request.
    KeyReused,
}

/// A call's claim to its publisher's payout.
#[derive(Debug, Clone, Copy)]
pub struct PayoutClaim<'a> {
    pub call: &'a CallSid,
    pub publisher: PublisherId,
    /// `None`: a withheld caller, who cannot be told apart and is never a repeat.
    pub caller: Option<&'a E164>,
    pub terms: &'a PublisherPayout,
    pub at: Timestamp,
}

/// What buyers' caps count.
#[async_trait]
pub trait CapacityStore: Send + Sync {
    /// What the capacity index is rebuilt from at start-up: legs of calls not ended that have
    /// no end, unanswered ones dialed since `ringing_since` and answered ones answered since
    /// `talking_since`; calls connected or converted since `counted_since`; the counts since
    /// each lifetime reset; and every reset.
    async fn load_history(
        &self,
        ringing_since: Timestamp,
        talking_since: Timestamp,
        counted_since: Timestamp,
    ) -> Result<LoadHistory, StoreError>;
    /// Counting for `buyer`'s `period` cap starts again at `at`.
    async fn reset_cap(&self, buyer: BuyerId, period: CapPeriod, at: Timestamp) -> Result<(), StoreError>;
}

/// Several nodes on one database: the slots of shared caps, the nodes, and their news.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// This process, as the other nodes know it.
    fn node(&self) -> &NodeId;
    /// Whether other nodes may use this database too (PostgreSQL). Then buyers' caps are held
    /// in it, and each change a node's indexes learn is sent to the others as
    /// [`News`](crate::domain::cluster::News).
    fn is_shared(&self) -> bool;
    /// Takes a slot of `hold.buyer` for `hold.leg`, unless the buyer is at a cap, as counted
    /// in the database by every node (one buyer's holds run one at a time): the block if so. A
    /// slot the leg already holds is kept; a leg holding another buyer's slot gives it up.
    async fn hold_slot(&self, hold: &SlotHold<'_>) -> Result<Option<Block>, StoreError>;
    /// Says that this node runs and where the provider reaches it; every node seen since
    /// `seen_since`, this one included.
    async fn announce(
        &self,
        public_url: &str,
        started_at: Timestamp,
        seen_since: Timestamp,
    ) -> Result<Vec<NodeInfo>, StoreError>;
    /// Where the news of changes committed in this store is sent, for other nodes to hear
    /// (see [`crate::cluster`]); `None` when nothing else shares the store.
    fn news_channel(&self) -> Option<NewsChannel>;
    /// The database's own time now: the clock every node that shares it follows for what they
    /// share (leases, expiries), whatever their machines' clocks say.
    async fn database_now(&self) -> Result<Timestamp, StoreError>;
    /// Makes this process the store's one server, where the store takes only one (a SQLite
    /// file): refused with [`StoreError::WriterTaken`] while another process serves it. Held
    /// until the last [`SoleWriter`] is dropped, or the process ends however it ends; claimed
    /// again by the same process, the same hold. `None` where nodes share the store.
    fn claim_sole_writer(&self) -> Result<Option<SoleWriter>, StoreError>;
}

/// This process serves a store that takes one server at a time (see
/// [`ClusterStore::claim_sole_writer`]); dropped, it lets go.
#[derive(Debug, Clone)]
pub struct SoleWriter {
    _lock: Arc<std::fs::File>,
}

impl SoleWriter {
    pub(crate) fn holding(lock: Arc<std::fs::File>) -> Self {
        Self { _lock: lock }
    }
}

/// A leg about to be dialed, asking for its buyer's slot.
#[derive(Debug, Clone, Copy)]
pub struct SlotHold<'a> {
    pub buyer: &'a Record<Buyer>,
    pub leg: &'a Leg,
    pub at: Timestamp,
}

/// Where a shared store's news goes: a PostgreSQL `NOTIFY` channel on its database. Each
/// change is announced in the transaction that commits it.
#[derive(Debug, Clone)]
pub struct NewsChannel {
    /// The database, for a connection that listens (it may hold a password).
    pub database_url: SecretString,
    pub channel: String,
}

/// RTB: the keys pings present, the reservations bids hold, and the log of every ping.
#[async_trait]
pub trait RtbStore: Send + Sync {
    /// Writes pings, reservations and claims in one transaction. Writing the same twice changes
    /// nothing more, so a failed batch can simply be retried.
    async fn save_rtb(&self, writes: &[RtbWrite]) -> Result<(), StoreError>;
    /// Reservations for a caller not expired at `at`, each with the call that claimed it, if
    /// one did (start-up).
    async fn held_reservations(
        &self,
        at: Timestamp,
    ) -> Result<Vec<(Reservation, Option<CallSid>)>, StoreError>;
    /// Logged pings, newest first.
    async fn rtb_pings(&self, filter: &PingFilter) -> Result<Vec<LoggedPing>, StoreError>;
}

/// What supervisors read: calls at a glance, and statistics.
#[async_trait]
pub trait SupervisionStore: Send + Sync {
    /// Calls matching the filter, newest first.
    async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError>;
    /// Per campaign of the number dialed, over the calls that started in `[from, to)`; only
    /// campaigns with calls are listed.
    async fn campaign_stats(&self, from: Timestamp, to: Timestamp) -> Result<Vec<CampaignStats>, StoreError>;
    /// Per buyer, over the calls that started in `[from, to)`; only buyers dialed or skipped
    /// as duplicates are listed.
    async fn buyer_stats(&self, from: Timestamp, to: Timestamp) -> Result<Vec<BuyerStats>, StoreError>;
    /// Per campaign of the number dialed and bucket of the window, the calls that started in
    /// it; only buckets with calls are listed.
    async fn campaign_series(
        &self,
        window: &Window,
        within: &Within,
    ) -> Result<Vec<BucketCounts>, StoreError>;
    /// Per publisher, over the calls it sent that started in `[from, to)`.
    async fn publisher_stats(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<PublisherStats>, StoreError>;
}

/// Which calls to read; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Only calls a token's scope reaches.
    pub within: Within,
    /// Only calls not ended.
    pub live: bool,
    /// Calls that arrived in this campaign or are routed in it now.
    pub campaign_id: Option<CampaignId>,
    /// The buyer reached, else the last one dialed.
    pub buyer_id: Option<BuyerId>,
    pub state: Option<CallState>,
    pub outcome: Option<Outcome>,
    pub caller: Option<E164>,
    /// Calls this publisher sent.
    pub publisher_id: Option<PublisherId>,
    /// Started at or after.
    pub from: Option<Timestamp>,
    /// Started before.
    pub to: Option<Timestamp>,
    /// Only calls older than this one (the last call of the previous page).
    pub before: Option<CallSid>,
    pub limit: u32,
}

/// What a token's scope reaches, as a store filter: each list given narrows the result to rows
/// whose company, publisher or buyer is on it; none given, the whole install.
#[derive(Debug, Clone, Default)]
pub struct Within {
    pub companies: Option<Vec<CompanyId>>,
    pub publishers: Option<Vec<PublisherId>>,
    pub buyers: Option<Vec<BuyerId>>,
}

impl Within {
    pub fn of(scope: &access::Scope) -> Self {
        use access::Scope;
        match scope {
            Scope::Install => Self::default(),
            Scope::Companies(ids) => Self {
                companies: Some(ids.iter().copied().collect()),
                ..Self::default()
            },
            Scope::Publishers(ids) => Self {
                publishers: Some(ids.iter().copied().collect()),
                ..Self::default()
            },
            Scope::Buyers(ids) => Self {
                buyers: Some(ids.iter().copied().collect()),
                ..Self::default()
            },
        }
    }
}

/// Which pings to read; every field narrows the result.
#[derive(Debug, Clone)]
pub struct PingFilter {
    pub campaign_id: Option<CampaignId>,
    pub publisher_id: Option<PublisherId>,
    pub caller: Option<E164>,
    pub status: Option<PingStatus>,
    /// Received at or after.
    pub from: Option<Timestamp>,
    /// Received before.
    pub to: Option<Timestamp>,
    /// Only pings older than this one (the last id of the previous page).
    pub before: Option<Uuid>,
    pub limit: u32,
    /// The moment a reservation's status is judged at (held or expired).
    pub at: Timestamp,
}

/// What one webhook changed about a call.
#[derive(Debug, Clone, Copy)]
pub struct CallChange<'a> {
    pub call: &'a CallRecord,
    pub timeline: &'a [TimelineEntry],
    pub conversions: &'a [Conversion],
    pub touched: &'a [Touched],
    /// What it changed about buyers' load (other nodes' capacity indexes learn it).
    pub load: &'a [LoadChange],
    /// Postbacks to queue in the outbox (delivered once the save commits).
    pub postbacks: &'a [Postback],
    /// How the store takes the call.
    pub write: Write<'a>,
}

impl CallChange<'_> {
    /// Whether the call is saved only if the store holds none by its sid.
    pub fn inserts_new(&self) -> bool {
        self.write == Write::InsertNew
    }
}

/// How a call's save treats what the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// The call as this process knows it, having read it from the store or saved it there:
    /// it replaces the stored row.
    Replace,
    /// The call was taken for new without reading the store: it is saved only if the store
    /// holds no call by its sid (else nothing is, and the save says [`Saved::Existed`]).
    InsertNew,
    /// The call's record was built without the stored one (a turn taken while the store did
    /// not answer, or a new call whose first save failed): inserted if the store holds no
    /// such call, else merged into the stored one ([`CallRecord::merged_with`]), never written
    /// over it. The change's timeline entries are those of `turns`, in order; the store
    /// appends those of the turns it has not merged yet after its own.
    Merge { turns: &'a [BlindTurn] },
}

/// A turn taken on a record built without the stored one: its key, and how many of the
/// change's timeline entries are its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlindTurn {
    pub key: Uuid,
    pub entries: usize,
}

/// What became of a call's save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Saved,
    /// The change was [`Write::InsertNew`] and the store held the call already: nothing was
    /// saved.
    Existed,
    /// The change was [`Write::Merge`]d: the call as the store held it before (`None` if it
    /// held none) and as it holds it now.
    Merged {
        stored: Option<Box<CallRecord>>,
        merged: Box<CallRecord>,
    },
}

/// Companies' block lists.
#[async_trait]
pub trait BlockListStore: Send + Sync {
    /// Entries in creation order, narrowed by `filter` (company, page).
    async fn blocked_callers(&self, filter: &ListFilter) -> Result<Vec<BlockEntry>, StoreError>;
    async fn blocked_caller(&self, id: Uuid) -> Result<BlockEntry, StoreError>;
    /// Adds an entry: a pattern the company blocks already is a conflict.
    async fn block_caller(
        &self,
        company: CompanyId,
        blocked: &BlockedCaller,
    ) -> Result<BlockEntry, StoreError>;
    async fn unblock_caller(&self, id: Uuid) -> Result<(), StoreError>;
}

/// The postback outbox: rows are queued with the call change that made them (see
/// [`CallChange::postbacks`]) and leased by delivery workers, one node at a time.
#[async_trait]
pub trait PostbackStore: Send + Sync {
    /// Leases up to `limit` postbacks due at `now` to this node until `lease_until`: a postback
    /// leased by a node (a live lease) is not leased again until it expires, so nodes never
    /// deliver one postback at the same time, and one whose node died is taken up once its
    /// lease runs out. Each comes with its endpoint's URL and secret as they are now; one whose
    /// endpoint is gone, or no longer takes its event, is cancelled instead.
    async fn lease_due_postbacks(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError>;
    /// Records what tries came to, all in one transaction; each postback's lease is released.
    async fn record_tries(&self, tries: &[Tried]) -> Result<(), StoreError>;
    /// How many postbacks are pending, and how many failed for good.
    async fn outbox_counts(&self) -> Result<(u64, u64), StoreError>;
    /// Gives back postbacks this node leased but will not send now, due again at `due_at`.
    async fn release_postbacks(&self, ids: &[Uuid], due_at: Timestamp) -> Result<(), StoreError>;
    /// Newest first, narrowed by `filter`.
    async fn postbacks(&self, filter: &PostbackFilter) -> Result<Vec<PostbackRecord>, StoreError>;
    async fn postback(&self, id: Uuid) -> Result<PostbackRecord, StoreError>;
    /// Queues the postback again, due at `at`, its tries counted afresh (whatever it came to);
    /// like every try, it goes to its endpoint as it is then. [`StoreError::NotFound`] if there
    /// is none; [`StoreError::Conflict`] while a node is sending it, or when it was cancelled or
    /// its endpoint is gone.
    async fn retry_postback(&self, id: Uuid, at: Timestamp) -> Result<PostbackRecord, StoreError>;
}

/// What one try of one postback came to.
#[derive(Debug, Clone)]
pub struct Tried {
    pub id: Uuid,
    pub at: Timestamp,
    /// Where the try went.
    pub url: String,
    pub outcome: TryOutcome,
}

#[derive(Debug, Clone)]
pub enum TryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        status_code: u16,
    },
    Failed(TryFailed),
}

/// How a postback's try failed.
#[derive(Debug, Clone)]
pub struct TryFailed {
    pub error: String,
    pub status_code: Option<u16>,
    /// When to try again; `None`: never (out of tries).
    pub retry_at: Option<Timestamp>,
}

/// Which postbacks to read; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct PostbackFilter {
    pub status: Option<PostbackStatus>,
    pub call_sid: Option<CallSid>,
    /// Only postbacks older than this one (the last id of the previous page).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// API tokens issued through the API, kept only as digests.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Every issued token, revoked and expired ones too, newest first, with its digest.
    async fn api_tokens(&self) -> Result<Vec<(IssuedToken, KeyDigest)>, StoreError>;
    /// Stores a new token. With `replacing`, in the same transaction, the replaced token (which
    /// must exist, unrevoked) expires at the time given if it would not expire before.
    async fn issue_token(
        &self,
        token: &IssuedToken,
        digest: &KeyDigest,
        replacing: Option<(Uuid, Timestamp)>,
    ) -> Result<(), StoreError>;
    /// Revokes a token (a revoked one stays as it was) and returns it.
    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<IssuedToken, StoreError>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first, narrowed by `filter`.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Which audit entries to read; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries of these companies (a token's scope); `None`: any, the install's included.
    pub within: Option<Vec<CompanyId>>,
    pub company_id: Option<CompanyId>,
    /// An action (`buyer.update`) or a kind of them (`buyer`).
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Only entries older than this one (the last of the previous page).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Everything Switchboard keeps (what the database implements; each part of Switchboard is
/// handed the narrow interface it uses, through [`Stores`]).
pub trait Store:
    PlanStore
    + CallStore
    + PayoutStore
    + ConversionStore
    + CapacityStore
    + RtbStore
    + SupervisionStore
    + TokenStore
    + BlockListStore
    + PostbackStore
    + ClusterStore
    + AuditStore
{
}

impl<T> Store for T where
    T: PlanStore
        + CallStore
        + PayoutStore
        + ConversionStore
        + CapacityStore
        + RtbStore
        + SupervisionStore
        + TokenStore
        + BlockListStore
        + PostbackStore
        + ClusterStore
        + AuditStore
        + ?Sized
{
}

/// The store as each part of Switchboard sees it. One database serves them all; a test puts a
/// failing one in a single place.
#[derive(Clone)]
pub struct Stores {
    pub plan: Arc<dyn PlanStore>,
    pub calls: Arc<dyn CallStore>,
    pub payouts: Arc<dyn PayoutStore>,
    pub conversions: Arc<dyn ConversionStore>,
    pub capacity: Arc<dyn CapacityStore>,
    pub cluster: Arc<dyn ClusterStore>,
    pub rtb: Arc<dyn RtbStore>,
    pub supervision: Arc<dyn SupervisionStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub blocked: Arc<dyn BlockListStore>,
    pub postbacks: Arc<dyn PostbackStore>,
    pub audit: Arc<dyn AuditStore>,
}

impl Stores {
    /// Every part served by `store`.
    pub fn of(store: Arc<dyn Store>) -> Self {
        Self {
            plan: store.clone(),
            calls: store.clone(),
            payouts: store.clone(),
            conversions: store.clone(),
            capacity: store.clone(),
            cluster: store.clone(),
            rtb: store.clone(),
            supervision: store.clone(),
            tokens: store.clone(),
            blocked: store.clone(),
            postbacks: store.clone(),
            audit: store,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub company_id: Option<CompanyId>,
    /// Only records after this id (the last id of the previous page).
    pub after: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no {kind} with id {id}")]
    NotFound { kind: &'static str, id: String },
    /// The change collides with other records: a name or number already taken, a record still
    /// referred to.
    #[error("{}", match field { Some(field) => format!("{field}: {message}"), None => message.clone() })]
    Conflict { field: Option<String>, message: String },
    /// The change refers to records that do not exist or belong to another company.
    #[error("{field}: {message}")]
    InvalidReference { field: String, message: String },
    /// The record's settings cannot go together (each is valid alone).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The record changed since it was read (see [`PlanTable::update`]).
    #[error("the record changed while this change was being made")]
    Stale,
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("migrations failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("the database failed")]
    Database(#[source] sqlx::Error),
    /// Another process serves this database, which takes one server at a time.
    #[error(
        "another `switchboard serve`{} is serving the database {database}, and a SQLite database takes one server at a time (each counts caps and de-dupes callers in its own memory). Stop that server first (to restart, stop the old server, then start the new one), or move to PostgreSQL to run several nodes",
        holder.map(|pid| format!(" (process {pid})")).unwrap_or_default()
    )]
    WriterTaken { database: String, holder: Option<u32> },
    /// The lock that keeps a second server off the database could not be taken.
    #[error("cannot lock {file}, which keeps a second server off the database: {source}")]
    WriterLock { file: String, source: std::io::Error },
}

impl StoreError {
    pub(crate) fn not_found<T: PlanEntity>(id: Id<T>) -> Self {
        Self::NotFound {
            kind: T::KIND,
            id: id.to_string(),
        }
    }

    pub(crate) fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Conflict {
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_reference(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidReference {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                Self::Unavailable(error)
            }
            E::Database(db) if is_transient(db.code().as_deref()) => Self::Unavailable(error),
            // The explicit checks name the colliding record; these are the backstop for races.
            E::Database(db) if db.is_unique_violation() => {
                Self::conflict(None, "the change collides with an existing record")
            }
            E::Database(db) if db.is_foreign_key_violation() => {
                Self::conflict(None, "the change would break a reference between records")
            }
            _ => Self::Database(error),
        }
    }
}

/// Failures that go away on their own: worth a retry, not a bug.
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // SQLite: BUSY and LOCKED, and IOERR and FULL (a full disk, which is freed), with their
    // extended codes (the low byte is the primary code). Its codes are numbers below 10,000;
    // PostgreSQL's five characters, some all digits (`22026` is no I/O error).
    let sqlite = code.len() < 5
        && code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13));
    // PostgreSQL: connection exceptions, insufficient resources, operator intervention
    // (shutdown), serialization failure and deadlock.
    let postgres = code.len() == 5
        && (["08", "53", "57"].iter().any(|class| code.starts_with(class))
            || matches!(code, "40001" | "40P01"));
    sqlite || postgres
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn a_full_disk_or_a_busy_database_is_worth_a_retry_and_a_broken_rule_is_not() {
        // SQLite: BUSY, LOCKED, IOERR_WRITE (a write past the file size limit), FULL.
        for code in ["5", "6", "778", "13"] {
            assert!(is_transient(Some(code)), "{code}");
        }
        // SQLite: a UNIQUE constraint (2067), a syntax error (1).
        for code in ["2067", "1"] {
            assert!(!is_transient(Some(code)), "{code}");
        }
        // PostgreSQL: a full disk (53100), a lost connection (08006), but not a unique
        // violation, nor a five-digit state whose low byte happens to be IOERR's.
        assert!(is_transient(Some("53100")) && is_transient(Some("08006")));
        for code in ["23505", "22026"] {
            assert!(!is_transient(Some(code)), "{code}");
        }
    }
}
