//! Switchboard: a call controller for pay-per-call networks.

pub mod domain;
pub mod plan;
pub mod store;
