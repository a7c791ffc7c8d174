//! Switchboard: a call controller for pay-per-call networks.
//!
//! - [`domain`]: the pure core (types and rules, no I/O, no clock, nothing random).
//! - [`fresh`]: new ids and secrets, drawn here only.
//! - [`store`]: persistence behind a small trait, on SQLite or PostgreSQL.
//! - [`http`]: webhooks and the API, translating requests to calls into the core.
//! - [`calls`], [`rtb`]: live calls and RTB pings, as actors over the core.
//! - [`postbacks`]: delivering the webhooks buyers and publishers are sent.
//! - [`supervision`]: live events and metrics for supervisors.
//! - [`cluster`]: several nodes on one PostgreSQL.
//! - [`plan`]: plan files, the routing plan as TOML.
//! - [`config`], [`telemetry`], [`startup`], [`cli`]: running the service.

pub mod calls;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conversions;
pub mod decide;
pub mod domain;
pub mod fresh;
pub mod http;
pub mod plan;
pub mod postbacks;
pub mod rtb;
pub mod simulate;
pub mod startup;
pub mod store;
pub mod supervision;
pub mod telemetry;
