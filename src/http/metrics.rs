//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format, for a supervisor or admin
//! token (Prometheus sends it with `authorization: { credentials: … }`).

use actix_web::{HttpResponse, web};

use super::{auth::Reader, error::ApiError};
use crate::supervision::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(_: Reader, metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics.encode().map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().content_type(OPENMETRICS).body(text))
}
