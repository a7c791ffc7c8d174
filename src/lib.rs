//! Switchboard: a call controller for pay-per-call networks.

pub mod domain;
