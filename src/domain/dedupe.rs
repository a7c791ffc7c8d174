//! De-duplication: would this call be a duplicate for that buyer?
//!
//! A call is a duplicate for a buyer when the caller already converted with the buyer (or, for
//! `duplicate_after = connected`, was connected to it) less than the buyer's `dedupe_seconds`
//! ago; buyers in a `dedupe_group` share that history. The [`DedupeIndex`] keeps only the
//! latest touch per caller and scope, so a check costs the same however long the history is.

use std::collections::{HashMap, hash_map};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    phone::E164,
    plan::{Buyer, BuyerId, CompanyId, DuplicateAfter, PublisherId, Record},
};

/// Whose history a buyer's de-dupe consults: the buyer's own, or its group's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scope {
    Buyer(BuyerId),
    Group {
        company: CompanyId,
        name: String,
    },
    /// A publisher's payouts: its "conversions" are the calls it was paid for.
    Publisher(PublisherId),
}

impl Scope {
    /// The scope a buyer's rule checks.
    pub fn checked_by(buyer: &Record<Buyer>) -> Self {
        match (&buyer.spec.dedupe_group, buyer.company_id) {
            (Some(group), Some(company)) => Self::Group {
                company,
                name: group.as_str().to_owned(),
            },
            _ => Self::Buyer(buyer.id),
        }
    }

    /// Every scope a touch with this buyer counts in: its own, and its group's. Keeping the
    /// buyer's own history too means leaving a group loses nothing.
    pub fn touched_by(buyer: &Record<Buyer>) -> Vec<Self> {
        let own = Self::Buyer(buyer.id);
        match Self::checked_by(buyer) {
            group @ Self::Group { .. } => vec![own, group],
            _ => vec![own],
        }
    }

    /// The stored form: `buyer:<id>`, `group:<company id>:<name>` or `publisher:<id>`.
    pub fn key(&self) -> String {
        match self {
            Self::Buyer(id) => format!("buyer:{id}"),
            Self::Group { company, name } => format!("group:{company}:{name}"),
            Self::Publisher(id) => format!("publisher:{id}"),
        }
    }

    pub fn parse_key(key: &str) -> Result<Self, String> {
        let invalid = || format!("`{key}` is not a de-dupe scope");
        match key.split_once(':') {
            Some(("buyer", id)) => id.parse().map(Self::Buyer).map_err(|_| invalid()),
            Some(("publisher", id)) => id.parse().map(Self::Publisher).map_err(|_| invalid()),
            Some(("group", rest)) => {
                let (company, name) = rest.split_once(':').ok_or_else(invalid)?;
                Ok(Self::Group {
                    company: company.parse().map_err(|_| invalid())?,
                    name: name.to_owned(),
                })
            }
            _ => Err(invalid()),
        }
    }
}

// As its key: how scopes are stored, and how they travel between nodes.
impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.key()
    }
}

impl TryFrom<String> for Scope {
    type Error = String;

    fn try_from(key: String) -> Result<Self, String> {
        Self::parse_key(&key)
    }
}

/// What happened between a caller and a buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    Connected,
    /// A conversion is also a connection.
    Converted,
}

/// The latest touches of one caller within one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub last_connected: Option<Timestamp>,
    pub last_converted: Option<Timestamp>,
}

/// A touch to remember: stored, then applied to the in-memory index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub caller: E164,
    pub scope: Scope,
    pub touch: Touch,
    pub at: Timestamp,
}

impl Touched {
    /// Every touch a connection (or conversion) with `buyer` leaves.
    pub fn with_buyer(caller: &E164, buyer: &Record<Buyer>, touch: Touch, at: Timestamp) -> Vec<Self> {
        Scope::touched_by(buyer)
            .into_iter()
            .map(|scope| Self {
                caller: caller.clone(),
                scope,
                touch,
                at,
            })
            .collect()
    }
}

/// A conversion taken back (returned): the caller's latest conversion in `scope` is now
/// `last_converted` (none left: `None`), where it was the one `returned`. Connections stand: a
/// returned call still connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconverted {
    pub caller: E164,
    pub scope: Scope,
    pub returned: Timestamp,
    pub last_converted: Option<Timestamp>,
}

/// Stored marks, as read a batch at a time to (re)build the index: millions at start-up. Each
/// scope is named once per batch and each caller kept as its digits, so that a mark holds no
/// string of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkBatch {
    /// The scopes of this batch's marks.
    pub scopes: Vec<Scope>,
    pub marks: Vec<BatchMark>,
}

/// One stored mark in a [`MarkBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    /// The caller's [`E164::digits`].
    pub caller: u64,
    /// Where its scope is in the batch's `scopes`.
    pub scope: u32,
    pub mark: Mark,
}

/// A buyer's de-dupe rule, as a check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub buyer: BuyerId,
    pub scope: Scope,
    pub window_seconds: u32,
    pub after: DuplicateAfter,
}

impl Rule {
    pub fn of(buyer: &Record<Buyer>) -> Self {
        Self {
            buyer: buyer.id,
            scope: Scope::checked_by(buyer),
            window_seconds: buyer.spec.dedupe_seconds.get(),
            after: buyer.spec.duplicate_after,
        }
    }

    /// Duplicate when the touch the rule counts happened less than the window before `at`: a
    /// window of 60 s makes a call 59.999 s after a conversion a duplicate and one at 60 s new.
    /// A touch stamped after `at` (clocks of two nodes disagreeing) counts as inside the window.
    pub fn is_duplicate(&self, mark: &Mark, at: Timestamp) -> bool {
        if self.window_seconds == 0 {
            return false;
        }
        let last = match self.after {
            DuplicateAfter::Converted => mark.last_converted,
            DuplicateAfter::Connected => mark.last_connected.max(mark.last_converted),
        };
        let window_ms = i64::from(self.window_seconds) * 1000;
        last.is_some_and(|t| at.as_millisecond() - t.as_millisecond() < window_ms)
    }
}

const NEVER: i64 = i64::MIN;

/// One caller's latest touches in one scope, in milliseconds (`NEVER` when none).
#[derive(Debug, Clone, Copy)]
struct Entry {
    scope: u32,
    connected_ms: i64,
    converted_ms: i64,
}

/// A caller's entries. Most callers have met one buyer: their entry is kept in the map itself,
/// so that a check costs one memory access however large the index (a `Vec` would add a
/// second, to memory as cold as the first).
#[derive(Debug, Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Self::One(entry) => std::slice::from_ref(entry),
            Self::Many(entries) => entries,
        }
    }

    /// The entry of `scope`, and whether it is new.
    fn entry(&mut self, scope: u32) -> (&mut Entry, bool) {
        let fresh = Entry {
            scope,
            connected_ms: NEVER,
            converted_ms: NEVER,
        };
        if let Self::One(only) = self
            && only.scope != scope
        {
            *self = Self::Many(vec![*only]);
        }
        match self {
            Self::One(only) => (only, false),
            Self::Many(entries) => match entries.iter().position(|e| e.scope == scope) {
                Some(i) => (&mut entries[i], false),
                None => {
                    entries.push(fresh);
                    let last = entries.len() - 1;
                    (&mut entries[last], true)
                }
            },
        }
    }
}

/// The latest touch of every caller with every scope, in memory.
#[derive(Debug, Default)]
pub struct DedupeIndex {
    callers: HashMap<u64, Entries>,
    scope_ids: HashMap<Scope, u32>,
    entries: usize,
}

/// E.164 is at most 15 digits, so a number fits a `u64`: a cheap key.
fn caller_key(caller: &E164) -> u64 {
    caller.digits()
}

fn to_timestamp(ms: i64) -> Option<Timestamp> {
    (ms != NEVER)
        .then(|| Timestamp::from_millisecond(ms).ok())
        .flatten()
}

impl DedupeIndex {
    /// Records a touch; older news never overwrites newer.
    pub fn record(&mut self, caller: &E164, scope: &Scope, touch: Touch, at: Timestamp) {
        let scope = self.scope_id(scope);
        let ms = at.as_millisecond();
        let converted = if touch == Touch::Converted { ms } else { NEVER };
        self.merge(caller_key(caller), scope, ms, converted);
    }

    /// Takes a returned conversion back. Only a mark the returned conversion made (or an older
    /// one) is lowered: a later conversion learnt meanwhile stands.
    pub fn unconvert(&mut self, taken_back: &Unconverted) {
        let Some(&scope) = self.scope_ids.get(&taken_back.scope) else {
            return;
        };
        let Some(entries) = self.callers.get_mut(&caller_key(&taken_back.caller)) else {
            return;
        };
        let entry = match entries {
            Entries::One(only) if only.scope == scope => only,
            Entries::One(_) => return,
            Entries::Many(entries) => match entries.iter_mut().find(|e| e.scope == scope) {
                Some(entry) => entry,
                None => return,
            },
        };
        if entry.converted_ms <= taken_back.returned.as_millisecond() {
            entry.converted_ms = taken_back.last_converted.map_or(NEVER, Timestamp::as_millisecond);
        }
    }

    /// Loads stored marks (start-up, or after news was missed); older news never overwrites
    /// newer, whether it is in the index already or comes later.
    pub fn load(&mut self, batch: &MarkBatch) {
        let ids: Vec<u32> = batch.scopes.iter().map(|scope| self.scope_id(scope)).collect();
        for stored in &batch.marks {
            // A batch's marks name its scopes (see the store); one that did not is skipped.
            let Some(&scope) = ids.get(stored.scope as usize) else {
                continue;
            };
            let ms = |at: Option<Timestamp>| at.map_or(NEVER, Timestamp::as_millisecond);
            let converted = ms(stored.mark.last_converted);
            // A conversion is also a connection.
            let connected = ms(stored.mark.last_connected).max(converted);
            if connected != NEVER {
                self.merge(stored.caller, scope, connected, converted);
            }
        }
    }

    fn scope_id(&mut self, scope: &Scope) -> u32 {
        if let Some(&id) = self.scope_ids.get(scope) {
            return id;
        }
        let id = self.scope_ids.len() as u32;
        self.scope_ids.insert(scope.clone(), id);
        id
    }

    /// Keeps the later of each touch: one lookup for both.
    fn merge(&mut self, caller: u64, scope: u32, connected_ms: i64, converted_ms: i64) {
        let (entry, new) = match self.callers.entry(caller) {
            hash_map::Entry::Occupied(held) => held.into_mut().entry(scope),
            hash_map::Entry::Vacant(vacant) => {
                let fresh = Entry {
                    scope,
                    connected_ms: NEVER,
                    converted_ms: NEVER,
                };
                (vacant.insert(Entries::One(fresh)).entry(scope).0, true)
            }
        };
        if new {
            self.entries += 1;
        }
        entry.connected_ms = entry.connected_ms.max(connected_ms);
        entry.converted_ms = entry.converted_ms.max(converted_ms);
    }

    pub fn mark(&self, caller: &E164, scope: &Scope) -> Mark {
        self.mark_in(self.entries_of(caller), scope)
    }

    /// The buyers among `rules` for whom a call from `caller` at `at` would be a duplicate.
    pub fn duplicates<'r>(
        &self,
        caller: &E164,
        rules: impl IntoIterator<Item = &'r Rule>,
        at: Timestamp,
    ) -> Vec<BuyerId> {
        // The caller is looked up once, whatever the number of rules: with millions of
        // callers, that lookup is the one likely to miss the cache.
        let entries = self.entries_of(caller);
        rules
            .into_iter()
            .filter(|rule| rule.is_duplicate(&self.mark_in(entries, &rule.scope), at))
            .map(|rule| rule.buyer)
            .collect()
    }

    fn entries_of(&self, caller: &E164) -> &[Entry] {
        self.callers
            .get(&caller_key(caller))
            .map_or(&[], Entries::as_slice)
    }

    fn mark_in(&self, entries: &[Entry], scope: &Scope) -> Mark {
        if entries.is_empty() {
            // A caller never seen: no scope to look up.
            return Mark::default();
        }
        let found = (self.scope_ids.get(scope)).and_then(|id| entries.iter().find(|e| e.scope == *id));
        found.map_or_else(Mark::default, |e| Mark {
            last_connected: to_timestamp(e.connected_ms),
            last_converted: to_timestamp(e.converted_ms),
        })
    }

    /// How many (caller, scope) marks are held.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::domain::{ids::Id, values::DedupeSeconds};
    use crate::fresh::Generate;

    fn caller() -> E164 {
        E164::from_provider("+14155550123").unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + seconds)
    }

    fn rule(window_seconds: u32, after: DuplicateAfter) -> Rule {
        Rule {
            buyer: Id::generate(),
            scope: Scope::Buyer(Id::generate()),
            window_seconds,
            after,
        }
    }

    #[test]
    fn the_window_includes_its_start_and_excludes_its_end() {
        let rule = rule(3600, DuplicateAfter::Converted);
        let mut index = DedupeIndex::default();
        index.record(&caller(), &rule.scope, Touch::Converted, at(0));
        let mark = index.mark(&caller(), &rule.scope);
        assert!(rule.is_duplicate(&mark, at(0)));
        assert!(rule.is_duplicate(&mark, at(3599)));
        assert!(rule.is_duplicate(&mark, at(3600) - SignedDuration::from_millis(1)));
        assert!(!rule.is_duplicate(&mark, at(3600)));
        assert!(!rule.is_duplicate(&mark, at(90_000)));
        assert!(
            rule.is_duplicate(&mark, at(-5)),
            "a touch stamped in the future counts"
        );
    }

    #[test]
    fn a_returned_conversion_no_longer_makes_the_caller_a_duplicate_unless_a_later_one_does() {
        let rule = rule(86_400, DuplicateAfter::Converted);
        let mut index = DedupeIndex::default();
        index.record(&caller(), &rule.scope, Touch::Converted, at(0));
        let returned = |last_converted| Unconverted {
            caller: caller(),
            scope: rule.scope.clone(),
            returned: at(0),
            last_converted,
        };
        index.unconvert(&returned(None));
        assert!(!rule.is_duplicate(&index.mark(&caller(), &rule.scope), at(10)));
        // An earlier conversion still inside the window makes it one again.
        index.record(&caller(), &rule.scope, Touch::Converted, at(0));
        index.unconvert(&returned(Some(at(-5))));
        assert!(rule.is_duplicate(&index.mark(&caller(), &rule.scope), at(10)));
        // A later conversion, learnt before the return's news came, stands.
        index.record(&caller(), &rule.scope, Touch::Converted, at(7));
        index.unconvert(&returned(None));
        assert_eq!(index.mark(&caller(), &rule.scope).last_converted, Some(at(7)));
    }

    #[test]
    fn a_zero_window_accepts_every_duplicate() {
        let rule = rule(0, DuplicateAfter::Connected);
        let mark = Mark {
            last_connected: Some(at(0)),
            last_converted: Some(at(0)),
        };
        assert!(!rule.is_duplicate(&mark, at(0)));
    }

    #[test]
    fn connected_rules_count_any_connection_and_converted_rules_only_conversions() {
        let converted = rule(3600, DuplicateAfter::Converted);
        let connected = Rule {
            after: DuplicateAfter::Connected,
            ..converted.clone()
        };
        let mut index = DedupeIndex::default();
        index.record(&caller(), &converted.scope, Touch::Connected, at(0));
        let mark = index.mark(&caller(), &converted.scope);
        assert!(
            !converted.is_duplicate(&mark, at(10)),
            "a short call is no conversion"
        );
        assert!(connected.is_duplicate(&mark, at(10)));

        index.record(&caller(), &converted.scope, Touch::Converted, at(100));
        let mark = index.mark(&caller(), &converted.scope);
        assert_eq!(mark.last_connected, Some(at(100)), "a conversion is a connection");
        assert!(converted.is_duplicate(&mark, at(200)));
    }

    #[test]
    fn older_news_never_overwrites_newer() {
        let scope = Scope::Buyer(Id::generate());
        let mut index = DedupeIndex::default();
        index.record(&caller(), &scope, Touch::Converted, at(500));
        index.record(&caller(), &scope, Touch::Converted, at(100));
        assert_eq!(index.mark(&caller(), &scope).last_converted, Some(at(500)));
        assert_eq!(index.len(), 1);
    }

    fn buyer(group: Option<&str>, company: CompanyId) -> Record<Buyer> {
        let mut spec: Buyer =
            serde_json::from_value(serde_json::json!({"name": "B", "destination": "+14155550101"})).unwrap();
        spec.dedupe_group = group.map(|g| g.to_owned().try_into().unwrap());
        spec.dedupe_seconds = DedupeSeconds::try_from(86_400).unwrap();
        Record {
            id: Id::generate(),
            company_id: Some(company),
            spec,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    #[test]
    fn buyers_in_a_group_share_history_and_keep_their_own() {
        let company = Id::generate();
        let (one, two, loner) = (
            buyer(Some("Parent Co"), company),
            buyer(Some("Parent Co"), company),
            buyer(None, company),
        );
        let mut index = DedupeIndex::default();
        for scope in Scope::touched_by(&one) {
            index.record(&caller(), &scope, Touch::Converted, at(0));
        }
        let rules = [Rule::of(&one), Rule::of(&two), Rule::of(&loner)];
        let duplicates = index.duplicates(&caller(), &rules, at(60));
        assert_eq!(duplicates, vec![one.id, two.id]);
        let other_caller = E164::from_provider("+14155550999").unwrap();
        assert!(index.duplicates(&other_caller, &rules, at(60)).is_empty());
        assert!(
            index
                .mark(&caller(), &Scope::Buyer(one.id))
                .last_converted
                .is_some()
        );
    }

    #[test]
    fn a_caller_keeps_each_buyers_touches_apart_however_many() {
        let company = Id::generate();
        let buyers = [buyer(None, company), buyer(None, company), buyer(None, company)];
        let mut index = DedupeIndex::default();
        for (n, buyer) in buyers.iter().enumerate() {
            index.record(
                &caller(),
                &Scope::Buyer(buyer.id),
                Touch::Converted,
                at(n as i64 * 10),
            );
            // Touched again: still one mark per buyer.
            index.record(
                &caller(),
                &Scope::Buyer(buyer.id),
                Touch::Connected,
                at(n as i64 * 10 + 1),
            );
        }
        assert_eq!(index.len(), 3);
        for (n, buyer) in buyers.iter().enumerate() {
            let mark = index.mark(&caller(), &Scope::Buyer(buyer.id));
            assert_eq!(mark.last_converted, Some(at(n as i64 * 10)));
            assert_eq!(mark.last_connected, Some(at(n as i64 * 10 + 1)));
        }
    }

    #[test]
    fn loaded_marks_merge_with_what_the_index_holds() {
        let (one, two) = (Scope::Buyer(Id::generate()), Scope::Buyer(Id::generate()));
        let other = E164::from_provider("+14155550999").unwrap();
        let mut index = DedupeIndex::default();
        index.record(&caller(), &one, Touch::Connected, at(100));
        let mark = |connected: Option<i64>, converted: Option<i64>| Mark {
            last_connected: connected.map(at),
            last_converted: converted.map(at),
        };
        index.load(&MarkBatch {
            scopes: vec![two.clone(), one.clone()],
            marks: vec![
                // Older than what the index holds: only the conversion is news.
                BatchMark {
                    caller: caller().digits(),
                    scope: 1,
                    mark: mark(Some(50), Some(60)),
                },
                // A conversion alone is also a connection.
                BatchMark {
                    caller: caller().digits(),
                    scope: 0,
                    mark: mark(None, Some(70)),
                },
                BatchMark {
                    caller: other.digits(),
                    scope: 0,
                    mark: mark(Some(80), None),
                },
                // Touched never: nothing to hold.
                BatchMark {
                    caller: other.digits(),
                    scope: 1,
                    mark: mark(None, None),
                },
            ],
        });
        assert_eq!(index.mark(&caller(), &one), mark(Some(100), Some(60)));
        assert_eq!(index.mark(&caller(), &two), mark(Some(70), Some(70)));
        assert_eq!(index.mark(&other, &two), mark(Some(80), None));
        assert_eq!(index.mark(&other, &one), Mark::default());
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn scope_keys_round_trip() {
        let company: CompanyId = Id::generate();
        for scope in [
            Scope::Buyer(Id::generate()),
            Scope::Group {
                company,
                name: "Parent: Co".into(),
            },
        ] {
            assert_eq!(Scope::parse_key(&scope.key()).unwrap(), scope);
        }
        assert!(Scope::parse_key("team:x").is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// A call is a duplicate exactly when the touch the rule counts happened less than
            /// the window before it (a touch from the future counts), whatever order touches
            /// were recorded in. Half the cases ask within a few milliseconds of the window's end.
            #[test]
            fn the_window_is_exact_and_touches_may_come_in_any_order(
                window_seconds in 1u32..=400 * 86_400,
                touches in prop::collection::vec((-10_000_000_000i64..10_000_000_000, any::<bool>()), 0..6),
                anywhere in -10_000_000_000i64..10_000_000_000,
                near_the_end in any::<bool>(),
                by in -3i64..=3,
                after_connected in any::<bool>(),
            ) {
                let after = if after_connected { DuplicateAfter::Connected } else { DuplicateAfter::Converted };
                let rule = rule(window_seconds, after);
                let window_ms = i64::from(window_seconds) * 1000;
                let ms = |offset: i64| Timestamp::UNIX_EPOCH + SignedDuration::from_millis(1_700_000_000_000 + offset);
                let counted = touches
                    .iter()
                    .filter(|(_, converted)| after_connected || *converted)
                    .map(|(offset, _)| *offset)
                    .max();
                let asked = match counted {
                    Some(last) if near_the_end => last + window_ms + by,
                    _ => anywhere,
                };
                let (mut forward, mut backward) = (DedupeIndex::default(), DedupeIndex::default());
                let touch = |converted: bool| if converted { Touch::Converted } else { Touch::Connected };
                for (offset, converted) in &touches {
                    forward.record(&caller(), &rule.scope, touch(*converted), ms(*offset));
                }
                for (offset, converted) in touches.iter().rev() {
                    backward.record(&caller(), &rule.scope, touch(*converted), ms(*offset));
                }
                let expected = counted.is_some_and(|last| asked - last < window_ms);
                let mark = forward.mark(&caller(), &rule.scope);
                prop_assert_eq!(rule.is_duplicate(&mark, ms(asked)), expected);
                prop_assert_eq!(mark, backward.mark(&caller(), &rule.scope));
            }
        }
    }
}
