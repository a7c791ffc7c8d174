//! Every input in every state, and any webhook ordering.

use super::*;

/// The states a call can be in when a request comes: nobody knows it, it waits for a
/// redirect to be followed, it rings a buyer, it is connected, it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Unknown,
    Redirecting,
    Dialing,
    Connected,
    Ended,
}

fn stage(world: &mut World, stage: Stage) -> Option<CallRecord> {
    match stage {
        Stage::Unknown => None,
        Stage::Redirecting => {
            // Everyone in Main has the caller already and the fallback is full.
            world.converted_with.extend([world.a, world.b, world.c]);
            world.full.insert(world.f);
            let (record, answer) = world.call([incoming()]);
            let trail = Trail {
                tried: Vec::new(),
                visited: vec![world.main],
            };
            assert_eq!(
                answer,
                Answer::Redirect {
                    campaign: world.overflow,
                    trail
                }
            );
            record
        }
        Stage::Dialing => world.call([incoming()]).0,
        Stage::Connected => world.call([incoming(), leg(1, CallStatus::InProgress, 1)]).0,
        Stage::Ended => world.call([incoming(), call_status(CallStatus::Completed, 1)]).0,
    }
}

fn every_input(world: &World) -> Vec<Input> {
    vec![
        incoming(),
        Input::Fallback {
            error_code: Some("11200".into()),
        },
        dial_ended(1, DialStatus::NoAnswer, 0),
        dial_ended(1, DialStatus::Completed, 95),
        Input::Whisper {
            attempt: 1,
            answered_by: None,
        },
        Input::Detected {
            attempt: 1,
            answered_by: "human".into(),
        },
        Input::Screened {
            attempt: 1,
            digits: "1".into(),
        },
        Input::Recorded {
            attempt: 1,
            recording: RecordingReport {
                sid: "RE1".into(),
                url: "https://example.com/RE1".into(),
                status: RecordingStatus::Completed,
                duration_seconds: Some(9),
                channels: Some(2),
            },
        },
        leg(1, CallStatus::Completed, 7),
        Input::Redirected {
            campaign: world.overflow,
        },
        call_status(CallStatus::Completed, 7),
        Input::TimedOut,
    ]
}

/// What each input gets in each state, as a supervisor reading the call would expect.
fn expected(stage: Stage, input: &Input) -> &'static str {
    use Stage::*;
    match (input, stage) {
        // A call starts (or, known, gets what it got: the dial in flight).
        (Input::Incoming { .. } | Input::Fallback { .. }, Unknown | Dialing) => "dial",
        // Still in Main, nobody there able to take it: the redirect again.
        (Input::Incoming { .. } | Input::Fallback { .. } | Input::DialEnded { .. }, Redirecting) => {
            "redirect"
        }
        (Input::Incoming { .. } | Input::Fallback { .. }, Connected | Ended) => "hangup",
        // Unanswered: on to the next buyer; an unknown call is routed afresh.
        // (A leg that answered but was never put through, as the dial reports it, too.)
        (
            Input::DialEnded {
                status: DialStatus::NoAnswer,
                ..
            },
            Unknown | Dialing | Connected,
        ) => "dial",
        (Input::DialEnded { .. }, _) => "hangup",
        // Only the ringing attempt is put through.
        (Input::Whisper { .. }, Dialing | Connected) => "connect",
        (Input::Whisper { .. } | Input::Screened { .. }, _) => "hangup",
        (Input::Redirected { .. }, Unknown | Redirecting) => "dial",
        (Input::Redirected { .. }, Dialing) => "dial",
        (Input::Redirected { .. }, Connected | Ended) => "hangup",
        (
            Input::Detected { .. }
            | Input::Recorded { .. }
            | Input::LegStatus { .. }
            | Input::CallStatus { .. }
            | Input::TimedOut,
            _,
        ) => "acknowledge",
    }
}

#[test]
fn every_input_in_every_state_gets_the_answer_that_fits_and_keeps_the_call_consistent() {
    let stages = [
        Stage::Unknown,
        Stage::Redirecting,
        Stage::Dialing,
        Stage::Connected,
        Stage::Ended,
    ];
    for stage_of in stages {
        for input in every_input(&World::new()) {
            let mut world = World::new();
            let record = stage(&mut world, stage_of);
            let input = match input {
                Input::Redirected { .. } => Input::Redirected {
                    campaign: world.overflow,
                },
                input => input,
            };
            let applied = world.apply(record.as_ref(), input.clone());
            let seen = format!("{stage_of:?} + {input:?}");
            assert_eq!(applied.answer.kind(), expected(stage_of, &input), "{seen}");
            if stage_of == Stage::Redirecting && matches!(input, Input::Redirected { .. }) {
                assert_eq!(world.dialed(&applied.answer), Some((1, world.o)), "{seen}");
            }
            let Some(after) = &applied.record else {
                assert_eq!(stage_of, Stage::Unknown, "{seen}: a known call lost");
                continue;
            };
            let before = record.as_ref();
            // An ended call stays ended when it ended; only late news of a leg that
            // connected can tell it was a connected call rather than one abandoned.
            if let Some(before) = before.filter(|r| r.is_ended()) {
                assert_eq!(after.ended_at, before.ended_at, "{seen}");
                assert!(
                    after.outcome == before.outcome || after.outcome == Some(Outcome::Connected),
                    "{seen}"
                );
            }
            assert_eq!(after.is_ended(), after.outcome.is_some(), "{seen}");
            // Every entry is counted, and numbered after those stored.
            let stored = before.map_or(0, |r| r.timeline_len);
            assert_eq!(
                after.timeline_len,
                stored + applied.effects.timeline.len() as u32,
                "{seen}"
            );
            // No buyer is dialed twice in one campaign.
            let dialed: Vec<_> = after
                .attempts
                .iter()
                .map(|a| (a.campaign_id, a.buyer_id))
                .collect();
            let distinct: HashSet<_> = dialed.iter().collect();
            assert_eq!(dialed.len(), distinct.len(), "{seen}");
            if let Answer::Dial { attempt, .. } = applied.answer {
                assert_eq!(after.current_attempt().map(|a| a.number), Some(attempt), "{seen}");
                assert!(!after.is_ended(), "{seen}");
            }
        }
    }
}

fn any_input() -> impl Strategy<Value = Input> {
    let attempt = 1..4u32;
    prop_oneof![
        Just(incoming()),
        Just(Input::Fallback { error_code: None }),
        (
            attempt.clone(),
            prop_oneof![
                Just(DialStatus::NoAnswer),
                Just(DialStatus::Busy),
                Just(DialStatus::Completed),
                Just(DialStatus::Failed)
            ],
            0..200u32,
            any::<bool>()
        )
            .prop_map(
                |(attempt, status, connected_seconds, call_over)| Input::DialEnded {
                    attempt,
                    status,
                    connected_seconds,
                    call_over,
                    bridged: None
                }
            ),
        (
            attempt.clone(),
            prop::option::of(prop_oneof![
                Just("human".to_owned()),
                Just("machine_end_beep".to_owned())
            ])
        )
            .prop_map(|(attempt, answered_by)| Input::Whisper { attempt, answered_by }),
        (attempt.clone(), prop_oneof![Just("1"), Just("2"), Just("")]).prop_map(|(attempt, d)| {
            Input::Screened {
                attempt,
                digits: d.to_owned(),
            }
        }),
        (
            attempt.clone(),
            prop_oneof![
                Just(CallStatus::Ringing),
                Just(CallStatus::InProgress),
                Just(CallStatus::Completed),
                Just(CallStatus::NoAnswer)
            ],
            0..4u32
        )
            .prop_map(|(attempt, status, sequence)| leg(attempt, status, sequence)),
        (
            prop_oneof![Just(CallStatus::InProgress), Just(CallStatus::Completed)],
            0..4u32
        )
            .prop_map(|(status, sequence)| call_status(status, sequence)),
        Just(Input::TimedOut),
    ]
}

proptest! {
    /// Whatever the provider sends, in whatever order (retries and reorderings included),
    /// with whatever the indexes know: every step ends, an ended call stays as it ended and
    /// is never dialed on, no buyer is dialed twice in a campaign, attempts are numbered in
    /// order, every timeline entry is counted, and a step taken again on the same facts
    /// gives the same answer and the same call.
    #[test]
    fn any_webhook_ordering_keeps_the_call_consistent(
        inputs in prop::collection::vec(any_input(), 1..14),
        converted in prop::collection::vec(0..3usize, 0..3),
        full in prop::collection::vec(0..4usize, 0..2),
        silent in any::<bool>(),
    ) {
        let mut world = World::new();
        let buyers = [world.a, world.b, world.c, world.f];
        world.converted_with = converted.iter().map(|i| buyers[*i]).collect();
        world.full = full.iter().map(|i| buyers[*i]).collect();
        world.silent = silent;
        let mut record: Option<CallRecord> = None;
        let mut ended: Option<(Option<Outcome>, Option<Timestamp>)> = None;
        for input in inputs {
            let asked = world.asked.len();
            let applied = world.apply(record.as_ref(), input.clone());
            // The same facts again: the same decision.
            let mut facts = Facts { now: world.now, ids: IdSeed::new(uuid::Uuid::from_u128(7 << 76)), plan: world.plan.clone(), answered_elsewhere: false, routing_seed: 7, replies: vec![] };
            facts.replies = world.asked[asked..].iter().map(|q| world.reply(q)).collect();
            let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
            let params = FormParams::from(vec![("From".to_owned(), CALLER.to_owned()), ("To".to_owned(), MAIN_NUMBER.to_owned())]);
            let request = Request { sid: &sid, input: &input, endpoint: "test", params: &params };
            let Step::Done(again) = step(record.as_ref(), request, &facts) else { panic!("asked more the second time") };
            prop_assert_eq!(&again.answer, &applied.answer);
            prop_assert_eq!(&again.record, &applied.record);

            if let Some(after) = &applied.record {
                if let Some((outcome, ended_at)) = ended {
                    prop_assert_eq!(after.ended_at, ended_at);
                    prop_assert!(after.outcome == outcome || after.outcome == Some(Outcome::Connected));
                    let goes_on = matches!(applied.answer, Answer::Dial { .. } | Answer::Redirect { .. } | Answer::Connect | Answer::Whisper { .. });
                    prop_assert!(!goes_on, "an ended call went on: {:?}", applied.answer);
                }
                let numbers: Vec<u32> = after.attempts.iter().map(|a| a.number).collect();
                prop_assert_eq!(numbers, (1..=after.attempts.len() as u32).collect::<Vec<_>>());
                let pairs: BTreeSet<_> = after.attempts.iter().map(|a| (a.campaign_id.to_string(), a.buyer_id.to_string())).collect();
                prop_assert_eq!(pairs.len(), after.attempts.len());
                let stored = record.as_ref().map_or(0, |r| r.timeline_len);
                prop_assert_eq!(after.timeline_len, stored + applied.effects.timeline.len() as u32);
                if after.is_ended() {
                    ended = Some((after.outcome, after.ended_at));
                }
                // A fallback is dialed only once the listed buyers cannot take the call.
                if let Some(fallback) = after.attempts.iter().find(|a| a.kind == AttemptKind::Fallback) {
                    prop_assert_eq!(fallback.buyer_id, world.f);
                }
                record = Some(after.clone());
            }
        }
    }
}
