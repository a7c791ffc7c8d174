//! Routing: where a call goes next, and why every other buyer did not get it.
//!
//! The never-drop chain: the campaign's buyers by priority (by weight among equals), skipping
//! those already tried on this call, paused or closed ones, (when duplicate caller handling is
//! on) those for whom the call would be a duplicate, and those at a cap; then the fallback
//! buyer, who takes duplicates; then a redirect to another campaign; and only then an explicit
//! end, with the reason that kept the most buyers out.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
};

use jiff::Timestamp;
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::{
    access::KeyDigest,
    block::{BlockEntry, BlockLists, BlockedBy},
    call::{AttemptKind, CallRecord, DropReason},
    capacity::{Block, CapPeriod},
    geo::{self, CallerPlace, UsState},
    payout::PublisherPayout,
    phone::E164,
    plan::{
        Buyer, BuyerId, Campaign, CampaignBuyer, CampaignId, Company, CompanyId, DuplicateHandling,
        Publisher, PublisherId, Record,
    },
};

/// How many campaigns one call may pass through: its own and this many redirects.
pub const MAX_REDIRECTS: usize = 5;

/// The routing plan as routing reads it: everything by id, campaigns by tracking number.
#[derive(Debug, Default)]
pub struct RoutingPlan {
    companies: HashMap<CompanyId, Record<Company>>,
    buyers: HashMap<BuyerId, Record<Buyer>>,
    campaigns: HashMap<CampaignId, Record<Campaign>>,
    numbers: HashMap<E164, CampaignId>,
    /// Each company's publishers by how RTB pings name them: external id, or id.
    publishers: HashMap<(CompanyId, String), PublisherId>,
    publisher_records: HashMap<PublisherId, Record<Publisher>>,
    /// Tracking numbers given to a publisher.
    publisher_numbers: HashMap<E164, PublisherId>,
    rtb_keys: HashMap<KeyDigest, CampaignId>,
    blocked: BlockLists,
}

impl RoutingPlan {
    pub fn new(
        companies: Vec<Record<Company>>,
        buyers: Vec<Record<Buyer>>,
        campaigns: Vec<Record<Campaign>>,
    ) -> Self {
        let numbers = campaigns
            .iter()
            .flat_map(|c| c.spec.numbers.as_slice().iter().map(move |n| (n.clone(), c.id)))
            .collect();
        Self {
            companies: companies.into_iter().map(|c| (c.id, c)).collect(),
            buyers: buyers.into_iter().map(|b| (b.id, b)).collect(),
            campaigns: campaigns.into_iter().map(|c| (c.id, c)).collect(),
            numbers,
            publishers: HashMap::new(),
            publisher_records: HashMap::new(),
            publisher_numbers: HashMap::new(),
            rtb_keys: HashMap::new(),
            blocked: BlockLists::default(),
        }
    }

    /// With the companies' block lists.
    pub fn with_block_lists(mut self, entries: &[BlockEntry]) -> Self {
        self.blocked = BlockLists::new(entries);
        self
    }

    /// Whether the campaign's company refuses calls from `caller`.
    pub fn blocks(&self, campaign: &Record<Campaign>, caller: &E164) -> bool {
        self.blocker(campaign, caller).is_some()
    }

    /// The entry of the campaign's company's block list that refuses `caller`, if one does.
    pub fn blocker(&self, campaign: &Record<Campaign>, caller: &E164) -> Option<&BlockedBy> {
        (campaign.company_id).and_then(|company| self.blocked.blocker(company, caller))
    }

    /// With the publishers RTB pings may name.
    pub fn with_publishers(mut self, publishers: Vec<Record<Publisher>>) -> Self {
        for publisher in publishers {
            let Some(company) = publisher.company_id else {
                continue;
            };
            if let Some(external) = &publisher.spec.external_id {
                self.publishers
                    .insert((company, external.as_str().to_owned()), publisher.id);
            }
            self.publishers
                .insert((company, publisher.id.to_string()), publisher.id);
            for number in publisher.spec.numbers.as_slice() {
                self.publisher_numbers.insert(number.clone(), publisher.id);
            }
            self.publisher_records.insert(publisher.id, publisher);
        }
        self
    }

    pub fn publisher_record(&self, id: PublisherId) -> Option<&Record<Publisher>> {
        self.publisher_records.get(&id)
    }

    /// The publisher given this tracking number, if any.
    pub fn publisher_for_number(&self, number: &E164) -> Option<PublisherId> {
        self.publisher_numbers.get(number).copied()
    }

    /// Whose call a call to `dialed` in `campaign` is: the publisher given the number, if it is
    /// one of the campaign's company's.
    pub fn publisher_of_number(
        &self,
        dialed: Option<&E164>,
        campaign: Option<&Record<Campaign>>,
    ) -> Option<PublisherId> {
        let publisher = self.publisher_for_number(dialed?)?;
        let company = self.publisher_record(publisher)?.company_id;
        (company == campaign?.company_id).then_some(publisher)
    }

    /// The number an RTB bid of `publisher`'s sends its caller to: one of the campaign's numbers
    /// given to that publisher, else the first given to no publisher. A call to it is that
    /// publisher's, so its reservation is claimed by nobody else's call; `None` when the
    /// campaign has no such number (every one is another publisher's).
    pub fn rtb_inbound_number<'a>(
        &self,
        campaign: &'a Record<Campaign>,
        publisher: PublisherId,
    ) -> Option<&'a E164> {
        let numbers = campaign.spec.numbers.as_slice();
        (numbers.iter())
            .find(|n| self.publisher_of_number(Some(n), Some(campaign)) == Some(publisher))
            .or_else(|| self.numbers_of_nobody(campaign).next())
    }

    /// The campaign's numbers given to no publisher (of its company): calls to them are nobody's
    /// until they claim a bid.
    pub fn numbers_of_nobody<'a>(&self, campaign: &'a Record<Campaign>) -> impl Iterator<Item = &'a E164> {
        (campaign.spec.numbers.as_slice().iter())
            .filter(move |n| self.publisher_of_number(Some(n), Some(campaign)).is_none())
    }

    /// What the call earns its publisher: what the RTB bid it claimed promised (per
    /// conversion), else the publisher's own terms, else those of the campaign it was sent to;
    /// without any, per conversion, the payout of the buyer it converted with.
    pub fn publisher_terms_for(&self, call: &CallRecord) -> Option<PublisherPayout> {
        let publisher = self.publisher_record(call.publisher_id?)?;
        if let Some(promised) = call.bid_payout {
            return Some(PublisherPayout::per_conversion(promised));
        }
        let campaign = call.visited.first().and_then(|id| self.campaign(*id));
        let explicit = (publisher.spec.payout.as_ref())
            .or_else(|| campaign.and_then(|c| c.spec.publisher_payout.as_ref()));
        if let Some(terms) = explicit {
            return Some(*terms);
        }
        let converted = call.attempts.iter().find(|a| a.converted)?;
        Some(PublisherPayout::per_conversion(
            self.buyer(converted.buyer_id)?.spec.payout,
        ))
    }

    /// With the campaigns' RTB keys, as stored (digests).
    pub fn with_rtb_keys(mut self, keys: impl IntoIterator<Item = (CampaignId, KeyDigest)>) -> Self {
        self.rtb_keys = keys.into_iter().map(|(campaign, key)| (key, campaign)).collect();
        self
    }

    /// The campaign whose RTB key this is.
    pub fn campaign_for_rtb_key(&self, key: &KeyDigest) -> Option<&Record<Campaign>> {
        self.campaigns.get(self.rtb_keys.get(key)?)
    }

    /// A publisher of `company` as an RTB ping names it: by external id, or by id.
    pub fn publisher(&self, company: CompanyId, reference: &str) -> Option<PublisherId> {
        self.publishers.get(&(company, reference.to_owned())).copied()
    }

    pub fn campaign_for_number(&self, number: &E164) -> Option<&Record<Campaign>> {
        self.campaigns.get(self.numbers.get(number)?)
    }

    pub fn campaign(&self, id: CampaignId) -> Option<&Record<Campaign>> {
        self.campaigns.get(&id)
    }

    pub fn buyer(&self, id: BuyerId) -> Option<&Record<Buyer>> {
        self.buyers.get(&id)
    }

    /// Every buyer, in no particular order.
    pub fn buyers(&self) -> impl Iterator<Item = &Record<Buyer>> {
        self.buyers.values()
    }

    pub fn company(&self, id: CompanyId) -> Option<&Record<Company>> {
        self.companies.get(&id)
    }

    /// Whether routing in this campaign skips duplicates: the company must have the feature on
    /// and the campaign must ask for it.
    pub fn skips_duplicates(&self, campaign: &Record<Campaign>) -> bool {
        let company_on = campaign
            .company_id
            .and_then(|id| self.company(id))
            .is_some_and(|c| c.spec.duplicate_caller_handling);
        company_on && campaign.spec.duplicate_caller_handling == DuplicateHandling::NewConvertibleBuyer
    }

    /// Every buyer a call in this campaign might be offered to: its list and its fallback.
    pub fn candidates<'a>(
        &'a self,
        campaign: &'a Record<Campaign>,
    ) -> impl Iterator<Item = &'a Record<Buyer>> + 'a {
        campaign
            .spec
            .buyers
            .as_slice()
            .iter()
            .map(|link| link.buyer_id)
            .chain(campaign.spec.fallback_buyer_id)
            .filter_map(|id| self.buyer(id))
    }

    /// Decides where a call goes next in `campaign`: the buyer an RTB bid reserved for the
    /// caller, if it can take the call; else the first priority with a buyer able to, and
    /// among its buyers one drawn by weight; else the fallback buyer; else a redirect; else
    /// the end. `random` draws between buyers of equal priority.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        campaign: &Record<Campaign>,
        call: &CallSituation<'_>,
        random: &mut R,
    ) -> Decision {
        self.choose(campaign, call, random, Purpose::Call)
    }

    /// Decides which buyer an RTB ping for `campaign` bids for, as [`RoutingPlan::decide`]
    /// would route the call, with two differences a ping allows: no call is at stake, so the
    /// fallback buyer bids only if the caller is no duplicate for it either (when duplicates
    /// are skipped), and no redirect is offered (the publisher asks another campaign itself).
    /// The action is a dial or the end.
    pub fn bid<R: Rng + ?Sized>(
        &self,
        campaign: &Record<Campaign>,
        call: &CallSituation<'_>,
        random: &mut R,
    ) -> Decision {
        self.choose(campaign, call, random, Purpose::Bid)
    }

    fn choose<R: Rng + ?Sized>(
        &self,
        campaign: &Record<Campaign>,
        call: &CallSituation<'_>,
        random: &mut R,
        purpose: Purpose,
    ) -> Decision {
        let skip_duplicates = self.skips_duplicates(campaign);
        let mut list: Vec<_> = (campaign.spec.buyers.as_slice().iter().enumerate())
            .filter_map(|(position, link)| Some((position, link, self.buyer(link.buyer_id)?)))
            .collect();
        list.sort_by_key(|(position, link, _)| (link.priority.get(), *position));

        let mut considered = Vec::with_capacity(list.len() + 1);
        let mut priorities = Vec::new();
        for same_priority in list.chunk_by(|a, b| a.1.priority == b.1.priority) {
            let first = considered.len();
            for (_, link, buyer) in same_priority {
                let verdict = call
                    .skip_reason(buyer, skip_duplicates)
                    .unwrap_or(Verdict::Eligible);
                considered.push(Considered::new(buyer, Some(link), verdict));
            }
            priorities.push(first..considered.len());
        }
        let is_reserved =
            |c: &Considered| Some(c.buyer_id) == call.reserved && c.verdict == Verdict::Eligible;
        let reserved_in_list = considered.iter().position(is_reserved);
        let mut chosen = reserved_in_list.or_else(|| {
            priorities.into_iter().find_map(|group| {
                let first = group.start;
                draw_by_weight(&considered[group], random).map(|drawn| first + drawn)
            })
        });
        let mut kind = AttemptKind::Buyer;

        let fallback = campaign.spec.fallback_buyer_id.and_then(|id| self.buyer(id));
        // Reserved by a bid, the fallback buyer goes before the list; otherwise it is what is
        // left. (Listed as well, it is judged as listed: a duplicate there stays one.)
        let listed = |id| considered.iter().any(|c: &Considered| c.buyer_id == id);
        let fallback_reserved = fallback.is_some_and(|f| call.reserved == Some(f.id) && !listed(f.id));
        if let Some(fallback) = fallback
            && (chosen.is_none() || fallback_reserved)
        {
            // The fallback buyer takes duplicates on a call (that is what it is for), but not
            // beyond its caps or outside its hours.
            let skips_duplicates = purpose == Purpose::Bid && skip_duplicates;
            let verdict = call
                .skip_reason(fallback, skips_duplicates)
                .unwrap_or(Verdict::Eligible);
            if verdict == Verdict::Eligible {
                chosen = Some(considered.len());
                kind = AttemptKind::Fallback;
            }
            considered.push(Considered::new(fallback, None, verdict));
        }

        let action = match chosen {
            Some(index) => {
                let winner = &mut considered[index];
                winner.verdict = Verdict::Chosen;
                Action::Dial {
                    buyer: winner.buyer_id,
                    kind,
                }
            }
            None => match self.redirect_target(campaign, call.visited) {
                Some(target) if purpose == Purpose::Call => Action::Redirect { campaign: target },
                _ => Action::End {
                    reason: dominant_reason(&considered),
                },
            },
        };
        Decision {
            campaign_id: campaign.id,
            skip_duplicates,
            caller_state: call.place.state,
            considered,
            action,
            in_haste: false,
        }
    }

    /// The decision when a full one cannot be made within the decision budget (the de-dupe or
    /// capacity index did not answer in time): the buyer an RTB bid reserved for this caller
    /// (it was checked for duplicates when it bid), else the campaign's fallback buyer, who
    /// takes duplicates, if either can take the call on what is `known`; else the explicit end,
    /// as `overloaded`. Nobody is dialed on a guess: a buyer with caps that cannot be counted
    /// now, or a fallback also listed (and so judged as listed) whose de-dupe status is
    /// unknown, is left `unchecked`, as are the other listed buyers.
    pub fn decide_in_haste(
        &self,
        campaign: &Record<Campaign>,
        call: &CallSituation<'_>,
        known: Known,
    ) -> Decision {
        let skip_duplicates = self.skips_duplicates(campaign);
        // Why a buyer cannot take the call on what is known, if it cannot.
        let judge =
            |buyer: &Record<Buyer>, skips_duplicates: bool| match call.skip_reason(buyer, skips_duplicates) {
                Some(verdict) => Some(verdict),
                None if skips_duplicates && !known.duplicates => Some(Verdict::Unchecked),
                None if !known.caps && buyer.spec.caps.is_limited() => Some(Verdict::Unchecked),
                None => None,
            };
        let mut considered: Vec<Considered> = (campaign.spec.buyers.as_slice().iter())
            .filter_map(|link| {
                Some(Considered::new(
                    self.buyer(link.buyer_id)?,
                    Some(link),
                    Verdict::Unchecked,
                ))
            })
            .collect();
        let listed = |considered: &[Considered], id| considered.iter().position(|c| c.buyer_id == id);
        let mut chosen = None;
        if let Some(reserved) = call.reserved.and_then(|id| self.buyer(id))
            && let Some(index) = listed(&considered, reserved.id)
        {
            match judge(reserved, false) {
                Some(verdict) => considered[index].verdict = verdict,
                None => chosen = Some((index, AttemptKind::Buyer)),
            }
        }
        if chosen.is_none()
            && let Some(fallback) = campaign.spec.fallback_buyer_id.and_then(|id| self.buyer(id))
        {
            // Listed as well, it is judged as listed (see `choose`).
            let (index, verdict) = match listed(&considered, fallback.id) {
                Some(index) => (index, judge(fallback, skip_duplicates)),
                None => {
                    considered.push(Considered::new(fallback, None, Verdict::Eligible));
                    (considered.len() - 1, judge(fallback, false))
                }
            };
            match verdict {
                Some(verdict) => considered[index].verdict = verdict,
                None => chosen = Some((index, AttemptKind::Fallback)),
            }
        }
        let action = match chosen {
            Some((index, kind)) => {
                let winner = &mut considered[index];
                winner.verdict = Verdict::Chosen;
                Action::Dial {
                    buyer: winner.buyer_id,
                    kind,
                }
            }
            None => Action::End {
                reason: DropReason::Overloaded,
            },
        };
        Decision {
            campaign_id: campaign.id,
            skip_duplicates,
            caller_state: call.place.state,
            considered,
            action,
            in_haste: true,
        }
    }

    /// The decision without the call's stored record (the store did not give it in time): as
    /// [`RoutingPlan::decide_in_haste`] (the buyer an RTB bid reserved, or the fallback buyer,
    /// who takes duplicates), and when neither can take the call, a redirect to the campaign's
    /// redirect campaign before the end. Without `knows_tried` (the request did not say which
    /// buyers were dialed) nobody is dialed and the call goes nowhere else: the explicit end.
    pub fn decide_blind(
        &self,
        campaign: &Record<Campaign>,
        call: &CallSituation<'_>,
        known: Known,
        knows_tried: bool,
    ) -> Decision {
        let mut decision = self.decide_in_haste(campaign, call, known);
        if !knows_tried {
            for considered in &mut decision.considered {
                considered.verdict = Verdict::Unchecked;
            }
            decision.action = Action::End {
                reason: DropReason::Overloaded,
            };
        } else if matches!(decision.action, Action::End { .. })
            && let Some(target) = self.redirect_target(campaign, call.visited)
        {
            decision.action = Action::Redirect { campaign: target };
        }
        decision
    }

    fn redirect_target(&self, campaign: &Record<Campaign>, visited: &[CampaignId]) -> Option<CampaignId> {
        let target = self.campaign(campaign.spec.redirect_campaign_id?)?;
        let hops_left = visited.len() <= MAX_REDIRECTS;
        (hops_left && !visited.contains(&target.id)).then_some(target.id)
    }
}

/// What a decision is for: a live call, or an RTB bid for a call that may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Call,
    Bid,
}

/// What routing needs to know about the call so far, and about the buyers now.
#[derive(Debug)]
pub struct CallSituation<'a> {
    /// The moment of the decision (business hours are judged at it).
    pub at: Timestamp,
    /// Buyers for whom the call would be a duplicate (empty when the caller is unknown).
    pub duplicates: &'a HashSet<BuyerId>,
    /// Buyers at a cap now.
    pub blocked: &'a HashMap<BuyerId, Block>,
    /// Buyers already dialed on this call.
    pub tried: &'a HashSet<BuyerId>,
    /// Campaigns the call has been routed in, the current one included.
    pub visited: &'a [CampaignId],
    /// The buyer an RTB bid reserved for this caller in this campaign: dialed first if it can
    /// take the call.
    pub reserved: Option<BuyerId>,
    /// Where the caller is, for buyers that take callers from some states or area codes only.
    pub place: CallerPlace,
}

impl CallSituation<'_> {
    /// Why `buyer` cannot have the call, if it cannot. Of several reasons the first listed here
    /// is given: what the operator set (paused, hours, where it takes callers from) before what
    /// the caller did (duplicate) before what will pass by itself (caps).
    fn skip_reason(&self, buyer: &Record<Buyer>, skip_duplicates: bool) -> Option<Verdict> {
        let spec = &buyer.spec;
        if self.tried.contains(&buyer.id) {
            Some(Verdict::AlreadyTried)
        } else if spec.paused {
            Some(Verdict::Paused)
        } else if let Some(hours) = &spec.business_hours
            && !hours.is_open(self.at, spec.time_zone.zone())
        {
            Some(Verdict::Closed)
        } else if !geo::admits(spec.states.as_ref(), &spec.area_codes, &self.place) {
            Some(Verdict::Geo)
        } else if skip_duplicates && self.duplicates.contains(&buyer.id) {
            Some(Verdict::Duplicate)
        } else {
            self.blocked.get(&buyer.id).copied().map(Verdict::from)
        }
    }
}

/// Which eligible buyer of one priority gets the call: each with a chance proportional to its
/// weight. The random source is asked only when there is a choice to make.
fn draw_by_weight<R: Rng + ?Sized>(group: &[Considered], random: &mut R) -> Option<usize> {
    let eligible = || {
        group
            .iter()
            .enumerate()
            .filter(|(_, c)| c.verdict == Verdict::Eligible)
    };
    let total: u64 = eligible().map(|(_, c)| u64::from(c.weight.unwrap_or(1))).sum();
    match eligible().count() {
        0 => None,
        1 => eligible().next().map(|(i, _)| i),
        _ => {
            let mut ticket = random.random_range(0..total);
            eligible()
                .find(|(_, c)| {
                    let weight = u64::from(c.weight.unwrap_or(1));
                    let wins = ticket < weight;
                    ticket = ticket.saturating_sub(weight);
                    wins
                })
                .map(|(i, _)| i)
        }
    }
}

/// The reason that kept the most buyers out; with no buyer at all, `NoBuyer`.
fn dominant_reason(considered: &[Considered]) -> DropReason {
    let count = |reason| {
        considered
            .iter()
            .filter(|c| c.verdict.drop_reason() == Some(reason))
            .count()
    };
    // On a tie the earlier wins: the reason an operator can act on first.
    let mut dominant = (DropReason::NoBuyer, 0);
    for reason in [
        DropReason::Duplicate,
        DropReason::Capacity,
        DropReason::Closed,
        DropReason::Geo,
        DropReason::Unanswered,
        DropReason::NoBuyer,
    ] {
        let n = count(reason);
        if n > dominant.1 {
            dominant = (reason, n);
        }
    }
    dominant.0
}

/// What routing knew when it decided in haste (see [`RoutingPlan::decide_in_haste`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Whom the caller would be a duplicate for (`CallSituation::duplicates`).
    pub duplicates: bool,
    /// Who is at a cap (`CallSituation::blocked`).
    pub caps: bool,
}

/// Where a call goes next, and the verdict on every buyer considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub campaign_id: CampaignId,
    /// Whether duplicate caller handling was in force.
    pub skip_duplicates: bool,
    /// The caller's US state, as buyers' state lists judged it (`None`: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_state: Option<UsState>,
    pub considered: Vec<Considered>,
    pub action: Action,
    /// Made without the de-dupe or capacity index, which did not answer within the decision
    /// budget (see [`RoutingPlan::decide_in_haste`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_haste: bool,
}

impl Decision {
    /// The buyers this decision skipped because the call would be a duplicate for them.
    pub fn skipped_as_duplicates(&self) -> impl Iterator<Item = BuyerId> + '_ {
        self.considered
            .iter()
            .filter(|c| c.verdict == Verdict::Duplicate)
            .map(|c| c.buyer_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Dial { buyer: BuyerId, kind: AttemptKind },
    Redirect { campaign: CampaignId },
    End { reason: DropReason },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Considered {
    pub buyer_id: BuyerId,
    pub name: String,
    /// Its priority and weight in the campaign's list; none for the fallback buyer.
    pub priority: Option<u32>,
    pub weight: Option<u32>,
    pub fallback: bool,
    pub verdict: Verdict,
}

impl Considered {
    fn new(buyer: &Record<Buyer>, link: Option<&CampaignBuyer>, verdict: Verdict) -> Self {
        Self {
            buyer_id: buyer.id,
            name: buyer.spec.name.as_str().to_owned(),
            priority: link.map(|l| l.priority.get()),
            weight: link.map(|l| l.weight.get()),
            fallback: link.is_none(),
            verdict,
        }
    }
}

/// What routing made of one buyer. Written as text: `chosen`, `eligible`, or the reason it was
/// skipped: `already_tried`, `paused`, `closed`, `geo`, `duplicate`, `concurrency`, `cap:hourly`,
/// `cap:daily`, `cap:monthly`, `cap:lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Verdict {
    /// Dialed now.
    Chosen,
    /// Could take the call, but another buyer got it.
    Eligible,
    /// Skipped: already dialed on this call.
    AlreadyTried,
    /// Skipped: paused by the operator.
    Paused,
    /// Skipped: outside its business hours.
    Closed,
    /// Skipped: it does not take callers from the caller's state or area code (or the caller's
    /// state is not known and it takes callers from some states only).
    Geo,
    /// Skipped: the call would be a duplicate for this buyer.
    Duplicate,
    /// Skipped: as many of its legs as its concurrency cap are ringing or connected.
    Concurrency,
    /// Skipped: its cap for this period is reached.
    Cap(CapPeriod),
    /// Not judged: what it needed (de-dupe, caps) was not known within the decision budget.
    Unchecked,
}

impl Verdict {
    fn drop_reason(self) -> Option<DropReason> {
        match self {
            Self::Chosen | Self::Eligible => None,
            Self::AlreadyTried => Some(DropReason::Unanswered),
            Self::Paused => Some(DropReason::NoBuyer),
            Self::Closed => Some(DropReason::Closed),
            Self::Geo => Some(DropReason::Geo),
            Self::Duplicate => Some(DropReason::Duplicate),
            Self::Concurrency | Self::Cap(_) => Some(DropReason::Capacity),
            Self::Unchecked => Some(DropReason::Overloaded),
        }
    }
}

impl From<Block> for Verdict {
    fn from(block: Block) -> Self {
        match block {
            Block::Concurrency => Self::Concurrency,
            Block::Cap(period) => Self::Cap(period),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chosen => "chosen",
            Self::Eligible => "eligible",
            Self::AlreadyTried => "already_tried",
            Self::Paused => "paused",
            Self::Closed => "closed",
            Self::Geo => "geo",
            Self::Duplicate => "duplicate",
            Self::Unchecked => "unchecked",
            // Written as the block it stands for, as the caps API shows it.
            Self::Concurrency => return Block::Concurrency.fmt(f),
            Self::Cap(period) => return Block::Cap(*period).fmt(f),
        })
    }
}

impl From<Verdict> for String {
    fn from(verdict: Verdict) -> Self {
        verdict.to_string()
    }
}

impl TryFrom<String> for Verdict {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let simple = [
            Self::Chosen,
            Self::Eligible,
            Self::AlreadyTried,
            Self::Paused,
            Self::Closed,
            Self::Geo,
            Self::Duplicate,
            Self::Concurrency,
            Self::Unchecked,
        ];
        let caps = CapPeriod::ALL.map(Self::Cap);
        simple
            .into_iter()
            .chain(caps)
            .find(|verdict| verdict.to_string() == text)
            .ok_or_else(|| format!("`{text}` is not a routing verdict"))
    }
}

/// The random source for one routing decision: a function of the seed and what is decided (a
/// call's attempt, a ping), so a decision does not depend on which other calls happened to
/// draw first, is the same when taken again, and a test with a fixed seed is exact.
pub fn random_for(seed: u64, decision: impl Hash) -> StdRng {
    let mut hasher = DefaultHasher::new();
    (seed, decision).hash(&mut hasher);
    StdRng::seed_from_u64(hasher.finish())
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};
    use serde_json::json;

    use super::*;
    use crate::domain::{ids::Id, plan::record_of as record};
    use crate::fresh::Generate;

    /// A company with the feature on, a campaign with buyers A (priority 1), B (priority 3) and
    /// C (priority 2, listed last), fallback F, redirect to Overflow (buyer O).
    struct Fixture {
        plan: RoutingPlan,
        main: CampaignId,
        overflow: CampaignId,
        a: BuyerId,
        b: BuyerId,
        c: BuyerId,
        f: BuyerId,
        o: BuyerId,
    }

    fn fixture(company_on: bool, mode: &str, fallback: bool, redirect: bool) -> Fixture {
        let company: Record<Company> = record(
            None,
            json!({"name": "Acme", "duplicate_caller_handling": company_on}),
        );
        let owner = Some(company.id);
        let buyer = |name: &str| -> Record<Buyer> {
            record(owner, json!({"name": name, "destination": "+14155550101"}))
        };
        let (a, b, c, f, o) = (buyer("A"), buyer("B"), buyer("C"), buyer("F"), buyer("O"));
        let overflow: Record<Campaign> =
            record(owner, json!({"name": "Overflow", "buyers": [{"buyer_id": o.id}]}));
        let main: Record<Campaign> = record(
            owner,
            json!({
                "name": "Main",
                "duplicate_caller_handling": mode,
                "buyers": [{"buyer_id": a.id, "priority": 1}, {"buyer_id": b.id, "priority": 3}, {"buyer_id": c.id, "priority": 2}],
                "fallback_buyer_id": if fallback { Some(f.id) } else { None },
                "redirect_campaign_id": if redirect { Some(overflow.id) } else { None },
            }),
        );
        Fixture {
            main: main.id,
            overflow: overflow.id,
            a: a.id,
            b: b.id,
            c: c.id,
            f: f.id,
            o: o.id,
            plan: RoutingPlan::new(vec![company], vec![a, b, c, f, o], vec![main, overflow]),
        }
    }

    fn decide(
        fx: &Fixture,
        campaign: CampaignId,
        duplicates: &[BuyerId],
        tried: &[BuyerId],
        visited: &[CampaignId],
    ) -> Decision {
        let given = Given {
            duplicates: duplicates.iter().copied().collect(),
            tried: tried.iter().copied().collect(),
            visited: visited.to_vec(),
            ..Given::default()
        };
        given.decide(&fx.plan, campaign, &mut StdRng::seed_from_u64(7))
    }

    #[test]
    fn a_bid_sends_its_caller_to_a_number_whose_calls_are_its_publishers() {
        let company: Record<Company> = record(None, json!({"name": "Acme"}));
        let other: Record<Company> = record(None, json!({"name": "Other"}));
        let publisher = |company: &Record<Company>, name: &str, numbers: &[&str]| -> Record<Publisher> {
            record(Some(company.id), json!({"name": name, "numbers": numbers}))
        };
        let a = publisher(&company, "A", &["+18005550102"]);
        let b = publisher(&company, "B", &["+18005550100", "+18005550103"]);
        let c = publisher(&company, "C", &[]);
        let elsewhere = publisher(&other, "Elsewhere", &["+18005550101"]);
        let main: Record<Campaign> = record(
            Some(company.id),
            json!({"name": "Main", "numbers": ["+18005550100", "+18005550101", "+18005550102", "+18005550103"]}),
        );
        let mut owned_by_all = main.clone();
        owned_by_all.spec =
            serde_json::from_value(json!({"name": "Owned", "numbers": ["+18005550100"]})).unwrap();
        let (a_id, b_id, c_id) = (a.id, b.id, c.id);
        let plan = RoutingPlan::new(vec![company, other], vec![], vec![main.clone()])
            .with_publishers(vec![a, b, c, elsewhere]);
        let inbound = |campaign, publisher| plan.rtb_inbound_number(campaign, publisher).map(E164::as_str);
        assert_eq!(inbound(&main, a_id), Some("+18005550102"), "its own number");
        assert_eq!(inbound(&main, b_id), Some("+18005550100"), "its first own number");
        // Another company's publisher's number attributes no call here: it is nobody's.
        assert_eq!(
            inbound(&main, c_id),
            Some("+18005550101"),
            "the first number given to none"
        );
        assert_eq!(inbound(&owned_by_all, c_id), None, "every number is another's");
        for publisher in [a_id, b_id, c_id] {
            let number = plan.rtb_inbound_number(&main, publisher).cloned();
            let whose = plan.publisher_of_number(number.as_ref(), Some(&main));
            assert!(
                whose.is_none() || whose == Some(publisher),
                "a call to it is its publisher's"
            );
        }
    }

    /// A call's situation, owned, for tests that set more of it.
    struct Given {
        at: Timestamp,
        duplicates: HashSet<BuyerId>,
        blocked: HashMap<BuyerId, Block>,
        tried: HashSet<BuyerId>,
        visited: Vec<CampaignId>,
        reserved: Option<BuyerId>,
        place: CallerPlace,
    }

    impl Default for Given {
        fn default() -> Self {
            Self {
                // A Monday, 12:00 UTC.
                at: "2026-11-23T12:00:00Z".parse().unwrap(),
                duplicates: HashSet::new(),
                blocked: HashMap::new(),
                tried: HashSet::new(),
                visited: Vec::new(),
                reserved: None,
                place: CallerPlace::default(),
            }
        }
    }

    impl Given {
        fn decide(&self, plan: &RoutingPlan, campaign: CampaignId, random: &mut StdRng) -> Decision {
            self.judge(plan, campaign, random, Purpose::Call)
        }

        fn bid(&self, plan: &RoutingPlan, campaign: CampaignId) -> Decision {
            self.judge(plan, campaign, &mut StdRng::seed_from_u64(1), Purpose::Bid)
        }

        fn judge(
            &self,
            plan: &RoutingPlan,
            campaign: CampaignId,
            random: &mut StdRng,
            purpose: Purpose,
        ) -> Decision {
            let record = plan.campaign(campaign).unwrap();
            self.in_situation(campaign, |situation| match purpose {
                Purpose::Call => plan.decide(record, situation, random),
                Purpose::Bid => plan.bid(record, situation, random),
            })
        }

        fn in_haste(&self, plan: &RoutingPlan, campaign: CampaignId, known: Known) -> Decision {
            let record = plan.campaign(campaign).unwrap();
            self.in_situation(campaign, |situation| {
                plan.decide_in_haste(record, situation, known)
            })
        }

        /// What `decide` makes of the call as given, in `campaign`.
        fn in_situation(
            &self,
            campaign: CampaignId,
            decide: impl FnOnce(&CallSituation<'_>) -> Decision,
        ) -> Decision {
            let mut visited = self.visited.clone();
            if visited.is_empty() {
                visited.push(campaign);
            }
            decide(&CallSituation {
                at: self.at,
                duplicates: &self.duplicates,
                blocked: &self.blocked,
                tried: &self.tried,
                visited: &visited,
                reserved: self.reserved,
                place: self.place,
            })
        }
    }

    const NOTHING: Known = Known {
        duplicates: false,
        caps: false,
    };
    const CAPS: Known = Known {
        duplicates: false,
        caps: true,
    };

    /// The fixture's plan with its campaigns and buyers edited.
    fn edited(
        fx: &Fixture,
        edit: impl Fn(&mut Record<Buyer>),
        campaigns: impl Fn(&mut Record<Campaign>),
    ) -> RoutingPlan {
        let mut buyers: Vec<Record<Buyer>> = fx.plan.buyers.values().cloned().collect();
        buyers.iter_mut().for_each(edit);
        let mut all: Vec<Record<Campaign>> = fx.plan.campaigns.values().cloned().collect();
        all.iter_mut().for_each(campaigns);
        RoutingPlan::new(fx.plan.companies.values().cloned().collect(), buyers, all)
    }

    #[test]
    fn in_haste_a_fallback_also_listed_is_judged_as_listed_and_a_reservation_holds() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        // A is listed first and is the fallback too.
        let plan = edited(
            &fx,
            |_| {},
            |c| {
                if c.id == fx.main {
                    c.spec.fallback_buyer_id = Some(fx.a);
                }
            },
        );
        let unknown = Given::default().in_haste(&plan, fx.main, NOTHING);
        assert_eq!(
            unknown.action,
            Action::End {
                reason: DropReason::Overloaded
            },
            "A might be a duplicate"
        );
        assert_eq!(unknown.considered.len(), 3, "A is considered once");
        let known = Known {
            duplicates: true,
            caps: true,
        };
        let fresh = Given::default().in_haste(&plan, fx.main, known);
        assert_eq!(
            fresh.action,
            Action::Dial {
                buyer: fx.a,
                kind: AttemptKind::Fallback
            }
        );
        let duplicate = Given {
            duplicates: [fx.a].into(),
            ..Given::default()
        };
        let decision = duplicate.in_haste(&plan, fx.main, known);
        assert_eq!(decision.considered[0].verdict, Verdict::Duplicate);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Overloaded
            }
        );

        // A bid reserved C for this caller: C was checked then, and takes the call now.
        let reserved = Given {
            reserved: Some(fx.c),
            ..Given::default()
        };
        let decision = reserved.in_haste(&fx.plan, fx.main, NOTHING);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.c,
                kind: AttemptKind::Buyer
            }
        );
        let tried = Given {
            reserved: Some(fx.c),
            tried: [fx.c].into(),
            ..Given::default()
        };
        assert_eq!(
            tried.in_haste(&fx.plan, fx.main, NOTHING).action,
            Action::End {
                reason: DropReason::Overloaded
            }
        );
    }

    #[test]
    fn in_haste_only_the_fallback_buyer_is_dialed_else_the_call_ends_as_overloaded() {
        use Verdict::{Cap, Chosen, Unchecked};
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let haste = Given::default().in_haste(&fx.plan, fx.main, NOTHING);
        let fallback = Action::Dial {
            buyer: fx.f,
            kind: AttemptKind::Fallback,
        };
        assert_eq!(haste.action, fallback);
        assert!(haste.in_haste);
        assert_eq!(
            verdicts(&haste),
            [
                ("A", Unchecked),
                ("B", Unchecked),
                ("C", Unchecked),
                ("F", Chosen)
            ]
        );
        assert_eq!(
            haste.skipped_as_duplicates().count(),
            0,
            "nobody was judged a duplicate"
        );
        // As the timeline stores it and reads it back.
        let stored = serde_json::to_value(&haste).unwrap();
        assert_eq!(stored["in_haste"], true);
        assert_eq!(serde_json::from_value::<Decision>(stored).unwrap(), haste);
        // The fallback takes duplicates: one does not keep it out.
        let duplicate = Given {
            duplicates: [fx.f].into(),
            ..Given::default()
        };
        assert_eq!(duplicate.in_haste(&fx.plan, fx.main, CAPS).action, fallback);

        // Tried already, or at a cap: the explicit end, even with a redirect configured.
        let overloaded = Action::End {
            reason: DropReason::Overloaded,
        };
        let tried = Given {
            tried: [fx.f].into(),
            ..Given::default()
        };
        assert_eq!(tried.in_haste(&fx.plan, fx.main, CAPS).action, overloaded);
        let capped = Given {
            blocked: [(fx.f, Block::Cap(CapPeriod::Daily))].into(),
            ..Given::default()
        };
        let decision = capped.in_haste(&fx.plan, fx.main, CAPS);
        assert_eq!(
            (decision.action, decision.considered[3].verdict),
            (overloaded, Cap(CapPeriod::Daily))
        );
        let none = fixture(true, "new_convertible_buyer", false, true);
        let decision = Given::default().in_haste(&none.plan, none.main, CAPS);
        assert_eq!(decision.action, overloaded);
        assert!(decision.considered.iter().all(|c| c.verdict == Unchecked));
        // A full decision is never marked as hasty.
        assert!(!decide(&fx, fx.main, &[], &[], &[]).in_haste);
    }

    #[test]
    fn in_haste_a_fallback_with_caps_is_dialed_only_when_its_counts_are_known() {
        let fx = fixture(true, "new_convertible_buyer", true, false);
        let plan = edited(
            &fx,
            |buyer| {
                if buyer.id == fx.f {
                    buyer.spec.caps = serde_json::from_value(json!({"daily": 5})).unwrap();
                }
            },
            |_| {},
        );
        let unknown = Given::default().in_haste(&plan, fx.main, NOTHING);
        assert_eq!(
            unknown.action,
            Action::End {
                reason: DropReason::Overloaded
            }
        );
        assert_eq!(unknown.considered[3].verdict, Verdict::Unchecked);
        let known = Given::default().in_haste(&plan, fx.main, CAPS);
        assert!(matches!(known.action, Action::Dial { buyer, .. } if buyer == fx.f));
    }

    fn verdicts(decision: &Decision) -> Vec<(&str, Verdict)> {
        decision
            .considered
            .iter()
            .map(|c| (c.name.as_str(), c.verdict))
            .collect()
    }

    #[test]
    fn buyers_go_by_priority() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let decision = decide(&fx, fx.main, &[], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.a,
                kind: AttemptKind::Buyer
            }
        );
        assert_eq!(
            verdicts(&decision),
            [
                ("A", Verdict::Chosen),
                ("C", Verdict::Eligible),
                ("B", Verdict::Eligible)
            ]
        );
        let decision = decide(&fx, fx.main, &[], &[fx.a, fx.c], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.b,
                kind: AttemptKind::Buyer
            }
        );
    }

    #[test]
    fn duplicates_are_skipped_only_when_company_and_campaign_both_say_so() {
        for (company_on, mode, skips) in [
            (true, "new_convertible_buyer", true),
            (false, "new_convertible_buyer", false),
            (true, "off", false),
        ] {
            let fx = fixture(company_on, mode, true, true);
            let decision = decide(&fx, fx.main, &[fx.a], &[], &[fx.main]);
            let expected = if skips { fx.c } else { fx.a };
            assert_eq!(
                decision.action,
                Action::Dial {
                    buyer: expected,
                    kind: AttemptKind::Buyer
                },
                "{company_on} {mode}"
            );
            assert_eq!(decision.skip_duplicates, skips);
            assert_eq!(decision.skipped_as_duplicates().count(), usize::from(skips));
        }
    }

    #[test]
    fn when_every_buyer_is_a_duplicate_the_fallback_takes_the_call() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c, fx.f], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.f,
                kind: AttemptKind::Fallback
            }
        );
        assert_eq!(decision.considered.last().unwrap().verdict, Verdict::Chosen);
        assert!(decision.considered.last().unwrap().fallback);
    }

    #[test]
    fn then_the_redirect_campaign_then_an_explicit_end() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Redirect {
                campaign: fx.overflow
            }
        );

        let in_overflow = decide(&fx, fx.overflow, &[fx.o], &[], &[fx.main, fx.overflow]);
        assert_eq!(
            in_overflow.action,
            Action::Dial {
                buyer: fx.o,
                kind: AttemptKind::Buyer
            },
            "feature off in Overflow"
        );

        let fx = fixture(true, "new_convertible_buyer", false, false);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
    }

    #[test]
    fn a_redirect_never_revisits_a_campaign() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        let decision = decide(&fx, fx.main, &[fx.a, fx.b, fx.c], &[], &[fx.overflow, fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
    }

    #[test]
    fn the_drop_reason_is_what_kept_most_buyers_out() {
        let fx = fixture(true, "new_convertible_buyer", false, false);
        let unanswered = decide(&fx, fx.main, &[fx.a], &[fx.b, fx.c], &[fx.main]);
        assert_eq!(
            unanswered.action,
            Action::End {
                reason: DropReason::Unanswered
            }
        );
        let mostly_duplicates = decide(&fx, fx.main, &[fx.a, fx.c], &[fx.b], &[fx.main]);
        assert_eq!(
            mostly_duplicates.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
        assert_eq!(dominant_reason(&[]), DropReason::NoBuyer);
    }

    #[test]
    fn paused_buyers_and_the_already_tried_fallback_are_skipped() {
        let mut fx = fixture(true, "new_convertible_buyer", true, false);
        for id in [fx.a, fx.b, fx.c] {
            let buyer = fx.plan.buyers.get_mut(&id).unwrap();
            buyer.spec.paused = true;
        }
        let decision = decide(&fx, fx.main, &[], &[], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::Dial {
                buyer: fx.f,
                kind: AttemptKind::Fallback
            }
        );
        let decision = decide(&fx, fx.main, &[], &[fx.f], &[fx.main]);
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::NoBuyer
            }
        );
    }

    /// A plan of one company (feature on) and one campaign whose buyers are `(name, priority,
    /// weight, extra buyer fields)`, in that order; `fallback` names one of them.
    fn plan_of(
        buyers: &[(&str, u32, u32, serde_json::Value)],
        fallback: Option<&str>,
    ) -> (RoutingPlan, CampaignId, HashMap<String, BuyerId>) {
        let company: Record<Company> =
            record(None, json!({"name": "Acme", "duplicate_caller_handling": true}));
        let owner = Some(company.id);
        let records: Vec<Record<Buyer>> = buyers
            .iter()
            .map(|(name, _, _, extra)| {
                let mut spec = json!({"name": name, "destination": "+14155550101"});
                spec.as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                record(owner, spec)
            })
            .collect();
        let ids: HashMap<String, BuyerId> = records
            .iter()
            .map(|b| (b.spec.name.as_str().to_owned(), b.id))
            .collect();
        let list: Vec<_> = buyers
            .iter()
            .filter(|(name, ..)| Some(*name) != fallback)
            .map(|(name, priority, weight, _)| json!({"buyer_id": ids[*name], "priority": priority, "weight": weight}))
            .collect();
        let campaign: Record<Campaign> = record(
            owner,
            json!({"name": "Main", "duplicate_caller_handling": "new_convertible_buyer", "buyers": list,
                   "fallback_buyer_id": fallback.map(|name| ids[name])}),
        );
        let id = campaign.id;
        (RoutingPlan::new(vec![company], records, vec![campaign]), id, ids)
    }

    fn chosen_name(decision: &Decision) -> Option<&str> {
        decision
            .considered
            .iter()
            .find(|c| c.verdict == Verdict::Chosen)
            .map(|c| c.name.as_str())
    }

    /// Draws `n` decisions and counts who got the call.
    fn tally(plan: &RoutingPlan, campaign: CampaignId, given: &Given, n: usize) -> HashMap<String, usize> {
        let mut random = StdRng::seed_from_u64(2026);
        let mut counts = HashMap::new();
        for _ in 0..n {
            let decision = given.decide(plan, campaign, &mut random);
            *counts
                .entry(chosen_name(&decision).unwrap().to_owned())
                .or_default() += 1;
        }
        counts
    }

    /// Each count within 4.5 standard deviations of its binomial expectation: a correct draw
    /// fails this about once in 150,000 seeds; a draw that ignores weights fails it always.
    fn assert_shares(counts: &HashMap<String, usize>, shares: &[(&str, f64)], n: usize) {
        for (name, share) in shares {
            let expected = n as f64 * share;
            let sd = (n as f64 * share * (1.0 - share)).sqrt();
            let got = counts.get(*name).copied().unwrap_or(0) as f64;
            assert!(
                (got - expected).abs() <= 4.5 * sd,
                "{name}: {got} of {n}, expected about {expected:.0} (sd {sd:.1}); all: {counts:?}"
            );
        }
    }

    #[test]
    fn buyers_of_equal_priority_share_calls_by_weight() {
        let none = json!({});
        let (plan, campaign, ids) = plan_of(
            &[
                ("W1", 1, 1, none.clone()),
                ("W3", 1, 3, none.clone()),
                ("W6", 1, 6, none.clone()),
                ("Later", 2, 100, none),
            ],
            None,
        );
        let n = 20_000;
        let counts = tally(&plan, campaign, &Given::default(), n);
        assert_shares(&counts, &[("W1", 0.1), ("W3", 0.3), ("W6", 0.6)], n);
        assert_eq!(
            counts.get("Later"),
            None,
            "a lower priority never gets a call a higher one can take"
        );

        // A buyer that cannot take the call takes no share: the others split it by weight.
        let given = Given {
            duplicates: HashSet::from([ids["W6"]]),
            ..Given::default()
        };
        let counts = tally(&plan, campaign, &given, n);
        assert_shares(&counts, &[("W1", 0.25), ("W3", 0.75)], n);
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        let w6 = decision.considered.iter().find(|c| c.name == "W6").unwrap();
        assert_eq!(
            (w6.verdict, w6.weight, w6.priority),
            (Verdict::Duplicate, Some(6), Some(1))
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_buyers() {
        let none = json!({});
        let (plan, campaign, _) = plan_of(&[("X", 1, 1, none.clone()), ("Y", 1, 1, none)], None);
        let draws = |seed| {
            let mut random = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| {
                    chosen_name(&Given::default().decide(&plan, campaign, &mut random))
                        .unwrap()
                        .to_owned()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(11), draws(11));
        assert_ne!(draws(11), draws(12));
    }

    #[test]
    fn every_skip_has_its_reason_in_the_decision() {
        let none = json!({});
        let closed_now = json!({"time_zone": "America/New_York", "business_hours": {"monday": {"open": "09:00", "close": "17:00"}}});
        let open_now = json!({"time_zone": "Europe/London", "business_hours": {"monday": {"open": "09:00", "close": "17:00"}}});
        let (plan, campaign, ids) = plan_of(
            &[
                ("Tried", 1, 1, none.clone()),
                ("Paused", 1, 1, json!({"paused": true})),
                ("Closed", 1, 1, closed_now),
                ("Duplicate", 1, 1, none.clone()),
                ("Full", 1, 1, none.clone()),
                ("Daily", 1, 1, none.clone()),
                ("Open", 2, 1, open_now),
            ],
            None,
        );
        let given = Given {
            // Monday 12:00 UTC: 07:00 in New York (closed), 12:00 in London (open).
            tried: HashSet::from([ids["Tried"]]),
            duplicates: HashSet::from([ids["Duplicate"]]),
            blocked: HashMap::from([
                (ids["Full"], Block::Concurrency),
                (ids["Daily"], Block::Cap(CapPeriod::Daily)),
            ]),
            ..Given::default()
        };
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        let reasons: Vec<String> = decision
            .considered
            .iter()
            .map(|c| format!("{}={}", c.name, c.verdict))
            .collect();
        assert_eq!(
            reasons,
            [
                "Tried=already_tried",
                "Paused=paused",
                "Closed=closed",
                "Duplicate=duplicate",
                "Full=concurrency",
                "Daily=cap:daily",
                "Open=chosen"
            ]
        );
        // As stored in the timeline, and read back.
        let stored = serde_json::to_value(&decision).unwrap();
        assert_eq!(stored["considered"][5]["verdict"], "cap:daily");
        assert_eq!(serde_json::from_value::<Decision>(stored).unwrap(), decision);
        assert!(serde_json::from_value::<Verdict>(json!("cap:weekly")).is_err());
    }

    #[test]
    fn a_buyer_with_several_reasons_shows_the_operators_first() {
        let week =
            json!({"business_hours": {"tuesday": {"open": "09:00", "close": "17:00"}}, "paused": true});
        let (plan, campaign, ids) = plan_of(
            &[
                ("B", 1, 1, week.clone()),
                ("C", 1, 1, json!({"business_hours": week["business_hours"]})),
            ],
            None,
        );
        let given = Given {
            duplicates: HashSet::from([ids["B"], ids["C"]]),
            blocked: HashMap::from([(ids["B"], Block::Concurrency), (ids["C"], Block::Concurrency)]),
            ..Given::default()
        };
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            verdicts(&decision),
            [("B", Verdict::Paused), ("C", Verdict::Closed)]
        );
    }

    #[test]
    fn the_fallback_takes_duplicates_but_not_beyond_its_caps_or_hours() {
        let none = json!({});
        let (plan, campaign, ids) = plan_of(&[("A", 1, 1, none.clone()), ("F", 1, 1, none)], Some("F"));
        let mut given = Given {
            duplicates: HashSet::from([ids["A"], ids["F"]]),
            ..Given::default()
        };
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(chosen_name(&decision), Some("F"));
        given.blocked.insert(ids["F"], Block::Cap(CapPeriod::Monthly));
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            verdicts(&decision),
            [("A", Verdict::Duplicate), ("F", Verdict::Cap(CapPeriod::Monthly))]
        );
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Duplicate
            },
            "a tie goes to duplicate"
        );
    }

    #[test]
    fn buyers_licensed_elsewhere_are_skipped_as_geo_and_the_fallback_still_takes_the_call() {
        let texas_only = json!({"states": ["TX"]});
        let no_212 = json!({"area_codes": {"deny": ["212"]}});
        let (plan, campaign, ids) = plan_of(
            &[
                ("A", 1, 1, texas_only.clone()),
                ("B", 2, 1, no_212),
                ("F", 1, 1, json!({})),
            ],
            Some("F"),
        );
        let place = |state: Option<&str>, area: &str| CallerPlace {
            state: state.map(|s| UsState::parse(s).unwrap()),
            area_code: Some(geo::AreaCode::parse(area).unwrap()),
        };
        let mut given = Given {
            place: place(Some("TX"), "713"),
            ..Given::default()
        };
        let decide = |given: &Given| given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            chosen_name(&decide(&given)),
            Some("A"),
            "a Texan goes to the Texas buyer"
        );

        given.place = place(Some("CA"), "415");
        let decision = decide(&given);
        assert_eq!(verdicts(&decision)[0], ("A", Verdict::Geo));
        assert_eq!(chosen_name(&decision), Some("B"));
        assert_eq!(
            decision.caller_state,
            Some(UsState::parse("CA").unwrap()),
            "the decision says why"
        );

        given.place = place(Some("NY"), "212");
        let decision = decide(&given);
        assert_eq!(
            verdicts(&decision),
            [("A", Verdict::Geo), ("B", Verdict::Geo), ("F", Verdict::Chosen)]
        );
        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(json["caller_state"], "NY");
        assert_eq!(json["considered"][0]["verdict"], "geo");

        // Without the fallback, the call ends, and geo is why.
        let (plan, campaign, _) = plan_of(&[("A", 1, 1, texas_only)], None);
        given.place = CallerPlace::default();
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Geo
            },
            "a caller of unknown state is not sent to a buyer licensed in some states only"
        );
        assert_eq!(Verdict::try_from("geo".to_owned()), Ok(Verdict::Geo));
        let _ = ids;
    }

    #[test]
    fn a_company_blocks_callers_of_its_own_campaigns_only() {
        let (plan, campaign, _) = plan_of(&[("A", 1, 1, json!({}))], None);
        let company = plan.campaign(campaign).unwrap().company_id.unwrap();
        let entry = |company| crate::domain::block::BlockEntry {
            id: uuid::Uuid::now_v7(),
            company_id: company,
            blocked: serde_json::from_value(json!({"pattern": "+1900*"})).unwrap(),
            created_at: Timestamp::UNIX_EPOCH,
        };
        let premium = E164::from_provider("+19005550100").unwrap();
        let plan = plan.with_block_lists(&[entry(CompanyId::generate())]);
        assert!(!plan.blocks(plan.campaign(campaign).unwrap(), &premium));
        let plan = plan.with_block_lists(&[entry(company)]);
        assert!(plan.blocks(plan.campaign(campaign).unwrap(), &premium));
        assert!(!plan.blocks(
            plan.campaign(campaign).unwrap(),
            &E164::from_provider("+14155550100").unwrap()
        ));
    }

    #[test]
    fn a_call_nobody_can_take_ends_with_the_reason_that_kept_most_buyers_out() {
        let none = json!({});
        let shut = json!({"business_hours": {"sunday": {"open": "09:00", "close": "17:00"}}});
        let (plan, campaign, ids) = plan_of(
            &[
                ("A", 1, 1, none.clone()),
                ("B", 1, 1, none.clone()),
                ("C", 1, 1, shut.clone()),
                ("D", 1, 1, shut.clone()),
                ("E", 1, 1, shut),
            ],
            None,
        );
        let given = Given {
            blocked: HashMap::from([
                (ids["A"], Block::Concurrency),
                (ids["B"], Block::Cap(CapPeriod::Hourly)),
            ]),
            ..Given::default()
        };
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Closed
            }
        );
        let given = Given {
            blocked: HashMap::from([
                (ids["A"], Block::Concurrency),
                (ids["B"], Block::Cap(CapPeriod::Hourly)),
            ]),
            tried: HashSet::from([ids["C"]]),
            ..Given::default()
        };
        let decision = given.decide(&plan, campaign, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            decision.action,
            Action::End {
                reason: DropReason::Capacity
            },
            "2 at caps, 2 closed: a tie"
        );
    }

    #[test]
    fn a_redirected_call_keeps_its_tried_buyers_and_its_duplicates() {
        let fx = fixture(true, "new_convertible_buyer", false, true);
        // Overflow lists A too, and skips duplicates itself.
        let mut plan = fx.plan;
        let overflow = plan.campaigns.get_mut(&fx.overflow).unwrap();
        overflow.spec = serde_json::from_value(json!({
            "name": "Overflow", "duplicate_caller_handling": "new_convertible_buyer",
            "buyers": [{"buyer_id": fx.a}, {"buyer_id": fx.c, "priority": 2}, {"buyer_id": fx.o, "priority": 3}],
        }))
        .unwrap();
        let given = Given {
            tried: HashSet::from([fx.a]),
            duplicates: HashSet::from([fx.c]),
            visited: vec![fx.main, fx.overflow],
            ..Given::default()
        };
        let decision = given.decide(&plan, fx.overflow, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            verdicts(&decision),
            [
                ("A", Verdict::AlreadyTried),
                ("C", Verdict::Duplicate),
                ("O", Verdict::Chosen)
            ]
        );
    }

    #[test]
    fn a_redirect_chain_stops_after_its_hop_limit() {
        // Eight campaigns, each with no buyer and a redirect to the next.
        let company: Record<Company> = record(None, json!({"name": "Acme"}));
        let ids: Vec<CampaignId> = (0..8).map(|_| Id::generate()).collect();
        let campaigns: Vec<Record<Campaign>> = (0..8)
            .map(|i| Record {
                id: ids[i],
                ..record(
                    Some(company.id),
                    json!({"name": format!("C{i}"), "redirect_campaign_id": ids.get(i + 1)}),
                )
            })
            .collect();
        let plan = RoutingPlan::new(vec![company], vec![], campaigns);
        let mut visited = vec![ids[0]];
        loop {
            let given = Given {
                visited: visited.clone(),
                ..Given::default()
            };
            let decision = given.decide(&plan, *visited.last().unwrap(), &mut StdRng::seed_from_u64(1));
            match decision.action {
                Action::Redirect { campaign } => visited.push(campaign),
                Action::End { reason } => {
                    assert_eq!(reason, DropReason::NoBuyer);
                    break;
                }
                Action::Dial { .. } => unreachable!(),
            }
        }
        assert_eq!(
            visited.len(),
            MAX_REDIRECTS + 1,
            "its own campaign and {MAX_REDIRECTS} redirects"
        );
    }

    fn dial_of(decision: &Decision) -> Option<(BuyerId, AttemptKind)> {
        match decision.action {
            Action::Dial { buyer, kind } => Some((buyer, kind)),
            _ => None,
        }
    }

    #[test]
    fn a_reserved_buyer_is_dialed_first_while_it_can_take_the_call() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let given = Given {
            reserved: Some(fx.b),
            ..Given::default()
        };
        let decision = given.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            dial_of(&decision),
            Some((fx.b, AttemptKind::Buyer)),
            "before A, of a higher priority"
        );
        assert_eq!(
            verdicts(&decision),
            [
                ("A", Verdict::Eligible),
                ("C", Verdict::Eligible),
                ("B", Verdict::Chosen)
            ]
        );

        // No longer able to (a cap since the bid): routing goes on as it would have.
        let given = Given {
            reserved: Some(fx.b),
            blocked: HashMap::from([(fx.b, Block::Concurrency)]),
            ..Given::default()
        };
        let decision = given.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1));
        assert_eq!(dial_of(&decision), Some((fx.a, AttemptKind::Buyer)));

        // A reserved fallback buyer goes first too, and only once in the decision.
        let given = Given {
            reserved: Some(fx.f),
            ..Given::default()
        };
        let decision = given.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1));
        assert_eq!(dial_of(&decision), Some((fx.f, AttemptKind::Fallback)));
        assert_eq!(
            decision.considered.iter().filter(|c| c.buyer_id == fx.f).count(),
            1
        );

        // The fallback buyer listed too, and now a duplicate there: not first for that.
        let mut fx = fixture(true, "new_convertible_buyer", false, false);
        let mut main = fx.plan.campaigns[&fx.main].clone();
        main.spec.fallback_buyer_id = Some(fx.b);
        fx.plan.campaigns.insert(fx.main, main);
        let given = Given {
            reserved: Some(fx.b),
            duplicates: HashSet::from([fx.b]),
            ..Given::default()
        };
        let decision = given.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1));
        assert_eq!(dial_of(&decision), Some((fx.a, AttemptKind::Buyer)));
    }

    #[test]
    fn a_bid_skips_duplicates_the_fallback_included_and_never_redirects() {
        let fx = fixture(true, "new_convertible_buyer", true, true);
        let everyone = Given {
            duplicates: HashSet::from([fx.a, fx.b, fx.c, fx.f]),
            ..Given::default()
        };
        // A call would go to the fallback buyer, who takes duplicates...
        let call = everyone.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1));
        assert_eq!(dial_of(&call), Some((fx.f, AttemptKind::Fallback)));
        // ...but a bid is for a buyer the caller is new to: none here.
        let bid = everyone.bid(&fx.plan, fx.main);
        assert_eq!(
            bid.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
        assert_eq!(bid.considered.last().map(|c| c.verdict), Some(Verdict::Duplicate));

        // A fallback buyer new to the caller bids.
        let some = Given {
            duplicates: HashSet::from([fx.a, fx.b, fx.c]),
            ..Given::default()
        };
        assert_eq!(
            dial_of(&some.bid(&fx.plan, fx.main)),
            Some((fx.f, AttemptKind::Fallback))
        );

        // Some buyers converted the caller: the bid is for the best of the others.
        let a_only = Given {
            duplicates: HashSet::from([fx.a]),
            ..Given::default()
        };
        assert_eq!(
            dial_of(&a_only.bid(&fx.plan, fx.main)),
            Some((fx.c, AttemptKind::Buyer))
        );

        // Nobody at all: a call would be redirected, a bid is simply not made.
        let fx = fixture(true, "new_convertible_buyer", false, true);
        let everyone = Given {
            duplicates: HashSet::from([fx.a, fx.b, fx.c]),
            ..Given::default()
        };
        assert!(matches!(
            everyone
                .decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(1))
                .action,
            Action::Redirect { .. }
        ));
        let bid = everyone.bid(&fx.plan, fx.main);
        assert_eq!(
            bid.action,
            Action::End {
                reason: DropReason::Duplicate
            }
        );
    }

    #[test]
    fn with_the_feature_off_a_bid_ignores_duplicates() {
        for (company_on, mode) in [(false, "new_convertible_buyer"), (true, "off")] {
            let fx = fixture(company_on, mode, false, false);
            let given = Given {
                duplicates: HashSet::from([fx.a, fx.b, fx.c]),
                ..Given::default()
            };
            assert_eq!(
                dial_of(&given.bid(&fx.plan, fx.main)),
                Some((fx.a, AttemptKind::Buyer))
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// With duplicate handling on, whatever the caller's history, the caps and what was
            /// tried: no listed buyer the call would be a duplicate for is dialed, no buyer at a
            /// cap or already tried is dialed, and a listed buyer that can take the call gets
            /// it (the call is never passed on, or dropped, while one could), unless a bid reserved
            /// the fallback for this caller.
            #[test]
            fn never_a_duplicate_a_capped_or_a_tried_buyer_and_never_passed_over(
                duplicate in prop::array::uniform5(any::<bool>()),
                capped in prop::array::uniform5(any::<bool>()),
                tried in prop::array::uniform5(any::<bool>()),
                fallback in any::<bool>(),
                redirect in any::<bool>(),
                reserved in prop::option::of(0..5usize),
                seed in any::<u64>(),
            ) {
                let fx = fixture(true, "new_convertible_buyer", fallback, redirect);
                let ids = [fx.a, fx.b, fx.c, fx.f, fx.o];
                let pick = |flags: [bool; 5]| -> HashSet<BuyerId> {
                    ids.iter().zip(flags).filter(|(_, on)| *on).map(|(id, _)| *id).collect()
                };
                let given = Given {
                    duplicates: pick(duplicate),
                    blocked: pick(capped).into_iter().map(|id| (id, Block::Concurrency)).collect(),
                    tried: pick(tried),
                    visited: vec![fx.main],
                    reserved: reserved.map(|i| ids[i]),
                    ..Given::default()
                };
                let decision = given.decide(&fx.plan, fx.main, &mut StdRng::seed_from_u64(seed));
                let free = |id: &BuyerId| {
                    !given.tried.contains(id) && !given.blocked.contains_key(id)
                };
                let listed_free = [fx.a, fx.b, fx.c]
                    .into_iter()
                    .find(|id| free(id) && !given.duplicates.contains(id));
                match decision.action {
                    Action::Dial { buyer, kind } => {
                        prop_assert!(free(&buyer), "dialed a buyer tried or at a cap");
                        match kind {
                            AttemptKind::Buyer => prop_assert!(!given.duplicates.contains(&buyer)),
                            AttemptKind::Fallback => {
                                prop_assert_eq!(buyer, fx.f);
                                // Unless a bid reserved the fallback for this caller: then it goes first.
                                if given.reserved != Some(fx.f) {
                                    prop_assert_eq!(listed_free, None, "the fallback while a listed buyer was free");
                                }
                            }
                        }
                    }
                    Action::Redirect { .. } | Action::End { .. } => {
                        prop_assert_eq!(listed_free, None, "passed on while a listed buyer was free");
                        prop_assert!(!(fallback && free(&fx.f)), "passed on while the fallback was free");
                    }
                }
            }
        }
    }
}
