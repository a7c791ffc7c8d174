//! The admin API over the routing plan: the same operations for every kind of entity.
//!
//! `POST /{kind}` creates (`company_id` in the body for kinds a company owns), `GET /{kind}`
//! lists (`?company_id=&after=&limit=`), and `/{kind}/{id}` is read with `GET`, replaced with
//! `PUT`, merged with `PATCH` (RFC 7396 JSON merge patch) and removed with `DELETE`.

use crate::fresh::Generate;
use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, header},
    web,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{
        ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, Ref, Required,
        path::{ParameterBuilder, ParameterIn},
        request_body::RequestBodyBuilder,
        schema::{ArrayBuilder, KnownFormat, SchemaFormat, Type},
    },
};
use uuid::Uuid;

use super::{
    ApiRoute,
    audit::{Auditor, Change},
    auth::Caller,
    error::ApiError,
    error::Body as ErrorBody,
    json,
    openapi::{self, Forbidden, Invalid, NotFound, Unauthorized, Unavailable, Who},
};
use crate::{
    domain::{
        access::{Action, Owner},
        ids::Id,
        outbound::OutboundRules,
        phone::E164,
        plan::{Buyer, Campaign, CampaignId, Company, CompanyId, PlanEntity, Publisher, Record},
        rtb::caller_number,
        schema::extended,
        values::RtbKey,
    },
    store::{ListFilter, PlanStore, PlanTable, StoreError},
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

/// Something done for each kind of plan entity, under its path: serving its routes, and
/// documenting them.
pub trait PlanKinds {
    fn kind<T: PlanEntity>(&mut self, path: &str)
    where
        dyn PlanStore: PlanTable<T>;
}

/// The plan's kinds of entity, in the order their routes are matched: the one list that both
/// the server and the OpenAPI document read.
pub fn each_plan_kind(kinds: &mut impl PlanKinds) {
    kinds.kind::<Company>("/companies");
    kinds.kind::<Buyer>("/buyers");
    kinds.kind::<Campaign>("/campaigns");
    kinds.kind::<Publisher>("/publishers");
}

/// The routes of one kind of entity, under `path`.
pub fn resource<T: PlanEntity>(path: &str) -> [ApiRoute; 6]
where
    dyn PlanStore: PlanTable<T>,
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

type StoreData = web::Data<dyn PlanStore>;

pub(super) fn parse_id<T: PlanEntity>(text: &str) -> Result<Id<T>, ApiError> {
    // An id that cannot exist is simply not found.
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no {} with id {text}", T::KIND)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only records of this company.
    company_id: Option<CompanyId>,
    /// Only records after this id (the last of the previous page).
    after: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
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
    caller: Caller,
    store: StoreData,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    caller.require(Action::ReadOperations)?;
    let limit = page_limit(params.limit)?;
    // Companies are narrowed by their own id, which `company_id` does not filter on.
    let company_id = match T::OWNED_BY_COMPANY {
        true => caller.company_to_list(params.company_id)?,
        false => params.company_id,
    };
    let filter = ListFilter {
        company_id,
        after: params.after,
        limit,
    };
    let page = PlanTable::<T>::list(store.as_ref(), &filter).await?;
    // The page goes on from the last record read, whether or not this caller sees it.
    let next_after = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.id),
        _ => None,
    };
    let mut data: Vec<_> = (page.into_iter())
        .filter(|record| caller.reaches(&record.owner()))
        .collect();
    if !caller.sees_secrets() {
        data.iter_mut().for_each(|record| record.spec.redact_secrets());
    }
    Ok(HttpResponse::Ok().json(Page { data, next_after }))
}

/// The record named by `id` (its text, from a path), if the caller may act on it: 403 unless
/// the role allows the action, 404 for an id that cannot exist or a record out of its scope.
pub(super) async fn reachable_named<T: PlanEntity>(
    caller: &Caller,
    action: Action,
    store: &(dyn PlanStore + 'static),
    id: &str,
) -> Result<Record<T>, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    caller.require(action)?;
    reachable(caller, action, store, parse_id(id)?).await
}

/// The record, if the caller's scope reaches it (else 404, as for one that does not exist).
async fn reachable<T: PlanEntity>(
    caller: &Caller,
    action: Action,
    store: &(dyn PlanStore + 'static),
    id: Id<T>,
) -> Result<Record<T>, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    caller.require(action)?;
    let record = PlanTable::<T>::get(store, id).await?;
    caller.require_on(action, &record.owner(), || {
        ApiError::NotFound(format!("no {} with id {id}", T::KIND))
    })?;
    Ok(record)
}

/// A record as the audit log keeps it: without secrets.
fn audited<T: PlanEntity>(record: &Record<T>) -> Record<T> {
    let mut record = record.clone();
    record.spec.redact_secrets();
    record
}

async fn get<T: PlanEntity>(
    caller: Caller,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    let mut record = reachable(&caller, Action::ReadOperations, store.as_ref(), parse_id(&id)?).await?;
    if !caller.sees_secrets() {
        record.spec.redact_secrets();
    }
    Ok(HttpResponse::Ok().json(record))
}

async fn create<T: PlanEntity>(
    auditor: Auditor,
    store: StoreData,
    rules: web::Data<OutboundRules>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    let caller = auditor.caller();
    caller.require(Action::Change)?;
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
    // A company is created by the install's administrator only; anything else in a company
    // the caller's scope reaches.
    let allowed = match company_id {
        Some(company) => caller.reaches(&Owner::company(Some(company))),
        None => caller.grant().is_install_admin(),
    };
    if !allowed {
        return Err(match company_id {
            Some(_) => ApiError::invalid("company_id", "no such company"),
            None => ApiError::Forbidden("only the install's administrator creates companies"),
        });
    }
    let spec: T = json::typed(Value::Object(fields))?;
    outbound_allowed(&spec, &rules)?;
    let record = PlanTable::<T>::insert(store.as_ref(), company_id, &spec).await?;
    auditor
        .record(
            Change::new(record.owner().company, format!("{}.create", T::KIND), record.id)
                .after(audited(&record)),
        )
        .await;
    let location = format!("{}/{}", req.path().trim_end_matches('/'), record.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(record))
}

async fn replace<T: PlanEntity>(
    auditor: Auditor,
    store: StoreData,
    rules: web::Data<OutboundRules>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    let current = reachable(auditor.caller(), Action::Change, store.as_ref(), parse_id(&id)?).await?;
    let mut fields = json::object(&body)?;
    remove_read_only(&mut fields, &current)?;
    let spec: T = json::typed(Value::Object(fields))?;
    outbound_allowed(&spec, &rules)?;
    // A replacement: the last writer wins, as with any PUT.
    let record = PlanTable::<T>::update(store.as_ref(), current.id, &spec, None).await?;
    record_update(&auditor, &current, &record).await;
    Ok(HttpResponse::Ok().json(record))
}

async fn record_update<T: PlanEntity>(auditor: &Auditor, before: &Record<T>, after: &Record<T>) {
    let change = Change::new(after.owner().company, format!("{}.update", T::KIND), after.id);
    auditor
        .record(change.before(audited(before)).after(audited(after)))
        .await;
}

/// Attempts at a merge before giving up on a record that keeps changing under it.
const PATCH_ATTEMPTS: usize = 3;

async fn patch<T: PlanEntity>(
    auditor: Auditor,
    store: StoreData,
    rules: web::Data<OutboundRules>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    auditor.caller().require(Action::Change)?;
    let id = parse_id(&id)?;
    let mut changes = json::object(&body)?;
    let mut attempt = 1;
    loop {
        let current = reachable(auditor.caller(), Action::Change, store.as_ref(), id).await?;
        let spec = merge(&mut changes, &current)?;
        outbound_allowed(&spec, &rules)?;
        // Applies only to the record as read, so a concurrent change is merged, not lost.
        match PlanTable::<T>::update(store.as_ref(), id, &spec, Some(&current.spec)).await {
            Err(StoreError::Stale) if attempt < PATCH_ATTEMPTS => attempt += 1,
            result => {
                let record = result?;
                record_update(&auditor, &current, &record).await;
                return Ok(HttpResponse::Ok().json(record));
            }
        }
    }
}

/// Refuses postback URLs the server may not send to (see [`OutboundRules`]), naming the field.
fn outbound_allowed<T: PlanEntity>(spec: &T, rules: &OutboundRules) -> Result<(), ApiError> {
    match spec.postbacks().map(|postbacks| rules.check_postbacks(postbacks)) {
        Some(Err((field, refused))) => Err(ApiError::invalid(field, refused.to_string())),
        _ => Ok(()),
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
    auditor: Auditor,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError>
where
    dyn PlanStore: PlanTable<T>,
{
    let current = reachable(auditor.caller(), Action::Change, store.as_ref(), parse_id(&id)?).await?;
    PlanTable::<T>::delete(store.as_ref(), current.id).await?;
    let change = Change::new(current.owner().company, format!("{}.delete", T::KIND), current.id);
    auditor.record(change.before(audited(&current))).await;
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RtbKeyRequest {
    /// 16 to 200 printable characters without spaces; omit for a random key.
    #[schema(value_type = String, min_length = 16, max_length = 200)]
    key: Option<RtbKey>,
}

#[derive(Serialize, ToSchema)]
struct RtbKeyStatus {
    configured: bool,
}

/// An RTB key, shown the once it is set.
#[derive(Serialize, ToSchema)]
struct ShownKey<'a> {
    key: &'a str,
}

/// Whether the campaign has an RTB key
#[utoipa::path(
    get,
    path = "/campaigns/{id}/rtb_key",
    tag = "RTB",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The campaign's id.")),
    responses(
        (status = 200, description = "Configured or not; the key itself is never shown again.", body = inline(RtbKeyStatus)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn rtb_key_status(
    caller: Caller,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let campaign = reachable::<Campaign>(&caller, Action::Change, store.as_ref(), parse_id(&id)?).await?;
    let configured = store.has_rtb_key(campaign.id).await?;
    Ok(HttpResponse::Ok().json(RtbKeyStatus { configured }))
}

/// Set or generate the campaign's RTB key
///
/// Sets the key given, or a new random one, and shows it this once: only its digest is kept.
#[utoipa::path(
    put,
    path = "/campaigns/{id}/rtb_key",
    tag = "RTB",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The campaign's id.")),
    request_body(content = inline(RtbKeyRequest), description = "An object: `{}` for a random key."),
    responses(
        (status = 200, description = "The key, shown this once (not to be cached).", body = inline(ShownKey)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "Another campaign uses this key.", body = ErrorBody),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn set_rtb_key(
    auditor: Auditor,
    store: StoreData,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let campaign: CampaignId = parse_id(&id)?;
    let campaign = reachable::<Campaign>(auditor.caller(), Action::Change, store.as_ref(), campaign).await?;
    let request: RtbKeyRequest = json::typed(Value::Object(json::object(&body)?))?;
    let key = request.key.unwrap_or_else(RtbKey::generate);
    store.set_rtb_key(campaign.id, Some(&key.sha256_hex())).await?;
    // The key itself is never recorded.
    auditor
        .record(Change::new(campaign.company_id, "rtb_key.set", campaign.id))
        .await;
    // Shown this once: no cache may keep it.
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ShownKey { key: key.expose() }))
}

/// Remove the campaign's RTB key
#[utoipa::path(
    delete,
    path = "/campaigns/{id}/rtb_key",
    tag = "RTB",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The campaign's id.")),
    responses(
        (status = 204, description = "Removed: pings with it are refused."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn delete_rtb_key(
    auditor: Auditor,
    store: StoreData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let campaign =
        reachable::<Campaign>(auditor.caller(), Action::Change, store.as_ref(), parse_id(&id)?).await?;
    store.set_rtb_key(campaign.id, None).await?;
    auditor
        .record(Change::new(campaign.company_id, "rtb_key.delete", campaign.id))
        .await;
    Ok(HttpResponse::NoContent().finish())
}

/// The operations of each kind of entity, added to the OpenAPI document as [`resource`] serves
/// them (its handlers are generic, so no `#[utoipa::path]` can describe them).
pub struct Documented<'a>(pub &'a mut OpenApi);

impl PlanKinds for Documented<'_> {
    fn kind<T: PlanEntity>(&mut self, path: &str)
    where
        dyn PlanStore: PlanTable<T>,
    {
        const COLLISION: &str = "It collides with another record: a name, a tracking number or an `external_id` taken \
             (`error.field` names it).";
        let (kind, kinds) = (T::KIND, path.trim_start_matches('/'));
        let record = || Ref::from_schema_name(<Record<T> as ToSchema>::name());
        let fields = || Ref::from_schema_name(<T as ToSchema>::name());
        let op = |id: String, summary: String, who| {
            openapi::operation("Plan", summary, who).operation_id(Some(id))
        };
        let id_param = ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("The record's id."))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            ))
            .build();
        let body = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build()
        };

        let list_params = ListParams::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .filter(|param| T::OWNED_BY_COMPANY || param.name != "company_id");
        let page = ObjectBuilder::new()
            .property("data", ArrayBuilder::new().items(record()))
            .required("data")
            .property(
                "next_after",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .description(Some(
                        "Pass as `after` for the next page; absent on the last page.",
                    )),
            );
        let list = op(format!("list_{kinds}"), format!("List {kinds}"), Who::Readers)
            .parameters(Some(list_params))
            .response("200", openapi::json("A page of records, oldest first.", page))
            .response("401", openapi::shared::<Unauthorized>())
            .response("422", openapi::shared::<Invalid>())
            .response("503", openapi::shared::<Unavailable>());

        // The owner is named in the body of a new record, and is its for good.
        let (new_fields, create_note) = if T::OWNED_BY_COMPANY {
            let owner = ObjectBuilder::new()
                .property(
                    "company_id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                        .description(Some("The company it belongs to.")),
                )
                .required("company_id");
            (
                extended::<T>(owner),
                Some("Give the owner as `company_id` in the body."),
            )
        } else {
            (fields().into(), None)
        };
        let create = op(format!("create_{kind}"), format!("Create a {kind}"), Who::Admins)
            .description(create_note)
            .request_body(Some(body(new_fields)))
            .response("201", openapi::json("Created; `Location` names it.", record()))
            .response("401", openapi::shared::<Unauthorized>())
            .response("403", openapi::shared::<Forbidden>())
            .response("409", openapi::json(COLLISION, Ref::from_schema_name("Error")))
            .response("422", openapi::shared::<Invalid>())
            .response("503", openapi::shared::<Unavailable>());

        let get = op(format!("get_{kind}"), format!("Read a {kind}"), Who::Readers)
            .parameter(id_param.clone())
            .response("200", openapi::json("The record.", record()))
            .response("401", openapi::shared::<Unauthorized>())
            .response("404", openapi::shared::<NotFound>())
            .response("503", openapi::shared::<Unavailable>());

        let changed = |operation: utoipa::openapi::path::OperationBuilder, conflict: &str| {
            operation
                .parameter(id_param.clone())
                .response("200", openapi::json("The record as stored.", record()))
                .response("401", openapi::shared::<Unauthorized>())
                .response("403", openapi::shared::<Forbidden>())
                .response("404", openapi::shared::<NotFound>())
                .response("409", openapi::json(conflict, Ref::from_schema_name("Error")))
                .response("422", openapi::shared::<Invalid>())
                .response("503", openapi::shared::<Unavailable>())
        };
        let replace = changed(
            op(
                format!("replace_{kind}"),
                format!("Replace a {kind}"),
                Who::Admins,
            ),
            COLLISION,
        )
        .description(Some(
            "Every field as it is to be: one left out takes its default. A record read may be \
                 sent back as it is: `id`, `company_id`, `created_at` and `updated_at` are ignored \
                 (`id` and `company_id` cannot change).",
        ))
        .request_body(Some(body(fields().into())));
        let merge_patch = ObjectBuilder::new().description(Some(
            "The fields to change: `null` removes an optional one, an object is merged into the \
             field's.",
        ));
        let patch = changed(
            op(
                format!("patch_{kind}"),
                format!("Change some fields of a {kind}"),
                Who::Admins,
            ),
            &format!("{COLLISION} Or it kept changing while the patch was merged: read it and try again."),
        )
        .description(Some("An RFC 7396 JSON merge patch."))
        .request_body(Some(body(merge_patch.into())));

        let delete = op(format!("delete_{kind}"), format!("Remove a {kind}"), Who::Admins)
            .description(Some("Refused (409) while other records refer to it."))
            .parameter(id_param)
            .response(
                "204",
                utoipa::openapi::ResponseBuilder::new()
                    .description("Removed.")
                    .build(),
            )
            .response("401", openapi::shared::<Unauthorized>())
            .response("403", openapi::shared::<Forbidden>())
            .response("404", openapi::shared::<NotFound>())
            .response(
                "409",
                openapi::json("Other records still refer to it.", Ref::from_schema_name("Error")),
            )
            .response("503", openapi::shared::<Unavailable>());

        let one = format!("{path}/{{id}}");
        let paths = &mut self.0.paths;
        paths.add_path_operation(path, vec![HttpMethod::Get], list);
        paths.add_path_operation(path, vec![HttpMethod::Post], create);
        paths.add_path_operation(&one, vec![HttpMethod::Get], get);
        paths.add_path_operation(&one, vec![HttpMethod::Put], replace);
        paths.add_path_operation(&one, vec![HttpMethod::Patch], patch);
        paths.add_path_operation(&one, vec![HttpMethod::Delete], delete);

        let mut schemas = vec![(
            <Record<T> as ToSchema>::name().into_owned(),
            <Record<T> as utoipa::PartialSchema>::schema(),
        )];
        <Record<T> as ToSchema>::schemas(&mut schemas);
        let components = self.0.components.get_or_insert_with(Default::default);
        components.schemas.extend(schemas);
    }
}
