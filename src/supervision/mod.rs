//! Watching calls: the live event hub that supervisors' streams subscribe to, and the metrics
//! Prometheus scrapes. Call actors report every change; neither ever holds a call up.

mod hub;
mod metrics;

use std::sync::Arc;

use actix::{Actor, Addr};

use self::hub::Changed;
pub use self::{
    hub::{CloseStreams, EventHub, Subscribe},
    metrics::{Metrics, WebhookOutcome},
};
use crate::{clock::Clock, domain::supervision::CallSummary};

/// What call actors and RTB report to.
#[derive(Clone)]
pub struct Supervision {
    pub hub: Addr<EventHub>,
    pub metrics: Arc<Metrics>,
}

impl Supervision {
    pub fn start(clock: Arc<dyn Clock>) -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            hub: EventHub::new(metrics.clone(), clock).start(),
            metrics,
        }
    }

    /// A call changed from `before` (`None`: first seen by this process) to `after`.
    pub fn call_changed(&self, before: Option<&CallSummary>, after: CallSummary) {
        if before == Some(&after) {
            return;
        }
        self.metrics.observe_call(&after.news_since(before));
        self.hub.do_send(Changed(after));
    }
}
