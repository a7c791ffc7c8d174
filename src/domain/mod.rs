//! The pure core: domain types and rules, no I/O.

pub mod access;
pub mod block;
pub mod call;
pub mod capacity;
pub mod cluster;
pub mod dedupe;
pub mod destination;
pub mod dialing;
pub mod form;
pub mod geo;
pub mod ids;
pub mod money;
pub mod payout;
pub mod phone;
pub mod plan;
pub mod postback;
pub mod routing;
pub mod rtb;
pub mod schedule;
pub mod schema;
pub mod series;
pub mod signature;
pub mod supervision;
pub mod timeline;
pub mod twiml;
pub mod values;
