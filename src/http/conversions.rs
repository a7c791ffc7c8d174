//! Buyers' reports of their calls' conversions, and returns (see `docs/conversions.md`).
//!
//! - `POST /calls/{sid}/conversion`: `{converted, revenue?, external_id?}`, with an
//!   `Idempotency-Key` header.
//! - `POST /calls/{sid}/return`: `{reason}`, with an `Idempotency-Key` header.
//! - `POST /conversions?key=…&call_sid=…` (or `&caller=…&at=…`): the same report, all in the
//!   URL, for systems that can only fire one.
//! - `GET`, `PUT` and `DELETE /buyers/{id}/conversion_key`: the buyer's key, shown once.
//!
//! Who may report for a buyer is decided in one place, [`may_report_for`].

use actix_web::{FromRequest, HttpRequest, HttpResponse, http::Method, http::header, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiRoute,
    admin::{caller_param, parse_id},
    audit::{self, Auditor, Change, Who},
    auth::Caller,
    error::{ApiError, Body as ErrorBody},
    json,
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    conversions::{Asked, Conversions},
    decide::PlanCache,
    domain::{
        access::{Action, Owner, Role},
        call::CallSid,
        conversion::{ConversionReport, ConversionReturn, IdempotencyKey, ReportAnswer},
        money::Money,
        plan::{Buyer, BuyerId, CompanyId, Record},
        values::{Name, RtbKey},
    },
    fresh::Generate,
    store::{AuditStore, CallStore, ConversionStore, PlanStore, ReportOutcome},
};

pub fn routes() -> [ApiRoute; 6] {
    const KEY: &str = "/buyers/{id}/conversion_key";
    [
        ApiRoute::new(Method::POST, "/calls/{sid}/conversion", |r| r.to(report)),
        ApiRoute::new(Method::POST, "/calls/{sid}/return", |r| r.to(return_conversion)),
        ApiRoute::new(Method::POST, "/conversions", |r| r.to(report_by_url)),
        ApiRoute::new(Method::GET, KEY, |r| r.to(key_status)),
        ApiRoute::new(Method::PUT, KEY, |r| r.to(set_key)),
        ApiRoute::new(Method::DELETE, KEY, |r| r.to(delete_key)),
    ]
}

type Keys = web::Data<dyn ConversionStore>;
type Calls = web::Data<dyn CallStore>;

/// Who is reporting.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A token: a buyer's (scoped to its buyers), or an admin's whose scope reaches the buyer.
    Token(Caller),
    /// A buyer's conversion key.
    BuyerKey(BuyerId),
}

impl Principal {
    /// As the audit log names it.
    fn who(&self) -> Who {
        match self {
            Self::Token(caller) => Who {
                name: caller.name().to_owned(),
                token_id: caller.token_id(),
                role: caller.grant().role(),
            },
            Self::BuyerKey(buyer) => Who {
                name: format!("conversion key of buyer {buyer}"),
                token_id: None,
                role: Role::Buyer,
            },
        }
    }
}

/// Whether `principal` may report conversions for `buyer` (of `company`): the one decision, for
/// every report.
pub fn may_report_for(principal: &Principal, buyer: BuyerId, company: Option<CompanyId>) -> bool {
    match principal {
        Principal::Token(caller) => {
            let owner = Owner {
                company,
                publisher: None,
                buyer: Some(buyer),
            };
            caller.grant().may(Action::ReportConversions) && caller.reaches(&owner)
        }
        Principal::BuyerKey(own) => *own == buyer,
    }
}

/// The principal a request names: a bearer token (a buyer's, or an admin's), else a buyer's
/// conversion key in the `key` parameter.
async fn principal(req: &HttpRequest, keys: &Keys) -> Result<Principal, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        let caller = Caller::extract(req).await?;
        caller.require(Action::ReportConversions)?;
        return Ok(Principal::Token(caller));
    }
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid("query", e.to_string()))?;
    let Some((_, key)) = query.iter().find(|(name, _)| name == "key") else {
        return Err(ApiError::Unauthorized(
            "send the admin token as `Authorization: Bearer <token>`, or the buyer's conversion key as `?key=`",
        ));
    };
    let key = RtbKey::try_from(key.clone()).map_err(|_| ApiError::Unauthorized("the key is not valid"))?;
    match keys.conversion_key_buyer(&key.sha256_hex()).await? {
        Some(buyer) => Ok(Principal::BuyerKey(buyer)),
        None => Err(ApiError::Unauthorized("the key is not valid")),
    }
}

fn call_sid(text: &str) -> Result<CallSid, ApiError> {
    CallSid::parse(text).map_err(|_| ApiError::NotFound(format!("no call with sid {text}")))
}

fn idempotency_key(req: &HttpRequest) -> Result<IdempotencyKey, ApiError> {
    const FIELD: &str = "Idempotency-Key";
    let value = (req.headers().get(FIELD)).ok_or_else(|| {
        ApiError::invalid(
            FIELD,
            "the header is required: a key of your own for this report, sent again with every retry of it",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid(FIELD, "must be printable"))?;
    IdempotencyKey::parse(text).map_err(|e| ApiError::invalid(FIELD, e))
}

/// The buyer the call was connected to: the one that reports it.
async fn buyer_of(calls: &Calls, sid: &CallSid) -> Result<BuyerId, ApiError> {
    let call =
        (calls.call(sid).await?).ok_or_else(|| ApiError::NotFound(format!("no call with sid {sid}")))?;
    call.connected_attempt()
        .map(|a| a.buyer_id)
        .ok_or_else(|| ApiError::Conflict {
            field: None,
            message: "the call never connected to a buyer: there is no conversion to report".into(),
        })
}

/// What a report is made with, besides the report.
pub struct Reporting {
    conversions: web::Data<Conversions>,
    plan: web::Data<PlanCache>,
    audit: web::Data<dyn AuditStore>,
    clock: web::Data<dyn Clock>,
}

impl FromRequest for Reporting {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let parts = (
            req.app_data::<web::Data<Conversions>>(),
            req.app_data::<web::Data<PlanCache>>(),
            req.app_data::<web::Data<dyn AuditStore>>(),
            req.app_data::<web::Data<dyn Clock>>(),
        );
        std::future::ready(match parts {
            (Some(conversions), Some(plan), Some(audit), Some(clock)) => Ok(Self {
                conversions: conversions.clone(),
                plan: plan.clone(),
                audit: audit.clone(),
                clock: clock.clone(),
            }),
            _ => Err(ApiError::Internal),
        })
    }
}

/// Makes the report once under its key, and answers it.
async fn make(
    reporting: &Reporting,
    principal: Principal,
    sid: &CallSid,
    buyer: BuyerId,
    asked: Asked,
    key: &IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    let company = (reporting.plan.current().await.buyer(buyer)).and_then(|b| b.company_id);
    if !may_report_for(&principal, buyer, company) {
        return Err(match principal {
            // A token learns nothing of calls that are not its buyers'.
            Principal::Token(_) => ApiError::NotFound(format!("no call with sid {sid}")),
            Principal::BuyerKey(_) => {
                ApiError::Forbidden("this key reports for another buyer than the call's")
            }
        });
    }
    let action = match asked {
        Asked::Report(_) => "conversion.report",
        Asked::Return(_) => "conversion.return",
    };
    match reporting.conversions.make(sid, buyer, asked, key).await? {
        ReportOutcome::Made { answer, .. } => {
            let change = Change::new(company, action, sid).after(&answer);
            audit::record(
                reporting.audit.as_ref(),
                reporting.clock.as_ref(),
                principal.who(),
                change,
            )
            .await;
            Ok(HttpResponse::Ok().json(answer))
        }
        ReportOutcome::Replayed(answer) => Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(answer)),
        ReportOutcome::Refused(refusal) if refusal.is_conflict() => Err(ApiError::Conflict {
            field: None,
            message: refusal.to_string(),
        }),
        ReportOutcome::Refused(refusal) => Err(ApiError::invalid("at", refusal.to_string())),
        ReportOutcome::KeyReused => Err(ApiError::invalid(
            "Idempotency-Key",
            "this key was used for another request: a retry must send the same request, and a new report a new key",
        )),
    }
}

/// Report a call's conversion
///
/// For a buyer whose `conversion_rule` is `reported` or `seconds_and_reported`: the call
/// converts (once) when the buyer says so, within `conversion_report_window_seconds` of its
/// end. Sent again with the same `Idempotency-Key`, the same answer comes back and nothing
/// happens twice. Authorized by the admin token or the buyer's conversion key (`?key=`).
#[utoipa::path(
    post,
    path = "/calls/{sid}/conversion",
    tag = "Conversions",
    security(("admin" = []), ("buyer" = [])),
    params(
        ("sid" = String, Path, description = "The call's `CallSid`."),
        ("Idempotency-Key" = String, Header, description = "Your key for this report (1–200 printable characters): a retry sends the same."),
        ("key" = Option<String>, Query, description = "The buyer's conversion key, instead of the admin token."),
    ),
    request_body = ConversionReport,
    responses(
        (status = 200, description = "Where the call's conversion stands (a retry gets the first answer, with `Idempotent-Replayed: true`).", body = ReportAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The call cannot be reported: the buyer converts on seconds alone, the call is not over, never connected, is a duplicate, was returned, or converted already (`converted: false`).", body = ErrorBody),
        (status = 422, description = "Outside the report window, too short for `seconds_and_reported`, a missing `Idempotency-Key`, or a key used for another request.", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
async fn report(
    req: HttpRequest,
    keys: Keys,
    calls: Calls,
    reporting: Reporting,
    sid: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &keys).await?;
    let sid = call_sid(&sid)?;
    let key = idempotency_key(&req)?;
    let report: ConversionReport = json::typed(Value::Object(json::object(&body)?))?;
    let buyer = buyer_of(&calls, &sid).await?;
    make(&reporting, principal, &sid, buyer, Asked::Report(report), &key).await
}

/// Return a call's conversion
///
/// Within the buyer's `return_window_seconds` of the conversion: the conversion and the
/// publisher's payout for it are reversed (by new ledger rows), the caller is no longer a
/// duplicate for the buyer on its account, and a `call.returned` postback is sent.
#[utoipa::path(
    post,
    path = "/calls/{sid}/return",
    tag = "Conversions",
    security(("admin" = []), ("buyer" = [])),
    params(
        ("sid" = String, Path, description = "The call's `CallSid`."),
        ("Idempotency-Key" = String, Header, description = "Your key for this return: a retry sends the same."),
        ("key" = Option<String>, Query, description = "The buyer's conversion key, instead of the admin token."),
    ),
    request_body = ConversionReturn,
    responses(
        (status = 200, description = "The conversion, returned.", body = ReportAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "No reported conversion to return (or the buyer converts on seconds alone).", body = ErrorBody),
        (status = 422, description = "Outside the return window, a missing `Idempotency-Key`, or a key used for another request.", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
async fn return_conversion(
    req: HttpRequest,
    keys: Keys,
    calls: Calls,
    reporting: Reporting,
    sid: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &keys).await?;
    let sid = call_sid(&sid)?;
    let key = idempotency_key(&req)?;
    let taken_back: ConversionReturn = json::typed(Value::Object(json::object(&body)?))?;
    let buyer = buyer_of(&calls, &sid).await?;
    make(
        &reporting,
        principal,
        &sid,
        buyer,
        Asked::Return(taken_back),
        &key,
    )
    .await
}

/// A report all in its URL.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UrlReport {
    /// The buyer's conversion key (or send the admin token, and `buyer_id`).
    #[serde(skip_serializing)]
    #[allow(dead_code)] // Read with the principal, before the rest.
    key: Option<String>,
    /// The call; or, without it, `caller` (and `at`).
    call_sid: Option<String>,
    /// The caller's number: the report is of the latest call from it connected to the buyer,
    /// started at or before `at`.
    caller: Option<String>,
    /// When the caller called (RFC 3339); default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
    /// The buyer, when the admin token reports by caller.
    #[param(value_type = Option<String>, format = Uuid)]
    buyer_id: Option<String>,
    /// Default `true`.
    converted: Option<bool>,
    #[param(value_type = Option<f64>)]
    revenue: Option<String>,
    external_id: Option<String>,
    /// Your key for this report; default: the report itself (the same URL fired twice is one
    /// report).
    idempotency_key: Option<String>,
}

/// Report a conversion by URL
///
/// The same report as `POST /calls/{sid}/conversion`, every part in the query string, for
/// systems that can only fire a URL: `?key=<conversion key>&call_sid=CA…`, or, without the
/// call's sid, `&caller=+14155550123&at=2026-12-08T10:00:00Z` (the latest call from the caller
/// connected to the buyer, started by then). The key is kept out of the logs.
#[utoipa::path(
    post,
    path = "/conversions",
    tag = "Conversions",
    security(("admin" = []), ("buyer" = [])),
    params(UrlReport),
    responses(
        (status = 200, description = "Where the call's conversion stands.", body = ReportAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such call, or no call from the caller connected to the buyer.", body = ErrorBody),
        (status = 409, description = "The call cannot be reported (see `POST /calls/{sid}/conversion`).", body = ErrorBody),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn report_by_url(
    req: HttpRequest,
    keys: Keys,
    calls: Calls,
    reporting: Reporting,
    params: web::Query<UrlReport>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &keys).await?;
    let params = params.into_inner();
    let revenue = (params.revenue.as_deref())
        .map(Money::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("revenue", e))?;
    let external_id = (params.external_id.clone())
        .map(Name::try_from)
        .transpose()
        .map_err(|e| ApiError::invalid("external_id", e))?;
    let (sid, buyer) = match (&params.call_sid, caller_param(params.caller.as_deref())?) {
        (Some(sid), None) => {
            let sid = call_sid(sid)?;
            let buyer = buyer_of(&calls, &sid).await?;
            (sid, buyer)
        }
        (None, Some(caller)) => {
            let buyer = match (&principal, &params.buyer_id) {
                (Principal::BuyerKey(buyer), None) => *buyer,
                (_, Some(id)) => parse_id::<Buyer>(id)?,
                (Principal::Token(caller), None) => match caller.grant().scope() {
                    crate::domain::access::Scope::Buyers(ids) if ids.len() == 1 => {
                        *ids.first().ok_or(ApiError::Internal)?
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            "buyer_id",
                            "name the buyer reporting by caller (a token of one buyer need not)",
                        ));
                    }
                },
            };
            let at = match &params.at {
                Some(at) => at
                    .parse::<Timestamp>()
                    .map_err(|e| ApiError::invalid("at", e.to_string()))?,
                None => reporting.clock.now(),
            };
            let sid = (keys.latest_call_to(&caller, buyer, at).await?).ok_or_else(|| {
                ApiError::NotFound(format!("no call from {caller} connected to the buyer by {at}"))
            })?;
            (sid, buyer)
        }
        _ => {
            return Err(ApiError::invalid(
                "call_sid",
                "give either `call_sid` or `caller`",
            ));
        }
    };
    let key = match &params.idempotency_key {
        Some(key) => IdempotencyKey::parse(key).map_err(|e| ApiError::invalid("idempotency_key", e))?,
        // The report itself: fired twice, the same URL is the same report.
        None => {
            let request = serde_json::to_string(&params).map_err(|_| ApiError::Internal)?;
            IdempotencyKey::parse(&format!(
                "url:{}",
                hex::encode(sha2::Sha256::digest(request.as_bytes()))
            ))
            .map_err(|_| ApiError::Internal)?
        }
    };
    let report = ConversionReport {
        converted: params.converted.unwrap_or(true),
        revenue,
        external_id,
    };
    make(&reporting, principal, &sid, buyer, Asked::Report(report), &key).await
}

#[derive(Serialize, ToSchema)]
struct KeyStatus {
    configured: bool,
}

/// A conversion key, shown the once it is set.
#[derive(Serialize, ToSchema)]
struct ShownKey<'a> {
    key: &'a str,
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

/// Whether the buyer has a conversion key
#[utoipa::path(
    get,
    path = "/buyers/{id}/conversion_key",
    tag = "Conversions",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The buyer's id.")),
    responses(
        (status = 200, description = "Configured or not; the key itself is never shown again.", body = inline(KeyStatus)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn key_status(
    caller: Caller,
    plan: web::Data<dyn PlanStore>,
    keys: Keys,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let buyer = reachable(&caller, Action::Change, &plan, &id).await?;
    let configured = keys.has_conversion_key(buyer.id).await?;
    Ok(HttpResponse::Ok().json(KeyStatus { configured }))
}

/// Generate the buyer's conversion key
///
/// A new random key, shown this once (only its digest is kept); a key set before stops
/// working.
#[utoipa::path(
    put,
    path = "/buyers/{id}/conversion_key",
    tag = "Conversions",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The buyer's id.")),
    responses(
        (status = 200, description = "The key, shown this once (not to be cached).", body = inline(ShownKey)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn set_key(
    auditor: Auditor,
    plan: web::Data<dyn PlanStore>,
    keys: Keys,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let buyer = reachable(auditor.caller(), Action::Change, &plan, &id).await?;
    let key = RtbKey::generate();
    keys.set_conversion_key(buyer.id, Some(&key.sha256_hex())).await?;
    // The key itself is never recorded.
    auditor
        .record(Change::new(buyer.company_id, "conversion_key.set", buyer.id))
        .await;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ShownKey { key: key.expose() }))
}

/// Remove the buyer's conversion key
#[utoipa::path(
    delete,
    path = "/buyers/{id}/conversion_key",
    tag = "Conversions",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The buyer's id.")),
    responses(
        (status = 204, description = "Removed: reports with it are refused."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn delete_key(
    auditor: Auditor,
    plan: web::Data<dyn PlanStore>,
    keys: Keys,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let buyer = reachable(auditor.caller(), Action::Change, &plan, &id).await?;
    keys.set_conversion_key(buyer.id, None).await?;
    auditor
        .record(Change::new(buyer.company_id, "conversion_key.delete", buyer.id))
        .await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyers_key_reports_for_that_buyer_only_and_the_admin_for_any() {
        let (own, other) = (BuyerId::generate(), BuyerId::generate());
        assert!(may_report_for(&Principal::BuyerKey(own), own, None));
        assert!(!may_report_for(&Principal::BuyerKey(own), other, None));
    }
}
