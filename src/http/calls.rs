//! A call as stored, with its timeline: where it went and why.

use actix_web::{HttpResponse, web};
use jiff::Timestamp;
use serde::Serialize;

use super::{auth::Admin, error::ApiError};
use crate::{
    domain::{
        call::{Attempt, CallRecord, CallSid, CallState, DropReason, Outcome},
        plan::{BuyerId, CampaignId, CompanyId},
        timeline::TimelineEntry,
    },
    store::Store,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/calls/{sid}", web::get().to(call));
}

#[derive(Serialize)]
struct CallView<'a> {
    call_sid: &'a CallSid,
    /// `From` as the provider sent it.
    caller: &'a str,
    /// Whether the caller id is a phone number (only then can the call be de-duplicated).
    caller_known: bool,
    called: &'a str,
    company_id: Option<CompanyId>,
    campaign_id: Option<CampaignId>,
    campaigns_visited: &'a [CampaignId],
    state: CallState,
    outcome: Option<Outcome>,
    drop_reason: Option<DropReason>,
    /// The buyer reached, else the last one dialed.
    buyer_id: Option<BuyerId>,
    duplicate: Option<bool>,
    converted: bool,
    used_fallback: bool,
    redirects: usize,
    duplicates_avoided: usize,
    attempts: &'a [Attempt],
    started_at: Timestamp,
    state_changed_at: Timestamp,
    ended_at: Option<Timestamp>,
    timeline: Vec<TimelineEntry>,
}

impl<'a> CallView<'a> {
    fn new(call: &'a CallRecord, timeline: Vec<TimelineEntry>) -> Self {
        Self {
            call_sid: &call.sid,
            caller: call.caller.raw(),
            caller_known: call.caller.number().is_some(),
            called: &call.called,
            company_id: call.company_id,
            campaign_id: call.campaign_id,
            campaigns_visited: &call.visited,
            state: call.state,
            outcome: call.outcome,
            drop_reason: call.drop_reason,
            buyer_id: call
                .connected_attempt()
                .or(call.current_attempt())
                .map(|a| a.buyer_id),
            duplicate: call.duplicate(),
            converted: call.converted(),
            used_fallback: call.used_fallback(),
            redirects: call.redirects(),
            duplicates_avoided: call.duplicate_buyers.len(),
            attempts: &call.attempts,
            started_at: call.started_at,
            state_changed_at: call.state_changed_at,
            ended_at: call.ended_at,
            timeline,
        }
    }
}

async fn call(
    _: Admin,
    store: web::Data<dyn Store>,
    sid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no call {sid}"));
    let sid = CallSid::parse(&sid).map_err(|_| not_found())?;
    let record = store.call(&sid).await?.ok_or_else(not_found)?;
    let timeline = store.timeline(&sid).await?;
    Ok(HttpResponse::Ok().json(CallView::new(&record, timeline)))
}
