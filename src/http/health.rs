//! Probes for process supervisors and load balancers.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::store::Store;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The service can do its work: the database answers.
pub async fn readyz(store: web::Data<dyn Store>) -> HttpResponse {
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
