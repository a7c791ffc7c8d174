//! HTTP: requests in, messages to the core and the store, responses out. No rules live here.

pub mod admin;
pub mod auth;
pub mod error;
mod health;
pub mod json;

use actix_web::{
    HttpResponse, ResponseError,
    dev::ServiceResponse,
    http::header,
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    web,
};

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
            .wrap(ErrorHandlers::new().default_handler(json_errors))
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

/// Errors actix answers by itself (an oversized body, an unroutable method) get the API's JSON
/// form too.
fn json_errors<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
    }
    let status = response.status();
    let (request, _) = response.into_parts();
    let replacement = ApiError::Http(status).error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, replacement).map_into_right_body(),
    ))
}
