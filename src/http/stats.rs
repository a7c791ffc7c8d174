//! Statistics over a time range: `GET /stats/campaigns`, `GET /stats/buyers` and
//! `GET /stats/publishers`, each with `from` and `to` (RFC 3339; by default the last 24 hours).
//! Calls count by when they started.

use actix_web::{HttpResponse, http::Method, web};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{ApiRoute, auth::Reader, error::ApiError};
use crate::{clock::Clock, store::Store};

pub fn routes() -> [ApiRoute; 3] {
    [
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
