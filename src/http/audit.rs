//! The audit log: `GET /audit?company_id=&action=&target_id=&from=&to=&before=&limit=`, newest
//! first, scoped like everything else; and [`Auditor`], what every handler that changes
//! something records the change with.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, http::Method, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    ApiRoute,
    admin::page_limit,
    auth::Caller,
    error::ApiError,
    openapi::{Forbidden, Invalid, Unauthorized, Unavailable},
};
use crate::{
    clock::Clock,
    domain::{
        access::{Action, Role},
        audit::AuditEntry,
        plan::CompanyId,
    },
    store::{AuditFilter, AuditStore},
};

pub fn routes() -> [ApiRoute; 1] {
    [ApiRoute::new(Method::GET, "/audit", |r| r.to(list))]
}

/// One change to record: whose data, what was done to what, before and after (never secrets:
/// callers pass records as non-admins see them).
pub struct Change {
    pub company: Option<CompanyId>,
    pub action: String,
    pub target: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Change {
    pub fn new(company: Option<CompanyId>, action: impl Into<String>, target: impl ToString) -> Self {
        Self {
            company,
            action: action.into(),
            target: Some(target.to_string()),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, before: impl Serialize) -> Self {
        self.before = serde_json::to_value(before).ok();
        self
    }

    pub fn after(mut self, after: impl Serialize) -> Self {
        self.after = serde_json::to_value(after).ok();
        self
    }
}

/// The authenticated caller, with what records their changes: take it instead of [`Caller`] in
/// a handler that changes something.
pub struct Auditor {
    caller: Caller,
    store: web::Data<dyn AuditStore>,
    clock: web::Data<dyn Clock>,
}

impl Auditor {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Records a change made. Called after the change is stored: a change the store refused is
    /// not in the log. An entry the store cannot take is logged as an error (the change stands,
    /// and its answer goes out: a retried request would make it twice).
    pub async fn record(&self, change: Change) {
        let who = Who {
            name: self.caller.name().to_owned(),
            token_id: self.caller.token_id(),
            role: self.caller.grant().role(),
        };
        record(self.store.as_ref(), self.clock.as_ref(), who, change).await;
    }
}

/// Who made a change, as the audit log names them.
pub struct Who {
    pub name: String,
    pub token_id: Option<Uuid>,
    pub role: Role,
}

/// Records a change made by `who` (see [`Auditor::record`]; this for changes made without a
/// token, e.g. with a buyer's conversion key).
pub async fn record(store: &dyn AuditStore, clock: &dyn Clock, who: Who, change: Change) {
    let entry = AuditEntry {
        id: Uuid::now_v7(),
        at: clock.now(),
        actor: who.name,
        token_id: who.token_id,
        role: who.role,
        company_id: change.company,
        action: change.action,
        target_id: change.target,
        before: change.before,
        after: change.after,
    };
    if let Err(error) = store.record_audit(&entry).await {
        tracing::error!(%error, action = %entry.action, target = ?entry.target_id, actor = %entry.actor,
            "could not record a change in the audit log");
    }
}

impl FromRequest for Auditor {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = match Caller::from_request(req, payload).into_inner() {
            Ok(caller) => caller,
            Err(error) => return ready(Err(error)),
        };
        let (Some(store), Some(clock)) = (
            req.app_data::<web::Data<dyn AuditStore>>(),
            req.app_data::<web::Data<dyn Clock>>(),
        ) else {
            return ready(Err(ApiError::Internal));
        };
        ready(Ok(Self {
            caller,
            store: store.clone(),
            clock: clock.clone(),
        }))
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only changes to this company's data.
    company_id: Option<CompanyId>,
    /// An action (`buyer.update`) or a kind of them (`buyer`).
    action: Option<String>,
    /// Only changes to this record or call.
    target_id: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Recorded before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
    /// Only entries older than this one (`next_before` of the previous page).
    before: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct Page {
    data: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<Uuid>,
}

/// Who changed what, and when
///
/// Every change to the plan, tokens, block lists, caps, RTB keys and money (conversions,
/// returns, postback retries), newest first. Admins and analysts only; a company's token reads
/// its companies' entries.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "Access",
    operation_id = "list_audit",
    security(("admin" = []), ("analyst" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "Newest first.", body = inline(Page)),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Invalid),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    caller: Caller,
    store: web::Data<dyn AuditStore>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadAudit)?;
    let params = params.into_inner();
    let limit = page_limit(params.limit)?;
    let company_id = caller.company_to_list(params.company_id)?;
    let filter = AuditFilter {
        within: caller
            .grant()
            .companies()
            .map(|ids| ids.iter().copied().collect()),
        company_id,
        action: params.action,
        target_id: params.target_id,
        from: params.from,
        to: params.to,
        before: params.before,
        limit,
    };
    let data = store.audit(&filter).await?;
    let next_before = match data.last() {
        Some(last) if data.len() == limit as usize => Some(last.id),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { data, next_before }))
}
