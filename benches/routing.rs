//! What one routing decision costs over campaigns of 5, 50 and 500 buyers: the pure decision,
//! the capacity check the capacity actor runs for it, and a new call's whole turn through the
//! call's state machine (`call_flow`), question by question. `cargo bench --bench routing`.

use std::{
    collections::{HashMap, HashSet},
    hint::black_box,
    sync::Arc,
};
use switchboard::fresh::Generate;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use rand::{SeedableRng, rngs::StdRng};
use serde_json::json;
use switchboard::domain::{
    call::CallSid,
    call_flow::{Facts, Input, Question, Reply, Request, Step, step},
    capacity::{Block, CapPeriod, CapacityIndex, Leg},
    form::FormParams,
    ids::{Id, IdSeed},
    plan::{Buyer, BuyerId, Campaign, CampaignId, CapCounting, Company, PlanEntity, Record},
    routing::{CallSituation, RoutingPlan},
};

const SIZES: [usize; 3] = [5, 50, 500];
const TRACKING_NUMBER: &str = "+14155550100";
const ZONES: [&str; 4] = [
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
];

fn record<T: PlanEntity>(spec: serde_json::Value) -> Record<T> {
    Record {
        id: Id::generate(),
        company_id: None,
        spec: serde_json::from_value(spec).expect("a valid spec"),
        created_at: Timestamp::UNIX_EPOCH,
        updated_at: Timestamp::UNIX_EPOCH,
    }
}

/// `n` buyers in priorities of 10, various weights, each with caps, a time zone and weekday
/// business hours: every check routing makes has something to look at.
fn plan(n: usize) -> (RoutingPlan, CampaignId, Vec<BuyerId>) {
    let company: Record<Company> = record(json!({"name": "Acme", "duplicate_caller_handling": true}));
    let shift = json!({"open": "00:00", "close": "24:00"});
    let buyers: Vec<Record<Buyer>> = (0..n)
        .map(|i| {
            record(json!({
                "name": format!("Buyer {i}"),
                "destination": "+14155550101",
                "time_zone": ZONES[i % ZONES.len()],
                "caps": {"concurrency": 5, "hourly": 10, "daily": 100, "monthly": 1000},
                "business_hours": {"monday": shift, "tuesday": shift, "wednesday": shift, "thursday": shift, "friday": shift},
            }))
        })
        .collect();
    let list: Vec<_> = buyers
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"buyer_id": b.id, "priority": i / 10, "weight": 1 + i % 7}))
        .collect();
    let campaign: Record<Campaign> = record(json!({
        "name": "Main", "duplicate_caller_handling": "new_convertible_buyer", "buyers": list,
        "numbers": [TRACKING_NUMBER],
    }));
    let (id, ids) = (campaign.id, buyers.iter().map(|b| b.id).collect());
    (RoutingPlan::new(vec![company], buyers, vec![campaign]), id, ids)
}

fn decisions(c: &mut Criterion) {
    // A Tuesday afternoon: every buyer open.
    let at: Timestamp = "2026-11-24T18:00:00Z".parse().expect("a time");
    let none = HashSet::new();
    let unblocked = HashMap::new();
    let mut random = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("decide");
    for n in SIZES {
        let (plan, campaign_id, ids) = plan(n);
        let campaign = plan.campaign(campaign_id).expect("the campaign");
        group.bench_with_input(BenchmarkId::new("the first priority takes it", n), &n, |b, _| {
            let situation = CallSituation {
                at,
                duplicates: &none,
                blocked: &unblocked,
                tried: &none,
                visited: &[campaign_id],
                reserved: None,
                place: Default::default(),
            };
            b.iter(|| black_box(plan.decide(black_box(campaign), &situation, &mut random)))
        });

        // The worst case: only the last buyer can take the call, so all are judged, the others
        // a third each duplicates, at caps, or already tried.
        let last = ids[n - 1];
        let others = || ids.iter().copied().filter(move |id| *id != last);
        let duplicates: HashSet<BuyerId> = others().step_by(3).collect();
        let tried: HashSet<BuyerId> = others().skip(1).step_by(3).collect();
        let blocked: HashMap<BuyerId, Block> = (others().skip(2).step_by(3))
            .map(|id| (id, Block::Cap(CapPeriod::Daily)))
            .collect();
        group.bench_with_input(BenchmarkId::new("only the last can take it", n), &n, |b, _| {
            let situation = CallSituation {
                at,
                duplicates: &duplicates,
                blocked: &blocked,
                tried: &tried,
                visited: &[campaign_id],
                reserved: None,
                place: Default::default(),
            };
            b.iter(|| black_box(plan.decide(black_box(campaign), &situation, &mut random)))
        });

        // What the capacity actor does for the same decision: every buyer's caps, each buyer
        // with 500 calls counted over the last month.
        let mut index = CapacityIndex::default();
        let leg = Leg {
            call: CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("a call sid"),
            attempt: 1,
        };
        for id in &ids {
            for hours in 0..500 {
                index.count(
                    *id,
                    &leg,
                    CapCounting::Converted,
                    at - jiff::SignedDuration::from_hours(hours),
                );
            }
        }
        let buyers: Vec<&Record<Buyer>> = plan.candidates(campaign).collect();
        group.bench_with_input(BenchmarkId::new("caps, 500 counted calls each", n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    (buyers.iter())
                        .filter_map(|buyer| index.blocked(buyer.id, &buyer.spec, at))
                        .count(),
                )
            })
        });
    }
    group.finish();
}

/// A new call's first webhook through the state machine: as the call actor takes it, stepping
/// again from the start after each reply (the reservation book, the de-dupe index, the capacity
/// index, the slot, the publisher's payout answering at once), and as one step with every
/// reply in hand. The difference is what replaying costs.
fn call_turns(c: &mut Criterion) {
    let at: Timestamp = "2026-11-24T18:00:00Z".parse().expect("a time");
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("a call sid");
    let input = Input::Incoming {
        from: "+14155550177".to_owned(),
        to: TRACKING_NUMBER.to_owned(),
    };
    let params = FormParams::from(vec![
        ("From".to_owned(), "+14155550177".to_owned()),
        ("To".to_owned(), TRACKING_NUMBER.to_owned()),
    ]);
    let request = Request {
        sid: &sid,
        input: &input,
        endpoint: "voice",
        params: &params,
        trail: None,
    };
    let mut group = c.benchmark_group("call_flow");
    for n in SIZES {
        let plan = Arc::new(plan(n).0);
        let reply = |question: &Question| match question {
            Question::Free(_) => Reply::Freed,
            Question::Replan => Reply::Replanned(plan.clone()),
            Question::Claim { .. } => Reply::Claimed(None),
            Question::Duplicates { .. } => Reply::Duplicates(Some(HashSet::new())),
            Question::Blocked { .. } => Reply::Blocked(Some(HashMap::new())),
            Question::Hold { .. } => Reply::Held(Some(Ok(()))),
            Question::PayOnce { .. } => Reply::PaidOnce(Some(true)),
        };
        let facts = || Facts {
            now: at,
            ids: IdSeed::generate(),
            plan: plan.clone(),
            answered_elsewhere: false,
            routing_seed: 1,
            blind: false,
            news_since: None,
            replies: Vec::new(),
        };
        let turn = || {
            let mut facts = facts();
            loop {
                match step(None, request, &facts) {
                    Step::Done(applied) => return (applied, facts),
                    Step::Ask(question) => facts.replies.push(reply(&question)),
                }
            }
        };
        let (applied, answered) = turn();
        assert_eq!(applied.answer.kind(), "dial", "the new call is dialed");
        group.bench_with_input(
            BenchmarkId::new("a new call, question by question", n),
            &n,
            |b, _| b.iter(|| black_box(turn())),
        );
        group.bench_with_input(
            BenchmarkId::new("a new call, every reply in hand", n),
            &n,
            |b, _| b.iter(|| black_box(step(None, request, black_box(&answered)))),
        );
    }
    group.finish();
}

criterion_group!(benches, decisions, call_turns);
criterion_main!(benches);
