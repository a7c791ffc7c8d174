//! Where a buyer stands against its caps, and an operator's reset of one.
//!
//! `GET /buyers/{id}/caps` shows live legs against the concurrency cap and the count of each
//! period with when it started and when it restarts; `POST /buyers/{id}/caps/{cap}/reset`
//! (`hourly`, `daily`, `monthly` or `lifetime`) restarts that count now.

use actix::Addr;
use actix_web::{HttpResponse, web};

use super::{admin::parse_id, auth::Admin, error::ApiError};
use crate::{
    calls::{
        CapacityActor,
        capacity_actor::{Reset, View},
    },
    clock::Clock,
    domain::{
        capacity::CapPeriod,
        plan::{Buyer, BuyerId},
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
    let view = capacity
        .send(View {
            buyer,
            at: clock.now(),
        })
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn reset(
    admin: Admin,
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
    PlanTable::<Buyer>::get(store.as_ref(), buyer).await?;
    let at = clock.now();
    // Stored first: a reset the store did not take would be undone by the next restart.
    store.reset_cap(buyer, period, at).await?;
    capacity.do_send(Reset { buyer, period, at });
    tracing::info!(buyer_id = %buyer, cap = %period, "cap reset by an operator");
    show(admin, store, capacity, clock, web::Path::from(id)).await
}
