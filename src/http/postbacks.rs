//! The postback outbox, for operators: what was sent, what failed, and sending again.
//!
//! - `GET /postbacks?status=&call_sid=&before=&limit=`: newest first (`pending`, `delivered`,
//!   `failed` or `cancelled`).
//! - `GET /postbacks/{id}`: one postback, with the body it sends.
//!
//! Why a try failed (`last_error`: the receiver's answer, or what its name resolved to) is
//! shown to admin tokens only; supervisors read that it failed, and its status code.
//! - `POST /postbacks/{id}/retry`: queue it again now (a failed one, or a delivered one the
//!   receiver lost), its tries counted afresh; same id, so the same `Idempotency-Key`.

use actix_web::{HttpResponse, http::Method, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::page_limit,
    audit::{Auditor, Change},
    auth::Caller,
    error::{ApiError, Body as ErrorBody},
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    decide::PlanCache,
    domain::{
        access::{Action, Owner},
        call::CallSid,
        postback::{PostbackRecord, PostbackStatus},
        routing::RoutingPlan,
    },
    postbacks::Outbox,
    store::{PostbackFilter, PostbackStore},
};

pub fn routes() -> [ApiRoute; 3] {
    [
        ApiRoute::new(Method::GET, "/postbacks", |r| r.to(list)),
        ApiRoute::new(Method::GET, "/postbacks/{id}", |r| r.to(get)),
        ApiRoute::new(Method::POST, "/postbacks/{id}/retry", |r| r.to(retry)),
    ]
}

type StoreData = web::Data<dyn PostbackStore>;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only postbacks in this state.
    #[param(value_type = Option<PostbackStatus>)]
    status: Option<String>,
    /// Only this call's postbacks.
    call_sid: Option<String>,
    /// Only postbacks older than this one (`next_before`).
    before: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct Page {
    data: Vec<PostbackRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Uuid)]
    next_before: Option<Uuid>,
}

/// The postback outbox
#[utoipa::path(
    get,
    path = "/postbacks",
    tag = "Postbacks",
    operation_id = "list_postbacks",
    security(("supervisor" = []), ("admin" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "Newest first.", body = inline(Page)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    caller: Caller,
    store: StoreData,
    plan: web::Data<PlanCache>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadOperations)?;
    let limit = page_limit(params.limit)?;
    let status = (params.status.as_deref())
        .map(|text| {
            PostbackStatus::parse(text).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("`{text}` is not one of pending, delivered, failed, cancelled"),
                )
            })
        })
        .transpose()?;
    let call_sid = (params.call_sid.as_deref())
        .map(CallSid::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("call_sid", e))?;
    let filter = PostbackFilter {
        status,
        call_sid,
        before: params.before,
        limit,
    };
    let page = store.postbacks(&filter).await?;
    // The page goes on from the last postback read, whether or not this caller sees it.
    let next_before = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.id),
        _ => None,
    };
    let plan = plan.current().await;
    let data = (page.into_iter())
        .filter(|postback| caller.reaches(&owner(&plan, postback)))
        .map(|postback| seen(&caller, postback))
        .collect();
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
}

/// A postback as the caller may read it: a receiver's answer is for admins only.
fn seen(caller: &Caller, postback: PostbackRecord) -> PostbackRecord {
    if caller.sees_secrets() {
        postback
    } else {
        postback.redacted()
    }
}

/// Whose a postback is: the company of the buyer or publisher it goes to (as the plan has them
/// now; a removed one's postbacks are the install's).
fn owner(plan: &RoutingPlan, postback: &PostbackRecord) -> Owner {
    let mut parts = postback.endpoint.split(':');
    let (kind, id) = (parts.next(), parts.next().and_then(|id| id.parse().ok()));
    let company = match (kind, id) {
        (Some("buyer"), Some(id)) => plan
            .buyer(crate::domain::ids::Id::from_uuid(id))
            .and_then(|b| b.company_id),
        (Some("publisher"), Some(id)) => {
            (plan.publisher_record(crate::domain::ids::Id::from_uuid(id))).and_then(|p| p.company_id)
        }
        _ => None,
    };
    Owner::company(company)
}

/// The postback, if the caller may act on it (else 404, as for one that does not exist).
async fn reachable(
    caller: &Caller,
    action: Action,
    store: &StoreData,
    plan: &PlanCache,
    id: &str,
) -> Result<PostbackRecord, ApiError> {
    caller.require(action)?;
    let postback = store.postback(id_of(id)?).await?;
    let owner = owner(&*plan.current().await, &postback);
    caller.require_on(action, &owner, || {
        ApiError::NotFound(format!("no postback with id {id}"))
    })?;
    Ok(postback)
}

fn id_of(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no postback with id {text}")))
}

/// One postback, with the body it sends
#[utoipa::path(
    get,
    path = "/postbacks/{id}",
    tag = "Postbacks",
    operation_id = "get_postback",
    security(("supervisor" = []), ("admin" = [])),
    params(("id" = Uuid, Path, description = "The postback's id.")),
    responses(
        (status = 200, description = "The postback.", body = PostbackRecord),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn get(
    caller: Caller,
    store: StoreData,
    plan: web::Data<PlanCache>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let postback = reachable(&caller, Action::ReadOperations, &store, &plan, &id).await?;
    Ok(HttpResponse::Ok().json(seen(&caller, postback)))
}

/// Send a postback again
///
/// Queues a failed postback (or a delivered one the receiver lost) again now, to its endpoint
/// as the plan has it at each try (a fixed URL, a rotated secret); its tries are counted afresh.
/// A cancelled postback, or one whose endpoint is gone, is not sent again.
#[utoipa::path(
    post,
    path = "/postbacks/{id}/retry",
    tag = "Postbacks",
    operation_id = "retry_postback",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The postback's id.")),
    responses(
        (status = 200, description = "Queued again, due now; same id (and `Idempotency-Key`).", body = PostbackRecord),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A node is sending it now; or it was cancelled, or its endpoint was removed (the message says which).", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
async fn retry(
    auditor: Auditor,
    store: StoreData,
    plan: web::Data<PlanCache>,
    clock: web::Data<dyn Clock>,
    outbox: web::Data<Outbox>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let postback = reachable(auditor.caller(), Action::Change, &store, &plan, &id).await?;
    let queued = store.retry_postback(postback.id, clock.now()).await?;
    outbox.queued();
    let change = Change::new(
        owner(&*plan.current().await, &postback).company,
        "postback.retry",
        postback.id,
    );
    auditor
        .record(
            change.before(serde_json::json!({ "status": postback.status, "attempts": postback.attempts })),
        )
        .await;
    Ok(HttpResponse::Ok().json(queued))
}
