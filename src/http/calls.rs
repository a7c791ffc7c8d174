//! Calls as supervisors see them: the live ones, a search of past ones, and one call with its
//! timeline (where it went and why).
//!
//! - `GET /calls/live?campaign_id=&buyer_id=&state=`: calls in progress, oldest first, with
//!   their time in the current state.
//! - `GET /calls?caller=&campaign_id=&buyer_id=&state=&outcome=&from=&to=&before=&limit=`:
//!   newest first, a page at a time (`next_before` names the next page).
//! - `GET /calls.csv?…`: every call the same filters select, as CSV, streamed (any size).
//! - `GET /calls/{sid}`: one call, its dials and its timeline.

use actix_web::{HttpResponse, http::Method, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiRoute,
    admin::{caller_param, page_limit},
    auth::Caller,
    csv_export,
    error::ApiError,
    openapi::{Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    domain::{
        access::{Action, Lens},
        call::{Attempt, CallRecord, CallSid, CallState, DropReason, Outcome, Recording},
        plan::{BuyerId, CampaignId, PublisherId},
        portal,
        supervision::CallSummary,
        timeline::TimelineEntry,
    },
    store::{CallFilter, CallStore, SupervisionStore, Within},
};

/// More live calls than this in one answer is not a page a person reads; the live list is
/// meant to be narrowed by campaign or buyer.
const LIVE_LIMIT: u32 = 5000;

pub fn routes() -> [ApiRoute; 4] {
    [
        // Before `/calls/{sid}`: `live` would also read as a call id.
        ApiRoute::new(Method::GET, "/calls/live", |r| r.to(live)),
        ApiRoute::new(Method::GET, "/calls", |r| r.to(search)),
        ApiRoute::new(Method::GET, "/calls.csv", |r| r.to(export)),
        ApiRoute::new(Method::GET, "/calls/{sid}", |r| r.to(call)),
    ]
}

type StoreData = web::Data<dyn SupervisionStore>;
type CallData = web::Data<dyn CallStore>;

#[derive(Serialize, ToSchema)]
struct LiveCall {
    #[serde(flatten)]
    call: CallSummary,
    /// How long the call has been in its current state.
    #[schema(minimum = 0)]
    in_state_ms: i64,
}

#[derive(Serialize, ToSchema)]
struct LiveCalls {
    /// Oldest first.
    #[schema(value_type = Vec<LiveCall>)]
    data: Vec<Value>,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// More than 5000 calls are live: the oldest are left out; narrow by campaign or buyer.
    truncated: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LiveParams {
    /// Only calls that arrived in or are routed in this campaign.
    campaign_id: Option<CampaignId>,
    /// Only calls whose buyer (reached, else last dialed) is this one.
    buyer_id: Option<BuyerId>,
    /// Only calls in this state (`ended` is refused: no live call is).
    state: Option<CallState>,
}

/// Calls in progress
#[utoipa::path(
    get,
    path = "/calls/live",
    tag = "Calls",
    security(("supervisor" = []), ("admin" = [])),
    params(LiveParams),
    responses(
        (status = 200, description = "Oldest first, with each call's time in its state.", body = inline(LiveCalls)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn live(
    caller: Caller,
    store: StoreData,
    clock: web::Data<dyn Clock>,
    params: web::Query<LiveParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::WatchCalls)?;
    if params.state == Some(CallState::Ended) {
        return Err(ApiError::invalid(
            "state",
            "a live call is routing, dialing or connected",
        ));
    }
    let filter = CallFilter {
        within: Within::of(caller.grant().scope()),
        live: true,
        campaign_id: params.campaign_id,
        buyer_id: params.buyer_id,
        state: params.state,
        limit: LIVE_LIMIT,
        ..CallFilter::default()
    };
    let now = clock.now();
    let mut data: Vec<Value> = (store.calls(&filter).await?)
        .into_iter()
        .map(|call| LiveCall {
            in_state_ms: (now.as_millisecond() - call.state_changed_at.as_millisecond()).max(0),
            call,
        })
        .map(|call| seen(&call, caller.lens()))
        .collect();
    data.reverse();
    // The oldest calls are the ones left out: narrow by campaign or buyer to see them.
    let truncated = data.len() == LIVE_LIMIT as usize;
    Ok(HttpResponse::Ok().json(LiveCalls {
        data,
        at: now,
        truncated,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SearchParams {
    /// The caller's number (E.164; a leading `+` may arrive as a space).
    caller: Option<String>,
    /// Only calls that arrived in or are routed in this campaign.
    campaign_id: Option<CampaignId>,
    /// Only calls whose buyer (reached, else last dialed) is this one.
    buyer_id: Option<BuyerId>,
    /// Only calls this publisher sent.
    publisher_id: Option<PublisherId>,
    /// Only calls in this state.
    state: Option<CallState>,
    /// Only calls that ended so.
    outcome: Option<Outcome>,
    /// Started at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Started before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
    /// Only calls older than this one (`next_before` of the previous page); an unknown call is
    /// refused (422).
    before: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct Page {
    #[schema(value_type = Vec<CallSummary>)]
    data: Vec<Value>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = CallSid)]
    next_before: Option<CallSid>,
}

/// A call's summary (with whatever goes with it) as the lens shows it: a partner's portal sees
/// only what its allow-list names.
fn seen(call: &impl Serialize, lens: Lens) -> Value {
    portal::summary(serde_json::to_value(call).unwrap_or(Value::Null), lens)
}

impl SearchParams {
    /// The filter these parameters select, checked.
    async fn filter(
        self,
        asking: &Caller,
        calls: &dyn CallStore,
        limit: u32,
    ) -> Result<CallFilter, ApiError> {
        let caller = caller_param(self.caller.as_deref())?;
        let before = (self.before.as_deref())
            .map(CallSid::parse)
            .transpose()
            .map_err(|e| ApiError::invalid("before", e))?;
        let filter = CallFilter {
            within: Within::of(asking.grant().scope()),
            live: false,
            campaign_id: self.campaign_id,
            buyer_id: self.buyer_id,
            publisher_id: self.publisher_id,
            state: self.state,
            outcome: self.outcome,
            caller,
            from: self.from,
            to: self.to,
            before,
            limit,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            return Err(ApiError::invalid("from", "must be before `to`"));
        }
        // A page after a call that does not exist (for this caller) would read as the end of
        // the list.
        if let Some(before) = &filter.before
            && !(calls.call(before).await?)
                .is_some_and(|call| asking.reaches(&CallSummary::of(&call).owner()))
        {
            return Err(ApiError::invalid("before", format!("no call {before}")));
        }
        Ok(filter)
    }
}

/// Search calls
#[utoipa::path(
    get,
    path = "/calls",
    tag = "Calls",
    security(("supervisor" = []), ("admin" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Newest first.", body = inline(Page)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn search(
    caller: Caller,
    store: StoreData,
    calls: CallData,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::WatchCalls)?;
    let params = params.into_inner();
    let limit = page_limit(params.limit)?;
    let filter = params.filter(&caller, calls.as_ref(), limit).await?;
    let page = store.calls(&filter).await?;
    let next_before = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.call_sid.clone()),
        _ => None,
    };
    let data = page.iter().map(|call| seen(call, caller.lens())).collect();
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
}

/// A call as a line of `calls.csv`.
#[derive(Serialize)]
struct CallLine {
    call_sid: CallSid,
    started_at: Timestamp,
    ended_at: Option<Timestamp>,
    caller: String,
    called: String,
    caller_state: Option<String>,
    company_id: Option<String>,
    entry_campaign_id: Option<String>,
    campaign_id: Option<String>,
    publisher_id: Option<String>,
    buyer_id: Option<String>,
    state: CallState,
    outcome: Option<Outcome>,
    drop_reason: Option<DropReason>,
    attempts: u32,
    converted: bool,
    duplicate: Option<bool>,
    used_fallback: bool,
    redirects: u32,
    duplicates_avoided: u32,
    publisher_payout: Option<String>,
    publisher_duplicate: Option<bool>,
}

const CALL_COLUMNS: &[&str] = &[
    "call_sid",
    "started_at",
    "ended_at",
    "caller",
    "called",
    "caller_state",
    "company_id",
    "entry_campaign_id",
    "campaign_id",
    "publisher_id",
    "buyer_id",
    "state",
    "outcome",
    "drop_reason",
    "attempts",
    "converted",
    "duplicate",
    "used_fallback",
    "redirects",
    "duplicates_avoided",
    "publisher_payout",
    "publisher_duplicate",
];

impl From<CallSummary> for CallLine {
    fn from(call: CallSummary) -> Self {
        Self {
            call_sid: call.call_sid,
            started_at: call.started_at,
            ended_at: call.ended_at,
            caller: csv_export::cell(call.caller),
            called: csv_export::cell(call.called),
            caller_state: call.caller_state.map(String::from),
            company_id: call.company_id.map(|id| id.to_string()),
            entry_campaign_id: call.entry_campaign_id.map(|id| id.to_string()),
            campaign_id: call.campaign_id.map(|id| id.to_string()),
            publisher_id: call.publisher_id.map(|id| id.to_string()),
            buyer_id: call.buyer_id.map(|id| id.to_string()),
            state: call.state,
            outcome: call.outcome,
            drop_reason: call.drop_reason,
            attempts: call.attempts,
            converted: call.converted,
            duplicate: call.duplicate,
            used_fallback: call.used_fallback,
            redirects: call.redirects,
            duplicates_avoided: call.duplicates_avoided,
            // As written ("12.50"): a spreadsheet reads it exactly.
            publisher_payout: call.publisher_payout.map(|m| m.to_string()),
            publisher_duplicate: call.publisher_duplicate,
        }
    }
}

/// Every call the filters select, as CSV
///
/// The filters of `GET /calls`, without `limit`: every call, newest first, streamed a page at a
/// time. A store failure mid-way cuts the response short.
#[utoipa::path(
    get,
    path = "/calls.csv",
    tag = "Calls",
    operation_id = "export_calls",
    security(("supervisor" = []), ("admin" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Newest first; the first line names the columns.", content_type = "text/csv", body = String),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn export(
    caller: Caller,
    store: StoreData,
    calls: CallData,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    // Every column is the network's: exports are for its staff (partners read `/calls`).
    caller.require(Action::WatchCalls)?.require(Action::ReadMoney)?;
    let params = params.into_inner();
    if params.limit.is_some() {
        return Err(ApiError::invalid(
            "limit",
            "an export has every call the filters select",
        ));
    }
    let filter = params.filter(&caller, calls.as_ref(), csv_export::PAGE).await?;
    Ok(csv_export::streamed(
        "calls.csv",
        CALL_COLUMNS,
        move |before: Option<CallSid>| {
            let (store, mut filter) = (store.clone(), filter.clone());
            async move {
                filter.before = before.or(filter.before);
                let page = store.calls(&filter).await?;
                let next = (page.len() == filter.limit as usize)
                    .then(|| page.last().map(|c| c.call_sid.clone()))
                    .flatten();
                Ok((page.into_iter().map(CallLine::from).collect::<Vec<_>>(), next))
            }
        },
    ))
}

/// One call, every buyer dialed and every webhook and decision.
#[derive(Serialize, ToSchema)]
#[schema(as = CallDetail)]
struct CallView<'a> {
    #[serde(flatten)]
    summary: CallSummary,
    /// Whether the caller id is a phone number (only then can the call be de-duplicated).
    caller_known: bool,
    /// Every campaign the call was routed in, in order.
    #[schema(value_type = Vec<CampaignId>)]
    campaigns_visited: &'a [CampaignId],
    /// Every buyer dialed, in order.
    #[schema(value_type = Vec<Attempt>)]
    dials: &'a [Attempt],
    /// Every recording the provider made of the call's dials.
    #[schema(value_type = Vec<Recording>)]
    recordings: &'a [Recording],
    timeline: Vec<TimelineEntry>,
}

/// One call with its timeline
#[utoipa::path(
    get,
    path = "/calls/{sid}",
    tag = "Calls",
    security(("supervisor" = []), ("admin" = [])),
    params(("sid" = String, Path, description = "The provider's call id (`CallSid`).")),
    responses(
        (status = 200, description = "The call, every buyer dialed and every webhook and decision.", body = CallView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn call(caller: Caller, store: CallData, sid: web::Path<String>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::WatchCalls)?;
    let not_found = || ApiError::NotFound(format!("no call {sid}"));
    let sid = CallSid::parse(&sid).map_err(|_| not_found())?;
    let record: CallRecord = store.call(&sid).await?.ok_or_else(not_found)?;
    let summary = CallSummary::of(&record);
    caller.require_on(Action::WatchCalls, &summary.owner(), not_found)?;
    let view = CallView {
        summary,
        caller_known: record.caller.number().is_some(),
        campaigns_visited: &record.visited,
        dials: &record.attempts,
        recordings: &record.recordings,
        timeline: store.timeline(&sid).await?,
    };
    let view = serde_json::to_value(&view).map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(portal::call_detail(view, caller.grant())))
}
