//! HTTP: requests in, messages to the core and the store, responses out. No rules live here.

pub mod admin;
pub mod auth;
pub mod error;
mod health;
pub mod json;

use actix_web::{HttpResponse, web};

use self::error::ApiError;
use crate::domain::plan::{Buyer, Campaign, Company, Publisher};

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|error, _| ApiError::invalid("query", error.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .service(
        web::scope("/api/v1")
            .configure(admin::rtb_key_routes)
            .service(admin::resource::<Company>("/companies"))
            .service(admin::resource::<Buyer>("/buyers"))
            .service(admin::resource::<Campaign>("/campaigns"))
            .service(admin::resource::<Publisher>("/publishers"))
            .default_service(web::to(api_not_found)),
    );
}

/// API clients get JSON errors, including for a path or method that does not exist.
async fn api_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such API endpoint".into()))
}
