//! Press-1, machine detection, and callbacks seen before.

use super::*;

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
    assert_eq!(late.record.unwrap().outcome, gone.outcome);
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
