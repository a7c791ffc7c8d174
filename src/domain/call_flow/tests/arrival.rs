//! A call's arrival: what it asks, in what order, and what it is told.

use super::*;
use crate::fresh::Generate;

#[test]
fn a_new_call_dials_the_first_buyer_once_its_slot_is_held() {
    let mut world = World::new();
    let applied = world.apply(None, incoming());
    assert_eq!(world.dialed(&applied.answer), Some((1, world.a)));
    let record = applied.record.clone().unwrap();
    assert_eq!(
        (record.state, record.campaign_id),
        (CallState::Dialing, Some(world.main))
    );
    assert_eq!(record.publisher_id, Some(world.publisher));
    assert_eq!(events(&applied), ["webhook", "decision", "publisher_settled"]);
    assert_eq!(record.timeline_len, 3);
    // The reservation book first, then the de-dupe index, then A's slot. (No buyer has caps:
    // the capacity index is not asked.) The publisher's payout is asked last.
    let kinds: Vec<_> = world.asked.iter().map(question_kind).collect();
    assert_eq!(kinds, ["claim", "duplicates", "hold", "pay_once"]);
    assert_eq!(record.publisher_payout, Some(Money::parse("5.00").unwrap()));
}

#[test]
fn a_caller_who_converted_with_the_first_buyer_is_sent_to_the_next() {
    let mut world = World::new();
    world.converted_with.insert(world.a);
    let applied = world.apply(None, incoming());
    assert_eq!(world.dialed(&applied.answer), Some((1, world.b)));
    assert_eq!(applied.record.unwrap().duplicate_buyers, [world.a]);
}

#[test]
fn a_slot_taken_meanwhile_rules_its_buyer_out_and_routing_decides_again() {
    let mut world = World::new();
    world.full.insert(world.a);
    let applied = world.apply(None, incoming());
    assert_eq!(world.dialed(&applied.answer), Some((1, world.b)));
    let holds = world
        .asked
        .iter()
        .filter(|q| matches!(q, Question::Hold { .. }))
        .count();
    assert_eq!(holds, 2);
}

#[test]
fn indexes_that_do_not_answer_leave_only_the_fallback_and_say_so() {
    let mut world = World::new();
    world.silent = true;
    let applied = world.apply(None, incoming());
    // The fallback takes duplicates, but its slot cannot be held either: the explicit end.
    assert_eq!(applied.answer, Answer::End);
    let record = applied.record.unwrap();
    assert_eq!(record.drop_reason, Some(DropReason::Overloaded));
    assert!(applied.effects.warnings.iter().any(|w| w.contains("in haste")));
}

#[test]
fn a_webhook_answered_without_the_actor_records_the_explicit_end_and_claims_nothing() {
    let mut world = World::new();
    world.answered_elsewhere = true;
    let applied = world.apply(None, incoming());
    assert_eq!(applied.answer, Answer::End);
    let record = applied.record.unwrap();
    assert_eq!(
        (record.outcome, record.drop_reason),
        (Some(Outcome::Dropped), Some(DropReason::Overloaded))
    );
    assert!(
        !world
            .asked
            .iter()
            .any(|q| matches!(q, Question::Claim { .. } | Question::Hold { .. }))
    );
}

#[test]
fn a_number_unknown_here_is_read_again_from_the_store_before_the_call_is_rejected() {
    let mut world = World::new();
    let sid = CallSid::parse("CA00000000000000000000000000000002").unwrap();
    let input = incoming();
    let params = FormParams::from(vec![
        ("From".to_owned(), CALLER.to_owned()),
        ("To".to_owned(), "+14155550999".to_owned()),
    ]);
    let request = Request {
        sid: &sid,
        input: &input,
        endpoint: "voice",
        params: &params,
        trail: None,
    };
    let mut facts = world.facts();
    let Step::Ask(Question::Replan) = step(None, request, &facts) else {
        panic!("the plan is not read again")
    };
    // Still unknown in the store: rejected, as the record says.
    facts.replies.push(Reply::Replanned(world.plan.clone()));
    let Step::Done(applied) = step(None, request, &facts) else {
        panic!("asked more")
    };
    assert_eq!(applied.answer, Answer::Reject);
    assert_eq!(
        applied.record.unwrap().drop_reason,
        Some(DropReason::UnknownNumber)
    );
    // Created on another node meanwhile: routed.
    let main = world.parts.2.iter_mut().find(|c| c.id == world.main).unwrap();
    main.spec.numbers = serde_json::from_value(json!(["+14155550999"])).unwrap();
    let world = world.replanned(&[]);
    facts.replies = vec![Reply::Replanned(world.plan.clone())];
    let applied = loop {
        match step(None, request, &facts) {
            Step::Done(applied) => break *applied,
            Step::Ask(question) => facts.replies.push(world.reply(&question)),
        }
    };
    assert!(
        matches!(applied.answer, Answer::Dial { attempt: 1, .. }),
        "{:?}",
        applied.answer
    );
}

#[test]
fn a_blocked_caller_is_refused_before_any_index_is_asked() {
    let world = World::new();
    let entry = BlockEntry {
        id: uuid::Uuid::now_v7(),
        company_id: world.plan.campaign(world.main).unwrap().company_id.unwrap(),
        blocked: BlockedCaller {
            pattern: CALLER.to_owned().try_into().unwrap(),
            reason: None,
        },
        created_at: Timestamp::UNIX_EPOCH,
    };
    let mut world = world.replanned(&[entry]);
    let applied = world.apply(None, incoming());
    assert_eq!(applied.answer, Answer::Blocked);
    let record = applied.record.unwrap();
    assert_eq!(record.outcome, Some(Outcome::Blocked));
    assert!(
        world.asked.iter().all(|q| matches!(q, Question::PayOnce { .. })),
        "{:?}",
        world.asked
    );
    // Retried, or asked through the fallback URL: refused unanswered again, never answered
    // with a hang-up (which bills the call).
    for again in [
        incoming(),
        Input::Fallback {
            error_code: Some("11200".into()),
        },
    ] {
        assert_eq!(
            world.apply(Some(&record), again.clone()).answer,
            Answer::Blocked,
            "{again:?}"
        );
    }
}

#[test]
fn an_rtb_reservation_is_claimed_and_its_buyer_dialed_for_its_publisher() {
    let mut world = World::new();
    let publisher = Id::generate();
    world.reservation = Some(Reservation {
        uuid: uuid::Uuid::nil(),
        campaign_id: world.main,
        caller: Some(E164::normalise(CALLER).unwrap()),
        buyer_id: world.c,
        publisher_id: Some(publisher),
        payout: Money::parse("12.00").unwrap(),
        seconds: 60,
        inbound_number: E164::normalise(MAIN_NUMBER).unwrap(),
        reserved_at: world.now,
        expires_at: world.now,
    });
    let applied = world.apply(None, incoming());
    assert_eq!(world.dialed(&applied.answer), Some((1, world.c)));
    let record = applied.record.clone().unwrap();
    assert_eq!(
        (record.publisher_id, record.bid_payout),
        (Some(publisher), Some(Money::parse("12.00").unwrap()))
    );
    assert!(events(&applied).contains(&"reservation_claimed"));
}
