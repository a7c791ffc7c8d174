//! Dials that end, retried actions, and legs that settle what their dial did not.

use super::*;
use crate::domain::dedupe::{Scope, Touch};

#[test]
fn an_unanswered_dial_routes_on_and_its_retried_action_dials_nobody_new() {
    let mut world = World::new();
    let (record, _) = world.call([incoming()]);
    let record = record.unwrap();
    let on = world.apply(Some(&record), dial_ended(1, DialStatus::NoAnswer, 0));
    assert_eq!(world.dialed(&on.answer), Some((2, world.b)));
    let after = on.record.unwrap();
    // The provider retries the same action while B rings: the same TwiML, no new hold.
    let holds = world.asked.len();
    let retried = world.apply(Some(&after), dial_ended(1, DialStatus::NoAnswer, 0));
    assert_eq!(retried.answer, on.answer);
    assert_eq!(world.asked.len(), holds);
    assert_eq!(retried.record.unwrap().attempts.len(), 2);
}

#[test]
fn a_dial_that_converts_settles_the_attempt_teaches_the_index_and_hangs_up() {
    let mut world = World::new();
    let (record, _) = world.call([incoming(), leg(1, CallStatus::InProgress, 1)]);
    let applied = world.apply(record.as_ref(), dial_ended(1, DialStatus::Completed, 95));
    assert_eq!(applied.answer, Answer::Hangup);
    let record = applied.record.unwrap();
    assert_eq!(
        (record.outcome, record.converted()),
        (Some(Outcome::Connected), true)
    );
    let conversion = applied.effects.conversion.expect("a conversion");
    assert_eq!((conversion.buyer_id, conversion.connected_seconds), (world.a, 95));
    assert!(
        applied
            .effects
            .touched
            .iter()
            .any(|t| t.touch == Touch::Converted && t.scope == Scope::Buyer(world.a))
    );
    // Duplicates are judged again at the end of the leg.
    assert!(matches!(world.asked.last(), Some(Question::Duplicates { .. })));
    assert!(
        applied
            .effects
            .load
            .iter()
            .any(|c| matches!(c, LoadChange::Counted { .. }))
    );
}

#[test]
fn a_call_whose_dial_action_never_came_is_settled_from_its_leg_when_it_ends() {
    let mut world = World::new();
    let ended_leg = Input::LegStatus {
        attempt: 1,
        status: Some(CallStatus::Completed),
        sequence: Some(2),
        leg_seconds: Some(80),
        at: None,
    };
    let (record, _) = world.call([incoming(), leg(1, CallStatus::InProgress, 1), ended_leg]);
    let applied = world.apply(record.as_ref(), call_status(CallStatus::Completed, 1));
    let record = applied.record.unwrap();
    let attempt = record.attempt(1).unwrap();
    assert_eq!(
        (attempt.status, attempt.connected_seconds),
        (Some(DialStatus::Completed), Some(80))
    );
    assert!(record.converted());
    assert!(applied.effects.conversion.is_some());
    assert!(
        applied
            .effects
            .warnings
            .iter()
            .any(|w| w.contains("settled from its leg"))
    );
}

#[test]
fn a_slot_a_request_frees_for_a_call_nobody_knows_is_freed_before_routing_afresh() {
    let mut world = World::new();
    let applied = world.apply(None, dial_ended(3, DialStatus::Busy, 0));
    assert!(matches!(
        world.asked.first(),
        Some(Question::Free(LoadChange::Released(Leg { attempt: 3, .. })))
    ));
    assert!(matches!(applied.answer, Answer::Dial { attempt: 1, .. }));
}

#[test]
fn a_hold_never_answered_is_given_back_unless_its_buyer_is_dialed_on_the_leg() {
    let mut world = World::new();
    world.slow_holds.insert(world.a);
    let applied = world.apply(None, incoming());
    // A's slot may have been taken after all: the haste decision dials the fallback instead,
    // and A's slot for the leg is given back.
    assert_eq!(world.dialed(&applied.answer), Some((1, world.f)));
    let leg = Leg {
        call: applied.record.as_ref().unwrap().sid.clone(),
        attempt: 1,
    };
    let unheld: Vec<_> = (applied.effects.load.iter())
        .filter(|change| matches!(change, LoadChange::Unheld { .. }))
        .collect();
    assert_eq!(unheld, [&LoadChange::Unheld { buyer: world.a, leg }]);
    // The buyer dialed keeps its slot.
    let mut world = World::new();
    let applied = world.apply(None, incoming());
    assert!(
        !applied
            .effects
            .load
            .iter()
            .any(|c| matches!(c, LoadChange::Unheld { .. }))
    );
}
