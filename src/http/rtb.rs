//! RTB: `POST /rtbs.json` answers publishers' pings; `GET /api/v1/rtb` reads the ping log, and
//! `GET /api/v1/rtb.csv` exports it (same filters, every ping, streamed).

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
    web,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::{caller_param, page_limit},
    auth::Caller,
    csv_export,
    error::ApiError,
    openapi::{Invalid, Unauthorized, Unavailable},
    rate_limit::RateLimiter,
};
use crate::{
    clock::Clock,
    decide::PlanCache,
    domain::{
        access::{Action, Owner},
        phone::E164,
        plan::{CampaignId, PublisherId},
        rtb::{Held, LoggedPing, PingError, PingRequest, PingStatus},
    },
    rtb::Rtb,
    store::{PingFilter, RtbStore},
};

/// Pings are a handful of parameters; anything much larger is not one.
const MAX_PING_BODY: usize = 16 * 1024;

pub fn ping_resource() -> actix_web::Resource {
    web::resource("/rtbs.json")
        .app_data(web::PayloadConfig::new(MAX_PING_BODY))
        .route(web::post().to(ping))
}

pub fn log_routes() -> [ApiRoute; 2] {
    [
        ApiRoute::new(Method::GET, "/rtb", |r| r.to(log)),
        ApiRoute::new(Method::GET, "/rtb.csv", |r| r.to(export)),
    ]
}

/// The rate limit of pings, per RTB key (`RTB_RATE_PER_SECOND`, `RTB_RATE_BURST`).
pub struct PingLimit(pub RateLimiter);

/// Parameters come in the query string and in a form or JSON body, the body's last.
async fn ping(
    req: HttpRequest,
    body: web::Bytes,
    rtb: web::Data<Rtb>,
    limit: web::Data<PingLimit>,
) -> Result<HttpResponse, ApiError> {
    let mut params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| PingError::Malformed(format!("the query string is not valid: {e}")))?;
    params.extend(body_params(&req, &body)?);
    let request = PingRequest::from_params(params);
    // Before anything is looked up or logged: a flood on one key costs a digest a ping.
    if let Some(key) = &request.key
        && let Err(limited) = limit.0.check(key.as_bytes())
    {
        return Ok(limited.response());
    }
    let answer = rtb.ping(request).await?;
    Ok(HttpResponse::Ok().json(answer))
}

fn body_params(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, PingError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let is_json = (req.headers().get(header::CONTENT_TYPE))
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"));
    if !is_json {
        return serde_urlencoded::from_bytes(body)
            .map_err(|e| PingError::Malformed(format!("the form body is not valid: {e}")));
    }
    let object = match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => return Err(PingError::Malformed("the JSON body must be an object".into())),
        Err(e) => return Err(PingError::Malformed(format!("the body is not valid JSON: {e}"))),
    };
    // Numbers and flags are taken as written, structured values as their JSON text.
    Ok(object
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => (name, text),
            other => (name, other.to_string()),
        })
        .collect())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogParams {
    /// Only pings of this campaign.
    campaign_id: Option<CampaignId>,
    /// Only pings of this publisher.
    publisher_id: Option<PublisherId>,
    /// The caller's number (E.164; a leading `+` may arrive as a space).
    caller: Option<String>,
    /// Only pings with this status now.
    #[param(value_type = Option<PingStatus>)]
    status: Option<String>,
    /// Received at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Received before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
    /// Only pings older than this one (`next_before`).
    before: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct Page {
    data: Vec<PingView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Uuid)]
    next_before: Option<Uuid>,
}

/// A ping as the log shows it, with its reservation if it made one.
#[derive(Serialize, ToSchema)]
#[schema(as = LoggedPing)]
struct PingView {
    id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    received_at: Timestamp,
    campaign_id: CampaignId,
    #[schema(required = true)]
    publisher_id: Option<PublisherId>,
    #[schema(required = true)]
    caller_number: Option<E164>,
    /// Every parameter but the key.
    request: std::collections::BTreeMap<String, String>,
    status: PingStatus,
    /// A bid with the caller's live reservation rather than a new one.
    cached: bool,
    /// The no-target reason or the error code.
    #[schema(required = true)]
    reason: Option<String>,
    /// The body returned, as returned.
    #[schema(value_type = Object)]
    answer: serde_json::Value,
    #[schema(required = true)]
    reservation: Option<Held>,
}

impl PingView {
    fn new(logged: LoggedPing, at: Timestamp) -> Self {
        let LoggedPing { ping, held } = logged;
        Self {
            status: PingStatus::of(ping.outcome, held.as_ref(), at),
            id: ping.id,
            received_at: ping.received_at,
            campaign_id: ping.campaign_id,
            publisher_id: ping.publisher_id,
            caller_number: ping.caller_number,
            request: ping.request,
            cached: ping.cached,
            reason: ping.reason,
            answer: ping.answer,
            reservation: held,
        }
    }
}

impl LogParams {
    fn filter(&self, limit: u32, at: Timestamp) -> Result<PingFilter, ApiError> {
        let caller = caller_param(self.caller.as_deref())?;
        let status = (self.status.as_deref())
            .map(|text| {
                PingStatus::parse(text).ok_or_else(|| {
                    let known = PingStatus::ALL.map(PingStatus::as_str).join(", ");
                    ApiError::invalid("status", format!("`{text}` is not one of {known}"))
                })
            })
            .transpose()?;
        Ok(PingFilter {
            campaign_id: self.campaign_id,
            publisher_id: self.publisher_id,
            caller,
            status,
            from: self.from,
            to: self.to,
            before: self.before,
            limit,
            at,
        })
    }
}

/// The RTB ping log
///
/// Newest first, with filters; the pings answered so far are all in it.
#[utoipa::path(
    get,
    path = "/rtb",
    tag = "RTB",
    operation_id = "rtb_log",
    security(("supervisor" = []), ("admin" = [])),
    params(LogParams),
    responses(
        (status = 200, description = "Newest first.", body = inline(Page)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn log(
    caller: Caller,
    rtb: web::Data<Rtb>,
    store: web::Data<dyn RtbStore>,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadOperations)?;
    let limit = page_limit(params.limit)?;
    let at = clock.now();
    let filter = params.filter(limit, at)?;
    rtb.flush().await;
    let page = store.rtb_pings(&filter).await?;
    // The page goes on from the last ping read, whether or not this caller sees it.
    let next_before = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.ping.id),
        _ => None,
    };
    let reaches = Reaches::of(&caller, &plan).await;
    let data: Vec<PingView> = (page.into_iter())
        .filter(|logged| reaches.ping(logged))
        .map(|logged| PingView::new(logged, at))
        .collect();
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
}

/// Which pings a caller's scope reaches: those of its companies' campaigns (as the plan has
/// them now).
struct Reaches {
    caller: Caller,
    plan: std::sync::Arc<crate::domain::routing::RoutingPlan>,
}

impl Reaches {
    async fn of(caller: &Caller, plan: &PlanCache) -> Self {
        Self {
            caller: caller.clone(),
            plan: plan.current().await,
        }
    }

    fn ping(&self, logged: &LoggedPing) -> bool {
        let company = (self.plan.campaign(logged.ping.campaign_id)).and_then(|campaign| campaign.company_id);
        self.caller.reaches(&Owner {
            company,
            publisher: logged.ping.publisher_id,
            buyer: None,
        })
    }
}

/// A ping as a line of `rtb.csv`.
#[derive(Serialize)]
struct PingLine {
    id: Uuid,
    received_at: Timestamp,
    campaign_id: CampaignId,
    publisher_id: Option<PublisherId>,
    caller_number: Option<E164>,
    status: PingStatus,
    cached: bool,
    reason: Option<String>,
    reservation: Option<Uuid>,
    buyer_id: Option<String>,
    claimed_at: Option<Timestamp>,
    call_sid: Option<String>,
    /// The parameters sent, as JSON.
    request: String,
}

const PING_COLUMNS: &[&str] = &[
    "id",
    "received_at",
    "campaign_id",
    "publisher_id",
    "caller_number",
    "status",
    "cached",
    "reason",
    "reservation",
    "buyer_id",
    "claimed_at",
    "call_sid",
    "request",
];

/// A line is the log's view of the ping, flattened.
impl From<PingView> for PingLine {
    fn from(view: PingView) -> Self {
        let held = view.reservation;
        Self {
            id: view.id,
            received_at: view.received_at,
            campaign_id: view.campaign_id,
            publisher_id: view.publisher_id,
            caller_number: view.caller_number,
            status: view.status,
            cached: view.cached,
            reason: view.reason,
            reservation: held.as_ref().map(|h| h.uuid),
            buyer_id: held.as_ref().map(|h| h.buyer_id.to_string()),
            claimed_at: held.as_ref().and_then(|h| h.claimed_at),
            call_sid: held.and_then(|h| h.call_sid).map(String::from),
            request: serde_json::to_string(&view.request).unwrap_or_default(),
        }
    }
}

/// The RTB ping log, as CSV
///
/// The filters of `GET /rtb`, without `limit`: every ping, newest first, streamed.
#[utoipa::path(
    get,
    path = "/rtb.csv",
    tag = "RTB",
    operation_id = "export_rtb_log",
    security(("supervisor" = []), ("admin" = [])),
    params(LogParams),
    responses(
        (status = 200, description = "Newest first; the first line names the columns.", content_type = "text/csv", body = String),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn export(
    caller: Caller,
    rtb: web::Data<Rtb>,
    store: web::Data<dyn RtbStore>,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(Action::ReadOperations)?
        .require(Action::ReadMoney)?;
    if params.limit.is_some() {
        return Err(ApiError::invalid(
            "limit",
            "an export has every ping the filters select",
        ));
    }
    let at = clock.now();
    let filter = params.filter(csv_export::PAGE, at)?;
    rtb.flush().await;
    let store = store.into_inner();
    let reaches = std::sync::Arc::new(Reaches::of(&caller, &plan).await);
    Ok(csv_export::streamed(
        "rtb.csv",
        PING_COLUMNS,
        move |before: Option<Uuid>| {
            let (store, mut filter, reaches) = (store.clone(), filter.clone(), reaches.clone());
            async move {
                filter.before = before.or(filter.before);
                let page = store.rtb_pings(&filter).await?;
                let next = (page.len() == filter.limit as usize)
                    .then(|| page.last().map(|p| p.ping.id))
                    .flatten();
                let lines = (page.into_iter())
                    .filter(|ping| reaches.ping(ping))
                    .map(|ping| PingLine::from(PingView::new(ping, at)))
                    .collect::<Vec<_>>();
                Ok((lines, next))
            }
        },
    ))
}
