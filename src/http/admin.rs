//! The admin API over the routing plan: the same operations for every kind of entity.
//!
//! `POST /{kind}` creates (`company_id` in the body for kinds a company owns), `GET /{kind}`
//! lists (`?company_id=&after=&limit=`), and `/{kind}/{id}` is read with `GET`, replaced with
//! `PUT`, merged with `PATCH` (RFC 7396 JSON merge patch) and removed with `DELETE`.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
    web,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    ApiRoute,
    auth::{Admin, Reader},
    error::ApiError,
    json,
};
use crate::{
    domain::{
        ids::Id,
        phone::E164,
        plan::{Campaign, CampaignId, CompanyId, PlanEntity, Record},
        rtb::caller_number,
        values::RtbKey,
    },
    store::{ListFilter, PlanTable, Store, StoreError},
};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// A caller number given as a filter, read as pings read one (a `+` left unencoded in a query
/// string arrives as a space).
pub(super) fn caller_param(text: Option<&str>) -> Result<Option<E164>, ApiError> {
    text.map(caller_number)
        .transpose()
        .map_err(|e| ApiError::invalid("caller", e.to_string()))
}

/// A list's page size: 100 unless asked, at most 1000.
pub(super) fn page_limit(asked: Option<u32>) -> Result<u32, ApiError> {
    let limit = asked.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ))
    }
}

/// The routes of one kind of entity, under `path`.
pub fn resource<T: PlanEntity>(path: &str) -> [ApiRoute; 6]
where
    dyn Store: PlanTable<T>,
{
    let one = format!("{path}/{{id}}");
    [
        ApiRoute::new(Method::GET, path, |r| r.to(list::<T>)),
        ApiRoute::new(Method::POST, path, |r| r.to(create::<T>)),
        ApiRoute::new(Method::GET, &one, |r| r.to(get::<T>)),
        ApiRoute::new(Method::PUT, &one, |r| r.to(replace::<T>)),
        ApiRoute::new(Method::PATCH, &one, |r| r.to(patch::<T>)),
        ApiRoute::new(Method::DELETE, &one, |r| r.to(delete::<T>)),
    ]
}

/// A campaign's RTB key, which the campaign record never shows.
pub fn rtb_key_routes() -> [ApiRoute; 3] {
    const PATH: &str = "/campaigns/{id}/rtb_key";
    [
        ApiRoute::new(Method::GET, PATH, |r| r.to(rtb_key_status)),
        ApiRoute::new(Method::PUT, PATH, |r| r.to(set_rtb_key)),
        ApiRoute::new(Method::DELETE, PATH, |r| r.to(delete_rtb_key)),
    ]
}

type StoreData = web::Data<dyn Store>;

pub(super) fn parse_id<T: PlanEntity>(text: &str) -> Result<Id<T>, ApiError> {
    // An id that cannot exist is simply not found.
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no {} with id {text}", T::KIND)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    company_id: Option<CompanyId>,
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page<T: PlanEntity> {
    data: Vec<Record<T>>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Id<T>>,
}

async fn list<T: PlanEntity>(
    reader: Reader,
    store: StoreData,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    let limit = page_limit(params.limit)?;
    let filter = ListFilter {
        company_id: params.company_id,
        after: params.after,
        limit,
    };
    let mut data = PlanTable::<T>::list(store.as_ref(), &filter).await?;
    if !reader.sees_secrets() {
        data.iter_mut().for_each(|record| record.spec.redact_secrets());
    }
    let next_after = match data.last() {
        Some(last) if data.len() == limit as usize => Some(last.id),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { data, next_after }))
}

async fn get<T: PlanEntity>(
    reader: Reader,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    let mut record = PlanTable::<T>::get(store.as_ref(), parse_id(&id)?).await?;
    if !reader.sees_secrets() {
        record.spec.redact_secrets();
    }
    Ok(HttpResponse::Ok().json(record))
}

async fn create<T: PlanEntity>(
    _: Admin,
    store: StoreData,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    let mut fields = json::object(&body)?;
    let company_id = if T::OWNED_BY_COMPANY {
        let value = fields
            .remove("company_id")
            .ok_or_else(|| ApiError::invalid("company_id", "missing field `company_id`"))?;
        let id = serde_json::from_value::<CompanyId>(value)
            .map_err(|e| ApiError::invalid("company_id", e.to_string()))?;
        Some(id)
    } else {
        None
    };
    let spec: T = json::typed(Value::Object(fields))?;
    let record = PlanTable::<T>::insert(store.as_ref(), company_id, &spec).await?;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), record.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(record))
}

async fn replace<T: PlanEntity>(
    _: Admin,
    store: StoreData,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    let current = PlanTable::<T>::get(store.as_ref(), parse_id(&id)?).await?;
    let mut fields = json::object(&body)?;
    remove_read_only(&mut fields, &current)?;
    let spec: T = json::typed(Value::Object(fields))?;
    // A replacement: the last writer wins, as with any PUT.
    let record = PlanTable::<T>::update(store.as_ref(), current.id, &spec, None).await?;
    Ok(HttpResponse::Ok().json(record))
}

/// Attempts at a merge before giving up on a record that keeps changing under it.
const PATCH_ATTEMPTS: usize = 3;

async fn patch<T: PlanEntity>(
    _: Admin,
    store: StoreData,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    let id = parse_id(&id)?;
    let mut changes = json::object(&body)?;
    let mut attempt = 1;
    loop {
        let current = PlanTable::<T>::get(store.as_ref(), id).await?;
        let spec = merge(&mut changes, &current)?;
        // Applies only to the record as read, so a concurrent change is merged, not lost.
        match PlanTable::<T>::update(store.as_ref(), id, &spec, Some(&current.spec)).await {
            Err(StoreError::Stale) if attempt < PATCH_ATTEMPTS => attempt += 1,
            result => return Ok(HttpResponse::Ok().json(result?)),
        }
    }
}

/// `current` with `changes` merged in (RFC 7396).
fn merge<T: PlanEntity>(changes: &mut Map<String, Value>, current: &Record<T>) -> Result<T, ApiError> {
    remove_read_only(changes, current)?;
    let mut merged = serde_json::to_value(&current.spec).map_err(|_| ApiError::Internal)?;
    json_patch::merge(&mut merged, &Value::Object(changes.clone()));
    json::typed(merged)
}

async fn delete<T: PlanEntity>(
    _: Admin,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError>
where
    dyn Store: PlanTable<T>,
{
    PlanTable::<T>::delete(store.as_ref(), parse_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lets a client send back what it read: the fields the store assigns are dropped, as long as
/// the body does not try to change the record's identity.
fn remove_read_only<T: PlanEntity>(
    fields: &mut Map<String, Value>,
    current: &Record<T>,
) -> Result<(), ApiError> {
    let identity = [
        ("id", Some(current.id.to_string())),
        ("company_id", current.company_id.map(|id| id.to_string())),
    ];
    for (key, value) in identity {
        match fields.remove(key) {
            Some(sent) if sent.as_str() != value.as_deref() => {
                return Err(ApiError::invalid(
                    key,
                    format!("a {}'s {key} cannot change", T::KIND),
                ));
            }
            _ => {}
        }
    }
    fields.remove("created_at");
    fields.remove("updated_at");
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RtbKeyRequest {
    key: Option<RtbKey>,
}

#[derive(Serialize)]
struct RtbKeyStatus {
    configured: bool,
}

async fn rtb_key_status(_: Admin, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let configured = store.has_rtb_key(parse_id::<Campaign>(&id)?).await?;
    Ok(HttpResponse::Ok().json(RtbKeyStatus { configured }))
}

/// Sets the key given, or a new random one, and shows it this once: only its digest is kept.
async fn set_rtb_key(
    _: Admin,
    store: StoreData,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let campaign: CampaignId = parse_id(&id)?;
    let request: RtbKeyRequest = json::typed(Value::Object(json::object(&body)?))?;
    let key = request.key.unwrap_or_else(RtbKey::generate);
    store.set_rtb_key(campaign, Some(&key.sha256_hex())).await?;
    // Shown this once: no cache may keep it.
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "key": key.expose() })))
}

async fn delete_rtb_key(_: Admin, store: StoreData, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    store.set_rtb_key(parse_id::<Campaign>(&id)?, None).await?;
    Ok(HttpResponse::NoContent().finish())
}
