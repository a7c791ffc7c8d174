//! Where buyers stand against their caps, and an operator's reset of one.
//!
//! `GET /load?company_id=` shows every buyer's live calls against its concurrency cap and its
//! cap counters, busiest first.
//! `GET /buyers/{id}/caps` shows live legs against the concurrency cap and the count of each
//! period with when it started and when it restarts; `POST /buyers/{id}/caps/{cap}/reset`
//! (`hourly`, `daily`, `monthly` or `lifetime`) restarts that count now.

use actix_web::{HttpResponse, http::Method, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiRoute,
    admin::parse_id,
    audit::{Auditor, Change},
    auth::Caller,
    error::ApiError,
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    decide::{
        self, PlanCache,
        capacity::{Reset, View, Views},
    },
    domain::{
        access::Action,
        capacity::CapPeriod,
        capacity::CapacityView,
        plan::{Buyer, BuyerId, CompanyId, Record},
    },
    store::{CapacityStore, PlanStore},
};

pub fn routes() -> [ApiRoute; 3] {
    [
        ApiRoute::new(Method::GET, "/load", |r| r.to(load)),
        ApiRoute::new(Method::GET, "/buyers/{id}/caps", |r| r.to(show)),
        ApiRoute::new(Method::POST, "/buyers/{id}/caps/{cap}/reset", |r| r.to(reset)),
    ]
}

type Capacity = web::Data<decide::Capacity>;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LoadParams {
    /// Only this company's buyers.
    company_id: Option<CompanyId>,
}

/// A buyer's live calls against its caps.
#[derive(Serialize, ToSchema)]
struct BuyerLoad {
    buyer_id: BuyerId,
    #[schema(required = true)]
    company_id: Option<CompanyId>,
    name: String,
    paused: bool,
    #[serde(flatten)]
    caps: CapacityView,
}

#[derive(Serialize, ToSchema)]
struct Load {
    /// Busiest first.
    data: Vec<BuyerLoad>,
}

/// Every buyer's live calls against its caps
///
/// Every buyer of the routing plan as live calls see it.
#[utoipa::path(
    get,
    path = "/load",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(LoadParams),
    responses(
        (status = 200, description = "Busiest first.", body = inline(Load)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
    ),
)]
async fn load(
    caller: Caller,
    plan: web::Data<PlanCache>,
    capacity: Capacity,
    clock: web::Data<dyn Clock>,
    params: web::Query<LoadParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadOperations)?;
    let company_id = caller.company_to_list(params.company_id)?;
    let plan = plan.current().await;
    let buyers: Vec<Record<Buyer>> = (plan.buyers())
        .filter(|b| company_id.is_none_or(|company| b.company_id == Some(company)))
        .filter(|b| caller.reaches(&b.owner()))
        .cloned()
        .collect();
    let views = capacity
        .ask(Views {
            buyers: buyers.clone(),
            at: clock.now(),
        })
        .await
        .map_err(|_| ApiError::Internal)?;
    let mut data: Vec<BuyerLoad> = (buyers.into_iter().zip(views))
        .map(|(buyer, caps)| BuyerLoad {
            buyer_id: buyer.id,
            company_id: buyer.company_id,
            name: buyer.spec.name.to_string(),
            paused: buyer.spec.paused,
            caps,
        })
        .collect();
    data.sort_by(|a, b| {
        (b.caps.concurrency.live.cmp(&a.caps.concurrency.live)).then_with(|| a.name.cmp(&b.name))
    });
    Ok(HttpResponse::Ok().json(Load { data }))
}

/// A buyer's standing against its caps
#[utoipa::path(
    get,
    path = "/buyers/{id}/caps",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(("id" = Uuid, Path, description = "The buyer's id.")),
    responses(
        (status = 200, description = "The standing.", body = CapacityView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn show(
    caller: Caller,
    store: web::Data<dyn PlanStore>,
    capacity: Capacity,
    clock: web::Data<dyn Clock>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let buyer = reachable(&caller, Action::ReadOperations, &store, &id).await?;
    view(&capacity, buyer, clock.now()).await
}

/// The buyer, if the caller may act on it (else 404, as for one that does not exist).
async fn reachable(
    caller: &Caller,
    action: Action,
    store: &web::Data<dyn PlanStore>,
    id: &str,
) -> Result<Record<Buyer>, ApiError> {
    super::admin::reachable_named(caller, action, store.as_ref(), id).await
}

/// The buyer's standing as the capacity index sees it at `at`.
async fn view(capacity: &Capacity, buyer: Record<Buyer>, at: Timestamp) -> Result<HttpResponse, ApiError> {
    let view = capacity
        .ask(View { buyer, at })
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Restart a cap's count now
#[utoipa::path(
    post,
    path = "/buyers/{id}/caps/{cap}/reset",
    tag = "Supervision",
    security(("admin" = [])),
    params(
        ("id" = Uuid, Path, description = "The buyer's id."),
        ("cap" = CapPeriod, Path, description = "The cap."),
    ),
    responses(
        (status = 200, description = "The standing after the reset.", body = CapacityView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn reset(
    auditor: Auditor,
    store: web::Data<dyn PlanStore>,
    caps: web::Data<dyn CapacityStore>,
    capacity: Capacity,
    clock: web::Data<dyn Clock>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    auditor.caller().require(Action::Change)?;
    let (id, cap) = path.into_inner();
    let buyer: BuyerId = parse_id(&id)?;
    let period = CapPeriod::parse(&cap).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no cap called `{cap}` can be reset; the caps counted over time are hourly, daily, monthly and lifetime"
        ))
    })?;
    let record = reachable(auditor.caller(), Action::Change, &store, &id).await?;
    let at = clock.now();
    // Stored first: a reset the store did not take would be undone by the next restart.
    caps.reset_cap(buyer, period, at).await?;
    // Queued before the view, so the view shows the reset.
    capacity.tell(Reset { buyer, period, at });
    tracing::info!(buyer_id = %buyer, cap = %period, "cap reset by an operator");
    let change = Change::new(record.company_id, "cap.reset", buyer);
    auditor
        .record(change.after(serde_json::json!({ "cap": period.to_string() })))
        .await;
    view(&capacity, record, at).await
}
