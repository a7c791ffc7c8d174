//! `GET /openapi.json`: the OpenAPI document of `/api/v1`, open to anyone (it holds no data).
//!
//! Generated from the code: each handler's `#[utoipa::path]` (what it takes and answers, who
//! may call it), the types it answers with (`ToSchema`), and the plan's kinds of entity, whose
//! operations one generic handler serves ([`admin::resource_paths`]). A test checks that the
//! document names exactly the routes served, and that real answers match its schemas.

use std::sync::LazyLock;

use actix_web::{HttpResponse, http::Method};
use serde_json::Value;
use utoipa::{
    Modify, OpenApi, ToResponse,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        path::OperationBuilder,
        response::Response,
        schema::Schema,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use super::{
    ApiRoute, admin, audit, blocked, calls, capacity, conversions, error, error::ApiError, events, postbacks,
    rtb, stats, tokens,
};
use crate::domain::capacity::CapPeriod;

pub fn routes() -> [ApiRoute; 1] {
    [ApiRoute::new(Method::GET, "/openapi.json", |r| r.to(document))]
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard API",
        version = "1",
        description = "The admin and status API of Switchboard, a call controller for pay-per-call \
            networks. A token has a role (admin, analyst, supervisor, publisher, buyer) and a scope \
            (the install, companies, publishers or buyers): admins change what their scope reaches, \
            analysts and supervisors read it, partners read their own calls. Send it as \
            `Authorization: Bearer <token>`. Errors are JSON with a stable `error.code`.",
    ),
    servers((url = "/api/v1")),
    tags(
        (name = "Plan", description = "Companies, buyers, campaigns, publishers and block lists."),
        (name = "Calls", description = "Live and past calls."),
        (name = "Conversions", description = "Buyers' reports of their calls' conversions, and \
            returns: each made once under its `Idempotency-Key`."),
        (name = "Supervision", description = "Statistics and buyer load."),
        (name = "RTB", description = "Keys and the ping log."),
        (name = "Access", description = "API tokens: issued, rotated and revoked. A token's secret \
            is shown once, when issued; only its SHA-256 digest is kept."),
        (name = "Postbacks", description = "Webhooks Switchboard sends buyers and publishers, \
            from a durable outbox."),
        (name = "Meta", description = "This document."),
    ),
    paths(
        admin::rtb_key_status,
        admin::set_rtb_key,
        admin::delete_rtb_key,
        capacity::load,
        capacity::show,
        capacity::reset,
        calls::live,
        calls::search,
        calls::export,
        calls::call,
        conversions::report,
        conversions::return_conversion,
        conversions::report_by_url,
        conversions::key_status,
        conversions::set_key,
        conversions::delete_key,
        stats::timeline,
        stats::campaigns,
        stats::buyers,
        stats::publishers,
        events::events,
        document,
        rtb::log,
        rtb::export,
        tokens::me,
        tokens::list,
        tokens::issue,
        tokens::rotate,
        tokens::revoke,
        blocked::list,
        blocked::create,
        blocked::get,
        blocked::delete,
        postbacks::list,
        postbacks::get,
        postbacks::retry,
        audit::list,
    ),
    components(
        // Referred to by responses and a path parameter only, so named here.
        schemas(error::Body, CapPeriod),
        responses(Unauthorized, Forbidden, NotFound, Invalid, Unavailable),
    ),
    modifiers(&SecuritySchemes, &PlanResources, &ExportsTakeNoLimit),
)]
struct ApiDoc;

/// The document, serialized once, when first asked for.
static DOCUMENT: LazyLock<Result<String, String>> = LazyLock::new(|| {
    let mut document = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    fold_descriptions(&mut document);
    serde_json::to_string(&document).map_err(|e| e.to_string())
});

/// utoipa writes a description given to an inlined schema (a bounded integer) as `allOf:
/// [schema, {"type": "object", "description": …}]`, which only an object can match: each such
/// wrapper is folded into the schema it describes.
fn fold_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let wrapped = match map.get("allOf") {
                Some(Value::Array(parts)) => parts.len() == 2 && is_description(&parts[1]),
                _ => false,
            };
            if wrapped
                && let Some(Value::Array(mut parts)) = map.remove("allOf")
                && let (Some(Value::Object(description)), Some(Value::Object(schema))) =
                    (parts.pop(), parts.pop())
            {
                let siblings = std::mem::replace(map, schema);
                map.extend(description.into_iter().filter(|(key, _)| key != "type"));
                map.extend(siblings);
            }
            map.values_mut().for_each(fold_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(fold_descriptions),
        _ => {}
    }
}

/// A schema that only says things about another: `{"type": "object", "description": …}`.
fn is_description(part: &Value) -> bool {
    const SAYS: [&str; 6] = ["type", "description", "default", "title", "readOnly", "writeOnly"];
    part.as_object().is_some_and(|part| {
        part.get("type") == Some(&Value::from("object"))
            && part.keys().all(|key| SAYS.contains(&key.as_str()))
    })
}

/// The OpenAPI 3.1 document of this API
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "Meta",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1.", content_type = "application/json", body = Object)),
)]
async fn document() -> Result<HttpResponse, ApiError> {
    match &*DOCUMENT {
        Ok(json) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json.as_str())),
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            Err(ApiError::Internal)
        }
    }
}

/// Who may call: `admin` (the admin token, or one issued as admin) and `supervisor` (read-only).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin", bearer("ADMIN_TOKEN, or a token issued with role admin."));
        components.add_security_scheme(
            "supervisor",
            bearer("One of SUPERVISOR_TOKENS, or a token issued with role supervisor: read-only."),
        );
        components.add_security_scheme(
            "analyst",
            bearer("A token issued with role analyst: reads everything of its companies, the audit log too."),
        );
        components.add_security_scheme(
            "publisher",
            bearer("A publisher's token: its own calls and statistics, without revenue or buyers."),
        );
        components.add_security_scheme(
            "buyer",
            bearer("A buyer's token: the calls it took and its statistics, without publishers or payouts."),
        );
    }
}

/// The CSV exports take their lists' filters, but not `limit`: an export has every row.
struct ExportsTakeNoLimit;

impl Modify for ExportsTakeNoLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in ["/calls.csv", "/rtb.csv"] {
            let export = (openapi.paths.paths.get_mut(path)).and_then(|item| item.get.as_mut());
            if let Some(parameters) = export.and_then(|export| export.parameters.as_mut()) {
                parameters.retain(|parameter| !matches!(parameter, RefOr::T(p) if p.name == "limit"));
            }
        }
    }
}

/// The operations on the plan's entities, one set per kind (their handlers are generic).
struct PlanResources;

impl Modify for PlanResources {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        admin::each_plan_kind(&mut admin::Documented(openapi));
    }
}

/// Who may call an operation.
#[derive(Clone, Copy)]
pub(super) enum Who {
    /// Supervisor and admin tokens.
    Readers,
    /// Admin tokens only.
    Admins,
}

/// An operation as `#[utoipa::path]` would start it, for operations built by hand.
pub(super) fn operation(tag: &str, summary: String, who: Who) -> OperationBuilder {
    let mut securities = vec![SecurityRequirement::new("admin", Vec::<String>::new())];
    if let Who::Readers = who {
        securities.insert(0, SecurityRequirement::new("supervisor", Vec::<String>::new()));
    }
    OperationBuilder::new()
        .tag(tag)
        .summary(Some(summary))
        .securities(Some(securities))
}

/// A JSON answer.
pub(super) fn json(description: &str, schema: impl Into<RefOr<Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// A reference to one of the shared responses below.
pub(super) fn shared<'r, R: ToResponse<'r>>() -> Ref {
    Ref::from_response_name(R::response().0)
}

/// The errors most operations may answer, each a response component that operations refer to.
macro_rules! error_responses {
    ($($name:ident: $description:literal;)*) => {$(
        #[doc = $description]
        pub(super) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
                let response = ResponseBuilder::new()
                    .description($description)
                    .content("application/json", body)
                    .build();
                (stringify!($name), response.into())
            }
        }
    )*};
}

error_responses! {
    Unauthorized: "No token, or a token that is not valid.";
    Forbidden: "A supervisor token, for something only an admin token may do.";
    NotFound: "No such record.";
    Invalid: "A parameter or field is invalid; `error.field` names it.";
    Unavailable: "The database is unavailable; try again shortly.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_serializes() {
        let json = DOCUMENT.as_ref().expect("serialized");
        let document: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        assert!(document["components"]["schemas"]["Error"].is_object());
        // Every reference, in operations and in schemas, names something in the document.
        fn references(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => map.iter().for_each(|(key, value)| match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(value, found),
                }),
                Value::Array(items) => items.iter().for_each(|item| references(item, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        references(&document, &mut found);
        for reference in found {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{reference}");
        }
    }

    #[test]
    fn a_description_wrapped_around_an_inlined_schema_is_folded_into_it() {
        let mut schema = serde_json::json!({"properties": {"seconds": {"allOf": [
            {"type": "integer", "minimum": 5},
            {"type": "object", "description": "How long.", "default": 30},
        ]}}});
        fold_descriptions(&mut schema);
        assert_eq!(
            schema["properties"]["seconds"],
            serde_json::json!({"type": "integer", "minimum": 5, "description": "How long.", "default": 30})
        );
        // An object part with properties of its own is no description: it stays.
        let mut both = serde_json::json!({"allOf": [{"$ref": "#/a"}, {"type": "object", "properties": {}}]});
        let before = both.clone();
        fold_descriptions(&mut both);
        assert_eq!(both, before);
    }
}
