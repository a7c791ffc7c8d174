use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::{
    block::{BlockEntry, BlockedCaller},
    call::{AttemptKind, CallState, DialStatus, DropReason, Outcome, RecordingStatus, Trail},
    dialing::Screening,
    ids::Id,
    money::Money,
    plan::{Campaign, Company, Publisher, record_of as record},
};

const MAIN_NUMBER: &str = "+14155550100";
const OVERFLOW_NUMBER: &str = "+14155550200";
const CALLER: &str = "+14155550177";

type Parts = (
    Vec<Record<Company>>,
    Vec<Record<Buyer>>,
    Vec<Record<Campaign>>,
    Vec<Record<Publisher>>,
);

/// A campaign "Main" (A first, then B press-1 screened, then C screened by machine
/// detection; fallback F; redirect to "Overflow", whose only buyer is O), a publisher paid
/// $5 per call with a day's de-dupe window on Main's number; and what the indexes say.
struct World {
    plan: Arc<RoutingPlan>,
    main: CampaignId,
    overflow: CampaignId,
    a: BuyerId,
    b: BuyerId,
    c: BuyerId,
    f: BuyerId,
    o: BuyerId,
    publisher: PublisherId,
    /// Buyers the caller converted with (duplicates for them).
    converted_with: HashSet<BuyerId>,
    /// Buyers whose slot is taken by the time a hold is asked.
    full: HashSet<BuyerId>,
    /// Buyers whose hold is not answered in time.
    slow_holds: HashSet<BuyerId>,
    /// The indexes do not answer in time.
    silent: bool,
    reservation: Option<Reservation>,
    /// The caller earned the publisher a payout inside its window already.
    paid_before: bool,
    answered_elsewhere: bool,
    /// The store did not give the call's record: steps are taken blind.
    blind: bool,
    /// What the requests' URLs carry.
    trail: Option<Trail>,
    now: Timestamp,
    /// Every question asked, in order.
    asked: Vec<Question>,
    /// What the plan is made of.
    parts: Parts,
}

impl World {
    fn new() -> Self {
        let company: Record<Company> =
            record(None, json!({"name": "Acme", "duplicate_caller_handling": true}));
        let owner = Some(company.id);
        let buyer = |name: &str, screen: &str| -> Record<Buyer> {
            record(
                owner,
                json!({"name": name, "destination": "+14155550101", "screen": screen, "conversion_seconds": 60, "payout": "20.00"}),
            )
        };
        let (a, b, c) = (
            buyer("A", "none"),
            buyer("B", "press-1"),
            buyer("C", "machine-detection"),
        );
        let (f, o) = (buyer("F", "none"), buyer("O", "none"));
        let overflow: Record<Campaign> = record(
            owner,
            json!({"name": "Overflow", "numbers": [OVERFLOW_NUMBER], "buyers": [{"buyer_id": o.id}]}),
        );
        let main: Record<Campaign> = record(
            owner,
            json!({
                "name": "Main",
                "numbers": [MAIN_NUMBER],
                "duplicate_caller_handling": "new_convertible_buyer",
                "buyers": [{"buyer_id": a.id, "priority": 1}, {"buyer_id": b.id, "priority": 2}, {"buyer_id": c.id, "priority": 3}],
                "fallback_buyer_id": f.id,
                "redirect_campaign_id": overflow.id,
            }),
        );
        let publisher: Record<Publisher> = record(
            owner,
            json!({"name": "P", "numbers": [MAIN_NUMBER], "payout": {"rule": "per_call", "amount": "5.00", "dedupe_seconds": 86400}}),
        );
        Self {
            main: main.id,
            overflow: overflow.id,
            a: a.id,
            b: b.id,
            c: c.id,
            f: f.id,
            o: o.id,
            publisher: publisher.id,
            plan: Arc::default(),
            parts: (
                vec![company],
                vec![a, b, c, f, o],
                vec![main, overflow],
                vec![publisher],
            ),
            converted_with: HashSet::new(),
            full: HashSet::new(),
            slow_holds: HashSet::new(),
            silent: false,
            reservation: None,
            paid_before: false,
            answered_elsewhere: false,
            blind: false,
            trail: None,
            now: "2026-12-04T12:00:00Z".parse().unwrap(),
            asked: Vec::new(),
        }
        .replanned(&[])
    }

    /// The plan again from its parts, with these block list entries.
    fn replanned(mut self, blocked: &[BlockEntry]) -> Self {
        let (companies, buyers, campaigns, publishers) = self.parts.clone();
        let plan = RoutingPlan::new(companies, buyers, campaigns).with_publishers(publishers);
        self.plan = Arc::new(plan.with_block_lists(blocked));
        self
    }

    /// What the indexes (as this world has them) reply.
    fn reply(&self, question: &Question) -> Reply {
        let silent = |reply: Reply| if self.silent { None } else { Some(reply) };
        match question {
            Question::Free(_) => Reply::Freed,
            Question::Replan => Reply::Replanned(self.plan.clone()),
            Question::Claim { .. } => Reply::Claimed(self.reservation.clone()),
            Question::Duplicates { rules, .. } => {
                let duplicates = (rules.iter())
                    .filter_map(|rule| self.converted_with.get(&rule.buyer).copied())
                    .collect();
                silent(Reply::Duplicates(Some(duplicates))).unwrap_or(Reply::Duplicates(None))
            }
            Question::Blocked { .. } => Reply::Blocked((!self.silent).then(HashMap::new)),
            Question::Hold { buyer, .. } if self.silent => {
                let _ = buyer;
                Reply::Held(None)
            }
            Question::Hold { buyer, .. } if self.slow_holds.contains(&buyer.id) => Reply::Held(None),
            Question::Hold { buyer, .. } if self.full.contains(&buyer.id) => {
                Reply::Held(Some(Err(Block::Concurrency)))
            }
            Question::Hold { .. } => Reply::Held(Some(Ok(()))),
            Question::PayOnce { .. } => Reply::PaidOnce((!self.silent).then_some(!self.paid_before)),
        }
    }

    /// What a step starts from in this world (no reply yet).
    fn facts(&self) -> Facts {
        Facts {
            now: self.now,
            ids: IdSeed::new(uuid::Uuid::from_u128(7 << 76)),
            plan: self.plan.clone(),
            answered_elsewhere: self.answered_elsewhere,
            routing_seed: 7,
            blind: self.blind,
            news_since: None,
            replies: Vec::new(),
        }
    }

    /// Steps `input` on `record` to its end, answering every question.
    fn apply(&mut self, record: Option<&CallRecord>, input: Input) -> Applied {
        let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
        let params = FormParams::from(vec![
            ("From".to_owned(), CALLER.to_owned()),
            ("To".to_owned(), MAIN_NUMBER.to_owned()),
        ]);
        let request = Request {
            sid: &sid,
            input: &input,
            endpoint: "test",
            params: &params,
            trail: self.trail.as_ref(),
        };
        let mut facts = self.facts();
        loop {
            assert!(
                facts.replies.len() < 32,
                "a step that never ends: {:?}",
                self.asked
            );
            match step(record, request, &facts) {
                Step::Done(applied) => return *applied,
                Step::Ask(question) => {
                    facts.replies.push(self.reply(&question));
                    self.asked.push(question);
                }
            }
        }
    }

    /// Steps `inputs` one after the other from a call nobody knows.
    fn call(&mut self, inputs: impl IntoIterator<Item = Input>) -> (Option<CallRecord>, Answer) {
        let mut record = None;
        let mut answer = Answer::Acknowledge;
        for input in inputs {
            let applied = self.apply(record.as_ref(), input);
            (record, answer) = (applied.record.or(record), applied.answer);
        }
        (record, answer)
    }

    fn dialed(&self, answer: &Answer) -> Option<(u32, BuyerId)> {
        let Answer::Dial { attempt, .. } = answer else {
            return None;
        };
        Some((
            *attempt,
            self.asked.iter().rev().find_map(|q| match q {
                Question::Hold { buyer, leg } if leg.attempt == *attempt => Some(buyer.id),
                _ => None,
            })?,
        ))
    }
}

fn incoming() -> Input {
    Input::Incoming {
        from: CALLER.to_owned(),
        to: MAIN_NUMBER.to_owned(),
    }
}

fn dial_ended(attempt: u32, status: DialStatus, seconds: u32) -> Input {
    Input::DialEnded {
        attempt,
        status,
        connected_seconds: seconds,
        call_over: false,
        bridged: None,
    }
}

fn leg(attempt: u32, status: CallStatus, sequence: u32) -> Input {
    Input::LegStatus {
        attempt,
        status: Some(status),
        sequence: Some(sequence),
        leg_seconds: None,
        at: None,
    }
}

fn call_status(status: CallStatus, sequence: u32) -> Input {
    Input::CallStatus {
        status: Some(status),
        sequence: Some(sequence),
    }
}

fn events(applied: &Applied) -> Vec<&'static str> {
    applied.effects.timeline.iter().map(|e| e.event.kind()).collect()
}

fn question_kind(question: &Question) -> &'static str {
    match question {
        Question::Free(_) => "free",
        Question::Replan => "replan",
        Question::Claim { .. } => "claim",
        Question::Duplicates { .. } => "duplicates",
        Question::Blocked { .. } => "blocked",
        Question::Hold { .. } => "hold",
        Question::PayOnce { .. } => "pay_once",
    }
}

mod arrival;
mod dialing;
mod properties;
mod screening;
mod settlement;
