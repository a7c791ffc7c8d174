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
            | Input::TimedOut
            | Input::Settle,
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

/// Any request of a call whose campaigns are Main and Overflow: every kind a provider sends
/// (first webhooks and fallbacks, dial actions, whispers, machine detection, key presses,
/// recordings, leg and call status callbacks, redirects), retried or out of order, and the
/// reaper's timeout. Ends are rarer than the rest, as in a call.
fn any_input(world: &World) -> impl Strategy<Value = Input> + use<> {
    let attempt = 1..4u32;
    let (main, overflow) = (world.main, world.overflow);
    prop_oneof![
        2 => Just(incoming()),
        1 => Just(Input::Fallback { error_code: Some("11200".into()) }),
        4 => (
            attempt.clone(),
            prop_oneof![
                Just(DialStatus::NoAnswer),
                Just(DialStatus::Busy),
                Just(DialStatus::Completed),
                Just(DialStatus::Failed),
                Just(DialStatus::Canceled),
            ],
            0..200u32,
            prop::bool::weighted(0.2),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(attempt, status, connected_seconds, call_over, bridged)| Input::DialEnded {
                attempt,
                status,
                connected_seconds,
                call_over,
                bridged,
            }),
        2 => (
            attempt.clone(),
            prop::option::of(prop_oneof![
                Just("human".to_owned()),
                Just("unknown".to_owned()),
                Just("machine_end_beep".to_owned()),
                Just("fax".to_owned()),
            ])
        )
            .prop_map(|(attempt, answered_by)| Input::Whisper { attempt, answered_by }),
        1 => (
            attempt.clone(),
            prop_oneof![Just("human"), Just("machine_start")]
        )
            .prop_map(|(attempt, verdict)| Input::Detected { attempt, answered_by: verdict.to_owned() }),
        2 => (attempt.clone(), prop_oneof![Just("1"), Just("2"), Just("")]).prop_map(|(attempt, d)| {
            Input::Screened {
                attempt,
                digits: d.to_owned(),
            }
        }),
        1 => (
            attempt.clone(),
            prop_oneof![Just("RE1"), Just("RE2")],
            prop_oneof![Just(RecordingStatus::InProgress), Just(RecordingStatus::Completed), Just(RecordingStatus::Absent)],
        )
            .prop_map(|(attempt, sid, status)| Input::Recorded {
                attempt,
                recording: RecordingReport {
                    sid: sid.to_owned(),
                    url: format!("https://example.com/{sid}"),
                    status,
                    duration_seconds: Some(9),
                    channels: Some(2),
                },
            }),
        3 => (
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
        1 => prop_oneof![Just(overflow), Just(main)].prop_map(|campaign| Input::Redirected { campaign }),
        1 => (
            prop_oneof![Just(CallStatus::InProgress), Just(CallStatus::Completed)],
            0..4u32
        )
            .prop_map(|(status, sequence)| call_status(status, sequence)),
        1 => Just(Input::TimedOut),
    ]
}

/// A call's requests, in half the cases starting as calls start (the first webhook, indexes
/// answering), so that the orderings that matter most, those of a call that dials, are
/// well represented.
fn any_call(world: &World) -> impl Strategy<Value = (Vec<Input>, bool)> + use<> {
    (any::<bool>(), prop::collection::vec(any_input(world), 1..14)).prop_map(|(starts, mut inputs)| {
        if starts {
            inputs.insert(0, incoming());
        }
        (inputs, starts)
    })
}

/// What the indexes know, as a strategy: buyers the caller converted with, buyers full, and
/// whether the indexes answer.
fn any_knowledge() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    (
        prop::collection::vec(0..3usize, 0..3),
        prop::collection::vec(0..4usize, 0..2),
        any::<bool>(),
    )
}

/// How far a call went: whether a buyer was dialed before the call ended.
fn run(world: &mut World, inputs: &[Input]) -> Vec<Applied> {
    let mut record: Option<CallRecord> = None;
    let mut applied = Vec::new();
    for input in inputs {
        let step = world.apply(record.as_ref(), input.clone());
        if let Some(after) = &step.record {
            record = Some(after.clone());
        }
        applied.push(step);
    }
    applied
}

fn dialed_before_the_end(steps: &[Applied]) -> bool {
    for step in steps {
        if matches!(step.answer, Answer::Dial { .. }) {
            return true;
        }
        if step.record.as_ref().is_some_and(CallRecord::is_ended) {
            return false;
        }
    }
    false
}

/// The generator itself: a property whose cases mostly end before any buyer is dialed tests
/// little of what matters. In at least half of them a buyer is dialed while the call is live.
#[test]
fn the_generated_calls_dial_a_buyer_before_they_end_in_half_the_cases() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (any_call(&World::new()), any_knowledge());
    let (mut dialing, cases) = (0, 1000);
    for _ in 0..cases {
        let ((inputs, starts), (converted, full, silent)) = strategy.new_tree(&mut runner).unwrap().current();
        let mut world = World::new().knowing(&converted, &full, silent && !starts);
        if dialed_before_the_end(&run(&mut world, &inputs)) {
            dialing += 1;
        }
    }
    assert!(
        dialing * 2 >= cases,
        "only {dialing} of {cases} calls dialed a buyer before they ended"
    );
}

impl World {
    /// What the indexes know: the caller converted with buyers `converted` (of A, B, C), buyers
    /// `full` (of A, B, C, F) have no slot, and the indexes may be `silent`.
    fn knowing(mut self, converted: &[usize], full: &[usize], silent: bool) -> Self {
        let buyers = [self.a, self.b, self.c, self.f];
        self.converted_with = converted.iter().map(|i| buyers[*i]).collect();
        self.full = full.iter().map(|i| buyers[*i]).collect();
        self.silent = silent;
        self
    }

    /// The buyers of `campaign`'s list.
    fn listed(&self, campaign: CampaignId) -> Vec<BuyerId> {
        let campaign = self.plan.campaign(campaign).unwrap();
        campaign
            .spec
            .buyers
            .as_slice()
            .iter()
            .map(|link| link.buyer_id)
            .collect()
    }
}

proptest! {
    /// Whatever the provider sends, in whatever order (retries and reorderings included),
    /// with whatever the indexes know:
    ///
    /// - a step taken again on the same facts gives the same answer and the same call;
    /// - a known call is never lost, and an ended call stays as it ended and is never dialed
    ///   on (only late news of a leg that connected can tell it was connected, not abandoned);
    /// - no buyer is dialed twice on the call, attempts are numbered in order, and a dial
    ///   answered is the call's current attempt, to a buyer whose slot was held;
    /// - the fallback is dialed only once no listed buyer can take the call;
    /// - a buyer is put through only on its ringing attempt, and only once it accepted (or
    ///   needed not);
    /// - a conversion is a connected leg that lasted the buyer's seconds and was no duplicate;
    /// - every timeline entry is counted, and a publisher's payout, once settled, stays.
    #[test]
    fn any_webhook_ordering_keeps_the_call_consistent(
        (inputs, starts) in any_call(&World::new()),
        (converted, full, silent) in any_knowledge(),
    ) {
        let mut world = World::new().knowing(&converted, &full, silent && !starts);
        let mut record: Option<CallRecord> = None;
        let mut ended: Option<(Option<Outcome>, Option<Timestamp>)> = None;
        for input in inputs {
            let asked = world.asked.len();
            let applied = world.apply(record.as_ref(), input.clone());
            // The same facts again: the same decision.
            let mut facts = world.facts();
            facts.replies = world.asked[asked..].iter().map(|q| world.reply(q)).collect();
            let sid = CallSid::parse("CA00000000000000000000000000000001").unwrap();
            let params = FormParams::from(vec![("From".to_owned(), CALLER.to_owned()), ("To".to_owned(), MAIN_NUMBER.to_owned())]);
            let request = Request { sid: &sid, input: &input, endpoint: "test", params: &params, trail: None };
            let Step::Done(again) = step(record.as_ref(), request, &facts) else { panic!("asked more the second time") };
            prop_assert_eq!(&again.answer, &applied.answer);
            prop_assert_eq!(&again.record, &applied.record);
            prop_assert_eq!(&again.effects.postbacks, &applied.effects.postbacks);

            let Some(after) = &applied.record else {
                prop_assert!(record.is_none(), "a known call was lost");
                continue;
            };
            let before = record.as_ref();
            if let Some((outcome, ended_at)) = ended {
                prop_assert_eq!(after.ended_at, ended_at);
                prop_assert!(after.outcome == outcome || after.outcome == Some(Outcome::Connected));
                let goes_on = matches!(applied.answer, Answer::Dial { .. } | Answer::Redirect { .. } | Answer::Connect | Answer::Whisper { .. });
                prop_assert!(!goes_on, "an ended call went on: {:?}", applied.answer);
            }
            let numbers: Vec<u32> = after.attempts.iter().map(|a| a.number).collect();
            prop_assert_eq!(numbers, (1..=after.attempts.len() as u32).collect::<Vec<_>>());
            let buyers: BTreeSet<_> = after.attempts.iter().map(|a| a.buyer_id.to_string()).collect();
            prop_assert_eq!(buyers.len(), after.attempts.len(), "a buyer dialed twice");
            if let Answer::Dial { attempt, .. } = applied.answer {
                let current = after.current_attempt().unwrap();
                prop_assert_eq!(current.number, attempt);
                prop_assert!(!after.is_ended());
                prop_assert!(!world.silent && !world.full.contains(&current.buyer_id), "dialed without its slot");
            }
            let new = after.attempts.iter().filter(|a| before.is_none_or(|b| b.attempt(a.number).is_none()));
            for dialed in new {
                if dialed.kind == AttemptKind::Fallback {
                    // Every listed buyer was tried already, a duplicate, full, or unknown.
                    let tried = before.map(CallRecord::tried).unwrap_or_default();
                    for listed in world.listed(dialed.campaign_id) {
                        let out = tried.contains(&listed) || world.converted_with.contains(&listed)
                            || world.full.contains(&listed) || world.silent;
                        prop_assert!(out, "the fallback was dialed while a listed buyer could take the call");
                    }
                }
            }
            if matches!(applied.answer, Answer::Connect) {
                let current = before.and_then(CallRecord::current_attempt).unwrap();
                let number = input.attempt().unwrap();
                prop_assert_eq!(current.number, number, "an older attempt put through");
                let screened = after.attempt(number).unwrap().screening;
                prop_assert!(screened.is_none_or(|s| s == Screening::Accepted), "put through unscreened: {:?}", screened);
            }
            if let Some(conversion) = &applied.effects.conversion {
                let attempt = after.attempt(conversion.attempt).unwrap();
                prop_assert!(attempt.status.is_some_and(DialStatus::connected));
                prop_assert!(conversion.connected_seconds >= 60);
                prop_assert!(!world.converted_with.contains(&conversion.buyer_id), "a duplicate converted");
            }
            let stored = before.map_or(0, |r| r.timeline_len);
            prop_assert_eq!(after.timeline_len, stored + applied.effects.timeline.len() as u32);
            if let Some(paid) = before.and_then(|b| b.publisher_payout) {
                prop_assert_eq!(after.publisher_payout, Some(paid), "a settled payout changed");
            }
            if after.is_ended() {
                ended = Some((after.outcome, after.ended_at));
            }
            record = Some(after.clone());
        }
    }

    /// A dial's action taken without the stored record, on what its URL's trail says: the
    /// buyers the trail names are never dialed again, the dial it answers is numbered apart
    /// from every stored one, only the fallback is dialed, and the stored call merged with what
    /// it decided keeps every attempt and result it had.
    #[test]
    fn a_blind_turn_never_dials_a_buyer_the_trail_names_and_merges_into_the_stored_call(
        ended in prop::collection::vec((prop_oneof![Just(DialStatus::NoAnswer), Just(DialStatus::Busy)], any::<bool>()), 0..3),
        status in prop_oneof![Just(DialStatus::NoAnswer), Just(DialStatus::Completed), Just(DialStatus::Failed)],
        call_over in any::<bool>(),
        (converted, full, _) in any_knowledge(),
    ) {
        let mut world = World::new().knowing(&converted, &full, false);
        let (mut stored, mut answer) = world.call([incoming()]);
        // The stored call: some dials ended unanswered (their actions taken as usual).
        for (status, _) in &ended {
            let Answer::Dial { attempt, .. } = answer else { break };
            let applied = world.apply(stored.as_ref(), dial_ended(attempt, *status, 0));
            (stored, answer) = (applied.record, applied.answer);
        }
        let (Some(stored), Answer::Dial { attempt, .. }) = (stored, answer) else {
            return Ok(());
        };
        // The current dial's action, blind: the trail its URL carries.
        world.blind = true;
        world.trail = Some(Trail::of(&stored));
        let input = Input::DialEnded { attempt, status, connected_seconds: 120, call_over, bridged: Some(true) };
        let applied = world.apply(None, input);
        let blind = applied.record.unwrap();
        match &applied.answer {
            Answer::Dial { attempt: number, .. } => {
                let dialed = blind.attempt(*number).unwrap();
                prop_assert!(!stored.tried().contains(&dialed.buyer_id), "a buyer dialed again");
                prop_assert_eq!(dialed.buyer_id, world.f, "only the fallback is dialed blind");
                prop_assert!(*number > 1000 && stored.attempt(*number).is_none());
            }
            Answer::Redirect { .. } | Answer::End | Answer::Hangup => {}
            other => prop_assert!(false, "a blind dial action answered {:?}", other),
        }
        prop_assert!(applied.effects.postbacks.is_empty(), "told before merged");
        let merged = stored.merged_with(&blind);
        for attempt in &stored.attempts {
            let kept = merged.attempt(attempt.number).unwrap();
            prop_assert_eq!(kept.buyer_id, attempt.buyer_id);
            if attempt.status.is_some() {
                prop_assert_eq!(kept, attempt, "a stored result rewritten");
            }
        }
        prop_assert_eq!(merged.attempt(attempt).unwrap().status.is_some(), true, "the dial's end was lost");
        let buyers: BTreeSet<_> = merged.attempts.iter().map(|a| a.buyer_id.to_string()).collect();
        prop_assert_eq!(buyers.len(), merged.attempts.len(), "a buyer dialed twice");
    }
}
