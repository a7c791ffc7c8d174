//! What a call's callback URLs carry besides the call and the attempt: the buyers dialed so far
//! and the campaigns the call went through, as Switchboard knew them when it wrote the URL. The
//! provider signs the URL with the request, so a turn that cannot read the call's stored record
//! can trust what it says: whom not to dial again, and where the call has been.

use std::fmt::Write as _;

use uuid::Uuid;

use super::CallRecord;
use crate::domain::plan::{BuyerId, CampaignId};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trail {
    /// In the order they were dialed. In an attempt's URLs the last is that attempt's buyer.
    pub tried: Vec<BuyerId>,
    /// In order; the last is the campaign the call was in when the URL was written.
    pub visited: Vec<CampaignId>,
}

/// The most ids a trail carries of each kind: a call dials far fewer buyers (and redirects at
/// most a few times); anything longer is not a trail Switchboard wrote.
const MOST: usize = 64;

impl Trail {
    pub fn of(record: &CallRecord) -> Self {
        let dialed = record.attempts.iter().map(|a| a.buyer_id);
        Self {
            tried: record.dialed_before.iter().copied().chain(dialed).collect(),
            visited: record.visited.clone(),
        }
    }

    /// As a URL's query: `t=` the buyers, `v=` the campaigns, each id in its 32-digit form and
    /// separated by dots (nothing in it needs escaping).
    pub fn query(&self) -> String {
        let mut query = String::with_capacity(6 + 33 * (self.tried.len() + self.visited.len()));
        let mut list = |name: &str, ids: &mut dyn Iterator<Item = Uuid>| {
            query.push_str(name);
            for (n, id) in ids.enumerate() {
                if n > 0 {
                    query.push('.');
                }
                let _ = write!(query, "{}", id.simple());
            }
        };
        list("t=", &mut self.tried.iter().map(|id| id.as_uuid()));
        list("&v=", &mut self.visited.iter().map(|id| id.as_uuid()));
        query
    }

    /// Read back from a URL's query: `None` when it carries none (a URL written before trails,
    /// or not one of Switchboard's) or one that does not read.
    pub fn from_query(query: &str) -> Option<Self> {
        let (mut tried, mut visited) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("t", ids)) => tried = Some(ids_of(ids)?),
                Some(("v", ids)) => visited = Some(ids_of(ids)?),
                _ => {}
            }
        }
        Some(Self {
            tried: tried?.into_iter().map(BuyerId::from_uuid).collect(),
            visited: visited?.into_iter().map(CampaignId::from_uuid).collect(),
        })
    }

    /// The buyer of the attempt whose URL carried this trail.
    pub fn last_dialed(&self) -> Option<BuyerId> {
        self.tried.last().copied()
    }
}

fn ids_of(list: &str) -> Option<Vec<Uuid>> {
    if list.is_empty() {
        return Some(Vec::new());
    }
    let ids: Vec<Uuid> = list
        .split('.')
        .map(|id| Uuid::try_parse(id).ok())
        .collect::<Option<_>>()?;
    (ids.len() <= MOST).then_some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fresh::Generate;

    #[test]
    fn a_trail_reads_back_from_the_query_it_writes() {
        let trail = Trail {
            tried: vec![BuyerId::generate(), BuyerId::generate()],
            visited: vec![CampaignId::generate()],
        };
        let query = trail.query();
        assert!(
            query
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=&.".contains(&b)),
            "{query}"
        );
        assert_eq!(Trail::from_query(&query), Some(trail.clone()));
        // Among other parameters, in any order.
        let (t, v) = query.split_once('&').unwrap();
        assert_eq!(Trail::from_query(&format!("x=1&{v}&{t}")), Some(trail));
        let empty = Trail::default();
        assert_eq!(Trail::from_query(&empty.query()), Some(empty));
    }

    #[test]
    fn a_query_without_a_readable_trail_has_none() {
        for query in [
            "",
            "x=1",
            "t=",
            "v=",
            "t=zz&v=",
            "t=&v=12",
            &format!("t={}&v=", "0".repeat(31)),
        ] {
            assert_eq!(Trail::from_query(query), None, "{query}");
        }
        let too_long = vec![Uuid::nil().simple().to_string(); MOST + 1].join(".");
        assert_eq!(Trail::from_query(&format!("t={too_long}&v=")), None);
    }
}
