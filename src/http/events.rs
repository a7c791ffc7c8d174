//! `GET /events?campaign_id=`: a server-sent event stream of call changes. It opens with every
//! call in progress that this process handles, then sends each change as it happens (`event:
//! call`, the call's summary as data, `id: <call sid>:<version>`).

use std::time::Duration;

use actix::Addr;
use actix_web::{Responder, http::Method, web};
use actix_web_lab::sse::Sse;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    ApiRoute,
    auth::Caller,
    error::ApiError,
    openapi::{Invalid, Unauthorized},
};
use crate::{
    domain::{access::Action, plan::CampaignId},
    supervision::{EventHub, Subscribe},
};

/// Comments on a quiet stream, so proxies keep it open and a dead client is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a browser that lost the stream tries again.
const RETRY: Duration = Duration::from_secs(2);

pub fn routes() -> [ApiRoute; 1] {
    [ApiRoute::new(Method::GET, "/events", |r| r.to(events))]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Params {
    /// Only calls that arrived in or are routed in this campaign.
    campaign_id: Option<CampaignId>,
}

/// Live call changes (server-sent events)
#[utoipa::path(
    get,
    path = "/events",
    tag = "Calls",
    security(("supervisor" = []), ("admin" = [])),
    params(Params),
    responses(
        (
            status = 200,
            description = "A stream: first every call in progress this process handles, then each \
                change. Each event is `event: call`, `id: <sid>:<version>`, its data a `CallSummary`.",
            content_type = "text/event-stream",
            body = String,
        ),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
    ),
)]
async fn events(
    caller: Caller,
    hub: web::Data<Addr<EventHub>>,
    params: web::Query<Params>,
) -> Result<impl Responder, ApiError> {
    caller.require(Action::WatchCalls)?;
    let receiver = hub
        .send(Subscribe {
            campaign_id: params.campaign_id,
            grant: caller.grant().clone(),
        })
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(Sse::from_infallible_receiver(receiver)
        .with_keep_alive(KEEP_ALIVE)
        .with_retry_duration(RETRY)
        .customize()
        // nginx would otherwise hold events back to fill its buffers.
        .insert_header(("X-Accel-Buffering", "no")))
}
