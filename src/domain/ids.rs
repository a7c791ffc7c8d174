//! Typed identifiers: an `Id<Buyer>` cannot be passed where an `Id<Campaign>` is expected.

use std::{cmp::Ordering, fmt, hash, marker::PhantomData, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Identifier of a record of kind `K`. UUIDv7, so ids sort by creation time, which keeps
/// cursor pagination stable without a separate sequence.
pub struct Id<K> {
    uuid: Uuid,
    kind: PhantomData<fn() -> K>,
}

impl<K> Id<K> {
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self {
            uuid,
            kind: PhantomData,
        }
    }

    pub fn as_uuid(&self) -> Uuid {
        self.uuid
    }
}

/// Where the ids a pure step hands out come from: a UUIDv7 drawn by its caller (see
/// [`crate::fresh`]), from which the step derives its ids in order. A step taken again on the same
/// seed hands out the same ids, so a replayed step changes nothing it did not change before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdSeed(Uuid);

impl IdSeed {
    pub fn new(seed: Uuid) -> Self {
        Self(seed)
    }

    /// The seed itself: a key for whatever the step did, unique to it.
    pub fn key(self) -> Uuid {
        self.0
    }

    /// The `n`th id: the seed with its 62 random low bits moved on by `n` (its time, version and
    /// variant kept, so ids still sort by when their seed was drawn).
    pub fn nth(self, n: u64) -> Uuid {
        const RANDOM: u128 = (1 << 62) - 1;
        let bits = self.0.as_u128();
        let low = (bits & RANDOM).wrapping_add(u128::from(n)) & RANDOM;
        Uuid::from_u128((bits & !RANDOM) | low)
    }
}

// Derives would demand `K: Clone` and so on; an id is copyable whatever it identifies.
impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Id<K> {}
impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<K> Eq for Id<K> {}
impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid.cmp(&other.uuid)
    }
}
impl<K> hash::Hash for Id<K> {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.uuid.hash(state)
    }
}
impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}
impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}

impl<K> FromStr for Id<K> {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self::from_uuid)
    }
}

impl<K> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}

impl<'de, K> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a valid id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    struct Thing;

    #[test]
    fn ids_round_trip_through_text_and_sort_by_creation() {
        let first = Id::<Thing>::generate();
        let second = Id::<Thing>::generate();
        assert!(first < second, "UUIDv7 ids must sort by creation");
        let parsed: Id<Thing> = first.to_string().parse().unwrap();
        assert_eq!(parsed, first);
    }

    #[test]
    fn a_malformed_id_is_rejected_with_its_text() {
        let err = serde_json::from_str::<Id<Thing>>("\"buyer-1\"").unwrap_err();
        assert!(err.to_string().contains("`buyer-1` is not a valid id"), "{err}");
    }

    #[test]
    fn a_seed_hands_out_distinct_ids_of_its_time_and_version_the_same_each_time() {
        let seed = IdSeed::new(Uuid::from_u128(0x0193_0000_0000_7000_bfff_ffff_ffff_fffe));
        let ids: Vec<Uuid> = (0..4).map(|n| seed.nth(n)).collect();
        assert_eq!(ids, (0..4).map(|n| seed.nth(n)).collect::<Vec<_>>());
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 4);
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id.as_u128() >> 80, 0x0193_0000_0000);
        }
    }
}
