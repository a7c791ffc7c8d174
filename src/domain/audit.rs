//! The audit log: who changed what, when, and how it was before and after. Entries are only ever
//! added; an entry names the company whose data changed, so that it is scoped like the data.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{access::Role, plan::CompanyId};

/// One change, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    /// UUIDv7: entries sort by when they were recorded.
    pub id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who: the setting their token came from (`ADMIN_TOKEN`), or `token <name>`.
    pub actor: String,
    /// The issued token they used, if it was one.
    #[schema(required = true)]
    pub token_id: Option<Uuid>,
    pub role: Role,
    /// Whose data changed (absent: the install's, e.g. an install-wide token).
    #[schema(required = true, value_type = Option<Uuid>)]
    pub company_id: Option<CompanyId>,
    /// What was done: `buyer.create`, `campaign.update`, `token.revoke`, `blocked_caller.create`,
    /// `cap.reset`, `postback.retry`, `conversion.report`, `conversion.return`, …
    pub action: String,
    /// What it was done to (a record's id, a call's sid).
    #[schema(required = true)]
    pub target_id: Option<String>,
    /// As it was before (absent for a creation); secrets are never recorded.
    #[schema(required = true)]
    pub before: Option<Value>,
    /// As it is after (absent for a removal).
    #[schema(required = true)]
    pub after: Option<Value>,
}
