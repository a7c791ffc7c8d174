//! How much more a buyer can take: legs ringing or connected now against its concurrency cap,
//! and calls counted in the current hour, day and month (of the buyer's time zone) and in all
//! time against its other caps.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
};

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    call::{Attempt, CallRecord, CallSid},
    plan::{Buyer, BuyerId, CapCounting, Caps},
    values::{CapLimit, RingTimeoutSeconds},
};

/// An answered leg no longer holds a concurrency slot this long after its answer, so a callback
/// the provider never sent cannot block a buyer for good: four hours is the longest a Twilio
/// call lasts.
pub const LEG_LEASE: SignedDuration = SignedDuration::from_hours(4);

/// Nor does a leg still unanswered this long after it was dialed: the longest ring timeout,
/// and a minute for the provider.
pub const RING_LEASE: SignedDuration = SignedDuration::from_secs(RingTimeoutSeconds::MAX as i64 + 60);

/// Counted calls older than this are forgotten (counts for all time stay): the longest month,
/// plus a day for time zones.
pub const EVENT_HORIZON: SignedDuration = SignedDuration::from_hours(32 * 24);

/// The caps counted over a period.
// Its text form (API paths, stored resets, verdicts) is [`CapPeriod::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum CapPeriod {
    Hourly,
    Daily,
    Monthly,
    Lifetime,
}

impl CapPeriod {
    pub const ALL: [Self; 4] = [Self::Hourly, Self::Daily, Self::Monthly, Self::Lifetime];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Lifetime => "lifetime",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|period| period.as_str() == text)
    }

    pub fn limit(self, caps: &Caps) -> Option<CapLimit> {
        match self {
            Self::Hourly => caps.hourly,
            Self::Daily => caps.daily,
            Self::Monthly => caps.monthly,
            Self::Lifetime => caps.lifetime,
        }
    }

    /// When the period holding `at` began in `zone`; a lifetime has no beginning.
    pub fn start(self, at: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let zoned = || at.to_zoned_datetime(zone.clone());
        // Errors only arise at the ends of representable time; the instant itself is then the
        // safest period start (it counts nothing from before).
        match self {
            Self::Hourly => {
                // Floors the local time, so zones offset by 30 or 45 minutes start hours on
                // their own hour, and a repeated hour (clocks going back) is its own hour.
                let offset = i64::from(zone.to_offset(at).seconds());
                let local = at.as_second() + offset;
                Some(Timestamp::from_second(local - local.rem_euclid(3600) - offset).unwrap_or(at))
            }
            Self::Daily => Some(zoned().start_of_day().map_or(at, |day| day.timestamp())),
            Self::Monthly => Some(
                zoned()
                    .first_of_month()
                    .and_then(|first| first.start_of_day())
                    .map_or(at, |month| month.timestamp()),
            ),
            Self::Lifetime => None,
        }
    }

    /// When the next period begins in `zone`.
    pub fn end(self, at: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let zoned = at.to_zoned_datetime(zone.clone());
        let next = match self {
            Self::Hourly => {
                let start = self.start(at, zone)?;
                return start.checked_add(SignedDuration::from_hours(1)).ok();
            }
            Self::Daily => zoned.tomorrow().and_then(|d| d.start_of_day()),
            Self::Monthly => zoned
                .last_of_month()
                .and_then(|d| d.tomorrow())
                .and_then(|d| d.start_of_day()),
            Self::Lifetime => return None,
        };
        next.ok().map(|next| next.timestamp())
    }
}

impl fmt::Display for CapPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a buyer cannot take another call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Block {
    /// As many legs as its concurrency cap are ringing or connected.
    Concurrency,
    /// The cap of this period is reached.
    Cap(CapPeriod),
}

/// One dial of one call: what holds a concurrency slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    pub call: CallSid,
    pub attempt: u32,
}

/// Calls counted for one buyer of one kind (connected, or converted).
#[derive(Debug, Default)]
struct Counted {
    /// In time order, back to the event horizon.
    recent: VecDeque<Timestamp>,
    /// Since the lifetime cap was last reset.
    lifetime: u64,
}

impl Counted {
    fn remember(&mut self, at: Timestamp) {
        let position = self.recent.partition_point(|t| *t <= at);
        self.recent.insert(position, at);
        let horizon = at.checked_sub(EVENT_HORIZON).unwrap_or(Timestamp::MIN);
        while self.recent.front().is_some_and(|t| *t < horizon) {
            self.recent.pop_front();
        }
    }

    /// Counted at `start` or later.
    fn since(&self, start: Timestamp) -> u64 {
        (self.recent.len() - self.recent.partition_point(|t| *t < start)) as u64
    }

    /// Counted strictly after `reset`: what a reset at an instant forgets includes that instant.
    fn after(&self, reset: Timestamp) -> u64 {
        (self.recent.len() - self.recent.partition_point(|t| *t <= reset)) as u64
    }
}

/// A leg holding a slot.
#[derive(Debug, Clone, Copy)]
struct LiveLeg {
    /// When it was dialed, or answered once it is.
    since: Timestamp,
    answered: bool,
}

impl LiveLeg {
    fn is_live(self, at: Timestamp) -> bool {
        let lease = if self.answered { LEG_LEASE } else { RING_LEASE };
        at.checked_sub(lease).is_ok_and(|lapsed| self.since > lapsed)
    }
}

#[derive(Debug, Default)]
struct BuyerLoad {
    legs: HashMap<Leg, LiveLeg>,
    connected: Counted,
    converted: Counted,
    resets: HashMap<CapPeriod, Timestamp>,
}

impl BuyerLoad {
    fn counted(&self, counting: CapCounting) -> &Counted {
        match counting {
            CapCounting::Connected => &self.connected,
            CapCounting::Converted => &self.converted,
        }
    }

    fn live_legs(&self, at: Timestamp) -> u32 {
        self.legs.values().filter(|leg| leg.is_live(at)).count() as u32
    }

    /// Live legs whose result is not counted yet but may be: a buyer near a cap is not offered
    /// more calls than the cap has room for. A connection counts at the answer, so only
    /// unanswered legs are pending for it; a conversion counts only when the leg ends.
    fn pending(&self, counting: CapCounting, at: Timestamp) -> u64 {
        let pending =
            |leg: &&LiveLeg| leg.is_live(at) && (counting == CapCounting::Converted || !leg.answered);
        self.legs.values().filter(pending).count() as u64
    }

    /// When counting for `period` began: the period's start or the cap's reset, the later.
    fn counting_since(&self, period: CapPeriod, zone: &TimeZone, at: Timestamp) -> Option<Timestamp> {
        let reset = self.resets.get(&period).copied();
        match (period.start(at, zone), reset) {
            (Some(start), Some(reset)) => Some(start.max(reset)),
            (start, reset) => start.or(reset),
        }
    }

    fn count(&self, period: CapPeriod, counting: CapCounting, zone: &TimeZone, at: Timestamp) -> u64 {
        let counted = self.counted(counting);
        let Some(start) = period.start(at, zone) else {
            return counted.lifetime;
        };
        // Both are counts of a suffix of the same ordered list: the smaller is their overlap.
        let after_reset = self
            .resets
            .get(&period)
            .map_or(u64::MAX, |reset| counted.after(*reset));
        counted.since(start).min(after_reset)
    }
}

/// Every buyer's load, kept in memory and rebuilt from the store at start-up.
#[derive(Debug, Default)]
pub struct CapacityIndex {
    buyers: HashMap<BuyerId, BuyerLoad>,
    holders: HashMap<Leg, BuyerId>,
}

impl CapacityIndex {
    /// Why `buyer` cannot take a call at `at`, if it cannot (see [`Standing::block`]).
    pub fn blocked(&self, buyer: BuyerId, spec: &Buyer, at: Timestamp) -> Option<Block> {
        let caps = &spec.caps;
        let Some(load) = self.buyers.get(&buyer) else {
            return Standing::default().block(caps);
        };
        let zone = spec.time_zone.zone();
        let standing = Standing {
            live: load.live_legs(at),
            pending: load.pending(caps.counted_on, at),
            counted: CapPeriod::ALL.map(|period| load.count(period, caps.counted_on, zone, at)),
        };
        standing.block(caps)
    }

    /// Takes a concurrency slot of `buyer` for `leg`, unless `limit` slots are taken. Taking a
    /// slot the leg already holds succeeds; a leg holding another buyer's slot (a call routed
    /// afresh after its record was lost) gives that one up.
    pub fn hold(&mut self, buyer: BuyerId, leg: Leg, limit: Option<CapLimit>, at: Timestamp) -> bool {
        match self.holders.get(&leg) {
            Some(holder) if *holder == buyer => return true,
            Some(_) => self.release(&leg),
            None => {}
        }
        let load = self.buyers.entry(buyer).or_default();
        if limit.is_some_and(|limit| load.live_legs(at) >= limit.get()) {
            return false;
        }
        let live = LiveLeg {
            since: at,
            answered: false,
        };
        load.legs.insert(leg.clone(), live);
        self.holders.insert(leg, buyer);
        true
    }

    /// The leg ended (in any way): its slot is free. Releasing a free slot does nothing.
    pub fn release(&mut self, leg: &Leg) {
        if let Some(buyer) = self.holders.remove(leg)
            && let Some(load) = self.buyers.get_mut(&buyer)
        {
            load.legs.remove(leg);
        }
    }

    /// `leg`'s slot is free if `buyer` holds it (another buyer's hold for the leg stands).
    pub fn release_held_by(&mut self, leg: &Leg, buyer: BuyerId) {
        if self.holders.get(leg) == Some(&buyer) {
            self.release(leg);
        }
    }

    /// The call ended: every slot its legs hold is free.
    pub fn release_call(&mut self, call: &CallSid) {
        let legs: Vec<Leg> = (self.holders.keys())
            .filter(|leg| leg.call == *call)
            .cloned()
            .collect();
        for leg in legs {
            self.release(&leg);
        }
    }

    /// Forgets the legs whose lease ran out (they hold nothing already; this frees memory).
    pub fn forget_lapsed(&mut self, at: Timestamp) {
        let holders = &mut self.holders;
        for load in self.buyers.values_mut() {
            load.legs.retain(|leg, live| {
                let keep = live.is_live(at);
                if !keep {
                    holders.remove(leg);
                }
                keep
            });
        }
    }

    /// `leg`'s call connected to (or converted for) `buyer` at `at`. An answered leg holds its
    /// slot for up to the length of a call from its answer.
    pub fn count(&mut self, buyer: BuyerId, leg: &Leg, counting: CapCounting, at: Timestamp) {
        let load = self.buyers.entry(buyer).or_default();
        if counting == CapCounting::Connected
            && let Some(live) = load.legs.get_mut(leg)
        {
            *live = LiveLeg {
                since: at,
                answered: true,
            };
        }
        let counted = match counting {
            CapCounting::Connected => &mut load.connected,
            CapCounting::Converted => &mut load.converted,
        };
        counted.remember(at);
        counted.lifetime += 1;
    }

    /// Counting for `period` starts again after `at` (until the next period begins anyway): what
    /// was counted up to and including `at` is forgotten.
    pub fn reset(&mut self, buyer: BuyerId, period: CapPeriod, at: Timestamp) {
        let load = self.buyers.entry(buyer).or_default();
        load.resets.insert(period, at);
        if period == CapPeriod::Lifetime {
            load.connected.lifetime = 0;
            load.converted.lifetime = 0;
        }
    }

    /// Start-up: what the store remembers. `recent` events are within the horizon and already
    /// part of `lifetime`, which counts from the lifetime reset.
    pub fn load(&mut self, history: LoadHistory) {
        for (buyer, period, at) in history.resets {
            self.buyers.entry(buyer).or_default().resets.insert(period, at);
        }
        for (buyer, counting, lifetime) in history.lifetime {
            let load = self.buyers.entry(buyer).or_default();
            match counting {
                CapCounting::Connected => load.connected.lifetime = lifetime,
                CapCounting::Converted => load.converted.lifetime = lifetime,
            }
        }
        for (buyer, counting, at) in history.recent {
            let load = self.buyers.entry(buyer).or_default();
            match counting {
                CapCounting::Connected => load.connected.remember(at),
                CapCounting::Converted => load.converted.remember(at),
            }
        }
        for open in history.open_legs {
            let live = LiveLeg {
                since: open.answered_at.unwrap_or(open.dialed_at),
                answered: open.answered_at.is_some(),
            };
            let load = self.buyers.entry(open.buyer).or_default();
            load.legs.insert(open.leg.clone(), live);
            self.holders.insert(open.leg, open.buyer);
        }
    }

    /// The buyer's caps and where it stands against each, for operators.
    pub fn view(&self, buyer: BuyerId, spec: &Buyer, at: Timestamp) -> CapacityView {
        let caps = &spec.caps;
        let zone = spec.time_zone.zone();
        let load = self.buyers.get(&buyer);
        let period = |period: CapPeriod| PeriodView {
            limit: period.limit(caps).map(CapLimit::get),
            count: load.map_or(0, |l| l.count(period, caps.counted_on, zone, at)),
            counting_since: load
                .and_then(|l| l.counting_since(period, zone, at))
                .or_else(|| period.start(at, zone)),
            next_period_at: period.end(at, zone),
        };
        CapacityView {
            time_zone: spec.time_zone.as_str().to_owned(),
            counted_on: caps.counted_on,
            blocked: self.blocked(buyer, spec, at).map(|block| block.to_string()),
            concurrency: ConcurrencyView {
                limit: caps.concurrency.map(CapLimit::get),
                live: load.map_or(0, |l| l.live_legs(at)),
            },
            pending: load.map_or(0, |l| l.pending(caps.counted_on, at)),
            hourly: period(CapPeriod::Hourly),
            daily: period(CapPeriod::Daily),
            monthly: period(CapPeriod::Monthly),
            lifetime: period(CapPeriod::Lifetime),
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Concurrency => f.write_str("concurrency"),
            Self::Cap(period) => write!(f, "cap:{period}"),
        }
    }
}

/// Where a buyer stands at one moment, which is all its caps are checked against: whether
/// the in-memory index or the shared store (several nodes) counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Legs holding a concurrency slot.
    pub live: u32,
    /// Live legs whose result is not counted yet but may be (see [`CapacityIndex::blocked`]).
    pub pending: u64,
    /// Calls counted in each period of [`CapPeriod::ALL`], in that order.
    pub counted: [u64; 4],
}

impl Standing {
    /// Why a buyer with `caps` cannot take another call, if it cannot. A period cap reckons in
    /// the pending legs, so calls at once cannot overshoot it; a reached period cap is named
    /// before a full concurrency cap, as it lasts longer.
    pub fn block(&self, caps: &Caps) -> Option<Block> {
        for (period, counted) in CapPeriod::ALL.into_iter().zip(self.counted).rev() {
            if (period.limit(caps)).is_some_and(|limit| counted + self.pending >= u64::from(limit.get())) {
                return Some(Block::Cap(period));
            }
        }
        (caps.concurrency)
            .is_some_and(|limit| self.live >= limit.get())
            .then_some(Block::Concurrency)
    }
}

/// What a webhook changed about buyers' load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadChange {
    /// The leg ended: its slot is free.
    Released(Leg),
    /// The call ended: all its legs' slots are free.
    CallEnded(CallSid),
    /// A hold asked for `leg` whose answer never came (the index or the store did not say in
    /// time) and whose leg was not dialed to `buyer`: if it was taken for `buyer` after all, it
    /// is given back now, not left until its lease runs out.
    Unheld { buyer: BuyerId, leg: Leg },
    /// A leg's call connected to, or converted for, a buyer.
    Counted {
        buyer: BuyerId,
        leg: Leg,
        counting: CapCounting,
        at: Timestamp,
    },
}

/// What changed about buyers' load between a call's state before a webhook and after it. A leg
/// ends when its dial ends, when its own status callback says so, or when the call ends; a
/// connection counts when the buyer answered, a conversion when the dial ended. (Slots are
/// taken before dialing, not here.)
pub fn load_changes(before: Option<&CallRecord>, after: &CallRecord, now: Timestamp) -> Vec<LoadChange> {
    let is_open = |call: &CallRecord, attempt: &Attempt| {
        attempt.status.is_none() && attempt.ended_at.is_none() && !call.is_ended()
    };
    let mut changes = Vec::new();
    for attempt in &after.attempts {
        let leg = Leg {
            call: after.sid.clone(),
            attempt: attempt.number,
        };
        let prior = before.and_then(|call| Some((call, call.attempt(attempt.number)?)));
        if prior.is_none_or(|(call, prior)| is_open(call, prior)) && !is_open(after, attempt) {
            changes.push(LoadChange::Released(leg.clone()));
        }
        let prior = prior.map(|(_, prior)| prior);
        if let Some(answered) = attempt.answered_at
            && prior.is_none_or(|p| p.answered_at.is_none())
        {
            changes.push(LoadChange::Counted {
                buyer: attempt.buyer_id,
                leg: leg.clone(),
                counting: CapCounting::Connected,
                at: answered,
            });
        }
        if attempt.converted && prior.is_none_or(|p| !p.converted) {
            changes.push(LoadChange::Counted {
                buyer: attempt.buyer_id,
                leg,
                counting: CapCounting::Converted,
                at: now,
            });
        }
    }
    changes
}

/// What the store remembers of the buyers' load, to rebuild the index.
#[derive(Debug, Default)]
pub struct LoadHistory {
    /// Legs not ended, of calls not ended, within their lease.
    pub open_legs: Vec<OpenLeg>,
    /// Calls connected or converted within the event horizon.
    pub recent: Vec<(BuyerId, CapCounting, Timestamp)>,
    /// Calls connected or converted since each buyer's lifetime reset.
    pub lifetime: Vec<(BuyerId, CapCounting, u64)>,
    pub resets: Vec<(BuyerId, CapPeriod, Timestamp)>,
}

/// A leg the store has no end for.
#[derive(Debug, Clone)]
pub struct OpenLeg {
    pub buyer: BuyerId,
    pub leg: Leg,
    pub dialed_at: Timestamp,
    pub answered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CapacityView {
    /// The buyer's time zone, whose hours, days and months the caps count in.
    pub time_zone: String,
    pub counted_on: CapCounting,
    /// Why the buyer takes no call now (`concurrency`, `cap:daily`…), if it takes none.
    #[schema(required = true)]
    pub blocked: Option<String>,
    pub concurrency: ConcurrencyView,
    /// Live legs whose result may still count against the caps below (and is reckoned in).
    pub pending: u64,
    pub hourly: PeriodView,
    pub daily: PeriodView,
    pub monthly: PeriodView,
    pub lifetime: PeriodView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConcurrencyView {
    #[schema(required = true)]
    pub limit: Option<u32>,
    pub live: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PeriodView {
    #[schema(required = true)]
    pub limit: Option<u32>,
    pub count: u64,
    /// The period's start, or the cap's reset if later; for all time, the last reset.
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub counting_since: Option<Timestamp>,
    /// When the count starts again by itself.
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub next_period_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ids::Id;
    use crate::fresh::Generate;

    fn buyer(caps: serde_json::Value, zone: &str) -> (BuyerId, Buyer) {
        let spec = serde_json::from_value(json!({
            "name": "B", "destination": "+14155550101", "caps": caps, "time_zone": zone,
        }))
        .unwrap();
        (Id::generate(), spec)
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn leg(attempt: u32) -> Leg {
        Leg {
            call: CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            attempt,
        }
    }

    /// For each period: the cap blocks once reached and reopens when the next period begins in
    /// the buyer's time zone (New York, UTC-5 in November), not before.
    #[test]
    fn each_cap_blocks_at_its_limit_and_reopens_at_its_period_boundary() {
        let cases = [
            (
                "hourly",
                "2026-11-23T14:10:00Z",
                "2026-11-23T14:59:59Z",
                "2026-11-23T15:00:00Z",
            ),
            (
                "daily",
                "2026-11-23T14:10:00Z",
                "2026-11-24T04:59:59Z",
                "2026-11-24T05:00:00Z",
            ),
            (
                "monthly",
                "2026-11-23T14:10:00Z",
                "2026-12-01T04:59:59Z",
                "2026-12-01T05:00:00Z",
            ),
        ];
        for (period, first, last_blocked, reopened) in cases {
            let (id, spec) = buyer(json!({period: 2, "counted_on": "converted"}), "America/New_York");
            let mut index = CapacityIndex::default();
            index.count(id, &leg(99), CapCounting::Converted, at(first));
            assert_eq!(index.blocked(id, &spec, at(first)), None, "{period}: one of two");
            index.count(id, &leg(99), CapCounting::Converted, at(first));
            let cap = Block::Cap(CapPeriod::parse(period).unwrap());
            assert_eq!(
                index.blocked(id, &spec, at(first)),
                Some(cap),
                "{period}: at the limit"
            );
            assert_eq!(index.blocked(id, &spec, at(last_blocked)), Some(cap), "{period}");
            assert_eq!(
                index.blocked(id, &spec, at(reopened)),
                None,
                "{period}: next period"
            );
        }
        let (id, spec) = buyer(json!({"lifetime": 1}), "UTC");
        let mut index = CapacityIndex::default();
        index.count(id, &leg(99), CapCounting::Converted, at("2020-01-01T00:00:00Z"));
        let blocked = index.blocked(id, &spec, at("2030-01-01T00:00:00Z"));
        assert_eq!(blocked, Some(Block::Cap(CapPeriod::Lifetime)));
    }

    #[test]
    fn caps_count_what_the_buyer_says_connected_or_converted() {
        let (id, spec) = buyer(json!({"daily": 1, "counted_on": "connected"}), "UTC");
        let mut index = CapacityIndex::default();
        let now = at("2026-11-23T12:00:00Z");
        index.count(id, &leg(99), CapCounting::Converted, now);
        assert_eq!(
            index.blocked(id, &spec, now),
            None,
            "a conversion is not a connection"
        );
        index.count(id, &leg(99), CapCounting::Connected, now);
        assert_eq!(index.blocked(id, &spec, now), Some(Block::Cap(CapPeriod::Daily)));
    }

    #[test]
    fn a_reset_restarts_the_count_until_the_next_period() {
        let (id, spec) = buyer(json!({"daily": 1, "lifetime": 3}), "UTC");
        let mut index = CapacityIndex::default();
        index.count(id, &leg(99), CapCounting::Converted, at("2026-11-23T09:00:00Z"));
        assert_eq!(
            index.blocked(id, &spec, at("2026-11-23T10:00:00Z")),
            Some(Block::Cap(CapPeriod::Daily))
        );
        index.reset(id, CapPeriod::Daily, at("2026-11-23T10:00:00Z"));
        assert_eq!(index.blocked(id, &spec, at("2026-11-23T10:00:00Z")), None);
        index.count(id, &leg(99), CapCounting::Converted, at("2026-11-23T11:00:00Z"));
        assert_eq!(
            index.blocked(id, &spec, at("2026-11-23T11:00:00Z")),
            Some(Block::Cap(CapPeriod::Daily))
        );
        let view = index.view(id, &spec, at("2026-11-23T11:00:00Z"));
        assert_eq!(view.daily.count, 1);
        assert_eq!(view.daily.counting_since, Some(at("2026-11-23T10:00:00Z")));
        assert_eq!(view.lifetime.count, 2);
        index.reset(id, CapPeriod::Lifetime, at("2026-11-23T12:00:00Z"));
        assert_eq!(
            index.view(id, &spec, at("2026-11-23T12:00:00Z")).lifetime.count,
            0
        );
    }

    #[test]
    fn concurrency_slots_are_held_per_leg_and_freed_when_it_ends() {
        let (id, spec) = buyer(json!({"concurrency": 2}), "UTC");
        let limit = spec.caps.concurrency;
        let now = at("2026-11-23T12:00:00Z");
        let mut index = CapacityIndex::default();
        assert!(index.hold(id, leg(1), limit, now));
        assert!(
            index.hold(id, leg(1), limit, now),
            "the same leg again takes no second slot"
        );
        assert!(index.hold(id, leg(2), limit, now));
        assert_eq!(index.blocked(id, &spec, now), Some(Block::Concurrency));
        assert!(!index.hold(id, leg(3), limit, now));
        index.release(&leg(1));
        index.release(&leg(1));
        assert_eq!(index.blocked(id, &spec, now), None);
        assert!(index.hold(id, leg(3), limit, now));
        assert!(!index.hold(id, leg(4), limit, now));
        // A leg never heard of again lapses after the lease.
        let later = now.checked_add(LEG_LEASE).unwrap();
        assert!(index.hold(id, leg(4), limit, later));
        assert_eq!(index.view(id, &spec, later).concurrency.live, 1);
    }

    #[test]
    fn calls_in_progress_count_against_a_cap_they_may_still_reach() {
        let now = at("2026-11-23T12:00:00Z");
        let (id, spec) = buyer(json!({"daily": 2, "counted_on": "converted"}), "UTC");
        let mut index = CapacityIndex::default();
        index.count(id, &leg(9), CapCounting::Converted, now);
        assert!(index.hold(id, leg(1), None, now));
        assert_eq!(
            index.blocked(id, &spec, now),
            Some(Block::Cap(CapPeriod::Daily)),
            "1 + 1 talking"
        );
        index.count(id, &leg(1), CapCounting::Connected, now);
        assert_eq!(
            index.view(id, &spec, now).pending,
            1,
            "answered, not converted yet"
        );
        index.release(&leg(1));
        assert_eq!(index.blocked(id, &spec, now), None, "it did not convert");

        // Counted on connection, an answered leg is counted already, not pending as well.
        let (id, spec) = buyer(json!({"daily": 2, "counted_on": "connected"}), "UTC");
        assert!(index.hold(id, leg(2), None, now));
        index.count(id, &leg(2), CapCounting::Connected, now);
        assert_eq!(index.blocked(id, &spec, now), None, "1 connected, still talking");
        assert!(index.hold(id, leg(3), None, now));
        assert_eq!(
            index.blocked(id, &spec, now),
            Some(Block::Cap(CapPeriod::Daily)),
            "1 + 1 ringing"
        );
    }

    #[test]
    fn a_ringing_leg_lapses_sooner_than_a_talking_one_and_a_leg_holds_one_slot() {
        let (a, spec) = buyer(json!({"concurrency": 5}), "UTC");
        let (b, _) = buyer(json!({}), "UTC");
        let now = at("2026-11-23T12:00:00Z");
        let mut index = CapacityIndex::default();
        assert!(index.hold(a, leg(1), None, now));
        assert!(index.hold(a, leg(2), None, now));
        index.count(a, &leg(2), CapCounting::Connected, now);
        let later = now.checked_add(RING_LEASE).unwrap();
        assert_eq!(
            index.view(a, &spec, later).concurrency.live,
            1,
            "only the answered leg"
        );
        index.forget_lapsed(later);
        // A leg routed afresh to another buyer gives up its first slot.
        assert!(index.hold(b, leg(2), None, later));
        assert_eq!(index.view(a, &spec, later).concurrency.live, 0);
        assert!(index.hold(a, leg(3), None, later));
        assert!(index.hold(a, leg(4), None, later));
        index.release_call(&leg(3).call);
        assert_eq!(
            index.view(a, &spec, later).concurrency.live,
            0,
            "every leg of the call"
        );
    }

    #[test]
    fn hours_follow_the_local_clock_in_odd_offsets_and_across_daylight_saving() {
        let kathmandu = jiff::tz::db().get("Asia/Kathmandu").unwrap(); // UTC+05:45
        let start = CapPeriod::Hourly.start(at("2026-11-23T10:20:00Z"), &kathmandu);
        assert_eq!(start, Some(at("2026-11-23T10:15:00Z")));
        let ny = jiff::tz::db().get("America/New_York").unwrap();
        // 2026-11-01: 01:00-02:00 happens twice; each is an hour of its own.
        let first = CapPeriod::Hourly.start(at("2026-11-01T05:30:00Z"), &ny);
        let second = CapPeriod::Hourly.start(at("2026-11-01T06:30:00Z"), &ny);
        assert_eq!(first, Some(at("2026-11-01T05:00:00Z")));
        assert_eq!(second, Some(at("2026-11-01T06:00:00Z")));
        // That day is 25 hours long.
        let day = CapPeriod::Daily;
        assert_eq!(
            day.start(at("2026-11-01T12:00:00Z"), &ny),
            Some(at("2026-11-01T04:00:00Z"))
        );
        assert_eq!(
            day.end(at("2026-11-01T12:00:00Z"), &ny),
            Some(at("2026-11-02T05:00:00Z"))
        );
        let month = CapPeriod::Monthly;
        assert_eq!(
            month.end(at("2026-12-31T12:00:00Z"), &ny),
            Some(at("2027-01-01T05:00:00Z"))
        );
        assert_eq!(CapPeriod::Lifetime.start(at("2026-12-31T12:00:00Z"), &ny), None);
    }

    #[test]
    fn the_index_rebuilt_from_history_blocks_as_before() {
        let (id, spec) = buyer(json!({"daily": 2, "lifetime": 10, "concurrency": 1}), "UTC");
        let now = at("2026-11-23T12:00:00Z");
        let mut index = CapacityIndex::default();
        index.load(LoadHistory {
            open_legs: vec![OpenLeg {
                buyer: id,
                leg: leg(1),
                dialed_at: now,
                answered_at: None,
            }],
            recent: vec![
                (id, CapCounting::Converted, at("2026-11-23T08:00:00Z")),
                (id, CapCounting::Converted, at("2026-11-22T08:00:00Z")),
            ],
            lifetime: vec![(id, CapCounting::Converted, 7)],
            resets: vec![(id, CapPeriod::Daily, at("2026-11-23T09:00:00Z"))],
        });
        let view = index.view(id, &spec, now);
        assert_eq!(view.daily.count, 0, "the one today came before the reset");
        assert_eq!(view.lifetime.count, 7);
        assert_eq!(view.concurrency.live, 1);
        assert_eq!(view.blocked.as_deref(), Some("concurrency"));
        index.release(&leg(1));
        assert_eq!(index.blocked(id, &spec, now), None);
    }

    mod load_changes_of_a_call {
        use super::*;
        use crate::domain::call::{AttemptKind, CallRecord, Caller, DialStatus};

        fn dialing(buyer: BuyerId, now: Timestamp) -> CallRecord {
            let mut call = CallRecord::new(
                leg(1).call,
                Caller::from_provider("+14155550100"),
                "+18005550100".into(),
                now,
            );
            call.begin_attempt(buyer, Id::generate(), AttemptKind::Buyer, Some(false), now);
            call
        }

        #[test]
        fn a_leg_that_ends_unanswered_frees_its_slot_once() {
            let (buyer, now) = (Id::generate(), at("2026-11-23T12:00:00Z"));
            let before = dialing(buyer, now);
            let mut after = before.clone();
            after.attempt_ended(1, DialStatus::NoAnswer, 0, None, 60, now);
            assert_eq!(
                load_changes(Some(&before), &after, now),
                [LoadChange::Released(leg(1))]
            );
            assert_eq!(load_changes(Some(&after), &after, now), [], "a retried callback");
        }

        #[test]
        fn the_caller_hanging_up_or_the_leg_ending_frees_the_slot() {
            let (buyer, now) = (Id::generate(), at("2026-11-23T12:00:00Z"));
            let before = dialing(buyer, now);
            let mut hung_up = before.clone();
            hung_up.hung_up(now);
            assert_eq!(
                load_changes(Some(&before), &hung_up, now),
                [LoadChange::Released(leg(1))]
            );
            let mut leg_over = before.clone();
            assert!(leg_over.leg_ended(1, None, now));
            assert_eq!(
                load_changes(Some(&before), &leg_over, now),
                [LoadChange::Released(leg(1))]
            );
            assert_eq!(
                load_changes(Some(&leg_over), &leg_over, now),
                [],
                "its dial's result comes later"
            );
            assert_eq!(load_changes(Some(&before), &before, now), []);
            assert_eq!(load_changes(None, &before, now), [], "a new leg holds its slot");
        }

        #[test]
        fn an_answer_counts_a_connection_and_a_long_enough_call_a_conversion() {
            let (buyer, t0) = (Id::generate(), at("2026-11-23T12:00:00Z"));
            let t1 = at("2026-11-23T12:00:20Z");
            let t2 = at("2026-11-23T12:03:00Z");
            let before = dialing(buyer, t0);
            let mut answered = before.clone();
            answered.leg_answered(1, t1);
            let connected = LoadChange::Counted {
                leg: leg(1),
                buyer,
                counting: CapCounting::Connected,
                at: t1,
            };
            assert_eq!(load_changes(Some(&before), &answered, t1), [connected]);
            let mut ended = answered.clone();
            ended.attempt_ended(1, DialStatus::Completed, 160, Some(false), 60, t2);
            let converted = LoadChange::Counted {
                leg: leg(1),
                buyer,
                counting: CapCounting::Converted,
                at: t2,
            };
            assert_eq!(
                load_changes(Some(&answered), &ended, t2),
                [LoadChange::Released(leg(1)), converted]
            );
            // Dial action first, no leg callback: the connection counts at the dial's end.
            let mut ended_directly = before.clone();
            ended_directly.attempt_ended(1, DialStatus::Completed, 10, Some(false), 60, t2);
            assert_eq!(
                load_changes(Some(&before), &ended_directly, t2),
                [
                    LoadChange::Released(leg(1)),
                    LoadChange::Counted {
                        leg: leg(1),
                        buyer,
                        counting: CapCounting::Connected,
                        at: t2
                    }
                ]
            );
        }
    }
}
