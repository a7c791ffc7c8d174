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
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        ObjectBuilder, RefOr,
        schema::{KnownFormat, Schema, SchemaFormat, Type},
    },
};
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::page_limit,
    audit::{Auditor, Change},
    auth::Caller,
    error::{ApiError, Body as ErrorBody},
    json,
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    domain::{
        access::{Action, Owner},
        block::{BlockEntry, BlockedCaller},
        plan::CompanyId,
        schema::extended,
    },
    store::{BlockListStore, ListFilter},
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

type StoreData = web::Data<dyn BlockListStore>;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only entries of this company.
    company_id: Option<CompanyId>,
    /// Only entries after this id (the last of the previous page).
    after: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct Page {
    data: Vec<BlockEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Uuid)]
    next_after: Option<Uuid>,
}

/// A new entry's body: the company's, and whom it blocks (the handler reads the owner, then
/// the entry).
struct NewEntry;

impl PartialSchema for NewEntry {
    fn schema() -> RefOr<Schema> {
        let owner = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .description(Some("The company whose list it goes on."));
        extended::<BlockedCaller>(
            ObjectBuilder::new()
                .property("company_id", owner)
                .required("company_id"),
        )
    }
}

impl ToSchema for NewEntry {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        BlockedCaller::schemas(schemas);
    }
}

/// List blocked callers
#[utoipa::path(
    get,
    path = "/blocked_callers",
    tag = "Plan",
    operation_id = "list_blocked_callers",
    security(("supervisor" = []), ("admin" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of entries, oldest first.", body = inline(Page)),
        (status = 401, response = Unauthorized),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    caller: Caller,
    store: StoreData,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadOperations)?;
    let limit = page_limit(params.limit)?;
    let filter = ListFilter {
        company_id: caller.company_to_list(params.company_id)?,
        after: params.after,
        limit,
    };
    let page = store.blocked_callers(&filter).await?;
    let next_after = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.id),
        _ => None,
    };
    let data = (page.into_iter())
        .filter(|entry| caller.reaches(&Owner::company(Some(entry.company_id))))
        .collect();
    Ok(HttpResponse::Ok().json(Page { data, next_after }))
}

/// The entry, if the caller may act on it (else 404, as for one that does not exist).
async fn reachable(
    caller: &Caller,
    action: Action,
    store: &StoreData,
    id: &str,
) -> Result<BlockEntry, ApiError> {
    caller.require(action)?;
    let id = entry_id(id)?;
    let entry = store.blocked_caller(id).await?;
    let owner = Owner::company(Some(entry.company_id));
    caller.require_on(action, &owner, || {
        ApiError::NotFound(format!("no blocked caller with id {id}"))
    })?;
    Ok(entry)
}

/// Block a caller
///
/// A number, or every number starting with a prefix, of one company. Its calls are answered
/// with `<Reject>` and recorded as `blocked`; its RTB pings get `no-target` with reason
/// `blocked`.
#[utoipa::path(
    post,
    path = "/blocked_callers",
    tag = "Plan",
    operation_id = "block_caller",
    security(("admin" = [])),
    request_body = inline(NewEntry),
    responses(
        (status = 201, description = "Blocked; `Location` names the entry.", body = BlockEntry),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "The company blocks that pattern already.", body = ErrorBody),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn create(
    auditor: Auditor,
    store: StoreData,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let caller = auditor.caller();
    caller.require(Action::Change)?;
    let mut fields = json::object(&body)?;
    let company = fields
        .remove("company_id")
        .ok_or_else(|| ApiError::invalid("company_id", "missing field `company_id`"))?;
    let company: CompanyId =
        serde_json::from_value(company).map_err(|e| ApiError::invalid("company_id", e.to_string()))?;
    if !caller.reaches(&Owner::company(Some(company))) {
        return Err(ApiError::invalid("company_id", "no such company"));
    }
    let blocked: BlockedCaller = json::typed(Value::Object(fields))?;
    let entry = store.block_caller(company, &blocked).await?;
    auditor
        .record(Change::new(Some(company), "blocked_caller.create", entry.id).after(&entry))
        .await;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), entry.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(entry))
}

fn entry_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no blocked caller with id {text}")))
}

/// Read a blocked caller
#[utoipa::path(
    get,
    path = "/blocked_callers/{id}",
    tag = "Plan",
    operation_id = "get_blocked_caller",
    security(("supervisor" = []), ("admin" = [])),
    params(("id" = Uuid, Path, description = "The entry's id.")),
    responses(
        (status = 200, description = "The entry.", body = BlockEntry),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn get(caller: Caller, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(reachable(&caller, Action::ReadOperations, &store, &id).await?))
}

/// Stop blocking a caller
#[utoipa::path(
    delete,
    path = "/blocked_callers/{id}",
    tag = "Plan",
    operation_id = "unblock_caller",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The entry's id.")),
    responses(
        (status = 204, description = "No longer blocked."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn delete(auditor: Auditor, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let entry = reachable(auditor.caller(), Action::Change, &store, &id).await?;
    store.unblock_caller(entry.id).await?;
    let change = Change::new(Some(entry.company_id), "blocked_caller.delete", entry.id);
    auditor.record(change.before(&entry)).await;
    Ok(HttpResponse::NoContent().finish())
}
