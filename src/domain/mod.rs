//! The pure core: domain types and rules, no I/O.

pub mod destination;
pub mod ids;
pub mod money;
pub mod phone;
pub mod plan;
pub mod schedule;
pub mod values;
