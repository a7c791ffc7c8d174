//! The postback outbox, for operators: what was sent, what failed, and sending again.
//!
//! - `GET /postbacks?status=&call_sid=&before=&limit=`: newest first (`pending`, `delivered` or
//!   `failed`).
//! - `GET /postbacks/{id}`: one postback, with the body it sends.
//! - `POST /postbacks/{id}/retry`: queue it again now (a failed one, or a delivered one the
//!   receiver lost), its tries counted afresh; same id, so the same `Idempotency-Key`.

use actix_web::{HttpResponse, http::Method, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::page_limit,
    auth::{Admin, Reader},
    error::ApiError,
};
use crate::{
    calls::PlanCache,
    clock::Clock,
    domain::{
        call::CallSid,
        postback::{PostbackRecord, PostbackStatus},
    },
    postbacks::Outbox,
    store::{PostbackFilter, Store},
};

pub fn routes() -> [ApiRoute; 3] {
    [
        ApiRoute::new(Method::GET, "/postbacks", |r| r.to(list)),
        ApiRoute::new(Method::GET, "/postbacks/{id}", |r| r.to(get)),
        ApiRoute::new(Method::POST, "/postbacks/{id}/retry", |r| r.to(retry)),
    ]
}

type StoreData = web::Data<dyn Store>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    call_sid: Option<String>,
    before: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    data: Vec<PostbackRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<Uuid>,
}

async fn list(_: Reader, store: StoreData, params: web::Query<ListParams>) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(params.limit)?;
    let status = (params.status.as_deref())
        .map(|text| {
            PostbackStatus::parse(text).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("`{text}` is not one of pending, delivered, failed"),
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
    let data = store.postbacks(&filter).await?;
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

async fn get(_: Reader, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store.postback(id_of(&id)?).await?))
}

async fn retry(
    _: Admin,
    store: StoreData,
    clock: web::Data<dyn Clock>,
    outbox: web::Data<Outbox>,
    plan: web::Data<PlanCache>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id_of(&id)?;
    // To the endpoint as it is now: retrying after fixing its URL (or rotating its secret) must
    // reach the fixed one. An endpoint since removed keeps what the postback had.
    let plan = plan.current().await;
    let endpoint = plan.postback_endpoint(&store.postback(id).await?.endpoint);
    let queued = store.retry_postback(id, clock.now(), endpoint).await?;
    outbox.queued();
    Ok(HttpResponse::Ok().json(queued))
}
