//! Statistics over a time range: `GET /stats/campaigns`, `GET /stats/buyers` and
//! `GET /stats/publishers`, each with `from` and `to` (RFC 3339; by default the last 24 hours).
//! Calls count by when they started.
//!
//! `GET /stats/timeline?bucket=minute|hour&from=&to=` is the same calls over time, for charts:
//! per campaign, one value per whole UTC minute (by default the last hour) or hour (by default
//! the last day).

use actix_web::{HttpResponse, http::Method, web};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiRoute,
    auth::Caller,
    error::ApiError,
    openapi::{Invalid, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    decide::PlanCache,
    domain::{
        access::{Action, Lens, Owner},
        portal,
        series::{Bucket, CampaignSeries, Window},
        supervision::{BuyerStats, CampaignStats, PublisherStats},
    },
    store::{SupervisionStore, Within},
};

pub fn routes() -> [ApiRoute; 4] {
    [
        ApiRoute::new(Method::GET, "/stats/timeline", |r| r.to(timeline)),
        ApiRoute::new(Method::GET, "/stats/campaigns", |r| r.to(campaigns)),
        ApiRoute::new(Method::GET, "/stats/buyers", |r| r.to(buyers)),
        ApiRoute::new(Method::GET, "/stats/publishers", |r| r.to(publishers)),
    ]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Range {
    /// Calls that started at or after (RFC 3339); default: 24 hours before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Calls that started before (RFC 3339); default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
}

/// What the statistics cover by default: the last 24 hours.
const DAY: SignedDuration = SignedDuration::from_hours(24);

impl Range {
    /// `to` by default now, `from` by default `span` before it.
    fn resolve(&self, now: Timestamp, span: SignedDuration) -> Result<(Timestamp, Timestamp), ApiError> {
        let to = self.to.unwrap_or(now);
        let from = match self.from {
            Some(from) => from,
            None => to
                .checked_sub(span)
                .map_err(|_| ApiError::invalid("to", "is too early"))?,
        };
        if from >= to {
            return Err(ApiError::invalid("from", "must be before `to`"));
        }
        Ok((from, to))
    }
}

/// A buyer's portal: what it pays, not what publishers are paid.
const BUYER_STATS: &[&str] = &[
    "buyer_id",
    "dialed",
    "live",
    "connected",
    "converted",
    "average_time_to_answer_ms",
    "revenue",
];

/// Rows as the caller may see them: those its scope reaches (owned as `owner` says), through
/// its lens (`allowed`: the fields a partner's lens keeps).
fn seen<T: Serialize>(
    caller: &Caller,
    rows: Vec<T>,
    owner: impl Fn(&T) -> Owner,
    allowed: Option<&[&str]>,
) -> Vec<serde_json::Value> {
    (rows.into_iter())
        .filter(|row| caller.reaches(&owner(row)))
        .filter_map(|row| serde_json::to_value(row).ok())
        .map(|row| match allowed {
            Some(fields) => portal::only(row, fields),
            None => row,
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
struct Stats<T> {
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    #[schema(value_type = Vec<T>)]
    data: Vec<serde_json::Value>,
    #[serde(skip)]
    #[schema(ignore)]
    rows: std::marker::PhantomData<T>,
}

impl<T> Stats<T> {
    fn new(from: Timestamp, to: Timestamp, data: Vec<serde_json::Value>) -> Self {
        Self {
            from,
            to,
            data,
            rows: std::marker::PhantomData,
        }
    }
}

/// Statistics per campaign
#[utoipa::path(
    get,
    path = "/stats/campaigns",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(Range),
    responses(
        (status = 200, description = "Only campaigns with calls in the range are listed.", body = Stats<CampaignStats>),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn campaigns(
    caller: Caller,
    store: web::Data<dyn SupervisionStore>,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    // Every publisher's and buyer's calls of a campaign together: the network's staff only.
    caller
        .require(Action::ReadOperations)?
        .require(Action::ReadMoney)?;
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let rows = store.campaign_stats(from, to).await?;
    let plan = plan.current().await;
    let owner =
        |row: &CampaignStats| Owner::company(plan.campaign(row.campaign_id).and_then(|c| c.company_id));
    Ok(HttpResponse::Ok().json(Stats::<CampaignStats>::new(
        from,
        to,
        seen(&caller, rows, owner, None),
    )))
}

/// Statistics per buyer
#[utoipa::path(
    get,
    path = "/stats/buyers",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(Range),
    responses(
        (status = 200, description = "Only buyers with calls in the range are listed.", body = Stats<BuyerStats>),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn buyers(
    caller: Caller,
    store: web::Data<dyn SupervisionStore>,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let allowed = match caller.lens() {
        Lens::Staff { .. } => None,
        Lens::Buyer => Some(BUYER_STATS),
        Lens::Publisher => {
            return Err(ApiError::Forbidden(
                "a publisher's token reads its own statistics: /stats/publishers",
            ));
        }
    };
    caller.require(Action::WatchCalls)?;
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let rows = store.buyer_stats(from, to).await?;
    let plan = plan.current().await;
    let owner = |row: &BuyerStats| Owner {
        company: plan.buyer(row.buyer_id).and_then(|b| b.company_id),
        publisher: None,
        buyer: Some(row.buyer_id),
    };
    Ok(HttpResponse::Ok().json(Stats::<BuyerStats>::new(
        from,
        to,
        seen(&caller, rows, owner, allowed),
    )))
}

/// Statistics per publisher
#[utoipa::path(
    get,
    path = "/stats/publishers",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(Range),
    responses(
        (status = 200, description = "Only publishers with calls in the range are listed.", body = Stats<PublisherStats>),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn publishers(
    caller: Caller,
    store: web::Data<dyn SupervisionStore>,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    if caller.lens() == Lens::Buyer {
        return Err(ApiError::Forbidden(
            "a buyer's token reads its own statistics: /stats/buyers",
        ));
    }
    caller.require(Action::WatchCalls)?;
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let rows = store.publisher_stats(from, to).await?;
    let plan = plan.current().await;
    let owner = |row: &PublisherStats| Owner {
        company: plan.publisher_record(row.publisher_id).and_then(|p| p.company_id),
        publisher: Some(row.publisher_id),
        buyer: None,
    };
    Ok(HttpResponse::Ok().json(Stats::<PublisherStats>::new(
        from,
        to,
        seen(&caller, rows, owner, None),
    )))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TimelineParams {
    /// How long each point lasts (whole UTC minutes or hours).
    #[serde(default)]
    #[param(inline)]
    bucket: Bucket,
    /// Calls that started at or after (RFC 3339), rounded down to a whole bucket; default: an
    /// hour (by minute) or a day (by hour) before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Calls that started before (RFC 3339), rounded up to a whole bucket; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
}

#[derive(Serialize, ToSchema)]
struct Timeline {
    bucket: Bucket,
    /// The start of the first bucket (`from` rounded down to a whole bucket).
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    /// The end of the last bucket (`to` rounded up).
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    /// One series per campaign with calls in the range, by campaign id.
    data: Vec<CampaignSeries>,
}

/// Calls over time, per campaign
#[utoipa::path(
    get,
    path = "/stats/timeline",
    tag = "Supervision",
    security(("supervisor" = []), ("admin" = [])),
    params(TimelineParams),
    responses(
        (status = 200, description = "Each series has one value per bucket from `from`: value `i` counts the calls that started in the bucket beginning `i` buckets after it. At most 1,440 buckets.", body = Timeline),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn timeline(
    caller: Caller,
    store: web::Data<dyn SupervisionStore>,
    clock: web::Data<dyn Clock>,
    params: web::Query<TimelineParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::WatchCalls)?;
    let TimelineParams { bucket, from, to } = params.into_inner();
    let (from, to) = Range { from, to }.resolve(clock.now(), bucket.default_span())?;
    let window = Window::new(bucket, from, to).map_err(|e| ApiError::invalid("from", e.to_string()))?;
    let within = Within::of(caller.grant().scope());
    let data = window.series(store.campaign_series(&window, &within).await?);
    Ok(HttpResponse::Ok().json(Timeline {
        bucket,
        from: window.from(),
        to: window.to(),
        data,
    }))
}
