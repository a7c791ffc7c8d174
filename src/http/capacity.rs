//! Where a buyer stands against its caps, and an operator's reset of one.
//!
//! `GET /buyers/{id}/caps` shows live legs against the concurrency cap and the count of each
//! period with when it started and when it restarts; `POST /buyers/{id}/caps/{cap}/reset`
//! (`hourly`, `daily`, `monthly` or `lifetime`) restarts that count now.

use actix::Addr;
use actix_web::{HttpResponse, web};
use jiff::Timestamp;

use super::{admin::parse_id, auth::Admin, error::ApiError};
use crate::{
    calls::{
        CapacityActor,
        capacity_actor::{Reset, View},
    },
    clock::Clock,
    domain::{
        capacity::CapPeriod,
        plan::{Buyer, BuyerId, Record},
    },
    store::{PlanTable, Store},
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/buyers/{id}/caps", web::get().to(show))
        .route("/buyers/{id}/caps/{cap}/reset", web::post().to(reset));
}

type Capacity = web::Data<Addr<CapacityActor>>;

async fn show(
    _: Admin,
    store: web::Data<dyn Store>,
    capacity: Capacity,
    clock: web::Data<dyn Clock>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let buyer = PlanTable::<Buyer>::get(store.as_ref(), parse_id(&id)?).await?;
    view(&capacity, buyer, clock.now()).await
}

/// The buyer's standing as the capacity index sees it at `at`.
async fn view(capacity: &Capacity, buyer: Record<Buyer>, at: Timestamp) -> Result<HttpResponse, ApiError> {
    let view = capacity
        .send(View { buyer, at })
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn reset(
    _: Admin,
    store: web::Data<dyn Store>,
    capacity: Capacity,
    clock: web::Data<dyn Clock>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, cap) = path.into_inner();
    let buyer: BuyerId = parse_id(&id)?;
    let period = CapPeriod::parse(&cap).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no cap called `{cap}` can be reset; the caps counted over time are hourly, daily, monthly and lifetime"
        ))
    })?;
    let record = PlanTable::<Buyer>::get(store.as_ref(), buyer).await?;
    let at = clock.now();
    // Stored first: a reset the store did not take would be undone by the next restart.
    store.reset_cap(buyer, period, at).await?;
    // Queued before the view, so the view shows the reset.
    capacity.do_send(Reset { buyer, period, at });
    tracing::info!(buyer_id = %buyer, cap = %period, "cap reset by an operator");
    view(&capacity, record, at).await
}
