//! API tokens, issued, rotated and revoked through the API by admins, each within its own scope:
//! the install's administrator for anything, a company's admin for tokens reaching its companies
//! (their staff, publishers and buyers). A token's secret is in the answer that issues it and
//! nowhere else: the store keeps its digest, lists never show it.
//!
//! - `POST /tokens` `{name, role, companies?|publishers?|buyers?, expires_at?}` issues a token
//!   (201).
//! - `GET /tokens` lists every token issued, newest first.
//! - `POST /tokens/{id}/rotate` `{grace_seconds?}` issues its replacement (same name and role);
//!   the old one keeps working for the grace period (default none), then expires.
//! - `DELETE /tokens/{id}` revokes a token at once (204).

use crate::fresh::Generate;
use actix_web::{
    HttpResponse,
    http::{Method, header},
    web,
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    ApiRoute,
    audit::{Auditor, Change},
    auth::{AccessTokens, Caller, HeldTokens},
    error::{ApiError, Body as ErrorBody},
    json,
    openapi::{Forbidden, Invalid, NotFound, Unauthorized, Unavailable},
};
use crate::{
    clock::{Clock, to_millisecond},
    decide::PlanCache,
    domain::{
        access::{Action, Grant, GrantFields, IssuedToken, Role, Scope, TokenName, TokenSecret},
        plan::CompanyId,
        routing::RoutingPlan,
    },
    store::{StoreError, TokenStore},
};

/// The longest a rotated token may keep working beside its replacement: a week.
const MAX_GRACE_SECONDS: u32 = 7 * 24 * 3600;

pub fn routes() -> [ApiRoute; 5] {
    [
        ApiRoute::new(Method::GET, "/me", |r| r.to(me)),
        ApiRoute::new(Method::GET, "/tokens", |r| r.to(list)),
        ApiRoute::new(Method::POST, "/tokens", |r| r.to(issue)),
        ApiRoute::new(Method::POST, "/tokens/{id}/rotate", |r| r.to(rotate)),
        ApiRoute::new(Method::DELETE, "/tokens/{id}", |r| r.to(revoke)),
    ]
}

type StoreData = web::Data<dyn TokenStore>;
type TokensData = web::Data<AccessTokens>;
type ClockData = web::Data<dyn Clock>;

#[derive(Deserialize, ToSchema)]
struct IssueRequest {
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    name: TokenName,
    /// The role, and at most one scope (none: the whole install; only the install's
    /// administrator issues those).
    #[serde(flatten)]
    #[schema(inline, value_type = GrantFields)]
    grant: GrantFields,
    /// Omit for a token that lasts until revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old token keeps working (default 0: it stops at once).
    #[schema(minimum = 0, maximum = 604800)]
    grace_seconds: Option<u32>,
}

/// A token just issued: the one answer that carries its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = IssuedToken)]
struct Issued<'a> {
    #[serde(flatten)]
    #[schema(value_type = IssuedToken)]
    record: &'a IssuedToken,
    /// The secret: send as `Authorization: Bearer <token>`. Shown this once.
    #[schema(value_type = String, pattern = "^sbt_[A-Za-z0-9_-]{43}$")]
    token: &'a str,
    /// After a rotation: the token this one replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Uuid)]
    replaces: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
struct TokenList {
    data: Vec<IssuedToken>,
}

/// Who the token speaks for.
#[derive(Serialize, ToSchema)]
struct Me<'a> {
    /// How the audit log names the token's holder.
    name: &'a str,
    #[serde(flatten)]
    #[schema(inline, value_type = GrantFields)]
    grant: &'a Grant,
}

/// The token's role and scope
///
/// What the live page asks first, to show a partner its portal.
#[utoipa::path(
    get,
    path = "/me",
    tag = "Access",
    operation_id = "who_am_i",
    security(("admin" = []), ("analyst" = []), ("supervisor" = []), ("publisher" = []), ("buyer" = [])),
    responses(
        (status = 200, description = "The token's role and scope.", body = inline(Me)),
        (status = 401, response = Unauthorized),
    ),
)]
async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        name: caller.name(),
        grant: caller.grant(),
    })
}

/// List the tokens issued through the API, newest first (never their secrets)
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "Access",
    operation_id = "list_tokens",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every token, revoked and expired ones too.", body = inline(TokenList)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    caller: Caller,
    store: StoreData,
    plan: web::Data<PlanCache>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::Change)?;
    let plan = plan.current().await;
    let data = (store.api_tokens().await?.into_iter())
        .map(|(token, _)| token)
        .filter(|token| may_grant(&caller, &token.grant, &plan))
        .collect();
    Ok(HttpResponse::Ok().json(TokenList { data }))
}

/// Whether the caller may hand out (or see, rotate, revoke) a token of `grant`: an admin whose
/// scope holds the grant's.
fn may_grant(caller: &Caller, grant: &Grant, plan: &RoutingPlan) -> bool {
    caller.grant().may_grant(grant, |scope| companies_of(scope, plan))
}

/// The company of each publisher or buyer a scope names (`None` for one the plan does not have).
fn companies_of(scope: &Scope, plan: &RoutingPlan) -> Vec<Option<CompanyId>> {
    match scope {
        Scope::Install => Vec::new(),
        Scope::Companies(ids) => ids.iter().map(|id| plan.company(*id).map(|c| c.id)).collect(),
        Scope::Publishers(ids) => (ids.iter())
            .map(|id| plan.publisher_record(*id).and_then(|p| p.company_id))
            .collect(),
        Scope::Buyers(ids) => ids
            .iter()
            .map(|id| plan.buyer(*id).and_then(|b| b.company_id))
            .collect(),
    }
}

/// A token of this grant, if the caller may manage it (else 404, as for one that does not exist).
async fn manageable(
    caller: &Caller,
    store: &StoreData,
    plan: &PlanCache,
    id: Uuid,
) -> Result<IssuedToken, ApiError> {
    caller.require(Action::Change)?;
    let plan = plan.current().await;
    (store.api_tokens().await?.into_iter())
        .map(|(token, _)| token)
        .find(|token| token.id == id && may_grant(caller, &token.grant, &plan))
        .ok_or_else(|| not_found(id))
}

/// Issue a token
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "Access",
    operation_id = "issue_token",
    security(("admin" = [])),
    request_body = inline(IssueRequest),
    responses(
        (status = 201, description = "Issued; the answer is not to be cached.", body = Issued),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn issue(
    auditor: Auditor,
    store: StoreData,
    tokens: TokensData,
    plan: web::Data<PlanCache>,
    clock: ClockData,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let caller = auditor.caller();
    caller.require(Action::Change)?;
    let fields = json::object(&body)?;
    match fields.get("role").map(|role| role.as_str().and_then(Role::parse)) {
        None => return Err(ApiError::invalid("role", "missing field `role`")),
        Some(None) => {
            let roles: Vec<_> = Role::ALL.iter().map(|role| role.as_str()).collect();
            return Err(ApiError::invalid(
                "role",
                format!("must be one of {}", roles.join(", ")),
            ));
        }
        Some(Some(_)) => {}
    }
    const KNOWN: [&str; 6] = ["name", "role", "companies", "publishers", "buyers", "expires_at"];
    if let Some(unknown) = fields.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown field `{unknown}`; a token has {}", KNOWN.join(", ")),
        ));
    }
    let request: IssueRequest = json::typed(Value::Object(fields))?;
    let now = clock.now();
    if request.expires_at.is_some_and(|expiry| expiry <= now) {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    let grant = request
        .grant
        .grant()
        .map_err(|e| ApiError::invalid("role", e.to_string()))?;
    // The plan as it is after any change this caller just made (a buyer created a moment ago).
    let plan = plan.reread().await;
    if companies_of(grant.scope(), &plan).contains(&None) {
        return Err(ApiError::invalid(
            scope_field(grant.scope()),
            "names a company, publisher or buyer that does not exist",
        ));
    }
    if !may_grant(caller, &grant, &plan) {
        return Err(ApiError::Forbidden(
            "an admin issues tokens within its own scope: its companies, and their publishers and buyers",
        ));
    }
    let token = IssuedToken {
        id: Uuid::now_v7(),
        name: request.name,
        grant,
        created_at: to_millisecond(now),
        expires_at: request.expires_at.map(to_millisecond),
        revoked_at: None,
    };
    let secret = TokenSecret::generate();
    store.issue_token(&token, &secret.digest(), None).await?;
    tracing::info!(token_id = %token.id, role = token.grant.role().as_str(), "issued an API token");
    let held = (token.clone(), secret.digest());
    tokens.changed(store.as_ref(), |issued| issued.push(held)).await;
    auditor
        .record(Change::new(company_of(&token, &plan), "token.issue", token.id).after(&token))
        .await;
    Ok(shown_once(&token, &secret, None))
}

/// Replace a token with a new secret of the same name and role
#[utoipa::path(
    post,
    path = "/tokens/{id}/rotate",
    tag = "Access",
    operation_id = "rotate_token",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The token's id.")),
    request_body(content = Option<RotateRequest>, description = "Optional: no body is no grace."),
    responses(
        (status = 201, description = "Issued; the answer is not to be cached.", body = Issued),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "The token is revoked or expired.", body = ErrorBody),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn rotate(
    auditor: Auditor,
    store: StoreData,
    tokens: TokensData,
    plan: web::Data<PlanCache>,
    clock: ClockData,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    auditor.caller().require(Action::Change)?;
    let id = token_id(&id)?;
    let request: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        json::typed(Value::Object(json::object(&body)?))?
    };
    let grace = request.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "grace_seconds",
            format!("must be at most {MAX_GRACE_SECONDS} (a week)"),
        ));
    }
    let now = to_millisecond(clock.now());
    let old = manageable(auditor.caller(), &store, &plan, id).await?;
    if !old.is_valid_at(now) {
        return Err(revoked_or_expired());
    }
    let token = IssuedToken {
        id: Uuid::now_v7(),
        name: old.name.clone(),
        grant: old.grant.clone(),
        created_at: now,
        expires_at: old.expires_at,
        revoked_at: None,
    };
    let secret = TokenSecret::generate();
    let old_until = now + SignedDuration::from_secs(i64::from(grace));
    match store
        .issue_token(&token, &secret.digest(), Some((id, old_until)))
        .await
    {
        Ok(()) => {}
        // Revoked since it was read.
        Err(StoreError::NotFound { .. }) => return Err(revoked_or_expired()),
        Err(error) => return Err(error.into()),
    }
    tracing::info!(token_id = %token.id, replaces = %id, grace_seconds = grace, "rotated an API token");
    let held = (token.clone(), secret.digest());
    let change = |issued: &mut HeldTokens| {
        for (old, _) in issued.iter_mut().filter(|(old, _)| old.id == id) {
            old.expires_at = Some(old.expires_at.map_or(old_until, |expiry| expiry.min(old_until)));
        }
        issued.push(held);
    };
    tokens.changed(store.as_ref(), change).await;
    let company = company_of(&token, &*plan.current().await);
    auditor
        .record(
            Change::new(company, "token.rotate", id)
                .before(&old)
                .after(&token),
        )
        .await;
    Ok(shown_once(&token, &secret, Some(id)))
}

/// Revoke a token at once
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "Access",
    operation_id = "revoke_token",
    security(("admin" = [])),
    params(("id" = Uuid, Path, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked (again: no change)."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn revoke(
    auditor: Auditor,
    store: StoreData,
    tokens: TokensData,
    plan: web::Data<PlanCache>,
    clock: ClockData,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = token_id(&id)?;
    let old = manageable(auditor.caller(), &store, &plan, id).await?;
    let at = to_millisecond(clock.now());
    let revoked = store.revoke_token(id, at).await?;
    tracing::info!(token_id = %id, "revoked an API token");
    let change = |issued: &mut HeldTokens| {
        for (token, _) in issued.iter_mut().filter(|(token, _)| token.id == id) {
            token.revoked_at.get_or_insert(at);
        }
    };
    tokens.changed(store.as_ref(), change).await;
    if old.revoked_at.is_none() {
        let company = company_of(&old, &*plan.current().await);
        auditor
            .record(
                Change::new(company, "token.revoke", id)
                    .before(&old)
                    .after(&revoked),
            )
            .await;
    }
    Ok(HttpResponse::NoContent().finish())
}

fn shown_once(token: &IssuedToken, secret: &TokenSecret, replaces: Option<Uuid>) -> HttpResponse {
    HttpResponse::Created()
        // No cache may keep the secret.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Issued {
            record: token,
            token: secret.expose(),
            replaces,
        })
}

/// The field of the request that named a scope.
fn scope_field(scope: &Scope) -> &'static str {
    match scope {
        Scope::Install | Scope::Companies(_) => "companies",
        Scope::Publishers(_) => "publishers",
        Scope::Buyers(_) => "buyers",
    }
}

/// The company whose audit log a token's change goes in: the one its scope is within, if one.
fn company_of(token: &IssuedToken, plan: &RoutingPlan) -> Option<CompanyId> {
    let companies = companies_of(token.grant.scope(), plan);
    match companies.as_slice() {
        [first, rest @ ..] if rest.iter().all(|c| c == first) => *first,
        _ => None,
    }
}

fn revoked_or_expired() -> ApiError {
    ApiError::Conflict {
        field: None,
        message: "the token is revoked or expired; issue a new one instead".into(),
    }
}

fn token_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no token with id {text}")))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no token with id {id}"))
}
