//! Press-1, machine detection, and callbacks seen before.

use jiff::SignedDuration;

use super::*;
use crate::domain::call::Attempt;

#[test]
fn a_press_1_buyer_is_put_through_on_1_and_hung_up_on_anything_else() {
    let mut world = World::new();
    world.converted_with.insert(world.a);
    let (record, answer) = world.call([incoming()]);
    assert_eq!(world.dialed(&answer), Some((1, world.b)));
    let record = record.unwrap();
    let whisper = world.apply(
        Some(&record),
        Input::Whisper {
            attempt: 1,
            answered_by: None,
        },
    );
    assert!(
        matches!(
            whisper.answer,
            Answer::Whisper {
                attempt: 1,
                press_1: true,
                ..
            }
        ),
        "{:?}",
        whisper.answer
    );
    let record = whisper.record.unwrap();
    for (digits, answer, screening) in [
        ("1", Answer::Connect, Screening::Accepted),
        ("2", Answer::Hangup, Screening::Refused),
        ("", Answer::Hangup, Screening::NoKey),
    ] {
        let applied = world.apply(
            Some(&record),
            Input::Screened {
                attempt: 1,
                digits: digits.to_owned(),
            },
        );
        assert_eq!(applied.answer, answer, "digits {digits:?}");
        let after = applied.record.unwrap();
        assert_eq!(after.attempt(1).unwrap().screening, Some(screening));
        // Pressed again (a retried request): as it answered.
        let again = world.apply(
            Some(&after),
            Input::Screened {
                attempt: 1,
                digits: "1".to_owned(),
            },
        );
        assert_eq!(again.answer, answer, "retried after {digits:?}");
    }
    // The caller hangs up while the buyer listens to the prompt: its 1 puts nobody through.
    let gone = world.apply(Some(&record), call_status(CallStatus::Completed, 1));
    let gone = gone.record.unwrap();
    let late = world.apply(
        Some(&gone),
        Input::Screened {
            attempt: 1,
            digits: "1".to_owned(),
        },
    );
    assert_eq!(late.answer, Answer::Hangup);
    let late = late.record.unwrap();
    assert_eq!(late.outcome, gone.outcome);
    // The screening is over with the call: it says so, and never stays pending.
    assert_eq!(gone.attempt(1).unwrap().screening, Some(Screening::CallerGone));
    assert_eq!(late.attempt(1).unwrap().screening, Some(Screening::CallerGone));
}

/// The press-1 buyer B picks up at `picked_up`, presses 1 `prompt` seconds later, and the dial
/// ends with the provider's `DialCallDuration` of `seconds` (counted from B's answer).
fn press_1_call(prompt: i64, seconds: u32) -> Attempt {
    let mut world = World::new();
    world.converted_with.insert(world.a);
    let (record, _) = world.call([incoming()]);
    let whisper = world.apply(
        record.as_ref(),
        Input::Whisper {
            attempt: 1,
            answered_by: None,
        },
    );
    world.now += SignedDuration::from_secs(prompt);
    let accepted = world.apply(
        whisper.record.as_ref(),
        Input::Screened {
            attempt: 1,
            digits: "1".into(),
        },
    );
    assert_eq!(accepted.answer, Answer::Connect);
    world.now += SignedDuration::from_secs(i64::from(seconds) - prompt);
    let ended = world.apply(
        accepted.record.as_ref(),
        dial_ended(1, DialStatus::Completed, seconds),
    );
    ended.record.unwrap().attempt(1).unwrap().clone()
}

#[test]
fn a_buyer_converts_on_the_seconds_it_talked_to_the_caller_not_those_of_its_prompt() {
    // B's rule is 60 s. 66 s from its answer, 5 of them on the prompt: 61 s with the caller.
    let talked = press_1_call(5, 66);
    assert_eq!(
        (talked.connected_seconds, talked.bridged_seconds, talked.converted),
        (Some(66), Some(61), true)
    );
    assert_eq!(
        talked.bridged_at.unwrap() - talked.picked_up_at.unwrap(),
        SignedDuration::from_secs(5),
        "both moments are kept"
    );
    // 63 s from its answer, 5 on the prompt: 58 s with the caller, short of the rule.
    let short = press_1_call(5, 63);
    assert_eq!(
        (short.connected_seconds, short.bridged_seconds, short.converted),
        (Some(63), Some(58), false)
    );
}

#[test]
fn a_whispered_buyer_is_put_through_once_its_whisper_is_said() {
    let mut world = World::new();
    // A's whisper: "Call from {campaign}." (three words, about two seconds).
    let (companies, mut buyers, campaigns, publishers) = world.parts.clone();
    buyers[0].spec.whisper = Some(serde_json::from_value(json!({"say": "Call from {campaign}."})).unwrap());
    world.parts = (companies, buyers, campaigns, publishers);
    let mut world = world.replanned(&[]);
    let (record, _) = world.call([incoming()]);
    let whispered = world.apply(
        record.as_ref(),
        Input::Whisper {
            attempt: 1,
            answered_by: None,
        },
    );
    assert!(matches!(whispered.answer, Answer::Whisper { press_1: false, .. }));
    let dialed = whispered.record.as_ref().unwrap().attempt(1).unwrap();
    assert_eq!(
        dialed.bridged_at.unwrap() - dialed.picked_up_at.unwrap(),
        SignedDuration::from_millis(1700)
    );
    let ended = world.apply(
        whispered.record.as_ref(),
        dial_ended(1, DialStatus::Completed, 61),
    );
    let talked = ended.record.unwrap().attempt(1).unwrap().clone();
    assert_eq!(
        (talked.bridged_seconds, talked.converted),
        (Some(59), false),
        "short of 60 s once the whisper is taken off"
    );
}

#[test]
fn machine_detection_hangs_up_on_a_machine_and_puts_a_person_through() {
    let mut world = World::new();
    world.converted_with.extend([world.a, world.b]);
    let (record, answer) = world.call([incoming()]);
    assert_eq!(world.dialed(&answer), Some((1, world.c)));
    let record = record.unwrap();
    let person = world.apply(
        Some(&record),
        Input::Whisper {
            attempt: 1,
            answered_by: Some("human".into()),
        },
    );
    assert_eq!(person.answer, Answer::Connect);
    let machine = world.apply(
        Some(&record),
        Input::Whisper {
            attempt: 1,
            answered_by: Some("machine_start".into()),
        },
    );
    assert_eq!(machine.answer, Answer::Hangup);
    // Its own callback first: the whisper then hangs up as it judged.
    let detected = world.apply(
        Some(&record),
        Input::Detected {
            attempt: 1,
            answered_by: "fax".into(),
        },
    );
    assert_eq!(detected.answer, Answer::Acknowledge);
    let after = detected.record.unwrap();
    assert_eq!(after.attempt(1).unwrap().screening, Some(Screening::Machine));
    let whisper = world.apply(
        Some(&after),
        Input::Whisper {
            attempt: 1,
            answered_by: Some("human".into()),
        },
    );
    assert_eq!(whisper.answer, Answer::Hangup);
}

#[test]
fn a_status_callback_seen_before_and_older_recording_news_change_nothing() {
    let mut world = World::new();
    let (record, _) = world.call([incoming(), leg(1, CallStatus::Ringing, 1)]);
    let record = record.unwrap();
    let again = world.apply(Some(&record), leg(1, CallStatus::Ringing, 1));
    assert!(again.repeated);
    assert_eq!(again.record.as_ref(), Some(&record));
    assert!(again.effects.timeline.is_empty());
    let report = |status| Input::Recorded {
        attempt: 1,
        recording: RecordingReport {
            sid: "RE1".into(),
            url: "https://example.com/RE1".into(),
            status,
            duration_seconds: Some(30),
            channels: Some(1),
        },
    };
    let completed = world.apply(Some(&record), report(RecordingStatus::Completed));
    assert!(!completed.repeated);
    let after = completed.record.unwrap();
    assert_eq!(after.recordings.len(), 1);
    let older = world.apply(Some(&after), report(RecordingStatus::InProgress));
    assert!(older.repeated);
}
