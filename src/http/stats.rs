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

use super::{ApiRoute, auth::Reader, error::ApiError};
use crate::{
    clock::Clock,
    domain::series::{Bucket, CampaignSeries, Window},
    store::Store,
};

pub fn routes() -> [ApiRoute; 4] {
    [
        ApiRoute::new(Method::GET, "/stats/timeline", |r| r.to(timeline)),
        ApiRoute::new(Method::GET, "/stats/campaigns", |r| r.to(campaigns)),
        ApiRoute::new(Method::GET, "/stats/buyers", |r| r.to(buyers)),
        ApiRoute::new(Method::GET, "/stats/publishers", |r| r.to(publishers)),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

impl Range {
    fn resolve(&self, now: Timestamp) -> Result<(Timestamp, Timestamp), ApiError> {
        let to = self.to.unwrap_or(now);
        let from = match self.from {
            Some(from) => from,
            None => to
                .checked_sub(SignedDuration::from_hours(24))
                .map_err(|_| ApiError::invalid("to", "is too early"))?,
        };
        if from >= to {
            return Err(ApiError::invalid("from", "must be before `to`"));
        }
        Ok((from, to))
    }
}

#[derive(Serialize)]
struct Stats<T> {
    from: Timestamp,
    to: Timestamp,
    data: Vec<T>,
}

async fn campaigns(
    _: Reader,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now())?;
    let data = store.campaign_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
}

async fn buyers(
    _: Reader,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now())?;
    let data = store.buyer_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
}

async fn publishers(
    _: Reader,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    range: web::Query<Range>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range.resolve(clock.now())?;
    let data = store.publisher_stats(from, to).await?;
    Ok(HttpResponse::Ok().json(Stats { from, to, data }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineParams {
    #[serde(default)]
    bucket: Bucket,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

#[derive(Serialize)]
struct Timeline {
    bucket: Bucket,
    /// The start of the first bucket (`from` rounded down to a whole bucket).
    from: Timestamp,
    /// The end of the last bucket (`to` rounded up).
    to: Timestamp,
    data: Vec<CampaignSeries>,
}

async fn timeline(
    _: Reader,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    params: web::Query<TimelineParams>,
) -> Result<HttpResponse, ApiError> {
    let TimelineParams { bucket, from, to } = params.into_inner();
    let to = to.unwrap_or_else(|| clock.now());
    let from = match from {
        Some(from) => from,
        None => {
            (to.checked_sub(bucket.default_span())).map_err(|_| ApiError::invalid("to", "is too early"))?
        }
    };
    let window = Window::new(bucket, from, to).map_err(|e| ApiError::invalid("from", e.to_string()))?;
    let data = window.series(store.campaign_series(&window).await?);
    Ok(HttpResponse::Ok().json(Timeline {
        bucket,
        from: window.from(),
        to: window.to(),
        data,
    }))
}
