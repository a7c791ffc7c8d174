//! Integration tests: one binary, so the crate links once.

mod helpers;

mod admin_api;
mod cli;
mod plan_import;
mod replay;
mod store;
mod voice;
