//! Probes for process supervisors and load balancers.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::store::CallStore;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Whether the process is on its way out: ready no more, though still serving.
#[derive(Default)]
pub struct Readiness {
    stopping: AtomicBool,
    /// The last check found the database wanting (logged when this changes, not at every
    /// check: load balancers check every few seconds).
    unavailable: AtomicBool,
}

impl Readiness {
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// The service can take new calls: it is not stopping, and the database answers and takes
/// writes.
pub async fn readyz(store: web::Data<dyn CallStore>, readiness: web::Data<Readiness>) -> HttpResponse {
    if readiness.stopping.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "stopping",
            "reason": "the server is stopping; calls in progress are still served",
        }));
    }
    match store.ping().await {
        Ok(()) => {
            if readiness.unavailable.swap(false, Ordering::Relaxed) {
                tracing::info!("ready again: the database answers and takes writes");
            }
            HttpResponse::Ok().json(json!({ "status": "ready" }))
        }
        Err(error) => {
            if !readiness.unavailable.swap(true, Ordering::Relaxed) {
                let cause = std::error::Error::source(&error).map(ToString::to_string);
                tracing::warn!(%error, cause, "not ready: the database does not answer or does not take writes");
            }
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "reason": "the database does not answer or does not take writes",
            }))
        }
    }
}
