//! Calls as supervisors see them: the live ones, a search of past ones, and one call with its
//! timeline (where it went and why).
//!
//! - `GET /calls/live?campaign_id=&buyer_id=&state=`: calls in progress, oldest first, with
//!   their time in the current state.
//! - `GET /calls?caller=&campaign_id=&buyer_id=&state=&outcome=&from=&to=&before=&limit=`:
//!   newest first, a page at a time (`next_before` names the next page).
//! - `GET /calls/{sid}`: one call, its dials and its timeline.

use actix_web::{HttpResponse, http::Method, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    ApiRoute,
    admin::{caller_param, page_limit},
    auth::Reader,
    error::ApiError,
};
use crate::{
    clock::Clock,
    domain::{
        call::{Attempt, CallRecord, CallSid, CallState, Outcome, Recording},
        plan::{BuyerId, CampaignId},
        supervision::CallSummary,
        timeline::TimelineEntry,
    },
    store::{CallFilter, Store},
};

/// More live calls than this in one answer is not a page a person reads; the live list is
/// meant to be narrowed by campaign or buyer.
const LIVE_LIMIT: u32 = 5000;

pub fn routes() -> [ApiRoute; 3] {
    [
        // Before `/calls/{sid}`: `live` would also read as a call id.
        ApiRoute::new(Method::GET, "/calls/live", |r| r.to(live)),
        ApiRoute::new(Method::GET, "/calls", |r| r.to(search)),
        ApiRoute::new(Method::GET, "/calls/{sid}", |r| r.to(call)),
    ]
}

type StoreData = web::Data<dyn Store>;

#[derive(Serialize)]
struct LiveCall {
    #[serde(flatten)]
    call: CallSummary,
    /// How long the call has been in its current state.
    in_state_ms: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveParams {
    campaign_id: Option<CampaignId>,
    buyer_id: Option<BuyerId>,
    state: Option<CallState>,
}

async fn live(
    _: Reader,
    store: StoreData,
    clock: web::Data<dyn Clock>,
    params: web::Query<LiveParams>,
) -> Result<HttpResponse, ApiError> {
    if params.state == Some(CallState::Ended) {
        return Err(ApiError::invalid(
            "state",
            "a live call is routing, dialing or connected",
        ));
    }
    let filter = CallFilter {
        live: true,
        campaign_id: params.campaign_id,
        buyer_id: params.buyer_id,
        state: params.state,
        limit: LIVE_LIMIT,
        ..CallFilter::default()
    };
    let now = clock.now();
    let mut data: Vec<LiveCall> = (store.calls(&filter).await?)
        .into_iter()
        .map(|call| LiveCall {
            in_state_ms: (now.as_millisecond() - call.state_changed_at.as_millisecond()).max(0),
            call,
        })
        .collect();
    data.reverse();
    // The oldest calls are the ones left out: narrow by campaign or buyer to see them.
    let truncated = data.len() == LIVE_LIMIT as usize;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data, "at": now, "truncated": truncated })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    caller: Option<String>,
    campaign_id: Option<CampaignId>,
    buyer_id: Option<BuyerId>,
    state: Option<CallState>,
    outcome: Option<Outcome>,
    /// Started at or after.
    from: Option<Timestamp>,
    /// Started before.
    to: Option<Timestamp>,
    before: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    data: Vec<CallSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<CallSid>,
}

async fn search(
    _: Reader,
    store: StoreData,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let limit = page_limit(params.limit)?;
    let caller = caller_param(params.caller.as_deref())?;
    let before = (params.before.as_deref())
        .map(CallSid::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("before", e))?;
    let filter = CallFilter {
        live: false,
        campaign_id: params.campaign_id,
        buyer_id: params.buyer_id,
        state: params.state,
        outcome: params.outcome,
        caller,
        from: params.from,
        to: params.to,
        before,
        limit,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from >= to
    {
        return Err(ApiError::invalid("from", "must be before `to`"));
    }
    // A page after a call that does not exist would read as the end of the list.
    if let Some(before) = &filter.before
        && store.call(before).await?.is_none()
    {
        return Err(ApiError::invalid("before", format!("no call {before}")));
    }
    let data = store.calls(&filter).await?;
    let next_before = match data.last() {
        Some(last) if data.len() == limit as usize => Some(last.call_sid.clone()),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
}

#[derive(Serialize)]
struct CallView<'a> {
    #[serde(flatten)]
    summary: CallSummary,
    /// Whether the caller id is a phone number (only then can the call be de-duplicated).
    caller_known: bool,
    campaigns_visited: &'a [CampaignId],
    /// Every buyer dialed, in order.
    dials: &'a [Attempt],
    /// Every recording the provider made of the call's dials.
    recordings: &'a [Recording],
    timeline: Vec<TimelineEntry>,
}

async fn call(_: Reader, store: StoreData, sid: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no call {sid}"));
    let sid = CallSid::parse(&sid).map_err(|_| not_found())?;
    let record: CallRecord = store.call(&sid).await?.ok_or_else(not_found)?;
    let view = CallView {
        summary: CallSummary::of(&record),
        caller_known: record.caller.number().is_some(),
        campaigns_visited: &record.visited,
        dials: &record.attempts,
        recordings: &record.recordings,
        timeline: store.timeline(&sid).await?,
    };
    Ok(HttpResponse::Ok().json(view))
}
