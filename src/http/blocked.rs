//! Companies' block lists: callers refused before any buyer hears of them.
//!
//! - `GET /blocked_callers?company_id=&after=&limit=`: entries in creation order.
//! - `POST /blocked_callers` `{"company_id", "pattern", "reason"?}`: block a number (`+E.164`)
//!   or every number starting with a prefix (`+1900*`); 201 with `Location`.
//! - `GET` / `DELETE /blocked_callers/{id}`: read one, or stop blocking it.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
    web,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::page_limit,
    auth::{Admin, Reader},
    error::ApiError,
    json,
};
use crate::{
    domain::{
        block::{BlockEntry, BlockedCaller},
        plan::CompanyId,
    },
    store::{ListFilter, Store},
};

pub fn routes() -> [ApiRoute; 4] {
    const ONE: &str = "/blocked_callers/{id}";
    [
        ApiRoute::new(Method::GET, "/blocked_callers", |r| r.to(list)),
        ApiRoute::new(Method::POST, "/blocked_callers", |r| r.to(create)),
        ApiRoute::new(Method::GET, ONE, |r| r.to(get)),
        ApiRoute::new(Method::DELETE, ONE, |r| r.to(delete)),
    ]
}

type StoreData = web::Data<dyn Store>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    company_id: Option<CompanyId>,
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    data: Vec<BlockEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

async fn list(_: Reader, store: StoreData, params: web::Query<ListParams>) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(params.limit)?;
    let filter = ListFilter {
        company_id: params.company_id,
        after: params.after,
        limit,
    };
    let data = store.blocked_callers(&filter).await?;
    let next_after = match data.last() {
        Some(last) if data.len() == limit as usize => Some(last.id),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { data, next_after }))
}

async fn create(
    _: Admin,
    store: StoreData,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mut fields = json::object(&body)?;
    let company = fields
        .remove("company_id")
        .ok_or_else(|| ApiError::invalid("company_id", "missing field `company_id`"))?;
    let company: CompanyId =
        serde_json::from_value(company).map_err(|e| ApiError::invalid("company_id", e.to_string()))?;
    let blocked: BlockedCaller = json::typed(Value::Object(fields))?;
    let entry = store.block_caller(company, &blocked).await?;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), entry.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(entry))
}

fn entry_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no blocked caller with id {text}")))
}

async fn get(_: Reader, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store.blocked_caller(entry_id(&id)?).await?))
}

async fn delete(_: Admin, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    store.unblock_caller(entry_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
