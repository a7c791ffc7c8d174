//! A turn taken without the call's stored record.
//!
//! When the store does not give a call's record in time (after a restart, on another node,
//! after its actor's idle limit, while the store is slow or down), the record may exist and
//! know more than this process does. The turn then starts from what the request and its
//! trail ([`Trail`](crate::domain::call::Trail)) say (a skeleton of the call), and:
//!
//! - routes only where no guess is needed: the buyer an RTB bid reserved or the campaign's
//!   fallback buyer (who takes duplicates), never one the trail says was dialed; else a
//!   redirect; else the explicit end. Without a trail nobody is dialed
//!   ([`RoutingPlan::decide_blind`]);
//! - numbers its dials apart from any the store holds
//!   ([`CallRecord::next_blind_attempt_number`]);
//! - settles no publisher and tells no postback: both wait for the merged record;
//! - and its record is merged into the stored one, never written over it
//!   ([`CallRecord::merged_with`]).

use jiff::Timestamp;

use super::Request;
use crate::domain::{
    call::{AttemptKind, CallRecord, Caller},
    dialing::Screen,
    geo::CallerPlace,
    phone::E164,
    plan::CampaignId,
    routing::RoutingPlan,
};

/// What a blind turn knows besides its skeleton.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blind {
    /// The request's trail said which buyers were dialed.
    pub(super) knows_tried: bool,
}

/// The call as the request and its trail describe it: its caller and number (unless the
/// request is a buyer's leg's, whose `From` and `To` are the leg's), the campaigns it went
/// through, the buyers dialed before, and the attempt the request is about.
pub(super) fn skeleton(request: Request<'_>, plan: &RoutingPlan, now: Timestamp) -> CallRecord {
    let a_buyers_leg = request.params.get("ParentCallSid").is_some();
    let (caller, called) = if a_buyers_leg {
        (Caller::Unknown(String::new()), String::new())
    } else {
        let from = request.params.text("From");
        (Caller::from_provider(from), request.params.text("To").to_owned())
    };
    let mut record = CallRecord::new(request.sid.clone(), caller, called, now);
    if !a_buyers_leg {
        record.caller_state = CallerPlace::of(&record.caller, request.params.get("FromState")).state;
    }
    let enter = |record: &mut CallRecord, campaign: CampaignId| {
        let company = plan.campaign(campaign).and_then(|c| c.company_id);
        record.enter_campaign(company, campaign);
    };
    let Some(trail) = request.trail else {
        let dialed = E164::of_called(&record.called);
        if let Some(campaign) = dialed.and_then(|number| plan.campaign_for_number(&number)) {
            enter(&mut record, campaign.id);
        }
        return record;
    };
    for campaign in &trail.visited {
        enter(&mut record, *campaign);
    }
    match (request.input.attempt(), trail.last_dialed(), trail.visited.last()) {
        (Some(number), Some(buyer), Some(campaign)) => {
            record.dialed_before = trail.tried[..trail.tried.len() - 1].to_vec();
            let spec = plan.campaign(*campaign).map(|c| &c.spec);
            let listed = spec.is_some_and(|c| c.buyers.as_slice().iter().any(|link| link.buyer_id == buyer));
            let fallback = spec.is_some_and(|c| c.fallback_buyer_id == Some(buyer));
            let kind = if fallback && !listed {
                AttemptKind::Fallback
            } else {
                AttemptKind::Buyer
            };
            record.begin_attempt_numbered(number, buyer, *campaign, kind, None, now);
            let screens = plan.buyer(buyer).is_some_and(|b| b.spec.screen != Screen::None);
            if screens {
                record.expect_screening(number);
            }
        }
        _ => record.dialed_before = trail.tried.clone(),
    }
    record
}
