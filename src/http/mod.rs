//! HTTP: requests in, messages to the core and the store, responses out. No rules live here.

pub mod admin;
pub(crate) mod audit;
pub mod auth;
mod blocked;
mod calls;
mod capacity;
mod conversions;
mod csv_export;
mod dashboard;
pub mod error;
mod events;
pub mod health;
pub mod json;
mod metrics;
mod openapi;
mod postbacks;
pub mod rate_limit;
pub mod rtb;
mod stats;
mod tokens;
pub mod voice;

use actix_web::{
    HttpResponse, ResponseError, Route,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::{self, ErrorHandlerResponse, ErrorHandlers, Next, NormalizePath},
    web,
};

use self::{admin::PlanKinds, error::ApiError};
use crate::{
    decide::PlanCache,
    domain::plan::PlanEntity,
    store::{PlanStore, PlanTable},
};

/// Live calls route on an in-memory plan: after a successful change through the API, before
/// its answer leaves, the plan is marked changed, so that every call from then on routes on a
/// plan read after the change (see [`PlanCache::invalidate`]).
async fn invalidate_plan_after_writes(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let writes = request.method() != Method::GET;
    let plan = request.app_data::<web::Data<PlanCache>>().cloned();
    let response = next.call(request).await?;
    if writes
        && response.status().is_success()
        && let Some(plan) = plan
    {
        plan.invalidate();
    }
    Ok(response)
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|error, _| ApiError::invalid("query", error.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(metrics::metrics))
    .route("/dashboard", web::get().to(dashboard::page))
    .route("/dashboard.js", web::get().to(dashboard::script))
    .configure(voice::routes)
    // Publishers' pings: errors are JSON, as the API's are.
    .service(rtb::ping_resource().wrap(ErrorHandlers::new().default_handler(json_errors)))
    .service(
        web::scope("/api/v1")
            .wrap(middleware::from_fn(invalidate_plan_after_writes))
            .wrap(ErrorHandlers::new().default_handler(json_errors))
            // `/api/v1/buyers/` is `/api/v1/buyers`. (Not for webhooks: their signature covers
            // the exact URL requested.)
            .wrap(NormalizePath::trim())
            .configure(|cfg| {
                for route in api_routes() {
                    cfg.route(&route.path, (route.handler)(web::method(route.method)));
                }
            })
            .default_service(web::to(api_not_found)),
    );
}

/// One route of `/api/v1`.
#[derive(Clone)]
pub struct ApiRoute {
    pub method: Method,
    /// Under `/api/v1`, as the OpenAPI document writes it (`/calls/{sid}`).
    pub path: String,
    handler: fn(Route) -> Route,
}

impl ApiRoute {
    fn new(method: Method, path: &str, handler: fn(Route) -> Route) -> Self {
        Self {
            method,
            path: path.to_owned(),
            handler,
        }
    }
}

/// Every route of `/api/v1`, in the order they are matched. The one list both the server and
/// the check of the OpenAPI document read.
pub fn api_routes() -> Vec<ApiRoute> {
    let mut plan = PlanRoutes(Vec::new());
    admin::each_plan_kind(&mut plan);
    [
        admin::rtb_key_routes().as_slice(),
        &capacity::routes(),
        &calls::routes(),
        &conversions::routes(),
        &stats::routes(),
        &events::routes(),
        &openapi::routes(),
        &rtb::log_routes(),
        &tokens::routes(),
        &audit::routes(),
        &blocked::routes(),
        &postbacks::routes(),
        &plan.0,
    ]
    .concat()
}

/// The routes of every kind of plan entity.
struct PlanRoutes(Vec<ApiRoute>);

impl PlanKinds for PlanRoutes {
    fn kind<T: PlanEntity>(&mut self, path: &str)
    where
        dyn PlanStore: PlanTable<T>,
    {
        self.0.extend(admin::resource::<T>(path));
    }
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
