//! Prometheus metrics, in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::domain::supervision::CallNews;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    webhook: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PostbackLabels {
    /// `delivered`, `retrying` or `failed`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboxLabels {
    /// `pending` or `failed`.
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NewsLabels {
    /// What the news is of: `touched`, `load`, `held`, `reserved`, `claimed`, `up`, `plan`, or
    /// `missed` (the connection that hears it was lost and is back).
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PingLabels {
    status: &'static str,
    reason: String,
}

/// How a webhook was answered, for `switchboard_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Answered with TwiML or an acknowledgement of this kind (`dial`, `redirect`, `end`…).
    Answered(&'static str),
    /// Refused: a missing or wrong signature.
    Forbidden,
    /// Refused: the request could not be read.
    BadRequest,
    /// Failed inside Switchboard.
    Failed,
}

impl WebhookOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Answered(kind) => kind,
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
            Self::Failed => "failed",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    decisions: Family<DecisionLabels, Histogram>,
    live_calls: Gauge,
    calls_started: Counter,
    calls_ended: Family<OutcomeLabels, Counter>,
    conversions: Counter,
    duplicates_avoided: Counter,
    drops: Family<DropLabels, Counter>,
    rtb_pings: Family<PingLabels, Counter>,
    postbacks: Family<PostbackLabels, Counter>,
    outbox: Family<OutboxLabels, Gauge>,
    plan_revision: Gauge,
    news_heard: Family<NewsLabels, Counter>,
}

/// From half a millisecond to about four seconds: decisions are budgeted well under a second,
/// and the provider gives up at fifteen.
fn decision_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let metrics = Self {
            webhooks: Family::default(),
            decisions: Family::new_with_constructor(decision_histogram),
            live_calls: Gauge::default(),
            calls_started: Counter::default(),
            calls_ended: Family::default(),
            conversions: Counter::default(),
            duplicates_avoided: Counter::default(),
            drops: Family::default(),
            rtb_pings: Family::default(),
            postbacks: Family::default(),
            outbox: Family::default(),
            plan_revision: Gauge::default(),
            news_heard: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks",
            "Voice webhooks received, by webhook and by how they were answered",
            metrics.webhooks.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time from a routing webhook's arrival to its answer",
            metrics.decisions.clone(),
        );
        registry.register(
            "live_calls",
            "Calls in progress that this process handles",
            metrics.live_calls.clone(),
        );
        registry.register(
            "calls_started",
            "Calls that arrived",
            metrics.calls_started.clone(),
        );
        registry.register(
            "calls_ended",
            "Calls that ended, by outcome",
            metrics.calls_ended.clone(),
        );
        registry.register("conversions", "Calls that converted", metrics.conversions.clone());
        registry.register(
            "duplicates_avoided",
            "Buyers skipped because the call would have been a duplicate for them",
            metrics.duplicates_avoided.clone(),
        );
        registry.register(
            "calls_dropped",
            "Calls ended because nobody was left to take them, by reason",
            metrics.drops.clone(),
        );
        registry.register(
            "rtb_pings",
            "RTB pings answered, by status and reason",
            metrics.rtb_pings.clone(),
        );
        registry.register(
            "postback_tries",
            "Postback deliveries tried, by result",
            metrics.postbacks.clone(),
        );
        registry.register(
            "postback_outbox",
            "Postbacks in the outbox, every node's, by status: pending (queued or retrying) and failed (out of tries)",
            metrics.outbox.clone(),
        );
        registry.register(
            "plan_revision",
            "The revision of the routing plan this process routes on (the store's plan_revision when it was read)",
            metrics.plan_revision.clone(),
        );
        registry.register(
            "news_heard",
            "News of other nodes' changes this node heard and handed to its indexes, by kind (several nodes on one PostgreSQL)",
            metrics.news_heard.clone(),
        );
        Self { registry, ..metrics }
    }

    pub fn webhook(&self, webhook: &'static str, outcome: WebhookOutcome) {
        let labels = WebhookLabels {
            webhook,
            outcome: outcome.label(),
        };
        self.webhooks.get_or_create(&labels).inc();
    }

    pub fn decision(&self, webhook: &'static str, took: Duration) {
        (self.decisions.get_or_create(&DecisionLabels { webhook })).observe(took.as_secs_f64());
    }

    pub(super) fn set_live_calls(&self, live: usize) {
        self.live_calls.set(i64::try_from(live).unwrap_or(i64::MAX));
    }

    pub fn observe_call(&self, news: &CallNews) {
        if news.started {
            self.calls_started.inc();
        }
        if news.converted {
            self.conversions.inc();
        }
        self.duplicates_avoided.inc_by(u64::from(news.duplicates_avoided));
        if let Some((outcome, reason)) = news.ended {
            let outcome = outcome.as_ref().map_or_else(|| "unknown".to_owned(), text_of);
            self.calls_ended.get_or_create(&OutcomeLabels { outcome }).inc();
            if let Some(reason) = reason {
                let reason = text_of(&reason);
                self.drops.get_or_create(&DropLabels { reason }).inc();
            }
        }
    }

    /// A ping answered `status` (`reserved`, `no-target` or `rejected`), with the no-target
    /// reason or the rejection's code.
    pub fn rtb_ping(&self, status: &'static str, reason: &str) {
        let labels = PingLabels {
            status,
            reason: reason.to_owned(),
        };
        self.rtb_pings.get_or_create(&labels).inc();
    }

    /// A postback delivery was tried: `delivered`, `retrying` or `failed` (for good).
    pub fn postback_try(&self, result: &'static str) {
        self.postbacks.get_or_create(&PostbackLabels { result }).inc();
    }

    /// The outbox as last counted.
    pub fn outbox(&self, pending: u64, failed: u64) {
        let set = |status, n: u64| {
            self.outbox
                .get_or_create(&OutboxLabels { status })
                .set(i64::try_from(n).unwrap_or(i64::MAX))
        };
        set("pending", pending);
        set("failed", failed);
    }

    /// A node's news heard (see [`crate::cluster`]), of `kind`.
    pub fn news_heard(&self, kind: &'static str) {
        self.news_heard.get_or_create(&NewsLabels { kind }).inc();
    }

    /// Where the routing plan in memory shows its revision.
    pub fn plan_revision(&self) -> Gauge {
        self.plan_revision.clone()
    }

    /// Every metric, as Prometheus scrapes it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The text an enum serializes to, which is what the API and the store show for it.
fn text_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "unknown".to_owned(),
    }
}
