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
}

impl Readiness {
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// The service can take new calls: it is not stopping, and the database answers.
pub async fn readyz(store: web::Data<dyn CallStore>, readiness: web::Data<Readiness>) -> HttpResponse {
    if readiness.stopping.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "stopping",
            "reason": "the server is stopping; calls in progress are still served",
        }));
    }
    match store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "reason": "the database does not answer",
            }))
        }
    }
}
