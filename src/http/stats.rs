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
    auth::Reader,
    error::ApiError,
    openapi::{Invalid, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    domain::{
        series::{Bucket, CampaignSeries, Window},
        supervision::{BuyerStats, CampaignStats, PublisherStats},
    },
    store::SupervisionStore,
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

#[derive(Serialize, ToSchema)]
struct Stats<T> {
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    data: Vec<T>,
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
    _: Reader,
    store: web::Data<dyn SupervisionStore>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let data = store.campaign_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
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
    _: Reader,
    store: web::Data<dyn SupervisionStore>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let data = store.buyer_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
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
    _: Reader,
    store: web::Data<dyn SupervisionStore>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now(), DAY)?;
    let data = store.publisher_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
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
    _: Reader,
    store: web::Data<dyn SupervisionStore>,
    clock: web::Data<dyn Clock>,
    params: web::Query<TimelineParams>,
) -> Result<HttpResponse, ApiError> {
    let TimelineParams { bucket, from, to } = params.into_inner();
    let (from, to) = Range { from, to }.resolve(clock.now(), bucket.default_span())?;
    let window = Window::new(bucket, from, to).map_err(|e| ApiError::invalid("from", e.to_string()))?;
    let data = window.series(store.campaign_series(&window).await?);
    Ok(HttpResponse::Ok().json(Timeline {
        bucket,
        from: window.from(),
        to: window.to(),
        data,
    }))
}
