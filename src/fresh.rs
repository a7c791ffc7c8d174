//! Fresh identities and secrets: the one place Switchboard draws them. The pure core
//! ([`crate::domain`]) generates nothing; it is handed what it needs (an [`IdSeed`] for the ids a
//! call's step hands out, a record's id from the store).

use rand::Rng;
use uuid::Uuid;

use crate::domain::{
    access::TokenSecret,
    cluster::NodeId,
    ids::{Id, IdSeed},
    values::RtbKey,
};

/// A new value nobody has: an id, a node's name, a key, a secret.
pub trait Generate {
    fn generate() -> Self;
}

impl<K> Generate for Id<K> {
    /// UUIDv7: ids sort by creation time.
    fn generate() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }
}

impl Generate for IdSeed {
    fn generate() -> Self {
        Self::new(Uuid::now_v7())
    }
}

impl Generate for NodeId {
    /// A new name each start, so that a restarted node is news to itself only as long as it
    /// must be.
    fn generate() -> Self {
        Self::of_random(Uuid::new_v4())
    }
}

impl Generate for RtbKey {
    /// In the UUID form peer products hand out (122 random bits).
    fn generate() -> Self {
        Self::of_random(Uuid::new_v4())
    }
}

impl Generate for TokenSecret {
    /// 256 random bits.
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::of_random(bytes)
    }
}
