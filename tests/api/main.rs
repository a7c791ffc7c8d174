//! Integration tests: one binary, so the crate links once.

mod helpers;

mod admin_api;
mod buyer_experience;
mod call_saves;
mod cli;
mod cluster;
mod conversions;
mod dashboard;
mod faults;
mod fidelity;
mod money_flows;
mod overload;
mod plan_changes;
mod plan_import;
mod postback_endpoints;
mod provider;
mod replay;
mod routing_policy;
mod rtb;
mod security;
mod simulate;
mod sqlite_file;
mod store;
mod supervision;
mod tenants;
mod tokens;
mod voice;
