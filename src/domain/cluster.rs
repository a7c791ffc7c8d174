//! Several nodes on one database: who they are, and the news each tells the others.
//!
//! A node's in-memory indexes (de-dupe marks, buyers' load, RTB reservations) learn its own
//! calls' changes at once. Other nodes learn them from a [`Bulletin`] sent with the change, in
//! its transaction, so that no node hears of a change the database does not hold.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    call::CallSid,
    capacity::{Leg, LoadChange},
    dedupe::{Touched, Unconverted},
    plan::BuyerId,
    rtb::Reservation,
};

/// One running Switchboard process: a new id each start, so that a node restarted is news
/// to itself only as long as it must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The id a random UUID's first 12 hex digits spell (see [`crate::fresh`]).
    pub fn of_random(uuid: uuid::Uuid) -> Self {
        Self(uuid.simple().to_string()[..12].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A node id as stored.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("`{text}` is not a node id"));
        }
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What changed on one node that the others' indexes must learn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum News {
    /// A call connected or converted: de-dupe marks.
    Touched(Vec<Touched>),
    /// Conversions returned: de-dupe marks taken back.
    Unconverted(Vec<Unconverted>),
    /// Legs ended, calls ended, calls counted against caps.
    Load(Vec<LoadChange>),
    /// A leg took a concurrency slot.
    Held { buyer: BuyerId, leg: Leg, at: Timestamp },
    /// An RTB bid reserved a buyer for a caller.
    Reserved(Reservation),
    /// A call claimed its caller's reservation.
    Claimed { reservation: Reservation, call: CallSid },
    /// A node is up, reached at this public URL (callbacks signed for it are genuine).
    Up { public_url: String },
    /// The routing plan changed (sent by the database itself, whoever changed it): every node
    /// reads it again before its next call.
    Plan { revision: i64 },
}

/// News from one node, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bulletin {
    pub from: NodeId,
    pub news: News,
}

/// A node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where the provider reaches it: the base of the callback URLs it writes.
    pub public_url: String,
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub seen_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        call::CallSid,
        dedupe::{Scope, Touch},
        phone::E164,
        plan::CapCounting,
    };
    use crate::fresh::Generate;

    #[test]
    fn news_reads_back_as_sent() {
        let buyer = BuyerId::generate();
        let leg = Leg {
            call: CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            attempt: 2,
        };
        let at = Timestamp::from_millisecond(1_800_000_000_000).unwrap();
        for news in [
            News::Touched(vec![Touched {
                caller: E164::from_provider("+14155550100").unwrap(),
                scope: Scope::Buyer(buyer),
                touch: Touch::Converted,
                at,
            }]),
            News::Load(vec![
                LoadChange::Released(leg.clone()),
                LoadChange::Counted {
                    buyer,
                    leg: leg.clone(),
                    counting: CapCounting::Converted,
                    at,
                },
            ]),
            News::Held { buyer, leg, at },
        ] {
            let bulletin = Bulletin {
                from: NodeId::generate(),
                news,
            };
            let text = serde_json::to_string(&bulletin).unwrap();
            assert_eq!(serde_json::from_str::<Bulletin>(&text).unwrap(), bulletin);
        }
    }

    #[test]
    fn plan_news_reads_as_the_database_writes_it() {
        // As the `plan_changed` trigger builds it (migrations/postgres/…_money_flows.sql).
        let sent = r#"{"from" : "database", "news" : {"plan" : {"revision" : 42}}}"#;
        let bulletin: Bulletin = serde_json::from_str(sent).unwrap();
        assert_eq!(bulletin.news, News::Plan { revision: 42 });
        assert_eq!(bulletin.from.as_str(), "database");
    }

    #[test]
    fn node_ids_are_short_and_plain() {
        let id = NodeId::generate();
        assert_eq!(id.as_str().len(), 12);
        assert_eq!(NodeId::parse(id.as_str()), Ok(id));
        assert!(NodeId::parse("a b").is_err());
        assert!(NodeId::parse("").is_err());
    }
}
