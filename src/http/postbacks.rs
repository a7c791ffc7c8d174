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
    auth::{Admin, Reader},
    error::{ApiError, Body as ErrorBody},
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    domain::{
        call::CallSid,
        postback::{PostbackRecord, PostbackStatus},
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
    reader: Reader,
    store: StoreData,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
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
    let mut data = store.postbacks(&filter).await?;
    if !reader.sees_secrets() {
        data = data.into_iter().map(PostbackRecord::redacted).collect();
    }
    let next_before = match data.last() {
        Some(last) if data.len() == limit as usize => Some(last.id),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
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
async fn get(reader: Reader, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut postback = store.postback(id_of(&id)?).await?;
    if !reader.sees_secrets() {
        postback = postback.redacted();
    }
    Ok(HttpResponse::Ok().json(postback))
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
    _: Admin,
    store: StoreData,
    clock: web::Data<dyn Clock>,
    outbox: web::Data<Outbox>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queued = store.retry_postback(id_of(&id)?, clock.now()).await?;
    outbox.queued();
    Ok(HttpResponse::Ok().json(queued))
}
