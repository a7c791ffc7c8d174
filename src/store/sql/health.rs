//! Whether the database takes writes, as the writers that owe it something see it: the calls'
//! writer, the RTB log and the postback outbox. Readiness reads it; a plain `SELECT 1`
//! succeeds on a full disk, where every write fails.
//!
//! A write that fails because of the database (unavailable, a full disk, an I/O error) makes
//! the store failing; a call's commit, or a probe write, makes it healthy again. (Other
//! writes may change no row at all, and so succeed on a full disk too: they only ever report
//! failures.) The change is logged once each way, not once per retry.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;

use super::SqlStore;
use crate::store::StoreError;

/// While writes fail, readiness tries a write of its own at most this often, so that it
/// recovers without traffic (a load balancer that took the node out sends none), and a burst
/// of probes costs the database nothing.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest a probe write may take: well within a load balancer's check timeout.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when writes fail, and why (the latest reason).
    failing: Option<(Instant, String)>,
    last_probe: Option<Instant>,
}

impl WriteHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it left a plain value behind: still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A write by `writer` failed. Only the database's own failures count: a change refused
    /// for what it is (a conflict, invalid data) says nothing about the database.
    pub(super) fn failed(&self, writer: &str, error: &StoreError) {
        let StoreError::Unavailable(cause) = error else {
            return;
        };
        let reason = cause.to_string();
        let mut state = self.state();
        if state.failing.is_none() {
            tracing::error!(
                writer,
                %reason,
                "the database does not take writes: /readyz fails until it does; what was not saved is tried again"
            );
        }
        let since = state
            .failing
            .as_ref()
            .map_or_else(Instant::now, |(since, _)| *since);
        state.failing = Some((since, reason));
    }

    /// A write that changed the database committed.
    pub(super) fn wrote(&self) {
        let mut state = self.state();
        if let Some((since, _)) = state.failing.take() {
            tracing::info!(
                failed_for_seconds = since.elapsed().as_secs(),
                "the database takes writes again: /readyz is ready"
            );
        }
    }

    /// Why writes fail, if they do.
    fn failing(&self) -> Option<String> {
        self.state().failing.as_ref().map(|(_, reason)| reason.clone())
    }

    /// Whether a probe may be made now (and, if so, that one is).
    fn probe_due(&self) -> bool {
        let mut state = self.state();
        let due = state.last_probe.is_none_or(|at| at.elapsed() >= PROBE_EVERY);
        if due {
            state.last_probe = Some(Instant::now());
        }
        due
    }
}

impl SqlStore {
    /// `written`, the outcome of a write by `writer`, its failure noted.
    pub(super) fn noted<T>(&self, writer: &str, written: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &written {
            self.health.failed(writer, error);
        }
        written
    }

    /// Whether the database answers and takes writes. While writes fail, a small write of its
    /// own is tried (see [`PROBE_EVERY`]); otherwise a read suffices.
    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        let Some(reason) = self.health.failing() else {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            return Ok(());
        };
        let still_failing = || {
            let reason = format!("writes fail: {reason}");
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(reason)))
        };
        if !self.health.probe_due() {
            return Err(still_failing());
        }
        match tokio::time::timeout(PROBE_LIMIT, self.probe_write()).await {
            Ok(Ok(())) => {
                self.health.wrote();
                Ok(())
            }
            Ok(Err(error)) => {
                self.health.failed("a readiness probe", &error);
                Err(error)
            }
            Err(_) => Err(still_failing()),
        }
    }

    /// A write that always changes a row, so that it needs room on disk.
    async fn probe_write(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO write_probe (id, probed_at_ms) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET probed_at_ms = excluded.probed_at_ms",
        )
        .bind(Timestamp::now().as_millisecond())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
