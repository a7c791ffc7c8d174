//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format, for a supervisor or admin
//! token (Prometheus sends it with `authorization: { credentials: … }`).

use actix_web::{HttpResponse, web};

use super::{auth::Caller, error::ApiError};
use crate::{domain::access::Action, supervision::Metrics};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The install's numbers: for install-wide staff tokens only (they count every company's calls).
pub async fn metrics(caller: Caller, metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadInstall)?;
    let text = metrics.encode().map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().content_type(OPENMETRICS).body(text))
}
