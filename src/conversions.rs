//! Buyers' reports of conversions and returns, between the HTTP layer and the store: each
//! report's steps decided on the routing plan (see [`crate::domain::conversion`] for the
//! rules), made in the store's one transaction, and then learnt by this node's de-dupe index
//! and told to the outbox.

use std::sync::Arc;

use jiff::Timestamp;

use crate::{
    clock::Clock,
    decide::{
        Dedupe, PlanCache,
        dedupe::{Learn, Unlearn},
    },
    domain::{
        call::{CallRecord, CallSid, Conversion},
        conversion::{
            Action, ConversionReport, ConversionReturn, ConversionStatus, IdempotencyKey, Refusal,
            ReportAnswer, ReportTerms, ReportVerdict, Reported, ReturnVerdict, judge_report, judge_return,
            payout_on_report, request_digest, return_until,
        },
        dedupe::{Scope, Touch, Touched},
        ids::IdSeed,
        money::Money,
        payout::PublisherPayout,
        plan::{Buyer, BuyerId, Record},
        postback::{CallEvent, Postback, PostbackEvent, postbacks_for_report},
        routing::RoutingPlan,
        timeline::{Event, TimelineEntry},
    },
    fresh::Generate,
    postbacks::Outbox,
    store::{ConversionStore, Report, ReportChange, ReportOutcome, ReportSteps, StoreError},
};

/// What a buyer asks of a call's conversion.
#[derive(Debug, Clone)]
pub enum Asked {
    Report(ConversionReport),
    Return(ConversionReturn),
}

impl Asked {
    fn action(&self) -> Action {
        match self {
            Self::Report(_) => Action::Report,
            Self::Return(_) => Action::Return,
        }
    }

    fn digest(&self, call: &CallSid) -> String {
        match self {
            Self::Report(report) => request_digest(Action::Report, call, report),
            Self::Return(taken_back) => request_digest(Action::Return, call, taken_back),
        }
    }
}

/// Where reports are made.
#[derive(Clone)]
pub struct Conversions {
    pub store: Arc<dyn ConversionStore>,
    pub plan: Arc<PlanCache>,
    pub dedupe: Dedupe,
    pub outbox: Outbox,
    pub clock: Arc<dyn Clock>,
}

impl Conversions {
    /// Makes `asked` of the call, for `buyer` (who the caller was connected to), once under
    /// `key`.
    pub async fn make(
        &self,
        call: &CallSid,
        buyer: BuyerId,
        asked: Asked,
        key: &IdempotencyKey,
    ) -> Result<ReportOutcome, StoreError> {
        let plan = self.plan.current().await;
        let Some(record) = plan.buyer(buyer).cloned() else {
            return Err(StoreError::not_found(buyer));
        };
        let request = asked.digest(call);
        let now = self.clock.now();
        let steps = Steps {
            plan,
            buyer: record,
            asked: asked.clone(),
            now,
            ids: IdSeed::generate(),
        };
        let report = Report {
            call,
            buyer,
            action: asked.action(),
            key,
            request: &request,
            at: now,
            steps: &steps,
        };
        let outcome = self.store.report(&report).await?;
        if let ReportOutcome::Made {
            touched,
            unconverted,
            postbacks,
            ..
        } = &outcome
        {
            if !touched.is_empty() {
                self.dedupe.tell(Learn(touched.clone()));
            }
            if !unconverted.is_empty() {
                self.dedupe.tell(Unlearn(unconverted.clone()));
            }
            if *postbacks {
                self.outbox.queued();
            }
        }
        Ok(outcome)
    }
}

/// One report's steps, on the plan as it was when the report came.
struct Steps {
    plan: Arc<RoutingPlan>,
    buyer: Record<Buyer>,
    asked: Asked,
    now: Timestamp,
    ids: IdSeed,
}

impl Steps {
    fn unchanged(&self, call: &CallRecord, answer: ReportAnswer) -> ReportChange {
        ReportChange {
            record: call.clone(),
            timeline: Vec::new(),
            answer,
            conversion: None,
            touched: Vec::new(),
            returned: None,
            retaken: Vec::new(),
            pay: None,
            reverse_payout: false,
        }
    }

    /// Every de-dupe scope a conversion with the buyer counts in, with the buyers whose
    /// conversions count there too.
    fn scopes(&self) -> Vec<(Scope, Vec<BuyerId>)> {
        Scope::touched_by(&self.buyer)
            .into_iter()
            .map(|scope| {
                let buyers = match &scope {
                    Scope::Group { .. } => (self.plan.buyers())
                        .filter(|b| Scope::checked_by(b) == scope)
                        .map(|b| b.id)
                        .collect(),
                    _ => vec![self.buyer.id],
                };
                (scope, buyers)
            })
            .collect()
    }
}

impl ReportSteps for Steps {
    fn apply(&self, call: &CallRecord, reported: &Reported) -> Result<ReportChange, Refusal> {
        let terms = ReportTerms::of(&self.buyer.spec);
        let dial = (call.connected_attempt()).filter(|a| a.buyer_id == self.buyer.id);
        let answer = |status, recorded, revenue, converted_at: Option<Timestamp>, returned_at| ReportAnswer {
            call_sid: call.sid.clone(),
            buyer_id: self.buyer.id,
            attempt: dial.map_or(0, |a| a.number),
            status,
            recorded,
            revenue,
            converted_at,
            returned_at,
            return_until: converted_at.map(|at| return_until(&terms, at)),
        };
        match &self.asked {
            Asked::Report(report) => {
                match judge_report(&terms, dial, call.ended_at, reported, report.converted, self.now)? {
                    ReportVerdict::NotConverted => Ok(self.unchanged(
                        call,
                        answer(ConversionStatus::NotConverted, false, None, None, None),
                    )),
                    ReportVerdict::ConvertedAlready => Ok(self.unchanged(
                        call,
                        answer(
                            ConversionStatus::Converted,
                            false,
                            reported.revenue,
                            reported.converted_at,
                            None,
                        ),
                    )),
                    ReportVerdict::Converts => {
                        let Some(dial) = dial else {
                            return Err(Refusal::NotConnected);
                        };
                        let mut record = call.clone();
                        if let Some(converted) = record.attempts.iter_mut().find(|a| a.number == dial.number)
                        {
                            converted.converted = true;
                        }
                        let revenue = report.revenue.unwrap_or(self.buyer.spec.revenue);
                        let conversion = Conversion {
                            call_sid: call.sid.clone(),
                            attempt: dial.number,
                            buyer_id: self.buyer.id,
                            campaign_id: dial.campaign_id,
                            caller: call.caller.number().cloned(),
                            connected_seconds: dial.connected_seconds.unwrap_or_default(),
                            payout: self.buyer.spec.payout,
                            revenue,
                            at: self.now,
                        };
                        let touched = (call.caller.number())
                            .map(|caller| {
                                Touched::with_buyer(caller, &self.buyer, Touch::Converted, self.now)
                            })
                            .unwrap_or_default();
                        let external_id = report.external_id.as_ref().map(|id| id.as_str().to_owned());
                        let entry = TimelineEntry {
                            at: self.now,
                            event: Event::ConversionReported {
                                attempt: dial.number,
                                buyer_id: self.buyer.id,
                                revenue,
                                external_id: external_id.clone(),
                            },
                        };
                        let terms_now = self.plan.publisher_terms_for(&record);
                        let pay = payout_on_report(&record, terms_now.as_ref());
                        Ok(ReportChange {
                            record,
                            timeline: vec![entry],
                            answer: answer(
                                ConversionStatus::Converted,
                                true,
                                Some(revenue),
                                Some(self.now),
                                None,
                            ),
                            conversion: Some((conversion, external_id)),
                            touched,
                            returned: None,
                            retaken: Vec::new(),
                            pay,
                            reverse_payout: false,
                        })
                    }
                }
            }
            Asked::Return(taken_back) => {
                let returned = |returned_at| {
                    answer(
                        ConversionStatus::Returned,
                        returned_at == Some(self.now),
                        reported.revenue,
                        reported.converted_at,
                        returned_at,
                    )
                };
                match judge_return(&terms, reported, self.now)? {
                    ReturnVerdict::ReturnedAlready => {
                        Ok(self.unchanged(call, returned(reported.returned_at)))
                    }
                    ReturnVerdict::Reverses => {
                        let mut record = call.clone();
                        let mut number = 0;
                        if let Some(converted) =
                            (record.attempts.iter_mut()).find(|a| a.converted && a.buyer_id == self.buyer.id)
                        {
                            converted.converted = false;
                            number = converted.number;
                        }
                        let reason = taken_back.reason.as_str().to_owned();
                        let entry = TimelineEntry {
                            at: self.now,
                            event: Event::ConversionReturned {
                                attempt: number,
                                buyer_id: self.buyer.id,
                                reason: reason.clone(),
                                reversed_payout: None,
                            },
                        };
                        let mut change = self.unchanged(call, returned(Some(self.now)));
                        change.answer.attempt = number;
                        change.record = record;
                        change.timeline = vec![entry];
                        change.returned = Some(reason);
                        change.retaken = self.scopes();
                        change.reverse_payout = true;
                        Ok(change)
                    }
                }
            }
        }
    }

    fn paid(&self, change: &mut ReportChange, terms: &PublisherPayout, paid: bool) {
        let record = &mut change.record;
        let payout = if paid { terms.amount } else { Money::ZERO };
        record.publisher_payout = Some(payout);
        record.publisher_duplicate = Some(!paid);
        if let Some(publisher_id) = record.publisher_id {
            change.timeline.push(TimelineEntry {
                at: self.now,
                event: Event::PublisherSettled {
                    publisher_id,
                    payout,
                    duplicate: Some(!paid),
                },
            });
        }
    }

    fn reversed(&self, change: &mut ReportChange, payout: Option<Money>) {
        if payout.is_some() {
            change.record.publisher_payout = Some(Money::ZERO);
        }
        for entry in &mut change.timeline {
            if let Event::ConversionReturned { reversed_payout, .. } = &mut entry.event {
                *reversed_payout = payout;
            }
        }
    }

    fn postbacks(&self, change: &ReportChange) -> Vec<Postback> {
        let (event, revenue) = match (&change.conversion, &change.returned) {
            (Some((conversion, _)), _) => (PostbackEvent::Converted, Some(conversion.revenue)),
            (None, Some(_)) => (PostbackEvent::Returned, None),
            (None, None) => return Vec::new(),
        };
        let happened = CallEvent {
            event,
            attempt: Some(change.answer.attempt),
        };
        postbacks_for_report(&self.plan, &change.record, happened, revenue, self.now, self.ids)
    }
}
